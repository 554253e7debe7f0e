"""The asynchronous gateway as clients reach it: ``modelbay.asgi.application`` on a real
uvicorn server (uvloop, httptools) in this process, real sockets, real runtimes.

Calls with a key are served by ``inference.gateway`` without entering Django; they must be
answered exactly as the Django views answer them (the console's session calls and the
test client go that way). Caps on calls in flight queue and refuse with 429; a caller that
hangs up frees its slot at once.
"""

import asyncio
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn

from inference import limits

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(transactional_db):
    """The site's ASGI application on uvicorn, in a thread of this process."""
    from modelbay.asgi import application

    port = _free_port()
    config = uvicorn.Config(application, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                            lifespan="off", log_level="warning")  # fmt: skip
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=10)


def _key(client) -> str:
    return client._credentials["HTTP_AUTHORIZATION"]


def _post(url: str, authorization: str | None, inputs, **headers) -> httpx.Response:
    if authorization:
        headers["Authorization"] = authorization
    return httpx.post(url, json={"inputs": inputs}, headers=headers, timeout=30)


def test_calls_with_a_key_are_answered_as_django_answers_them(
    server, echo_service, api, outsider_api, predict_only_api, manage_only_api
):
    predict_url = f"{server}/api/v1/services/echo/predict"
    answer = _post(predict_url, _key(api), ["a"])
    assert answer.status_code == 200 and answer.json()["outputs"] == ["echo:a"]
    assert answer.headers["X-Model-Version"] == "1"
    assert _post(predict_url, _key(predict_only_api), ["b"]).status_code == 200

    cases = {
        "no key": (predict_url, None),  # Django's: the console's session path
        "unknown key": (predict_url, "Bearer mb_nope_nothing"),
        "not bearer": (predict_url, "Basic abc"),
        "no predict scope": (predict_url, _key(manage_only_api)),
        "another tenant's service": (predict_url, _key(outsider_api)),
        "no such service": (f"{server}/api/v1/services/nope/predict", _key(api)),
    }
    for what, (url, authorization) in cases.items():
        over_http = _post(url, authorization, ["a"])
        path = url[len(server) :]
        extra = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
        through_django = api.__class__().post(path, {"inputs": ["a"]}, format="json", **extra)
        assert over_http.status_code == through_django.status_code, what
        assert over_http.json() == through_django.json(), what
        assert set(over_http.json()) == {"code", "detail"}, what
        if over_http.status_code == 401:
            assert over_http.headers["WWW-Authenticate"] == 'Bearer realm="modelbay"', what


def test_a_body_over_the_limit_is_refused_before_it_is_read(server, echo_service, api, settings):
    settings.MODELBAY_MAX_PREDICT_BYTES = 1000
    answer = httpx.post(
        f"{server}/api/v1/services/echo/predict", content=b"x" * 5000, headers={"Authorization": _key(api)}
    )
    assert answer.status_code == 413 and answer.json()["code"] == "payload_too_large"


def test_the_open_inference_protocol_over_the_async_gateway(server, echo_service, api):
    headers = {"Authorization": _key(api)}
    assert httpx.get(f"{server}/v2/models/echo/ready", headers=headers).json() == {"name": "echo", "ready": True}
    assert httpx.get(f"{server}/v2/models/echo/versions/7/ready", headers=headers).status_code == 503
    metadata = httpx.get(f"{server}/v2/models/echo", headers=headers)
    assert metadata.status_code == 200 and metadata.json()["name"] == "echo"


def test_a_service_over_its_cap_queues_then_refuses_at_once(server, echo_service, api, settings, organization):
    """Cap 2, queue 1: of 5 slow calls at once, 2 run, 1 waits for a slot and runs, 2 are
    refused with 429 before any slow call could have finished (never a hang)."""
    settings.MODELBAY_SERVICE_MAX_IN_FLIGHT = 2
    settings.MODELBAY_IN_FLIGHT_QUEUE = 1
    settings.MODELBAY_IN_FLIGHT_WAIT_S = 30

    def call(i: int):
        started = time.monotonic()
        time.sleep(0.2 * (i >= 2))  # the first two take the slots
        response = _post(f"{server}/api/v1/services/echo/predict", _key(api), ["slow"])
        return response, time.monotonic() - started

    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(call, range(5)))
    answered = [r for r, _ in results if r.status_code == 200]
    refused = [(r, took) for r, took in results if r.status_code == 429]
    assert len(answered) == 3 and len(refused) == 2, [(r.status_code, r.text) for r, _ in results]
    for response, took in refused:
        assert response.json()["code"] == "too_many_in_flight"
        assert response.headers["Retry-After"] == "1"
        assert "This service may have 2 calls in flight" in response.json()["detail"]
        assert took < 3, f"a refusal took {took:.1f} s: as long as a slow call"
    assert limits.limiter.in_flight(("service", organization.id, "echo")) == 0


