"""Gray releases: start one, let beat move it step by step, or act on it at once.

A release brings the new version up beside the old one (same replicas, same zones),
then gives it ``steps[0]`` % of the calls, and every ``interval_s`` judges it against the
old version on the calls of the step so far. Only on evidence: until each version has
``min_calls`` calls in the step, it waits an interval more, and after ``MAX_WAITS`` such
intervals it pauses ("not enough traffic"), never promotes. Judged, the new version is
rolled back when its error rate or p99 passes the ceilings ``max_error_rate`` /
``max_p99_ms``, or is worse than the old version's by more than ``max_error_rate_increase``
/ ``max_p99_ratio`` allow; otherwise it takes the next step, and at 100 % the old version
leaves the routing table, drains and stops. Each decision goes to ``history`` with the
figures and the bounds it used, so that an operator can tell why.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from controlplane import events, selectors, services
from controlplane.choices import ACTIVE_RELEASE_STATUSES, InstanceStatus, ReleaseStatus
from controlplane.models import Deployment, Release, Service, VersionMetrics
from modelbay.core.errors import Conflict, InvalidRequest

logger = logging.getLogger(__name__)

# A step without enough calls to judge waits at most this many intervals more, then pauses.
MAX_WAITS = 5
# Two error rates this many standard errors of their difference apart may differ by chance.
NOISE_SIGMAS = 3
# p99s this close are alike to the latency histogram's buckets (and to a scheduler's hiccups).
P99_SLACK_MS = 10
# On fewer calls, a p99 is a handful of them (a cold start, a busy CPU): a new version's p99
# over the old one's counts only with its p95 over the bound too.
P99_ALONE_CALLS = 1000


# --- starting and acting on a release --------------------------------------------------
def release_start(
    *,
    service: Service,
    version: int,
    steps: list[int],
    interval_s: int,
    max_error_rate: float,
    max_p99_ms: float | None,
    max_error_rate_increase: float = Release.DEFAULT_MAX_ERROR_RATE_INCREASE,
    max_p99_ratio: float = Release.DEFAULT_MAX_P99_RATIO,
    min_calls: int = Release.DEFAULT_MIN_CALLS,
    shadow_percent: int = 0,
) -> Release:
    if not steps or steps[-1] != 100 or any(a >= b for a, b in zip([0, *steps], steps)):
        raise InvalidRequest("steps are percentages rising from above 0 and ending at 100.", field="steps"
        )
    if interval_s < settings.MODELBAY_RELEASE_MIN_INTERVAL_S:
        raise InvalidRequest(
            f"interval_s is at least {settings.MODELBAY_RELEASE_MIN_INTERVAL_S} s: a step needs time for calls "
            "to judge it on.",
            field="interval_s",
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
                max_error_rate_increase=max_error_rate_increase,
                max_p99_ratio=max_p99_ratio,
                min_calls=min_calls,
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
        _promote(release, "Promoted by the operator.")
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
        release.status, release.reason = ReleaseStatus.ROLLING, ""
        # A full interval of calls before the next step, and the waits for them afresh.
        release.step_started_at, release.waits = timezone.now(), 0
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
        elif release.status == ReleaseStatus.ROLLING and timezone.now() >= release.next_check_at:
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
    verdict = step_verdict(release=release, figures=figures)
    figures["limits"] = verdict.limits
    if verdict.outcome == Verdict.FAIL:
        _roll_back(release, verdict.message, figures=figures)
    elif verdict.outcome == Verdict.WAIT:
        _wait(release, verdict.message, figures=figures)
    else:
        _take_step(release, release.step + 1, figures=figures)


def _wait(release: Release, too_few: str, *, figures: dict) -> None:
    """Another interval for the calls a verdict needs; after MAX_WAITS, a pause for the operator."""
    if release.waits < MAX_WAITS:
        release.waits += 1
        _note(release, "waiting", f"{too_few} Waiting {release.interval_s} s more ({release.waits} of {MAX_WAITS}).",
              figures=figures)  # fmt: skip
    else:
        release.status = ReleaseStatus.PAUSED
        release.reason = (
            f"Paused: {too_few[0].lower()}{too_few[1:]} Still so after {MAX_WAITS + 1} intervals: "
            "resume to wait again, or promote or roll back."
        )
        _note(release, "paused", release.reason, figures=figures)
    release.save()


def _take_step(release: Release, step: int, *, figures: dict | None) -> None:
    release.step, release.status, release.step_started_at = step, ReleaseStatus.ROLLING, timezone.now()
    release.waits = 0
    weight = release.steps[step]
    if weight == 100:
        if figures is None:  # steps [100] and no shadow phase: a switch, not an analysis
            _promote(release, f"Promoted at once: steps {release.steps} leave nothing to judge.")
        else:
            new, old = figures["new"]["requests"], figures["old"]["requests"]
            _promote(release, f"Promoted by the analysis: version {release.version} was within bounds over {new} "
                     f"calls (version {release.from_version}: {old}).", figures=figures)  # fmt: skip
        return
    _weights(release, old=100 - weight, new=weight)
    _note(release, "step", f"Version {release.version} takes {weight} % of the calls.", figures=figures)
    release.save()


def _promote(release: Release, reason: str, *, figures: dict | None = None) -> None:
    _weights(release, old=0, new=100)
    _end(release, ReleaseStatus.PROMOTED, reason, figures=figures)
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
    """Add to the release's history (saved by the caller); the console's pages show it."""
    events.service_changed(release.service.organization_id, release.service.slug)
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
            return {"requests": 0, "errors": 0, "error_rate": 0.0, "p95_ms": None, "p99_ms": None}
        return {
            "requests": entry.requests,
            "errors": entry.errors,
            "error_rate": round(entry.error_rate, 4),
            "p95_ms": entry.p95_ms,
            "p99_ms": entry.p99_ms,
        }

    return {"new": of(release.version), "old": of(release.from_version)}


def _interval_floor(release: Release):
    started = release.step_started_at
    return started - timedelta(seconds=started.timestamp() % VersionMetrics.INTERVAL_S)


@dataclass(frozen=True)
class Verdict:
    """What a step's calls say of the new version, with the bounds applied to it."""

    PASS, FAIL, WAIT = "pass", "fail", "wait"  # wait: too few calls to tell

    outcome: str
    message: str
    limits: dict


