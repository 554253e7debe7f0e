import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts import services as account_services
from accounts.middleware import SESSION_KEY
from accounts.models import ApiKey, Membership
from console import examples
from controlplane import releases, services
from controlplane.choices import InstanceStatus, ServiceStatus
from controlplane.models import Deployment, Instance, Model, ModelVersion, Release, Service, VersionMetrics

pytestmark = pytest.mark.django_db


def _url(name, *args):
    return reverse(f"console:{name}", args=args)


# --- access ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["home", "model_list", "service_list", "service_create", "key_list", "organization_create"]
)
def test_anonymous_visitor_is_sent_to_login(client, name):
    response = client.get(_url(name))

    assert response.status_code == 302
    assert response.url.startswith(reverse("account_login"))


def test_user_without_organization_is_sent_to_create_one(client, user_factory):
    client.force_login(user_factory())

    response = client.get(_url("service_list"))

    assert response.status_code == 302
    assert response.url == _url("organization_create")


def test_every_page_renders_for_the_owner(owner_client, service, api_key):
    slug = service.model.slug
    pages = [
        _url("home"),
        _url("model_list"),
        _url("model_detail", slug),
        _url("service_list"),
        _url("service_create"),
        _url("service_detail", service.slug),
        _url("service_status", service.slug),
        _url("key_list"),
        _url("organization_create"),
    ]
    for page in pages:
        response = owner_client.get(page)
        assert response.status_code == 200, page


def test_auth_pages_render(client, owner):
    for name in ["account_login", "account_signup"]:
        assert client.get(reverse(name)).status_code == 200
    client.force_login(owner)
    assert client.get(reverse("account_logout")).status_code == 200


def test_home_counts_the_organizations_objects(owner_client, service, api_key):
    response = owner_client.get(_url("home"))

    assert response.context["model_count"] == 1
    assert list(response.context["services"]) == [service]
    assert response.context["key_count"] == 1


def test_missing_objects_answer_404(owner_client, organization):
    for page in [_url("model_detail", "nope"), _url("service_detail", "nope"), _url("service_status", "nope")]:
        assert owner_client.get(page).status_code == 404
    assert owner_client.post(_url("key_revoke", 999999)).status_code == 404


def test_mutating_views_refuse_get(owner_client, service, api_key):
    for page in [
        _url("model_delete", service.model.slug),
        _url("service_delete", service.slug),
        _url("service_scale", service.slug),
        _url("service_resources", service.slug),
        _url("service_version_add", service.slug),
        _url("service_version_remove", service.slug, 1),
        _url("service_traffic", service.slug),
        _url("key_revoke", api_key.pk),
    ]:
        assert owner_client.get(page).status_code == 405


# --- organizations -------------------------------------------------------------------------
def test_creating_an_organization_makes_the_creator_owner_and_switches_to_it(owner_client, owner):
    response = owner_client.post(_url("organization_create"), {"name": "Research Lab"})

    membership = Membership.objects.get(user=owner, organization__name="Research Lab")
    assert membership.role == "owner"
    assert response.url == _url("home")
    assert owner_client.session[SESSION_KEY] == membership.organization_id


def test_user_without_organization_can_create_one(client, user_factory):
    user = user_factory()
    client.force_login(user)

    client.post(_url("organization_create"), {"name": "Solo"})

    assert client.get(_url("home")).context["current_organization"].name == "Solo"


def test_switching_to_an_own_organization(owner_client, owner):
    other = account_services.organization_create(name="Second", owner=owner)

    response = owner_client.post(_url("organization_switch"), {"organization": other.pk, "next": _url("model_list")})

    assert response.url == _url("model_list")
    assert owner_client.session[SESSION_KEY] == other.pk
    assert owner_client.get(_url("home")).context["current_organization"] == other


def test_switching_to_another_users_organization_is_404(owner_client, organization, outsider_organization):
    response = owner_client.post(_url("organization_switch"), {"organization": outsider_organization.pk})

    assert response.status_code == 404
    assert owner_client.get(_url("home")).context["current_organization"] == organization


def test_switch_ignores_a_foreign_next_url(owner_client, organization):
    response = owner_client.post(
        _url("organization_switch"), {"organization": organization.pk, "next": "https://evil.example/"}
    )

    assert response.url == _url("home")


def test_switcher_lists_only_the_users_organizations(owner_client, outsider_organization):
    response = owner_client.get(_url("home"))

    assert b"Acme" in response.content
    assert b"Globex" not in response.content


