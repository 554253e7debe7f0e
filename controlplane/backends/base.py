"""The interface every runtime backend implements (local processes, Docker, ...)."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from controlplane.resources import Resources
from modelbay.core.errors import is_disk_full


class BackendError(Exception):
    """Starting or reaching an instance failed.

    ``permanent`` errors (a model's requirements do not install, a bad image) will fail
    the same way again: the instance ends ``failed``. Transient ones (an engine that
    does not answer) are retried by the next reconcile.
    """

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


def disk_full_error() -> BackendError:
    """Permanent: the instance ends failed, saying why, rather than starting again and again."""
    return BackendError(
        "The disk is full (no space left on device): the instance could not be prepared or started.",
        permanent=True,
    )


@contextmanager
def disk_full_fails() -> Iterator[None]:
    """A write on this host that finds its disk full (a venv, a credential, a log) fails
    the instance with ``disk_full_error``."""
    try:
        yield
    except OSError as error:
        if is_disk_full(error):
            raise disk_full_error() from error
        raise


def build_failed(what: str, output: str) -> BackendError:
    """A build of a model's packages (a venv, an image) that failed, with the end of its
    output; a full disk says so in plain words instead."""
    if "no space left on device" in output.lower():
        return disk_full_error()
    return BackendError(f"{what}:\n{output[-4000:]}", permanent=True)


@dataclass(frozen=True)
class InstanceSpec:
    """All a backend needs to start one instance."""

    instance_id: str
    organization: str
    service: str
    model_version: int
    zone: str
    model_dir: Path
    resources: Resources
    requirements: tuple[str, ...] = ()
    system_packages: tuple[str, ...] = ()  # Debian packages (container images only)
    # "none": the instance can open no connection at all (the gateway reaches it over a
    # Unix socket, or a port of its service's own network); "egress": it may call out,
    # never to the platform's services or other instances.
    network: str = "none"
    # What every call to the runtime must carry; a secret (never in a repr or a log).
    # Empty: the backend makes one up, so that no runtime it starts ever runs open.
    credential: str = field(default="", repr=False)


@dataclass(frozen=True)
class RunningInstance:
    """What a backend reports of an instance that exists on its side."""

    instance_id: str
    endpoint: str  # base URL the gateway forwards to, e.g. http://127.0.0.1:41234
    alive: bool  # the process/container is running (not whether the model is ready)
    zone: str = ""
    created_at: float = 0.0  # epoch seconds when the process/container was made


class Inventory(dict[str, RunningInstance]):
    """What a backend runs, by instance id, and the zones it could not ask.

    An instance missing from a reachable zone is gone; one in an unreachable zone may
    well still run: ``unreachable`` maps such zones to the reason.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.unreachable: dict[str, str] = {}


CREDENTIAL_FILE = "credential"


def credential_dir(run_dir: Path, instance_id: str) -> Path:
    """The per-instance folder holding the runtime's credential file."""
    return run_dir / "instances" / instance_id


SOCKET_NAME = "runtime.sock"


def socket_path(run_dir: Path, instance_id: str) -> Path:
    """Where an instance on this host listens: ``run/instances/<id>/sock/runtime.sock``. The
    ``sock`` folder is the one place of the host the instance may write to."""
    return credential_dir(run_dir, instance_id) / "sock" / SOCKET_NAME


def make_socket_dir(run_dir: Path, instance_id: str, *, owner: tuple[int, int] | None) -> Path:
    """The folder an instance makes its socket in (0700), given to ``owner`` (uid, gid), the
    user the instance runs as (None: this process's own). Where this process may not give
    it away and does not run as that user, the folder is left open (0777), still behind the
    0700 credential folder, which a bind mount does not need to traverse."""
    directory = socket_path(run_dir, instance_id).parent
    directory.mkdir(mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    if owner is not None:
        try:
            os.chown(directory, *owner)
        except PermissionError:
            if directory.stat().st_uid != owner[0]:
                os.chmod(directory, 0o777)
    return directory


def write_credential(run_dir: Path, spec: InstanceSpec, *, owner: tuple[int, int] | None = None) -> Path:
    """Write the instance's credential into ``run/instances/<id>/credential`` and return
    its path. The folder is 0700 and the file 0600, replaced atomically (a new file, so a
    container that mounted the old one never sees the new). ``owner``: (uid, gid) that must
    read it (a container's user); when this process cannot give it the file, the file is
    0644, still behind the 0700 folder, which a bind mount does not need to traverse."""
    directory = credential_dir(run_dir, spec.instance_id)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    credential = spec.credential or secrets.token_urlsafe(32)
    path = directory / CREDENTIAL_FILE
    temporary = directory / f".{CREDENTIAL_FILE}.{secrets.token_hex(4)}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, credential.encode())
        if owner is not None and owner != (os.geteuid(), os.getegid()):
            try:
                os.fchown(fd, *owner)
            except PermissionError:
                os.fchmod(fd, 0o644)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    return path


def remove_credential(run_dir: Path, instance_id: str) -> None:
    shutil.rmtree(credential_dir(run_dir, instance_id), ignore_errors=True)


class RuntimeBackend(Protocol):
    name: str

    def prepare(self, zone: str, requirements: tuple[str, ...], system_packages: tuple[str, ...] = ()) -> None:
        """Build (once, cached) what instances with these requirements need in the zone: a
        python model's packages. Slow the first time; ``start`` then finds it ready."""

    def start(self, spec: InstanceSpec) -> RunningInstance: ...

    def stop(self, instance_id: str) -> None: ...

    def list(self) -> Inventory: ...

    def logs(self, instance_id: str, *, tail: int = 200) -> str: ...

    def resize(self, instance_id: str, resources: Resources) -> bool | None:
        """Apply new limits to a running instance in place. False: this cannot be done in
        place here, and reconcile starts the instance again with them."""

    def watch(self, on_exit: Callable[[str], None]) -> None:
        """Report instances that stop, as they stop (in background threads), so that they
        are replaced at once rather than at the next periodic reconcile; an engine that
        goes away, or answers again, reports the instances it ran. Optional: a backend
        without events does nothing here."""
