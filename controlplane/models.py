import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Organization
from controlplane.choices import (
    ACTIVE_RELEASE_STATUSES,
    AutoscalerMode,
    InstanceStatus,
    ReleaseStatus,
    ServiceNetwork,
    ServiceStatus,
)


class Model(models.Model):
    """A model an organization uploaded; its uploads are its versions."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="models")
    slug = models.SlugField(max_length=64)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["organization", "slug"], name="unique_model_slug")]

    def __str__(self):
        return self.slug


class ModelVersion(models.Model):
    """One uploaded package: the artifact (stored once by sha256) and its parsed manifest."""

    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    framework = models.CharField(max_length=16)
    sha256 = models.CharField(max_length=64, db_index=True)
    size = models.BigIntegerField()
    filename = models.CharField(max_length=255)
    manifest = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["version"]
        constraints = [models.UniqueConstraint(fields=["model", "version"], name="unique_model_version")]

    def __str__(self):
        return f"{self.model.slug} v{self.version}"


class Service(models.Model):
    """A deployed inference endpoint: desired replicas of one or more model versions.

    ``replicas`` is the desired count per version, which reconcile makes real. A service
    is autoscaled when ``max_replicas > min_replicas``: the autoscaler then sets
    ``replicas`` within those bounds from the load (``services.service_autoscale``).
    Otherwise it is fixed, and min = max = replicas, as its owner set them.
    """

    MAX_TARGET_IN_FLIGHT = 1000
    MAX_SCALE_DOWN_DELAY_S = 3600
    MIN_SCALE_TO_ZERO_AFTER_S = 5
    MAX_SCALE_TO_ZERO_AFTER_S = 7 * 24 * 3600

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="services")
    slug = models.SlugField(max_length=64)
    name = models.CharField(max_length=200)
    model = models.ForeignKey(Model, on_delete=models.PROTECT, related_name="services")
    replicas = models.PositiveIntegerField(default=1)
    min_replicas = models.PositiveIntegerField(default=1)
    max_replicas = models.PositiveIntegerField(default=1)
    # Calls in flight one replica should carry (None: MODELBAY_AUTOSCALE_TARGET_IN_FLIGHT).
    target_in_flight = models.PositiveIntegerField(null=True, blank=True)
    # How long the load must have asked for fewer replicas before they are removed.
    scale_down_delay_s = models.PositiveIntegerField(default=60)
    # With min_replicas 0: how long the service must have had no call before it runs no
    # instance at all; the next call is held by the gateway while one starts (a cold start).
    scale_to_zero_after_s = models.PositiveIntegerField(default=300)
    # Per-instance limits the owner asked for ({"cpu": 1, "memory_mb": 1024}); see resources.py.
    resources = models.JSONField(default=dict, blank=True)
    # "none": instances can open no connection at all; "egress": they may call out to the
    # internet, never to the platform's services or other instances.
    network = models.CharField(max_length=16, choices=ServiceNetwork.choices, default=ServiceNetwork.NONE)
    # A call's deadline in seconds (None: MODELBAY_PREDICT_TIMEOUT); see call_timeout_s.
    timeout_s = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=ServiceStatus.choices, default=ServiceStatus.PROVISIONING)
    error = models.TextField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Set when the owner deletes the service; the worker then removes its instances and the row.
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "slug"], condition=Q(deleted_at__isnull=True), name="unique_live_service_slug"
            )
        ]

    def call_timeout_s(self) -> float:
        """How long a call to this service may take in all, from arrival to answer."""
        return float(self.timeout_s or settings.MODELBAY_PREDICT_TIMEOUT)

    @property
    def is_autoscaled(self) -> bool:
        return self.max_replicas > self.min_replicas

    def effective_target_in_flight(self) -> int:
        """The calls in flight one replica should carry: the service's own, or the default."""
        return self.target_in_flight or settings.MODELBAY_AUTOSCALE_TARGET_IN_FLIGHT

    def __str__(self):
        return self.slug

    def live_deployments(self) -> list["Deployment"]:
        """The versions it runs, not those being taken out; from its prefetched
        deployments when the caller loaded them (see selectors.service_list)."""
        return [deployment for deployment in self.deployments.all() if deployment.retired_at is None]


