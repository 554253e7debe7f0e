"""One long prediction through the gateway, and a caller that hangs up on another.

    .venv/bin/python bench/long_call.py [--minutes 10] [--workers 2] [--hang-up-after 5]

The issue's done-means: "A 10-minute prediction completes when its service allows it; a
client that hangs up cancels it." On `make run`'s embedded stack (SQLite, a file-based cache,
a filesystem broker, sandboxed local runtimes, a real Celery worker), set up as
bench/predict.py sets up its own, served as the image serves it: ``gunicorn --bind ...
--workers N --no-control-socket`` from the repository's root (gunicorn.conf.py: modelbay.asgi
on uvicorn workers), ``WEB_CONCURRENCY=N``, gunicorn's DEFAULT ``--timeout`` (30 s).

One organization, one python model whose every call sleeps as many seconds as its first
input says, deployed as service ``sleepy`` (1 replica) with ``timeout_s`` 900
(MODELBAY_MAX_TIMEOUT_S). Then:

1. ONE call of ``--minutes`` minutes (default 10): when it was sent, its status, how long it
   took; each gateway worker process's RSS, threads, file descriptors and connections to the
   runtime instance before, during (every ``--sample-every`` seconds) and after the call,
   and whether gunicorn replaced a worker meanwhile;
2. the same call again, on a raw socket that the caller closes ``--hang-up-after`` seconds
   after sending (default 5): how soon the gateway's connection to the runtime is closed,
   the same figures before, during and after, and /metrics' ``modelbay_gateway_in_flight``
   and ``modelbay_gateway_rejections_total{code="client_closed"}``.

The gateway's connections to the runtime are counted from outside: each worker's sockets
(/proc/PID/fd) whose peer (``ss -x``) is a socket of the instance's runtime process.

Not a test: it prints figures (progress on stderr, the results on stdout) and exits 0
whenever it could measure. Everything started is stopped at the end (also on Ctrl+C); the
runtime still sleeping on the hung-up call takes up to its 30 s of graceful shutdown.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from predict import (  # noqa: E402  (re-executes in the project's venv when needed)
    Child,
    Stack,
    embedded_env,
    http,
    log,
    manage,
    run_in_stack,
    start_web,
    start_worker,
    wait_for,
    wait_web,
)
from slow_tenant import upload_model, wait_ready  # noqa: E402

import psutil  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

ORG = "long-calls"
SERVICE = "sleepy"
TIMEOUT_S = 900  # the service's timeout_s: MODELBAY_MAX_TIMEOUT_S
TOKEN = "metrics-token-for-the-long-call-bench"

SLEEPY_MODEL = '''
import time


class Model:
    """Sleeps as many seconds as its first input says (at most an hour), then says so."""

    def load(self, model_dir):
        pass

    def predict(self, inputs):
        seconds = min(float(inputs[0]), 3600.0)
        time.sleep(seconds)
        return [f"slept {seconds:g} s"]
'''


def python_package() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("modelbay.yaml", "framework: python\nentrypoint: predictor:Model\n")
        archive.writestr("predictor.py", SLEEPY_MODEL)
    return buffer.getvalue()


# --------------------------------------------------------------------------- observing
def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets a process holds (its /proc/PID/fd links ``socket:[N]``)."""
    inodes = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for name in names:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    return inodes


def unix_peers() -> dict[int, int]:
    """{inode: its peer's inode} of the connected Unix stream sockets (``ss -x``) of this
    network namespace; the peer may live in another (a sandboxed runtime's)."""
    output = subprocess.run(["ss", "-xnH", "state", "connected"], check=True, capture_output=True, text=True).stdout
    peers = {}
    for line in output.splitlines():
        fields = line.split()  # Netid State Recv-Q Send-Q Local-Address Inode Peer-Address Peer-Inode
        if len(fields) >= 7 and fields[0] == "u_str" and fields[-1].isdigit() and fields[-3].isdigit():
            peers[int(fields[-3])] = int(fields[-1])
    return peers


