"""How instance states add up to a service's status."""

import pytest

from controlplane.choices import InstanceStatus as I
from controlplane.choices import ServiceStatus as S
from controlplane.models import Instance
from controlplane.reconcile import _status_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def service(api, digits_upload):
    api.post("/api/v1/models", {"name": "digits", "file": digits_upload}, format="multipart")
    api.post("/api/v1/services", {"name": "s", "model": "digits", "replicas": 2}, format="json")
    from controlplane.models import Service

    return Service.objects.get(slug="s")


def _status(service, was, states, restarts=0):
    service.status = was
    deployment = service.deployments.get()
    instances = [Instance(deployment=deployment, zone="zone-a", status=st, restarts=restarts, error="boom") for st in states]
    return _status_of(service, instances)


@pytest.mark.parametrize(
    "was, states, restarts, expected",
    [
        (S.PROVISIONING, [I.STARTING, I.STARTING], 0, S.PROVISIONING),
        (S.PROVISIONING, [I.READY, I.STARTING], 0, S.PROVISIONING),  # a deploy still coming up
        (S.PROVISIONING, [I.READY, I.READY], 0, S.READY),
        (S.READY, [I.READY, I.STARTING], 0, S.READY),  # a scale-up
        (S.READY, [I.READY, I.STARTING], 1, S.DEGRADED),  # a crashed instance restarting
        (S.READY, [I.READY, I.UNHEALTHY], 0, S.DEGRADED),
        (S.READY, [I.UNHEALTHY, I.UNHEALTHY], 0, S.DEGRADED),  # every engine out of reach: never failed
        (S.DEGRADED, [I.UNHEALTHY, I.UNHEALTHY], 0, S.DEGRADED),
        (S.PROVISIONING, [I.FAILED, I.FAILED], 0, S.FAILED),
        (S.PROVISIONING, [I.READY, I.FAILED], 0, S.DEGRADED),
    ],
)
def test_service_status_from_instances(service, was, states, restarts, expected):
    assert _status(service, was, states, restarts)[0] == expected


def test_failed_service_carries_the_instance_error(service):
    assert _status(service, S.PROVISIONING, [I.FAILED, I.FAILED]) == (S.FAILED, "boom")


def test_degraded_service_says_why(service):
    assert _status(service, S.READY, [I.READY, I.UNHEALTHY]) == (S.DEGRADED, "boom")
