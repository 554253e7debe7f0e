"""The embedded backend: each instance is a ``python -m runtime`` process in a sandbox.

Each runs under bubblewrap (:mod:`controlplane.backends.sandbox`): no network, none of
the host's files but the read-only ones it needs, an unprivileged uid. It listens on a
Unix socket in its own folder, ``run/instances/<id>/sock/runtime.sock``, where the gateway
calls it; its credential is beside it, ``run/instances/<id>/credential`` (folder 0700).
Where no sandbox can be made, starting an instance fails with what to install;
``MODELBAY_UNSANDBOXED_LOCAL=1`` runs plain processes instead (unsafe, never a fallback).

Processes run in their own session, so they outlive a restart of the worker that
started them; the backend finds them again by the ``--instance-id`` in their command
line, which carries this installation's namespace so that two Modelbays on one host
never touch each other's processes. What an instance prints goes through a pipe to a small
writer of ours that keeps its log bounded and rotated (:mod:`.instance_log`).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import psutil
from django.conf import settings

from controlplane.backends import instance_log, sandbox
from controlplane.backends.base import (
    BackendError,
    InstanceSpec,
    Inventory,
    RunningInstance,
    SOCKET_NAME,
    build_failed,
    disk_full_fails,
    make_socket_dir,
    remove_credential,
    socket_path,
    write_credential,
)
from controlplane.resources import Resources
from modelbay.core.env import env_bool
from runtime.client import unix_endpoint

ID_FLAG = "--instance-id"
# Set by docker-compose.yml and the image: this process runs in the platform's container.
# An explicit signal, not /.dockerenv: the test suite itself runs the local backend in
# containers (CI, dev containers), where the refusal below would be wrong.
IN_CONTAINER_ENV = "MODELBAY_IN_CONTAINER"


def refuse_in_container() -> None:
    """The local backend runs model code as processes of the worker: inside the platform's
    container that is next to the Docker socket, the database's and Redis' passwords and
    the backend network. Refuse there (permanent: it fails the same way every time)."""
    if env_bool(IN_CONTAINER_ENV, False):
        raise BackendError(
            "The local runtime backend is refused inside the platform's container "
            f"({IN_CONTAINER_ENV} is set): model code would run inside the worker container, next to "
            "the Docker socket and the platform's credentials. Use MODELBAY_RUNTIME_BACKEND=docker.",
            permanent=True,
        )


def _namespace() -> str:
    return hashlib.sha256(str(settings.DATA_DIR).encode()).hexdigest()[:8]


_WRAPPERS = ("bwrap", "prlimit", "setpriv")
_SLIRP_READY_S = 10.0
_WRAPPER_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def _flag_value(cmdline: list[str], flag: str) -> str | None:
    try:
        return cmdline[cmdline.index(flag) + 1]
    except (ValueError, IndexError):
        return None


class LocalBackend:
    name = "local"

    def __init__(self):
        self.namespace = _namespace()
        self.run_dir = settings.MODELBAY_RUN_DIR
        self.log_dir = instance_log.folder(settings.MODELBAY_RUN_DIR)
        self.venv_dir = settings.MODELBAY_VENV_DIR
        self.log_dir.mkdir(parents=True, exist_ok=True)

    # --- interface ----------------------------------------------------------------
    def prepare(self, zone: str, requirements: tuple[str, ...], system_packages: tuple[str, ...] = ()) -> None:
        # System packages are the host's business here: local runtimes use its libraries.
        refuse_in_container()  # pip would run the packages' build code in this container
        with disk_full_fails():
            self._python_for(requirements)

    def start(self, spec: InstanceSpec) -> RunningInstance:
        refuse_in_container()
        with disk_full_fails():
            return self._start(spec)

    def _start(self, spec: InstanceSpec) -> RunningInstance:
        sandboxed = not settings.MODELBAY_UNSANDBOXED_LOCAL
        if sandboxed:
            _check_sandbox(spec.network)
        self.stop(spec.instance_id)
        owner = sandbox.owner(spec.instance_id) if sandboxed else None
        box = sandbox.Sandbox(
            instance_id=spec.instance_id,
            python=self._python_for(spec.requirements),
            model_dir=spec.model_dir,
            credential_file=write_credential(self.run_dir, spec, owner=owner),
            socket_dir=make_socket_dir(self.run_dir, spec.instance_id, owner=owner),
            resources=spec.resources,
            network=spec.network,
            tmp_mb=settings.MODELBAY_SANDBOX_TMP_MB,
        )
        common = [
            "--name", spec.service,
            "--model-version", str(spec.model_version),
            ID_FLAG, f"{self.namespace}/{spec.instance_id}",
        ]  # fmt: skip
        # The instance writes to a pipe, whose writer keeps the log bounded (instance_log).
        log = instance_log.start_writer(
            self._log_path(spec.instance_id), max_bytes=settings.MODELBAY_INSTANCE_LOG_BYTES
        )
        try:
            os.write(log, f"--- starting {spec.instance_id}{'' if sandboxed else ' (UNSANDBOXED)'}\n".encode())
            if sandboxed:
                args = ["--model-dir", sandbox.MODEL_DIR, "--credential-file", sandbox.CREDENTIAL]
                args += ["--uds", f"{sandbox.SOCKET_DIR}/{SOCKET_NAME}", *common]
                _spawn_sandboxed(box, args, log)
            else:
                args = ["--model-dir", str(spec.model_dir), "--credential-file", str(box.credential_file)]
                # A relative socket path: the folder's absolute path may be too long for one.
                args += ["--uds", SOCKET_NAME, *common]
                subprocess.Popen(
                    [box.python, "-m", "runtime", *args],
                    cwd=box.socket_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env={**box.environment(), "PYTHONPATH": str(settings.BASE_DIR)},
                )
        finally:
            os.close(log)  # the instance's processes hold the pipe now; the writer ends with them
        return RunningInstance(
            spec.instance_id, self._endpoint(spec.instance_id), alive=True, zone=spec.zone, created_at=time.time()
        )

    def stop(self, instance_id: str) -> None:
        processes = self._processes().get(instance_id, [])
        if processes:
            self._terminate(processes)
        remove_credential(self.run_dir, instance_id)
        sandbox.remove_cgroup(instance_id)

    def list(self) -> Inventory:
        running = Inventory()
        for instance_id, processes in self._processes().items():
            process = _runtime_process(processes)
            try:
                alive = process.status() != psutil.STATUS_ZOMBIE and not _is_wrapper(process.cmdline())
                created_at = process.create_time()
            except psutil.Error:
                continue
            running[instance_id] = RunningInstance(
                instance_id, self._endpoint(instance_id), alive=alive, created_at=created_at
            )
        return running

    def logs(self, instance_id: str, *, tail: int = 200) -> str:
        return instance_log.tail(self._log_path(instance_id), tail)

    def resize(self, instance_id: str, resources: Resources) -> bool:
        """New limits for a running sandbox: its cgroup's, or the runtime's rlimits (which
        needs CAP_SYS_RESOURCE over another uid; without it, False: a new start applies them)."""
        if settings.MODELBAY_UNSANDBOXED_LOCAL:
            return True  # plain processes run without limits
        cgroup = sandbox.cgroup_for(instance_id)
        if cgroup is not None:
            sandbox.apply_cgroup(cgroup, resources, [])
            return True
        processes = self._processes().get(instance_id)
        if not processes:
            return True  # gone: its next start has the new limits
        pid = str(_runtime_process(processes).pid)
        result = subprocess.run([_prlimit(), "--pid", pid, *sandbox.rlimits(resources)], capture_output=True)
        return result.returncode == 0

    def watch(self, on_exit) -> None:
        """No events for processes: the periodic reconcile finds the dead ones."""

    # --- processes ----------------------------------------------------------------
    def _processes(self) -> dict[str, list[psutil.Process]]:
        """This installation's instance processes (sandbox wrappers and runtime), by instance id."""
        found: dict[str, list[psutil.Process]] = {}
        prefix = f"{self.namespace}/"
        for process in psutil.process_iter(["cmdline"]):
            cmdline = process.info["cmdline"] or []
            marker = _flag_value(cmdline, ID_FLAG)
            if marker and marker.startswith(prefix) and "runtime" in cmdline:
                found.setdefault(marker[len(prefix) :], []).append(process)
        return found

    @staticmethod
    def _terminate(processes: list[psutil.Process]) -> None:
        """SIGTERM to the runtime (it finishes in-flight calls, which take at most the predict
        timeout; its sandbox ends with it), then SIGKILL to whatever is left; reap our own
        children."""
        try:
            _runtime_process(processes).send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
        # Not process.wait(): another process's child stays a zombie until its parent
        # reaps it, and a zombie has exited all the same.
        deadline = time.monotonic() + settings.MODELBAY_PREDICT_TIMEOUT + 5
        for process in processes:
            try:
                while process.status() != psutil.STATUS_ZOMBIE:
                    if time.monotonic() > deadline:
                        process.kill()
                        break
                    time.sleep(0.05)
            except psutil.Error:
                pass  # gone
            try:
                os.waitpid(process.pid, os.WNOHANG)
            except ChildProcessError:
                pass

    def _endpoint(self, instance_id: str) -> str:
        return unix_endpoint(socket_path(self.run_dir, instance_id))

    def _log_path(self, instance_id: str) -> Path:
        return self.log_dir / f"{instance_id}.log"

    # --- python requirements ------------------------------------------------------
    def _python_for(self, requirements: tuple[str, ...]) -> str:
        """The interpreter for a model: ours, or a cached venv with its requirements on top."""
        python = settings.MODELBAY_RUNTIME_PYTHON
        if not requirements:
            return python
        # Our environment is part of the key: a venv layers the model's packages over it.
        key = "\n".join([sysconfig.get_paths()["purelib"], *sorted(requirements)])
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        venv = self.venv_dir / digest
        self.venv_dir.mkdir(parents=True, exist_ok=True)
        with open(self.venv_dir / f"{digest}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (venv / ".complete").exists():
                self._build_venv(venv, requirements)
        return str(venv / "bin" / "python")

    def _build_venv(self, venv: Path, requirements: tuple[str, ...]) -> None:
        """Make the venv, or fail for good and leave none of it (a half-made venv can be
        hundreds of megabytes, and a full disk is the likely reason it failed)."""
        started = time.monotonic()
        try:
            # pip in a step of its own: its output (a full disk) is in the error then.
            subprocess.run(
                [sys.executable, "-m", "venv", "--clear", "--without-pip", str(venv)], check=True, capture_output=True
            )
            subprocess.run(
                [str(venv / "bin" / "python"), "-m", "ensurepip", "--upgrade", "--default-pip"],
                check=True,
                capture_output=True,
            )
            # The runtime's own packages come from our environment; the model's go on top.
            site_packages = next((venv / "lib").glob("python3*/site-packages"))
            (site_packages / "modelbay-runtime.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
            result = subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", *requirements],
                capture_output=True,
                text=True,
                timeout=900,
            )
            if result.returncode != 0:
                raise build_failed("Installing the model's packages failed", result.stdout + result.stderr)
            (venv / ".complete").write_text(f"{time.monotonic() - started:.1f}s\n")
        except BaseException as error:
            shutil.rmtree(venv, ignore_errors=True)
            if isinstance(error, subprocess.CalledProcessError):
                output = (error.stdout + error.stderr).decode(errors="replace")
                raise build_failed("Making the model's venv failed", output) from error
            if isinstance(error, subprocess.TimeoutExpired):
                raise BackendError("Installing the model's packages took over 15 minutes.", permanent=True) from error
            raise


# --- the sandbox ----------------------------------------------------------------------
def _check_sandbox(network: str) -> None:
    """Refuse (permanently) where no sandbox can be made: never a silent fallback."""
    try:
        sandbox.check_available()
        if network == "egress":
            sandbox.check_egress_available()
    except sandbox.SandboxUnavailable as error:
        raise BackendError(
            f"The local backend runs instances in a sandbox, and none can be made here: {error}. "
            "Install it, or use MODELBAY_RUNTIME_BACKEND=docker. On a single-user machine only, "
            "MODELBAY_UNSANDBOXED_LOCAL=1 runs models unsandboxed (unsafe: a model then reaches all "
            "the worker can).",
            permanent=True,
        ) from None


def _spawn_sandboxed(box: sandbox.Sandbox, runtime_args: list[str], log) -> None:
    """Start the sandbox, held before it runs anything until its limits (a cgroup) and its
    network (egress) are in place."""
    block_read, block_write = os.pipe()
    info_read, info_write = os.pipe()
    keep_read, keep_write = os.pipe()  # open while the sandbox lives: slirp4netns ends with it
    command = box.command(runtime_args, block_fd=block_read, info_fd=info_write, sync_fd=keep_write)
    cgroup = sandbox.cgroup_for(box.instance_id)
    if cgroup is None:
        command = [_prlimit(), *sandbox.rlimits(box.resources), *command]
    try:
        process = subprocess.Popen(
            command,
            cwd="/",
            env=_WRAPPER_ENV,  # bwrap is the sandbox's pid 1: none of the worker's secrets in its environ
            pass_fds=(block_read, info_write, keep_write),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        for fd in (block_read, info_write, keep_write):
            os.close(fd)
    try:
        try:
            child = sandbox.read_child_pid(info_read)
        except (ValueError, KeyError) as error:
            process.wait(timeout=10)
            raise BackendError(
                f"The sandbox did not start (exit {process.returncode}); see the instance's log"
            ) from error
        if cgroup is not None:
            sandbox.apply_cgroup(cgroup, box.resources, [process.pid, child])
        if box.network == "egress":
            _start_slirp(child, keep_read, log)
        os.write(block_write, b"go")
    finally:
        os.close(block_write)
        os.close(keep_read)


def _start_slirp(child_pid: int, keep_read: int, log) -> None:
    """A user-mode network stack for the sandbox (slirp4netns): connections out through
    this host, never to its loopback (where the platform listens). It ends when the
    sandbox does (``--exit-fd``: the read end of a pipe the sandbox holds open)."""
    ready_read, ready_write = os.pipe()
    command = [
        shutil.which("slirp4netns") or "slirp4netns",
        "--configure", "--mtu=65520", "--disable-host-loopback", "--enable-sandbox",
        f"--exit-fd={keep_read}", f"--ready-fd={ready_write}",
    ]  # fmt: skip
    if os.geteuid() != 0:
        command.append(f"--userns-path=/proc/{child_pid}/ns/user")
    command += [str(child_pid), "tap0"]
    try:
        subprocess.Popen(
            command,
            env=_WRAPPER_ENV,
            pass_fds=(keep_read, ready_write),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        os.close(ready_write)
    try:
        readable, _, _ = select.select([ready_read], [], [], _SLIRP_READY_S)
        if not readable or not os.read(ready_read, 1):
            raise BackendError("The sandbox's network (slirp4netns) did not come up; see the instance's log")
    finally:
        os.close(ready_read)


def _prlimit() -> str:
    return shutil.which("prlimit") or "/usr/bin/prlimit"


def _is_wrapper(cmdline: list[str]) -> bool:
    return bool(cmdline) and os.path.basename(cmdline[0]) in _WRAPPERS


def _runtime_process(processes: list[psutil.Process]) -> psutil.Process:
    """The runtime among an instance's processes (the others are its sandbox's wrappers)."""
    for process in processes:
        try:
            if not _is_wrapper(process.cmdline()):
                return process
        except psutil.Error:
            continue
    return processes[0]
