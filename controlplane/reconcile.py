"""Make what runs match what is desired.

Desired state is in the database (services, deployments, their replicas); actual state
is what the runtime backend reports. One pass over a service starts what is missing,
restarts what died or was started with another network than the service's now, promotes
instances that became ready, fails those whose model cannot load, and sets the service's
status. Passes are safe to run twice and from several workers: each holds the service's
row lock.
"""

import json
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from controlplane import events, packages, resources
from controlplane.backends import BackendError, InstanceSpec, Inventory, RunningInstance, get_backend
from controlplane.choices import LIVE_INSTANCE_STATUSES, OWNED_INSTANCE_STATUSES, InstanceStatus, ServiceStatus
from controlplane.models import ColdStart, Deployment, Instance, Service, new_credential
from controlplane.zones import zone_health_record
from modelbay.core import generation
from runtime.client import ConnectFailed, Dropped, TimedOut, UpstreamPool, WrongInstance, auth_header

logger = logging.getLogger(__name__)


_probes = UpstreamPool(connect_timeout=0.5)


@dataclass(frozen=True)
class Probe:
    ready: bool
    error: str | None = None  # the runtime's own message when its model failed to load
    # Another runtime answered at the endpoint, or the runtime refused the credential.
    wrong: bool = False


def probe(endpoint: str, *, instance_id: str, credential: str) -> Probe:
    """Ask an instance's runtime whether its model is loaded, with the instance's
    credential; only an answer that names the instance counts."""
    try:
        reply = _probes.request(
            endpoint,
            "GET",
            "/v2/health/ready",
            body=None,
            headers={},
            timeout=1.0,
            auth=auth_header(credential),
            instance=instance_id.encode(),
        )
    except (ConnectFailed, Dropped, TimedOut):
        return Probe(ready=False)
    except WrongInstance:
        return Probe(ready=False, wrong=True)
    if reply.status == 401:
        return Probe(ready=False, wrong=True)
    if reply.status == 200:
        return Probe(ready=True)
    try:
        error = json.loads(reply.body).get("error")
    except (ValueError, AttributeError):
        error = None
    return Probe(ready=False, error=error)


# --- one instance -------------------------------------------------------------------
def _spec(instance: Instance) -> InstanceSpec:
    deployment = instance.deployment
    version = deployment.model_version
    service = deployment.service
    return InstanceSpec(
        instance_id=instance.id,
        organization=service.organization.slug,
        service=service.slug,
        model_version=version.version,
        zone=instance.zone,
        model_dir=packages.unpacked_path(version.sha256, artifact_root=settings.MODELBAY_ARTIFACT_ROOT),
        resources=resources.effective(service.resources),
        requirements=tuple(version.manifest.get("requirements") or ()),
        system_packages=tuple(version.manifest.get("system_packages") or ()),
        network=service.network,
        credential=instance.credential,
    )


def _start(instance: Instance) -> None:
    # A new credential at every start: one a runtime saw before (or a runtime that got
    # its port later was sent by a stale gateway) is worth nothing afterwards.
    instance.credential = new_credential()
    spec = _spec(instance)
    try:
        running = get_backend().start(spec)
    except BackendError as error:
        if error.permanent:
            _fail(instance, str(error))
        else:
            _unreachable(instance, str(error))
        return
    instance.status = InstanceStatus.STARTING
    instance.started_at = timezone.now()
    instance.ready_at = None
    instance.endpoint = running.endpoint
    instance.resources = spec.resources.as_dict()
    instance.network = spec.network
    instance.error = None
    instance.save()


def _unreachable(instance: Instance, reason: str) -> None:
    """The engine that runs (or should run) the instance does not answer: not the model's fault.

    The instance leaves the routing table and is started again once its engine answers;
    the service is degraded meanwhile, never failed.
    """
    if (instance.status, instance.error) != (InstanceStatus.UNHEALTHY, reason):
        logger.warning("instance %s: %s", instance.id, reason)
        instance.status, instance.error = InstanceStatus.UNHEALTHY, reason
        instance.save()


def _fail(instance: Instance, error: str) -> None:
    instance.status = InstanceStatus.FAILED
    instance.error = error
    instance.save()
    get_backend().stop(instance.id)


