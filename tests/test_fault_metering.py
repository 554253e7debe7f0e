"""Redis stopped under continuous app calls, on the production shape (gunicorn with two
uvicorn workers, Redis): every call is answered or refused with a stated code, and once
Redis is back the billed usage equals the successful calls exactly, whether Redis kept its
data or came back empty.

The web processes use a Redis of the test's own (``OwnRedis``), which the test kills and
starts again; the test's own process and the worker keep the machine's.
"""

import collections
import threading
import time

import httpx
import pytest
from django.db.models import Sum

from conftest import _worker_env, wait_for
from marketplace.models import DailyUsage
from marketplace.tests.test_app_calls import _predict_key, _subscribe, app  # noqa: F401  (app: a fixture)
from tests.own_services import Gateway

pytestmark = pytest.mark.integration

CALLERS = 4
ANSWERED_CODES = {200}
STATED_REFUSALS = {"quota_exceeded", "rate_limited", "too_many_in_flight"}


def _web(tmp_path, redis_url: str, **extra_env: str) -> Gateway:
    """One gunicorn, two uvicorn workers, on the test database and the given Redis."""
    env = {**_worker_env(), "REDIS_URL": redis_url, "MODELBAY_CACHE_STALE_S": "5", **extra_env}
    return Gateway(env, tmp_path / "web.log")


@pytest.fixture
def web(app, own_redis, tmp_path):  # noqa: F811
    gateway = _web(tmp_path, own_redis.url())
    try:
        yield gateway.start()
    finally:
        gateway.stop()


def _stored(subscription: dict) -> int:
    return DailyUsage.objects.filter(subscription_id=subscription["id"]).aggregate(n=Sum("calls"))["n"] or 0


class Callers:
    """``CALLERS`` threads calling the app without pause until stopped; every answer kept."""

    def __init__(self, url: str, key: str):
        self.url, self.key = url, key
        self.answers: collections.Counter = collections.Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(CALLERS)]

    def _run(self, n: int) -> None:
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30) as client:
            i = 0
            while not self._stop.is_set():
                i += 1
                try:
                    response = client.post("/api/v1/apps/echo-app/predict", json={"inputs": [f"{n}-{i}"]})
                    code = response.json().get("code") if response.status_code != 200 else None
                    answer = (response.status_code, code)
                except httpx.TransportError as error:
                    answer = (0, type(error).__name__)
                with self._lock:
                    self.answers[answer] += 1

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def count(self) -> int:
        with self._lock:
            return sum(self.answers.values())


@pytest.mark.timeout(240)
@pytest.mark.parametrize("comes_back", ["empty", "with its data"])
def test_redis_stopped_for_10_s_under_app_calls_bills_every_successful_call_once(
    web, own_redis, outsider_api, outsider_organization, make_api_client, comes_back
):
    subscription = _subscribe(outsider_api, "pro")
    key = _predict_key(make_api_client, outsider_organization)
    with Callers(web, key) as callers:
        wait_for(lambda: callers.count() >= 50, timeout_s=30, what="calls before the outage")
        before = callers.count()
        own_redis.stop(keep_data=comes_back == "with its data")
        time.sleep(10)
        during = callers.count() - before
        own_redis.start()
        time.sleep(5)
    answers = dict(callers.answers)
    succeeded = answers.get((200, None), 0)
    print(f"\nRedis away 10 s, back {comes_back}: {sum(answers.values())} calls, {during} during the outage; {answers}")

    unstated = {answer: n for answer, n in answers.items() if answer[0] != 200 and answer[1] not in STATED_REFUSALS}
    assert not unstated, f"calls failed without a stated refusal: {unstated}"
    assert during > 0, "no call was answered while Redis was away"

    wait_for(lambda: _stored(subscription) >= succeeded, timeout_s=30, what="the web processes' flushes")
    time.sleep(2)  # more flushes: nothing counted twice
    assert _stored(subscription) == succeeded


@pytest.mark.timeout(180)
def test_a_web_process_stopped_stores_the_calls_it_billed_and_had_not_stored(
    app,  # noqa: F811  (the fixture imported above)
    tmp_path,
    outsider_api,
    outsider_organization,
    make_api_client,
):
    subscription = _subscribe(outsider_api, "pro")
    key = _predict_key(make_api_client, outsider_organization)
    # No flush of its own while it runs: what is stored is what its stop stored.
    gateway = _web(tmp_path, _worker_env()["REDIS_URL"], MODELBAY_USAGE_FLUSH_S="3600")
    url = gateway.start()
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            codes = [client.post("/api/v1/apps/echo-app/predict", json={"inputs": [str(i)]}).status_code
                     for i in range(30)]  # fmt: skip
        assert codes == [200] * 30
        time.sleep(1)
        assert _stored(subscription) == 0
    finally:
        gateway.stop()  # a graceful stop: what the processes billed is stored as they stop
    assert _stored(subscription) == 30
