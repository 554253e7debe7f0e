from django.db import models


class ServiceStatus(models.TextChoices):
    PROVISIONING = "provisioning"
    READY = "ready"
    DEGRADED = "degraded"
    FAILED = "failed"
    STOPPED = "stopped"


class InstanceStatus(models.TextChoices):
    STARTING = "starting"
    READY = "ready"
    UNHEALTHY = "unhealthy"
    STOPPED = "stopped"
    FAILED = "failed"


# Instances the control plane keeps running (the others are finished with).
LIVE_INSTANCE_STATUSES = (InstanceStatus.STARTING, InstanceStatus.READY, InstanceStatus.UNHEALTHY)
