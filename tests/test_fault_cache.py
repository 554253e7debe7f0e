"""Redis or PostgreSQL away: calls whose key and route a web process holds in memory keep
being answered, and the control API fails cleanly (issue 15, "faults survived").

Real servers only: a Redis and a PostgreSQL of the test's own (``tests/own_services.py``)
that it kills and starts again, and a port where nothing listens for a refused connection;
never the machine's shared Redis or PostgreSQL.

- Redis away: the generation token cannot be read. A process goes on with the last token
  it read, then (after MODELBAY_CACHE_STALE_S) with a token of its own that moves every
  MODELBAY_CACHE_STALE_S, so what it holds is reloaded from the database that often; when
  Redis answers again, invalidation resumes at once.
- PostgreSQL away: what is in memory still serves calls; what needs the database (a key
  not yet loaded, the control API) answers 503 ``database_unavailable`` with Retry-After,
  and the next request after the restart connects again.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest
from django.test import Client
from asgiref.sync import async_to_sync
from django.core.cache import cache
from django.db import connection

from conftest import REPO, _delete_all_services, _stop_all_runtimes, _use_backend, _worker_env, python_package, wait_for
from modelbay.core import aredis, generation
from modelbay.core.generation import GENERATION_KEY
from tests.own_services import OwnPostgres, OwnRedis, free_port
from tests.test_embedded_releases import EmbeddedStack
from tests.test_slow_tenant import _call, _deploy, _quiet_httpx, _up, _wait_ready  # noqa: F401 (a fixture)

STALE_S = 3.0  # MODELBAY_CACHE_STALE_S in the web processes started here
REDIS_TIMEOUT_S = 0.3  # MODELBAY_REDIS_TIMEOUT_S in the unit tests
CALL_TIMEOUT_S = 15.0  # a client's limit on one call: beyond it, the call hung
CALLERS = 4

ECHO = """
class Model:
    def load(self, model_dir):
        pass

    def predict(self, inputs):
        return inputs
"""


@pytest.fixture(autouse=True)
def _fresh_token_state():
    """Each test starts (and leaves the next) with the shared cache taken as answering."""
    generation._token = generation._Token()
    yield
    generation._token = generation._Token()


def _redis_cache(url: str) -> dict:
    options = {"socket_connect_timeout": REDIS_TIMEOUT_S, "socket_timeout": REDIS_TIMEOUT_S}
    return {"default": {"BACKEND": "modelbay.core.cache.FailSoftRedisCache", "LOCATION": url, "OPTIONS": options}}


@pytest.fixture
def use_redis(settings):
    """Point this process's cache and generation token at a Redis URL (the settings
    fixture restores them, and Django drops the cache's connections on each change)."""

    def use(url: str) -> None:
        settings.REDIS_URL = url
        settings.CACHES = _redis_cache(url)
        settings.MODELBAY_REDIS_TIMEOUT_S = REDIS_TIMEOUT_S
        settings.MODELBAY_CACHE_STALE_S = 0.5

    return use


# --- the generation token, in this process ---------------------------------------------------
def test_an_unreadable_token_is_the_last_one_read_then_a_local_one_that_moves(use_redis, own_redis):
    use_redis(own_redis.url())
    shared = generation.current()
    own_redis.stop()
    assert generation.current() == shared  # within MODELBAY_CACHE_STALE_S of the last read
    assert async_to_sync(_acurrent)() == shared
    time.sleep(0.6)
    offline = generation.current()
    assert offline.startswith("offline-") and async_to_sync(_acurrent)() == offline
    time.sleep(0.6)
    assert generation.current() not in (shared, offline)  # moves every MODELBAY_CACHE_STALE_S

    own_redis.start()  # empty, as a restarted Redis without its data
    back = wait_for(lambda: _read_again(shared), timeout_s=5, what="the token to be read again")
    assert cache.get(GENERATION_KEY) == back
    assert async_to_sync(_acurrent)() == back


def test_back_from_an_outage_a_process_sets_a_new_token_even_if_redis_kept_the_old(use_redis, own_redis, db):
    # A bump lost while Redis was away (or unreachable from the writer) must still reach
    # every process, also when Redis comes back with its data (a network cut, not a restart).
    use_redis(own_redis.url())
    shared = generation.current()
    use_redis(f"redis://127.0.0.1:{free_port()}/0")  # refused from here on; the server keeps the token
    assert generation.current() == shared
    generation.bump()  # does not raise; this process owes the others a new token
    use_redis(own_redis.url())
    back = wait_for(lambda: _read_again(shared), timeout_s=5, what="a new shared token")
    assert cache.get(GENERATION_KEY) == back


