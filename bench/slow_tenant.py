"""One tenant's slow model against everyone else: does it hold up the other tenants' calls and
the console? And what does a call waiting on a slow model cost the gateway in memory?

    .venv/bin/python bench/slow_tenant.py [--rounds 3] [--window 8] [--baseline 3fab35e]

`make run`'s embedded stack (SQLite, a file-based cache, a filesystem broker, local
sandboxed runtimes, a real Celery worker), set up as bench/predict.py sets up its own, with:

- tenant A, the demo organization: its fast digits service (ONNX, 2 replicas);
- tenant B, another organization: a python model whose every call sleeps 2 s (``--slow-s``),
  1 replica; its runtime runs 32 predict threads (MODELBAY_RUNTIME_WORKERS), so that 24
  calls at once each take 2 s there and none waits for a thread.

Measured on the new gateway on the embedded default (one gunicorn process, a uvicorn worker,
default caps on calls in flight) and, beside it in the same run, on the old synchronous
gateway as `make run` served it (a git worktree of ``--baseline``: ``gunicorn modelbay.wsgi
--workers 1 --worker-class gthread --threads 8 --timeout 120``, the same database), rounds
interleaved. In each round and on each gateway:

- idle: tenant A's calls (``POST /api/v1/services/digits/predict``, one after another on a
  kept-alive connection; the call in flight when the window ends is waited for and counted,
  however long it takes) and the console's login page (``GET /accounts/login/``, a new
  connection each, one after the other every 0.1 s) for ``--window`` seconds;
- beside the slow tenant: the same while tenant B keeps 24 calls in flight (24 client
  threads, each calling again as soon as it is answered), after 3 s to fill.

Then the memory of calls held at once by one gateway process: a third gunicorn (new
gateway, one process, the caps on calls in flight raised past ``--hold``) gets ``--hold``
calls (1,000) at once to tenant B's model, each asking it to sleep 60 s; the worker
process's RSS before (warmed up), while they are all held, and after the callers hang up.

Not a test: it prints figures; everything started is stopped at the end (the worktree
removed).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client as http_client
import io
import json
import os
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from predict import (  # noqa: E402  (re-executes in the project's venv when needed)
    SAMPLE,
    Child,
    Stack,
    baseline,
    http,
    log,
    manage,
    prepare_embedded,
    run_in_stack,
    start_web,
    start_worker,
    wait_for,
    wait_web,
)

import psutil  # noqa: E402

SLOW_ORG = "slow-tenant"
SLOW_SERVICE = "sleepy"
FAST_SERVICE = "digits"
RUNTIME_THREADS = 32  # the slow runtime's predict threads (MODELBAY_RUNTIME_WORKERS)
HOLD_SLEEP_S = 60  # how long each held call asks the model to sleep
OLD_EMBEDDED_WEB = ["--workers", "1", "--worker-class", "gthread", "--threads", "8", "--timeout", "120"]
NAME_WIDTH = 40
FAST_BODY = json.dumps({"inputs": [SAMPLE]}, separators=(",", ":")).encode()

SLOW_MODEL = '''
import time


class Model:
    """Sleeps as many seconds as its first input says (at most 300), then answers them."""

    def load(self, model_dir):
        pass

    def predict(self, inputs):
        seconds = min(float(inputs[0]), 300.0) if inputs else 2.0
        time.sleep(seconds)
        return [seconds for _ in inputs]
'''


def python_package() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("modelbay.yaml", "framework: python\nentrypoint: predictor:Model\n")
        archive.writestr("predictor.py", SLOW_MODEL)
    return buffer.getvalue()


def upload_model(url: str, key: str, name: str, filename: str, content: bytes) -> None:
    """``POST /api/v1/models`` as multipart (by hand: no extra dependency)."""
    boundary = "modelbay-bench-slow-tenant"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\n{name}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/zip\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Authorization": f"Bearer {key}", "Content-Type": f"multipart/form-data; boundary={boundary}"}
    host, port = url.removeprefix("http://").split(":")
    connection = http_client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request("POST", "/api/v1/models", body, headers)
        response = connection.getresponse()
        status, answer = response.status, response.read()
    finally:
        connection.close()
    if status != 201:
        raise RuntimeError(f"POST /api/v1/models {name} -> {status}: {answer[:500].decode(errors='replace')}")


def wait_ready(url: str, key: str, slug: str, worker: Child) -> None:
    def check():
        if not worker.alive():
            raise RuntimeError(f"the Celery worker exited:\n{worker.log_tail()}")
        status, body = http("GET", f"{url}/api/v1/services/{slug}", headers={"Authorization": f"Bearer {key}"})
        data = json.loads(body) if status == 200 else {}
        if data.get("status") == "failed":
            raise RuntimeError(f"service {slug} failed: {data.get('error')}")
        return data.get("status") == "ready"

    wait_for(check, timeout_s=180, interval_s=0.1, what=f"service {slug} to be ready")


# --------------------------------------------------------------------------- load
class SlowLoad:
    """``in_flight`` client threads calling tenant B's slow model, each again as soon as answered."""

    def __init__(self, port: int, key: str, in_flight: int, seconds: float):
        self.port, self.key, self.seconds = port, key, seconds
        self.stopping = threading.Event()
        self.answers: list[tuple[float, int, float]] = []  # (answered at, status, took)
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(in_flight)]

    def _run(self) -> None:
        body = json.dumps({"inputs": [self.seconds]})
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        connection = http_client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                connection.request("POST", f"/api/v1/services/{SLOW_SERVICE}/predict", body, headers)
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http_client.HTTPException):
                status = 0
                connection.close()
                connection = http_client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            self.answers.append((time.monotonic(), status, time.monotonic() - started))
        connection.close()

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        """Every thread finishes the call it has in flight."""
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=150)