MAX_FAILED_STARTS = 3


def _died_message(instance: Instance) -> str:
    tail = get_backend().logs(instance.id, tail=20).strip()
    message = f"The runtime exited while starting, {instance.failed_starts} times in a row."
    return message + (f"\n{tail}" if tail else "")


def _converge_instance(instance: Instance, running: RunningInstance | None, inventory: Inventory) -> None:
    """One step of one instance's life, from what the backend and the runtime say."""
    if instance.zone in inventory.unreachable:
        _unreachable(instance, inventory.unreachable[instance.zone])
        return
    alive = running is not None and running.alive
    if not alive:
        if instance.status == InstanceStatus.STARTING and instance.started_at is not None:
            # Killed from outside, or out of memory while loading: try again a few times,
            # then give up with what it printed, rather than crash-looping for ever.
            instance.failed_starts += 1
            if instance.failed_starts >= MAX_FAILED_STARTS:
                _fail(instance, _died_message(instance))
                return
            logger.warning("instance %s exited while starting; starting it again", instance.id)
            instance.restarts += 1
            _start(instance)
        else:
            if instance.started_at is not None:
                instance.restarts += 1
                logger.warning("instance %s is gone; restarting it", instance.id)
            _start(instance)
        return
    network = instance.deployment.service.network
    if instance.network != network and not _another_is_starting(instance):
        # Its sandbox is made when it starts: another network needs a new start. One
        # instance at a time, so that the others keep answering meanwhile.
        logger.info("instance %s: the service's network is now %s; starting it again", instance.id, network)
        _start(instance)
        return
    if not _apply_resources(instance):
        return  # started again, with the new limits
    result = probe(running.endpoint, instance_id=instance.id, credential=instance.credential)
    if result.wrong:
        # Not our runtime at that address, or one that does not know the instance's
        # credential (a pass whose writes were rolled back after it started it): start it
        # again. Counted like an exit while starting, so it cannot loop for ever.
        logger.warning(
            "instance %s: the runtime at %s does not answer as it; starting it again", instance.id, running.endpoint
        )
        if instance.status == InstanceStatus.STARTING:
            instance.failed_starts += 1
            if instance.failed_starts >= MAX_FAILED_STARTS:
                _fail(
                    instance,
                    f"The runtime at {running.endpoint} did not answer as this instance,"
                    f" {instance.failed_starts} times in a row.",
                )
                return
        instance.restarts += 1
        _start(instance)
        return
    if instance.status == InstanceStatus.STARTING:
        if result.ready:
            instance.status, instance.ready_at, instance.endpoint = (
                InstanceStatus.READY,
                timezone.now(),
                running.endpoint,
            )
            instance.failed_starts = 0
            instance.save()
        elif result.error:
            _fail(instance, f"The model failed to load: {result.error}")
        elif timezone.now() - instance.started_at > timedelta(seconds=settings.MODELBAY_READY_TIMEOUT):
            _fail(instance, f"The instance did not become ready within {settings.MODELBAY_READY_TIMEOUT:.0f} s.")
    elif instance.status == InstanceStatus.READY and not result.ready:
        instance.status, instance.error = InstanceStatus.UNHEALTHY, result.error or "Readiness check failed."
        instance.save()
    elif instance.status == InstanceStatus.UNHEALTHY and result.ready:
        instance.status, instance.error, instance.endpoint = InstanceStatus.READY, None, running.endpoint
        instance.save()
    elif instance.status == InstanceStatus.READY and instance.endpoint != running.endpoint:
        # The row names an address the instance no longer answers at: mend the route.
        instance.endpoint = running.endpoint
        instance.save(update_fields=["endpoint"])


def _another_is_starting(instance: Instance) -> bool:
    """Whether another instance of the same deployment is on its way to ready."""
    siblings = Instance.objects.filter(deployment_id=instance.deployment_id, status=InstanceStatus.STARTING)
    return siblings.exclude(pk=instance.pk).exists()


