"""Writes for models, versions and services. Views, API views and tasks call these."""

from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.text import slugify

from accounts.models import Organization
from controlplane import events, jobs, packages, selectors
from controlplane import resources as resources_
from controlplane.choices import (
    ACTIVE_RELEASE_STATUSES,
    AutoscalerMode,
    InstanceStatus,
    ServiceNetwork,
    ServiceStatus,
)
from controlplane.models import AutoscalerDecision, ColdStart, Deployment, Model, ModelVersion, Service
from modelbay.core import generation
from modelbay.core.errors import (
    Conflict,
    DomainError,
    InsufficientStorage,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
)


def _slug_from(*, name: str, slug: str | None, field: str) -> str:
    slug = slugify(slug or name)[:64]
    if not slug:
        raise InvalidRequest("Give a name with at least one letter or digit.", field=field)
    return slug


def _refusal(error: packages.PackageError) -> DomainError:
    """A refused package in the API's words: the file's fault, except a full disk."""
    if error.status == 507:
        return InsufficientStorage()
    return (PayloadTooLarge if error.status == 413 else InvalidRequest)(error.detail, field="file")


def _checked_upload(upload) -> packages.CheckedPackage:
    try:
        return packages.check_upload(
            upload,
            max_bytes=settings.MODELBAY_MAX_UPLOAD_BYTES,
            max_unpacked_bytes=settings.MODELBAY_MAX_UNPACKED_BYTES,
            tmp_dir=settings.MODELBAY_UPLOAD_TMP_DIR,
        )
    except packages.PackageError as error:
        raise _refusal(error) from None


def _version_create(*, model: Model, checked: packages.CheckedPackage) -> ModelVersion:
    """Number the version, store the package (once per sha256) and record it."""
    Model.objects.select_for_update().filter(pk=model.pk).first()
    last = model.versions.aggregate(last=Max("version"))["last"] or 0
    try:
        packages.store_package(checked, artifact_root=settings.MODELBAY_ARTIFACT_ROOT)
    except packages.PackageError as error:  # the transaction rolls back: no row without its artifact
        raise _refusal(error) from None
    return ModelVersion.objects.create(
        model=model,
        version=last + 1,
        framework=checked.framework,
        sha256=checked.sha256,
        size=checked.size,
        filename=checked.filename,
        manifest=checked.manifest,
    )


def model_create(
    *, organization: Organization, name: str, upload, description: str = "", slug: str | None = None
) -> Model:
    """A new model with its first version. A bad package is refused and leaves nothing behind."""
    slug = _slug_from(name=name, slug=slug, field="name")
    if Model.objects.filter(organization=organization, slug=slug).exists():
        raise Conflict(f"A model with the slug '{slug}' already exists.")
    checked = _checked_upload(upload)
    try:
        with transaction.atomic():
            model = Model.objects.create(organization=organization, slug=slug, name=name, description=description)
            _version_create(model=model, checked=checked)
    except IntegrityError:
        raise Conflict(f"A model with the slug '{slug}' already exists.") from None
    finally:
        packages.discard(checked)
    return model


def model_version_add(*, model: Model, upload) -> ModelVersion:
    checked = _checked_upload(upload)
    try:
        with transaction.atomic():
            return _version_create(model=model, checked=checked)
    finally:
        packages.discard(checked)


def model_delete(*, model: Model) -> None:
    """Delete a model and its versions; refused while any version is deployed."""
    if selectors.model_is_deployed(model=model):
        raise Conflict("A version of this model is deployed; delete its services first.")
    model.delete()


def _check_replicas(replicas: int) -> None:
    if not 1 <= replicas <= settings.MODELBAY_MAX_REPLICAS:
        raise InvalidRequest(
            f"replicas must be between 1 and {settings.MODELBAY_MAX_REPLICAS}.",
            field="replicas",
        )


AUTOSCALING_DEFAULTS = {
    "min_replicas": 1,
    "max_replicas": 1,
    "target_in_flight": None,
    "scale_down_delay_s": 60,
    "scale_to_zero_after_s": 300,
}