class LoginProbe:
    """The console's login page, a new connection each time, one after another every ``every_s``."""

    def __init__(self, url: str, every_s: float = 0.1):
        self.url, self.every_s = url + "/accounts/login/", every_s
        self.stopping = threading.Event()
        self.samples: list[float] = []  # ms
        self.failures: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            status, body = http("GET", self.url, timeout=60)
            took = time.monotonic() - started
            if status == 200:
                self.samples.append(took * 1000)
            else:
                self.failures.append(f"{status}: {body[:200].decode(errors='replace')}")
            self.stopping.wait(max(0.0, self.every_s - took))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(timeout=90)


class FastCaller:
    """Tenant A: one kept-alive connection, one call after another, each call's time; the call
    in flight when the window ends is waited for and counted (however long it takes)."""

    def __init__(self, url: str, key: str):
        self.port = int(url.rsplit(":", 1)[1])
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.stopping = threading.Event()
        self.samples: list[float] = []  # ms
        self.failures: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        connection = http_client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        path = f"/api/v1/services/{FAST_SERVICE}/predict"
        while not self.stopping.is_set():
            started = time.perf_counter()
            try:
                connection.request("POST", path, FAST_BODY, self.headers)
                response = connection.getresponse()
                answer = response.read()
                took = (time.perf_counter() - started) * 1000
                if response.status == 200:
                    self.samples.append(took)
                else:
                    self.failures.append(f"{response.status}: {answer[:200].decode(errors='replace')}")
            except (OSError, http_client.HTTPException) as error:
                self.failures.append(repr(error))
                connection.close()
                connection = http_client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        connection.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(timeout=150)


@dataclass
class Window:
    fast_ms: list[float] = field(default_factory=list)
    fast_failures: list[str] = field(default_factory=list)
    login_ms: list[float] = field(default_factory=list)
    login_failures: list[str] = field(default_factory=list)
    slow_answers: list[tuple[float, int, float]] = field(default_factory=list)
    seconds: float = 0.0


def measure_window(url: str, key: str, window_s: float, into: Window) -> None:
    """Tenant A's calls and the login page, at the same time, for ``window_s``."""
    started = time.monotonic()
    with LoginProbe(url) as probe, FastCaller(url, key) as fast:
        time.sleep(window_s)
    into.fast_ms += fast.samples
    into.fast_failures += fast.failures
    into.login_ms += probe.samples
    into.login_failures += probe.failures
    into.seconds += time.monotonic() - started


# --------------------------------------------------------------------------- memory
def gateway_worker(master: Child) -> psutil.Process:
    children = psutil.Process(master.process.pid).children()
    if len(children) != 1:
        raise RuntimeError(f"expected one worker process under {master.name}, found {len(children)}")
    return children[0]


