"""Typed readers for settings that come from the environment.

Every setting has an embedded default so that a fresh checkout runs with nothing
installed but Python. A secret may also be given as ``NAME_FILE`` (a path), the way
Docker and Kubernetes hand secrets to a process.
"""

import os
from pathlib import Path


def env_str(name: str, default: str = "") -> str:
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        return Path(file_path).read_text().strip()
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}: expected a boolean (true/false), got {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw.strip())
    except ValueError:
        raise ValueError(f"{name}: expected an integer, got {raw!r}") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw.strip())
    except ValueError:
        raise ValueError(f"{name}: expected a number, got {raw!r}") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def parse_zones(raw: str) -> dict[str, str]:
    """Parse ``MODELBAY_ZONES``: ``zone-a,zone-b`` or ``zone-a=unix:///var/run/docker.sock,...``.

    Returns zone name -> runtime endpoint (empty string when the backend needs none).
    """
    zones: dict[str, str] = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, endpoint = item.partition("=")
        name = name.strip()
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"MODELBAY_ZONES: bad zone name {name!r}")
        if name in zones:
            raise ValueError(f"MODELBAY_ZONES: zone {name!r} given twice")
        zones[name] = endpoint.strip()
    if not zones:
        raise ValueError("MODELBAY_ZONES: at least one zone is needed")
    return zones


# An engine reached over the network is called with TLS and a client certificate only.
NETWORK_SCHEMES = ("tcp", "http", "https")
TLS_FILES = ("ca.pem", "cert.pem", "key.pem")  # the docker CLI's layout (DOCKER_CERT_PATH)


def parse_zone_tls(
    raw: str, zones: dict[str, str], *, docker_host: str = "", docker_tls_verify: str = ""
) -> dict[str, Path]:
    """Parse ``MODELBAY_ZONE_TLS`` (``zone-b=/etc/modelbay/tls/zone-b,...``) against the zones.

    Returns zone name -> the folder holding that engine's ``ca.pem`` (the CA its
    certificate must chain to) and this installation's ``cert.pem`` and ``key.pem``.
    Every zone whose endpoint is ``tcp://`` (or ``http(s)://``) needs one: a Docker
    engine on another host is never called in plain text nor without a client
    certificate. A zone without an endpoint uses ``docker_host`` (DOCKER_HOST), which, when
    it is tcp, needs ``docker_tls_verify`` (DOCKER_TLS_VERIFY, with DOCKER_CERT_PATH) as
    the docker CLI does. Raises ImproperlyConfigured naming the zone and what to set.
    """
    from django.core.exceptions import ImproperlyConfigured

    folders: dict[str, Path] = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, folder = item.partition("=")
        name, folder = name.strip(), folder.strip()
        if not sep or not name or not folder:
            raise ImproperlyConfigured(f"MODELBAY_ZONE_TLS: expected zone=/path/to/certs, got {item!r}")
        if name not in zones:
            raise ImproperlyConfigured(f"MODELBAY_ZONE_TLS: zone {name!r} is not in MODELBAY_ZONES")
        if name in folders:
            raise ImproperlyConfigured(f"MODELBAY_ZONE_TLS: zone {name!r} given twice")
        scheme = zones[name].partition("://")[0].lower() if "://" in zones[name] else ""
        if scheme not in NETWORK_SCHEMES:
            raise ImproperlyConfigured(
                f"MODELBAY_ZONE_TLS: zone {name!r} has no tcp:// engine in MODELBAY_ZONES "
                f"({zones[name] or 'none'!s}); TLS applies to tcp:// engines only"
            )
        path = Path(folder)
        missing = [file for file in TLS_FILES if not (path / file).is_file()]
        if missing:
            raise ImproperlyConfigured(
                f"MODELBAY_ZONE_TLS: the folder of zone {name!r} ({path}) lacks {', '.join(missing)} "
                f"(it holds {', '.join(TLS_FILES)}, as the docker CLI's DOCKER_CERT_PATH)"
            )
        folders[name] = path.resolve()
    for name, endpoint in zones.items():
        scheme = endpoint.partition("://")[0].lower() if "://" in endpoint else ""
        if scheme in NETWORK_SCHEMES and name not in folders:
            raise ImproperlyConfigured(
                f"MODELBAY_ZONES: zone {name!r} calls the Docker engine at {endpoint} over the network; "
                f"set MODELBAY_ZONE_TLS={name}=/path/to/certs (a folder with {', '.join(TLS_FILES)}: "
                "the CA of the engine's certificate and this installation's client certificate and key). "
                "Plain-text tcp is refused."
            )
        if not endpoint and docker_host.partition("://")[0].lower() in NETWORK_SCHEMES and not docker_tls_verify:
            raise ImproperlyConfigured(
                f"MODELBAY_ZONES: zone {name!r} uses DOCKER_HOST={docker_host}, a Docker engine over the network; "
                f"set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH, or give the zone its endpoint and "
                f"MODELBAY_ZONE_TLS={name}=/path/to/certs. Plain-text tcp is refused."
            )
    return folders
