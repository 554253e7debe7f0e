"""Services a fault test starts for itself, on its own ports, so that it can stop and start
them under load without touching the machine's shared ones (which other tests and CI use).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnRedis:
    """A ``redis-server`` of the test's own, in ``folder``, on a free port of 127.0.0.1.

    ``stop()`` shuts it down (keeping nothing: no snapshot, no AOF, like compose's Redis
    restarted without its data); ``start()`` brings it back, empty, on the same port.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, timeout_s: float = 10) -> None:
        assert self.process is None, "already running"
        server = shutil.which("redis-server")
        assert server, "redis-server is not installed (apt-get install -y redis-server)"
        log = open(self.folder / "redis.log", "ab")
        self.process = subprocess.Popen(
            [server, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout_s
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {(self.folder / 'redis.log').read_text()[-2000:]}")
            time.sleep(0.05)

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, *, keep_data: bool = False) -> None:
        """Kill it: what it held is gone, and its clients' connections break. With
        ``keep_data`` it saves a snapshot as it shuts down, which ``start()`` loads again
        (Redis away for a while, its memory intact)."""
        if self.process is None:
            return
        if keep_data:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                s.sendall(b"SHUTDOWN SAVE\r\n")
                s.recv(64)  # the connection closes when it has shut down
        else:
            self.process.kill()
            (self.folder / "dump.rdb").unlink(missing_ok=True)  # an earlier snapshot: not this memory
        self.process.wait(timeout=10)
        self.process = None


def _postgres_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}")) or [Path(f"/usr/local/bin/{name}")]
    assert found[-1].exists(), f"PostgreSQL's {name} is not installed (apt-get install -y postgresql)"
    return str(found[-1])


class OwnPostgres:
    """A PostgreSQL server of the test's own (``initdb`` into a temporary folder, trust
    authentication, user ``postgres``) on a free port of 127.0.0.1. Run as the ``postgres``
    OS user when the test runs as root (the server refuses root). ``stop()`` shuts it down
    (``fast``: sessions are cut, as at a restart); ``start()`` brings it back with its data;
    ``remove()`` stops it and deletes the folder.
    """

    def __init__(self):
        # Not under pytest's tmp_path: the postgres user must be able to reach the folder.
        self.folder = Path(tempfile.mkdtemp(prefix="modelbay-own-postgres-"))
        self.folder.chmod(0o755)
        self.data = self.folder / "data"
        self.port = free_port()
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(_postgres_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str) -> None:
        result = subprocess.run(
            [*self._as_postgres, *command], cwd=self.folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        if result.returncode != 0:
            raise RuntimeError(f"{Path(command[0]).name} failed: {result.stdout.decode()[-2000:]}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.folder / "postgres.log")
        self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), "-l", log, "-o", options, "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


class Gateway:
    """The site as production serves it: gunicorn in the repository's root (its
    gunicorn.conf.py: the ASGI application on uvicorn workers), on a free port of 127.0.0.1,
    with ``env`` (the test database's, usually ``conftest._worker_env()``)."""

    def __init__(self, env: dict[str, str], log_path: Path, *, workers: int = 2):
        self.env = {**env, "WEB_CONCURRENCY": str(workers)}
        self.workers, self.log_path = workers, log_path
        self.url = ""
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60) -> str:
        port = free_port()
        repo = Path(__file__).resolve().parent.parent
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(self.workers),
                 "--no-control-socket"],
                cwd=repo, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the gateway did not start: {self.log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        return self.url

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/accounts/login/", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        """A graceful stop (SIGTERM), as gunicorn gets it from a deploy or compose."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
            self.process = None
