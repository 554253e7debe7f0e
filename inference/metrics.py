"""Per-version call metrics, counted on the hot path without a database write per call.

Each gateway process adds calls up in memory, per service version and 10-second
interval (count, errors, latency histogram); about once a second a thread of the process
(never a request) adds the totals to ``VersionMetrics`` rows with atomic increments. The
rollout analysis and the metrics API read those rows.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from datetime import UTC, datetime

from django.db import transaction
from django.db.models import F

from controlplane.models import VersionMetrics
from modelbay.core.background import Flusher

logger = logging.getLogger(__name__)

_BOUNDS_S = [bound / 1000 for bound in VersionMetrics.BUCKETS_MS]
_FIELDS = VersionMetrics.bucket_fields()

# (service_id, version, interval start epoch) -> [requests, errors, *bucket counts]
_pending: dict[tuple[int, int, int], list[int]] = {}
_lock = threading.Lock()


def record(service_id: int, version: int, *, error: bool, elapsed_s: float) -> None:
    """Count one call (in memory: the flusher thread stores it)."""
    start = int(time.time()) // VersionMetrics.INTERVAL_S * VersionMetrics.INTERVAL_S
    key = (service_id, version, start)
    with _lock:
        counts = _pending.get(key)
        if counts is None:
            counts = _pending[key] = [0] * (2 + len(_FIELDS))
        counts[0] += 1
        counts[1] += error
        counts[2 + bisect.bisect_left(_BOUNDS_S, elapsed_s)] += 1
    flusher.wake()


def flush() -> None:
    """Add the counts kept in memory to the database (kept for the next try if that fails)."""
    with _lock:
        if not _pending:
            return
        batch = dict(_pending)
        _pending.clear()
    try:
        with transaction.atomic():
            for (service_id, version, start), counts in sorted(batch.items()):
                _add(service_id, version, start, counts)
    except Exception:  # the database is away: keep the counts, the next flush tries again
        logger.warning("could not store call metrics; keeping them for the next flush", exc_info=True)
        with _lock:
            for key, counts in batch.items():
                kept = _pending.setdefault(key, [0] * len(counts))
                for i, value in enumerate(counts):
                    kept[i] += value


def _add(service_id: int, version: int, start: int, counts: list[int]) -> None:
    when = datetime.fromtimestamp(start, UTC)
    increments = {"requests": F("requests") + counts[0], "errors": F("errors") + counts[1]}
    increments.update({name: F(name) + n for name, n in zip(_FIELDS, counts[2:]) if n})
    rows = VersionMetrics.objects.filter(service_id=service_id, version=version, start=when)
    if rows.update(**increments):
        return
    _, created = VersionMetrics.objects.get_or_create(
        service_id=service_id,
        version=version,
        start=when,
        defaults={"requests": counts[0], "errors": counts[1], **dict(zip(_FIELDS, counts[2:]))},
    )
    if not created:  # another process made the row in between
        rows.update(**increments)


flusher = Flusher("call-metrics", flush)