async def _hold(port: int, key: str, calls: int, worker: psutil.Process, fds_before: int) -> dict:
    body = json.dumps({"inputs": [HOLD_SLEEP_S]}).encode()
    request = (
        f"POST /api/v1/services/{SLOW_SERVICE}/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    answered: list[bytes] = []

    async def one():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()

        async def answer():
            line = await reader.readline()
            if line:
                answered.append(line)

        return writer, asyncio.ensure_future(answer())

    opened = []
    for start in range(0, calls, 100):  # in batches: no listen backlog overflows
        opened += await asyncio.gather(*(one() for _ in range(start, min(calls, start + 100))))
    sent_at = time.monotonic()
    # Held: the gateway has each caller's connection and one to the runtime per call.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and worker.num_fds() < fds_before + 2 * calls - calls // 100:
        await asyncio.sleep(0.2)
    fds_held = worker.num_fds()
    await asyncio.sleep(1.0)
    rss_held = 0
    for _ in range(5):
        rss_held = max(rss_held, worker.memory_info().rss)
        await asyncio.sleep(0.2)
    held = calls - len(answered)
    elapsed = time.monotonic() - sent_at
    for writer, waiting in opened:
        waiting.cancel()
        writer.close()
    await asyncio.sleep(3.0)
    return {
        "fds_held": fds_held,
        "rss_held": rss_held,
        "held": held,
        "answered": [line.decode(errors="replace").strip() for line in answered[:5]],
        "held_after_s": elapsed,
        "fds_after": worker.num_fds(),
        "rss_after": worker.memory_info().rss,
    }


def held_memory(master: Child, url: str, key: str, calls: int, fast_key: str) -> dict:
    worker = gateway_worker(master)
    # Warm up: the slow tenant's key and route loaded, a few hundred calls served.
    for _ in range(3):
        status, body = http("POST", f"{url}/api/v1/services/{SLOW_SERVICE}/predict", {"inputs": [0.01]},
                            {"Authorization": f"Bearer {key}"}, timeout=30)  # fmt: skip
        if status != 200:
            raise RuntimeError(f"warm-up call to {SLOW_SERVICE} -> {status}: {body[:300].decode(errors='replace')}")
    measure_window(url, fast_key, 2.0, Window())
    time.sleep(1.0)
    before = {"rss": worker.memory_info().rss, "fds": worker.num_fds()}
    log(f"holding {calls} calls on one gateway process (RSS before {before['rss'] / 2**20:.1f} MiB)")
    figures = asyncio.run(_hold(int(url.rsplit(":", 1)[1]), key, calls, worker, before["fds"]))
    figures.update({"rss_before": before["rss"], "fds_before": before["fds"], "calls": calls})
    return figures


# --------------------------------------------------------------------------- report
def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def summarize(name: str, idle: Window, loaded: Window) -> tuple[list[str], dict]:
    values = {}
    lines = []
    for label, w in (("idle", idle), ("beside the slow tenant", loaded)):
        row = {
            "fast_p50_ms": pct(w.fast_ms, 50),
            "fast_p99_ms": pct(w.fast_ms, 99),
            "fast_max_ms": max(w.fast_ms, default=float("nan")),
            "fast_calls": len(w.fast_ms),
            "fast_calls_per_s": len(w.fast_ms) / w.seconds if w.seconds else float("nan"),
            "fast_failures": len(w.fast_failures),
            "login_p50_ms": pct(w.login_ms, 50),
            "login_max_ms": max(w.login_ms, default=float("nan")),
            "login_count": len(w.login_ms),
            "login_failures": len(w.login_failures),
        }
        slow = ""
        if w is loaded:
            statuses: dict[int, int] = {}
            for _, status, _took in w.slow_answers:
                statuses[status] = statuses.get(status, 0) + 1
            row["slow_statuses"] = statuses
            row["slow_p50_s"] = pct([took for _, s, took in w.slow_answers if s == 200], 50)
            row["slow_calls_per_s"] = sum(1 for _, s, _ in w.slow_answers if s == 200) / w.seconds if w.seconds else 0
            slow = f"   {row['slow_calls_per_s']:.1f}/s, p50 {row['slow_p50_s']:.2f} s, statuses {statuses}"
        values[label] = row
        lines.append(
            f"{name:<{NAME_WIDTH}} {label:<23} {row['fast_p50_ms']:>8.2f} {row['fast_p99_ms']:>9.2f} "
            f"{row['fast_max_ms']:>9.1f} {row['fast_calls']:>7} {row['login_p50_ms']:>9.1f} "
            f"{row['login_max_ms']:>9.1f} {row['login_count']:>6}{slow}"
        )
    return lines, values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--window", type=float, default=8.0, help="seconds per measured window (default 8)")
    parser.add_argument("--slow-s", type=float, default=2.0, help="seconds each slow call takes (default 2)")
    parser.add_argument("--in-flight", type=int, default=24, help="slow calls in flight at once (default 24)")
    parser.add_argument("--hold", type=int, default=1000, help="calls held at once for the memory figure (0: skip)")
    parser.add_argument("--baseline", default=baseline.DEFAULT_REF, metavar="REF",
                        help=f"commit of the old sync gateway (default {baseline.DEFAULT_REF})")  # fmt: skip
    parser.add_argument("--skip-baseline", action="store_true", help="only the new gateway")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database)")
    args = parser.parse_args(argv)

    return run_in_stack(lambda stack: run(args, stack), keep=args.keep)


