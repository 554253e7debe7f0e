"""Serverless figures: replicas following a stepped load, and cold starts from zero.

    .venv/bin/python bench/serverless.py [--backends local,docker] [--starts 20] [--skip-step] [--skip-cold-starts]

On an embedded Modelbay per backend (SQLite, filesystem broker, a real Celery worker with
beat, gunicorn with 2 uvicorn workers; see ``bench/deploy.py``'s ``Stack``):

1. **Stepped load** (local backend): a python model that takes 50 ms a call, autoscaled
   from 1 to 8 replicas with ``target_in_flight: 4``; 1 caller for 10 s, 32 callers for
   30 s, then none for 40 s. Prints, second by second, the callers, the desired and ready
   replicas, calls per second, p50/p99 and failures; then the time from the step to enough
   replicas (8 = 32 / 4) and back to one.
2. **Cold starts**: for the demo's ONNX digits model and a python model, ``--starts`` starts
   from zero each: the service scales to zero by itself (``scale_to_zero_after_s`` 5 s, the
   least allowed), then one call is sent. Prints p50/p95 of the control plane's cold start
   (the call's wake to a ready instance) and of the call's whole answer time.

The autoscaler runs with a 4 s stable window (10 s for the stepped load) so that the run
takes minutes, not hours. Not a test: it prints figures; everything started is stopped.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import httpx

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from deploy import REPO, Stack, call, wait  # noqa: E402

TARGET_LOCAL_ONNX_S = 1.0
TARGET_DOCKER_S = 2.5

SLEEPY = """
import time

class Model:
    def load(self, model_dir):
        pass

    def predict(self, inputs):
        time.sleep(0.05)
        return inputs
"""
ECHO = """
class Model:
    def load(self, model_dir):
        pass

    def predict(self, inputs):
        return inputs
"""


def python_package(source: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("modelbay.yaml", "framework: python\nentrypoint: predictor:Model\n")
        archive.writestr("predictor.py", source)
    return buffer.getvalue()


def upload(stack: Stack, name: str, source: str) -> None:
    response = httpx.post(
        f"{stack.url}/api/v1/models",
        headers={"Authorization": f"Bearer {stack.key}"},
        data={"name": name},
        files={"file": ("model.zip", python_package(source))},
        timeout=60,
    )
    assert response.status_code == 201, response.text


def service(stack: Stack, slug: str) -> dict:
    return call("GET", f"{stack.url}/api/v1/services/{slug}", stack.key)[1]


def deploy(stack: Stack, slug: str, model: str, autoscaling: dict) -> None:
    code, body = call(
        "POST", f"{stack.url}/api/v1/services", stack.key, {"name": slug, "model": model, "autoscaling": autoscaling}
    )
    assert code == 202, body
    wait(lambda: service(stack, slug).get("status") == "ready", 180, 0.1, f"{slug} ready")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- 1. the stepped load ------------------------------------------------------------------
class Callers:
    """Threads calling a service without pause; each call's (end time, seconds, ok)."""

    def __init__(self, url: str, key: str, slug: str):
        self.url, self.key, self.slug = url, key, slug
        self.results: list[tuple[float, float, bool]] = []
        self.lock = threading.Lock()
        self.threads: list[tuple[threading.Thread, threading.Event]] = []

    def set(self, count: int) -> None:
        while len(self.threads) > count:
            thread, stop = self.threads.pop()
            stop.set()
        while len(self.threads) < count:
            stop = threading.Event()
            thread = threading.Thread(target=self._run, args=(stop,), daemon=True)
            thread.start()
            self.threads.append((thread, stop))

    def _run(self, stop: threading.Event) -> None:
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30) as client:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    ok = client.post(f"/api/v1/services/{self.slug}/predict", json={"inputs": [1]}).status_code == 200
                except httpx.TransportError:
                    ok = False
                ended = time.monotonic()
                with self.lock:
                    self.results.append((ended, ended - started, ok))


