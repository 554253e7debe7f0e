"""The sandbox a local instance runs in: bubblewrap (Debian's ``bubblewrap``).

Each instance gets its own mount, PID, IPC, UTS, cgroup and network namespaces and sees
a filesystem made of read-only views of what it needs: the system's ``/usr``, the Python
interpreter, the platform's venv and its own model venv, the runtime's code (at
``/opt/modelbay/runtime``) and its model (at ``/model``); plus its credential (read-only)
and its socket folder (the one writable place beside a private ``/tmp``), under
``/run/modelbay``. Nothing else of the host: no data directory (database, secret key,
other models, logs), no ``/etc`` beyond the loader's cache, no other process.

Its network namespace is empty (loopback only): the gateway reaches it over the Unix
socket. A service with ``"network": "egress"`` gets a user-mode network stack
(``slirp4netns --disable-host-loopback``): connections out, never to the host's
loopback, where the platform's services listen.

Who it runs as: when the worker is root, bubblewrap (as root) builds the namespaces and
the runtime then runs as an unprivileged uid of its own on the host (``setpriv``: no
capabilities, no new privileges), one uid per instance; otherwise bubblewrap adds a user
namespace, as it does for any unprivileged user.

Limits: memory, CPU and processes from the service's resources in a cgroup v2 folder
when ``MODELBAY_SANDBOX_CGROUP`` names one this process may write (delegated to it);
otherwise rlimits (address space of data, process count per uid; CPU is not limited
then).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from controlplane.resources import CPU_PERIOD_US, Resources

MODEL_DIR = "/model"
RUN_DIR = "/run/modelbay"
CREDENTIAL = f"{RUN_DIR}/credential"
SOCKET_DIR = f"{RUN_DIR}/sock"
CODE_DIR = "/opt/modelbay"
# Where per-instance uids start when the worker is root (set MODELBAY_SANDBOX_UID_BASE to
# a range no account of the host uses); each instance takes one of the next 65,536.
UID_SPAN = 65_536
# The runtime's tuning variables, passed on when set; nothing else of the worker's.
PASSED_ENV = (
    "MODELBAY_RUNTIME_THREADS",
    "MODELBAY_RUNTIME_WORKERS",
    "MODELBAY_RUNTIME_MAX_BODY",
    "MODELBAY_RUNTIME_BATCHING",
    "OMP_NUM_THREADS",
)
INSTALL_HINT = "apt-get install bubblewrap slirp4netns"


class SandboxUnavailable(Exception):
    """No sandbox can be made on this host; the message says what to install."""


@dataclass(frozen=True)
class Sandbox:
    """One instance's sandbox: what it sees and what limits it."""

    instance_id: str
    python: str  # the interpreter (of the model's venv, or the platform's)
    model_dir: Path
    credential_file: Path
    socket_dir: Path
    resources: Resources
    network: str = "none"
    tmp_mb: int = 64

    def command(self, runtime_args: list[str], *, block_fd: int, info_fd: int, sync_fd: int) -> list[str]:
        """The bwrap command line that runs ``python -m runtime <runtime_args>`` inside. It
        waits for ``block_fd`` before it runs anything, writes the sandboxed pid to
        ``info_fd`` and holds ``sync_fd`` open as long as it lives."""
        mounts = _Mounts()
        # /proc, /dev and /tmp first: a bind made below /tmp (a venv in a checkout there)
        # must go on top of the private tmpfs, not under it.
        mounts.args += ["--proc", "/proc", "--dev", "/dev"]
        mounts.args += ["--perms", "1777", "--size", str(self.tmp_mb * 1024 * 1024), "--tmpfs", "/tmp"]
        mounts.made(Path("/proc"), Path("/dev"), Path("/tmp"))
        for name in ("bin", "lib", "lib32", "lib64", "libx32", "sbin"):
            host = Path("/") / name
            if host.is_symlink():
                mounts.args += ["--symlink", os.readlink(host), str(host)]
            elif host.is_dir():
                mounts.ro_bind(host, host)
        mounts.ro_bind(Path("/usr"), Path("/usr"))
        for path in _etc_files(self.network):
            mounts.ro_bind(path, path)
        for path in _python_trees(self.python):
            mounts.ro_bind(path, path)
        mounts.ro_bind(Path(__file__).resolve().parents[2] / "runtime", Path(CODE_DIR) / "runtime")
        mounts.ro_bind(self.model_dir, Path(MODEL_DIR))
        mounts.ro_bind(self.credential_file, Path(CREDENTIAL))
        mounts.bind(self.socket_dir, Path(SOCKET_DIR))

        command = [bwrap_path(), "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net"]
        # Not --die-with-parent: an instance outlives a restart of the worker that started it.
        command += ["--unshare-cgroup-try", "--hostname", "modelbay", "--new-session"]
        if os.geteuid() != 0:
            command += ["--unshare-user", "--uid", "65534", "--gid", "65534", "--disable-userns", "--cap-drop", "ALL"]
        command += mounts.args
        command += ["--chdir", "/tmp", "--clearenv"]
        for name, value in self.environment().items():
            command += ["--setenv", name, value]
        command += ["--info-fd", str(info_fd), "--block-fd", str(block_fd), "--sync-fd", str(sync_fd), "--"]
        if os.geteuid() == 0:
            uid = str(self.uid)
            command += [
                shutil.which("setpriv") or "/usr/bin/setpriv",
                f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
            ]  # fmt: skip
        return command + [self.python, "-m", "runtime", *runtime_args]

    def environment(self) -> dict[str, str]:
        environment = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": "/tmp",
            "TMPDIR": "/tmp",
            "LANG": "C.UTF-8",
            "PYTHONPATH": CODE_DIR,
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        environment.update({name: os.environ[name] for name in PASSED_ENV if os.environ.get(name)})
        return environment

    @property
    def uid(self) -> int:
        return sandbox_uid(self.instance_id)