# --- models --------------------------------------------------------------------------------
def test_uploading_a_model_redirects_to_its_page(owner_client, organization, digits_upload):
    response = owner_client.post(
        _url("model_list"), {"name": "Digits", "description": "Handwritten digits", "file": digits_upload}
    )

    model = Model.objects.get(organization=organization)
    assert response.url == _url("model_detail", model.slug)
    assert model.versions.get().framework == "onnx"
    page = owner_client.get(response.url)
    assert b"Handwritten digits" in page.content
    assert model.versions.get().sha256[:12].encode() in page.content


def test_a_bad_package_shows_its_error_and_stores_nothing(owner_client, bad_package):
    response = owner_client.post(_url("model_list"), {"name": "Broken", "file": bad_package})

    assert response.status_code == 400
    assert "modelbay.yaml: framework:" in response.context["form"].errors["file"][0]
    assert b"modelbay.yaml: framework:" in response.content
    assert Model.objects.count() == 0
    assert ModelVersion.objects.count() == 0


def test_a_taken_model_name_is_a_form_error(owner_client, model, make_digits_upload):
    response = owner_client.post(_url("model_list"), {"name": "Digits", "file": make_digits_upload()})

    assert response.status_code == 400
    assert "already exists" in response.context["form"].non_field_errors()[0]
    assert Model.objects.count() == 1


def test_model_list_shows_versions_framework_and_size(owner_client, model):
    response = owner_client.get(_url("model_list"))

    listed = response.context["models"][0]
    assert (listed.version_count, listed.latest.framework) == (1, "onnx")
    assert b"Digits" in response.content


def test_uploading_a_new_version(owner_client, model, make_digits_upload):
    response = owner_client.post(_url("model_version_add", model.slug), {"file": make_digits_upload()})

    assert response.url == _url("model_detail", model.slug)
    assert list(model.versions.values_list("version", flat=True)) == [1, 2]


def test_a_bad_new_version_is_refused_on_the_model_page(owner_client, model, bad_package):
    response = owner_client.post(_url("model_version_add", model.slug), {"file": bad_package})

    assert response.status_code == 400
    assert b"modelbay.yaml: framework" in response.content
    assert model.versions.count() == 1


def test_deleting_a_model(owner_client, model):
    response = owner_client.post(_url("model_delete", model.slug))

    assert response.url == _url("model_list")
    assert not Model.objects.exists()


def test_deleting_a_deployed_model_shows_the_conflict(owner_client, service):
    response = owner_client.post(_url("model_delete", service.model.slug), follow=True)

    assert b"A version of this model is deployed" in response.content
    assert Model.objects.filter(pk=service.model_id).exists()


