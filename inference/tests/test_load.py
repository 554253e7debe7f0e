"""The gateway's count of calls in flight per service: averaged over each report interval,
counted from the wait for the service's cap to the answer, never leaked."""

import asyncio
import time

import pytest

from controlplane import load as store
from inference import gateway, load, routing
from modelbay.core.errors import TooManyInFlight

SERVICE = 42


@pytest.fixture(autouse=True)
def _counts_of_this_test_alone():
    """No publisher thread collecting behind the test's back; no earlier test's counts."""
    paused, load.publisher.paused = load.publisher.paused, True
    load.reset()
    yield
    load.reset()
    load.publisher.paused = paused


def test_three_calls_for_half_an_interval_are_one_and_a_half_on_average():
    for _ in range(3):
        load.started(SERVICE)
    time.sleep(0.2)
    for _ in range(3):
        load.finished(SERVICE)
    time.sleep(0.2)

    average, now = load.collect()[SERVICE]
    # 3 x (0.2 + a) / (0.4 + a + b), a and b the sleeps' overshoots: 1.5 unless they reach 20 ms.
    assert 1.35 < average < 1.65
    assert now == 0


def test_a_call_across_reports_counts_whole_in_each():
    load.started(SERVICE)
    time.sleep(0.05)
    first = load.collect()[SERVICE]
    time.sleep(0.05)
    second = load.collect()[SERVICE]
    load.finished(SERVICE)

    assert first == pytest.approx((1.0, 1), abs=0.01)  # the interval began with the first call
    assert second == pytest.approx((1.0, 1), abs=1e-9)


def test_services_are_counted_apart():
    load.started(SERVICE)
    load.started(SERVICE + 1)
    load.started(SERVICE + 1)
    load.finished(SERVICE + 1)

    loads = load.collect()
    assert (loads[SERVICE][1], loads[SERVICE + 1][1]) == (1, 1)
    assert load.in_flight(SERVICE + 1) == 1


def test_an_idle_service_is_reported_as_zero_for_a_few_intervals_then_no_more(settings):
    settings.MODELBAY_LOAD_REPORT_S = 0.05
    load.started(SERVICE)
    time.sleep(0.02)
    load.finished(SERVICE)
    reports = []
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and (not reports or reports[-1] is not None):
        time.sleep(0.05)
        reports.append(load.collect().get(SERVICE))

    assert reports[0][0] > 0  # the interval of the call
    assert reports[-1] is None  # then no more
    zeros = reports[1:-1]
    assert zeros and all(report == (0.0, 0) for report in zeros)
    assert len(zeros) <= load.IDLE_REPORTS


def test_a_report_goes_to_the_store_under_the_process_name(settings, tmp_path):
    settings.REDIS_URL = ""
    settings.MODELBAY_RUN_DIR = tmp_path
    load.started(SERVICE)
    load.report()
    load.finished(SERVICE)

    reported = store.read(SERVICE)
    assert (reported.now, reported.processes) == (1, 1)
    assert (tmp_path / "load" / f"{load.process_name()}.json").exists()


def test_the_publisher_starts_with_the_first_call():
    load.publisher.stop()
    load.publisher.paused = False
    try:
        load.started(SERVICE)
        load.finished(SERVICE)
        assert load.publisher._running
    finally:
        load.publisher.stop()


# --- where the gateway counts: gateway.admitted ----------------------------------------------
ROUTE = routing.Route(organization_id=1, service_id=SERVICE, slug="counted", versions=())


def test_calls_count_from_the_wait_for_the_service_cap_and_never_leak(settings):
    settings.MODELBAY_SERVICE_MAX_IN_FLIGHT = 1
    settings.MODELBAY_GATEWAY_PROCESSES = 1
    settings.MODELBAY_IN_FLIGHT_QUEUE = 1
    settings.MODELBAY_IN_FLIGHT_WAIT_S = 5

    async def scenario():
        release = asyncio.Event()

        async def call():
            async with gateway.admitted([gateway.organization_cap(1), gateway.service_cap(ROUTE)], deadline=1e12):
                await release.wait()

        holding = asyncio.create_task(call())
        await asyncio.sleep(0)
        queued = asyncio.create_task(call())
        await asyncio.sleep(0)
        assert load.in_flight(SERVICE) == 2  # the one queued behind the cap is demand too

        with pytest.raises(TooManyInFlight):  # the queue is full: refused at once
            await call()
        assert load.in_flight(SERVICE) == 2

        queued.cancel()  # the caller hung up while it waited
        await asyncio.gather(queued, return_exceptions=True)
        assert load.in_flight(SERVICE) == 1

        release.set()
        await holding
        assert load.in_flight(SERVICE) == 0

        with pytest.raises(ZeroDivisionError):  # a call that fails inside
            async with gateway.admitted([gateway.service_cap(ROUTE)], deadline=1e12):
                assert load.in_flight(SERVICE) == 1
                1 / 0
        assert load.in_flight(SERVICE) == 0

    asyncio.run(scenario())


def test_a_call_refused_by_its_organization_cap_is_not_the_services_load(settings):
    settings.MODELBAY_ORG_MAX_IN_FLIGHT = 1
    settings.MODELBAY_GATEWAY_PROCESSES = 1
    settings.MODELBAY_IN_FLIGHT_QUEUE = 1

    async def scenario():
        caps = [gateway.organization_cap(7), gateway.service_cap(ROUTE)]
        async with gateway.admitted([gateway.organization_cap(7)], deadline=1e12):
            waiting = asyncio.create_task(gateway.admitted(caps, deadline=time.monotonic() + 0.05).__aenter__())
            await asyncio.sleep(0.01)
            assert load.in_flight(SERVICE) == 0  # waiting for its organization's cap, not the service's
            with pytest.raises(TooManyInFlight):
                await waiting
        assert load.in_flight(SERVICE) == 0

    asyncio.run(scenario())
