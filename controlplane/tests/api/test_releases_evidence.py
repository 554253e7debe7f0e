"""Releases judged on evidence: a step waits for enough calls (and pauses when they do
not come), the new version is compared with the old one, and steps have a minimum
interval. Beat's tick is called directly, as in test_releases_api.py, whose helpers these
tests share; tests/test_releases.py runs the same on real runtimes."""

from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane import releases
from controlplane.models import Release
from controlplane.tests.api.test_releases_api import _calls, _ready, _start, _weights
from controlplane.tests.api.test_releases_api import service  # noqa: F401 (the fixture)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("service")]


def _rolling(api, **body) -> int:
    """A release at its first step (10 %)."""
    release_id = _start(api, steps=[10, 50, 100], **body)["id"]
    _ready(2)
    releases.advance(release_id)
    return release_id


def _check_due(release_id: int) -> Release:
    """Beat's tick once the release's next check has fallen due."""
    release = Release.objects.get(pk=release_id)
    started = timezone.now() - timedelta(seconds=release.interval_s * (release.waits + 1) + 1)
    Release.objects.filter(pk=release_id).update(step_started_at=started)
    releases.advance(release_id)
    return Release.objects.get(pk=release_id)


def test_a_step_without_calls_waits_then_pauses_and_is_never_promoted(api):
    release_id = _rolling(api)

    for wait in range(1, releases.MAX_WAITS + 1):
        release = _check_due(release_id)
        assert (release.status, release.waits, release.weight) == ("rolling", wait, 10)
        entry = release.history[-1]
        assert entry["action"] == "waiting"
        assert entry["message"].startswith("Not enough traffic to judge: 0 calls on version 2 and 0 on version 1")
        assert entry["figures"]["limits"]["min_calls"] == 100
    release = _check_due(release_id)

    assert release.status == "paused" and release.finished_at is None
    assert release.reason.startswith("Paused: not enough traffic to judge")
    assert f"after {releases.MAX_WAITS + 1} intervals" in release.reason
    assert _weights() == {1: 90, 2: 10}  # as it was: an operator decides
    assert "promoted" not in [entry["action"] for entry in release.history]
    assert _check_due(release_id).status == "paused"  # beat leaves it

    body = api.post(f"/api/v1/services/s/releases/{release_id}/resume").json()
    assert (body["status"], body["reason"]) == ("rolling", "")
    assert Release.objects.get(pk=release_id).waits == 0


def test_a_waiting_step_is_judged_once_the_calls_come(api):
    release_id = _rolling(api)
    assert _check_due(release_id).waits == 1
    releases.advance(release_id)  # the next check is not due yet
    assert Release.objects.get(pk=release_id).waits == 1

    _calls(1, 900)
    _calls(2, 100)
    release = _check_due(release_id)

    assert (release.status, release.weight, release.waits) == ("rolling", 50, 0)
    assert release.history[-1]["figures"]["new"]["requests"] == 100


def test_too_few_calls_on_the_old_version_is_no_verdict_either(api):
    release_id = _rolling(api, min_calls=50)
    _calls(2, 500)
    _calls(1, 49)

    assert _check_due(release_id).history[-1]["action"] == "waiting"


def test_the_analysis_promotes_on_the_calls_of_the_last_step(api):
    release_id = _rolling(api, min_calls=10)
    _calls(1, 90)
    _calls(2, 10)
    assert _check_due(release_id).weight == 50
    release = _check_due(release_id)  # the same rows: they are in this step's window too

    assert release.status == "promoted"
    assert release.reason == "Promoted by the analysis: version 2 was within bounds over 10 calls (version 1: 90)."
    assert release.history[-1]["figures"]["limits"]["error_rate"] == 0.01


def test_a_higher_error_rate_than_the_old_version_rolls_back_under_the_ceiling(api):
    release_id = _rolling(api, max_error_rate=0.2)
    _calls(1, 3000, errors=3)
    _calls(2, 3000, errors=150)  # 5 %: a quarter of the ceiling, 50 times version 1's rate

    release = _check_due(release_id)

    assert release.status == "rolled_back"
    assert "is worse than version 1's 0.10% over 3000 calls by more than max_error_rate_increase 1.00%" in (
        release.reason
    )
    figures = release.history[-1]["figures"]
    assert figures["limits"]["error_rate"] < 0.05 and figures["limits"]["max_error_rate"] == 0.2
    assert _weights() == {1: 100}


def test_a_slower_new_version_rolls_back_without_a_latency_ceiling(api):
    release_id = _rolling(api)
    _calls(1, 1000, bucket="le_25ms")
    _calls(2, 1000, bucket="le_250ms")

    release = _check_due(release_id)

    assert release.status == "rolled_back" and "max_p99_ratio 1.5 times version 1's" in release.reason


def test_a_release_straight_to_100_percent_is_not_called_an_analysis(api):
    release_id = _start(api, steps=[100])["id"]
    _ready(2)
    releases.advance(release_id)

    release = Release.objects.get(pk=release_id)
    assert release.status == "promoted"
    assert release.reason == "Promoted at once: steps [100] leave nothing to judge."


def test_the_bounds_are_optional_and_shown(api):
    body = _start(api)
    assert (body["min_calls"], body["max_error_rate_increase"], body["max_p99_ratio"]) == (100, 0.01, 1.5)
    api.post(f"/api/v1/services/s/releases/{body['id']}/rollback")

    body = _start(api, version=3, min_calls=20, max_error_rate_increase=0.02, max_p99_ratio=2)
    listed = api.get("/api/v1/services/s/releases").json()[0]
    assert (listed["min_calls"], listed["max_error_rate_increase"], listed["max_p99_ratio"]) == (20, 0.02, 2.0)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"interval_s": 9}, "interval_s"),
        ({"min_calls": 0}, "min_calls"),
        ({"max_error_rate_increase": -0.1}, "max_error_rate_increase"),
        ({"max_p99_ratio": 0.5}, "max_p99_ratio"),
    ],
)
def test_bad_bounds_answer_400_naming_the_field(api, body, field):
    response = api.post("/api/v1/services/s/releases", {"version": 2, **body}, format="json")

    assert response.status_code == 400, response.content
    assert (response.json()["code"], list(response.json()["fields"])) == ("invalid_request", [field])
    assert not Release.objects.exists()


def test_the_minimum_interval_is_a_setting(api, settings):
    settings.MODELBAY_RELEASE_MIN_INTERVAL_S = 2
    assert _start(api, interval_s=2)["interval_s"] == 2