def _check_autoscaling(autoscaling: dict) -> dict:
    """The settings (``AUTOSCALING_DEFAULTS``' keys), checked; a bad one raises
    ``InvalidRequest`` naming it, e.g. ``autoscaling.max_replicas``. ``min_replicas`` 0
    scales the service to zero after ``scale_to_zero_after_s`` without a call."""
    most = settings.MODELBAY_MAX_REPLICAS
    least, highest = autoscaling["min_replicas"], autoscaling["max_replicas"]
    if not 0 <= least <= most:
        raise InvalidRequest(f"min_replicas must be between 0 and {most}.", field="autoscaling.min_replicas")
    if not max(least, 1) <= highest <= most:
        lowest = f"min_replicas ({least})" if least else "1"
        raise InvalidRequest(f"max_replicas must be between {lowest} and {most}.", field="autoscaling.max_replicas")
    idle = autoscaling["scale_to_zero_after_s"]
    if not Service.MIN_SCALE_TO_ZERO_AFTER_S <= idle <= Service.MAX_SCALE_TO_ZERO_AFTER_S:
        raise InvalidRequest(
            f"scale_to_zero_after_s must be between {Service.MIN_SCALE_TO_ZERO_AFTER_S} and "
            f"{Service.MAX_SCALE_TO_ZERO_AFTER_S} seconds.",
            field="autoscaling.scale_to_zero_after_s",
        )
    target = autoscaling["target_in_flight"]
    if target is not None and not 1 <= target <= Service.MAX_TARGET_IN_FLIGHT:
        raise InvalidRequest(
            f"target_in_flight must be between 1 and {Service.MAX_TARGET_IN_FLIGHT} calls, or null for the "
            f"default ({settings.MODELBAY_AUTOSCALE_TARGET_IN_FLIGHT}).",
            field="autoscaling.target_in_flight",
        )
    if not 0 <= autoscaling["scale_down_delay_s"] <= Service.MAX_SCALE_DOWN_DELAY_S:
        raise InvalidRequest(
            f"scale_down_delay_s must be between 0 and {Service.MAX_SCALE_DOWN_DELAY_S} seconds.",
            field="autoscaling.scale_down_delay_s",
        )
    return autoscaling


def _scaling(*, current: dict, replicas: int | None, autoscaling: dict | None) -> dict:
    """The replica fields to store, from ``current`` (the same fields, as stored).

    ``replicas`` is a fixed count: min = max = replicas. ``autoscaling`` (some of
    ``AUTOSCALING_DEFAULTS``' keys) replaces those settings, and the desired count is
    kept within the new bounds. Neither: nothing changes.
    """
    if replicas is not None and autoscaling is not None:
        raise InvalidRequest(
            "Give either replicas (a fixed count) or autoscaling (a range), not both.", field="autoscaling"
        )
    if replicas is not None:
        _check_replicas(replicas)
        return {**current, "replicas": replicas, "min_replicas": replicas, "max_replicas": replicas}
    if autoscaling is None:
        return current
    unknown = sorted(set(autoscaling) - set(AUTOSCALING_DEFAULTS))
    if unknown:
        raise InvalidRequest(
            f"{unknown[0]} is not an autoscaling setting; give {', '.join(AUTOSCALING_DEFAULTS)}.",
            field=f"autoscaling.{unknown[0]}",
        )
    checked = _check_autoscaling({name: autoscaling.get(name, current[name]) for name in AUTOSCALING_DEFAULTS})
    return {**checked, "replicas": _clamp(current["replicas"], checked["min_replicas"], checked["max_replicas"])}


def _clamp(value: int, least: int, most: int) -> int:
    return min(max(value, least), most)


def _check_network(network: str) -> None:
    if network not in ServiceNetwork.values:
        raise InvalidRequest(f"network must be one of: {', '.join(ServiceNetwork.values)}.", field="network")


def _check_timeout(timeout_s: int) -> None:
    if not 1 <= timeout_s <= settings.MODELBAY_MAX_TIMEOUT_S:
        raise InvalidRequest(
            f"timeout_s must be between 1 and {settings.MODELBAY_MAX_TIMEOUT_S} seconds.", field="timeout_s"
        )


