from functools import cache

from django.conf import settings
from django.utils.module_loading import import_string

from controlplane.backends.base import BackendError, InstanceSpec, Inventory, RunningInstance, RuntimeBackend

BACKENDS = {
    "local": "controlplane.backends.local.LocalBackend",
    "docker": "controlplane.backends.docker.DockerBackend",
}

__all__ = ["BackendError", "InstanceSpec", "Inventory", "RunningInstance", "RuntimeBackend", "get_backend"]


@cache
def get_backend() -> RuntimeBackend:
    """The backend named by MODELBAY_RUNTIME_BACKEND (one instance per process)."""
    name = settings.MODELBAY_RUNTIME_BACKEND
    if name not in BACKENDS:
        raise ValueError(f"MODELBAY_RUNTIME_BACKEND: unknown backend {name!r}; choose from {sorted(BACKENDS)}")
    return import_string(BACKENDS[name])()
