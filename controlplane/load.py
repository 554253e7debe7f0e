"""Calls in flight per service, as the gateway processes report them: what the autoscaler
scales on.

Each web process counts its calls in flight per service (``inference.load``) and, every
``MODELBAY_LOAD_REPORT_S``, publishes here for each service it served lately the calls it
had in flight on average over that interval and the calls in flight at that moment. A
reader adds up the fresh reports of every process; a report older than :func:`fresh_s`
(three intervals) is ignored, so a process that died or went idle stops counting by itself.

Two stores, one per shape of the site:

- with ``REDIS_URL``: a hash per service (``mb:load:<service id>``), a field per process,
  its value ``"<average> <now> <time.time()>"``; the hash expires a few seconds after its
  last report. A sorted set (``mb:load:services``) lists the services reported lately, for
  :func:`read_all`. One pipeline per publish.
- without (the embedded default): a small JSON file per process under
  ``MODELBAY_RUN_DIR/load``, replaced atomically at each publish; a reader globs them and
  removes the files of processes gone for a while.

Publishing never raises: Redis or a disk away costs the reports, not the calls (logged once
while it lasts). Reading raises :class:`LoadUnknown` when the store cannot be read, so that
an autoscaler tells "no load" from "no figures".
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import redis
from django.conf import settings

from modelbay.core.cache import Outage

logger = logging.getLogger(__name__)

_REDIS_ERRORS = (redis.RedisError, OSError)
_KEY = "mb:load:{}"
_INDEX = "mb:load:services"
# A file store's report this much older than fresh is removed by the next reader.
_FORGET_AFTER_S = 60.0


@dataclass(frozen=True)
class Load:
    """A service's calls in flight, summed over the gateway processes that reported it."""

    in_flight: float  # on average over each process's last report interval
    now: int  # at the moment of each process's last report
    processes: int  # the processes with a fresh report of the service
    at: float  # when the newest of them was made (time.time())


class LoadUnknown(Exception):
    """The reports cannot be read (Redis away, the run folder unreadable)."""


def fresh_s() -> float:
    """How old a report may be and still count: three report intervals."""
    return 3 * settings.MODELBAY_LOAD_REPORT_S


def _encode(in_flight: float, now: int, at: float) -> str:
    return f"{in_flight:.3f} {now} {at:.3f}"


def _add_up(reports: list[tuple[float, int, float]]) -> Load | None:
    """The fresh ones of (average, now, at) reports, added up; None when none is fresh."""
    oldest = time.time() - fresh_s()
    fresh = [report for report in reports if report[2] >= oldest]
    if not fresh:
        return None
    return Load(
        in_flight=round(sum(r[0] for r in fresh), 3),
        now=sum(r[1] for r in fresh),
        processes=len(fresh),
        at=max(r[2] for r in fresh),
    )


class RedisStore:
    def __init__(self, url: str):
        wait_s = settings.MODELBAY_REDIS_TIMEOUT_S
        self.redis = redis.Redis.from_url(url, socket_connect_timeout=wait_s, socket_timeout=wait_s)
        self.outage = Outage("Redis (load reports)")

    def publish(self, process: str, loads: dict[int, tuple[float, int]]) -> None:
        if not loads:
            return
        at = time.time()
        keep_s = math.ceil(fresh_s()) + 2
        pipe = self.redis.pipeline(transaction=False)
        for service_id, (in_flight, now) in loads.items():
            key = _KEY.format(service_id)
            pipe.hset(key, process, _encode(in_flight, now, at))
            pipe.expire(key, keep_s)
        pipe.zadd(_INDEX, {str(service_id): at for service_id in loads})
        pipe.expire(_INDEX, keep_s)
        try:
            pipe.execute()
        except _REDIS_ERRORS as error:
            self.outage.failed(error)
            return
        self.outage.passed()

    def read(self, service_id: int) -> Load | None:
        return self.read_many([service_id]).get(service_id)

    def read_all(self) -> dict[int, Load]:
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.zremrangebyscore(_INDEX, "-inf", time.time() - fresh_s())
            pipe.zrange(_INDEX, 0, -1)
            service_ids = [int(member) for member in pipe.execute()[1]]
        except _REDIS_ERRORS as error:
            raise LoadUnknown(f"the load reports cannot be read from Redis: {error}") from error
        return self.read_many(service_ids)

    def read_many(self, service_ids: list[int]) -> dict[int, Load]:
        try:
            pipe = self.redis.pipeline(transaction=False)
            for service_id in service_ids:
                pipe.hgetall(_KEY.format(service_id))
            hashes = pipe.execute()
        except _REDIS_ERRORS as error:
            raise LoadUnknown(f"the load reports cannot be read from Redis: {error}") from error
        found, stale = {}, {}
        forget = time.time() - fresh_s()
        for service_id, fields in zip(service_ids, hashes):
            reports = []
            for process, value in fields.items():
                in_flight, now, at = value.split()
                reports.append((float(in_flight), int(now), float(at)))
                if float(at) < forget:
                    stale.setdefault(service_id, []).append(process)
            if (load := _add_up(reports)) is not None:
                found[service_id] = load
        if stale:  # processes gone from a service others still report: their fields go
            self._forget(stale)
        return found

    def _forget(self, stale: dict[int, list[bytes]]) -> None:
        try:
            pipe = self.redis.pipeline(transaction=False)
            for service_id, processes in stale.items():
                pipe.hdel(_KEY.format(service_id), *processes)
            pipe.execute()
        except _REDIS_ERRORS:
            pass  # ignored when read anyway; the next reader tries again