def _desired_state_changed(service: Service) -> None:
    """After commit: a worker reconciles the service, and the console's open pages show the change."""

    def after_commit() -> None:
        jobs.send(jobs.PROVISION_SERVICE, service.pk)
        events.publish(service.organization_id, service.slug)

    transaction.on_commit(after_commit)


def service_create(
    *,
    organization: Organization,
    name: str,
    model_slug: str,
    version: int | None = None,
    replicas: int | None = None,
    autoscaling: dict | None = None,
    resources: dict | None = None,
    network: str = ServiceNetwork.NONE,
    timeout_s: int | None = None,
    slug: str | None = None,
) -> Service:
    """Record the desired service; a worker provisions its instances after commit.

    ``replicas`` is a fixed count (default 1); ``autoscaling`` instead lets the load set
    it between ``min_replicas`` and ``max_replicas`` (keys of ``AUTOSCALING_DEFAULTS``, the
    defaults for those left out), starting at ``min_replicas``. ``resources`` is what one
    instance may use (``{"cpu": 2}``); what it leaves out follows the installation's
    defaults. ``network`` is what its instances may connect to (``ServiceNetwork``): by
    default nothing at all. ``timeout_s`` is a call's deadline (None: the installation's
    default).
    """
    slug = _slug_from(name=name, slug=slug, field="name")
    # From one replica, kept within the bounds: an autoscaled service starts at its minimum.
    scaling = _scaling(current={**AUTOSCALING_DEFAULTS, "replicas": 1}, replicas=replicas, autoscaling=autoscaling)
    _check_network(network)
    if timeout_s is not None:
        _check_timeout(timeout_s)
    requested = resources_.merge({}, resources_.check(resources or {}))
    model = Model.objects.filter(organization=organization, slug=model_slug).first()
    if model is None:
        raise InvalidRequest(f"No model '{model_slug}' in this organization.", field="model")
    versions = model.versions.all()
    model_version = versions.filter(version=version).first() if version else versions.order_by("-version").first()
    if model_version is None:
        raise InvalidRequest(f"Model '{model_slug}' has no version {version}.", field="version")
    try:
        with transaction.atomic():
            service = Service.objects.create(
                organization=organization,
                slug=slug,
                name=name,
                model=model,
                **scaling,
                resources=requested,
                network=network,
                timeout_s=timeout_s,
            )
            Deployment.objects.create(service=service, model_version=model_version, weight=100)
            _desired_state_changed(service)
    except IntegrityError:
        raise Conflict(f"A service with the slug '{slug}' already exists.") from None
    return service


def service_update(
    *,
    service: Service,
    replicas: int | None = None,
    autoscaling: dict | None = None,
    resources: dict | None = None,
    network: str | None = None,
    timeout_s: int | None = None,
) -> Service:
    """Change the replicas, what one instance may use and/or what it may connect to; the
    reconcile loop applies it (a new network by starting the instances again). A new
    ``timeout_s`` applies to the next calls.

    ``replicas`` fixes the count (autoscaling off); ``autoscaling`` settings given replace
    the stored ones (the others stay), and the desired count is kept within the bounds.
    The resources given replace the stored request key by key (``None`` returns one to the
    default); the others stay as they are. What is not given stays as it is.
    """
    if network is not None:
        _check_network(network)
    if timeout_s is not None:
        _check_timeout(timeout_s)
    checked = resources_.check(resources) if resources is not None else {}
    with transaction.atomic():
        locked = Service.objects.select_for_update().get(pk=service.pk)
        current = {name: getattr(locked, name) for name in ("replicas", *AUTOSCALING_DEFAULTS)}
        for name, value in _scaling(current=current, replicas=replicas, autoscaling=autoscaling).items():
            setattr(service, name, value)
        service.resources = resources_.merge(locked.resources, checked)
        service.network = locked.network if network is None else network
        service.timeout_s = locked.timeout_s if timeout_s is None else timeout_s
        Service.objects.filter(pk=service.pk).update(
            **{name: getattr(service, name) for name in current},
            resources=service.resources,
            network=service.network,
            timeout_s=service.timeout_s,
            updated_at=timezone.now(),
        )
        _desired_state_changed(service)
        if timeout_s is not None:
            transaction.on_commit(generation.bump)  # the gateways' routing tables carry it
    return service


