"""The service pages: deploying, a service's page and status block, scaling (fixed or
autoscaled, with the autoscaler's decisions), resources, network, logs, deleting
(console.views.service_pages)."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from console.tests.helpers import url
from controlplane import services
from controlplane.choices import ServiceStatus
from controlplane.models import ColdStart, Instance, Service

pytestmark = pytest.mark.django_db


# --- services ----------------------------------------------------------------------------
def test_deploying_creates_a_service_and_enqueues_provisioning(owner_client, model, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = owner_client.post(
            url("service_create"), {"name": "Digits API", "model": model.slug, "version": "", "replicas": 2}
        )

    service = Service.objects.get(slug="digits-api")
    assert response.url == url("service_detail", service.slug)
    assert (service.replicas, service.status) == (2, ServiceStatus.PROVISIONING)
    assert service.deployments.get().model_version.version == 1
    assert len(callbacks) == 1


def test_deploy_form_preselects_the_model(owner_client, model):
    response = owner_client.get(url("service_create"), {"model": model.slug})

    assert response.context["form"]["model"].value() == model.slug


def test_deploying_an_unknown_version_is_a_version_error(owner_client, model):
    response = owner_client.post(
        url("service_create"), {"name": "Digits API", "model": model.slug, "version": 7, "replicas": 1}
    )

    assert response.status_code == 400
    assert "has no version 7" in response.context["form"].errors["version"][0]
    assert not Service.objects.exists()


def test_deploying_too_many_replicas_is_a_replicas_error(owner_client, model, settings):
    response = owner_client.post(
        url("service_create"),
        {"name": "Digits API", "model": model.slug, "replicas": settings.MODELBAY_MAX_REPLICAS + 1},
    )

    assert "replicas must be between" in response.context["form"].errors["replicas"][0]


def test_deploying_under_a_taken_name_is_a_form_error(owner_client, service):
    response = owner_client.post(
        url("service_create"), {"name": service.name, "model": service.model.slug, "replicas": 1}
    )

    assert response.status_code == 400
    assert "already exists" in response.context["form"].non_field_errors()[0]
    assert Service.objects.count() == 1


def test_service_page_shows_status_traffic_try_it_and_curl(owner_client, service, settings):
    settings.SITE_URL = "https://models.example.com"  # the one address the console shows, whatever the Host
    response = owner_client.get(url("service_detail", service.slug))

    content = response.content.decode()
    assert 'data-status="provisioning"' in content
    assert "v1 · 100%" in content
    assert json.loads(response.context["example"]) == {"inputs": [[0.0] * 64]}
    assert f"https://models.example.com/api/v1/services/{service.slug}/predict" in content
    assert 'data-polling="on"' in content


def test_service_page_shows_the_error_and_instances(owner_client, service):
    Service.objects.filter(pk=service.pk).update(status=ServiceStatus.FAILED, error="cannot load model.onnx")
    deployment = service.deployments.get()
    deployment.instances.create(zone="zone-a", status="failed", error="exit code 1", restarts=3)

    response = owner_client.get(url("service_detail", service.slug))

    content = response.content.decode()
    assert "<pre>cannot load model.onnx</pre>" in content
    assert "zone-a" in content and "exit code 1" in content
    assert 'data-polling="off"' in content


def test_status_fragment_polls_only_while_the_service_settles(owner_client, service):
    assert b'data-polling="on"' in owner_client.get(url("service_status", service.slug)).content

    Service.objects.filter(pk=service.pk).update(status=ServiceStatus.READY)

    fragment = owner_client.get(url("service_status", service.slug))
    assert b'data-polling="off"' in fragment.content
    assert b"<html" not in fragment.content


def test_scaling_a_service(owner_client, service):
    response = owner_client.post(url("service_scale", service.slug), {"replicas": 3})

    assert response.url == url("service_detail", service.slug)
    service.refresh_from_db()
    assert service.replicas == 3


def test_scaling_beyond_the_limit_is_a_form_error(owner_client, service, settings):
    response = owner_client.post(url("service_scale", service.slug), {"replicas": settings.MODELBAY_MAX_REPLICAS + 1})

    assert response.status_code == 400
    assert "replicas must be between" in response.context["scale_form"].errors["replicas"][0]
    service.refresh_from_db()
    assert service.replicas == 1


# --- resources ---------------------------------------------------------------------------
def test_deploying_with_resources_stores_what_was_asked(owner_client, model):
    response = owner_client.post(
        url("service_create"),
        {"name": "Digits API", "model": model.slug, "replicas": 1, "cpu": "0.5", "memory_mb": ""},
    )

    service = Service.objects.get(slug="digits-api")
    assert response.url == url("service_detail", service.slug)
    assert service.resources == {"cpu": 0.5}


def test_deploying_without_resources_leaves_the_defaults(owner_client, model):
    owner_client.post(url("service_create"), {"name": "Digits API", "model": model.slug, "replicas": 1})

    assert Service.objects.get(slug="digits-api").resources == {}


def test_deploying_with_too_much_memory_is_a_memory_error(owner_client, model, settings):
    response = owner_client.post(
        url("service_create"),
        {"name": "Digits API", "model": model.slug, "replicas": 1, "memory_mb": settings.MODELBAY_MAX_MEMORY_MB + 1},
    )

    assert response.status_code == 400
    assert "resources.memory_mb must be between 64 and" in response.context["form"].errors["memory_mb"][0]
    assert b"resources.memory_mb must be between" in response.content
    assert not Service.objects.exists()


def test_deploy_form_shows_the_limits_and_defaults(owner_client, model, settings):
    settings.MODELBAY_MAX_CPU = 2.0

    content = owner_client.get(url("service_create")).content.decode()

    assert 'name="cpu"' in content and 'max="2.0"' in content and 'placeholder="1.0"' in content
    assert 'name="memory_mb"' in content and 'placeholder="1024"' in content


def test_service_page_shows_the_effective_resources_and_the_request(owner_client, service):
    services.service_update(service=service, resources={"cpu": 2.5})

    response = owner_client.get(url("service_detail", service.slug))

    assert '<dd id="resources-effective">2.5 CPU · 1024 MB</dd>' in response.content.decode()
    form = response.context["resources_form"]
    assert (form["cpu"].value(), form["memory_mb"].value()) == (2.5, None)


def test_changing_resources(owner_client, service, django_capture_on_commit_callbacks):
    services.service_update(service=service, resources={"cpu": 2, "memory_mb": 2048})

    with django_capture_on_commit_callbacks() as callbacks:
        response = owner_client.post(url("service_resources", service.slug), {"cpu": "3", "memory_mb": ""})

    assert response.url == url("service_detail", service.slug)
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
    response = owner_client.post(url("service_resources", service.slug), data)

    assert response.status_code == 400
    assert message in response.context["resources_form"].errors[field][0]
    service.refresh_from_db()
    assert service.resources == {}


# --- network -----------------------------------------------------------------------------
def test_deploying_with_outbound_access_sets_the_network(owner_client, model):
    response = owner_client.post(
        url("service_create"), {"name": "Digits API", "model": model.slug, "replicas": 1, "network": "egress"}
    )

    service = Service.objects.get(slug="digits-api")
    assert response.url == url("service_detail", service.slug)
    assert service.network == "egress"


def test_deploying_without_a_network_leaves_none(owner_client, model):
    owner_client.post(url("service_create"), {"name": "Digits API", "model": model.slug, "replicas": 1})

    assert Service.objects.get(slug="digits-api").network == "none"


def test_deploy_form_offers_the_network_with_none_selected(owner_client, model):
    content = owner_client.get(url("service_create")).content.decode()

    assert '<option value="none" selected>No network (default)</option>' in content
    assert '<option value="egress">Outbound access (egress)</option>' in content
    assert "can open no connection at all" in content


def test_deploying_with_an_unknown_network_is_a_form_error(owner_client, model):
    response = owner_client.post(
        url("service_create"), {"name": "Digits API", "model": model.slug, "replicas": 1, "network": "host"}
    )

    assert response.status_code == 400
    assert "not one of the available choices" in response.context["form"].errors["network"][0]
    assert not Service.objects.exists()


def test_service_page_shows_the_network(owner_client, service):
    response = owner_client.get(url("service_detail", service.slug))

    assert '<dd id="network-setting">No network (default)</dd>' in response.content.decode()
    assert response.context["network_form"]["network"].value() == "none"

    services.service_update(service=service, network="egress")

    fragment = owner_client.get(url("service_status", service.slug)).content.decode()
    assert '<dd id="network-setting">Outbound access (egress)</dd>' in fragment


def test_changing_the_network(owner_client, service, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = owner_client.post(url("service_network", service.slug), {"network": "egress"})

    assert response.url == url("service_detail", service.slug)
    service.refresh_from_db()
    assert service.network == "egress"
    assert len(callbacks) == 1
    assert "Network of Digits API: Outbound access (egress)." in owner_client.get(response.url).content.decode()

    owner_client.post(url("service_network", service.slug), {"network": "none"})

    service.refresh_from_db()
    assert service.network == "none"


@pytest.mark.parametrize("data", [{}, {"network": "host"}])
def test_a_bad_network_is_a_form_error_and_changes_nothing(owner_client, service, data):
    response = owner_client.post(url("service_network", service.slug), data)

    assert response.status_code == 400
    assert response.context["network_form"].errors["network"]
    service.refresh_from_db()
    assert service.network == "none"


# --- deleting ----------------------------------------------------------------------------
def test_deleting_a_service_removes_it_from_the_list(owner_client, service):
    response = owner_client.post(url("service_delete", service.slug))

    assert response.url == url("service_list")
    assert list(owner_client.get(url("service_list")).context["services"]) == []
    assert owner_client.get(url("service_detail", service.slug)).status_code == 404


# --- logs --------------------------------------------------------------------------------
def test_service_page_shows_an_instances_logs(owner_client, service, settings):
    instance = service.deployments.get().instances.create(zone="zone-a", status="failed")
    log_dir = settings.MODELBAY_RUN_DIR / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / f"{instance.id}.log").write_text("Traceback (most recent call last):\nValueError: <bad> weights\n")

    content = owner_client.get(url("service_detail", service.slug)).content.decode()

    assert "ValueError: &lt;bad&gt; weights" in content  # escaped, shown
    assert owner_client.get(url("service_detail", service.slug) + "?logs=i-unknown").status_code == 404


def test_outsider_cannot_read_logs_through_another_service(
    outsider_client, owner_client, service, outsider_organization
):
    instance = service.deployments.get().instances.create(zone="zone-a", status="ready")
    response = outsider_client.get(url("service_detail", service.slug) + f"?logs={instance.id}")
    assert response.status_code == 404


# --- autoscaling ---------------------------------------------------------------------------
def _autoscaled(service, **bounds):
    bounds = {"min_replicas": 1, "max_replicas": 8, **bounds}
    return services.service_update(service=service, autoscaling=bounds)


def test_service_page_shows_a_fixed_count(owner_client, service):
    services.service_update(service=service, replicas=2)

    response = owner_client.get(url("service_detail", service.slug))

    content = response.content.decode()
    assert "Fixed: 2 replicas" in content
    assert 'id="autoscaler"' not in content  # nothing to show for a service never autoscaled
    form = response.context["autoscaling_form"]
    assert (form["min_replicas"].value(), form["max_replicas"].value()) == (2, 2)


def test_service_page_shows_the_autoscaling_settings_and_the_last_decisions(owner_client, service, settings):
    settings.MODELBAY_AUTOSCALE_TARGET_IN_FLIGHT = 4
    _autoscaled(service)
    for replicas in range(2, 14):  # 12 changes, each a decision: 1 -> 3, 3 -> 4, ..., 8 -> 1, ..., 5 -> 6
        services.service_autoscale(
            service_id=service.pk, replicas=replicas % 8 + 1, in_flight=2.0, mode="stable", reason=f"step <{replicas}>"
        )

    response = owner_client.get(url("service_detail", service.slug))

    content = response.content.decode()
    assert "Autoscaling: 1–8 replicas, 4 calls in flight each, scale down after 60 s" in content
    decisions = response.context["autoscaler_decisions"]
    assert len(decisions) == 10 and decisions[0].reason == "step <13>"
    assert "step &lt;13&gt;" in content and "step &lt;3&gt;" not in content  # escaped; the 10 newest
    assert f"{decisions[0].from_replicas} → {decisions[0].to_replicas}" in content


def test_autoscaled_without_decisions_says_so(owner_client, service):
    _autoscaled(service, target_in_flight=1)

    content = owner_client.get(url("service_status", service.slug)).content.decode()

    assert "1 call in flight each" in content
    assert "No change yet" in content


def test_setting_autoscaling_from_the_scale_card(owner_client, service, django_capture_on_commit_callbacks):
    data = {"min_replicas": 2, "max_replicas": 6, "target_in_flight": 10, "scale_down_delay_s": 30}
    with django_capture_on_commit_callbacks() as callbacks:
        response = owner_client.post(url("service_autoscaling", service.slug), data)

    assert response.url == url("service_detail", service.slug)
    service.refresh_from_db()
    stored = (service.replicas, service.min_replicas, service.max_replicas, service.target_in_flight)
    assert stored == (2, 2, 6, 10) and service.scale_down_delay_s == 30
    assert len(callbacks) == 1
    page = owner_client.get(response.url).content.decode()
    assert "Autoscaling Digits API between 2 and 6 replicas." in page


def test_scale_to_zero_from_the_scale_card_and_a_service_at_zero(owner_client, service):
    data = {"min_replicas": 0, "max_replicas": 3, "scale_down_delay_s": 0, "scale_to_zero_after_s": 120}
    response = owner_client.post(url("service_autoscaling", service.slug), data)

    service.refresh_from_db()
    assert (service.min_replicas, service.max_replicas, service.scale_to_zero_after_s) == (0, 3, 120)
    page = owner_client.get(response.url).content.decode()
    assert "Autoscaling Digits API between 0 and 3 replicas, to zero after 120 s without a call." in page
    assert "to zero after 120 s without a call" in page

    services.service_autoscale(service_id=service.pk, replicas=0, in_flight=0.0, mode="stable", reason="idle")
    Instance.objects.filter(deployment__service=service).delete()
    services.service_wake(service_id=service.pk)
    ColdStart.objects.update(requested_at=timezone.now() - timedelta(seconds=1))  # a start under way
    page = owner_client.get(url("service_detail", service.slug)).content.decode()
    assert "starting from zero: calls are held" in page
    status = owner_client.get(url("service_status", service.slug))
    assert status.context["polling"] is True  # the page follows the start

    # Started in 0.5 s, then idle again long enough: back at zero.
    long_ago = timezone.now() - timedelta(seconds=300)
    ColdStart.objects.update(requested_at=long_ago, ready_at=long_ago + timedelta(seconds=0.5))
    services.service_autoscale(service_id=service.pk, replicas=0, in_flight=0.0, mode="stable", reason="idle")
    content = owner_client.get(url("service_status", service.slug)).content.decode()
    assert "No instance runs: scaled to zero after 120 s without a call." in content
    assert "p50 0.50 s" in content


def test_an_empty_target_is_the_default(owner_client, service):
    data = {"min_replicas": 1, "max_replicas": 3, "target_in_flight": "", "scale_down_delay_s": 60}
    owner_client.post(url("service_autoscaling", service.slug), data)

    service.refresh_from_db()
    assert (service.max_replicas, service.target_in_flight) == (3, None)


@pytest.mark.parametrize(
    "data, field, message",
    [
        ({"min_replicas": -1, "max_replicas": 4}, "min_replicas", "min_replicas must be between 0 and"),
        ({"min_replicas": 0, "max_replicas": 4, "scale_to_zero_after_s": 1}, "scale_to_zero_after_s", "between 5 and"),
        ({"min_replicas": 5, "max_replicas": 4}, "max_replicas", "max_replicas must be between min_replicas (5)"),
        ({"min_replicas": 1, "max_replicas": 4, "target_in_flight": 1001}, "target_in_flight", "between 1 and 1000"),
        ({"min_replicas": 1, "max_replicas": 4, "scale_down_delay_s": 4000}, "scale_down_delay_s", "between 0 and 3600"),
    ],
)  # fmt: skip
def test_bad_autoscaling_is_a_form_error_and_changes_nothing(owner_client, service, data, field, message):
    response = owner_client.post(url("service_autoscaling", service.slug), {"scale_down_delay_s": 60, **data})

    assert response.status_code == 400
    assert message in response.context["autoscaling_form"].errors[field][0]
    service.refresh_from_db()
    assert (service.replicas, service.min_replicas, service.max_replicas) == (1, 1, 1)


def test_a_fixed_count_turns_autoscaling_off(owner_client, service):
    _autoscaled(service)

    owner_client.post(url("service_scale", service.slug), {"replicas": 3})

    service.refresh_from_db()
    assert (service.replicas, service.min_replicas, service.max_replicas) == (3, 3, 3)
    assert "Fixed: 3 replicas" in owner_client.get(url("service_detail", service.slug)).content.decode()


def test_outsider_can_neither_set_autoscaling_nor_see_the_decisions(
    outsider_client, service, outsider_organization, make_digits_upload
):
    _autoscaled(service)
    services.service_autoscale(service_id=service.pk, replicas=4, in_flight=20.0, mode="panic", reason="owner's burst")
    data = {"min_replicas": 1, "max_replicas": 16, "scale_down_delay_s": 0}

    assert outsider_client.post(url("service_autoscaling", service.slug), data).status_code == 404
    assert outsider_client.get(url("service_detail", service.slug)).status_code == 404
    # A service of its own under the same name shows only its own record.
    model = services.model_create(organization=outsider_organization, name="Digits", upload=make_digits_upload())
    services.service_create(organization=outsider_organization, name=service.name, model_slug=model.slug)
    content = outsider_client.get(url("service_detail", service.slug)).content.decode()
    assert "owner's burst" not in content and "owner&#x27;s burst" not in content
    service.refresh_from_db()
    assert service.max_replicas == 8


def test_the_controls_column_alone_shows_the_service_as_it_is_now(owner_client, outsider_client, service):
    services.service_update(service=service, replicas=3)

    response = owner_client.get(url("service_controls", service.slug))

    assert response.status_code == 200
    assert response.context["scale_form"]["replicas"].value() == 3
    assert 'id="service-controls"' in response.content.decode() and "data-edited" not in response.content.decode()
    assert outsider_client.get(url("service_controls", service.slug)).status_code == 404
