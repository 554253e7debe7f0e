"""Gray releases under load: calls sent and failed during a full rollout and a rollback,
the share each version took at each step, and the time from `promote` to every call
reaching the new version.

    .venv/bin/python bench/release.py [--backend local] [--interval 10]

A fresh embedded Modelbay (bench/deploy.py's Stack) with the demo's digits model; its
second version is the same ONNX file uploaded again (what is measured is the platform,
not the model). One client thread calls the service over a kept-alive connection all
along. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploy import Stack, call, wait  # noqa: E402

SAMPLE = json.dumps({"inputs": [[0.0] * 64]})


class Client(threading.Thread):
    """Calls the service continuously; keeps (time, status, version) for every call."""

    def __init__(self, stack: Stack, slug: str):
        super().__init__(daemon=True)
        self.stack, self.slug, self.calls, self.stopping = stack, slug, [], threading.Event()

    def run(self):
        connection = http.client.HTTPConnection("127.0.0.1", self.stack.port, timeout=30)
        headers = {"Authorization": f"Bearer {self.stack.key}", "Content-Type": "application/json"}
        while not self.stopping.is_set():
            try:
                connection.request("POST", f"/api/v1/services/{self.slug}/predict", SAMPLE, headers)
                response = connection.getresponse()
                response.read()
                self.calls.append((time.time(), response.status, response.getheader("X-Model-Version")))
            except (OSError, http.client.HTTPException):
                self.calls.append((time.time(), 0, None))
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.stack.port, timeout=30)

    def stop(self):
        self.stopping.set()
        self.join()


def release(stack: Stack, slug: str, body: dict) -> dict:
    code, created = call("POST", f"{stack.url}/api/v1/services/{slug}/releases", stack.key, body)
    assert code == 201, created
    return created


def release_state(stack: Stack, slug: str, release_id: int) -> dict:
    return call("GET", f"{stack.url}/api/v1/services/{slug}/releases/{release_id}", stack.key)[1]


def upload_version(stack: Stack) -> None:
    """The demo model's file again, as the next version (multipart by hand: no extra dependency)."""
    onnx = next(stack.dir.glob("artifacts/*/artifact")).read_bytes()
    boundary = "modelbay-bench"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="digits.onnx"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + onnx
        + f"\r\n--{boundary}--\r\n".encode()
    )
    connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=60)
    connection.request(
        "POST",
        "/api/v1/models/digits/versions",
        body,
        {"Authorization": f"Bearer {stack.key}", "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    response = connection.getresponse()
    assert response.status == 201, response.read()


def summarize(title: str, calls: list, history: list) -> None:
    statuses = Counter(status for _, status, _ in calls)
    failed = sum(n for status, n in statuses.items() if status != 200)
    print(f"\n{title}: {len(calls)} calls sent, {failed} failed {dict(statuses)}")
    marks = [e for e in history if e["action"] != "started"]
    for entry, following in zip(marks, [*marks[1:], None]):
        begin = datetime.fromisoformat(entry["at"]).timestamp()
        end = datetime.fromisoformat(following["at"]).timestamp() if following else calls[-1][0] + 1
        versions = Counter(v for t, _, v in calls if begin + 0.2 <= t < end)
        total = sum(versions.values())
        shares = ", ".join(f"v{v}: {100 * n / total:.1f}%" for v, n in sorted(versions.items())) if total else "-"
        print(f"  {entry['action']:12} weight {entry['weight']:3}%  {total:6} calls  {shares}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="local")
    parser.add_argument("--interval", type=int, default=10)
    args = parser.parse_args()
    stack = Stack(args.backend)
    try:
        demo = stack.start()
        slug = demo["service"]
        upload_version(stack)
        terminal = ("promoted", "rolled_back", "failed")

        # 1. A full rollout, 10 -> 50 -> 100 %.
        client = Client(stack, slug)
        client.start()
        created = release(stack, slug, {"version": 2, "steps": [10, 50, 100], "interval_s": args.interval})
        done = wait(lambda: (r := release_state(stack, slug, created["id"]))["status"] in terminal and r, 300, 0.2)
        time.sleep(1)
        client.stop()
        summarize(f"full rollout v1 -> v2 ({done['status']})", client.calls, done["history"])

        # 2. An operator rollback at 50 % (of a release back to v1, which v1's drain made room for).
        time.sleep(3)
        client = Client(stack, slug)
        client.start()
        created = release(stack, slug, {"version": 1, "steps": [50, 100], "interval_s": 600})
        wait(lambda: release_state(stack, slug, created["id"])["status"] == "rolling", 120, 0.2)
        time.sleep(2)
        call("POST", f"{stack.url}/api/v1/services/{slug}/releases/{created['id']}/rollback", stack.key)
        time.sleep(4)
        client.stop()
        summarize(
            "release v2 -> v1 rolled back at 50 %", client.calls, release_state(stack, slug, created["id"])["history"]
        )

        # 3. promote -> every call on the new version.
        time.sleep(3)
        client = Client(stack, slug)
        client.start()
        created = release(stack, slug, {"version": 1, "steps": [50, 100], "interval_s": 600})
        wait(lambda: release_state(stack, slug, created["id"])["status"] == "rolling", 120, 0.2)
        time.sleep(2)
        promoted_at = time.time()
        call("POST", f"{stack.url}/api/v1/services/{slug}/releases/{created['id']}/promote", stack.key)
        time.sleep(3)
        client.stop()
        old_after = [t for t, _, v in client.calls if t >= promoted_at and v == "2"]  # v2 is the old one here
        last_old = max(old_after) if old_after else promoted_at
        failed = sum(1 for _, status, _ in client.calls if status != 200)
        print(
            f"\npromote -> all calls on the new version: {1000 * (last_old - promoted_at):.1f} ms "
            f"(last call answered by the old version after the promote request was sent); "
            f"{len(client.calls)} calls, {failed} failed"
        )
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
