"""What an app call costs over a plain service call: the marketplace's access check,
quota and rate checks and metering, on the gateway's hot path.

    .venv/bin/python bench/apps.py [--duration 10] [--concurrency 1,16] [--redis redis://127.0.0.1:6379/13]

A fresh Modelbay in a temporary directory (SQLite, filesystem broker, local runtimes), its
demo loaded; the demo's digits service is listed as an app with a plan large enough never
to refuse, and a second organization subscribes. Then wrk calls, in turn, the service
(`/api/v1/services/digits/predict`, the publisher's key) and the app
(`/api/v1/apps/digits-bench/predict`, the subscriber's key) with the same body, on the same
gunicorn and the same runtime instance. Without --redis the meter is the embedded one (in
process; one gunicorn worker, so that it is exact); with --redis, the shared Redis meter
and two gunicorn workers. Afterwards the subscription's metered count is compared with
the number of successful app calls wrk made. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import wrkload  # noqa: E402
from deploy import Stack, call, wait  # noqa: E402

SAMPLE = [
    0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12, 0, 0, 8, 8, 0,
    0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0,
]  # fmt: skip
BODY = json.dumps({"inputs": [SAMPLE]}, separators=(",", ":")).encode()
APP = "digits-bench"


def set_up(stack: Stack) -> tuple[str, int]:
    """List the demo service as an app; a second organization subscribes. (its key, subscription id)"""
    plan = {"name": "bench", "monthly_quota": 1_000_000_000, "rate_limit_per_s": 1_000_000, "price_per_1k": "0.10"}
    listing = {"service": "digits", "slug": APP, "title": "Digits (bench)", "plans": [plan]}
    code, body = call("POST", f"{stack.url}/api/v1/listings", stack.key, listing)
    assert code == 201, body
    call("POST", f"{stack.url}/api/v1/listings/{APP}/publish", stack.key)
    key = stack.manage("create_api_key", "--org", "bench-subscriber", "--email", "bench@example.com").strip()
    key = key.splitlines()[-1]
    code, body = call("POST", f"{stack.url}/api/v1/marketplace/{APP}/subscribe", key, {"plan": "bench"})
    assert code == 201, body
    return key, body["id"]


def measure(url: str, key: str, concurrency: int, duration_s: float, script_dir: Path) -> wrkload.WrkResult:
    script = wrkload.write_script(
        script_dir / f"wrk-{abs(hash(url))}.lua",
        BODY,
        {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    return wrkload.run(url, script, connections=concurrency, duration_s=duration_s)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs per figure; medians shown")
    parser.add_argument("--redis", default="", help="a Redis URL: meter in Redis (else in process)")
    args = parser.parse_args()
    if wrkload.wrk_binary() is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    stack = Stack(
        "local", web_workers=2 if args.redis else 1, extra_env={"REDIS_URL": args.redis} if args.redis else {}
    )
    try:
        stack.start()
        call("PATCH", f"{stack.url}/api/v1/services/digits", stack.key, {"replicas": 1})
        wait(lambda: len(call("GET", f"{stack.url}/api/v1/services/digits", stack.key)[1]["instances"]) == 1, 60)
        subscriber_key, subscription_id = set_up(stack)
        service_url = f"{stack.url}/api/v1/services/digits/predict"
        app_url = f"{stack.url}/api/v1/apps/{APP}/predict"
        time.sleep(1)
        results: dict[tuple[str, int], list[wrkload.WrkResult]] = {}
        app_ok = 0
        for _ in range(args.rounds):
            for concurrency in [int(c) for c in args.concurrency.split(",")]:
                for name, url, key in (("service", service_url, stack.key), ("app", app_url, subscriber_key)):
                    result = measure(url, key, concurrency, args.duration, stack.dir)
                    results.setdefault((name, concurrency), []).append(result)
                    if name == "app":
                        app_ok += result.requests - result.errors
        time.sleep(7)  # a flush interval, so that the stored figures have caught up too
        _, usage = call("GET", f"{stack.url}/api/v1/subscriptions/{subscription_id}/usage", subscriber_key)
    finally:
        stack.stop()

    meter = f"Redis ({args.redis}), 2 gateway processes" if args.redis else "in process, 1 gateway process"
    print(f"\nApp call vs service call — meter: {meter}; {args.rounds} x {args.duration:.0f} s per figure, medians\n")
    print(f"{'call':<8} {'conc':>5} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for (name, concurrency), runs in sorted(results.items(), key=lambda item: (item[0][1], item[0][0] != "service")):
        med = {attr: statistics.median(getattr(r, attr) for r in runs) for attr in ("calls_per_s", "p50_ms", "p99_ms")}
        errors = sum(r.errors for r in runs)
        print(
            f"{name:<8} {concurrency:>5} {med['calls_per_s']:>9,.0f} {med['p50_ms']:>8.2f} {med['p99_ms']:>8.2f} {errors:>7}"
        )
    for concurrency in sorted({c for _, c in results}):
        service, app = results[("service", concurrency)], results[("app", concurrency)]
        added = {
            attr: statistics.median(getattr(r, attr) for r in app)
            - statistics.median(getattr(r, attr) for r in service)
            for attr in ("p50_ms", "p99_ms")
        }
        print(f"app call overhead at c={concurrency}: {added['p50_ms']:+.2f} ms p50, {added['p99_ms']:+.2f} ms p99")
    in_flight = sum(int(c) for c in args.concurrency.split(",")) * args.rounds
    print(
        f"metered: {usage.get('used')} calls; successful app calls wrk counted: {app_ok} "
        f"(calls in flight when a wrk run stops are served and metered, not counted by wrk: at most {in_flight})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
