from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from controlplane import resources, selectors
from controlplane.choices import ServiceNetwork
from controlplane.models import AutoscalerDecision, ColdStart, Instance, Model, ModelVersion, Release, Service


class ModelVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = ["version", "framework", "sha256", "size", "filename", "manifest", "created_at"]
        read_only_fields = fields


class ModelSerializer(serializers.ModelSerializer):
    versions = ModelVersionSerializer(many=True, read_only=True)

    class Meta:
        model = Model
        fields = ["slug", "name", "description", "created_at", "versions"]
        read_only_fields = fields


class ModelCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=64, required=False)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    file = serializers.FileField(help_text="A bare .onnx file, or a .zip / .tar.gz package with modelbay.yaml.")


class ModelVersionCreateSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="A bare .onnx file, or a .zip / .tar.gz package with modelbay.yaml.")


class InstanceSerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(source="deployment.model_version.version")

    class Meta:
        model = Instance
        fields = ["id", "version", "zone", "status", "error", "restarts", "started_at", "ready_at"]
        read_only_fields = fields


class TrafficSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    weight = serializers.IntegerField()


class CpuField(serializers.FloatField):
    """A number of CPUs; unlike DRF's FloatField, ``true`` is not 1."""

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)


class ResourcesSerializer(serializers.Serializer):
    """What one instance may use; a resource left out keeps its value (on create: the default)."""

    # Types are checked here; the limits by resources.check, in the service functions the
    # console calls too, so that the rule is in one place.
    cpu = CpuField(
        required=False,
        allow_null=True,
        help_text=f"CPUs per instance, at least {resources.MIN_CPU}, at most the installation's maximum "
        "(MODELBAY_MAX_CPU, 4 by default). null: back to the default.",
    )
    memory_mb = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text=f"Memory per instance in MB, at least {resources.MIN_MEMORY_MB}, at most the installation's "
        "maximum (MODELBAY_MAX_MEMORY_MB, 8192 by default). null: back to the default.",
    )

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                message = f"Unknown resource; give {' and/or '.join(self.fields)}."
                raise serializers.ValidationError({name: [message] for name in unknown})
        return super().to_internal_value(data)


class EffectiveResourcesSerializer(serializers.Serializer):
    """The limits instances run with: the service's request over the installation's defaults."""

    cpu = serializers.FloatField()
    memory_mb = serializers.IntegerField()


class AutoscalingStateSerializer(serializers.Serializer):
    """How the desired replicas are set: by the load within the bounds when ``enabled``,
    else fixed (min = max = replicas)."""

    enabled = serializers.BooleanField(source="is_autoscaled", help_text="max_replicas > min_replicas.")
    min_replicas = serializers.IntegerField()
    max_replicas = serializers.IntegerField()
    target_in_flight = serializers.IntegerField(
        source="effective_target_in_flight",
        help_text="Calls in flight one replica should carry: the service's own, or the installation's default.",
    )
    scale_down_delay_s = serializers.IntegerField()
    scale_to_zero_after_s = serializers.IntegerField(
        help_text="With min_replicas 0: seconds without a call before the service runs no instance."
    )


class ZoneReplicasSerializer(serializers.Serializer):
    desired = serializers.IntegerField(help_text="Instances placed in the zone (starting, ready or unhealthy).")
    ready = serializers.IntegerField()


class ReplicasSerializer(serializers.Serializer):
    desired = serializers.IntegerField(
        help_text="The desired replicas per version now (the autoscaler's when enabled; 0: scaled to zero)."
    )
    ready = serializers.IntegerField(help_text="Ready instances, over the versions the service runs.")
    by_zone = serializers.DictField(child=ZoneReplicasSerializer(), help_text="Zone -> its instances.")


class ColdStartsSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Starts from zero kept (MODELBAY_METRICS_RETENTION_DAYS).")
    starting = serializers.BooleanField(help_text="A start from zero is under way: calls are being held.")
    last_at = serializers.DateTimeField(allow_null=True)
    last_s = serializers.FloatField(allow_null=True, help_text="From the call that woke it to a ready instance.")
    p50_s = serializers.FloatField(allow_null=True, help_text="Over the last 100 completed starts.")
    p95_s = serializers.FloatField(allow_null=True)


class ServiceSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model.slug")
    traffic = serializers.SerializerMethodField()
    shadow = serializers.SerializerMethodField()
    instances = serializers.SerializerMethodField()
    predict_url = serializers.SerializerMethodField()
    resources = serializers.SerializerMethodField()
    timeout_s = serializers.SerializerMethodField()
    autoscaling = AutoscalingStateSerializer(source="*", read_only=True)
    replicas = serializers.SerializerMethodField()
    in_flight = serializers.SerializerMethodField()
    cold_starts = serializers.SerializerMethodField()

    class Meta:
        model = Service
        fields = [
            "slug", "name", "model", "replicas", "in_flight", "autoscaling", "cold_starts", "resources", "network",
            "timeout_s", "status", "error", "traffic", "shadow", "instances", "predict_url", "created_at",
            "updated_at",
        ]  # fmt: skip
        read_only_fields = fields

    @extend_schema_field(ReplicasSerializer)
    def get_replicas(self, service) -> dict:
        return ReplicasSerializer(selectors.service_replicas(service=service)).data

    def get_in_flight(self, service) -> int | None:
        """Calls in flight now over every gateway process (null: the load reports cannot be read)."""
        if "in_flight" in self.context:  # a list reads them all at once
            return self.context["in_flight"][service.pk]
        return selectors.service_in_flight(service=service)

    @extend_schema_field(ColdStartsSerializer)
    def get_cold_starts(self, service) -> dict:
        if "cold_starts" in self.context:
            return ColdStartsSerializer(self.context["cold_starts"][service.pk]).data
        return ColdStartsSerializer(selectors.service_cold_starts(service=service)).data

    @classmethod
    def many(cls, services) -> list[dict]:
        """A list of services, with the figures read once for all of them rather than per service."""
        services = list(services)
        context = {
            "in_flight": selectors.services_in_flight(services=services) if services else {},
            "cold_starts": selectors.services_cold_starts(services=services) if services else {},
        }
        return cls(services, many=True, context=context).data

    def get_shadow(self, service) -> dict[str, int]:
        """Versions that get a mirrored share of the calls (answers discarded): version -> percent."""
        return {str(d.model_version.version): d.shadow_percent for d in service.live_deployments() if d.shadow_percent}

    def get_traffic(self, service) -> list[dict]:
        live = service.live_deployments()
        return TrafficSerializer(
            [{"version": d.model_version.version, "weight": d.weight} for d in live], many=True
        ).data

    def get_instances(self, service) -> list[dict]:
        return InstanceSerializer(selectors.service_instances(service=service), many=True).data

    def get_predict_url(self, service) -> str:
        return f"{settings.SITE_URL}/api/v1/services/{service.slug}/predict"

    def get_timeout_s(self, service) -> float:
        """A call's deadline in seconds, from its arrival to its answer (504 past it)."""
        return service.call_timeout_s()

    @extend_schema_field(EffectiveResourcesSerializer)
    def get_resources(self, service) -> dict:
        return resources.effective(service.resources).as_dict()


NETWORK_HELP = (
    "What the instances may connect to. none (default): no connection at all, not the platform, not other "
    "instances, not the host, not the outside. egress: out to the internet, never to the platform's services "
    "or other instances."
)
NETWORK_ERRORS = {"invalid_choice": '"{input}" is not a valid choice; give none or egress.'}
TIMEOUT_HELP = (
    "A call's deadline in seconds, from its arrival to its answer: 504 upstream_timeout past it, and the "
    "call to the model is hung up. Default: the installation's (30 s); at most MODELBAY_MAX_TIMEOUT_S (900)."
)


REPLICAS_HELP = "A fixed number of replicas, 1 to MODELBAY_MAX_REPLICAS (16 by default): autoscaling off."


class AutoscalingSerializer(serializers.Serializer):
    """Autoscaling settings asked for; the limits are checked by the service functions."""

    min_replicas = serializers.IntegerField(
        required=False,
        help_text="0 (scale to zero: after scale_to_zero_after_s without a call the service runs no instance, and "
        "the next call is held while one starts) up to max_replicas. Default 1.",
    )
    max_replicas = serializers.IntegerField(
        required=False, help_text="From min_replicas (at least 1) to MODELBAY_MAX_REPLICAS (16 by default)."
    )
    target_in_flight = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text=f"Calls in flight one replica should carry, 1 to {Service.MAX_TARGET_IN_FLIGHT}. "
        "null: the installation's default (MODELBAY_AUTOSCALE_TARGET_IN_FLIGHT, 4).",
    )
    scale_down_delay_s = serializers.IntegerField(
        required=False,
        help_text=f"How long, in seconds (0 to {Service.MAX_SCALE_DOWN_DELAY_S}), the load must ask for fewer "
        "replicas before they are removed. Default 60.",
    )
    scale_to_zero_after_s = serializers.IntegerField(
        required=False,
        help_text=f"With min_replicas 0: seconds without a call ({Service.MIN_SCALE_TO_ZERO_AFTER_S} to "
        f"{Service.MAX_SCALE_TO_ZERO_AFTER_S}) before the service runs no instance. Default 300.",
    )

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                given = f"Unknown autoscaling setting; give {', '.join(self.fields)}."
                raise serializers.ValidationError({name: [given] for name in unknown})
        return super().to_internal_value(data)