def service_autoscale(*, service_id: int, replicas: int, in_flight: float, mode: str, reason: str) -> bool:
    """The autoscaler's decision: ``replicas`` wanted for the load ``in_flight`` it saw
    (``mode``: ``AutoscalerMode``), because of ``reason`` (a short sentence).

    Applied only while the service is live and autoscaled, kept within its bounds, and
    only when that changes the desired count: then recorded as an ``AutoscalerDecision``
    and reconciled after commit, and True. Otherwise nothing is written, and False.
    """
    mode = AutoscalerMode(mode)
    with transaction.atomic():
        # The owner's changes take the same lock: a decision never undoes one it did not see.
        locked = Service.objects.select_for_update().filter(pk=service_id, deleted_at__isnull=True).first()
        if locked is None or not locked.is_autoscaled:
            return False
        wanted = _clamp(replicas, locked.min_replicas, locked.max_replicas)
        if wanted == locked.replicas:
            return False
        if wanted == 0 and _woken_lately(locked):
            return False  # a call woke it after the load the autoscaler saw: not idle
        Service.objects.filter(pk=service_id).update(replicas=wanted, updated_at=timezone.now())
        AutoscalerDecision.objects.create(
            service=locked,
            from_replicas=locked.replicas,
            to_replicas=wanted,
            in_flight=in_flight,
            mode=mode,
            reason=reason,
        )
        _desired_state_changed(locked)
    return True


def _woken_lately(service: Service) -> bool:
    since = timezone.now() - timedelta(seconds=service.scale_to_zero_after_s)
    return service.cold_starts.filter(requested_at__gt=since).exists()


def service_wake(*, service_id: int) -> bool:
    """A call arrived for a service that runs no instance (scaled to zero): ask for one
    now. Recorded as a cold start (``ColdStart``, completed by reconcile when an instance
    is ready) and an autoscaler decision; True when this call woke the service, False
    when it was awake already (another call, or another gateway process, woke it) or
    cannot be woken (deleted, or not scaled to zero)."""
    with transaction.atomic():
        locked = Service.objects.select_for_update().filter(pk=service_id, deleted_at__isnull=True).first()
        if locked is None or locked.min_replicas != 0 or locked.replicas > 0:
            return False
        Service.objects.filter(pk=service_id).update(replicas=1, updated_at=timezone.now())
        ColdStart.objects.create(service=locked)
        AutoscalerDecision.objects.create(
            service=locked,
            from_replicas=0,
            to_replicas=1,
            in_flight=1,
            mode=AutoscalerMode.COLD_START,
            reason="A call arrived while the service ran no instance: starting one (a cold start); the call waits.",
        )
        _desired_state_changed(locked)
    return True


def service_delete(*, service: Service) -> None:
    """Take the service out of routing now; a worker stops its instances and removes it."""
    if service.listings.exists():
        raise Conflict("The service is listed in the marketplace; remove its listing first.")
    with transaction.atomic():
        Service.objects.filter(pk=service.pk).update(
            deleted_at=timezone.now(), status=ServiceStatus.STOPPED, updated_at=timezone.now()
        )
        generation.bump()
        _desired_state_changed(service)


# --- versions and traffic -------------------------------------------------------------
def version_deploy(*, service: Service, version: int) -> Deployment:
    """Run another version of the service's model beside the others, taking no traffic yet.

    Its instances come up with the service's replicas over the zones; ``traffic_set``
    (or a release) then gives it a share of the calls.
    """
    model_version = service.model.versions.filter(version=version).first()
    if model_version is None:
        raise InvalidRequest(f"Model '{service.model.slug}' has no version {version}.", field="version")
    with transaction.atomic():
        Service.objects.select_for_update().get(pk=service.pk)
        existing = service.deployments.filter(model_version=model_version).first()
        if existing is not None:
            state = "is still draining" if existing.retired_at else "already runs in this service"
            raise Conflict(f"Version {version} {state}.")
        deployment = Deployment.objects.create(service=service, model_version=model_version, weight=0)
        _desired_state_changed(service)
    return deployment