class _Mounts:
    """bwrap mount options; every folder on the way to a mount point is made 0755 (as root
    bwrap would make them 0700, and the unprivileged runtime could not cross them)."""

    def __init__(self):
        self.args: list[str] = []
        self._made = {Path("/")}

    def made(self, *folders: Path) -> None:
        """Folders the sandbox has already (mount points made by other options)."""
        self._made.update(folders)

    def _parents(self, destination: Path) -> None:
        for parent in reversed(destination.parents):
            if parent not in self._made:
                self._made.add(parent)
                self.args += ["--perms", "0755", "--dir", str(parent)]

    def ro_bind(self, source: Path, destination: Path) -> None:
        self.bind(source, destination, option="--ro-bind")

    def bind(self, source: Path, destination: Path, *, option: str = "--bind") -> None:
        self._parents(destination)
        self._made.add(destination)
        self.args += [option, str(source), str(destination)]


def _etc_files(network: str) -> list[Path]:
    """The few files of /etc a runtime needs: the loader's cache; name resolution and CA
    certificates when it may call out."""
    names = ["ld.so.cache", "localtime"]
    if network == "egress":
        names += ["resolv.conf", "hosts", "nsswitch.conf", "ssl", "ca-certificates"]
    return [Path("/etc") / name for name in names if (Path("/etc") / name).exists()]


def _python_trees(python: str) -> list[Path]:
    """The folders the interpreter needs, read-only: its installation, the platform's venv
    and the model's own venv (which layers its packages over the platform's)."""
    model_venv = Path(python).parent.parent
    trees = [Path(sys.base_prefix), Path(os.path.realpath(python)).parents[1], Path(sys.prefix)]
    if (model_venv / "pyvenv.cfg").exists():
        trees.append(model_venv)
    kept: list[Path] = []
    for tree in trees:
        if tree != Path("/usr") and not any(tree.is_relative_to(other) for other in kept):
            kept = [other for other in kept if not other.is_relative_to(tree)] + [tree]
    return kept


