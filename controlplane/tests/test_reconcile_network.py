"""Reconcile starts instances with their service's network, and starts them again when
it changes: an instance's sandbox is made when it starts."""

import itertools

import pytest

from controlplane import reconcile, services
from controlplane.backends import Inventory, RunningInstance
from controlplane.choices import InstanceStatus
from controlplane.models import Instance, Service

pytestmark = pytest.mark.django_db


class FakeBackend:
    """Records the specs it is given to start; what it started runs until stopped."""

    name = "fake"

    def __init__(self):
        self.started = []
        self.running: dict[str, RunningInstance] = {}
        self._ports = itertools.count(40000)

    def prepare(self, zone, requirements, system_packages=()):
        pass

    def start(self, spec):
        self.started.append(spec)
        instance = RunningInstance(
            spec.instance_id, f"http://127.0.0.1:{next(self._ports)}", alive=True, zone=spec.zone
        )
        self.running[spec.instance_id] = instance
        return instance

    def stop(self, instance_id):
        self.running.pop(instance_id, None)

    def list(self):
        return Inventory(self.running)

    def logs(self, instance_id, *, tail=200):
        return ""

    def resize(self, instance_id, resources):
        pass


@pytest.fixture
def backend(monkeypatch):
    """A backend whose runtimes answer every probe as ready."""
    fake = FakeBackend()
    monkeypatch.setattr(reconcile, "get_backend", lambda: fake)
    monkeypatch.setattr(reconcile, "probe", lambda endpoint, **_: reconcile.Probe(ready=True))
    return fake


@pytest.fixture
def service(api, digits_upload):
    api.post("/api/v1/models", {"name": "digits", "file": digits_upload}, format="multipart")
    assert api.post("/api/v1/services", {"name": "s", "model": "digits"}, format="json").status_code == 202
    return Service.objects.get(slug="s")


def _ready_instance(service) -> Instance:
    reconcile.service_reconcile(service.pk)  # starts it
    reconcile.service_reconcile(service.pk)  # finds it ready
    instance = Instance.objects.get(deployment__service=service)
    assert instance.status == InstanceStatus.READY
    return instance


def test_an_instance_starts_with_its_services_network(backend, service):
    instance = _ready_instance(service)

    assert [spec.network for spec in backend.started] == ["none"]
    assert instance.network == "none"


def test_an_instance_starts_with_egress_when_the_service_asks(backend, service):
    services.service_update(service=service, network="egress")

    instance = _ready_instance(service)

    assert [spec.network for spec in backend.started] == ["egress"]
    assert instance.network == "egress"


def test_a_running_instance_is_started_again_when_the_network_changes(backend, service):
    before = _ready_instance(service)

    services.service_update(service=service, network="egress")
    reconcile.service_reconcile(service.pk)

    after = Instance.objects.get(deployment__service=service)
    assert after.id == before.id  # replaced under the same id
    assert [spec.network for spec in backend.started] == ["none", "egress"]
    assert (after.network, after.status) == ("egress", InstanceStatus.STARTING)
    assert after.credential != before.credential
    assert after.restarts == 0  # not a fault

    reconcile.service_reconcile(service.pk)

    assert Instance.objects.get(pk=after.pk).status == InstanceStatus.READY
    assert len(backend.started) == 2  # started once for the change, not at every pass


def test_back_to_none_starts_it_again_with_no_network(backend, service):
    services.service_update(service=service, network="egress")
    _ready_instance(service)

    services.service_update(service=service, network="none")
    reconcile.service_reconcile(service.pk)

    assert [spec.network for spec in backend.started] == ["egress", "none"]
    assert Instance.objects.get(deployment__service=service).network == "none"


def test_other_changes_do_not_start_the_instance_again(backend, service):
    _ready_instance(service)

    services.service_update(service=service, resources={"cpu": 2})
    reconcile.service_reconcile(service.pk)

    assert len(backend.started) == 1


def test_replicas_are_started_again_one_at_a_time(backend, service):
    """The others keep answering while one is on its way back (network or limits that the
    backend cannot change in place)."""
    services.service_update(service=service, replicas=2)
    reconcile.service_reconcile(service.pk)
    reconcile.service_reconcile(service.pk)
    assert Instance.objects.filter(deployment__service=service, status=InstanceStatus.READY).count() == 2

    services.service_update(service=service, network="egress")
    reconcile.service_reconcile(service.pk)

    statuses = sorted(Instance.objects.filter(deployment__service=service).values_list("network", "status"))
    assert statuses == [("egress", InstanceStatus.STARTING), ("none", InstanceStatus.READY)]
    reconcile.service_reconcile(service.pk)  # the first is ready: the second goes
    reconcile.service_reconcile(service.pk)
    assert set(Instance.objects.filter(deployment__service=service).values_list("network", "status")) == {
        ("egress", InstanceStatus.READY)
    }


def test_limits_the_backend_cannot_change_in_place_start_the_instance_again(backend, service, monkeypatch):
    before = _ready_instance(service)
    monkeypatch.setattr(backend, "resize", lambda instance_id, resources: False)

    services.service_update(service=service, resources={"memory_mb": 512})
    reconcile.service_reconcile(service.pk)

    after = Instance.objects.get(pk=before.pk)
    assert backend.started[-1].resources.memory_mb == 512 and len(backend.started) == 2
    assert (after.resources["memory_mb"], after.status) == (512, InstanceStatus.STARTING)