def version_retire(*, service: Service, version: int) -> None:
    """Take a version that has no traffic out of the service: out of routing now, its
    instances drained, then stopped."""
    with transaction.atomic():
        Service.objects.select_for_update().get(pk=service.pk)
        _refuse_during_release(service)
        deployments = list(selectors.live_deployments(service=service))
        deployment = next((d for d in deployments if d.model_version.version == version), None)
        if deployment is None:
            raise NotFound(f"Version {version} does not run in this service.")
        if len(deployments) == 1:
            raise Conflict("A service runs at least one version; delete the service instead.")
        if deployment.weight > 0:
            raise Conflict(f"Version {version} still takes {deployment.weight}% of the calls; move them first.")
        Deployment.objects.filter(pk=deployment.pk).update(retired_at=timezone.now())
        generation.bump()
        _desired_state_changed(service)


def traffic_set(*, service: Service, weights: dict[int, int], shadow: dict[int, int] | None = None) -> None:
    """Split the calls among the service's versions: integer percentages summing to 100.

    A version left out gets 0. A version given a share must have a ready instance.
    ``shadow`` (when given, it replaces the previous one) mirrors a percentage of the
    calls to versions without weight, whose answers are measured and discarded.
    """
    if any(not isinstance(w, int) or isinstance(w, bool) or not 0 <= w <= 100 for w in weights.values()):
        raise InvalidRequest("Each weight is an integer from 0 to 100.", field="weights")
    if sum(weights.values()) != 100:
        raise InvalidRequest(
            f"The weights sum to {sum(weights.values())}; they must sum to 100.",
            field="weights",
        )
    with transaction.atomic():
        Service.objects.select_for_update().get(pk=service.pk)
        _refuse_during_release(service)
        deployments = {d.model_version.version: d for d in selectors.live_deployments(service=service)}
        unknown = sorted(set(weights) - set(deployments))
        if unknown:
            raise InvalidRequest(
                f"Version {unknown[0]} does not run in this service (it runs {sorted(deployments)}).",
                field=f"weights.{unknown[0]}",
            )
        for version, weight in weights.items():
            ready = deployments[version].instances.filter(status=InstanceStatus.READY).exists()
            if weight > 0 and not ready:
                raise InvalidRequest(
                    f"Version {version} has no ready instance yet; it cannot take calls.",
                    field=f"weights.{version}",
                )
        for version, percent in (shadow or {}).items():
            if version not in deployments or weights.get(version, 0) or not 0 <= percent <= 100:
                raise InvalidRequest(
                    f"Shadow traffic goes to a version of this service without weight, 0 to 100 %; "
                    f"not to version {version} at {percent} %.",
                    field=f"shadow.{version}",
                )
        weights_write(service=service, weights=weights)
        if shadow is not None:
            shadow_write(service=service, shadow=shadow)


def shadow_write(*, service: Service, shadow: dict[int, int]) -> None:
    """Mirror these shares of the calls to these versions (the others: none)."""
    for deployment in selectors.live_deployments(service=service):
        percent = shadow.get(deployment.model_version.version, 0)
        Deployment.objects.filter(pk=deployment.pk).update(shadow_percent=percent)
    generation.bump()
    events.service_changed(service.organization_id, service.slug)


def _refuse_during_release(service: Service) -> None:
    if service.releases.filter(status__in=ACTIVE_RELEASE_STATUSES).exists():
        raise Conflict("A release of this service is running: promote, roll back or let it finish first.")


def weights_write(*, service: Service, weights: dict[int, int]) -> None:
    """Store a split that is known to be good (versions left out get 0); gateways pick it
    up on their next call."""
    for deployment in selectors.live_deployments(service=service):
        Deployment.objects.filter(pk=deployment.pk).update(weight=weights.get(deployment.model_version.version, 0))
    Service.objects.filter(pk=service.pk).update(updated_at=timezone.now())
    generation.bump()
    events.service_changed(service.organization_id, service.slug)