AUTOSCALING_HELP = (
    "Let the load set the replicas between min_replicas and max_replicas (enabled when max_replicas > "
    "min_replicas). Not with replicas."
)


class ServiceCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=64, required=False)
    model = serializers.SlugField(max_length=64, help_text="The model's slug.")
    version = serializers.IntegerField(min_value=1, required=False, help_text="Default: the latest version.")
    replicas = serializers.IntegerField(required=False, help_text=REPLICAS_HELP + " Default 1; not with autoscaling.")
    autoscaling = AutoscalingSerializer(
        required=False, help_text=AUTOSCALING_HELP + " Settings left out get their defaults; starts at min_replicas."
    )
    resources = ResourcesSerializer(required=False, help_text="Default: the installation's defaults.")
    network = serializers.ChoiceField(
        choices=ServiceNetwork.choices,
        default=ServiceNetwork.NONE,
        help_text=NETWORK_HELP,
        error_messages=NETWORK_ERRORS,
    )
    timeout_s = serializers.IntegerField(required=False, help_text=TIMEOUT_HELP)


class ServiceUpdateSerializer(serializers.Serializer):
    replicas = serializers.IntegerField(required=False, help_text=REPLICAS_HELP + " Not with autoscaling.")
    autoscaling = AutoscalingSerializer(
        required=False,
        help_text=AUTOSCALING_HELP + " The settings given replace the service's, the others stay; "
        "the desired replicas are kept within the new bounds.",
    )
    resources = ResourcesSerializer(
        required=False, help_text="The resources given replace the service's; the others stay as they are."
    )
    network = serializers.ChoiceField(
        choices=ServiceNetwork.choices,
        required=False,
        help_text=NETWORK_HELP + " A change starts the service's instances again.",
        error_messages=NETWORK_ERRORS,
    )
    timeout_s = serializers.IntegerField(required=False, help_text=TIMEOUT_HELP)

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError("Give replicas, autoscaling, resources, network and/or timeout_s.")
        return attrs


class TrafficUpdateSerializer(serializers.Serializer):
    weights = serializers.DictField(
        child=serializers.IntegerField(min_value=0, max_value=100),
        help_text='Version -> share of the calls in percent, e.g. {"1": 70, "2": 30}; integers summing to 100. '
        "A version left out gets 0.",
    )

    shadow = serializers.DictField(
        child=serializers.IntegerField(min_value=0, max_value=100),
        required=False,
        help_text='Version -> percent of the calls also sent to it, answers discarded and measured, e.g. {"2": 20}; '
        "only versions without weight. Replaces the previous shadow settings; left out, they stay.",
    )

    def validate_shadow(self, value: dict) -> dict[int, int]:
        return self.validate_weights(value)

    def validate_weights(self, value: dict) -> dict[int, int]:
        try:
            return {int(version): weight for version, weight in value.items()}
        except ValueError:
            raise serializers.ValidationError('Versions are given by number, e.g. {"1": 70, "2": 30}.') from None


class VersionDeploySerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1, help_text="A version of the service's model.")