def _apply_resources(instance: Instance) -> bool:
    """Bring a running instance's limits to what its service asks for now: in place where
    the backend can, else by starting it again (False then)."""
    wanted = resources.effective(instance.deployment.service.resources)
    if instance.resources == wanted.as_dict():
        return True
    try:
        in_place = get_backend().resize(instance.id, wanted)
    except BackendError as error:
        logger.warning("instance %s: %s", instance.id, error)
        return True
    if in_place is False:
        if _another_is_starting(instance):
            return True  # one at a time: the others keep answering meanwhile
        logger.info("instance %s: new limits need a new start; starting it again", instance.id)
        _start(instance)
        return False
    instance.resources = wanted.as_dict()
    instance.save(update_fields=["resources"])
    return True


# --- one deployment, one service ------------------------------------------------------
def _least_used_zone(instances: list[Instance], unreachable: dict[str, str]) -> str | None:
    """The zone whose engine answers with fewest of these instances; None when none answers."""
    used = Counter(instance.zone for instance in instances)
    reachable = [zone for zone in settings.MODELBAY_ZONES if zone not in unreachable]
    return min(reachable, key=lambda zone: used[zone], default=None)


def _scale(deployment: Deployment, replicas: int, inventory: Inventory) -> None:
    """Keep ``replicas`` instances in zones whose engine answers: start the missing ones
    spread over those zones (replacements for the instances of a lost zone among them),
    drain the extra ones, and stop those drained."""
    _stop_drained(deployment)
    instances = deployment.instances.exclude(status__in=(InstanceStatus.STOPPED, InstanceStatus.DRAINING))
    # A lost zone's instances wait for their engine; when it answers again they start
    # there again and, once ready, make their replacements extra.
    placed = [i for i in instances.order_by("created_at") if i.zone not in inventory.unreachable]
    for _ in range(replicas - len(placed)):
        zone = _least_used_zone(placed, inventory.unreachable)
        if zone is None:
            break  # no engine answers: nowhere to start anything
        instance = Instance.objects.create(deployment=deployment, zone=zone)
        placed.append(instance)
        _start(instance)
    for instance in _extra(placed, replicas):
        _drain(instance)


def _extra(instances: list[Instance], replicas: int) -> list[Instance]:
    """The instances beyond ``replicas`` to take out: each from the most used zone (the
    spread comes back after a lost zone returns), one that is not ready before one that
    is, the newest first; never one whose leaving would leave fewer than ``replicas``
    ready (a ready one waits until the instances it is traded for are ready)."""
    staying = list(instances)
    ready = sum(instance.status == InstanceStatus.READY for instance in staying)
    extra = []
    while len(staying) > replicas:
        used = Counter(instance.zone for instance in staying)
        victim = max(staying, key=lambda i: (used[i.zone], i.status != InstanceStatus.READY, i.created_at))
        if victim.status == InstanceStatus.READY:
            if ready <= replicas:
                break
            ready -= 1
        staying.remove(victim)
        extra.append(victim)
    return extra


def _drain(instance: Instance) -> None:
    """Out of the routing table now (it only takes ready instances); stopped once every
    gateway has stopped sending it calls and those it has are answered."""
    instance.status = InstanceStatus.DRAINING
    instance.drain_until = timezone.now() + timedelta(seconds=settings.MODELBAY_DRAIN_S)
    instance.save(update_fields=["status", "drain_until"])


def _stop_drained(deployment: Deployment) -> None:
    """Stop and forget the draining instances whose drain time is over (SIGTERM: each
    finishes the calls it still has, then exits)."""
    due = Q(drain_until__isnull=True) | Q(drain_until__lte=timezone.now())
    for instance in deployment.instances.filter(due, status=InstanceStatus.DRAINING):
        get_backend().stop(instance.id)
        instance.delete()


def _lost_zone_reason(instances: list[Instance], unreachable: dict[str, str]) -> str | None:
    """Why the service is short of a zone, when one of its zones' engines does not answer."""
    zone = next((instance.zone for instance in instances if instance.zone in unreachable), None)
    if zone is None:
        return None
    return f"Zone {zone} is lost: its instances are replaced in the zones that answer. {unreachable[zone]}"


