"""Gray releases: start one, let beat move it step by step, or act on it at once.

A release brings the new version up beside the old one (same replicas, same zones),
then gives it ``steps[0]`` % of the calls, and every ``interval_s`` compares it with the
old version on the calls of that interval. Within bounds it takes the next step; at
100 % the old version leaves the routing table, drains and stops. A breach of
``max_error_rate`` or ``max_p99_ms`` rolls it back. Each decision goes to ``history``
with the figures it used, so that an operator can tell why.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from controlplane import selectors, services
from controlplane.choices import ACTIVE_RELEASE_STATUSES, InstanceStatus, ReleaseStatus
from controlplane.models import Deployment, Release, Service, VersionMetrics
from modelbay.core.errors import Conflict, InvalidRequest

logger = logging.getLogger(__name__)


# --- starting and acting on a release --------------------------------------------------
def release_start(
    *,
    service: Service,
    version: int,
    steps: list[int],
    interval_s: int,
    max_error_rate: float,
    max_p99_ms: float | None,
    shadow_percent: int = 0,
) -> Release:
    if not steps or steps[-1] != 100 or any(a >= b for a, b in zip([0, *steps], steps)):
        raise InvalidRequest("steps are percentages rising from above 0 and ending at 100.", field="steps"
        )
    with transaction.atomic():
        Service.objects.select_for_update().get(pk=service.pk)
        if service.releases.filter(status__in=ACTIVE_RELEASE_STATUSES).exists():
            raise Conflict("A release of this service is already running; finish or roll it back first.")
        live = {d.model_version.version: d for d in selectors.live_deployments(service=service)}
        current = max(live.values(), key=lambda d: d.weight)
        if version in live and version != current.model_version.version and live[version].weight > 0:
            raise Conflict(f"Version {version} already takes calls; set the split with PUT traffic instead.")
        if version == current.model_version.version:
            raise InvalidRequest(f"Version {version} is the one running now.", field="version")
        if any(d.weight for v, d in live.items() if v != current.model_version.version):
            raise Conflict("The calls are split among several versions; give one version 100 % first.")
        if version not in live:
            services.version_deploy(service=service, version=version)
        try:
            release = Release.objects.create(
                service=service,
                from_version=current.model_version.version,
                version=version,
                steps=steps,
                interval_s=interval_s,
                max_error_rate=max_error_rate,
                max_p99_ms=max_p99_ms,
                shadow_percent=shadow_percent,
            )
        except IntegrityError:
            raise Conflict("A release of this service is already running.") from None
        _note(release, "started", f"Bringing up version {version} beside version {release.from_version}.")
        release.save()
    return release


def release_promote(*, release: Release) -> Release:
    """All calls to the new version now; the old one drains and stops."""
    with _locked(release.pk) as release:
        _require_active(release)
        _promote(release, by="the operator")
    return release


def release_rollback(*, release: Release) -> Release:
    """All calls back to the old version now; the new one drains and stops."""
    with _locked(release.pk) as release:
        _require_active(release)
        _roll_back(release, "Rolled back by the operator.", figures=None)
    return release


def release_pause(*, release: Release) -> Release:
    with _locked(release.pk) as release:
        if release.status != ReleaseStatus.ROLLING:
            raise Conflict(f"Only a rolling release can be paused; this one is {release.status}.")
        release.status = ReleaseStatus.PAUSED
        _note(release, "paused", f"Paused at {release.weight} %.")
        release.save()
    return release


def release_resume(*, release: Release) -> Release:
    with _locked(release.pk) as release:
        if release.status != ReleaseStatus.PAUSED:
            raise Conflict(f"Only a paused release can be resumed; this one is {release.status}.")
        release.status = ReleaseStatus.ROLLING
        release.step_started_at = timezone.now()  # a full interval of calls before the next step
        _note(release, "resumed", f"Resumed at {release.weight} %.")
        release.save()
    return release


@contextmanager
def _locked(release_id: int) -> Iterator[Release]:
    """The release, fresh, with its service's row locked (which orders us with reconcile
    passes, with beat's tick and with other actions) for one transaction."""
    with transaction.atomic():
        service_id = Release.objects.values_list("service_id", flat=True).get(pk=release_id)
        Service.objects.select_for_update().get(pk=service_id)
        yield Release.objects.select_related("service").get(pk=release_id)


def _require_active(release: Release) -> None:
    if release.status not in ACTIVE_RELEASE_STATUSES:
        raise Conflict(f"This release is over ({release.status}).")


# --- beat: one tick over every active release ----------------------------------------------
def advance_all() -> None:
    for release_id in Release.objects.filter(status__in=(ReleaseStatus.STARTING, ReleaseStatus.ROLLING)).values_list(
        "pk", flat=True
    ):
        try:
            advance(release_id)
        except Exception:  # one release's trouble must not stop the others
            logger.exception("advancing release %s", release_id)


def advance(release_id: int) -> None:
    """Whatever is due for one release: its first step once the new version is ready,
    the next step (or a rollback) once its interval has passed."""
    with _locked(release_id) as release:
        if release.status == ReleaseStatus.STARTING:
            _start_when_ready(release)
        elif release.status == ReleaseStatus.ROLLING:
            if timezone.now() - release.step_started_at >= timedelta(seconds=release.interval_s):
                _next_step(release)


