"""The gateway's routing table: service -> versions by weight -> ready instances.

Tables live in process memory and are reloaded when the shared generation token
changes (see modelbay.core.generation), so the hot path makes no database query.
"""

import hashlib
import itertools
import random
import time
from dataclasses import dataclass, field

from controlplane.choices import InstanceStatus
from controlplane.models import Deployment, Instance, Service
from modelbay.core.generation import GenerationCache
from runtime.client import auth_header

# An instance that refused a connection is skipped by this process for a while, so
# calls do not keep paying for a dead one before reconcile takes it out.
SUSPECT_S = 5.0
# An endpoint where another instance answered is not called again for this instance
# for a while (the table is reloaded at once; reconcile mends a row that is wrong).
WRONG_S = 30.0


@dataclass(frozen=True)
class Target:
    instance_id: str
    endpoint: str
    zone: str
    # The instance's credential: a secret, never in a repr or a log line.
    credential: str = field(default="", repr=False)
    # Built once per table load, sent as they are with every call (runtime.client).
    auth: bytes = field(init=False, repr=False, compare=False)
    instance: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "auth", auth_header(self.credential))
        object.__setattr__(self, "instance", self.instance_id.encode())


@dataclass
class VersionRoute:
    version: int
    weight: int
    targets: tuple[Target, ...]
    shadow_percent: int = 0  # share of the calls also mirrored here, answers discarded
    _next: itertools.count = field(default_factory=itertools.count, repr=False)

    def ordered_targets(self) -> list[Target]:
        """Round robin: a different first target on every call, the rest as fallbacks."""
        start = next(self._next) % len(self.targets)
        return list(self.targets[start:] + self.targets[:start])


@dataclass(frozen=True)
class Route:
    organization_id: int
    service_id: int
    slug: str
    versions: tuple[VersionRoute, ...]
    timeout_s: float = 30.0  # a call's deadline (Service.call_timeout_s)
    # min_replicas 0: with no ready instance, a call is held while one starts (inference.coldstart).
    scales_to_zero: bool = False

    def pick_version(self, version: int | None = None, *, route_key: str | None = None) -> VersionRoute | None:
        """The version a call goes to: the one asked for; else, with a route key, the
        version whose share of the hash space holds the key; else weighted random.
        Only versions with ready instances are candidates."""
        candidates = [v for v in self.versions if v.targets]
        if version is not None:
            return next((v for v in candidates if v.version == version), None)
        weighted = [v for v in candidates if v.weight > 0] or candidates
        if not weighted:
            return None
        if len(weighted) == 1:
            return weighted[0]
        if route_key:
            return _by_key(weighted, route_key)
        return random.choices(weighted, weights=[max(v.weight, 1) for v in weighted])[0]

    def shadows_for_this_call(self) -> list[VersionRoute]:
        """The versions this call is mirrored to: each with its shadow share, by chance."""
        return [v for v in self.versions if v.shadow_percent and v.targets and random.random() * 100 < v.shadow_percent]


def _by_key(versions: list[VersionRoute], route_key: str) -> VersionRoute:
    """Sticky routing: the key hashes to a point in [0, total weight); versions own
    consecutive ranges in version order. While the weights stay the same a key always
    lands on the same version; when a newer version's weight grows, only the keys in
    the range it takes over move, and they move to it."""
    total = sum(v.weight for v in versions)
    point = int.from_bytes(hashlib.blake2b(route_key.encode(), digest_size=8).digest(), "big") % (total * 100)
    upper = 0
    for version in versions:
        upper += version.weight * 100
        if point < upper:
            return version
    return versions[-1]


def _load(organization_id: int, slug: str) -> Route | None:
    service = Service.objects.filter(organization_id=organization_id, slug=slug, deleted_at__isnull=True).first()
    if service is None:
        return None
    ready = Instance.objects.filter(deployment__service=service, status=InstanceStatus.READY).order_by("zone", "id")
    targets: dict[int, list[Target]] = {}
    for instance in ready:
        targets.setdefault(instance.deployment_id, []).append(
            Target(instance.id, instance.endpoint, instance.zone, instance.credential)
        )
    versions = tuple(
        VersionRoute(d.model_version.version, d.weight, tuple(targets.get(d.pk, ())), d.shadow_percent)
        for d in Deployment.objects.filter(service=service, retired_at__isnull=True).select_related("model_version")
    )
    return Route(
        organization_id, service.pk, service.slug, versions, service.call_timeout_s(), service.min_replicas == 0
    )


def _load_key(key: tuple[int, str]) -> Route | None:
    return _load(*key)


_routes: GenerationCache[tuple[int, str], Route] = GenerationCache(_load_key)
_suspects: dict[str, float] = {}
# (instance id, endpoint) -> until when: another instance answered there.
_wrong: dict[tuple[str, str], float] = {}


def route_for(organization_id: int, slug: str, *, gen: str) -> Route | None:
    """The routing table of a service of this organization, or None when it has none.

    ``gen`` is the current generation token: a table loaded under another is reloaded.
    """
    return _routes.get((organization_id, slug), gen=gen)


async def aroute_for(organization_id: int, slug: str, *, gen: str) -> Route | None:
    """``route_for`` for the asynchronous gateway (a load runs off the event loop)."""
    return await _routes.aget((organization_id, slug), gen=gen)


def mark_suspect(target: Target) -> None:
    _suspects[target.instance_id] = time.monotonic() + SUSPECT_S


def mark_wrong(route: Route, target: Target) -> None:
    """Another instance answered at this target's endpoint (its port was reused): the
    route is stale. The endpoint is not called for this instance for a while (so this
    happens once per WRONG_S), and this route is loaded again on its next call."""
    _wrong[(target.instance_id, target.endpoint)] = time.monotonic() + WRONG_S
    mark_suspect(target)
    _routes.forget((route.organization_id, route.slug))


def healthy_first(targets: list[Target]) -> list[Target]:
    """Targets not recently refusing connections first, then the rest (better than nothing);
    targets where another instance answered are left out."""
    if not _suspects and not _wrong:
        return targets
    now = time.monotonic()
    if _wrong:
        targets = [t for t in targets if _wrong.get((t.instance_id, t.endpoint), 0) < now]
        for key, until in list(_wrong.items()):  # expired: back to the fast path above
            if until < now:
                _wrong.pop(key, None)
    good = [t for t in targets if _suspects.get(t.instance_id, 0) < now]
    return good + [t for t in targets if t not in good]
