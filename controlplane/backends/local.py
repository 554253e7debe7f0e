"""The embedded backend: each instance is a ``python -m runtime`` subprocess.

Processes run in their own session, so they outlive a restart of the worker that
started them; the backend finds them again by the ``--instance-id`` in their command
line, which carries this installation's namespace so that two Modelbays on one host
never touch each other's processes. Each gets its credential in a file of its own,
``run/instances/<id>/credential`` (folder 0700, file 0600), named by ``--credential-file``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections import deque
from pathlib import Path

import psutil
from django.conf import settings

from controlplane.backends.base import (
    BackendError,
    InstanceSpec,
    Inventory,
    RunningInstance,
    remove_credential,
    write_credential,
)
from controlplane.resources import Resources
from modelbay.core.env import env_bool

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


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _flag_value(cmdline: list[str], flag: str) -> str | None:
    try:
        return cmdline[cmdline.index(flag) + 1]
    except (ValueError, IndexError):
        return None


class LocalBackend:
    name = "local"

    def __init__(self):
        self.namespace = _namespace()
        self.host = settings.MODELBAY_RUNTIME_HOST
        self.advertise_host = settings.MODELBAY_RUNTIME_ADVERTISE_HOST
        self.run_dir = settings.MODELBAY_RUN_DIR
        self.log_dir = settings.MODELBAY_RUN_DIR / "logs"
        self.venv_dir = settings.MODELBAY_VENV_DIR
        self.log_dir.mkdir(parents=True, exist_ok=True)

    # --- interface ----------------------------------------------------------------
    def prepare(self, zone: str, requirements: tuple[str, ...], system_packages: tuple[str, ...] = ()) -> None:
        # System packages are the host's business here: local runtimes use its libraries.
        refuse_in_container()  # pip would run the packages' build code in this container
        self._python_for(requirements)

    def start(self, spec: InstanceSpec) -> RunningInstance:
        refuse_in_container()
        self.stop(spec.instance_id)
        python = self._python_for(spec.requirements)
        port = _free_port(self.host)
        credential_file = write_credential(self.run_dir, spec)
        command = [
            python, "-m", "runtime",
            "--model-dir", str(spec.model_dir),
            "--host", self.host,
            "--port", str(port),
            "--name", spec.service,
            "--model-version", str(spec.model_version),
            ID_FLAG, f"{self.namespace}/{spec.instance_id}",
            "--credential-file", str(credential_file),
        ]  # fmt: skip
        with open(self._log_path(spec.instance_id), "ab") as log:
            log.write(f"--- starting {spec.instance_id} on port {port}\n".encode())
            log.flush()
            subprocess.Popen(
                command,
                cwd=settings.BASE_DIR,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        return RunningInstance(
            spec.instance_id, f"http://{self.advertise_host}:{port}", alive=True, zone=spec.zone, created_at=time.time()
        )

    def stop(self, instance_id: str) -> None:
        for process in self._processes().get(instance_id, []):
            self._terminate(process)
        remove_credential(self.run_dir, instance_id)

    def list(self) -> Inventory:
        running = Inventory()
        for instance_id, processes in self._processes().items():
            process = processes[0]
            try:
                cmdline = process.cmdline()
                alive = process.status() != psutil.STATUS_ZOMBIE
                created_at = process.create_time()
            except psutil.Error:
                continue
            port = _flag_value(cmdline, "--port")
            running[instance_id] = RunningInstance(
                instance_id, f"http://{self.advertise_host}:{port}", alive=alive, created_at=created_at
            )
        return running

    def logs(self, instance_id: str, *, tail: int = 200) -> str:
        path = self._log_path(instance_id)
        if not path.exists():
            return ""
        with open(path, encoding="utf-8", errors="replace") as log:
            return "".join(deque(log, maxlen=tail))

    def resize(self, instance_id: str, resources: Resources) -> None:
        """Local processes run without limits: nothing to change."""

    def watch(self, on_exit) -> None:
        """No events for processes: the periodic reconcile finds the dead ones."""

    # --- processes ----------------------------------------------------------------
    def _processes(self) -> dict[str, list[psutil.Process]]:
        """This installation's runtime processes, by instance id."""
        found: dict[str, list[psutil.Process]] = {}
        prefix = f"{self.namespace}/"
        for process in psutil.process_iter(["cmdline"]):
            cmdline = process.info["cmdline"] or []
            marker = _flag_value(cmdline, ID_FLAG)
            if marker and marker.startswith(prefix) and "runtime" in cmdline:
                found.setdefault(marker[len(prefix) :], []).append(process)
        return found

    @staticmethod
    def _terminate(process: psutil.Process) -> None:
        """SIGTERM (the runtime finishes in-flight calls, which take at most the predict
        timeout), then SIGKILL; reap our own children."""
        try:
            process.send_signal(signal.SIGTERM)
        except psutil.Error:
            return
        # Not process.wait(): another process's child stays a zombie until its parent
        # reaps it, and a zombie has exited all the same.
        deadline = time.monotonic() + settings.MODELBAY_PREDICT_TIMEOUT + 5
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
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True)
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
            output = (result.stdout + result.stderr)[-4000:]
            raise BackendError(f"Installing the model's packages failed:\n{output}", permanent=True)
        (venv / ".complete").write_text(f"{time.monotonic() - started:.1f}s\n")