def _status_of(
    service: Service, instances: list[Instance], unreachable: dict[str, str] | None = None
) -> tuple[str, str | None]:
    # Draining instances are on their way out: neither capacity nor trouble.
    instances = [instance for instance in instances if instance.status != InstanceStatus.DRAINING]
    lost_zone = _lost_zone_reason(instances, unreachable or {})
    counts = Counter(instance.status for instance in instances)
    failed = [instance.error for instance in instances if instance.status == InstanceStatus.FAILED]
    desired = service.replicas * service.deployments.filter(retired_at__isnull=True).count()
    ready = counts[InstanceStatus.READY]
    # Instances starting for the first time (a deploy, a scale-up) are not a fault;
    # a restart after a crash, an unhealthy or a failed instance is.
    troubled = (
        failed
        or lost_zone
        or counts[InstanceStatus.UNHEALTHY]
        or any(instance.status == InstanceStatus.STARTING and instance.restarts for instance in instances)
    )
    if ready >= desired and not failed and not lost_zone:
        return ServiceStatus.READY, None
    if failed and ready == 0 and counts[InstanceStatus.STARTING] == 0:
        return ServiceStatus.FAILED, failed[0]
    if not troubled:
        return (
            ServiceStatus.READY if service.status == ServiceStatus.READY and ready else ServiceStatus.PROVISIONING
        ), None
    if ready > 0 or service.status in (ServiceStatus.READY, ServiceStatus.DEGRADED):
        # Say why: a failed instance's error, else a lost zone, else an unhealthy instance's.
        unhealthy = [i.error for i in instances if i.status == InstanceStatus.UNHEALTHY and i.error]
        reasons = failed or ([lost_zone] if lost_zone else unhealthy)
        return ServiceStatus.DEGRADED, reasons[0] if reasons else None
    return ServiceStatus.PROVISIONING, None


def _drained(deployment: Deployment) -> bool:
    """Stop a retired version's instances once every gateway has stopped sending them
    calls (each finishes the calls it has, then exits), and forget the version."""
    if timezone.now() - deployment.retired_at < timedelta(seconds=settings.MODELBAY_DRAIN_S):
        return False
    for instance in deployment.instances.all():
        get_backend().stop(instance.id)
    deployment.delete()
    return True


def _teardown(service: Service) -> None:
    backend = get_backend()
    for instance in Instance.objects.filter(deployment__service=service):
        backend.stop(instance.id)
    service.delete()


_pass_locks: dict[int, threading.Lock] = {}
_pass_locks_guard = threading.Lock()


def _seen_running(inventory: Inventory, instance: Instance) -> bool:
    """Whether the snapshot shows the instance as its row says; one in a zone the snapshot
    could not ask is as seen (asking again would wait on the same engine)."""
    if instance.zone in inventory.unreachable:
        return True
    running = inventory.get(instance.id)
    return running is not None and running.alive and running.endpoint == instance.endpoint


def _pass_lock(service_id: int) -> threading.Lock:
    with _pass_locks_guard:
        return _pass_locks.setdefault(service_id, threading.Lock())