@dataclass
class Sample:
    at: float  # seconds since the call was sent (negative: before)
    per_worker: dict[int, dict] = field(default_factory=dict)  # pid -> rss, threads, fds, to_runtime
    master: dict = field(default_factory=dict)

    def line(self) -> str:
        parts = [
            f"pid {pid}: RSS {w['rss'] / 2**20:.1f} MiB, {w['threads']} threads, {w['fds']} fds, "
            f"{w['to_runtime']} conn. to the runtime"
            for pid, w in sorted(self.per_worker.items())
        ]
        return "; ".join(parts) if parts else "no worker"


class Gateway:
    """The gunicorn master, its workers, and the instance behind it."""

    def __init__(self, child: Child, url: str, namespace: str):
        self.child, self.url, self.namespace = child, url, namespace
        self.master = psutil.Process(child.process.pid)
        self.runtime: list[psutil.Process] = []

    def workers(self) -> list[psutil.Process]:
        return self.master.children()

    def find_runtime(self, instance_id: str) -> None:
        marker = f"{self.namespace}/{instance_id}"
        self.runtime = [
            p for p in psutil.process_iter(["cmdline"]) if marker in (p.info["cmdline"] or []) and p.pid != os.getpid()
        ]
        if not self.runtime:
            raise RuntimeError(f"no process of instance {instance_id} (looked for {marker!r} in command lines)")

    def runtime_ends(self) -> set[int]:
        return set().union(*(socket_inodes(p.pid) for p in self.runtime))

    def connections(self) -> dict[int, set[int]]:
        """{worker pid: its sockets connected to the runtime instance}."""
        ends, peers = self.runtime_ends(), unix_peers()
        return {w.pid: {i for i in socket_inodes(w.pid) if peers.get(i) in ends} for w in self.workers()}

    def sample(self, at: float) -> Sample:
        found = Sample(at)
        connections = self.connections()
        for worker in self.workers():
            try:
                found.per_worker[worker.pid] = {
                    "rss": worker.memory_info().rss,
                    "threads": worker.num_threads(),
                    "fds": worker.num_fds(),
                    "to_runtime": len(connections.get(worker.pid, ())),
                }
            except psutil.Error:
                pass
        found.master = {"rss": self.master.memory_info().rss, "threads": self.master.num_threads()}
        return found

    def metrics(self) -> dict[str, float]:
        status, body = http("GET", f"{self.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        if status != 200:
            return {"error": status}
        wanted = {"in_flight": 0.0, "client_closed": 0.0, "upstream_timeout": 0.0, "calls_2xx": 0.0}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                labels = sample.labels
                if sample.name == "modelbay_gateway_in_flight" and labels.get("service") == SERVICE:
                    wanted["in_flight"] += sample.value
                elif sample.name == "modelbay_gateway_rejections_total" and labels.get("code") in wanted:
                    wanted[labels["code"]] += sample.value
                elif (
                    sample.name == "modelbay_gateway_calls_total"
                    and labels.get("service") == SERVICE
                    and labels.get("status_class") == "2xx"
                ):
                    wanted["calls_2xx"] += sample.value
        return wanted


# --------------------------------------------------------------------------- the two calls
def long_call(gateway: Gateway, key: str, seconds: float, sample_every: float) -> dict:
    """One call of ``seconds``, sampled before, during and after."""
    before = gateway.sample(-1.0)
    workers_before = sorted(before.per_worker)
    log(f"before: {before.line()}")
    result: dict = {}

    def call() -> None:
        started = time.monotonic()
        status, body = http("POST", f"{gateway.url}/api/v1/services/{SERVICE}/predict", {"inputs": [seconds]},
                            {"Authorization": f"Bearer {key}"}, timeout=seconds + 120)  # fmt: skip
        result.update(status=status, body=body.decode(errors="replace")[:300], took=time.monotonic() - started)

    sent_wall = time.strftime("%H:%M:%S")
    sent = time.monotonic()
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    during: list[Sample] = []
    next_at = min(5.0, seconds / 2)
    while thread.is_alive():
        thread.join(timeout=max(0.0, sent + next_at - time.monotonic()))
        if thread.is_alive():
            found = gateway.sample(time.monotonic() - sent)
            during.append(found)
            log(f"{found.at:6.0f} s into the call: {found.line()}")
            next_at += sample_every
    answered_wall = time.strftime("%H:%M:%S")
    time.sleep(2.0)
    after = gateway.sample(time.monotonic() - sent)
    log(f"after: {after.line()}")
    return {
        "sent": sent_wall,
        "answered": answered_wall,
        **result,
        "before": before,
        "during": during,
        "after": after,
        "workers_before": workers_before,
        "workers_after": sorted(w.pid for w in gateway.workers()),
        "metrics": gateway.metrics(),
    }


def hang_up(gateway: Gateway, key: str, seconds: float, after_s: float) -> dict:
    """The same call on a socket of its own, closed ``after_s`` after sending it."""
    host, port = gateway.url.removeprefix("http://").split(":")
    body = json.dumps({"inputs": [seconds]}).encode()
    request = (
        f"POST /api/v1/services/{SERVICE}/predict HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    before = gateway.sample(-1.0)
    log(f"before the hang-up call: {before.line()}")
    client = socket.create_connection((host, int(port)), timeout=5)
    sent_wall = time.strftime("%H:%M:%S")
    client.sendall(request)
    sent = time.monotonic()
    # Being forwarded: on a kept-alive connection to the runtime or a new one.
    wait_for(lambda: gateway.metrics().get("in_flight") == 1, timeout_s=15, interval_s=0.05,
             what="the call to be forwarded to the runtime")  # fmt: skip
    reached = time.monotonic() - sent
    time.sleep(max(0.0, after_s - 1.0 - (time.monotonic() - sent)))
    during = gateway.sample(time.monotonic() - sent)
    metrics_during = gateway.metrics()
    log(f"{during.at:.1f} s into the hang-up call: {during.line()}")
    time.sleep(max(0.0, after_s - 0.2 - (time.monotonic() - sent)))
    connected = {(pid, inode) for pid, inodes in gateway.connections().items() for inode in inodes}
    time.sleep(max(0.0, after_s - (time.monotonic() - sent)))
    client.settimeout(0)
    try:
        answered_early = client.recv(1) != b""
    except BlockingIOError:
        answered_early = False
    client.close()
    hung_up = time.monotonic()

    def closed() -> set[tuple[int, int]]:
        """Which of the connections to the runtime at the hang-up are gone (the call's)."""
        return connected - {(pid, inode) for pid, inodes in gateway.connections().items() for inode in inodes}

    closed_after, gone = None, set()
    try:
        gone = wait_for(
            closed, timeout_s=30, interval_s=0.02, what="the gateway to close its connection to the runtime"
        )
        closed_after = time.monotonic() - hung_up
    except TimeoutError:
        pass
    time.sleep(2.0)
    after = gateway.sample(time.monotonic() - sent)
    log(f"after the hang-up: {after.line()}")
    return {
        "sent": sent_wall,
        "reached_runtime_s": reached,
        "hung_up_after_s": hung_up - sent,
        "answered_before_hang_up": answered_early,
        "closed_after_s": closed_after,
        "closed": sorted(gone),
        "connected_at_hang_up": sorted(connected),
        "before": before,
        "during": during,
        "after": after,
        "metrics_during": metrics_during,
        "metrics": gateway.metrics(),
    }


# --------------------------------------------------------------------------- report
def figures(label: str, sample: Sample) -> str:
    return f"  {label:<28} {sample.line()}"


def report(args, gateway: Gateway, endpoint: str, long: dict | None, gone: dict, problems: list[str]) -> None:
    print()
    print(f"Long call — embedded stack (SQLite), gunicorn --workers {args.workers} (uvicorn workers, default "
          f"--timeout 30 s), service {SERVICE!r} timeout_s {TIMEOUT_S}, one runtime instance at {endpoint}")  # fmt: skip
    master = gone["before"].master
    print(
        f"gunicorn master pid {gateway.master.pid}: RSS {master['rss'] / 2**20:.1f} MiB, {master['threads']} thread(s)"
    )
    if long is not None:
        print()
        report_long(args, long)
    print()
    report_hang_up(args, gone)
    if problems:
        print("\nProblems seen:")
        for problem in problems:
            print(f"  - {problem}")


def report_long(args, long: dict) -> None:
    seconds = args.minutes * 60
    print(f"1. one call of {args.minutes:g} min ({seconds:g} s)")
    print(f"  sent at {long['sent']}, answered at {long['answered']}: status {long.get('status')} after "
          f"{long.get('took', float('nan')):.1f} s; body {long.get('body')}")  # fmt: skip
    print(figures("before", long["before"]))
    if long["during"]:
        first, last = long["during"][0], long["during"][-1]
        print(figures(f"during, at {first.at:.0f} s", first))
        print(figures(f"during, at {last.at:.0f} s", last))
        threads = {pid: sorted({s.per_worker[pid]["threads"] for s in long["during"] if pid in s.per_worker})
                   for pid in long["before"].per_worker}  # fmt: skip
        rss = {pid: max(s.per_worker[pid]["rss"] for s in long["during"] if pid in s.per_worker) / 2**20
               for pid in long["before"].per_worker if any(pid in s.per_worker for s in long["during"])}  # fmt: skip
        print(f"  during, {len(long['during'])} samples: threads per worker {threads}; "
              f"max RSS per worker (MiB) { {pid: round(v, 1) for pid, v in rss.items()} }")  # fmt: skip
    print(figures("after", long["after"]))
    replaced = long["workers_before"] != long["workers_after"]
    print(f"  gunicorn workers {long['workers_before']} before, {long['workers_after']} after"
          f"{' (REPLACED: a worker was killed)' if replaced else ' (none replaced)'}")  # fmt: skip
    print(f"  /metrics after: {long['metrics']}")


def report_hang_up(args, gone: dict) -> None:
    print(f"2. the same call, the caller hanging up {args.hang_up_after:g} s after sending it")
    print(f"  sent at {gone['sent']}; forwarded (in flight) after {gone['reached_runtime_s']:.2f} s; hung up after "
          f"{gone['hung_up_after_s']:.1f} s{' (it had been ANSWERED)' if gone['answered_before_hang_up'] else ''}")  # fmt: skip
    closed = gone["closed_after_s"]
    print(f"  the gateway's connections to the runtime at the hang-up, (worker pid, socket inode): "
          f"{gone['connected_at_hang_up']}; closed "
          + (f"{closed:.3f} s after the hang-up: {gone['closed']}" if closed is not None
             else "NONE within 30 s of the hang-up"))  # fmt: skip
    print(figures("before", gone["before"]))
    print(figures(f"during, at {gone['during'].at:.1f} s", gone["during"]))
    print(figures("after", gone["after"]))
    print(f"  /metrics during: {gone['metrics_during']}")
    print(f"  /metrics after:  {gone['metrics']}")


def checks(long: dict | None, gone: dict, seconds: float) -> list[str]:
    problems = [] if long is not None else checks_hang_up(gone)
    if long is None:
        return problems
    if long.get("status") != 200:
        problems.append(f"the long call answered {long.get('status')}: {long.get('body')}")
    elif long["took"] < seconds:
        problems.append(f"the long call answered after {long['took']:.1f} s, before the model's {seconds:g} s")
    if long["workers_before"] != long["workers_after"]:
        problems.append("gunicorn replaced a worker during the long call")
    for sample in long["during"] + [long["after"]]:
        for pid, worker in sample.per_worker.items():
            if pid in long["before"].per_worker and worker["threads"] != long["before"].per_worker[pid]["threads"]:
                problems.append(f"worker {pid}: {worker['threads']} threads at {sample.at:.0f} s, "
                                f"{long['before'].per_worker[pid]['threads']} before")  # fmt: skip
                break
    return problems + checks_hang_up(gone)


def checks_hang_up(gone: dict) -> list[str]:
    problems = []
    if gone["answered_before_hang_up"]:
        problems.append("the hang-up call was answered before the caller hung up")
    if gone["closed_after_s"] is None:
        problems.append("the gateway kept its connection to the runtime after the caller hung up")
    if gone["metrics"].get("in_flight") != 0:
        problems.append(f"modelbay_gateway_in_flight after the hang-up: {gone['metrics'].get('in_flight')}")
    if gone["metrics"].get("client_closed") != 1:
        problems.append(f"client_closed rejections after the hang-up: {gone['metrics'].get('client_closed')}")
    return problems


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the model takes (default 10)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn's uvicorn worker processes (default 2)")
    parser.add_argument("--hang-up-after", type=float, default=5.0, help="seconds before the caller hangs up (5)")
    parser.add_argument("--sample-every", type=float, default=60.0, help="seconds between samples (default 60)")
    parser.add_argument("--skip-long", action="store_true", help="only the hang-up")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database)")
    args = parser.parse_args(argv)
    if args.minutes * 60 > TIMEOUT_S - 10:
        parser.error(f"--minutes: at most {(TIMEOUT_S - 10) / 60:.1f} (the service's timeout_s is {TIMEOUT_S})")
    if shutil.which("ss") is None:
        parser.error("the gateway's connections to the runtime are counted with `ss` (iproute2)")

    return run_in_stack(lambda stack: run(args, stack), keep=args.keep)


def run(args, stack: Stack) -> int:
    seconds = args.minutes * 60
    log(f"temp dir {stack.tmp}")
    stack.data_dir.mkdir()
    stack.gateway_env = embedded_env(stack)
    log("migrate; an organization and its key")
    manage(stack, "migrate", "--noinput", "-v", "0")
    key = manage(stack, "create_api_key", "--org", ORG, "--email", "long@example.com").strip().splitlines()[-1]
    worker = start_worker(stack)
    child, url = start_web(stack, "gunicorn", args.workers, extra_env={
        "MODELBAY_METRICS_TOKEN": TOKEN, "PROMETHEUS_MULTIPROC_DIR": str(stack.tmp / "prometheus")})  # fmt: skip
    wait_web(child, url)
    gateway = Gateway(child, url, stack.namespace)
    wait_for(lambda: len(gateway.workers()) == args.workers, timeout_s=30, what="gunicorn's workers")

    log(f"deploying {SERVICE} (a python model sleeping as long as asked), timeout_s {TIMEOUT_S}")
    auth = {"Authorization": f"Bearer {key}"}
    upload_model(url, key, SERVICE, "sleepy.zip", python_package())
    status, body = http("POST", f"{url}/api/v1/services", {"name": SERVICE, "model": SERVICE, "replicas": 1}, auth)
    if status != 202:
        raise RuntimeError(f"POST /api/v1/services -> {status}: {body[:500].decode(errors='replace')}")
    wait_ready(url, key, SERVICE, worker)
    status, body = http("PATCH", f"{url}/api/v1/services/{SERVICE}", {"timeout_s": TIMEOUT_S}, auth)
    if status != 202 or json.loads(body).get("timeout_s") != TIMEOUT_S:
        raise RuntimeError(f"PATCH timeout_s -> {status}: {body[:500].decode(errors='replace')}")
    service = json.loads(http("GET", f"{url}/api/v1/services/{SERVICE}", headers=auth)[1])
    (instance,) = [i for i in service["instances"] if i["status"] == "ready"]
    code = f"from controlplane.models import Instance\nprint(Instance.objects.get(pk={instance['id']!r}).endpoint)\n"
    endpoint = manage(stack, "shell", "-c", code).strip().splitlines()[-1]
    gateway.find_runtime(instance["id"])
    log(f"instance {instance['id']} at {endpoint}, runtime pid(s) {[p.pid for p in gateway.runtime]}")

    # Warm: every worker has loaded the key and the route and served a call (new connections
    # spread them over the workers).
    for _ in range(8 * args.workers):
        status, body = http("POST", f"{url}/api/v1/services/{SERVICE}/predict", {"inputs": [0.01]}, auth, timeout=30)
        if status != 200:
            raise RuntimeError(f"warm-up call -> {status}: {body[:300].decode(errors='replace')}")
    time.sleep(1.0)

    long = None
    if not args.skip_long:
        log(f"1. one call of {args.minutes:g} min")
        long = long_call(gateway, key, seconds, args.sample_every)
    log(f"2. a call of {args.minutes:g} min, the caller hanging up after {args.hang_up_after:g} s")
    gone = hang_up(gateway, key, seconds, args.hang_up_after)
    problems = checks(long, gone, seconds)
    for process in stack.children:
        if not process.alive():
            problems.append(f"{process.name} exited early (exit {process.process.returncode}):\n{process.log_tail()}")
    if "WORKER TIMEOUT" in child.log_path.read_text(errors="replace"):
        problems.append("gunicorn's log says WORKER TIMEOUT")
    report(args, gateway, endpoint, long, gone, problems)
    if args.json:

        def plain(value):
            return value.__dict__ if isinstance(value, Sample) else str(value)

        args.json.write_text(json.dumps({"long": long, "hang_up": gone, "problems": problems}, indent=2,
                                        default=plain))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
