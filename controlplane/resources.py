"""What one instance of a service may use: CPU, memory and processes.

A service stores only what its owner asked for (``{"cpu": 2}``); the rest comes from
the installation's defaults, so changing a default reaches every service that did not
choose otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class Resources:
    cpu: float
    memory_mb: int
    pids: int

    def as_dict(self) -> dict:
        return {"cpu": self.cpu, "memory_mb": self.memory_mb}


def effective(requested: dict | None) -> Resources:
    """The limits an instance runs with: the service's request over the defaults."""
    requested = requested or {}
    return Resources(
        cpu=float(requested.get("cpu", settings.MODELBAY_DEFAULT_CPU)),
        memory_mb=int(requested.get("memory_mb", settings.MODELBAY_DEFAULT_MEMORY_MB)),
        pids=settings.MODELBAY_PIDS_LIMIT,
    )
