from django.db import models


class ServiceStatus(models.TextChoices):
    PROVISIONING = "provisioning"
    READY = "ready"
    DEGRADED = "degraded"
    FAILED = "failed"
    STOPPED = "stopped"


class ServiceNetwork(models.TextChoices):
    """What an instance of the service may connect to; its sandbox is set when it starts."""

    NONE = "none", "No network (default)"
    EGRESS = "egress", "Outbound access (egress)"


class InstanceStatus(models.TextChoices):
    STARTING = "starting"
    READY = "ready"
    UNHEALTHY = "unhealthy"
    STOPPED = "stopped"
    FAILED = "failed"
    # Out of the routing table (a scale-down): it finishes the calls it has, then stops at
    # its ``drain_until``.
    DRAINING = "draining"


# Instances the control plane keeps running (the others are finished with).
LIVE_INSTANCE_STATUSES = (InstanceStatus.STARTING, InstanceStatus.READY, InstanceStatus.UNHEALTHY)
# Instances whose process or container must not be taken for an orphan.
OWNED_INSTANCE_STATUSES = LIVE_INSTANCE_STATUSES + (InstanceStatus.DRAINING,)


class ReleaseStatus(models.TextChoices):
    STARTING = "starting"  # the new version's instances are coming up
    ROLLING = "rolling"  # its weight moves through the steps
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"  # the new version never became ready


ACTIVE_RELEASE_STATUSES = (ReleaseStatus.STARTING, ReleaseStatus.ROLLING, ReleaseStatus.PAUSED)


class AutoscalerMode(models.TextChoices):
    """Which of the autoscaler's windows a decision followed (controlplane.autoscaler)."""

    STABLE = "stable"  # the load averaged over the stable window
    PANIC = "panic"  # a burst, seen over the short panic window
    COLD_START = "cold_start"  # a call arrived while the service ran no instance