def step_verdict(*, release: Release, figures: dict) -> Verdict:
    """Judge the new version on a step's calls (``figures``, as ``_figures`` gives them).

    The ceilings need enough calls on the new version only; the comparison with the old
    version needs enough on both. Without them the step waits: no calls, no verdict."""
    new, old = figures["new"], figures["old"]
    enough = new["requests"] >= release.min_calls, old["requests"] >= release.min_calls
    limits = _limits(release, figures if all(enough) else None)
    if enough[0] and (breach := _over_ceiling(release, figures)):
        return Verdict(Verdict.FAIL, breach, limits)
    if not all(enough):
        return Verdict(Verdict.WAIT, _too_few_calls(release, figures), limits)
    if breach := _worse_than_old(release, figures, limits):
        return Verdict(Verdict.FAIL, breach, limits)
    return Verdict(Verdict.PASS, "", limits)


def _limits(release: Release, figures: dict | None) -> dict:
    """The bounds a step is judged by: the ceilings, lowered to what the old version's own
    figures allow once both versions have enough calls to compare (``figures``)."""
    error_rate, p99_ms, noise = release.max_error_rate, release.max_p99_ms, None
    if figures is not None:
        old = figures["old"]
        noise = _error_rate_noise(figures["new"], old)
        error_rate = min(error_rate, old["error_rate"] + release.max_error_rate_increase + noise)
        if old["p99_ms"] is not None:
            relative = max(old["p99_ms"] * release.max_p99_ratio, old["p99_ms"] + P99_SLACK_MS)
            p99_ms = relative if p99_ms is None else min(p99_ms, relative)
    return {
        "min_calls": release.min_calls,
        "max_error_rate": release.max_error_rate,
        "max_p99_ms": release.max_p99_ms,
        "max_error_rate_increase": release.max_error_rate_increase,
        "max_p99_ratio": release.max_p99_ratio,
        "error_rate_noise": None if noise is None else round(noise, 4),
        "error_rate": round(error_rate, 4),
        "p99_ms": None if p99_ms is None else round(p99_ms, 1),
    }


def _error_rate_noise(new: dict, old: dict) -> float:
    """How far apart the two error rates may be by chance alone, on these many calls:
    NOISE_SIGMAS standard errors of their difference (both rates pooled)."""
    pooled = (new["errors"] + old["errors"]) / (new["requests"] + old["requests"])
    return NOISE_SIGMAS * math.sqrt(pooled * (1 - pooled) * (1 / new["requests"] + 1 / old["requests"]))


def _too_few_calls(release: Release, figures: dict) -> str:
    return (
        f"Not enough traffic to judge: {figures['new']['requests']} calls on version {release.version} and "
        f"{figures['old']['requests']} on version {release.from_version} in this step; each needs "
        f"min_calls {release.min_calls}."
    )


def _over_ceiling(release: Release, figures: dict) -> str | None:
    new = figures["new"]
    if new["error_rate"] > release.max_error_rate:
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


def _worse_than_old(release: Release, figures: dict, limits: dict) -> str | None:
    """Within the ceilings (checked first), past the bounds set by the old version's figures."""
    new, old = figures["new"], figures["old"]
    if new["error_rate"] > limits["error_rate"]:
        return (
            f"Rolled back: version {release.version}'s error rate {new['error_rate']:.2%} over {new['requests']} calls "
            f"is worse than version {release.from_version}'s {old['error_rate']:.2%} over {old['requests']} calls by "
            f"more than max_error_rate_increase {release.max_error_rate_increase:.2%} "
            f"(+{limits['error_rate_noise']:.2%} for chance on these calls)."
        )
    if _slower(new, limits["p99_ms"]):
        return (
            f"Rolled back: version {release.version}'s p99 latency {new['p99_ms']:.0f} ms (p95 {new['p95_ms']:.0f} ms) "
            f"is over max_p99_ratio {release.max_p99_ratio:g} times version {release.from_version}'s "
            f"{old['p99_ms']:.0f} ms (bound {limits['p99_ms']:.0f} ms)."
        )
    return None


def _slower(new: dict, bound: float | None) -> bool:
    if bound is None or new["p99_ms"] is None or new["p99_ms"] <= bound:
        return False
    return new["requests"] >= P99_ALONE_CALLS or (new["p95_ms"] or 0) > bound