def stepped_load(stack: Stack) -> None:
    upload(stack, "sleepy", SLEEPY)
    autoscaling = {"min_replicas": 1, "max_replicas": 8, "target_in_flight": 4, "scale_down_delay_s": 5}
    deploy(stack, "sleepy", "sleepy", autoscaling)
    plan = [(0, 1), (10, 32), (40, 0), (80, None)]  # (second, callers from then on)
    callers = Callers(stack.url, stack.key, "sleepy")
    print("\n## Stepped load: 1 -> 32 -> 0 callers, a 50 ms model, target_in_flight 4 (local backend)\n")
    print("| t (s) | callers | desired | ready | calls/s | p50 ms | p99 ms | failed |")
    print("|---|---|---|---|---|---|---|---|")
    start = time.monotonic()
    step_at, enough_at, back_at = start + 10, None, None
    second, seen = 0, 0
    for at, count in plan:
        while time.monotonic() < start + at:
            time.sleep(max(0.0, start + second + 1 - time.monotonic()))
            second += 1
            replicas = service(stack, "sleepy")["replicas"]
            with callers.lock:
                window = callers.results[seen:]
                seen = len(callers.results)
            times = [seconds * 1000 for _, seconds, ok in window if ok]
            failed = sum(1 for _, _, ok in window if not ok)
            now = time.monotonic()
            if enough_at is None and now > step_at and replicas["ready"] >= 8:
                enough_at = now
            if enough_at and back_at is None and now > start + 40 and replicas["desired"] == 1:
                back_at = now
            p50 = f"{statistics.median(times):.0f}" if times else "—"
            p99 = f"{percentile(times, 0.99):.0f}" if times else "—"
            print(
                f"| {second} | {len(callers.threads)} | {replicas['desired']} | {replicas['ready']} | {len(window)} "
                f"| {p50} | {p99} | {failed} |",
                flush=True,
            )
        if count is not None:
            callers.set(count)
    total_failed = sum(1 for _, _, ok in callers.results if not ok)
    print(f"\ncalls: {len(callers.results)}, failed: {total_failed}")
    print(f"step -> 8 replicas ready: {enough_at - step_at:.1f} s" if enough_at else "step -> 8 ready: not reached")
    print(f"load gone -> desired 1: {back_at - (start + 40):.1f} s" if back_at else "back to 1: not within 40 s")


# --- 2. cold starts ------------------------------------------------------------------------
def at_zero(stack: Stack, slug: str) -> bool:
    body = service(stack, slug)
    return body["replicas"]["desired"] == 0 and not [i for i in body["instances"] if i["status"] != "stopped"]


def cold_starts(stack: Stack, slug: str, model: str, starts: int) -> tuple[list[float], list[float]]:
    """``starts`` starts from zero: (the control plane's cold starts, the calls' answer times)."""
    autoscaling = {"min_replicas": 0, "max_replicas": 2, "scale_down_delay_s": 0, "scale_to_zero_after_s": 5}
    deploy(stack, slug, model, autoscaling)
    body = {"inputs": [[0.0] * 64]} if model == "digits" else {"inputs": [1]}
    answers = []
    client = httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {stack.key}"}, timeout=90)
    for _ in range(starts):
        wait(lambda: at_zero(stack, slug), 120, 0.1, f"{slug} at zero")
        client.get("/api/v1/keys")  # the connection is made before the clock starts
        started = time.monotonic()
        response = client.post(f"/api/v1/services/{slug}/predict", json=body)
        answers.append(time.monotonic() - started)
        assert response.status_code == 200, response.text
    history = call("GET", f"{stack.url}/api/v1/services/{slug}/autoscaler", stack.key)[1]
    starts_s = [start["seconds"] for start in history["cold_starts"] if start["seconds"] is not None]
    call("DELETE", f"{stack.url}/api/v1/services/{slug}", stack.key)
    return starts_s[:starts], answers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="local,docker")
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--skip-step", action="store_true", help="leave out the stepped load")
    parser.add_argument("--skip-cold-starts", action="store_true", help="leave out the cold starts")
    args = parser.parse_args()
    if "docker" in args.backends:
        image = subprocess.run(
            ["bash", "scripts/build-runtime-image.sh"], cwd=REPO, check=True, stdout=subprocess.PIPE, text=True
        ).stdout.strip()
        os.environ["MODELBAY_RUNTIME_IMAGE"] = image
    print(f"# bench/serverless.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    if not args.skip_step:
        stack = Stack("local", extra_env={"MODELBAY_AUTOSCALE_STABLE_WINDOW_S": "10"})
        try:
            stack.start()
            stepped_load(stack)
        finally:
            stack.stop()
    rows = []
    for backend in [] if args.skip_cold_starts else args.backends.split(","):
        stack = Stack(backend, extra_env={"MODELBAY_AUTOSCALE_STABLE_WINDOW_S": "4"})
        try:
            stack.start()
            upload(stack, "echo", ECHO)
            for model in ("digits", "echo"):
                starts, answers = cold_starts(stack, f"zero-{model}", model, args.starts)
                rows.append((backend, "ONNX" if model == "digits" else "python", starts, answers))
                print(f"{backend} {model}: {len(starts)} cold starts measured", flush=True)
        finally:
            stack.stop()
    if not rows:
        return 0
    print("\n## Cold starts from zero (one call each time)\n")
    print("| backend | model | starts | cold start p50 | p95 | call answered p50 | p95 |")
    print("|---|---|---|---|---|---|---|")
    for backend, model, starts, answers in rows:
        print(
            f"| {backend} | {model} | {len(starts)} | {statistics.median(starts):.2f} s | {percentile(starts, 0.95):.2f} s"
            f" | {statistics.median(answers):.2f} s | {percentile(answers, 0.95):.2f} s |"
        )
    for backend, model, starts, _ in rows:
        target = TARGET_LOCAL_ONNX_S if (backend, model) == ("local", "ONNX") else TARGET_DOCKER_S
        if backend == "docker" or model == "ONNX":
            verdict = "met" if statistics.median(starts) < target else "missed"
            print(f"target: {backend} {model} cold start under {target} s (p50): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
