"""A service's versions and its traffic split: running another version, setting the
split, removing a version (console.views.service_versions). The ``two_versions`` fixture is
in conftest.py."""

import pytest

from console.tests.helpers import live_weights, ready_instance, url
from controlplane import services
from controlplane.choices import InstanceStatus, ServiceStatus
from controlplane.models import Deployment, Instance, Service

pytestmark = pytest.mark.django_db


def test_versions_card_shows_each_versions_share_and_instance_states(owner_client, two_versions):
    service = two_versions
    ready_instance(service, 1)
    service.deployments.get(model_version__version=1).instances.create(zone="zone-b", status=InstanceStatus.STARTING)

    response = owner_client.get(url("service_detail", service.slug))

    shown = {
        d.model_version.version: (d.weight, d.ready_count, d.starting_count) for d in response.context["deployments"]
    }
    assert shown == {1: (100, 1, 1), 2: (0, 0, 0)}
    content = response.content.decode()
    assert '<meter min="0" max="100" value="100"' in content
    assert "1 ready" in content and "1 starting" in content
    # Only a version without traffic can be removed.
    assert url("service_version_remove", service.slug, 2) in content
    assert url("service_version_remove", service.slug, 1) not in content


def test_the_only_version_cannot_be_removed(owner_client, service):
    content = owner_client.get(url("service_detail", service.slug)).content.decode()

    assert url("service_version_remove", service.slug, 1) not in content


def test_running_another_version(owner_client, two_versions, make_digits_upload, django_capture_on_commit_callbacks):
    service = two_versions
    services.model_version_add(model=service.model, upload=make_digits_upload())
    form = owner_client.get(url("service_detail", service.slug)).context["version_form"]
    assert form.versions == [3]  # the versions already running are not offered

    with django_capture_on_commit_callbacks() as callbacks:
        response = owner_client.post(url("service_version_add", service.slug), {"version": 3})

    assert response.url == url("service_detail", service.slug)
    assert live_weights(service) == {1: 100, 2: 0, 3: 0}
    assert len(callbacks) == 1
    assert "Version 3 added beside the others" in owner_client.get(response.url).content.decode()


@pytest.mark.parametrize(
    "version, field, message",
    [
        (9, "version", "has no version 9"),
        ("two", "version", "Enter a whole number."),
        (1, None, "Version 1 already runs in this service."),
    ],
)
def test_running_a_version_refused_is_a_form_error(owner_client, service, version, field, message):
    response = owner_client.post(url("service_version_add", service.slug), {"version": version})

    assert response.status_code == 400
    form = response.context["version_form"]
    errors = form.errors[field] if field else form.non_field_errors()
    assert message in errors[0]
    assert message in response.content.decode()
    assert live_weights(service) == {1: 100}


def test_running_a_version_that_still_drains_is_a_form_error(owner_client, two_versions):
    services.version_retire(service=two_versions, version=2)

    response = owner_client.post(url("service_version_add", two_versions.slug), {"version": 2})

    assert response.status_code == 400
    assert "Version 2 is still draining." in response.context["version_form"].non_field_errors()[0]


def test_when_every_version_runs_the_page_points_to_uploading_one(owner_client, service):
    content = owner_client.get(url("service_detail", service.slug)).content.decode()

    assert "Every version of Digits runs here." in content
    assert 'id="add-version"' not in content


def test_traffic_form_is_prefilled_with_the_current_split(owner_client, two_versions):
    form = owner_client.get(url("service_detail", two_versions.slug)).context["traffic_form"]

    assert {name: form[name].value() for name in form.fields} == {"1": 100, "2": 0}
    assert 'name="weights-2"' in str(form)


def test_setting_the_split(owner_client, two_versions):
    service = two_versions
    ready_instance(service, 1)
    ready_instance(service, 2)

    response = owner_client.post(url("service_traffic", service.slug), {"weights-1": 70, "weights-2": 30})

    assert response.url == url("service_detail", service.slug)
    assert live_weights(service) == {1: 70, 2: 30}
    page = owner_client.get(response.url).content.decode()
    assert "Traffic of Digits API: v1 70%, v2 30%." in page
    assert '<meter min="0" max="100" value="30"' in page


