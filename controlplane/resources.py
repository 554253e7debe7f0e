"""What one instance of a service may use: CPU, memory and processes.

A service stores only what its owner asked for (``{"cpu": 2}``); the rest comes from
the installation's defaults, so changing a default reaches every service that did not
choose otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from modelbay.core.errors import InvalidRequest

MIN_CPU = 0.1
MIN_MEMORY_MB = 64
# CPU is limited as a quota of run time per period (Docker's --cpu-quota, cgroup v2's cpu.max).
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class Resources:
    cpu: float
    memory_mb: int
    pids: int

    def as_dict(self) -> dict:
        return {"cpu": self.cpu, "memory_mb": self.memory_mb}

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * 1024 * 1024

    @property
    def cpu_quota_us(self) -> int:
        """Run time per CPU_PERIOD_US: cpu × the period, at least 1 ms."""
        return max(1000, int(self.cpu * CPU_PERIOD_US))


def effective(requested: dict | None) -> Resources:
    """The limits an instance runs with: the service's request over the defaults."""
    requested = requested or {}
    return Resources(
        cpu=float(requested.get("cpu", settings.MODELBAY_DEFAULT_CPU)),
        memory_mb=int(requested.get("memory_mb", settings.MODELBAY_DEFAULT_MEMORY_MB)),
        pids=settings.MODELBAY_PIDS_LIMIT,
    )


def limits() -> dict[str, tuple[float, float]]:
    """What an owner may ask for, per resource: ``(least, most)``; the most from the settings."""
    return {
        "cpu": (MIN_CPU, settings.MODELBAY_MAX_CPU),
        "memory_mb": (MIN_MEMORY_MB, settings.MODELBAY_MAX_MEMORY_MB),
    }


def check(requested: dict) -> dict:
    """The owner's request, validated and normalized (cpu a float, memory_mb an int).

    ``None`` for a resource means "the default" and is kept, for ``merge`` to apply. A bad
    request raises ``InvalidRequest`` naming the field, e.g. ``resources.cpu``.
    """
    if not isinstance(requested, dict):
        raise InvalidRequest('resources must be an object: {"cpu": 1, "memory_mb": 1024}.', field="resources")
    bounds = limits()
    unknown = sorted(set(requested) - set(bounds))
    if unknown:
        raise _invalid(unknown[0], f"is not a resource; give {' and/or '.join(bounds)}.")
    checked = {}
    for name, value in requested.items():
        if value is not None:
            value = _checked_value(name, value, *bounds[name])
        checked[name] = value
    return checked


def merge(stored: dict, requested: dict) -> dict:
    """A checked request over the stored one: a resource given replaces, ``None`` removes it."""
    merged = {**stored, **requested}
    return {name: value for name, value in merged.items() if value is not None}


def _checked_value(name: str, value, least: float, most: float) -> float | int:
    whole = name == "memory_mb"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid(name, "must be a whole number." if whole else "must be a number.")
    if not least <= value <= most:
        raise _invalid(name, f"must be between {least} and {most}; got {value}.")
    if whole and value != int(value):
        raise _invalid(name, "must be a whole number.")
    return int(value) if whole else float(value)


def _invalid(name: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"resources.{name} {message}", field=f"resources.{name}")
