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