def test_a_queued_call_is_refused_when_its_wait_runs_out(server, echo_service, api, settings):
    settings.MODELBAY_ORG_MAX_IN_FLIGHT = 1
    settings.MODELBAY_IN_FLIGHT_WAIT_S = 0.5

    def call(i: int):
        time.sleep(0.3 * i)
        started = time.monotonic()
        return _post(
            f"{server}/api/v1/services/echo/predict", _key(api), ["slow" if i == 0 else "fast"]
        ), time.monotonic() - started

    with ThreadPoolExecutor(2) as pool:
        (first, _), (second, waited) = pool.map(call, range(2))
    assert first.status_code == 200
    assert second.status_code == 429 and second.json()["code"] == "too_many_in_flight"
    assert "This organization may have 1 calls in flight" in second.json()["detail"]
    assert "no slot came free in time" in second.json()["detail"]
    assert waited < 3  # the wait's bound, not the slow call's end


def test_a_caller_that_hangs_up_frees_its_slot_and_the_runtime_call(server, echo_service, api, settings):
    settings.MODELBAY_SERVICE_MAX_IN_FLIGHT = 1
    settings.MODELBAY_IN_FLIGHT_QUEUE = 0
    body = json.dumps({"inputs": ["slow"]}).encode()
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /api/v1/services/echo/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: {_key(api)}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(0.5)
        busy = _post(f"{server}/api/v1/services/echo/predict", _key(api), ["fast"])
        assert busy.status_code == 429  # the slot is the slow call's
    # The caller is gone: its slot is free long before the 3 s model would have answered.
    started = time.monotonic()
    while time.monotonic() - started < 2:
        answer = _post(f"{server}/api/v1/services/echo/predict", _key(api), ["fast"])
        if answer.status_code == 200:
            break
        time.sleep(0.05)
    assert answer.status_code == 200, answer.text
    assert time.monotonic() - started < 2


def test_the_limiter_hands_a_freed_slot_to_the_first_waiting_call():
    limiter = limits.InFlightLimiter()
    order = []

    async def run():
        async def call(name: str, hold_s: float):
            async with limiter.hold(("k",), 1, what="K", queue=5, wait_s=5):
                order.append(name)
                await asyncio.sleep(hold_s)

        first = asyncio.create_task(call("first", 0.1))
        await asyncio.sleep(0.01)
        waiting = [asyncio.create_task(call(f"w{i}", 0)) for i in range(3)]
        await asyncio.sleep(0.01)
        assert limiter.in_flight(("k",)) == 1 and limiter.waiting(("k",)) == 3
        await asyncio.gather(first, *waiting)

    asyncio.run(run())
    assert order == ["first", "w0", "w1", "w2"]
    assert limiter.in_flight(("k",)) == 0 and limiter.waiting(("k",)) == 0


def test_a_cancelled_waiter_leaves_the_queue_and_loses_no_slot():
    limiter = limits.InFlightLimiter()

    async def run():
        async def hold(hold_s: float):
            async with limiter.hold(("k",), 1, what="K", queue=5, wait_s=5):
                await asyncio.sleep(hold_s)

        first = asyncio.create_task(hold(0.2))
        await asyncio.sleep(0.01)
        gone = asyncio.create_task(hold(0))
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.sleep(0.01)
        assert limiter.waiting(("k",)) == 0
        await first
        async with limiter.hold(("k",), 1, what="K", queue=0, wait_s=0):
            assert limiter.in_flight(("k",)) == 1

    asyncio.run(run())
    assert limiter.in_flight(("k",)) == 0
