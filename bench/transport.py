"""The gateway's client to a runtime: loopback TCP against a Unix socket, sync against async.

    .venv/bin/python bench/transport.py [--calls 20000] [--rounds 3] [--async-clients hand,aiohttp,httpx]

Starts two runtime processes on the same ONNX digits model, one on 127.0.0.1:<port> and
one on a Unix socket (as instances on this host now listen), and calls them, the rounds
interleaved:

- with the gateway's synchronous client (``runtime.client.UpstreamPool``, kept-alive
  connection) from one thread, on each transport (c=1);
- from one uvloop event loop (as uvicorn runs the gateway) on the Unix socket, sequentially
  (c=1) and from 16 concurrent tasks (c=16), with each async client: ``hand``, the gateway's
  own (``runtime.aclient.AsyncUpstreamPool``: an asyncio Protocol and httptools), ``aiohttp``
  (a ``ClientSession`` on a ``UnixConnector``, cookies and decompression off) and ``httpx``
  (an ``AsyncClient`` on ``AsyncHTTPTransport(uds=...)``), where installed.

Every client sends the same body and reads the whole answer. Prints calls/s, p50/p99 per call
and the client's own CPU per call (this process's CPU time; the runtime is another
process), each row's calls/s against the sync pool's on the Unix socket, and the async
clients against each other. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from runtime.aclient import AsyncUpstreamPool  # noqa: E402
from runtime.client import ConnectFailed, Dropped, UpstreamPool, unix_endpoint  # noqa: E402

BODY = json.dumps({"inputs": [[0.0] * 64]}).encode()
HEADERS = {"Content-Type": "application/json"}
TIMEOUT = 5.0
ASYNC_CONCURRENCY = (1, 16)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(pool: UpstreamPool, endpoint: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if pool.request(endpoint, "GET", "/v2/health/ready", body=None, headers={}, timeout=1).status == 200:
                return
        except (ConnectFailed, Dropped):
            pass
        time.sleep(0.1)
    raise SystemExit(f"{endpoint} did not get ready")


def _figures(latencies: list[float], elapsed: float, cpu: float) -> tuple[float, float, float, float]:
    """(calls/s, p50 ms, p99 ms, client CPU µs per call)."""
    calls = len(latencies)
    latencies.sort()
    return (
        calls / elapsed,
        latencies[calls // 2] * 1e3,
        latencies[int(calls * 0.99)] * 1e3,
        cpu / calls * 1e6,
    )


def _round(pool: UpstreamPool, endpoint: str, calls: int) -> tuple[float, float, float, float]:
    """``calls`` sequential predict calls with the sync pool."""
    latencies = []
    cpu, started = time.process_time(), time.perf_counter()
    for _ in range(calls):
        before = time.perf_counter()
        reply = pool.request(endpoint, "POST", "/predict", body=BODY, headers=HEADERS, timeout=TIMEOUT)
        latencies.append(time.perf_counter() - before)
        assert reply.status == 200, reply.body
    return _figures(latencies, time.perf_counter() - started, time.process_time() - cpu)


# ---------------------------------------------------------------------------
# the async clients: each one call = one predict, whole answer read, status checked


class _Hand:
    """The gateway's own: runtime.aclient.AsyncUpstreamPool."""

    def __init__(self, socket_path: Path):
        self.endpoint = unix_endpoint(socket_path)
        self.pool = AsyncUpstreamPool(connect_timeout=1)

    async def call(self) -> None:
        reply = await self.pool.request(self.endpoint, "POST", "/predict", body=BODY, headers=HEADERS, timeout=TIMEOUT)
        assert reply.status == 200, reply.body

    async def aclose(self) -> None:
        self.pool.close()


class _Aiohttp:
    """aiohttp's client at its lightest: one session per socket path (a UnixConnector
    reaches one socket), no cookies, no decompression, the total timeout per call."""

    def __init__(self, socket_path: Path):
        import aiohttp

        self.session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(socket_path), limit=64),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
        )
        self.timeout = aiohttp.ClientTimeout(total=TIMEOUT)

    async def call(self) -> None:
        async with self.session.post(
            "http://runtime/predict", data=BODY, headers=HEADERS, timeout=self.timeout
        ) as response:
            body = await response.read()
            response.headers.get("X-Modelbay-Instance")  # what the gateway checks
            assert response.status == 200, body

    async def aclose(self) -> None:
        await self.session.close()


class _Httpx:
    """httpx's AsyncClient on its Unix-socket transport (for reference)."""

    def __init__(self, socket_path: Path):
        import httpx

        self.client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(socket_path)), base_url="http://runtime", timeout=TIMEOUT
        )

    async def call(self) -> None:
        response = await self.client.post("/predict", content=BODY, headers=HEADERS)
        response.headers.get("X-Modelbay-Instance")
        assert response.status_code == 200, response.content

    async def aclose(self) -> None:
        await self.client.aclose()


ASYNC_CLIENTS = {"hand": _Hand, "aiohttp": _Aiohttp, "httpx": _Httpx}
ASYNC_MODULES = {"hand": "runtime.aclient", "aiohttp": "aiohttp", "httpx": "httpx"}