class MetricsQuerySerializer(serializers.Serializer):
    window = serializers.RegexField(
        r"^[1-9][0-9]*[smhd]$",
        default="15m",
        help_text="How far back: a number and a unit (s, m, h, d), e.g. 90s, 15m, 24h; 10 s to 7 d.",
        error_messages={"invalid": "Give a number and a unit, e.g. 15m (units: s, m, h, d)."},
    )

    def validate_window(self, value: str) -> int:
        seconds = int(value[:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[value[-1]]
        if not 10 <= seconds <= 7 * 86400:
            raise serializers.ValidationError("The window is 10 s to 7 d.")
        return seconds


class VersionStatsSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    requests = serializers.IntegerField()
    errors = serializers.IntegerField(help_text="5xx answers and timeouts.")
    error_rate = serializers.FloatField()
    p50_ms = serializers.FloatField(allow_null=True)
    p95_ms = serializers.FloatField(allow_null=True)
    p99_ms = serializers.FloatField(allow_null=True)


class MetricsSerializer(serializers.Serializer):
    window_s = serializers.IntegerField()
    versions = VersionStatsSerializer(many=True)


def _column(help_text: str, child=None) -> serializers.ListField:
    return serializers.ListField(child=child or serializers.FloatField(allow_null=True), help_text=help_text)


class VersionSeriesSerializer(serializers.Serializer):
    calls_per_s = _column("Calls per second at each time.")
    errors_per_s = _column("5xx answers and timeouts per second.")
    p50_ms = _column("Median latency in milliseconds (null: no call then).")
    p99_ms = _column("99th percentile latency in milliseconds (null: no call then).")


class SeriesSerializer(serializers.Serializer):
    window_s = serializers.IntegerField()
    step_s = serializers.IntegerField(help_text="Seconds between points (10 over an hour; coarser beyond).")
    times = _column("Each point's start, in seconds since the epoch (UTC).", serializers.IntegerField())
    versions = serializers.DictField(child=VersionSeriesSerializer(), help_text="Version -> its columns.")
    in_flight = _column("Calls in flight on average over every gateway process.")
    replicas_desired = _column(
        "The most replicas asked for within the point.", serializers.IntegerField(allow_null=True)
    )
    replicas_ready = _column("The fewest replicas ready within the point.", serializers.IntegerField(allow_null=True))


class ReleaseCreateSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1, help_text="The version to roll out.")
    steps = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=100),
        default=[10, 50, 100],
        help_text="The new version's share at each step, rising, ending at 100.",
    )
    interval_s = serializers.IntegerField(
        min_value=1,
        max_value=86_400,
        default=60,
        help_text="Seconds per step (at least MODELBAY_RELEASE_MIN_INTERVAL_S).",
    )
    max_error_rate = serializers.FloatField(
        min_value=0, max_value=1, default=0.05, help_text="Ceiling on the new version's error rate in a step."
    )
    max_p99_ms = serializers.FloatField(
        min_value=1, allow_null=True, default=None, help_text="Ceiling on the new version's p99 latency (null: none)."
    )
    max_error_rate_increase = serializers.FloatField(
        min_value=0,
        max_value=1,
        default=Release.DEFAULT_MAX_ERROR_RATE_INCREASE,
        help_text="How much the new version's error rate may exceed the old one's in a step (0.01: one point), "
        "beyond what chance explains on the step's calls.",
    )
    max_p99_ratio = serializers.FloatField(
        min_value=1,
        max_value=100,
        default=Release.DEFAULT_MAX_P99_RATIO,
        help_text="How many times the old version's p99 latency the new one's may be in a step.",
    )
    min_calls = serializers.IntegerField(
        min_value=1,
        max_value=1_000_000,
        default=Release.DEFAULT_MIN_CALLS,
        help_text="Calls each version needs in a step before it is judged; with fewer, the step waits "
        "(up to a few intervals, then the release pauses: never promoted without them).",
    )
    shadow_percent = serializers.IntegerField(
        min_value=0,
        max_value=100,
        default=0,
        help_text="Before the first step, mirror this share of the calls to the new version for one interval "
        "and judge it on them (0: no shadow phase).",
    )


class ReleaseSerializer(serializers.ModelSerializer):
    weights = serializers.SerializerMethodField(help_text="Each version's share now.")

    class Meta:
        model = Release
        fields = [
            "id", "version", "from_version", "status", "step", "weights", "steps", "interval_s",
            "max_error_rate", "max_p99_ms", "max_error_rate_increase", "max_p99_ratio", "min_calls",
            "shadow_percent", "reason", "created_at", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_weights(self, release) -> dict[str, int]:
        return {str(release.from_version): 100 - release.weight, str(release.version): release.weight}


class ReleaseDetailSerializer(ReleaseSerializer):
    history = serializers.JSONField(
        read_only=True,
        help_text="Every decision, oldest first: at, action (started, shadow, step, waiting, paused, resumed, "
        "promoted, rolled_back, failed), weight, message, and the figures it used: calls, errors, error_rate and "
        "p99_ms of the new and the old version, and the limits applied.",
    )

    class Meta(ReleaseSerializer.Meta):
        fields = [*ReleaseSerializer.Meta.fields, "history"]
        read_only_fields = fields


class LogsQuerySerializer(serializers.Serializer):
    instance = serializers.CharField(required=False, help_text="An instance id; default: the newest instance.")
    tail = serializers.IntegerField(default=200, min_value=1, max_value=10_000)


class LogsSerializer(serializers.Serializer):
    instance = serializers.CharField()
    status = serializers.CharField()
    tail = serializers.IntegerField()
    logs = serializers.CharField(help_text="The instance's recent output, oldest line first.")


class AutoscalerDecisionSerializer(serializers.ModelSerializer):
    class Meta:
        model = AutoscalerDecision
        fields = ["at", "from_replicas", "to_replicas", "in_flight", "mode", "reason"]
        read_only_fields = fields
        extra_kwargs = {"in_flight": {"help_text": "The calls in flight the decision was based on."}}


class ColdStartSerializer(serializers.ModelSerializer):
    seconds = serializers.FloatField(allow_null=True, help_text="From the call that woke it to a ready instance.")

    class Meta:
        model = ColdStart
        fields = ["requested_at", "ready_at", "seconds"]
        read_only_fields = fields


class AutoscalerSerializer(serializers.Serializer):
    decisions = AutoscalerDecisionSerializer(many=True, help_text="Newest first.")
    cold_starts = ColdStartSerializer(many=True, help_text="Starts from zero, newest first.")
