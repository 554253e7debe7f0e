"""A service's releases: starting one, acting on it, its timeline and figures in the status
block (console.views.service_releases, and the status block of console.views.service_pages)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from console.tests.helpers import live_weights, ready_instance, url
from controlplane import releases, services
from controlplane.choices import ServiceStatus
from controlplane.models import Release, Service, VersionMetrics

pytestmark = pytest.mark.django_db


RELEASE_FORM = {
    "version": 2, "steps": "10, 50, 100", "interval_s": 60, "max_error_rate": 5, "max_p99_ms": "",
    "max_error_rate_increase": 1, "max_p99_ratio": 1.5, "min_calls": 100,
}  # fmt: skip


@pytest.fixture
def releasable(service, make_digits_upload):
    """The service runs version 1 (ready, all the traffic); the model also has version 2."""
    Service.objects.filter(pk=service.pk).update(status=ServiceStatus.READY)
    services.model_version_add(model=service.model, upload=make_digits_upload())
    ready_instance(service, 1)
    return service


def _release(service, **options) -> Release:
    arguments = {"version": 2, "steps": [10, 50, 100], "interval_s": 60, "max_error_rate": 0.05, "max_p99_ms": None}
    return releases.release_start(service=service, **{**arguments, **options})


def _rolling(service) -> Release:
    """A release of version 2 at its first step (10 %), as beat leaves it."""
    release = _release(service)
    ready_instance(service, 2)
    releases.advance(release.pk)
    return Release.objects.get(pk=release.pk)


def _calls(service, version: int, requests: int, errors: int = 0, bucket: str = "le_5ms") -> None:
    start = timezone.now() - timedelta(seconds=30)
    start -= timedelta(seconds=start.timestamp() % 10)
    VersionMetrics.objects.create(service_id=service.pk, version=version, start=start,
                                  requests=requests, errors=errors, **{bucket: requests})  # fmt: skip


def test_release_form_offers_the_versions_not_at_100_percent(owner_client, releasable):
    response = owner_client.get(url("service_detail", releasable.slug))

    form = response.context["release_form"]
    assert form.versions == [2]
    assert form["steps"].value() == "10, 50, 100"
    assert 'id="start-release"' in response.content.decode()


def test_starting_a_release(owner_client, releasable):
    response = owner_client.post(url("service_release_start", releasable.slug), {**RELEASE_FORM, "max_p99_ms": 250})

    assert response.url == url("service_detail", releasable.slug)
    release = releasable.releases.get()
    assert (release.version, release.from_version, release.status) == (2, 1, "starting")
    assert (release.steps, release.interval_s, release.max_error_rate, release.max_p99_ms) == (
        [10, 50, 100],
        60,
        0.05,
        250,
    )
    page = owner_client.get(response.url)
    content = page.content.decode()
    assert "Release of version 2 started: it takes 10% of the calls once its instances are ready." in content
    assert page.context["release_active"] and page.context["polling"]
    assert 'id="start-release"' not in content
    assert "once v2 is ready" in content
    assert 'id="traffic"' not in content  # the release sets the split meanwhile
    assert url("service_release_action", releasable.slug, release.pk, "promote") in content


@pytest.mark.parametrize(
    "data, field, message",
    [
        ({"steps": "50, 10, 100"}, "steps", "steps are percentages rising from above 0 and ending at 100."),
        ({"steps": "10, 50"}, "steps", "ending at 100"),
        ({"steps": "ten, 100"}, "steps", "Write whole percentages separated by commas"),
        ({"version": 1}, "version", "Version 1 is the one running now."),
        ({"interval_s": 0}, "interval_s", "greater than or equal to 1"),
        ({"interval_s": 9}, "interval_s", "interval_s is at least 10 s"),
        ({"min_calls": 0}, "min_calls", "greater than or equal to 1"),
        ({"max_p99_ratio": 0.5}, "max_p99_ratio", "greater than or equal to 1"),
        ({"max_error_rate": 150}, "max_error_rate", "less than or equal to 100"),
        ({"max_p99_ms": 0}, "max_p99_ms", "greater than or equal to 1"),
    ],
)
def test_a_refused_release_is_a_form_error(owner_client, releasable, data, field, message):
    response = owner_client.post(url("service_release_start", releasable.slug), {**RELEASE_FORM, **data})

    assert response.status_code == 400
    assert message in response.context["release_form"].errors[field][0]
    assert message in response.content.decode()
    assert "data-edited" in response.content.decode()  # polling leaves the form as it is
    assert not releasable.releases.exists()


def test_a_release_is_judged_against_the_running_version_by_the_bounds_of_the_form(owner_client, releasable):
    data = {**RELEASE_FORM, "max_error_rate_increase": 2, "max_p99_ratio": 3, "min_calls": 40}
    owner_client.post(url("service_release_start", releasable.slug), data)

    release = releasable.releases.get()
    assert (release.max_error_rate_increase, release.max_p99_ratio, release.min_calls) == (0.02, 3, 40)
    content = owner_client.get(url("service_status", releasable.slug)).content.decode()
    assert "+2.0% errors · p99 ×3.0" in content and "40 calls each" in content


def test_a_release_paused_for_want_of_calls_says_so(owner_client, releasable):
    release = _rolling(releasable)
    for _ in range(releases.MAX_WAITS + 1):
        Release.objects.filter(pk=release.pk).update(step_started_at=timezone.now() - timedelta(days=1))
        releases.advance(release.pk)

    response = owner_client.get(url("service_status", releasable.slug))

    content = response.content.decode()
    assert "Paused: not enough traffic to judge: 0 calls on version 2 and 0 on version 1" in content
    assert [entry["action"] for entry in response.context["timeline"]][-2:] == ["waiting", "paused"]
    assert "resume to go on" in content


def test_a_second_release_is_refused_above_the_form(owner_client, releasable, make_digits_upload):
    services.model_version_add(model=releasable.model, upload=make_digits_upload())
    _release(releasable)

    response = owner_client.post(url("service_release_start", releasable.slug), {**RELEASE_FORM, "version": 3})

    assert response.status_code == 400
    assert "already running" in response.context["release_form"].non_field_errors()[0]
    assert releasable.releases.count() == 1


def test_an_active_release_shows_its_share_next_step_and_actions(owner_client, releasable):
    release = _rolling(releasable)

    fragment = owner_client.get(url("service_status", releasable.slug))

    content = fragment.content.decode()
    assert 'data-polling="on"' in content
    assert "<span data-release-weight>10%</span>" in content
    assert fragment.context["next_step_at"] == release.step_started_at + timedelta(seconds=60)
    for action in ("promote", "pause", "rollback"):
        assert url("service_release_action", releasable.slug, release.pk, action) in content
    assert url("service_release_action", releasable.slug, release.pk, "resume") not in content
    assert 'data-confirm="Promote version 2?' in content and 'data-confirm="Roll back to version 1?' in content


@pytest.mark.parametrize(
    "action, status, weights, message",
    [
        ("promote", "promoted", {2: 100}, "Release of version 2 promoted"),
        ("rollback", "rolled_back", {1: 100}, "Release of version 2 rolled back"),
        ("pause", "paused", {1: 90, 2: 10}, "Release of version 2 paused"),
    ],
)
def test_acting_on_a_release(owner_client, releasable, action, status, weights, message):
    release = _rolling(releasable)

    response = owner_client.post(url("service_release_action", releasable.slug, release.pk, action), follow=True)

    release.refresh_from_db()
    assert release.status == status
    assert live_weights(releasable) == weights
    assert message in response.content.decode()


def test_resuming_a_paused_release(owner_client, releasable):
    release = _rolling(releasable)
    releases.release_pause(release=release)
    content = owner_client.get(url("service_detail", releasable.slug)).content.decode()
    assert "resume to go on" in content
    assert url("service_release_action", releasable.slug, release.pk, "pause") not in content

    response = owner_client.post(url("service_release_action", releasable.slug, release.pk, "resume"), follow=True)

    assert "Release of version 2 resumed" in response.content.decode()
    assert Release.objects.get(pk=release.pk).status == "rolling"


@pytest.mark.parametrize(
    "action, message",
    [
        ("promote", "This release is over (rolled_back)."),
        ("rollback", "This release is over (rolled_back)."),
        ("pause", "Only a rolling release can be paused; this one is rolled_back."),
        ("resume", "Only a paused release can be resumed; this one is rolled_back."),
    ],
)
def test_acting_on_a_finished_release_shows_why_not(owner_client, releasable, action, message):
    release = releases.release_rollback(release=_rolling(releasable))

    response = owner_client.post(url("service_release_action", releasable.slug, release.pk, action), follow=True)

    assert message in response.content.decode()
    assert Release.objects.get(pk=release.pk).status == "rolled_back"


def test_an_unknown_release_action_is_404(owner_client, releasable):
    release = _rolling(releasable)

    assert owner_client.post(url("service_release_action", releasable.slug, release.pk, "explode")).status_code == 404


def test_the_timeline_shows_each_decision_with_its_figures(owner_client, releasable):
    release = _rolling(releasable)
    _calls(releasable, 2, 100, errors=1)
    _calls(releasable, 1, 900, bucket="le_50ms")
    Release.objects.filter(pk=release.pk).update(step_started_at=timezone.now() - timedelta(seconds=61))
    releases.advance(release.pk)

    response = owner_client.get(url("service_status", releasable.slug))

    assert [entry["action"] for entry in response.context["timeline"]] == ["started", "step", "step"]
    content = response.content.decode()
    assert "Version 2 takes 50 % of the calls." in content
    assert "v2: 100 calls · 1.0% errors · p99 5.0 ms" in content
    assert "v1: 900 calls · 0.0% errors · p99 50 ms" in content
    assert "bounds: 100 calls each · 2.0% errors · p99 75 ms" in content


def test_a_finished_release_leaves_its_timeline_and_the_form_returns(owner_client, releasable):
    releases.release_promote(release=_rolling(releasable))

    response = owner_client.get(url("service_detail", releasable.slug))

    content = response.content.decode()
    assert "Last release: v1 → v2" in content
    assert "Promoted by the operator." in content
    assert response.context["release_form"].versions == [1]  # version 2 now takes all the calls
    assert 'id="start-release"' in content


def test_earlier_releases_are_listed_newest_first_up_to_10(owner_client, releasable):
    for number in range(12):
        Release.objects.create(service=releasable, from_version=1, version=2, steps=[10, 50, 100], interval_s=60,
                               max_error_rate=0.05, status="rolled_back", reason=f"Rolled back ({number}).")  # fmt: skip
    newest = _release(releasable)

    response = owner_client.get(url("service_status", releasable.slug))

    assert response.context["release"] == newest
    earlier = response.context["earlier_releases"]
    assert len(earlier) == 10
    assert [r.pk for r in earlier] == sorted((r.pk for r in earlier), reverse=True)
    content = response.content.decode()
    assert "Rolled back (11)." in content and "Rolled back (2)." in content
    assert "Rolled back (1)." not in content


def test_versions_card_shows_each_versions_calls_of_the_last_5_minutes(owner_client, two_versions):
    _calls(two_versions, 1, 40, errors=2, bucket="le_25ms")
    VersionMetrics.objects.create(
        service_id=two_versions.pk, version=1, start=timezone.now() - timedelta(minutes=10), requests=500, le_5ms=500
    )

    response = owner_client.get(url("service_status", two_versions.slug))

    stats = {d.model_version.version: d.stats for d in response.context["deployments"]}
    assert (stats[1].requests, stats[1].errors) == (40, 2)
    assert stats[2].requests == 0
    content = response.content.decode()
    assert '<td class="num" data-requests>40</td>' in content
    assert '<td class="num" data-error-rate>5.0%</td>' in content


def test_outsider_gets_404_on_releases(outsider_client, releasable):
    release = _rolling(releasable)

    assert outsider_client.get(url("service_status", releasable.slug)).status_code == 404
    assert outsider_client.post(url("service_release_start", releasable.slug), RELEASE_FORM).status_code == 404
    for action in ("promote", "rollback", "pause", "resume"):
        page = url("service_release_action", releasable.slug, release.pk, action)
        assert outsider_client.post(page).status_code == 404, action

    assert Release.objects.get(pk=release.pk).status == "rolling"
    assert live_weights(releasable) == {1: 90, 2: 10}


def test_a_release_is_only_reached_through_its_own_service(owner_client, releasable, organization):
    release = _rolling(releasable)
    other = services.service_create(organization=organization, name="Other", model_slug=releasable.model.slug)

    assert owner_client.post(url("service_release_action", other.slug, release.pk, "promote")).status_code == 404
    assert Release.objects.get(pk=release.pk).status == "rolling"


def test_outsiders_release_ids_answer_404_in_their_own_service(
    outsider_client, releasable, outsider_organization, make_digits_upload
):
    release = _rolling(releasable)
    model = services.model_create(organization=outsider_organization, name="Theirs", upload=make_digits_upload())
    theirs = services.service_create(organization=outsider_organization, name="Theirs", model_slug=model.slug)

    response = outsider_client.post(url("service_release_action", theirs.slug, release.pk, "rollback"))

    assert response.status_code == 404
    assert Release.objects.get(pk=release.pk).status == "rolling"
