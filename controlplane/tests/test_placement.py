"""Where reconcile places instances, on a backend whose zones may be lost: replacements only
for the instances of a zone whose engine does not answer, the spread back when it returns
without ever fewer ready instances than replicas, scale-downs drained from the most used
zone, and the zones' health recorded."""

from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane import reconcile, services
from controlplane.backends import BackendError, Inventory
from controlplane.choices import InstanceStatus, ServiceStatus
from controlplane.models import Instance, Service, Zone
from controlplane.tests.test_reconcile_network import FakeBackend

pytestmark = pytest.mark.django_db

LOST = "The Docker engine of zone-b cannot be reached: connection refused"


class ZonedBackend(FakeBackend):
    """A fake backend whose zones' engines can be lost (``lost``: zone -> reason) and whose
    runtimes may still be loading their model (``loading``: instance ids)."""

    def __init__(self):
        super().__init__()
        self.lost: dict[str, str] = {}
        self.loading: set[str] = set()
        self.stopped: list[str] = []

    def start(self, spec):
        if spec.zone in self.lost:
            raise BackendError(self.lost[spec.zone])
        return super().start(spec)

    def stop(self, instance_id):
        self.stopped.append(instance_id)
        super().stop(instance_id)

    def list(self):
        inventory = Inventory({i: r for i, r in self.running.items() if r.zone not in self.lost})
        inventory.unreachable = dict(self.lost)
        return inventory

    def lose(self, zone: str) -> None:
        """The zone's engine goes, with everything it ran."""
        self.lost[zone] = LOST
        self.running = {i: r for i, r in self.running.items() if r.zone != zone}


@pytest.fixture
def backend(monkeypatch, settings):
    settings.MODELBAY_ZONES = {"zone-a": "", "zone-b": ""}
    settings.MODELBAY_DRAIN_S = 60
    fake = ZonedBackend()
    monkeypatch.setattr(reconcile, "get_backend", lambda: fake)
    monkeypatch.setattr(
        reconcile, "probe", lambda endpoint, instance_id, credential: reconcile.Probe(instance_id not in fake.loading)
    )
    return fake


@pytest.fixture
def service(api, digits_upload, backend):
    """Two replicas, one in each zone, both ready."""
    api.post("/api/v1/models", {"name": "digits", "file": digits_upload}, format="multipart")
    response = api.post("/api/v1/services", {"name": "s", "model": "digits", "replicas": 2}, format="json")
    assert response.status_code == 202
    service = Service.objects.get(slug="s")
    _passes(service, 2)
    assert _placement(service) == {("zone-a", "ready"), ("zone-b", "ready")}
    return service


def _passes(service: Service, count: int = 1) -> None:
    for _ in range(count):
        reconcile.service_reconcile(service.pk)


def _instances(service: Service) -> list[Instance]:
    return list(Instance.objects.filter(deployment__service=service).order_by("created_at"))


def _placement(service: Service) -> set[tuple[str, str]]:
    return {(i.zone, i.status) for i in _instances(service)}


def _ready(service: Service) -> int:
    return sum(i.status == InstanceStatus.READY for i in _instances(service))


def _end_drains(service: Service) -> None:
    """As if the drain time had passed."""
    past = timezone.now() - timedelta(seconds=1)
    Instance.objects.filter(deployment__service=service, status=InstanceStatus.DRAINING).update(drain_until=past)


def test_the_instances_of_a_lost_zone_are_replaced_in_the_zones_that_answer(backend, service):
    backend.lose("zone-b")
    _passes(service, 2)

    instances = _instances(service)
    assert [(i.zone, i.status) for i in instances] == [
        ("zone-a", InstanceStatus.READY),
        ("zone-b", InstanceStatus.UNHEALTHY),  # waits for its engine
        ("zone-a", InstanceStatus.READY),  # its replacement
    ]
    service.refresh_from_db()
    assert service.status == ServiceStatus.DEGRADED  # capacity kept, a zone lost all the same
    assert service.error.startswith("Zone zone-b is lost") and LOST in service.error


def test_an_unhealthy_instance_in_a_zone_that_answers_is_restarted_in_place_not_replaced(backend, service):
    zone_b = next(i for i in _instances(service) if i.zone == "zone-b")
    backend.loading.add(zone_b.id)
    _passes(service, 2)

    assert _placement(service) == {("zone-a", InstanceStatus.READY), ("zone-b", InstanceStatus.UNHEALTHY)}
    assert len(_instances(service)) == 2


