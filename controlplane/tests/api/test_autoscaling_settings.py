"""A service's autoscaling settings (min/max replicas, target in flight, scale-down delay),
asked for on POST and PATCH, shown on GET; fixed ``replicas`` as the case min = max; the
autoscaler's way in (``services.service_autoscale``) and the record of its decisions
(``GET /api/v1/services/{slug}/autoscaler``). The autoscaler itself:
controlplane/tests/test_autoscaler.py."""

import importlib
from datetime import timedelta

import pytest
import yaml
from django.apps import apps
from django.utils import timezone

from controlplane import selectors, services
from controlplane.models import AutoscalerDecision, ColdStart, Service

pytestmark = pytest.mark.django_db

AUTOSCALING = {
    "min_replicas": 2, "max_replicas": 8, "target_in_flight": 6, "scale_down_delay_s": 120, "scale_to_zero_after_s": 300,
}  # fmt: skip


def _create(api, **fields):
    return api.post("/api/v1/services", {"name": "s", "model": "digits", **fields}, format="json")


def _stored(slug="s") -> tuple:
    service = Service.objects.get(slug=slug, deleted_at__isnull=True)
    return (service.replicas, service.min_replicas, service.max_replicas, service.target_in_flight,
            service.scale_down_delay_s)  # fmt: skip


@pytest.fixture
def autoscaled(api, digits):
    """Service "s", autoscaled from 1 to 8 replicas, at 1."""
    response = _create(api, autoscaling={"min_replicas": 1, "max_replicas": 8})
    assert response.status_code == 202, response.content
    return Service.objects.get(slug="s")


def _autoscale(service, replicas, **decision):
    decision = {"in_flight": 12.5, "mode": "stable", "reason": "12.5 calls in flight on average", **decision}
    return services.service_autoscale(service_id=service.pk, replicas=replicas, **decision)


# --- create --------------------------------------------------------------------------------
def test_a_service_is_fixed_at_one_replica_by_default(api, digits, settings):
    settings.MODELBAY_AUTOSCALE_TARGET_IN_FLIGHT = 4

    body = _create(api).json()

    assert body["replicas"]["desired"] == 1
    assert body["autoscaling"] == {
        "enabled": False, "min_replicas": 1, "max_replicas": 1, "target_in_flight": 4, "scale_down_delay_s": 60,
        "scale_to_zero_after_s": 300,
    }  # fmt: skip
    assert _stored() == (1, 1, 1, None, 60)


def test_fixed_replicas_are_min_and_max(api, digits):
    body = _create(api, replicas=3).json()

    assert body["replicas"]["desired"] == 3
    assert body["autoscaling"]["enabled"] is False
    assert (body["autoscaling"]["min_replicas"], body["autoscaling"]["max_replicas"]) == (3, 3)