def test_a_redis_that_does_not_answer_costs_a_read_at_most_its_timeout(use_redis):
    # A server that accepts connections and never answers (a host gone silent): no hang.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        use_redis(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        for read in (generation.current, async_to_sync(_acurrent)):
            started = time.monotonic()
            assert read().startswith("offline-")
            assert time.monotonic() - started < 4 * REDIS_TIMEOUT_S
        # Known away: the next reads do not wait for it at all.
        started = time.monotonic()
        for _ in range(100):
            generation.current()
            async_to_sync(_acurrent)()
        assert time.monotonic() - started < REDIS_TIMEOUT_S


def test_djangos_cache_does_without_redis_while_it_is_away(use_redis, db):
    use_redis(f"redis://127.0.0.1:{free_port()}/0")
    cache.set("k", "v")
    assert cache.get("k") is None and cache.get("k", "default") == "default"
    assert cache.add("k", "v") is True and cache.get_many(["k"]) == {}  # a write answers as if done
    cache.delete("k")
    generation.bump()  # a writer's invalidation does not fail its write


def test_the_console_signs_in_while_redis_is_away(use_redis, client, user_factory):
    # allauth counts sign-in attempts in the cache (its rate limits): a miss, not a 500.
    user_factory(username="someone@example.com")  # password: correct-horse-battery
    use_redis(f"redis://127.0.0.1:{free_port()}/0")
    response = client.post("/accounts/login/", {"login": "someone@example.com", "password": "wrong"})
    assert response.status_code == 200 and b"not correct" in response.content
    response = client.post("/accounts/login/", {"login": "someone@example.com", "password": "correct-horse-battery"})
    assert response.status_code == 302, response.content[:500]


def _read_again(before: str) -> str | None:
    """The shared token, once this process reads it again and it moved from ``before``."""
    token = generation.current()
    return token if token != before and not token.startswith("offline-") else None


async def _acurrent() -> str:
    try:
        return await generation.acurrent()
    finally:
        await aredis.close()  # this loop ends with the call


# --- the database refusing connections, in this process -----------------------------------------
@pytest.fixture
def database_away(transactional_db):
    """The default database moved to a port where nothing listens (every connection refused)."""
    port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = str(free_port())
    yield
    connection.close()
    connection.settings_dict["PORT"] = port


def _assert_database_unavailable(status: int, headers, body: dict) -> None:
    assert status == 503, body
    assert body["code"] == "database_unavailable" and body["detail"], body
    assert int(headers["Retry-After"]) >= 1


def test_the_api_answers_503_with_retry_after_while_the_database_refuses(api, database_away):
    response = api.get("/api/v1/services")
    _assert_database_unavailable(response.status_code, response.headers, response.json())


@pytest.fixture
def signed_in(owner):
    """A browser session of an organization's owner (made before the database goes away),
    answered as a browser gets it (not re-raised in the test, as Django's test client does)."""
    client = Client(raise_request_exception=False)
    client.force_login(owner)
    return client


def test_a_console_page_answers_503_with_retry_after_while_the_database_refuses(signed_in, database_away):
    response = signed_in.get("/services/")  # the session middleware's query fails before any view
    assert response.status_code == 503
    assert int(response["Retry-After"]) >= 1
    assert "Back in a moment" in response.content.decode()


def test_the_gateway_answers_503_when_a_key_not_in_memory_cannot_be_loaded(api, database_away):
    from inference import gateway

    app = gateway.GatewayApp(gateway.ENDPOINTS, fallback=None)
    headers = {"authorization": f"Bearer {api.full_key}", "content-type": "application/json"}
    status, answer_headers, body = async_to_sync(_asgi_call)(app, "/api/v1/services/echo/predict", headers, b"{}")
    _assert_database_unavailable(status, answer_headers, json.loads(body))


