"""Does anything hold calls up? The longest time with no completed call and the calls'
p50/p99 latency, on `make run`'s embedded stack (SQLite, one gunicorn process serving the
ASGI site on a uvicorn worker, a real worker), with four clients calling the demo service
continuously:

- idle (the baseline);
- while another process holds SQLite's write lock for 6 s (what a long transaction of the
  worker, a migration or a backup does);
- across a deploy of a new service (its rows, instance, state changes written by the worker);
- across three release rollbacks and a promote.

Each window's p99 is also given as a ratio to the idle window's (issue: within 2x).

    .venv/bin/python bench/stall.py

The gateway never writes to the database inside a request, so a held write lock should not
show. Not a test: it prints figures; everything started is stopped at the end.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploy import Stack, call, wait  # noqa: E402
from release import upload_version  # noqa: E402

SAMPLE = json.dumps({"inputs": [[0.0] * 64]})


class Callers:
    """Client threads calling continuously; each call's (time answered, status, latency s)."""

    def __init__(self, stack: Stack, slug: str, threads: int = 4):
        self.stack, self.slug, self.answers, self.stopping = stack, slug, [], threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.stack.key}", "Content-Type": "application/json"}
        connection = http.client.HTTPConnection("127.0.0.1", self.stack.port, timeout=60)
        while not self.stopping.is_set():
            sent = time.monotonic()
            try:
                connection.request("POST", f"/api/v1/services/{self.slug}/predict", SAMPLE, headers)
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                status = 0
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.stack.port, timeout=60)
            answered = time.monotonic()
            self.answers.append((answered, status, answered - sent))

    def window(self, since: float, until: float, idle_p99: float | None = None) -> tuple[str, float]:
        """The window's figures as text, and its p99 (s)."""
        inside = sorted((t, latency) for t, _, latency in self.answers if since <= t <= until)
        times = [t for t, _ in inside]
        latencies = sorted(latency for _, latency in inside)
        longest = max(later - earlier for earlier, later in zip(times, times[1:]))
        p50, p99 = latencies[len(latencies) // 2], latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        ratio = f", p99 {p99 / idle_p99:4.1f}x idle" if idle_p99 else ""
        text = (f"longest gap {1000 * longest:6.0f} ms, {len(times) / (until - since):6.0f} calls/s, "
                f"p50 {1000 * p50:5.1f} ms, p99 {1000 * p99:6.1f} ms{ratio}")  # fmt: skip
        return text, p99


def deploy(stack: Stack) -> None:
    """A new service of the demo's model, deployed to ready, then deleted."""
    code, body = call("POST", f"{stack.url}/api/v1/services", stack.key, {"name": "stall-2", "model": "digits"})
    if code not in (201, 202):
        raise SystemExit(f"POST /api/v1/services -> {code}: {body}")
    path = f"{stack.url}/api/v1/services/{body['slug']}"
    wait(lambda: call("GET", path, stack.key)[1].get("status") == "ready", 120, 0.1, "the new service")
    call("DELETE", path, stack.key)
    time.sleep(2)


def releases(stack: Stack, slug: str) -> None:
    """Three rollbacks and a promote, each of a release at 50 % to the version not serving."""
    for action in ("rollback", "rollback", "rollback", "promote"):

        def started():
            for version in (2, 1):
                body = {"version": version, "steps": [50, 100], "interval_s": 600}
                code, created = call("POST", f"{stack.url}/api/v1/services/{slug}/releases", stack.key, body)
                if code == 201:
                    return created
            return None

        created = wait(started, 120, 0.2, "a release to start")
        path = f"{stack.url}/api/v1/services/{slug}/releases/{created['id']}"
        wait(lambda: call("GET", path, stack.key)[1].get("status") == "rolling", 120, 0.2, "the release")
        time.sleep(1.5)
        call("POST", f"{path}/{action}", stack.key)
        time.sleep(4)


def main() -> int:
    stack = Stack("local", web_workers=1)  # `make run`'s embedded default: one process
    try:
        slug = stack.start()["service"]
        upload_version(stack)
        callers = Callers(stack, slug)
        for thread in callers.threads:
            thread.start()
        time.sleep(3)
        idle_from = time.monotonic()
        time.sleep(6)
        idle_until = time.monotonic()
        holder = sqlite3.connect(stack.dir / "db.sqlite3", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        time.sleep(6)
        holder.execute("COMMIT")
        holder.close()
        held_until = time.monotonic()
        deploy(stack)
        deployed_until = time.monotonic()
        releases(stack, slug)
        releases_until = time.monotonic()
        callers.stopping.set()
        failed = sum(1 for _, status, _ in callers.answers if status != 200)
        idle, idle_p99 = callers.window(idle_from, idle_until)
        print(f"4 clients, embedded stack: {len(callers.answers)} calls, {failed} failed")
        print(f"  idle 6 s                      {idle}")
        print(f"  SQLite write lock held 6 s    {callers.window(idle_until, held_until, idle_p99)[0]}")
        print(f"  a deploy, ready, deleted      {callers.window(held_until, deployed_until, idle_p99)[0]}")
        print(f"  3 rollbacks and a promote     {callers.window(deployed_until, releases_until, idle_p99)[0]}")
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