def test_create_autoscaled_starts_at_min_and_enqueues_provisioning(api, digits, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = _create(api, autoscaling=AUTOSCALING)

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["replicas"]["desired"] == 2
    assert body["autoscaling"] == {"enabled": True, **AUTOSCALING}
    assert _stored() == (2, 2, 8, 6, 120)
    assert len(callbacks) == 1
    assert api.get("/api/v1/services/s").json()["autoscaling"] == body["autoscaling"]


def test_settings_left_out_get_their_defaults(api, digits, settings):
    settings.MODELBAY_AUTOSCALE_TARGET_IN_FLIGHT = 7

    body = _create(api, autoscaling={"max_replicas": 5}).json()

    assert body["autoscaling"] == {
        "enabled": True, "min_replicas": 1, "max_replicas": 5, "target_in_flight": 7, "scale_down_delay_s": 60,
        "scale_to_zero_after_s": 300,
    }  # fmt: skip
    assert Service.objects.get(slug="s").target_in_flight is None  # follows the default if it changes


def test_replicas_and_autoscaling_together_answer_400(api, digits):
    response = _create(api, replicas=2, autoscaling={"max_replicas": 4})

    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid_request"
    assert list(body["fields"]) == ["autoscaling"]
    assert "not both" in body["detail"]
    assert not Service.objects.exists()


@pytest.mark.parametrize(
    "autoscaling, field, message",
    [
        ({"min_replicas": -1}, "min_replicas", "min_replicas must be between 0 and 16."),
        ({"min_replicas": 17, "max_replicas": 17}, "min_replicas", "min_replicas must be between 0 and 16."),
        ({"min_replicas": 4, "max_replicas": 3}, "max_replicas", "max_replicas must be between min_replicas (4) and 16."),
        ({"min_replicas": 3}, "max_replicas", "max_replicas must be between min_replicas (3) and 16."),
        ({"max_replicas": 17}, "max_replicas", "max_replicas must be between min_replicas (1) and 16."),
        ({"min_replicas": 0, "max_replicas": 0}, "max_replicas", "max_replicas must be between 1 and 16."),
        ({"max_replicas": 4, "target_in_flight": 0}, "target_in_flight", "target_in_flight must be between 1 and 1000"),
        ({"max_replicas": 4, "target_in_flight": 1001}, "target_in_flight", "target_in_flight must be between 1 and 1000"),
        ({"max_replicas": 4, "scale_down_delay_s": -1}, "scale_down_delay_s", "scale_down_delay_s must be between 0 and 3600 seconds."),
        ({"max_replicas": 4, "scale_down_delay_s": 3601}, "scale_down_delay_s", "scale_down_delay_s must be between 0 and 3600 seconds."),
        ({"max_replicas": "many"}, "max_replicas", "A valid integer is required."),
        ({"max_replicas": True}, "max_replicas", "A valid integer is required."),
        ({"max_replicas": 4, "target": 2}, "target", "Unknown autoscaling setting; give min_replicas, max_replicas, target_in_flight, scale_down_delay_s, scale_to_zero_after_s."),
        ({"max_replicas": 4, "scale_to_zero_after_s": 4}, "scale_to_zero_after_s", "scale_to_zero_after_s must be between 5 and 604800 seconds."),
        ({"max_replicas": 4, "scale_to_zero_after_s": 604801}, "scale_to_zero_after_s", "scale_to_zero_after_s must be between 5 and 604800 seconds."),
    ],
)  # fmt: skip
def test_bad_settings_answer_400_naming_the_setting(api, digits, settings, autoscaling, field, message):
    settings.MODELBAY_MAX_REPLICAS = 16

    response = _create(api, autoscaling=autoscaling)

    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid_request"
    assert body["fields"][f"autoscaling.{field}"][0].startswith(message), body
    assert not Service.objects.exists()


def test_autoscaling_must_be_an_object(api, digits):
    response = _create(api, autoscaling=4)

    assert response.status_code == 400
    assert "autoscaling" in response.json()["fields"]


def test_a_null_target_is_the_default(api, digits):
    assert _create(api, autoscaling={"max_replicas": 3, "target_in_flight": None}).status_code == 202
    assert _stored() == (1, 1, 3, None, 60)


# --- update --------------------------------------------------------------------------------
def test_patch_autoscaling_merges_with_the_current_settings(api, digits, django_capture_on_commit_callbacks):
    _create(api, replicas=2)

    with django_capture_on_commit_callbacks() as callbacks:
        response = api.patch("/api/v1/services/s", {"autoscaling": {"max_replicas": 6}}, format="json")

    assert response.status_code == 202, response.content
    assert response.json()["autoscaling"]["enabled"] is True
    assert _stored() == (2, 2, 6, None, 60)  # min stays at the fixed count it had
    assert len(callbacks) == 1  # reconcile

    api.patch("/api/v1/services/s", {"autoscaling": {"target_in_flight": 10, "scale_down_delay_s": 0}}, format="json")
    assert _stored() == (2, 2, 6, 10, 0)
    api.patch("/api/v1/services/s", {"autoscaling": {"target_in_flight": None}}, format="json")
    assert _stored() == (2, 2, 6, None, 0)


def test_patch_keeps_the_desired_count_within_the_new_bounds(api, autoscaled):
    assert _autoscale(autoscaled, 6)

    api.patch("/api/v1/services/s", {"autoscaling": {"max_replicas": 4}}, format="json")
    assert _stored()[:3] == (4, 1, 4)

    api.patch("/api/v1/services/s", {"autoscaling": {"min_replicas": 5, "max_replicas": 8}}, format="json")
    assert _stored()[:3] == (5, 5, 8)


def test_patch_replicas_turns_autoscaling_off(api, autoscaled):
    response = api.patch("/api/v1/services/s", {"replicas": 3}, format="json")

    assert response.status_code == 202
    assert response.json()["replicas"]["desired"] == 3
    assert response.json()["autoscaling"]["enabled"] is False
    assert _stored()[:3] == (3, 3, 3)
    assert not _autoscale(autoscaled, 5)


def test_patch_min_equal_to_max_is_fixed(api, autoscaled):
    response = api.patch("/api/v1/services/s", {"autoscaling": {"min_replicas": 2, "max_replicas": 2}}, format="json")

    assert response.json()["autoscaling"]["enabled"] is False
    assert _stored()[:3] == (2, 2, 2)


def test_fixed_replicas_scale_as_before(api, digits, django_capture_on_commit_callbacks):
    _create(api)

    with django_capture_on_commit_callbacks() as callbacks:
        response = api.patch("/api/v1/services/s", {"replicas": 3}, format="json")

    assert response.status_code == 202
    assert response.json()["replicas"]["desired"] == 3
    assert _stored()[:3] == (3, 3, 3)
    assert len(callbacks) == 1
    assert api.patch("/api/v1/services/s", {"replicas": 0}, format="json").status_code == 400


def test_patch_with_replicas_and_autoscaling_answers_400_and_changes_nothing(api, autoscaled):
    response = api.patch("/api/v1/services/s", {"replicas": 2, "autoscaling": {"max_replicas": 4}}, format="json")

    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["autoscaling"]
    assert _stored()[:3] == (1, 1, 8)


def test_patch_that_leaves_min_above_max_answers_400_and_changes_nothing(api, autoscaled):
    response = api.patch("/api/v1/services/s", {"autoscaling": {"min_replicas": 9}}, format="json")

    assert response.status_code == 400
    assert response.json()["fields"] == {
        "autoscaling.max_replicas": ["max_replicas must be between min_replicas (9) and 16."]
    }
    assert _stored()[:3] == (1, 1, 8)


def test_an_empty_patch_names_autoscaling_among_what_to_give(api, autoscaled):
    response = api.patch("/api/v1/services/s", {}, format="json")

    assert response.status_code == 400
    assert response.json()["detail"] == "Give replicas, autoscaling, resources, network and/or timeout_s."


def test_another_tenant_cannot_change_the_settings(api, outsider_api, autoscaled):
    response = outsider_api.patch("/api/v1/services/s", {"autoscaling": {"max_replicas": 2}}, format="json")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert _stored()[:3] == (1, 1, 8)


# --- the autoscaler's way in ----------------------------------------------------------------
def test_service_autoscale_sets_the_replicas_records_the_decision_and_reconciles(
    api, autoscaled, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        changed = _autoscale(autoscaled, 3, in_flight=11.5, mode="panic", reason="a burst")

    assert changed is True
    assert _stored()[0] == 3
    decision = AutoscalerDecision.objects.get()
    assert (decision.service_id, decision.from_replicas, decision.to_replicas) == (autoscaled.pk, 1, 3)
    assert (decision.in_flight, decision.mode, decision.reason) == (11.5, "panic", "a burst")
    assert len(callbacks) == 1
    assert api.get("/api/v1/services/s").json()["replicas"]["desired"] == 3


def test_service_autoscale_keeps_within_min_and_max(api, digits):
    _create(api, autoscaling={"min_replicas": 2, "max_replicas": 5})
    service = Service.objects.get(slug="s")

    assert _autoscale(service, 40)
    assert _stored()[0] == 5
    assert _autoscale(service, 0)
    assert _stored()[0] == 2
    assert list(AutoscalerDecision.objects.values_list("from_replicas", "to_replicas")) == [(5, 2), (2, 5)]


def test_service_autoscale_writes_nothing_when_the_count_would_not_change(autoscaled):
    assert not _autoscale(autoscaled, 1)
    assert not _autoscale(autoscaled, 0)  # clamped to min_replicas 1: the count it has
    assert not AutoscalerDecision.objects.exists()


def test_service_autoscale_refuses_a_fixed_service(api, digits):
    _create(api, replicas=2)

    assert not _autoscale(Service.objects.get(slug="s"), 4)
    assert _stored()[0] == 2
    assert not AutoscalerDecision.objects.exists()


def test_service_autoscale_refuses_a_deleted_or_missing_service(api, autoscaled):
    assert api.delete("/api/v1/services/s").status_code == 202

    assert not _autoscale(autoscaled, 4)
    assert Service.objects.get(pk=autoscaled.pk).replicas == 1
    assert not services.service_autoscale(
        service_id=autoscaled.pk + 1000, replicas=4, in_flight=1, mode="stable", reason=""
    )
    assert not AutoscalerDecision.objects.exists()


def test_service_autoscale_refuses_an_unknown_mode(autoscaled):
    with pytest.raises(ValueError):
        _autoscale(autoscaled, 4, mode="eager")
    assert not AutoscalerDecision.objects.exists()


# --- decisions ----------------------------------------------------------------------------
def test_decisions_newest_first(api, autoscaled):
    _autoscale(autoscaled, 4, in_flight=15.0, mode="panic", reason="a burst")
    _autoscale(autoscaled, 2, in_flight=6.0, reason="the burst is over")

    response = api.get("/api/v1/services/s/autoscaler")

    assert response.status_code == 200
    decisions = response.json()["decisions"]
    assert [{k: v for k, v in d.items() if k != "at"} for d in decisions] == [
        {"from_replicas": 4, "to_replicas": 2, "in_flight": 6.0, "mode": "stable", "reason": "the burst is over"},
        {"from_replicas": 1, "to_replicas": 4, "in_flight": 15.0, "mode": "panic", "reason": "a burst"},
    ]
    assert decisions[0]["at"] >= decisions[1]["at"]


def test_at_most_fifty_decisions(api, autoscaled):
    now = timezone.now()
    AutoscalerDecision.objects.bulk_create(
        AutoscalerDecision(service=autoscaled, from_replicas=1, to_replicas=2, in_flight=i, mode="stable", reason="")
        for i in range(60)
    )
    # auto_now_add set one time for all: the newest is the last made.
    AutoscalerDecision.objects.filter(in_flight=59).update(at=now + timedelta(seconds=1))

    decisions = api.get("/api/v1/services/s/autoscaler").json()["decisions"]

    assert len(decisions) == 50
    assert decisions[0]["in_flight"] == 59


def test_a_service_never_scaled_has_no_decisions(api, digits):
    _create(api)

    assert api.get("/api/v1/services/s/autoscaler").json() == {"decisions": [], "cold_starts": []}


def test_another_tenant_gets_404_for_the_decisions(api, outsider_api, autoscaled):
    _autoscale(autoscaled, 4)

    for slug in ["s", "nope"]:
        response = outsider_api.get(f"/api/v1/services/{slug}/autoscaler")
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
    assert api.get("/api/v1/services/nope/autoscaler").status_code == 404


def test_another_tenants_service_of_the_same_name_shows_only_its_own_decisions(
    api, outsider_api, autoscaled, digits_model
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("digits.onnx", digits_model[0].read_bytes())
    outsider_api.post("/api/v1/models", {"name": "digits", "file": upload}, format="multipart")
    assert _create(outsider_api, autoscaling={"max_replicas": 3}).status_code == 202
    _autoscale(autoscaled, 4)

    assert outsider_api.get("/api/v1/services/s/autoscaler").json() == {"decisions": [], "cold_starts": []}
    assert len(api.get("/api/v1/services/s/autoscaler").json()["decisions"]) == 1


def test_deleting_a_service_deletes_its_decisions(autoscaled):
    _autoscale(autoscaled, 4)

    autoscaled.delete()

    assert not AutoscalerDecision.objects.exists()


# --- existing services, the schema ------------------------------------------------------------
def test_the_migration_fixes_existing_services_at_their_replicas(api, digits):
    _create(api)
    Service.objects.update(replicas=3)  # as a service was before the migration: min = max = the defaults
    migration = importlib.import_module("controlplane.migrations.0011_service_autoscaling")

    migration.fixed_at_their_replicas(apps, schema_editor=None)

    assert _stored() == (3, 3, 3, None, 60)


def test_the_schema_describes_the_settings_and_the_decisions(client):
    schema = yaml.safe_load(client.get("/api/schema/").content)

    assert "get" in schema["paths"]["/api/v1/services/{slug}/autoscaler"]
    schemas = schema["components"]["schemas"]
    for name in ["ServiceCreateRequest", "PatchedServiceUpdateRequest"]:
        assert schemas[name]["properties"]["autoscaling"]["allOf"] == [
            {"$ref": "#/components/schemas/AutoscalingRequest"}
        ]
    assert set(schemas["AutoscalingRequest"]["properties"]) == set(AUTOSCALING)
    assert schemas["AutoscalingRequest"]["properties"]["target_in_flight"]["nullable"] is True
    assert set(schemas["AutoscalingState"]["properties"]) == {"enabled", *AUTOSCALING}
    assert set(schemas["AutoscalerDecision"]["properties"]) == {
        "at", "from_replicas", "to_replicas", "in_flight", "mode", "reason"
    }  # fmt: skip


# --- scale to zero --------------------------------------------------------------------------
@pytest.fixture
def to_zero(api, digits):
    """Service "s", from 0 to 4 replicas, at 1 (a new service starts with one, to load its model)."""
    response = _create(api, autoscaling={"min_replicas": 0, "max_replicas": 4, "scale_to_zero_after_s": 30})
    assert response.status_code == 202, response.content
    return Service.objects.get(slug="s")


def test_min_zero_is_accepted_and_a_new_service_starts_with_one(api, to_zero):
    body = api.get("/api/v1/services/s").json()
    assert body["autoscaling"] == {
        "enabled": True, "min_replicas": 0, "max_replicas": 4, "target_in_flight": 4, "scale_down_delay_s": 60,
        "scale_to_zero_after_s": 30,
    }  # fmt: skip
    assert body["replicas"] == {"desired": 1, "ready": 0, "by_zone": {}}
    assert body["cold_starts"] == {
        "count": 0, "starting": False, "last_at": None, "last_s": None, "p50_s": None, "p95_s": None,
    }  # fmt: skip


def test_the_autoscaler_takes_a_service_to_zero(to_zero):
    assert _autoscale(to_zero, 0, in_flight=0.0, reason="No call for 30 s")
    assert Service.objects.get(pk=to_zero.pk).replicas == 0


def test_a_call_wakes_a_service_at_zero_once(api, to_zero, django_capture_on_commit_callbacks):
    _autoscale(to_zero, 0, in_flight=0.0)

    with django_capture_on_commit_callbacks() as callbacks:
        assert services.service_wake(service_id=to_zero.pk) is True
    assert services.service_wake(service_id=to_zero.pk) is False  # awake already: another call woke it

    assert Service.objects.get(pk=to_zero.pk).replicas == 1
    assert len(callbacks) == 1  # provisioning enqueued
    newest = api.get("/api/v1/services/s/autoscaler").json()
    assert (newest["decisions"][0]["from_replicas"], newest["decisions"][0]["to_replicas"]) == (0, 1)
    assert newest["decisions"][0]["mode"] == "cold_start"
    assert [start["ready_at"] for start in newest["cold_starts"]] == [None]
    assert api.get("/api/v1/services/s").json()["cold_starts"]["starting"] is True


def test_the_autoscaler_does_not_undo_a_wake_it_did_not_see(to_zero):
    _autoscale(to_zero, 0, in_flight=0.0)
    services.service_wake(service_id=to_zero.pk)

    assert not _autoscale(to_zero, 0, in_flight=0.0)  # its windows predate the call
    assert Service.objects.get(pk=to_zero.pk).replicas == 1


def test_a_service_not_scaled_to_zero_is_never_woken(autoscaled):
    assert services.service_wake(service_id=autoscaled.pk) is False
    assert not autoscaled.cold_starts.exists()


def test_cold_start_figures_on_the_service(api, to_zero):
    now = timezone.now()
    for seconds in (0.4, 0.6, 2.0):
        ColdStart.objects.create(
            service=to_zero, requested_at=now - timedelta(seconds=60), ready_at=now - timedelta(seconds=60 - seconds)
        )
    figures = api.get("/api/v1/services/s").json()["cold_starts"]
    assert (figures["count"], figures["starting"], figures["p50_s"], figures["p95_s"]) == (3, False, 0.6, 2.0)


def test_another_tenant_cannot_see_the_cold_starts(outsider_api, to_zero):
    services.service_wake(service_id=to_zero.pk)
    assert outsider_api.get("/api/v1/services/s/autoscaler").status_code == 404


def test_the_list_gives_each_service_its_own_cold_starts_in_a_fixed_number_of_queries(
    api, to_zero, django_assert_max_num_queries, monkeypatch
):
    monkeypatch.setattr(selectors, "COLD_STARTS_SUMMED", 3)  # "s" has more: its count is one more query
    now = timezone.now()
    for seconds in (0.4, 0.6, 2.0, 3.0):
        ColdStart.objects.create(
            service=to_zero, requested_at=now - timedelta(seconds=60), ready_at=now - timedelta(seconds=60 - seconds)
        )
    for slug in ("t", "u"):
        assert _create(api, name=slug, slug=slug).status_code == 202
    ColdStart.objects.create(service=Service.objects.get(slug="t"), requested_at=now)  # under way

    with django_assert_max_num_queries(8):  # the key, the services and their prefetches, the cold starts
        listed = {service["slug"]: service["cold_starts"] for service in api.get("/api/v1/services").json()}

    assert listed == {slug: api.get(f"/api/v1/services/{slug}").json()["cold_starts"] for slug in ("s", "t", "u")}
    assert (listed["s"]["count"], listed["t"]["starting"], listed["u"]["count"]) == (4, True, 0)