class AutoscalerDecision(models.Model):
    """A change of a service's desired replicas by the autoscaler, with the load it saw
    and why (``services.service_autoscale`` records one per change)."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="autoscaler_decisions")
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    from_replicas = models.PositiveIntegerField()
    to_replicas = models.PositiveIntegerField()
    in_flight = models.FloatField()  # the calls in flight the decision was based on
    mode = models.CharField(max_length=16, choices=AutoscalerMode.choices)
    reason = models.TextField()

    class Meta:
        ordering = ["-at", "-id"]
        # A service's newest decisions (its page, the API); ``at`` alone serves pruning by age.
        indexes = [models.Index(fields=["service", "-at"], name="autoscaler_decision_recent")]

    def __str__(self):
        return f"{self.service.slug}: {self.from_replicas} -> {self.to_replicas} ({self.mode})"


class ColdStart(models.Model):
    """A service at zero woken by a call: when an instance was asked for, and when the
    first one was ready (None while it starts, or if it never was)."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="cold_starts")
    requested_at = models.DateTimeField(default=timezone.now, db_index=True)
    ready_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at", "-id"]
        indexes = [models.Index(fields=["service", "-requested_at"], name="cold_start_recent")]

    @property
    def seconds(self) -> float | None:
        """From the call's request to a ready instance."""
        return (self.ready_at - self.requested_at).total_seconds() if self.ready_at else None

    def __str__(self):
        return f"{self.service.slug} at {self.requested_at:%Y-%m-%d %H:%M:%S}"


class Zone(models.Model):
    """A zone's engine as the worker last found it (every reconcile pass): whether it answers."""

    name = models.CharField(max_length=64, unique=True)
    reachable = models.BooleanField(default=True)
    reason = models.TextField(blank=True)  # why not, while it is not
    checked_at = models.DateTimeField(default=timezone.now)
    changed_at = models.DateTimeField(default=timezone.now)  # since when it is as it is

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return f"{self.name} ({'reachable' if self.reachable else 'unreachable'})"


class Deployment(models.Model):
    """One model version running in a service, with its share of the traffic (0-100)."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="deployments")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="deployments")
    weight = models.PositiveSmallIntegerField(default=100)
    created_at = models.DateTimeField(auto_now_add=True)
    # Percent of the service's calls also sent to this version, answers discarded (a
    # version with no weight measured on real traffic).
    shadow_percent = models.PositiveSmallIntegerField(default=0)
    # Set when the version is taken out of the service: it leaves the routing table at
    # once; its instances finish their calls and stop after MODELBAY_DRAIN_S.
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["model_version__version"]
        constraints = [models.UniqueConstraint(fields=["service", "model_version"], name="unique_deployment")]

    def __str__(self):
        return f"{self.service.slug} v{self.model_version.version} ({self.weight}%)"


def _instance_id() -> str:
    return "i-" + secrets.token_hex(6)


def new_credential() -> str:
    """A random credential for an instance's runtime (43 URL-safe characters)."""
    return secrets.token_urlsafe(32)


class Instance(models.Model):
    """One runtime process or container serving a deployment in a zone."""

    id = models.CharField(primary_key=True, max_length=20, default=_instance_id, editable=False)
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="instances")
    zone = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=InstanceStatus.choices, default=InstanceStatus.STARTING)
    endpoint = models.CharField(max_length=512, blank=True)  # http://host:port or unix:///path/runtime.sock
    # What the gateway and the probes present to this instance's runtime (Authorization:
    # Bearer ...); replaced at every start. A secret: never in serializers or logs.
    credential = models.CharField(max_length=64, default=new_credential, editable=False)
    error = models.TextField(null=True, blank=True)
    restarts = models.PositiveIntegerField(default=0)
    # Starts in a row whose process/container exited before it was ready (reset when ready).
    failed_starts = models.PositiveIntegerField(default=0)
    # The limits the instance was started or last resized with (resources.Resources.as_dict()).
    resources = models.JSONField(default=dict, blank=True)
    # The service's network when the instance was started; a change needs a new start.
    network = models.CharField(max_length=16, choices=ServiceNetwork.choices, default=ServiceNetwork.NONE)
    started_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    # A draining instance (a scale-down) is stopped then: its calls in flight have ended.
    drain_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self):
        return self.id