async def _asgi_call(app, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes]:
    """One POST through an ASGI application, as uvicorn makes it."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": b"",
        "headers": [(name.encode(), value.encode()) for name, value in headers.items()],
    }
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive():
        if incoming:
            return incoming.pop()
        await asyncio.Event().wait()  # the caller stays: the gateway's watch for a hang-up waits

    async def send(message):
        sent.append(message)

    try:
        await app(scope, receive, send)
    finally:
        await aredis.close()
    start = next(m for m in sent if m["type"] == "http.response.start")
    answer_headers = {name.decode().title(): value.decode() for name, value in start["headers"]}
    return start["status"], answer_headers, b"".join(m.get("body", b"") for m in sent[1:])


# --- under continuous calls: several web processes, servers killed and started again -------------
@dataclass
class Callers:
    """Threads calling a service's predict in a loop, each call on a new connection (so
    that they spread over the web processes), until ``stop()``."""

    url: str
    key: str
    slug: str
    body: dict
    calls: list[tuple[float, int, str]] = field(default_factory=list)  # (when, status, code)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, count: int = CALLERS) -> None:
        self._threads = [threading.Thread(target=self._call_on, daemon=True) for _ in range(count)]
        for thread in self._threads:
            thread.start()

    def _call_on(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=self.url, headers=headers, timeout=CALL_TIMEOUT_S, limits=limits) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(f"/api/v1/services/{self.slug}/predict", json=self.body)
                    code = "" if response.status_code == 200 else response.text[:200]
                    self.calls.append((time.monotonic(), response.status_code, code))
                except httpx.TransportError as error:
                    self.calls.append((time.monotonic(), 0, repr(error)))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=CALL_TIMEOUT_S + 5)

    def report(self, what: str, window: tuple[float, float]) -> list[tuple[float, int, str]]:
        """Print the calls answered and failed; return the failed ones."""
        failed = [c for c in self.calls if c[1] != 200]
        during = [c for c in self.calls if window[0] <= c[0] <= window[1]]
        print(
            f"\n{what}: {len(self.calls)} calls, {len(self.calls) - len(failed)} answered 200, {len(failed)} failed; "
            f"{len(during)} of them while it was away ({window[1] - window[0]:.1f} s)"
        )
        return failed


def _new_key(url: str, manage_key: str) -> dict:
    response = _call(url, manage_key, "POST", "/api/v1/keys", json={"name": "fault", "scopes": ["predict"]})
    assert response.status_code == 201, response.text
    return response.json()


def _predict(url: str, key: str, slug: str) -> httpx.Response:
    # A new connection each time: the answer comes from either web process.
    return _call(url, key, "POST", f"/api/v1/services/{slug}/predict", json={"inputs": [1]})


def _refused_within(url: str, key: str, slug: str, since: float, *, timeout_s: float) -> float:
    """Seconds from ``since`` until the key is refused (401) by every call from then on
    (ten in a row, over new connections, so by both web processes)."""
    refused_from: float | None = None
    in_a_row = 0
    deadline = time.monotonic() + timeout_s
    while in_a_row < 10:
        assert time.monotonic() < deadline, f"the key was still accepted {timeout_s:g} s after its revocation"
        status = _predict(url, key, slug).status_code
        assert status in (200, 401), status
        if status == 401:
            refused_from = refused_from or time.monotonic()
            in_a_row += 1
        else:
            refused_from, in_a_row = None, 0
            time.sleep(0.05)
    return refused_from - since


def _gunicorn(env: dict[str, str], port: int, log_path) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2", "--no-control-socket"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture
def redis_gateway(celery_worker_process, transactional_db, own_redis, tmp_path):
    """The production shape on the test database, the cache on ``own_redis``: a gunicorn with
    two uvicorn workers and the Celery worker (whose bumps the web processes must see)."""
    _use_backend("local")
    celery_worker_process.ensure("local", REDIS_URL=own_redis.url())
    env = {
        **_worker_env(),
        "REDIS_URL": own_redis.url(),
        "WEB_CONCURRENCY": "2",
        "MODELBAY_CACHE_STALE_S": str(STALE_S),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
    }
    port = free_port()
    process = _gunicorn(env, port, tmp_path / "gateway.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(url), timeout_s=60, what="the gateway")
        yield url
    finally:
        _stop(process)
        _delete_all_services()
        _stop_all_runtimes()


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_calls_go_on_while_redis_is_away_and_invalidation_resumes_when_it_is_back(redis_gateway, api, own_redis):
    url, manage_key = redis_gateway, api.full_key
    _deploy(url, manage_key, "echo", "echo.zip", python_package(ECHO))
    _wait_ready(url, manage_key, "echo")
    revoked_during, revoked_after = _new_key(url, manage_key), _new_key(url, manage_key)
    for _ in range(10):  # warm: the keys and the route in both web processes
        for key in (manage_key, revoked_during["key"], revoked_after["key"]):
            assert _predict(url, key, "echo").status_code == 200

    callers = Callers(url, manage_key, "echo", {"inputs": [1]})
    callers.start()
    try:
        time.sleep(1)
        own_redis.stop()
        away_since = time.monotonic()
        for _ in range(5):  # the control API reads the token too
            response = _call(url, manage_key, "GET", "/api/v1/services/echo")
            assert response.status_code == 200, response.text
        revoked = time.monotonic()
        response = _call(url, manage_key, "DELETE", f"/api/v1/keys/{revoked_during['id']}")
        assert response.status_code == 204, response.text  # the bump fails; the write does not
        took_during = _refused_within(url, revoked_during["key"], "echo", revoked, timeout_s=STALE_S + 5)
        time.sleep(max(0.0, away_since + 10 - time.monotonic()))
        own_redis.start()  # empty
        back_since = time.monotonic()

        time.sleep(1.5)  # each web process tries Redis again every 0.5 s
        revoked = time.monotonic()
        response = _call(url, manage_key, "DELETE", f"/api/v1/keys/{revoked_after['id']}")
        assert response.status_code == 204, response.text
        took_after = _refused_within(url, revoked_after["key"], "echo", revoked, timeout_s=5)
        time.sleep(1)
    finally:
        callers.stop()

    failed = callers.report("predict calls, Redis killed for 10 s", (away_since, back_since))
    print(
        f"a key revoked while Redis was away: refused after {took_during:.2f} s (bound {STALE_S:g} s); "
        f"revoked after its return: refused after {took_after:.2f} s"
    )
    assert not failed, failed[:5]
    assert len([c for c in callers.calls if away_since <= c[0] <= back_since]) > 50
    assert took_during <= STALE_S + 1.0
    assert took_after <= 2.0


@pytest.fixture
def postgres_stack(tmp_path):
    """The production shape on a PostgreSQL of its own (and a Redis of its own): migrated,
    the demo's digits service ready, a gunicorn with two uvicorn workers and a worker."""
    postgres = OwnPostgres()
    redis = OwnRedis(tmp_path / "redis")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    stack = EmbeddedStack(data_dir, web_args=("--workers", "2"))
    stack.env.update(DATABASE_URL=postgres.url(), REDIS_URL=redis.url(), MODELBAY_RECONCILE_INTERVAL="1")
    try:
        postgres.start()
        redis.start()
        demo = stack.start()
        wait_for(lambda: _up(stack.url), timeout_s=60, what="the web processes")
        _wait_ready(stack.url, demo["key"], demo["service"])
        yield stack, demo, postgres
    finally:
        stack.stop()
        redis.stop()
        postgres.remove()


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_calls_go_on_while_postgres_restarts_and_the_api_answers_503_meanwhile(postgres_stack):
    stack, demo, postgres = postgres_stack
    url, key, slug = stack.url, demo["key"], demo["service"]
    sample = {"inputs": [[0.0] * 64]}
    for _ in range(10):  # warm: the key and the route in both web processes
        assert _call(url, key, "POST", f"/api/v1/services/{slug}/predict", json=sample).status_code == 200
    never_used = _new_key(url, key)  # not in any process's memory

    callers = Callers(url, key, slug, sample)
    callers.start()
    try:
        time.sleep(1)
        postgres.stop()
        away_since = time.monotonic()
        for method, path, body in (
            ("POST", "/api/v1/keys", {"name": "during", "scopes": ["predict"]}),
            ("GET", f"/api/v1/services/{slug}", None),
            ("POST", f"/api/v1/services/{slug}/predict", sample),  # with the key never loaded
        ):
            used = never_used["key"] if path.endswith("/predict") else key
            response = _call(url, used, method, path, json=body)
            _assert_database_unavailable(response.status_code, response.headers, response.json())
        time.sleep(max(0.0, away_since + 5 - time.monotonic()))
        postgres.start()
        back_since = time.monotonic()

        # The next requests connect again (the API's and the gateway's own loads alike).
        wait_for(
            lambda: _call(url, key, "POST", "/api/v1/keys", json={"name": "after"}).status_code == 201,
            timeout_s=10,
            what="the API to write again",
        )
        reconnected_after = time.monotonic() - back_since
        for _ in range(10):
            response = _call(url, never_used["key"], "POST", f"/api/v1/services/{slug}/predict", json=sample)
            assert response.status_code == 200, response.text
        time.sleep(1)
    finally:
        callers.stop()

    failed = callers.report("predict calls, PostgreSQL stopped for 5 s", (away_since, back_since))
    print(f"the API wrote again {reconnected_after:.2f} s after PostgreSQL was back")
    assert not failed, failed[:5]
    assert len([c for c in callers.calls if away_since <= c[0] <= back_since]) > 20