def run(args, stack: Stack) -> int:
    problems: list[str] = []
    log(f"temp dir {stack.tmp}")
    demo = prepare_embedded(stack, {"MODELBAY_RUNTIME_WORKERS": str(RUNTIME_THREADS)})
    fast_key = demo["key"]
    worker = start_worker(stack)
    gateways: dict[str, tuple[Child, str]] = {}
    child, url = start_web(stack, "gunicorn-new", 1)
    gateways["new gateway, 1 process"] = (child, url)
    caps = {
        name: str(4 * max(args.hold, 1)) for name in ("MODELBAY_SERVICE_MAX_IN_FLIGHT", "MODELBAY_ORG_MAX_IN_FLIGHT")
    }
    hold = start_web(stack, "gunicorn-hold", 1, extra_env=caps) if args.hold else None
    commit = None
    if not args.skip_baseline:
        try:
            tree, commit = baseline.add_worktree(args.baseline)
            stack.worktrees.append(tree)
            log(f"baseline: worktree of {commit[:7]} at {tree}")
            gateways[f"old sync gateway ({commit[:7]}), gthread 1x8"] = start_web(
                stack, "gunicorn-old-gthread", 1, old_tree=tree, worker_args=OLD_EMBEDDED_WEB
            )
        except Exception as error:  # noqa: BLE001 - measure the new one
            problems.append(f"baseline {args.baseline}: {error}")
    for child, url in [*gateways.values(), *([hold] if hold else [])]:
        wait_web(child, url)
    api = gateways["new gateway, 1 process"][1]

    log("tenant B: its key, its python model (2 s a call), its service")
    slow_key = (
        manage(stack, "create_api_key", "--org", SLOW_ORG, "--email", "slow@example.com").strip().splitlines()[-1]
    )
    upload_model(api, slow_key, SLOW_SERVICE, "sleepy.zip", python_package())
    body = {"name": SLOW_SERVICE, "model": SLOW_SERVICE, "replicas": 1, "timeout_s": 120}
    status, answer = http("POST", f"{api}/api/v1/services", body, {"Authorization": f"Bearer {slow_key}"})
    if status != 202:
        raise RuntimeError(f"POST /api/v1/services {SLOW_SERVICE} -> {status}: {answer[:500].decode(errors='replace')}")
    wait_ready(api, fast_key, FAST_SERVICE, worker)
    wait_ready(api, slow_key, SLOW_SERVICE, worker)
    time.sleep(1.0)  # every gateway process sees the new routes

    for name, (child, url) in gateways.items():
        for slug, key, inputs in ((FAST_SERVICE, fast_key, [SAMPLE]), (SLOW_SERVICE, slow_key, [0.01])):
            status, answer = http("POST", f"{url}/api/v1/services/{slug}/predict", {"inputs": inputs},
                                  {"Authorization": f"Bearer {key}"}, timeout=30)  # fmt: skip
            if status != 200:
                raise RuntimeError(f"{name}: {slug} -> {status}: {answer[:300].decode(errors='replace')}")
        measure_window(url, fast_key, 1, Window())  # warm-up

    windows = {name: (Window(), Window()) for name in gateways}
    load_before = os.getloadavg()[0]
    for round_ in range(args.rounds):
        for name, (child, url) in gateways.items():
            idle, loaded = windows[name]
            log(f"round {round_ + 1}, {name}: idle {args.window:.0f}s")
            measure_window(url, fast_key, args.window, idle)
            log(f"round {round_ + 1}, {name}: {args.in_flight} slow calls in flight, then {args.window:.0f}s")
            load = SlowLoad(int(url.rsplit(":", 1)[1]), slow_key, args.in_flight, args.slow_s)
            load.start()
            time.sleep(3.0)
            started = time.monotonic()
            measure_window(url, fast_key, args.window, loaded)
            ended = time.monotonic()
            load.stop()
            loaded.slow_answers += [a for a in load.answers if started <= a[0] <= ended]
            if not child.alive():
                problems.append(f"{name} exited:\n{child.log_tail()}")
    load_after = os.getloadavg()[0]

    memory = None
    if hold:
        try:
            memory = held_memory(hold[0], hold[1], slow_key, args.hold, fast_key)
        except Exception as error:  # noqa: BLE001 - print the rest
            problems.append(f"held calls: {error}")

    print()
    print(f"Slow tenant — embedded stack (SQLite), tenant B: {args.in_flight} calls in flight to a python model "
          f"taking {args.slow_s:g} s a call (runtime with {RUNTIME_THREADS} predict threads); tenant A: digits "
          f"(ONNX), one call after another on a kept-alive connection; login page: GET /accounts/login/, a new "
          f"connection each, one after another every 0.1 s; {args.rounds} round(s) x {args.window:g} s per "
          f"window, interleaved; percentiles over every call of all rounds")  # fmt: skip
    print(f"1-min load average: {load_before:.2f} before, {load_after:.2f} after (2 cores)")
    header = (f"{'gateway':<{NAME_WIDTH}} {'window':<23} {'A p50 ms':>8} {'A p99 ms':>9} {'A max ms':>9} {'A calls':>7} "
              f"{'login p50':>9} {'login max':>9} {'logins':>6}   tenant B answered")  # fmt: skip
    print(header)
    print("-" * len(header))
    values = {}
    for name, (idle, loaded) in windows.items():
        lines, values[name] = summarize(name, idle, loaded)
        for line in lines:
            print(line)
        for w in (idle, loaded):
            if w.fast_failures:
                problems.append(f"{name}: tenant A failures {w.fast_failures[:3]}")
            if w.login_failures:
                problems.append(f"{name}: login page failures {w.login_failures[:3]}")
    if memory:
        per_call = (memory["rss_held"] - memory["rss_before"]) / memory["calls"]
        memory["rss_per_held_call"] = per_call
        print()
        print(f"Calls held at once by one new-gateway process (caps raised to {caps['MODELBAY_SERVICE_MAX_IN_FLIGHT']}): "
              f"{memory['held']} of {memory['calls']} still unanswered when measured "
              f"({memory['held_after_s']:.1f} s after the last was sent; each asks for {HOLD_SLEEP_S} s); "
              f"file descriptors {memory['fds_before']} -> {memory['fds_held']}")  # fmt: skip
        print(f"  RSS before {memory['rss_before'] / 2**20:.1f} MiB, holding {memory['rss_held'] / 2**20:.1f} MiB, "
              f"after the callers hung up {memory['rss_after'] / 2**20:.1f} MiB: "
              f"{per_call / 1024:.1f} KiB per held call")  # fmt: skip
    for child in stack.children:
        if not child.alive():
            problems.append(f"{child.name} exited early (exit {child.process.returncode}):\n{child.log_tail()}")
    if problems:
        print("\nProblems seen:")
        for problem in problems:
            print(f"  - {problem}")
    if args.json:
        args.json.write_text(json.dumps({"windows": values, "memory": memory, "baseline_commit": commit,
                                         "load_average": [load_before, load_after], "problems": problems},
                                        indent=2, default=str))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
