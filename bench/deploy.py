"""Time from a deploy request to `ready`, on the local and on the docker backend.

    .venv/bin/python bench/deploy.py [--rounds 5] [--backends local,docker] [--replicas 1,2]

For each backend: a fresh embedded Modelbay (SQLite, filesystem broker) in a temporary
directory, its demo loaded, a real Celery worker and gunicorn started. Then, per round,
`POST /api/v1/services` for the demo's ONNX digits model, polling the service every
20 ms until it is `ready`, and deleting it again. The docker backend uses the runtime
image already built (`make runtime-image`; building it is not part of the figure).
Also prints the memory of one idle instance (its container, or its process), and on docker
the time from `docker kill` of an instance's container until its replacement is ready
(the engine's "die" event triggers the reconcile; beat is 10 s away). Not a test:
it prints figures; everything started is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"
TARGET_DOCKER_READY_S = 3.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(method: str, url: str, key: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {key}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def wait(check, timeout_s: float, interval_s: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(interval_s)
    raise SystemExit(f"timed out waiting for {what}")


class Stack:
    """An embedded Modelbay on one backend, in a temporary directory."""

    def __init__(
        self,
        backend: str,
        *,
        web_workers: int = 2,
        extra_env: dict[str, str] | None = None,
    ):
        self.backend = backend
        # gunicorn's processes (uvicorn workers, as gunicorn.conf.py says); `make run`'s embedded
        # default is one. WEB_CONCURRENCY says the same to the gateway (it divides its caps on
        # calls in flight among its processes).
        self.web_workers = web_workers
        self.load_demo_args = ["--without-apps"]  # figures of the digits service alone
        self.dir = Path(tempfile.mkdtemp(prefix=f"modelbay-bench-{backend}-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "MODELBAY_DATA_DIR": str(self.dir),
            "MODELBAY_RUNTIME_BACKEND": backend,
            "MODELBAY_SITE_URL": self.url,
            "MODELBAY_RECONCILE_INTERVAL": "10",
            "DJANGO_SETTINGS_MODULE": "modelbay.settings",
            "WEB_CONCURRENCY": str(web_workers),
        }
        for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "PROMETHEUS_MULTIPROC_DIR"):
            self.env.pop(name, None)
        self.env.update(extra_env or {})
        self.children: list[subprocess.Popen] = []

    def manage(self, *args: str) -> str:
        return subprocess.run(
            [str(PYTHON), "manage.py", *args], cwd=REPO, env=self.env, check=True, stdout=subprocess.PIPE, text=True
        ).stdout

    def start(self) -> dict:
        self.manage("migrate", "--noinput", "-v", "0")
        demo = json.loads(self.manage("load_demo", *self.load_demo_args).strip().splitlines()[-1])
        logs = open(self.dir / "processes.log", "ab")
        for command in (
            [str(PYTHON), "-m", "celery", "-A", "modelbay", "worker", "-B", "--pool=threads", "--concurrency=4",
             "--loglevel=WARNING", "-s", str(self.dir / "beat-schedule")],
            [str(PYTHON), "-m", "gunicorn", "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.web_workers),
             "--no-control-socket"],
        ):  # fmt: skip
            self.children.append(
                subprocess.Popen(command, cwd=REPO, env=self.env, stdout=logs, stderr=logs, start_new_session=True)
            )
        self.key = demo["key"]
        wait(lambda: self.status(demo["service"]) == "ready", 180, 0.2, "the demo service")
        return demo

    def status(self, slug: str) -> str | None:
        try:
            code, body = call("GET", f"{self.url}/api/v1/services/{slug}", self.key)
        except OSError:
            return None
        return body.get("status") if code == 200 else None

    def deploy_to_ready(self, slug: str, replicas: int) -> float:
        started = time.monotonic()
        code, body = call(
            "POST", f"{self.url}/api/v1/services", self.key, {"name": slug, "model": "digits", "replicas": replicas}
        )
        assert code == 202, body
        status = wait(lambda: self.status(slug) in ("ready", "failed") and self.status(slug), 120, what=slug)
        elapsed = time.monotonic() - started
        if status != "ready":
            raise SystemExit(f"{slug} ended {status}: {call('GET', f'{self.url}/api/v1/services/{slug}', self.key)}")
        call("DELETE", f"{self.url}/api/v1/services/{slug}", self.key)
        wait(lambda: self.status(slug) is None, 60, 0.2, f"{slug} to go")
        return elapsed

    def idle_instance_memory_mib(self, slug: str) -> float:
        """Memory of one idle instance: its container's anonymous memory, or its process's RSS."""
        _, body = call("GET", f"{self.url}/api/v1/services/{slug}", self.key)
        instance_id = body["instances"][0]["id"]
        if self.backend == "docker":
            import docker

            client = docker.from_env()
            (container,) = client.containers.list(filters={"label": f"modelbay.instance={instance_id}"})
            stats = container.stats(stream=False)["memory_stats"]["stats"]
            # Anonymous memory (the heap, numpy/onnxruntime arenas): what the instance itself costs.
            # Shared library pages are page cache, shared by every container of the image.
            return stats.get("total_rss", stats.get("anon", 0)) / 2**20
        import psutil

        for process in psutil.process_iter(["cmdline"]):
            cmdline = process.info["cmdline"] or []
            wrapper = cmdline and os.path.basename(cmdline[0]) in ("bwrap", "prlimit", "setpriv")
            if not wrapper and any(instance_id in part for part in cmdline):  # the runtime, not its sandbox
                return process.memory_info().rss / 2**20
        return float("nan")

    def heal_after_kill_s(self, slug: str) -> float:
        """docker kill of one instance's container -> a new container serving and every instance ready."""
        import docker

        client = docker.from_env()
        _, body = call("GET", f"{self.url}/api/v1/services/{slug}", self.key)
        instance_id = body["instances"][0]["id"]
        (victim,) = client.containers.list(filters={"label": f"modelbay.instance={instance_id}"})
        restarts_before = self._restarts(instance_id)
        started = time.monotonic()
        victim.kill()

        def healed():
            replacement = client.containers.list(filters={"label": f"modelbay.instance={instance_id}"})
            if not replacement or replacement[0].id == victim.id:
                return False
            # Ready again as the control plane has recorded it (committed), after a restart.
            with sqlite3.connect(self.dir / "db.sqlite3") as db:
                (status,) = db.execute(
                    "SELECT status FROM controlplane_instance WHERE id = ?", (instance_id,)
                ).fetchone()
            return status == "ready" and self._restarts(instance_id) > restarts_before

        wait(healed, 60, what="the killed container's replacement")
        return time.monotonic() - started

    def _restarts(self, instance_id: str) -> int:
        with sqlite3.connect(self.dir / "db.sqlite3") as db:
            return db.execute("SELECT restarts FROM controlplane_instance WHERE id = ?", (instance_id,)).fetchone()[0]

    def stop(self) -> None:
        for child in self.children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
        # Whatever instances remain (the demo's): stopped through the backend itself.
        subprocess.run(
            [str(PYTHON), "-c", "import django; django.setup(); from controlplane.backends import get_backend as g; "
             "b = g(); [b.stop(i) for i in b.list()]"],
            cwd=REPO, env=self.env, check=False,
        )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backends", default="local,docker")
    parser.add_argument("--replicas", default="1,2")
    args = parser.parse_args()
    if os.environ.get("MODELBAY_RUNTIME_BACKEND") == "docker" or "docker" in args.backends:
        image = subprocess.run(
            ["bash", "scripts/build-runtime-image.sh"], cwd=REPO, check=True, stdout=subprocess.PIPE, text=True
        ).stdout.strip()
        os.environ["MODELBAY_RUNTIME_IMAGE"] = image
    rows = []
    for backend in args.backends.split(","):
        stack = Stack(backend)
        try:
            demo = stack.start()
            memory = stack.idle_instance_memory_mib(demo["service"])
            if backend == "docker":
                heals = [stack.heal_after_kill_s(demo["service"]) for _ in range(args.rounds)]
                print(
                    f"docker kill -> replaced and ready: median {statistics.median(heals):.2f} s"
                    f" (min {min(heals):.2f}, max {max(heals):.2f})",
                    flush=True,
                )
            for replicas in [int(r) for r in args.replicas.split(",")]:
                times = [stack.deploy_to_ready(f"bench-{replicas}-{i}", replicas) for i in range(args.rounds)]
                rows.append((backend, replicas, times, memory))
                print(
                    f"{backend:6} replicas={replicas}: deploy -> ready median {statistics.median(times):.2f} s"
                    f" (min {min(times):.2f}, max {max(times):.2f}, {len(times)} rounds)",
                    flush=True,
                )
        finally:
            stack.stop()
    print("\n| backend | replicas | deploy → ready, median | min | max | idle instance memory |")
    print("|---|---|---|---|---|---|")
    for backend, replicas, times, memory in rows:
        print(
            f"| {backend} | {replicas} | {statistics.median(times):.2f} s | {min(times):.2f} s | {max(times):.2f} s"
            f" | {memory:.1f} MiB |"
        )
    docker_rows = [statistics.median(t) for b, _, t, _ in rows if b == "docker"]
    if docker_rows:
        verdict = "met" if max(docker_rows) <= TARGET_DOCKER_READY_S else "missed"
        print(f"\ntarget: docker deploy -> ready <= {TARGET_DOCKER_READY_S:.0f} s: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