def sandbox_uid(instance_id: str) -> int:
    """The host uid an instance runs as when the worker is root: one of its own (a shared
    one would let instances count against each other's process limit)."""
    digest = int(hashlib.sha256(instance_id.encode()).hexdigest()[:8], 16)
    return settings.MODELBAY_SANDBOX_UID_BASE + digest % UID_SPAN


def owner(instance_id: str) -> tuple[int, int] | None:
    """Who must own an instance's credential and socket folder: its own uid when the worker
    is root; None (the worker itself) otherwise."""
    uid = sandbox_uid(instance_id)
    return (uid, uid) if os.geteuid() == 0 else None


def bwrap_path() -> str:
    return shutil.which("bwrap") or "/usr/bin/bwrap"


@functools.cache
def check_available() -> None:
    """Raise SandboxUnavailable unless bubblewrap can make a sandbox here (checked once)."""
    if not shutil.which("bwrap"):
        raise SandboxUnavailable(f"bubblewrap is not installed ({INSTALL_HINT})")
    command = [bwrap_path(), "--unshare-pid", "--unshare-ipc", "--unshare-net"]
    if os.geteuid() != 0:
        command.append("--unshare-user")
    command += ["--ro-bind", "/", "/", "--proc", "/proc", "true"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise SandboxUnavailable(
            f"bubblewrap cannot make namespaces on this host: {result.stderr.strip() or result.returncode}"
            " (user namespaces may be switched off: sysctl kernel.unprivileged_userns_clone=1)"
        )
    if os.geteuid() == 0 and not shutil.which("setpriv"):
        raise SandboxUnavailable("setpriv is not installed (apt-get install util-linux)")


def check_egress_available() -> None:
    if not shutil.which("slirp4netns"):
        raise SandboxUnavailable(f"slirp4netns is not installed, which egress needs ({INSTALL_HINT})")


def read_child_pid(info_fd: int) -> int:
    """The sandboxed process's host pid, from bwrap's --info-fd (JSON, written once the
    namespaces exist)."""
    chunks = []
    with os.fdopen(info_fd, "rb") as info:
        while not chunks or not chunks[-1].rstrip().endswith(b"}"):
            chunk = info.read1(4096)
            if not chunk:
                break
            chunks.append(chunk)
    return int(json.loads(b"".join(chunks))["child-pid"])


# --- limits ---------------------------------------------------------------------------
def rlimits(resources: Resources) -> list[str]:
    """``prlimit`` options for a sandbox that no cgroup limits."""
    limits = [f"--data={resources.memory_bytes}", "--core=0", "--nofile=4096"]
    if os.geteuid() == 0:  # a uid of its own: the process count is the instance's alone
        limits.append(f"--nproc={resources.pids}")
    return limits


def cgroup_for(instance_id: str) -> Path | None:
    """The cgroup v2 folder of an instance, under MODELBAY_SANDBOX_CGROUP (None: unset)."""
    parent = settings.MODELBAY_SANDBOX_CGROUP
    return Path(parent) / f"instance-{instance_id}" if parent else None


def apply_cgroup(folder: Path, resources: Resources, pids: list[int]) -> None:
    """Make an instance's cgroup v2 folder with its limits and move its processes in."""
    folder.mkdir(exist_ok=True)
    limits = {
        "memory.max": str(resources.memory_bytes),
        "memory.swap.max": "0",
        "cpu.max": f"{resources.cpu_quota_us} {CPU_PERIOD_US}",
        "pids.max": str(resources.pids),
    }
    for name, value in limits.items():
        (folder / name).write_text(value)
    for pid in pids:
        (folder / "cgroup.procs").write_text(str(pid))


def remove_cgroup(instance_id: str) -> None:
    folder = cgroup_for(instance_id)
    if folder is not None:
        try:
            folder.rmdir()
        except OSError:
            pass  # gone, or processes still leaving