def test_nothing_is_started_while_no_zone_answers(backend, service):
    backend.lose("zone-a")
    backend.lose("zone-b")
    _passes(service, 3)

    assert _placement(service) == {("zone-a", InstanceStatus.UNHEALTHY), ("zone-b", InstanceStatus.UNHEALTHY)}
    assert len(_instances(service)) == 2


def test_when_the_zone_returns_the_spread_comes_back_never_below_replicas_ready(backend, service):
    zone_b = next(i for i in _instances(service) if i.zone == "zone-b")
    backend.lose("zone-b")
    _passes(service, 2)
    replacement = _instances(service)[-1]

    backend.lost.clear()
    backend.loading.add(zone_b.id)  # its model takes a while to load again
    for _ in range(3):
        _passes(service)
        assert _ready(service) == 2 and not backend.stopped
    assert Instance.objects.get(pk=zone_b.pk).status == InstanceStatus.STARTING

    backend.loading.clear()
    _passes(service)
    assert Instance.objects.get(pk=replacement.pk).status == InstanceStatus.DRAINING
    assert _ready(service) == 2
    assert reconcile.service_reconcile(service.pk) is True  # still converging: a drain to finish
    assert not backend.stopped

    _end_drains(service)
    assert reconcile.service_reconcile(service.pk) is False
    assert backend.stopped == [replacement.id]
    assert _placement(service) == {("zone-a", InstanceStatus.READY), ("zone-b", InstanceStatus.READY)}
    service.refresh_from_db()
    assert (service.status, service.error) == (ServiceStatus.READY, None)


def test_a_scale_down_drains_the_newest_instance_of_the_most_used_zone(backend, service):
    services.service_update(service=service, replicas=3)
    _passes(service, 2)
    first, second, third = _instances(service)
    assert [i.zone for i in (first, second, third)] == ["zone-a", "zone-b", "zone-a"]

    services.service_update(service=service, replicas=2)
    _passes(service)

    assert Instance.objects.get(pk=third.pk).status == InstanceStatus.DRAINING
    assert _ready(service) == 2 and not backend.stopped  # calls in flight are answered first
    service.refresh_from_db()
    assert service.status == ServiceStatus.READY

    _end_drains(service)
    _passes(service)
    assert backend.stopped == [third.id]
    assert [i.pk for i in _instances(service)] == [first.pk, second.pk]


def test_a_scale_down_takes_an_instance_that_is_not_ready_before_one_that_is(backend, service):
    services.service_update(service=service, replicas=4)
    _passes(service)  # two more start
    backend.loading.update(i.id for i in _instances(service)[2:])
    _passes(service)
    services.service_update(service=service, replicas=2)
    _passes(service)

    draining = [i for i in _instances(service) if i.status == InstanceStatus.DRAINING]
    assert {i.status for i in _instances(service) if i not in draining} == {InstanceStatus.READY}
    assert len(draining) == 2 and {i.zone for i in draining} == {"zone-a", "zone-b"}


def test_a_draining_instance_is_not_taken_for_an_orphan(backend, service, settings):
    settings.MODELBAY_ORPHAN_GRACE_S = 0
    services.service_update(service=service, replicas=1)
    _passes(service)
    (draining,) = [i for i in _instances(service) if i.status == InstanceStatus.DRAINING]

    assert reconcile.remove_orphans(backend.list()) == []
    assert draining.id in backend.running


def test_every_pass_over_all_services_records_the_zones_health(backend, service):
    reconcile.reconcile_all()
    assert [(z.name, z.reachable, z.reason) for z in Zone.objects.all()] == [("zone-a", True, ""), ("zone-b", True, "")]
    since = Zone.objects.get(name="zone-b").changed_at

    backend.lose("zone-b")
    reconcile.reconcile_all()
    lost = Zone.objects.get(name="zone-b")
    assert (lost.reachable, lost.reason) == (False, LOST) and lost.changed_at > since

    reconcile.reconcile_all()
    again = Zone.objects.get(name="zone-b")
    assert again.changed_at == lost.changed_at and again.checked_at > lost.checked_at  # no change, a new look

    backend.lost.clear()
    reconcile.reconcile_all()
    back = Zone.objects.get(name="zone-b")
    assert (back.reachable, back.reason) == (True, "") and back.changed_at > lost.changed_at
