"""The autoscaler: calls in flight per service, as the gateways report them, turned into a
desired replica count, the way Knative's autoscaler (KPA) does it.

Every tick (``MODELBAY_AUTOSCALE_TICK_S``, a beat task in the worker, never a thread of the
web server) each autoscaled service gets one sample: the calls it had in flight on average
over the last report interval, summed over every gateway process (``controlplane.load``).
Then:

- **stable mode**: the average over the stable window (``MODELBAY_AUTOSCALE_STABLE_WINDOW_S``,
  60 s) divided by the service's ``target_in_flight``, rounded up, is the replicas wanted;
- **panic mode**, for sudden bursts: over the panic window (a tenth of the stable one) the
  load needs at least twice the replicas that are ready; then the panic window's figure is
  used, and nothing scales down until the burst has been over for a stable window;
- **scale-down delay**: the replicas wanted are the most asked for over the last
  ``scale_down_delay_s`` of the service, so a scale-down happens only after that long;
- never below ``min_replicas`` nor above ``max_replicas``;
- **scale to zero**: with ``min_replicas`` 0, a service keeps at least one replica until it
  has had no call in flight for ``scale_to_zero_after_s``; then none (the gateway holds the
  next call while an instance starts: ``inference.coldstart``).

A decision that changes the count goes through ``services.service_autoscale``, which
records it with its reason; reconcile starts or stops the instances (new ones spread over
the zones like any other).

The windows live in the shared cache (Redis, or the embedded default's file cache), one
small entry per service, so that any worker may run the next tick.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache
from django.db.models import F

from controlplane import load, services
from controlplane.choices import InstanceStatus
from controlplane.models import Instance, Service

logger = logging.getLogger(__name__)

PANIC_THRESHOLD = 2.0  # the burst needs this many times the ready replicas' capacity
_STATE_KEY = "mb:autoscaler:{}"
_LOCK_KEY = "mb:autoscaler:lock"


@dataclass
class Windows:
    """What the autoscaler remembers of a service between ticks."""

    samples: list[tuple[float, float]] = field(default_factory=list)  # (time, calls in flight)
    wanted: list[tuple[float, int]] = field(default_factory=list)  # (time, replicas wanted)
    panic_since: float | None = None  # when the current panic began
    panic_until: float = 0.0  # panic lasts until then (a stable window after the last burst)
    panic_replicas: int = 0  # the most asked for during this panic
    active_at: float | None = None  # the last sample with a call in flight (or the first sample)


@dataclass(frozen=True)
class Policy:
    min_replicas: int
    max_replicas: int
    target_in_flight: int
    scale_down_delay_s: float
    stable_window_s: float
    scale_to_zero_after_s: float = 300.0

    @property
    def panic_window_s(self) -> float:
        return max(self.stable_window_s / 10, 1.0)


@dataclass(frozen=True)
class Decision:
    replicas: int
    in_flight: float  # the load the decision is based on
    mode: str  # "stable" or "panic"
    reason: str


def _average(samples: list[tuple[float, float]], since: float) -> float | None:
    inside = [value for at, value in samples if at > since]
    return sum(inside) / len(inside) if inside else None


def decide(windows: Windows, policy: Policy, *, now: float, in_flight: float, ready: int) -> Decision:
    """Add this tick's sample to ``windows`` (updated in place) and say how many replicas
    the service should have. ``ready``: its instances ready now."""
    windows.samples = [(at, v) for at, v in windows.samples if at > now - policy.stable_window_s]
    windows.samples.append((now, in_flight))
    if in_flight > 0 or windows.active_at is None:
        windows.active_at = now
    stable = _average(windows.samples, now - policy.stable_window_s)
    panic = _average(windows.samples, now - policy.panic_window_s)
    target = policy.target_in_flight
    stable_replicas = math.ceil(stable / target)
    panic_replicas = math.ceil(panic / target)

    if panic_replicas >= PANIC_THRESHOLD * max(ready, 1) and panic_replicas > ready:
        if windows.panic_since is None:
            windows.panic_since = now
        windows.panic_until = now + policy.stable_window_s
    if windows.panic_since is not None and now >= windows.panic_until:
        windows.panic_since, windows.panic_replicas = None, 0

    if windows.panic_since is not None:
        windows.panic_replicas = max(windows.panic_replicas, panic_replicas, stable_replicas)
        wanted, mode, seen = windows.panic_replicas, "panic", panic
        why = (f"{panic:.1f} calls in flight over the last {policy.panic_window_s:.0f} s, at least twice "
               f"what {ready} ready replica(s) take at {target} each: scaling for the burst")  # fmt: skip
    else:
        wanted, mode, seen = stable_replicas, "stable", stable
        why = f"{stable:.1f} calls in flight on average over {policy.stable_window_s:.0f} s, {target} per replica"

    # Scale down only when nothing asked for more during the delay.
    windows.wanted = [(at, n) for at, n in windows.wanted if at > now - policy.scale_down_delay_s]
    windows.wanted.append((now, wanted))
    held = max(n for _, n in windows.wanted)
    if held > wanted:
        why += f"; holding {held} (asked for within the last {policy.scale_down_delay_s:.0f} s)"
    replicas = min(max(held, policy.min_replicas), policy.max_replicas)
    if replicas != held:
        bound = "min_replicas" if replicas > held else "max_replicas"
        why += f"; {bound} {replicas}"
    if replicas == 0:
        idle_s = now - windows.active_at
        if idle_s < policy.scale_to_zero_after_s:
            replicas = 1
            why += f"; keeping 1 until no call for {policy.scale_to_zero_after_s:.0f} s (none for {idle_s:.0f} s)"
        else:
            why = f"No call for {idle_s:.0f} s (scale_to_zero_after_s {policy.scale_to_zero_after_s:.0f}): scaling to zero"
    return Decision(replicas=replicas, in_flight=seen, mode=mode, reason=why)


def policy_of(service: Service) -> Policy:
    return Policy(
        min_replicas=service.min_replicas,
        max_replicas=service.max_replicas,
        target_in_flight=service.target_in_flight or settings.MODELBAY_AUTOSCALE_TARGET_IN_FLIGHT,
        scale_down_delay_s=float(service.scale_down_delay_s),
        stable_window_s=settings.MODELBAY_AUTOSCALE_STABLE_WINDOW_S,
        scale_to_zero_after_s=float(service.scale_to_zero_after_s),
    )


def _ready_counts(service_ids: list[int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    rows = Instance.objects.filter(
        deployment__service_id__in=service_ids, deployment__retired_at__isnull=True, status=InstanceStatus.READY
    ).values_list("deployment__service_id", flat=True)
    for service_id in rows:
        counts[service_id] = counts.get(service_id, 0) + 1
    return counts


def tick(*, now: float | None = None) -> list[Decision]:
    """One round over every autoscaled service; the decisions that changed a count.

    Runs one at a time (a tick that finds another under way does nothing: the next one
    comes within a second)."""
    if not cache.add(_LOCK_KEY, "1", timeout=30):
        return []
    try:
        return _tick(time.time() if now is None else now)
    finally:
        cache.delete(_LOCK_KEY)


def _tick(now: float) -> list[Decision]:
    autoscaled = list(
        Service.objects.filter(deleted_at__isnull=True, max_replicas__gt=F("min_replicas")).only(
            "id",
            "slug",
            "replicas",
            "min_replicas",
            "max_replicas",
            "target_in_flight",
            "scale_down_delay_s",
            "scale_to_zero_after_s",
        )
    )
    if not autoscaled:
        return []
    try:
        loads = load.read_all()
    except load.LoadUnknown as error:  # no figures is not "no load": decide nothing this tick
        logger.warning("autoscaler: the load reports cannot be read (%s)", error)
        return []
    ready = _ready_counts([s.id for s in autoscaled])
    made = []
    for service in autoscaled:
        key = _STATE_KEY.format(service.id)
        windows = cache.get(key) or Windows()
        reported = loads.get(service.id)
        decision = decide(
            windows, policy_of(service), now=now, in_flight=reported.in_flight if reported else 0.0,
            ready=ready.get(service.id, 0),
        )  # fmt: skip
        cache.set(key, windows, timeout=max(3600, int(settings.MODELBAY_AUTOSCALE_STABLE_WINDOW_S * 2)))
        if decision.replicas != service.replicas and services.service_autoscale(
            service_id=service.id,
            replicas=decision.replicas,
            in_flight=round(decision.in_flight, 2),
            mode=decision.mode,
            reason=decision.reason,
        ):
            logger.info(
                "autoscaled %s: %d -> %d (%s)", service.slug, service.replicas, decision.replicas, decision.reason
            )
            made.append(decision)
    return made