class FileStore:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.outage = Outage(f"The load reports' folder {self.folder}")

    def publish(self, process: str, loads: dict[int, tuple[float, int]]) -> None:
        if not loads:
            return
        report = {"at": time.time(), "loads": {str(sid): [round(avg, 3), now] for sid, (avg, now) in loads.items()}}
        path = self.folder / f"{process}.json"
        partial = self.folder / f".{process}.json.tmp"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps(report, separators=(",", ":")))
            os.replace(partial, path)
        except OSError as error:
            self.outage.failed(error)
            return
        self.outage.passed()

    def read(self, service_id: int) -> Load | None:
        return self.read_all().get(service_id)

    def read_many(self, service_ids: list[int]) -> dict[int, Load]:
        loads = self.read_all()  # one folder for every service: read whole
        return {service_id: loads[service_id] for service_id in service_ids if service_id in loads}

    def read_all(self) -> dict[int, Load]:
        reports: dict[int, list[tuple[float, int, float]]] = {}
        forget = time.time() - fresh_s() - _FORGET_AFTER_S
        try:
            paths = list(self.folder.glob("*.json"))
        except OSError as error:
            raise LoadUnknown(f"the load reports cannot be read from {self.folder}: {error}") from error
        for path in paths:
            try:
                report = json.loads(path.read_text())
            except FileNotFoundError:
                continue  # replaced or removed meanwhile
            except (OSError, ValueError):
                logger.warning("unreadable load report %s", path, exc_info=True)
                continue
            if report["at"] < forget:
                path.unlink(missing_ok=True)  # its process is long gone
                continue
            for service_id, (in_flight, now) in report["loads"].items():
                reports.setdefault(int(service_id), []).append((in_flight, now, report["at"]))
        found = {service_id: _add_up(service_reports) for service_id, service_reports in reports.items()}
        return {service_id: load for service_id, load in found.items() if load is not None}


@lru_cache(maxsize=4)
def _store(redis_url: str, run_dir: Path) -> RedisStore | FileStore:
    return RedisStore(redis_url) if redis_url else FileStore(run_dir / "load")


def store() -> RedisStore | FileStore:
    """This site's store: Redis with ``REDIS_URL``, else files in ``MODELBAY_RUN_DIR/load``."""
    return _store(settings.REDIS_URL, Path(settings.MODELBAY_RUN_DIR))


def publish(process: str, loads: dict[int, tuple[float, int]]) -> None:
    """Report ``process``'s calls in flight: ``{service id: (average over its last interval,
    in flight now)}``. Never raises: a store that is away loses the report (logged once)."""
    store().publish(process, loads)


def read(service_id: int) -> Load | None:
    """A service's calls in flight over every process's fresh report; None when no process
    reported it lately (no calls for a few intervals). Raises :class:`LoadUnknown`."""
    return store().read(service_id)


def read_many(service_ids: list[int]) -> dict[int, Load]:
    """Those of these services reported lately, as :func:`read`. Raises :class:`LoadUnknown`."""
    return store().read_many(service_ids)


def read_all() -> dict[int, Load]:
    """Every service reported lately, as :func:`read`. Raises :class:`LoadUnknown`."""
    return store().read_all()