# (backend, zone, requirements, system packages) tried in this process, built or not: a build that failed is
# not tried again before every pass (the instance's start reports the error once).
_prepared: set[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = set()


def _prepare_environments(service_id: int) -> None:
    """Build the packages the service's python models require (a venv or an image per
    zone) before the pass takes its locks: a build can take minutes, and a transaction
    held that long would stall every other writer (on SQLite, the whole site)."""
    versions = Deployment.objects.filter(
        service_id=service_id, service__deleted_at__isnull=True, retired_at__isnull=True
    ).values_list("model_version__manifest", flat=True)
    for manifest in versions:
        requirements = tuple((manifest or {}).get("requirements") or ())
        system_packages = tuple((manifest or {}).get("system_packages") or ())
        for zone in settings.MODELBAY_ZONES if requirements or system_packages else ():
            backend = get_backend()
            key = (backend.name, zone, requirements, system_packages)
            if key in _prepared:
                continue
            _prepared.add(key)
            try:
                backend.prepare(zone, requirements, system_packages)
            except BackendError:
                pass  # the pass's start meets the same error and records it on the instance


def service_reconcile(service_id: int, *, running: Inventory | None = None) -> bool:
    """One pass over a service. Returns True while some instance is still starting.

    Passes over one service never overlap: across workers the row lock keeps them apart,
    within a worker (and on SQLite, which has no row locks) a lock per service does.
    """
    _prepare_environments(service_id)
    with _pass_lock(service_id), transaction.atomic():
        # of=self: lock the service row only. Locking its organization too would make every
        # insert that references the organization (a listing, a model) wait for, or
        # deadlock with, a pass.
        service = (
            Service.objects.select_for_update(of=("self",)).select_related("organization").filter(pk=service_id).first()
        )
        if service is None:
            return False
        if service.deleted_at is not None:
            _teardown(service)
            generation.bump()
            events.service_changed(service.organization_id, service.slug)
            return False
        live = list(Instance.objects.filter(deployment__service=service, status__in=LIVE_INSTANCE_STATUSES))
        if running is None or not all(_seen_running(running, i) for i in live):
            # A snapshot taken before this pass may predate an instance another pass just
            # (re)started: look again before calling anything dead or probing an old address.
            running = get_backend().list()
        before = list(Instance.objects.filter(deployment__service=service).values_list("id", "status", "endpoint"))
        draining = False
        for deployment in service.deployments.select_related("model_version", "service__organization"):
            if deployment.retired_at is not None:
                draining |= not _drained(deployment)
                continue
            for instance in deployment.instances.filter(status__in=LIVE_INSTANCE_STATUSES):
                _converge_instance(instance, running.get(instance.id), running)
            _scale(deployment, service.replicas, running)
        instances = list(Instance.objects.filter(deployment__service=service, deployment__retired_at__isnull=True))
        status, error = _status_of(service, instances, running.unreachable)
        status_before = (service.status, service.error)
        if (status, error) != status_before:
            service.status, service.error = status, error
            service.save(update_fields=["status", "error", "updated_at"])
        _complete_cold_starts(service, instances)
        after = [(i.id, i.status, i.endpoint) for i in instances]
        if sorted(after) != sorted(before):
            generation.bump()
        if sorted(after) != sorted(before) or (status, error) != status_before:
            events.service_changed(service.organization_id, service.slug)
        # A draining instance needs the pass after its drain time: still converging.
        return draining or any(i.status in (InstanceStatus.STARTING, InstanceStatus.DRAINING) for i in instances)


def _complete_cold_starts(service: Service, instances: list[Instance]) -> None:
    """A start from zero under way is over when an instance is ready: the one that just was."""
    ready_at = [i.ready_at for i in instances if i.status == InstanceStatus.READY and i.ready_at]
    if ready_at:
        open_starts = ColdStart.objects.filter(service=service, ready_at__isnull=True)
        if open_starts.exists():  # a read first: on SQLite even an UPDATE of no row takes the write lock
            open_starts.update(ready_at=max(ready_at))


# Passes come this often for the first seconds of a convergence (a runtime that loads its
# model in a few hundred milliseconds is seen ready soon after: cold starts), then every poll_s.
EARLY_POLL_S = 0.05
EARLY_S = 2.0


def service_converge(service_id: int, *, poll_s: float = 0.2) -> None:
    """Pass after pass until no instance is starting (bounded by the ready timeout)."""
    started = time.monotonic()
    deadline = started + settings.MODELBAY_READY_TIMEOUT + 30
    while service_reconcile(service_id) and time.monotonic() < deadline:
        time.sleep(EARLY_POLL_S if time.monotonic() - started < EARLY_S else poll_s)


def remove_orphans(running: Inventory) -> list[str]:
    """Stop processes or containers that no live or draining instance owns."""
    owned = set(Instance.objects.filter(status__in=OWNED_INSTANCE_STATUSES).values_list("id", flat=True))
    now = time.time()
    orphans = [
        instance_id
        for instance_id, instance in running.items()
        if instance_id not in owned and now - instance.created_at > settings.MODELBAY_ORPHAN_GRACE_S
    ]
    for instance_id in orphans:
        logger.warning("removing orphan instance %s", instance_id)
        get_backend().stop(instance_id)
    return orphans


def reconcile_all() -> list[int]:
    """One pass over every service; returns the services still converging. Records
    which zones answer first (the zones' health, on the API and the console)."""
    running = get_backend().list()
    zone_health_record(unreachable=running.unreachable)
    converging = [
        service_id
        for service_id in Service.objects.values_list("pk", flat=True)
        if service_reconcile(service_id, running=running)
    ]
    remove_orphans(running)
    return converging
