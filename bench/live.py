"""What the console's live pages cost: memory per open WebSocket, and messages per second
per open page while the platform is busy.

    .venv/bin/python bench/live.py [--pages 50] [--seconds 20] [--redis redis://127.0.0.1:6379/3]

An embedded Modelbay (``bench/deploy.py``'s ``Stack``: one gunicorn with 2 uvicorn workers,
a real worker, the demo's digits service); with ``--redis`` the site uses that Redis (the
production layout: cache, broker and the Redis channel layer), else the embedded default
(the shared file cache, which each socket reads twice a second). Then:

1. the web processes' memory (RSS) before and after ``--pages`` sockets open, signed in as
   the demo user: the difference per socket;
2. ``--seconds`` of load: 16 callers predicting without pause, and the service scaled
   between 2 and 3 replicas every 2 s (each change a few events: the decision, instances
   starting, ready, draining). Prints the messages each page got per second, and what the
   callers saw (calls/s, p50/p99) with the pages open and, before (half as long, the same
   scaling), with none.
Not a test: it prints figures; everything started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import websockets

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from deploy import Stack, call  # noqa: E402

DEMO_EMAIL, DEMO_PASSWORD = "demo@modelbay.local", "modelbay-demo"


def session_cookie(url: str) -> str:
    with httpx.Client(base_url=url, follow_redirects=False) as client:
        page = client.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
        client.post(
            "/accounts/login/",
            data={"csrfmiddlewaretoken": token, "login": DEMO_EMAIL, "password": DEMO_PASSWORD},
            headers={"Referer": f"{url}/accounts/login/"},
        )
        client.get("/services/")  # the console picks the organization into the session
        return f"sessionid={client.cookies['sessionid']}"


def web_rss_mib(stack: Stack) -> float:
    """The gunicorn workers' resident memory, in MiB."""
    master = psutil.Process(stack.children[1].pid)
    return sum(child.memory_info().rss for child in master.children(recursive=True)) / 2**20


class Callers:
    def __init__(self, url: str, key: str, count: int):
        self.url, self.key, self.count = url, key, count
        self.times: list[float] = []
        self.stop = threading.Event()

    def _run(self) -> None:
        body = {"inputs": [[0.0] * 64]}
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30) as client:
            while not self.stop.is_set():
                started = time.perf_counter()
                if client.post("/api/v1/services/digits/predict", json=body).status_code == 200:
                    self.times.append(time.perf_counter() - started)

    def run_for(self, seconds: float) -> tuple[float, float, float]:
        threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.count)]
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        self.stop.set()
        for thread in threads:
            thread.join()
        ordered = sorted(self.times)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        return len(ordered) / seconds, statistics.median(ordered) * 1000, p99 * 1000


async def open_pages(url: str, cookie: str, pages: int) -> list:
    ws_url = url.replace("http://", "ws://") + "/ws/console/"
    sockets = []
    for _ in range(pages):
        socket = await websockets.connect(ws_url, additional_headers={"Cookie": cookie, "Origin": url})
        assert '"live"' in await socket.recv()
        sockets.append(socket)
    return sockets


async def count_messages(sockets: list, seconds: float) -> list[int]:
    counts = [0] * len(sockets)

    async def read(i, socket):
        try:
            while True:
                await socket.recv()
                counts[i] += 1
        except (asyncio.CancelledError, websockets.ConnectionClosed):
            pass

    readers = [asyncio.create_task(read(i, socket)) for i, socket in enumerate(sockets)]
    await asyncio.sleep(seconds)
    for reader in readers:
        reader.cancel()
    return counts


def scale_back_and_forth(stack: Stack, seconds: float) -> int:
    changes, until = 0, time.monotonic() + seconds
    while time.monotonic() < until:
        call("PATCH", f"{stack.url}/api/v1/services/digits", stack.key, {"replicas": 3 if changes % 2 == 0 else 2})
        changes += 1
        time.sleep(2)
    return changes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--redis", default="", help="a Redis URL: the production layout (else the embedded default)")
    args = parser.parse_args()
    extra = {"REDIS_URL": args.redis, "CELERY_BROKER_URL": args.redis} if args.redis else {}
    stack = Stack("local", extra_env=extra)
    try:
        stack.start()
        cookie = session_cookie(stack.url)
        layout = "Redis channel layer" if args.redis else "embedded default (shared file cache)"
        print(f"# bench/live.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {layout}")
        scaler = threading.Thread(target=scale_back_and_forth, args=(stack, args.seconds / 2))
        scaler.start()
        without = Callers(stack.url, stack.key, 16).run_for(args.seconds / 2)
        scaler.join()

        async def scenario():
            before = web_rss_mib(stack)
            sockets = await open_pages(stack.url, cookie, args.pages)
            await asyncio.sleep(2)
            after = web_rss_mib(stack)
            callers = Callers(stack.url, stack.key, 16)
            load = threading.Thread(target=lambda: results.append(callers.run_for(args.seconds)))
            scaler = threading.Thread(target=lambda: results.append(scale_back_and_forth(stack, args.seconds)))
            load.start()
            scaler.start()
            counts = await count_messages(sockets, args.seconds)
            load.join()
            scaler.join()
            for socket in sockets:
                await socket.close()
            return before, after, counts

        results: list = []
        before, after, counts = asyncio.run(scenario())
        with_pages = next(r for r in results if isinstance(r, tuple))
        changes = next(r for r in results if isinstance(r, int))
    finally:
        stack.stop()
    per_second = [count / args.seconds for count in counts]
    print(f"\n{args.pages} open pages; web processes {before:.1f} MiB before, {after:.1f} MiB after:")
    print(f"  memory per open page: {(after - before) * 1024 / args.pages:.0f} KiB")
    print(f"  {changes} scale changes in {args.seconds:.0f} s under 16 callers:")
    print(
        f"  messages per page per second: median {statistics.median(per_second):.2f},"
        f" max {max(per_second):.2f} ({sum(counts)} in all)"
    )
    print("\n| callers see | calls/s | p50 ms | p99 ms |\n|---|---|---|---|")
    print(f"| no page open, scaling | {without[0]:.0f} | {without[1]:.2f} | {without[2]:.2f} |")
    print(f"| {args.pages} pages open, scaling | {with_pages[0]:.0f} | {with_pages[1]:.2f} | {with_pages[2]:.2f} |")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
