"""Zones' health: whether each zone's engine answered the worker's last look.

Zones are the platform's, not a tenant's: every organization's members may read them.
"""

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from controlplane.models import Zone


def zone_health_record(*, unreachable: dict[str, str]) -> None:
    """Record what one look at the engines found (every reconcile pass over all services):
    the configured zones, each reachable unless ``unreachable`` names it with the reason.
    ``changed_at`` moves only when a zone's reachability does; zones no longer configured
    are forgotten."""
    now = timezone.now()
    names = list(settings.MODELBAY_ZONES)
    # Several workers may record at once: a row made by another is left as it is.
    Zone.objects.bulk_create([Zone(name=name, checked_at=now, changed_at=now) for name in names], ignore_conflicts=True)
    for name in names:
        reachable = name not in unreachable
        zone = Zone.objects.filter(name=name)
        zone.exclude(reachable=reachable).update(reachable=reachable, changed_at=now)
        zone.update(reason=unreachable.get(name, ""), checked_at=now)
    Zone.objects.exclude(name__in=names).delete()


def zone_list() -> QuerySet[Zone]:
    """Every zone as last recorded, by name."""
    return Zone.objects.order_by("name")