class VersionMetrics(models.Model):
    """Calls to one version of a service during one interval, with a latency histogram.

    Gateway processes count calls in memory and add them here about once a second
    (inference/metrics.py): no write per call. ``service_id`` is a plain number, not a
    foreign key, so that counting never waits on a service's row.
    """

    INTERVAL_S = 10
    # Upper bounds of the latency buckets, in milliseconds; one more bucket holds the rest.
    BUCKETS_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)

    service_id = models.BigIntegerField()
    version = models.PositiveIntegerField()
    start = models.DateTimeField()
    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)  # 5xx answers and timeouts
    le_1ms = models.BigIntegerField(default=0)
    le_2ms = models.BigIntegerField(default=0)
    le_5ms = models.BigIntegerField(default=0)
    le_10ms = models.BigIntegerField(default=0)
    le_25ms = models.BigIntegerField(default=0)
    le_50ms = models.BigIntegerField(default=0)
    le_100ms = models.BigIntegerField(default=0)
    le_250ms = models.BigIntegerField(default=0)
    le_500ms = models.BigIntegerField(default=0)
    le_1000ms = models.BigIntegerField(default=0)
    le_2500ms = models.BigIntegerField(default=0)
    le_5000ms = models.BigIntegerField(default=0)
    le_10000ms = models.BigIntegerField(default=0)
    over_10000ms = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["service_id", "version", "start"], name="unique_version_metrics")
        ]
        indexes = [models.Index(fields=["service_id", "start"])]

    @classmethod
    def bucket_fields(cls) -> list[str]:
        return [f"le_{bound}ms" for bound in cls.BUCKETS_MS] + [f"over_{cls.BUCKETS_MS[-1]}ms"]


class ServiceSample(models.Model):
    """A service's calls in flight and replicas during one interval, for its charts (the
    worker records one per live service every ``INTERVAL_S``: ``controlplane.series``)."""

    INTERVAL_S = 10

    service_id = models.BigIntegerField()  # a plain number, as in VersionMetrics: never a lock
    start = models.DateTimeField()
    in_flight = models.FloatField(null=True)  # None: the load reports could not be read
    desired = models.PositiveIntegerField()
    ready = models.PositiveIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["service_id", "start"], name="unique_service_sample")]


class Release(models.Model):
    """A gray release: a new version takes a growing share of a service's calls, step by
    step, while its error rate and latency stay within bounds; otherwise it is rolled back.

    Beat advances it (controlplane.releases.advance_all); every decision is kept in
    ``history`` with the figures it used.
    """

    DEFAULT_MIN_CALLS = 100
    DEFAULT_MAX_ERROR_RATE_INCREASE = 0.01
    DEFAULT_MAX_P99_RATIO = 1.5

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="releases")
    from_version = models.PositiveIntegerField()
    version = models.PositiveIntegerField()
    steps = models.JSONField()  # the new version's weights, ascending, ending at 100
    interval_s = models.PositiveIntegerField()
    max_error_rate = models.FloatField()
    max_p99_ms = models.FloatField(null=True, blank=True)
    # Compared with the version it replaces: the new version's error rate may exceed the old
    # one's by this much (0.01: one point), its p99 may be this many times the old one's;
    # max_error_rate and max_p99_ms stay the ceilings.
    max_error_rate_increase = models.FloatField(default=DEFAULT_MAX_ERROR_RATE_INCREASE)
    max_p99_ratio = models.FloatField(default=DEFAULT_MAX_P99_RATIO)
    # A step is judged only once each version has this many calls in it; until then it waits.
    min_calls = models.PositiveIntegerField(default=DEFAULT_MIN_CALLS)
    # Before its first step, the new version gets this share of the calls as shadow
    # traffic for one interval, and is judged on it (0: no shadow phase).
    shadow_percent = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(max_length=16, choices=ReleaseStatus.choices, default=ReleaseStatus.STARTING)
    step = models.IntegerField(default=-1)  # index into steps; -1 until the first step
    step_started_at = models.DateTimeField(null=True, blank=True)
    # Intervals the current step has waited beyond its first for enough calls to judge.
    waits = models.PositiveSmallIntegerField(default=0)
    reason = models.TextField(blank=True)
    history = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["service"],
                condition=Q(status__in=ACTIVE_RELEASE_STATUSES),
                name="one_active_release_per_service",
            )
        ]

    def __str__(self):
        return f"{self.service.slug} v{self.from_version} -> v{self.version} ({self.status})"

    @property
    def next_check_at(self):
        """When beat next looks at the calls of a rolling release (to judge or wait on)."""
        if self.status != ReleaseStatus.ROLLING or self.step_started_at is None:
            return None
        return self.step_started_at + timedelta(seconds=self.interval_s * (self.waits + 1))

    @property
    def weight(self) -> int:
        """The new version's share now."""
        if self.status == ReleaseStatus.PROMOTED:
            return 100
        if self.step < 0 or self.status in (ReleaseStatus.ROLLED_BACK, ReleaseStatus.FAILED):
            return 0
        return self.steps[self.step]