def _async_round(loop, client, calls: int, concurrency: int) -> tuple[float, float, float, float]:
    """``calls`` predict calls from ``concurrency`` tasks, each calling sequentially."""
    latencies: list[float] = []

    async def task(count: int) -> None:
        for _ in range(count):
            before = time.perf_counter()
            await client.call()
            latencies.append(time.perf_counter() - before)

    async def run() -> None:
        await asyncio.gather(*(task(calls // concurrency) for _ in range(concurrency)))

    cpu, started = time.process_time(), time.perf_counter()
    loop.run_until_complete(run())
    return _figures(latencies, time.perf_counter() - started, time.process_time() - cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per round and row")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--async-clients",
        default="hand,aiohttp,httpx",
        help="comma-separated, of: hand, aiohttp, httpx (those not installed are left out); empty: none",
    )
    args = parser.parse_args()
    wanted = [name for name in args.async_clients.split(",") if name]
    unknown = set(wanted) - set(ASYNC_CLIENTS)
    if unknown:
        parser.error(f"unknown async client(s): {', '.join(sorted(unknown))}")
    clients = []
    for name in wanted:
        try:
            __import__(ASYNC_MODULES[name])
        except ImportError:
            print(f"{name} is not installed: left out", file=sys.stderr)
        else:
            clients.append(name)

    import uvloop

    from demo.digits import build_digits_onnx

    work = Path(tempfile.mkdtemp(prefix="modelbay-transport-"))
    model_dir = work / "model"
    model_dir.mkdir()
    build_digits_onnx(model_dir / "digits.onnx")
    port = _free_port()
    socket_path = work / "runtime.sock"
    common = [sys.executable, "-m", "runtime", "--model-dir", str(model_dir), "--name", "digits"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = [
        subprocess.Popen([*common, "--port", str(port)], cwd=REPO, env=env),
        subprocess.Popen([*common, "--uds", str(socket_path)], cwd=REPO, env=env),
    ]
    endpoints = {"loopback TCP": f"http://127.0.0.1:{port}", "Unix socket": unix_endpoint(socket_path)}
    pool = UpstreamPool(connect_timeout=1)
    loop = uvloop.new_event_loop()
    # rows: (client, transport, c); the async clients all call the Unix-socket runtime
    sync_rows = {("sync", name, 1): endpoint for name, endpoint in endpoints.items()}
    async_rows = [(name, "Unix socket", c) for c in ASYNC_CONCURRENCY for name in clients]
    figures: dict[tuple, list[tuple[float, float, float, float]]] = {row: [] for row in [*sync_rows, *async_rows]}
    async_clients = {}
    try:
        for endpoint in endpoints.values():
            _wait_ready(pool, endpoint)
            _round(pool, endpoint, 2000)  # warm-up
        for name in clients:
            async_clients[name] = loop.run_until_complete(_make(ASYNC_CLIENTS[name], socket_path))
            for concurrency in ASYNC_CONCURRENCY:
                _async_round(loop, async_clients[name], 2000, concurrency)  # warm-up
        for number in range(args.rounds):
            print(f"round {number + 1} of {args.rounds}", file=sys.stderr)
            for row, endpoint in sync_rows.items():
                figures[row].append(_round(pool, endpoint, args.calls))
            for row in async_rows:
                figures[row].append(_async_round(loop, async_clients[row[0]], args.calls, row[2]))
    finally:
        for client in async_clients.values():
            loop.run_until_complete(client.aclose())
        loop.close()
        for process in processes:
            process.terminate()
            process.wait(timeout=30)

    medians = {row: [statistics.median(values) for values in zip(*rounds)] for row, rounds in figures.items()}
    base = medians[("sync", "Unix socket", 1)][0]
    print(f"\nthe gateway's client -> runtime, {args.calls} calls x {args.rounds} rounds (medians)")
    print("sync: one thread; async: one uvloop event loop, c tasks calling in turn")
    print(
        f"{'client':<8} {'transport':<13} {'c':>3} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/call':>12}  / sync"
    )
    for (client, transport, concurrency), (rate, p50, p99, cpu) in medians.items():
        print(
            f"{client:<8} {transport:<13} {concurrency:>3} {rate:>9,.0f} {p50:>8.3f} {p99:>8.3f} {cpu:>12.1f}"
            f"  {rate / base:.2f}x"
        )
    print("(/ sync: calls/s against the sync pool's on the Unix socket, c=1; CPU: this process's, per call)")
    ratio = base / medians[("sync", "loopback TCP", 1)][0]
    print(f"\nsync, Unix socket / loopback TCP calls/s: {ratio:.2f}x")
    for concurrency in ASYNC_CONCURRENCY:
        for i, first in enumerate(clients):
            for second in clients[i + 1 :]:
                a = medians[(first, "Unix socket", concurrency)]
                b = medians[(second, "Unix socket", concurrency)]
                print(
                    f"c={concurrency}: {first} / {second}: calls/s {a[0] / b[0]:.2f}x,"
                    f" p50 {a[1] / b[1]:.2f}x, client CPU per call {a[3] / b[3]:.2f}x"
                )
    return 0


async def _make(factory, socket_path: Path):
    """Made inside the running loop (aiohttp's session wants one)."""
    return factory(socket_path)


if __name__ == "__main__":
    sys.exit(main())