def test_an_empty_share_is_left_out_and_gets_0(owner_client, two_versions):
    ready_instance(two_versions, 2)

    owner_client.post(url("service_traffic", two_versions.slug), {"weights-1": "", "weights-2": 100})

    assert live_weights(two_versions) == {1: 0, 2: 100}


@pytest.mark.parametrize(
    "data, field, message",
    [
        ({"weights-1": 70, "weights-2": 20}, None, "The weights sum to 90; they must sum to 100."),
        ({"weights-1": 101, "weights-2": -1}, None, "Each weight is an integer from 0 to 100."),
        ({"weights-1": 50, "weights-2": 50}, "2", "Version 2 has no ready instance yet"),
        ({"weights-1": "half", "weights-2": 50}, "1", "Enter a whole number."),
    ],
)
def test_a_bad_split_is_a_form_error_and_changes_nothing(owner_client, two_versions, data, field, message):
    ready_instance(two_versions, 1)

    response = owner_client.post(url("service_traffic", two_versions.slug), data)

    assert response.status_code == 400
    form = response.context["traffic_form"]
    errors = form.errors[field] if field else form.non_field_errors()
    assert message in errors[0]
    assert message in response.content.decode()
    assert live_weights(two_versions) == {1: 100, 2: 0}


def test_removing_a_version_without_traffic(owner_client, two_versions):
    response = owner_client.post(url("service_version_remove", two_versions.slug, 2), follow=True)

    assert "Version 2 is being removed" in response.content.decode()
    assert live_weights(two_versions) == {1: 100}
    assert [d.model_version.version for d in response.context["deployments"]] == [1]
    assert 'data-polling="on"' in response.content.decode()  # the page follows the drain


@pytest.mark.parametrize(
    "version, message",
    [
        (1, "Version 1 still takes 100% of the calls; move them first."),
        (9, "Version 9 does not run in this service."),
    ],
)
def test_removing_a_version_refused_shows_why(owner_client, two_versions, version, message):
    response = owner_client.post(url("service_version_remove", two_versions.slug, version), follow=True)

    assert message in response.content.decode()
    assert live_weights(two_versions) == {1: 100, 2: 0}


def test_removing_the_only_version_is_refused(owner_client, service):
    Deployment.objects.filter(service=service).update(weight=0)

    response = owner_client.post(url("service_version_remove", service.slug, 1), follow=True)

    assert "A service runs at least one version" in response.content.decode()
    assert service.deployments.get().retired_at is None


def test_status_fragment_follows_a_version_starting_beside_a_ready_one(owner_client, two_versions):
    Service.objects.filter(pk=two_versions.pk).update(status=ServiceStatus.READY)
    ready_instance(two_versions, 1)
    starting = two_versions.deployments.get(model_version__version=2).instances.create(zone="zone-a")

    fragment = owner_client.get(url("service_status", two_versions.slug)).content.decode()
    assert 'data-polling="on"' in fragment
    assert 'id="versions"' in fragment and "1 starting" in fragment

    Instance.objects.filter(pk=starting.pk).update(status=InstanceStatus.READY)
    fragment = owner_client.get(url("service_status", two_versions.slug)).content.decode()
    assert 'data-polling="off"' in fragment
    assert "1 starting" not in fragment


def test_outsider_cannot_touch_versions_or_traffic(outsider_client, two_versions):
    service = two_versions
    ready_instance(service, 2)
    posts = [
        (url("service_version_add", service.slug), {"version": 2}),
        (url("service_version_remove", service.slug, 2), {}),
        (url("service_traffic", service.slug), {"weights-1": 0, "weights-2": 100}),
    ]
    for page, data in posts:
        assert outsider_client.post(page, data).status_code == 404, page

    assert live_weights(service) == {1: 100, 2: 0}


def test_member_can_set_the_split(member_client, two_versions):
    ready_instance(two_versions, 2)

    response = member_client.post(url("service_traffic", two_versions.slug), {"weights-2": 100})

    assert response.status_code == 302
    assert live_weights(two_versions) == {1: 0, 2: 100}
