from rest_framework import serializers

from marketplace import usage
from marketplace.models import AppIcon, Listing, Plan, Subscription


class PlanSerializer(serializers.ModelSerializer):
    name = serializers.SlugField(max_length=40)
    max_in_flight = serializers.IntegerField(
        min_value=1,
        max_value=Plan.MAX_IN_FLIGHT_LIMIT,
        allow_null=True,
        default=None,
        help_text="Calls a subscriber may have in flight at once to the app (1 to 1000); null or left "
        "out: the platform's default.",
    )
    price_per_1k = serializers.DecimalField(max_digits=10, decimal_places=2, min_value=0)

    class Meta:
        model = Plan
        fields = ["name", "monthly_quota", "rate_limit_per_s", "max_in_flight", "price_per_1k"]
        extra_kwargs = {"monthly_quota": {"min_value": 1}, "rate_limit_per_s": {"min_value": 1}}


class ListingSerializer(serializers.ModelSerializer):
    """A listing as anyone sees it in the marketplace."""

    plans = PlanSerializer(many=True, read_only=True, source="offered_plans")
    publisher = serializers.CharField(source="publisher.name", read_only=True)

    class Meta:
        model = Listing
        fields = [
            "slug", "title", "summary", "description", "category", "icon", "publisher",
            "example_input", "example_output", "plans",
        ]  # fmt: skip
        read_only_fields = fields


class PublisherListingSerializer(ListingSerializer):
    """A listing as its publisher sees it: with its service and status."""

    service = serializers.CharField(source="service.slug", read_only=True)

    class Meta(ListingSerializer.Meta):
        fields = [*ListingSerializer.Meta.fields, "service", "status", "created_at", "updated_at"]
        read_only_fields = fields


class ListingCreateSerializer(serializers.Serializer):
    service = serializers.SlugField(help_text="The slug of one of your services.")
    slug = serializers.SlugField(max_length=64)
    title = serializers.CharField(max_length=120)
    summary = serializers.CharField(max_length=300, required=False, default="")
    description = serializers.CharField(required=False, default="", help_text="Markdown.")
    category = serializers.SlugField(max_length=40, required=False, default="")
    icon = serializers.ChoiceField(
        choices=AppIcon.choices,
        required=False,
        allow_blank=True,
        default="",
        help_text="An icon of the marketplace's set.",
    )
    example_input = serializers.JSONField(required=False, default=None)
    example_output = serializers.JSONField(required=False, default=None)
    plans = PlanSerializer(many=True)


class MarketplaceQuerySerializer(serializers.Serializer):
    q = serializers.CharField(required=False, default="", max_length=200)
    category = serializers.CharField(required=False, default="", max_length=40)


class SubscribeSerializer(serializers.Serializer):
    plan = serializers.SlugField(max_length=40)


class SubscriptionSerializer(serializers.ModelSerializer):
    listing = serializers.CharField(source="listing.slug")
    plan = serializers.CharField(source="plan.name")
    quota = serializers.IntegerField(source="plan.monthly_quota")
    used = serializers.SerializerMethodField(help_text="Successful calls in the current period.")

    class Meta:
        model = Subscription
        fields = ["id", "listing", "plan", "status", "period_start", "period_end", "used", "quota"]
        read_only_fields = fields

    def get_used(self, subscription) -> int:
        return usage.period_used(subscription)


class DailyCallsSerializer(serializers.Serializer):
    day = serializers.DateField()
    calls = serializers.IntegerField()


class SubscriptionUsageSerializer(serializers.Serializer):
    used = serializers.IntegerField()
    quota = serializers.IntegerField()
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField()
    daily = DailyCallsSerializer(many=True)


class _Figures(serializers.Serializer):
    calls = serializers.IntegerField()
    revenue = serializers.DecimalField(max_digits=14, decimal_places=2)


class _SubscriberFigures(_Figures):
    organization = serializers.CharField()


class _PlanFigures(_Figures):
    plan = serializers.CharField()
    price_per_1k = serializers.DecimalField(max_digits=10, decimal_places=2)
    subscribers = serializers.IntegerField(help_text="Active subscriptions on this plan now.")
    retired = serializers.BooleanField(help_text="No longer offered; its subscribers keep it until they change plan.")


class _DayFigures(_Figures):
    day = serializers.DateField()


class ListingUsageSerializer(_Figures):
    listing = serializers.CharField()
    since = serializers.DateField()
    active_subscriptions = serializers.IntegerField()
    subscribers = _SubscriberFigures(many=True)
    plans = _PlanFigures(many=True)
    daily = _DayFigures(many=True)


class ListingUsageQuerySerializer(serializers.Serializer):
    days = serializers.IntegerField(min_value=1, max_value=366, default=30, required=False)
