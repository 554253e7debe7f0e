"""Where the site's URL and the API key come from: flags, then the environment
(``MODELBAY_URL``, ``MODELBAY_KEY``), then the file ``modelbay login`` writes."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from modelbay_client.errors import NotConfigured

URL_VARIABLE = "MODELBAY_URL"
KEY_VARIABLE = "MODELBAY_KEY"


@dataclass(frozen=True)
class Credentials:
    url: str
    key: str


def config_path(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CONFIG_HOME/modelbay/config.json`` (``~/.config`` when unset)."""
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "modelbay" / "config.json"


def save_credentials(credentials: Credentials, *, path: Path | None = None) -> Path:
    """Write the file readable by its owner alone (0600), in a folder only they can enter."""
    path = path or config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Created 0600 from the start, and narrowed if it existed: the key is never readable by others.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump({"url": credentials.url, "key": credentials.key}, file, indent=2)
        file.write("\n")
    return path


def saved_credentials(*, path: Path | None = None) -> dict[str, str]:
    """What ``modelbay login`` saved: ``{"url", "key"}``, or ``{}`` when nothing was."""
    path = path or config_path()
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as error:
        raise NotConfigured(f"{path} is not valid JSON ({error}); run `modelbay login` again.") from None
    return {name: str(saved[name]) for name in ("url", "key") if saved.get(name)}


def load_credentials(
    *,
    url: str | None = None,
    key: str | None = None,
    environ: Mapping[str, str] = os.environ,
    path: Path | None = None,
) -> Credentials:
    """The URL and key to use: each from the first of the flags, the environment, the saved file."""
    saved = saved_credentials(path=path or config_path(environ))
    url = url or environ.get(URL_VARIABLE) or saved.get("url")
    key = key or environ.get(KEY_VARIABLE) or saved.get("key")
    if not url or not key:
        missing = " and ".join(name for name, value in (("site URL", url), ("API key", key)) if not value)
        raise NotConfigured(
            f"No {missing}: run `modelbay login`, set {URL_VARIABLE} and {KEY_VARIABLE}, or give --url and --key."
        )
    return Credentials(url=url.rstrip("/"), key=key)