# --- services ------------------------------------------------------------------------------
def test_deploying_creates_a_service_and_enqueues_provisioning(owner_client, model, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = owner_client.post(
            _url("service_create"), {"name": "Digits API", "model": model.slug, "version": "", "replicas": 2}
        )

    service = Service.objects.get(slug="digits-api")
    assert response.url == _url("service_detail", service.slug)
    assert (service.replicas, service.status) == (2, ServiceStatus.PROVISIONING)
    assert service.deployments.get().model_version.version == 1
    assert len(callbacks) == 1


def test_deploy_form_preselects_the_model(owner_client, model):
    response = owner_client.get(_url("service_create"), {"model": model.slug})

    assert response.context["form"]["model"].value() == model.slug


def test_deploying_an_unknown_version_is_a_version_error(owner_client, model):
    response = owner_client.post(
        _url("service_create"), {"name": "Digits API", "model": model.slug, "version": 7, "replicas": 1}
    )

    assert response.status_code == 400
    assert "has no version 7" in response.context["form"].errors["version"][0]
    assert not Service.objects.exists()


def test_deploying_too_many_replicas_is_a_replicas_error(owner_client, model, settings):
    response = owner_client.post(
        _url("service_create"),
        {"name": "Digits API", "model": model.slug, "replicas": settings.MODELBAY_MAX_REPLICAS + 1},
    )

    assert "replicas must be between" in response.context["form"].errors["replicas"][0]


def test_deploying_under_a_taken_name_is_a_form_error(owner_client, service):
    response = owner_client.post(
        _url("service_create"), {"name": service.name, "model": service.model.slug, "replicas": 1}
    )

    assert response.status_code == 400
    assert "already exists" in response.context["form"].non_field_errors()[0]
    assert Service.objects.count() == 1


def test_service_page_shows_status_traffic_try_it_and_curl(owner_client, service):
    response = owner_client.get(_url("service_detail", service.slug))

    content = response.content.decode()
    assert 'data-status="provisioning"' in content
    assert "v1 · 100%" in content
    assert json.loads(response.context["example"]) == {"inputs": [[0.0] * 64]}
    assert f"http://testserver/api/v1/services/{service.slug}/predict" in content
    assert 'data-polling="on"' in content


def test_service_page_shows_the_error_and_instances(owner_client, service):
    Service.objects.filter(pk=service.pk).update(status=ServiceStatus.FAILED, error="cannot load model.onnx")
    deployment = service.deployments.get()
    deployment.instances.create(zone="zone-a", status="failed", error="exit code 1", restarts=3)

    response = owner_client.get(_url("service_detail", service.slug))

    content = response.content.decode()
    assert "<pre>cannot load model.onnx</pre>" in content
    assert "zone-a" in content and "exit code 1" in content
    assert 'data-polling="off"' in content


def test_status_fragment_polls_only_while_the_service_settles(owner_client, service):
    assert b'data-polling="on"' in owner_client.get(_url("service_status", service.slug)).content

    Service.objects.filter(pk=service.pk).update(status=ServiceStatus.READY)

    fragment = owner_client.get(_url("service_status", service.slug))
    assert b'data-polling="off"' in fragment.content
    assert b"<html" not in fragment.content


def test_scaling_a_service(owner_client, service):
    response = owner_client.post(_url("service_scale", service.slug), {"replicas": 3})

    assert response.url == _url("service_detail", service.slug)
    service.refresh_from_db()
    assert service.replicas == 3


def test_scaling_beyond_the_limit_is_a_form_error(owner_client, service, settings):
    response = owner_client.post(_url("service_scale", service.slug), {"replicas": settings.MODELBAY_MAX_REPLICAS + 1})

    assert response.status_code == 400
    assert "replicas must be between" in response.context["scale_form"].errors["replicas"][0]
    service.refresh_from_db()
    assert service.replicas == 1


# --- resources -----------------------------------------------------------------------------
def test_deploying_with_resources_stores_what_was_asked(owner_client, model):
    response = owner_client.post(
        _url("service_create"),
        {"name": "Digits API", "model": model.slug, "replicas": 1, "cpu": "0.5", "memory_mb": ""},
    )

    service = Service.objects.get(slug="digits-api")
    assert response.url == _url("service_detail", service.slug)
    assert service.resources == {"cpu": 0.5}


def test_deploying_without_resources_leaves_the_defaults(owner_client, model):
    owner_client.post(_url("service_create"), {"name": "Digits API", "model": model.slug, "replicas": 1})

    assert Service.objects.get(slug="digits-api").resources == {}


def test_deploying_with_too_much_memory_is_a_memory_error(owner_client, model, settings):
    response = owner_client.post(
        _url("service_create"),
        {"name": "Digits API", "model": model.slug, "replicas": 1, "memory_mb": settings.MODELBAY_MAX_MEMORY_MB + 1},
    )

    assert response.status_code == 400
    assert "resources.memory_mb must be between 64 and" in response.context["form"].errors["memory_mb"][0]
    assert b"resources.memory_mb must be between" in response.content
    assert not Service.objects.exists()


def test_deploy_form_shows_the_limits_and_defaults(owner_client, model, settings):
    settings.MODELBAY_MAX_CPU = 2.0

    content = owner_client.get(_url("service_create")).content.decode()

    assert 'name="cpu"' in content and 'max="2.0"' in content and 'placeholder="1.0"' in content
    assert 'name="memory_mb"' in content and 'placeholder="1024"' in content


def test_service_page_shows_the_effective_resources_and_the_request(owner_client, service):
    services.service_update(service=service, resources={"cpu": 2.5})

    response = owner_client.get(_url("service_detail", service.slug))

    assert '<dd id="resources-effective">2.5 CPU · 1024 MB</dd>' in response.content.decode()
    form = response.context["resources_form"]
    assert (form["cpu"].value(), form["memory_mb"].value()) == (2.5, None)


def test_changing_resources(owner_client, service, django_capture_on_commit_callbacks):
    services.service_update(service=service, resources={"cpu": 2, "memory_mb": 2048})

    with django_capture_on_commit_callbacks() as callbacks:
        response = owner_client.post(_url("service_resources", service.slug), {"cpu": "3", "memory_mb": ""})

    assert response.url == _url("service_detail", service.slug)
    service.refresh_from_db()
    assert service.resources == {"cpu": 3.0}  # an empty field is the default again
    assert len(callbacks) == 1
    assert "Digits API: 3.0 CPU and 1024 MB per instance." in owner_client.get(response.url).content.decode()


@pytest.mark.parametrize(
    "data, field, message",
    [
        ({"cpu": "0", "memory_mb": ""}, "cpu", "resources.cpu must be between 0.1 and"),
        ({"cpu": "-1", "memory_mb": ""}, "cpu", "resources.cpu must be between 0.1 and"),
        ({"cpu": "", "memory_mb": "32"}, "memory_mb", "resources.memory_mb must be between 64 and"),
        ({"cpu": "lots", "memory_mb": ""}, "cpu", "Enter a number."),
        ({"cpu": "", "memory_mb": "1.5"}, "memory_mb", "Enter a whole number."),
    ],
)
def test_bad_resources_are_form_errors_and_change_nothing(owner_client, service, data, field, message):
    response = owner_client.post(_url("service_resources", service.slug), data)

    assert response.status_code == 400
    assert message in response.context["resources_form"].errors[field][0]
    service.refresh_from_db()
    assert service.resources == {}


def test_deleting_a_service_removes_it_from_the_list(owner_client, service):
    response = owner_client.post(_url("service_delete", service.slug))

    assert response.url == _url("service_list")
    assert list(owner_client.get(_url("service_list")).context["services"]) == []
    assert owner_client.get(_url("service_detail", service.slug)).status_code == 404


# --- versions and the traffic split --------------------------------------------------------
@pytest.fixture
def two_versions(service, make_digits_upload):
    """The service runs versions 1 (all the traffic) and 2 (none); no instance is ready."""
    services.model_version_add(model=service.model, upload=make_digits_upload())
    services.version_deploy(service=service, version=2)
    return service


def _ready(service, version: int) -> Instance:
    deployment = service.deployments.get(model_version__version=version)
    return Instance.objects.create(
        deployment=deployment, zone="zone-a", status=InstanceStatus.READY, endpoint="http://x"
    )


def _weights(service) -> dict[int, int]:
    return dict(service.deployments.filter(retired_at__isnull=True).values_list("model_version__version", "weight"))


def test_versions_card_shows_each_versions_share_and_instance_states(owner_client, two_versions):
    service = two_versions
    _ready(service, 1)
    service.deployments.get(model_version__version=1).instances.create(zone="zone-b", status=InstanceStatus.STARTING)

    response = owner_client.get(_url("service_detail", service.slug))

    shown = {
        d.model_version.version: (d.weight, d.ready_count, d.starting_count) for d in response.context["deployments"]
    }
    assert shown == {1: (100, 1, 1), 2: (0, 0, 0)}
    content = response.content.decode()
    assert '<meter min="0" max="100" value="100"' in content
    assert "1 ready" in content and "1 starting" in content
    # Only a version without traffic can be removed.
    assert _url("service_version_remove", service.slug, 2) in content
    assert _url("service_version_remove", service.slug, 1) not in content


def test_the_only_version_cannot_be_removed(owner_client, service):
    content = owner_client.get(_url("service_detail", service.slug)).content.decode()

    assert _url("service_version_remove", service.slug, 1) not in content


def test_running_another_version(owner_client, two_versions, make_digits_upload, django_capture_on_commit_callbacks):
    service = two_versions
    services.model_version_add(model=service.model, upload=make_digits_upload())
    form = owner_client.get(_url("service_detail", service.slug)).context["version_form"]
    assert form.versions == [3]  # the versions already running are not offered

    with django_capture_on_commit_callbacks() as callbacks:
        response = owner_client.post(_url("service_version_add", service.slug), {"version": 3})

    assert response.url == _url("service_detail", service.slug)
    assert _weights(service) == {1: 100, 2: 0, 3: 0}
    assert len(callbacks) == 1
    assert "Version 3 is starting beside the others" in owner_client.get(response.url).content.decode()


@pytest.mark.parametrize(
    "version, field, message",
    [
        (9, "version", "has no version 9"),
        ("two", "version", "Enter a whole number."),
        (1, None, "Version 1 already runs in this service."),
    ],
)
def test_running_a_version_refused_is_a_form_error(owner_client, service, version, field, message):
    response = owner_client.post(_url("service_version_add", service.slug), {"version": version})

    assert response.status_code == 400
    form = response.context["version_form"]
    errors = form.errors[field] if field else form.non_field_errors()
    assert message in errors[0]
    assert message in response.content.decode()
    assert _weights(service) == {1: 100}


def test_running_a_version_that_still_drains_is_a_form_error(owner_client, two_versions):
    services.version_retire(service=two_versions, version=2)

    response = owner_client.post(_url("service_version_add", two_versions.slug), {"version": 2})

    assert response.status_code == 400
    assert "Version 2 is still draining." in response.context["version_form"].non_field_errors()[0]


def test_when_every_version_runs_the_page_points_to_uploading_one(owner_client, service):
    content = owner_client.get(_url("service_detail", service.slug)).content.decode()

    assert "Every version of Digits runs here." in content
    assert 'id="add-version"' not in content


def test_traffic_form_is_prefilled_with_the_current_split(owner_client, two_versions):
    form = owner_client.get(_url("service_detail", two_versions.slug)).context["traffic_form"]

    assert {name: form[name].value() for name in form.fields} == {"1": 100, "2": 0}
    assert 'name="weights-2"' in str(form)


def test_setting_the_split(owner_client, two_versions):
    service = two_versions
    _ready(service, 1)
    _ready(service, 2)

    response = owner_client.post(_url("service_traffic", service.slug), {"weights-1": 70, "weights-2": 30})

    assert response.url == _url("service_detail", service.slug)
    assert _weights(service) == {1: 70, 2: 30}
    page = owner_client.get(response.url).content.decode()
    assert "Traffic of Digits API: v1 70%, v2 30%." in page
    assert '<meter min="0" max="100" value="30"' in page


def test_an_empty_share_is_left_out_and_gets_0(owner_client, two_versions):
    _ready(two_versions, 2)

    owner_client.post(_url("service_traffic", two_versions.slug), {"weights-1": "", "weights-2": 100})

    assert _weights(two_versions) == {1: 0, 2: 100}


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
    _ready(two_versions, 1)

    response = owner_client.post(_url("service_traffic", two_versions.slug), data)

    assert response.status_code == 400
    form = response.context["traffic_form"]
    errors = form.errors[field] if field else form.non_field_errors()
    assert message in errors[0]
    assert message in response.content.decode()
    assert _weights(two_versions) == {1: 100, 2: 0}


def test_removing_a_version_without_traffic(owner_client, two_versions):
    response = owner_client.post(_url("service_version_remove", two_versions.slug, 2), follow=True)

    assert "Version 2 is being removed" in response.content.decode()
    assert _weights(two_versions) == {1: 100}
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
    response = owner_client.post(_url("service_version_remove", two_versions.slug, version), follow=True)

    assert message in response.content.decode()
    assert _weights(two_versions) == {1: 100, 2: 0}


def test_removing_the_only_version_is_refused(owner_client, service):
    Deployment.objects.filter(service=service).update(weight=0)

    response = owner_client.post(_url("service_version_remove", service.slug, 1), follow=True)

    assert "A service runs at least one version" in response.content.decode()
    assert service.deployments.get().retired_at is None


def test_status_fragment_follows_a_version_starting_beside_a_ready_one(owner_client, two_versions):
    Service.objects.filter(pk=two_versions.pk).update(status=ServiceStatus.READY)
    _ready(two_versions, 1)
    starting = two_versions.deployments.get(model_version__version=2).instances.create(zone="zone-a")

    fragment = owner_client.get(_url("service_status", two_versions.slug)).content.decode()
    assert 'data-polling="on"' in fragment
    assert 'id="versions"' in fragment and "1 starting" in fragment

    Instance.objects.filter(pk=starting.pk).update(status=InstanceStatus.READY)
    fragment = owner_client.get(_url("service_status", two_versions.slug)).content.decode()
    assert 'data-polling="off"' in fragment
    assert "1 starting" not in fragment


def test_outsider_cannot_touch_versions_or_traffic(outsider_client, two_versions):
    service = two_versions
    _ready(service, 2)
    posts = [
        (_url("service_version_add", service.slug), {"version": 2}),
        (_url("service_version_remove", service.slug, 2), {}),
        (_url("service_traffic", service.slug), {"weights-1": 0, "weights-2": 100}),
    ]
    for page, data in posts:
        assert outsider_client.post(page, data).status_code == 404, page

    assert _weights(service) == {1: 100, 2: 0}


def test_member_can_set_the_split(member_client, two_versions):
    _ready(two_versions, 2)

    response = member_client.post(_url("service_traffic", two_versions.slug), {"weights-2": 100})

    assert response.status_code == 302
    assert _weights(two_versions) == {1: 0, 2: 100}


# --- releases ------------------------------------------------------------------------------
RELEASE_FORM = {"version": 2, "steps": "10, 50, 100", "interval_s": 60, "max_error_rate": 5, "max_p99_ms": ""}


@pytest.fixture
def releasable(service, make_digits_upload):
    """The service runs version 1 (ready, all the traffic); the model also has version 2."""
    Service.objects.filter(pk=service.pk).update(status=ServiceStatus.READY)
    services.model_version_add(model=service.model, upload=make_digits_upload())
    _ready(service, 1)
    return service


def _release(service, **options) -> Release:
    arguments = {"version": 2, "steps": [10, 50, 100], "interval_s": 60, "max_error_rate": 0.05, "max_p99_ms": None}
    return releases.release_start(service=service, **{**arguments, **options})


def _rolling(service) -> Release:
    """A release of version 2 at its first step (10 %), as beat leaves it."""
    release = _release(service)
    _ready(service, 2)
    releases.advance(release.pk)
    return Release.objects.get(pk=release.pk)


def _calls(service, version: int, requests: int, errors: int = 0, bucket: str = "le_5ms") -> None:
    start = timezone.now() - timedelta(seconds=30)
    start -= timedelta(seconds=start.timestamp() % 10)
    VersionMetrics.objects.create(service_id=service.pk, version=version, start=start,
                                  requests=requests, errors=errors, **{bucket: requests})  # fmt: skip


def test_release_form_offers_the_versions_not_at_100_percent(owner_client, releasable):
    response = owner_client.get(_url("service_detail", releasable.slug))

    form = response.context["release_form"]
    assert form.versions == [2]
    assert form["steps"].value() == "10, 50, 100"
    assert 'id="start-release"' in response.content.decode()


def test_starting_a_release(owner_client, releasable):
    response = owner_client.post(_url("service_release_start", releasable.slug), {**RELEASE_FORM, "max_p99_ms": 250})

    assert response.url == _url("service_detail", releasable.slug)
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
    assert _url("service_release_action", releasable.slug, release.pk, "promote") in content


@pytest.mark.parametrize(
    "data, field, message",
    [
        ({"steps": "50, 10, 100"}, "steps", "steps are percentages rising from above 0 and ending at 100."),
        ({"steps": "10, 50"}, "steps", "ending at 100"),
        ({"steps": "ten, 100"}, "steps", "Write whole percentages separated by commas"),
        ({"version": 1}, "version", "Version 1 is the one running now."),
        ({"interval_s": 0}, "interval_s", "greater than or equal to 1"),
        ({"max_error_rate": 150}, "max_error_rate", "less than or equal to 100"),
        ({"max_p99_ms": 0}, "max_p99_ms", "greater than or equal to 1"),
    ],
)
def test_a_refused_release_is_a_form_error(owner_client, releasable, data, field, message):
    response = owner_client.post(_url("service_release_start", releasable.slug), {**RELEASE_FORM, **data})

    assert response.status_code == 400
    assert message in response.context["release_form"].errors[field][0]
    assert message in response.content.decode()
    assert "data-edited" in response.content.decode()  # polling leaves the form as it is
    assert not releasable.releases.exists()


def test_a_second_release_is_refused_above_the_form(owner_client, releasable, make_digits_upload):
    services.model_version_add(model=releasable.model, upload=make_digits_upload())
    _release(releasable)

    response = owner_client.post(_url("service_release_start", releasable.slug), {**RELEASE_FORM, "version": 3})

    assert response.status_code == 400
    assert "already running" in response.context["release_form"].non_field_errors()[0]
    assert releasable.releases.count() == 1


def test_an_active_release_shows_its_share_next_step_and_actions(owner_client, releasable):
    release = _rolling(releasable)

    fragment = owner_client.get(_url("service_status", releasable.slug))

    content = fragment.content.decode()
    assert 'data-polling="on"' in content
    assert "<span data-release-weight>10%</span>" in content
    assert fragment.context["next_step_at"] == release.step_started_at + timedelta(seconds=60)
    for action in ("promote", "pause", "rollback"):
        assert _url("service_release_action", releasable.slug, release.pk, action) in content
    assert _url("service_release_action", releasable.slug, release.pk, "resume") not in content
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

    response = owner_client.post(_url("service_release_action", releasable.slug, release.pk, action), follow=True)

    release.refresh_from_db()
    assert release.status == status
    assert _weights(releasable) == weights
    assert message in response.content.decode()


def test_resuming_a_paused_release(owner_client, releasable):
    release = _rolling(releasable)
    releases.release_pause(release=release)
    content = owner_client.get(_url("service_detail", releasable.slug)).content.decode()
    assert "resume to go on" in content
    assert _url("service_release_action", releasable.slug, release.pk, "pause") not in content

    response = owner_client.post(_url("service_release_action", releasable.slug, release.pk, "resume"), follow=True)

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

    response = owner_client.post(_url("service_release_action", releasable.slug, release.pk, action), follow=True)

    assert message in response.content.decode()
    assert Release.objects.get(pk=release.pk).status == "rolled_back"


def test_an_unknown_release_action_is_404(owner_client, releasable):
    release = _rolling(releasable)

    assert owner_client.post(_url("service_release_action", releasable.slug, release.pk, "explode")).status_code == 404


def test_the_timeline_shows_each_decision_with_its_figures(owner_client, releasable):
    release = _rolling(releasable)
    _calls(releasable, 2, 100, errors=1)
    _calls(releasable, 1, 900, bucket="le_50ms")
    Release.objects.filter(pk=release.pk).update(step_started_at=timezone.now() - timedelta(seconds=61))
    releases.advance(release.pk)

    response = owner_client.get(_url("service_status", releasable.slug))

    assert [entry["action"] for entry in response.context["timeline"]] == ["started", "step", "step"]
    content = response.content.decode()
    assert "Version 2 takes 50 % of the calls." in content
    assert "v2: 100 calls · 1.0% errors · p99 5.0 ms" in content
    assert "v1: 900 calls · 0.0% errors · p99 50 ms" in content


def test_a_finished_release_leaves_its_timeline_and_the_form_returns(owner_client, releasable):
    releases.release_promote(release=_rolling(releasable))

    response = owner_client.get(_url("service_detail", releasable.slug))

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

    response = owner_client.get(_url("service_status", releasable.slug))

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

    response = owner_client.get(_url("service_status", two_versions.slug))

    stats = {d.model_version.version: d.stats for d in response.context["deployments"]}
    assert (stats[1].requests, stats[1].errors) == (40, 2)
    assert stats[2].requests == 0
    content = response.content.decode()
    assert '<td class="num" data-requests>40</td>' in content
    assert '<td class="num" data-error-rate>5.0%</td>' in content


def test_outsider_gets_404_on_releases(outsider_client, releasable):
    release = _rolling(releasable)

    assert outsider_client.get(_url("service_status", releasable.slug)).status_code == 404
    assert outsider_client.post(_url("service_release_start", releasable.slug), RELEASE_FORM).status_code == 404
    for action in ("promote", "rollback", "pause", "resume"):
        page = _url("service_release_action", releasable.slug, release.pk, action)
        assert outsider_client.post(page).status_code == 404, action

    assert Release.objects.get(pk=release.pk).status == "rolling"
    assert _weights(releasable) == {1: 90, 2: 10}


def test_a_release_is_only_reached_through_its_own_service(owner_client, releasable, organization):
    release = _rolling(releasable)
    other = services.service_create(organization=organization, name="Other", model_slug=releasable.model.slug)

    assert owner_client.post(_url("service_release_action", other.slug, release.pk, "promote")).status_code == 404
    assert Release.objects.get(pk=release.pk).status == "rolling"


def test_outsiders_release_ids_answer_404_in_their_own_service(
    outsider_client, releasable, outsider_organization, make_digits_upload
):
    release = _rolling(releasable)
    model = services.model_create(organization=outsider_organization, name="Theirs", upload=make_digits_upload())
    theirs = services.service_create(organization=outsider_organization, name="Theirs", model_slug=model.slug)

    response = outsider_client.post(_url("service_release_action", theirs.slug, release.pk, "rollback"))

    assert response.status_code == 404
    assert Release.objects.get(pk=release.pk).status == "rolling"


# --- API keys ------------------------------------------------------------------------------
def test_creating_a_key_shows_it_once(owner_client, organization, owner):
    response = owner_client.post(_url("key_list"), {"name": "ci", "scopes": ["predict"]})

    assert response.url == _url("key_created")
    api_key = ApiKey.objects.get(organization=organization)
    assert (api_key.scopes, api_key.created_by) == (["predict"], owner)
    shown = owner_client.get(_url("key_created"))
    full_key = shown.context["full_key"]
    assert full_key.startswith(f"mb_{api_key.prefix}_")
    assert full_key.encode() in shown.content
    assert "no-store" in shown["Cache-Control"]
    again = owner_client.get(_url("key_created"))
    assert again.url == _url("key_list")
    assert full_key.encode() not in owner_client.get(_url("key_list")).content


def test_a_created_key_works_against_the_api(owner_client):
    owner_client.post(_url("key_list"), {"name": "ci", "scopes": ["manage"]})
    full_key = owner_client.get(_url("key_created")).context["full_key"]

    response = owner_client.get("/api/v1/models", HTTP_AUTHORIZATION=f"Bearer {full_key}")

    assert response.status_code == 200


def test_a_key_can_expire_on_a_future_day(owner_client, organization):
    day = (timezone.now() + timedelta(days=30)).date()

    owner_client.post(_url("key_list"), {"name": "temp", "scopes": ["predict"], "expires_on": day.isoformat()})

    assert ApiKey.objects.get(organization=organization).expires_at.date() == day


def test_a_key_cannot_expire_in_the_past(owner_client):
    day = (timezone.now() - timedelta(days=1)).date()

    response = owner_client.post(_url("key_list"), {"name": "old", "scopes": ["predict"], "expires_on": day})

    assert response.status_code == 400
    assert "expires_on" in response.context["form"].errors
    assert not ApiKey.objects.exists()


def test_a_key_needs_a_scope(owner_client):
    response = owner_client.post(_url("key_list"), {"name": "none"})

    assert "scopes" in response.context["form"].errors


def test_revoking_a_key(owner_client, api_key):
    response = owner_client.post(_url("key_revoke", api_key.pk))

    assert response.url == _url("key_list")
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    assert list(owner_client.get(_url("key_list")).context["keys"]) == []


# --- owner / member / outsider -------------------------------------------------------------
def _object_pages(service, api_key):
    """Every console page and action addressing one object of the owner's organization."""
    model_slug = service.model.slug
    return [
        ("get", _url("model_detail", model_slug)),
        ("post", _url("model_version_add", model_slug)),
        ("post", _url("model_delete", model_slug)),
        ("get", _url("service_detail", service.slug)),
        ("get", _url("service_status", service.slug)),
        ("post", _url("service_scale", service.slug)),
        ("post", _url("service_resources", service.slug)),
        ("post", _url("service_version_add", service.slug)),
        ("post", _url("service_version_remove", service.slug, 1)),
        ("post", _url("service_traffic", service.slug)),
        ("post", _url("service_delete", service.slug)),
        ("post", _url("key_revoke", api_key.pk)),
    ]


def test_outsider_gets_404_on_every_object_page_and_action(outsider_client, service, api_key):
    for method, page in _object_pages(service, api_key):
        data = {"replicas": 2, "cpu": 2} if method == "post" else None
        response = getattr(outsider_client, method)(page, data)
        assert response.status_code == 404, (method, page)

    service.refresh_from_db()
    api_key.refresh_from_db()
    assert (service.replicas, service.resources, service.deleted_at, api_key.revoked_at) == (1, {}, None, None)
    assert Model.objects.filter(pk=service.model_id).exists()


def test_outsider_cannot_deploy_another_organizations_model(outsider_client, model):
    response = outsider_client.post(_url("service_create"), {"name": "Stolen", "model": model.slug, "replicas": 1})

    assert response.status_code == 400
    assert "model" in response.context["form"].errors
    assert not Service.objects.exists()


def test_member_can_see_and_use_the_organizations_objects(member_client, service, api_key):
    pages = [_url("model_detail", service.model.slug), _url("service_detail", service.slug), _url("key_list")]
    for page in pages:
        assert member_client.get(page).status_code == 200, page

    response = member_client.post(_url("service_scale", service.slug), {"replicas": 2})

    assert response.status_code == 302
    service.refresh_from_db()
    assert service.replicas == 2


def test_list_pages_never_show_another_organizations_objects(
    owner_client, outsider_client, service, api_key, outsider_organization, make_digits_upload
):
    foreign_model = services.model_create(
        organization=outsider_organization, name="Globex secret", upload=make_digits_upload()
    )
    foreign_service = services.service_create(
        organization=outsider_organization, name="Globex service", model_slug=foreign_model.slug
    )
    account_services.api_key_create(organization=outsider_organization, name="globex-key")

    for page in [_url("home"), _url("model_list"), _url("service_list"), _url("key_list"), _url("service_create")]:
        content = owner_client.get(page).content
        assert b"Globex secret" not in content and b"Globex service" not in content and b"globex-key" not in content

    for page in [_url("home"), _url("model_list"), _url("service_list"), _url("key_list"), _url("service_create")]:
        content = outsider_client.get(page).content
        assert b"Digits API" not in content and b">ci<" not in content
    assert outsider_client.get(_url("service_detail", foreign_service.slug)).status_code == 200


# --- example inputs ------------------------------------------------------------------------
def test_example_body_follows_the_manifest_schema():
    version = ModelVersion(
        framework="python", manifest={"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2, 3]}]}
    )

    assert json.loads(examples.example_body(version)) == {"inputs": [[[0.0] * 3] * 2]}


def test_example_body_for_text_inputs():
    version = ModelVersion(framework="python", manifest={"inputs": [{"name": "t", "datatype": "BYTES", "shape": [-1]}]})

    assert json.loads(examples.example_body(version)) == {"inputs": [""]}


def test_example_body_without_a_schema_is_a_small_batch():
    assert json.loads(examples.example_body(ModelVersion(framework="python", manifest={}))) == {"inputs": [[0.0]]}


def test_service_page_shows_an_instances_logs(owner_client, service, settings):
    instance = service.deployments.get().instances.create(zone="zone-a", status="failed")
    log_dir = settings.MODELBAY_RUN_DIR / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / f"{instance.id}.log").write_text("Traceback (most recent call last):\nValueError: <bad> weights\n")

    content = owner_client.get(_url("service_detail", service.slug)).content.decode()

    assert "ValueError: &lt;bad&gt; weights" in content  # escaped, shown
    assert owner_client.get(_url("service_detail", service.slug) + "?logs=i-unknown").status_code == 404


def test_outsider_cannot_read_logs_through_another_service(
    outsider_client, owner_client, service, outsider_organization
):
    instance = service.deployments.get().instances.create(zone="zone-a", status="ready")
    response = outsider_client.get(_url("service_detail", service.slug) + f"?logs={instance.id}")
    assert response.status_code == 404
