"""The gateway's client to a runtime: loopback TCP against a Unix socket, side by side.

    .venv/bin/python bench/transport.py [--calls 20000] [--rounds 3]

Starts two runtime processes on the same ONNX digits model, one on 127.0.0.1:<port> and
one on a Unix socket (as instances on this host now listen), and calls each with the
gateway's own client (``runtime.client.UpstreamPool``, kept-alive connection) from one
thread, the rounds interleaved. Prints calls/s and p50/p99 per call for each, and their
ratio. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
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

from runtime.client import ConnectFailed, Dropped, UpstreamPool, unix_endpoint  # noqa: E402

BODY = json.dumps({"inputs": [[0.0] * 64]}).encode()


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


def _round(pool: UpstreamPool, endpoint: str, calls: int) -> tuple[float, float, float]:
    """(calls/s, p50 ms, p99 ms) of ``calls`` sequential predict calls."""
    latencies = []
    started = time.perf_counter()
    for _ in range(calls):
        before = time.perf_counter()
        reply = pool.request(endpoint, "POST", "/predict", body=BODY, headers={}, timeout=5)
        latencies.append(time.perf_counter() - before)
        assert reply.status == 200, reply.body
    elapsed = time.perf_counter() - started
    latencies.sort()
    return calls / elapsed, latencies[len(latencies) // 2] * 1e3, latencies[int(len(latencies) * 0.99)] * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

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
    try:
        for endpoint in endpoints.values():
            _wait_ready(pool, endpoint)
            _round(pool, endpoint, 2000)  # warm-up
        figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in endpoints}
        for _ in range(args.rounds):
            for name, endpoint in endpoints.items():
                figures[name].append(_round(pool, endpoint, args.calls))
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
    print(f"\nthe gateway's client -> runtime, one thread, {args.calls} calls x {args.rounds} rounds (medians)")
    print(f"{'transport':<14} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    medians = {}
    for name, rounds in figures.items():
        medians[name] = [statistics.median(values) for values in zip(*rounds)]
        rate, p50, p99 = medians[name]
        print(f"{name:<14} {rate:>9,.0f} {p50:>8.3f} {p99:>8.3f}")
    ratio = medians["Unix socket"][0] / medians["loopback TCP"][0]
    print(f"Unix socket / loopback TCP calls/s: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