def _start_when_ready(release: Release) -> None:
    service = release.service
    new = _deployment(release, release.version)
    instances = list(new.instances.all()) if new else []
    ready = [i for i in instances if i.status == InstanceStatus.READY]
    failed = [i for i in instances if i.status == InstanceStatus.FAILED]
    if failed:
        _end(release, ReleaseStatus.FAILED, f"Version {release.version} did not start: {failed[0].error}")
        _weights(release, old=100, new=0)
        services.version_retire(service=service, version=release.version)
        return
    if len(ready) < service.replicas:
        waited = timezone.now() - release.created_at
        if waited > timedelta(seconds=settings.MODELBAY_READY_TIMEOUT + 60):
            _end(release, ReleaseStatus.FAILED, f"Version {release.version} was not ready after {waited.seconds} s.")
            services.version_retire(service=service, version=release.version)
        return
    if release.shadow_percent:
        # First measured on a mirrored share of the calls, answering none of them.
        services.shadow_write(service=service, shadow={release.version: release.shadow_percent})
        release.status, release.step_started_at = ReleaseStatus.ROLLING, timezone.now()
        _note(release, "shadow", f"Version {release.version} gets a copy of {release.shadow_percent} % of the calls.")
        release.save()
        return
    _take_step(release, 0, figures=None)


def _next_step(release: Release) -> None:
    figures = _figures(release)
    breach = _breach(release, figures)
    if breach:
        _roll_back(release, breach, figures=figures)
    elif release.step + 1 < len(release.steps):
        _take_step(release, release.step + 1, figures=figures)
    else:
        _promote(release, by="the analysis", figures=figures)


def _take_step(release: Release, step: int, *, figures: dict | None) -> None:
    release.step, release.status, release.step_started_at = step, ReleaseStatus.ROLLING, timezone.now()
    weight = release.steps[step]
    if weight == 100:
        _promote(release, by="the analysis", figures=figures)
        return
    _weights(release, old=100 - weight, new=weight)
    _note(release, "step", f"Version {release.version} takes {weight} % of the calls.", figures=figures)
    release.save()


def _promote(release: Release, *, by: str, figures: dict | None = None) -> None:
    _weights(release, old=0, new=100)
    _end(release, ReleaseStatus.PROMOTED, f"Promoted by {by}.", figures=figures)
    services.version_retire(service=release.service, version=release.from_version)


def _roll_back(release: Release, reason: str, *, figures: dict | None) -> None:
    _weights(release, old=100, new=0)
    _end(release, ReleaseStatus.ROLLED_BACK, reason, figures=figures)
    services.version_retire(service=release.service, version=release.version)


def _end(release: Release, status: str, reason: str, *, figures: dict | None = None) -> None:
    release.status, release.reason, release.finished_at = status, reason, timezone.now()
    _note(release, status, reason, figures=figures)
    release.save()


def _weights(release: Release, *, old: int, new: int) -> None:
    """The split of a step or an end; the shadow phase, if any, is over."""
    services.weights_write(service=release.service, weights={release.from_version: old, release.version: new})
    services.shadow_write(service=release.service, shadow={})


def _deployment(release: Release, version: int) -> Deployment | None:
    return release.service.deployments.filter(model_version__version=version, retired_at__isnull=True).first()


def _note(release: Release, action: str, message: str, *, figures: dict | None = None) -> None:
    release.history = [
        *release.history,
        {
            "at": timezone.now().isoformat(),
            "action": action,
            "weight": release.weight,
            "message": message,
            "figures": figures,
        },
    ]


# --- the analysis ----------------------------------------------------------------------------
def _figures(release: Release) -> dict:
    """Both versions' calls since the current step began (whole 10-second intervals)."""
    stats = {s.version: s for s in selectors.version_stats(service=release.service, since=_interval_floor(release))}

    def of(version: int) -> dict:
        entry = stats.get(version)
        if entry is None:
            return {"requests": 0, "errors": 0, "error_rate": 0.0, "p99_ms": None}
        return {
            "requests": entry.requests,
            "errors": entry.errors,
            "error_rate": round(entry.error_rate, 4),
            "p99_ms": entry.p99_ms,
        }

    return {"new": of(release.version), "old": of(release.from_version)}


def _interval_floor(release: Release):
    started = release.step_started_at
    return started - timedelta(seconds=started.timestamp() % VersionMetrics.INTERVAL_S)


def _breach(release: Release, figures: dict) -> str | None:
    new = figures["new"]
    if new["requests"] and new["error_rate"] > release.max_error_rate:
        return (
            f"Rolled back: version {release.version}'s error rate {new['error_rate']:.2%} over {new['requests']} "
            f"calls exceeds max_error_rate {release.max_error_rate:.2%} "
            f"(version {release.from_version}: {figures['old']['error_rate']:.2%})."
        )
    if release.max_p99_ms is not None and new["p99_ms"] is not None and new["p99_ms"] > release.max_p99_ms:
        return (
            f"Rolled back: version {release.version}'s p99 latency {new['p99_ms']:.0f} ms exceeds max_p99_ms "
            f"{release.max_p99_ms:.0f} ms (version {release.from_version}: {figures['old']['p99_ms']} ms)."
        )
    return None
