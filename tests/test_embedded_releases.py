"""Rollbacks and promotes on `make run`'s embedded stack (SQLite, the filesystem broker,
one gunicorn process, a real worker): calls keep completing all along.

Issue found here: the gateway wrote its call figures (and key use) to the database from
inside a request, about once a second; while the worker held SQLite's write lock (a
rollback's reconcile pass), each second one more request thread waited on that lock,
until no call completed at all. The gateway now stores them from a thread of its own.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MAX_GAP_S = 0.5
SAMPLE = json.dumps({"inputs": [[0.0] * 64]})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedStack:
    """What scripts/run.py starts, in a temporary data directory, without the demo apps."""

    # make run's web server without Redis: one process (gunicorn.conf.py: the ASGI app on uvicorn)
    ONE_PROCESS = ("--workers", "1")

    def __init__(self, data_dir: Path, web_args: tuple[str, ...] = ONE_PROCESS):
        self.web_args = web_args
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")}
        workers = web_args[web_args.index("--workers") + 1] if "--workers" in web_args else "1"
        self.env.update(
            WEB_CONCURRENCY=workers,
            MODELBAY_DATA_DIR=str(data_dir), MODELBAY_SITE_URL=self.url, DJANGO_SETTINGS_MODULE="modelbay.settings"
        )
        self.data_dir = data_dir
        self.children: list[subprocess.Popen] = []

    def manage(self, *args: str) -> str:
        return subprocess.run(
            [PYTHON, "manage.py", *args], cwd=REPO, env=self.env, check=True, stdout=subprocess.PIPE, text=True
        ).stdout

    def start(self) -> dict:
        self.manage("migrate", "--noinput", "-v", "0")
        demo = json.loads(self.manage("load_demo", "--without-apps").strip().splitlines()[-1])
        log = open(self.data_dir / "processes.log", "ab")
        for command in (
            [PYTHON, "-m", "celery", "-A", "modelbay", "worker", "-B", "--pool=threads", "--concurrency=4",
             "--loglevel=WARNING", "-s", str(self.data_dir / "beat-schedule")],
            [PYTHON, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.port}", *self.web_args,
             "--no-control-socket"],
        ):  # fmt: skip
            self.children.append(
                subprocess.Popen(command, cwd=REPO, env=self.env, stdout=log, stderr=log, start_new_session=True)
            )
        self.key = demo["key"]
        return demo

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode() if body is not None else None, method=method
        )
        request.add_header("Authorization", f"Bearer {self.key}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else {}
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")
        except OSError:
            return 0, {}

    def upload_version(self, onnx: bytes) -> None:
        boundary = "modelbay-test"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="digits.onnx"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + onnx
            + f"\r\n--{boundary}--\r\n".encode()
        )
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        connection.request(
            "POST", "/api/v1/models/digits/versions", body,
            {"Authorization": f"Bearer {self.key}", "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )  # fmt: skip
        response = connection.getresponse()
        assert response.status == 201, response.read()

    def stop(self) -> None:
        for child in self.children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
        stop_runtimes = (
            "import django; django.setup(); from controlplane.backends import get_backend; "
            "backend = get_backend(); [backend.stop(i) for i in backend.list()]"
        )
        subprocess.run([PYTHON, "-c", stop_runtimes], cwd=REPO, env=self.env, check=False)


def _wait(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class Callers:
    """Four client threads calling the service continuously over kept-alive connections;
    each call's (time answered, status)."""

    def __init__(self, stack: EmbeddedStack, slug: str, threads: int = 4):
        self.stack, self.slug, self.answers, self.stopping = stack, slug, [], threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        headers = {"Authorization": f"Bearer {self.stack.key}", "Content-Type": "application/json"}
        connection = http.client.HTTPConnection("127.0.0.1", self.stack.port, timeout=60)
        while not self.stopping.is_set():
            try:
                connection.request("POST", f"/api/v1/services/{self.slug}/predict", SAMPLE, headers)
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                status = 0
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.stack.port, timeout=60)
            self.answers.append((time.monotonic(), status))

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_):
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=70)


@pytest.fixture
def stack(tmp_path):
    stack = EmbeddedStack(tmp_path)
    try:
        demo = stack.start()
        _wait(
            lambda: stack.call("GET", f"/api/v1/services/{demo['service']}")[1].get("status") == "ready", 180, "ready"
        )
        yield stack, demo["service"]
    finally:
        stack.stop()


def _release(stack: EmbeddedStack, slug: str) -> dict:
    """A release of the version not taking calls now (once the last one has drained)."""

    def started():
        for version in (2, 1):
            code, body = stack.call(
                "POST", f"/api/v1/services/{slug}/releases", {"version": version, "steps": [50, 100], "interval_s": 600}
            )
            if code == 201:
                return body
        return None

    created = _wait(started, 120, "a release to start")
    path = f"/api/v1/services/{slug}/releases/{created['id']}"
    _wait(lambda: stack.call("GET", path)[1].get("status") == "rolling", 120, "the release to roll")
    return created


def test_calls_keep_completing_through_rollbacks_and_a_promote(stack):
    stack, slug = stack
    onnx = next(stack.data_dir.glob("artifacts/*/artifact")).read_bytes()
    stack.upload_version(onnx)
    actions = []
    with Callers(stack, slug) as callers:
        for action in ("rollback", "rollback", "rollback", "promote"):
            created = _release(stack, slug)
            time.sleep(1.5)  # both versions take calls
            code, _ = stack.call("POST", f"/api/v1/services/{slug}/releases/{created['id']}/{action}")
            assert code == 200, action
            actions.append(time.monotonic())
            time.sleep(4)  # the old version leaves the routing table, drains and stops
    answers = sorted(callers.answers)
    assert len(answers) > 1000
    assert {status for _, status in answers} == {200}
    window = [t for t, _ in answers if t >= actions[0] - 1]
    gaps = [(later - earlier, earlier) for earlier, later in zip(window, window[1:])]
    longest, at = max(gaps)
    assert longest < MAX_GAP_S, (
        f"no call completed for {longest:.2f} s, {at - actions[0]:.1f} s after the first rollback"
    )


def test_calls_keep_completing_while_another_process_holds_the_database_write_lock(stack):
    # What a long reconcile pass, a migration or a backup does on SQLite: other writers
    # wait for up to the busy timeout. Readers (WAL) do not, and a call only reads.
    import sqlite3

    stack, slug = stack
    with Callers(stack, slug) as callers:
        time.sleep(2)
        holder = sqlite3.connect(stack.data_dir / "db.sqlite3", isolation_level=None)
        held_from = time.monotonic()
        holder.execute("BEGIN IMMEDIATE")  # the write lock, as a writer's transaction holds it
        time.sleep(6)
        holder.execute("COMMIT")
        held_until = time.monotonic()
        holder.close()
        time.sleep(1)
    answers = [t for t, status in sorted(callers.answers) if held_from - 1 <= t <= held_until + 1]
    assert {status for _, status in callers.answers} == {200}
    longest = max(later - earlier for earlier, later in zip(answers, answers[1:]))
    assert longest < MAX_GAP_S, f"no call completed for {longest:.2f} s while the write lock was held"
