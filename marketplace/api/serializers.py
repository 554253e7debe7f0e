from rest_framework import serializers
from rest_framework.fields import empty

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


class ListingPageSerializer(serializers.Serializer):
    """What a listing's page shows and its plans: given in full on create, in part on PATCH."""

    title = serializers.CharField(max_length=120)
    summary = serializers.CharField(max_length=300, required=False, default="", allow_blank=True)
    description = serializers.CharField(required=False, default="", allow_blank=True, help_text="Markdown.")
    category = serializers.SlugField(max_length=40, required=False, default="", allow_blank=True)
    icon = serializers.ChoiceField(
        choices=AppIcon.choices,
        required=False,
        allow_blank=True,
        default="",
        help_text="An icon of the marketplace's set.",
    )
    example_input = serializers.JSONField(required=False, default=None, allow_null=True)
    example_output = serializers.JSONField(required=False, default=None, allow_null=True)
    plans = PlanSerializer(
        many=True,
        help_text="The plans offered from now on. On PATCH, left out: unchanged. A plan whose terms change "
        "or that is left out stays with the subscribers who have it until they pick another.",
    )


class ListingCreateSerializer(ListingPageSerializer):
    service = serializers.SlugField(help_text="The slug of one of your services.")
    slug = serializers.SlugField(max_length=64)


class ListingUpdateSerializer(ListingPageSerializer):
    """A PATCH: the fields given change, the others stay. Not DRF's ``partial``, which would
    also let a plan leave out its terms."""

    def get_fields(self):
        fields = super().get_fields()
        for field in fields.values():
            field.required, field.default = False, empty
        return fields

    def validate(self, attrs):
        # A field it cannot change (the slug, the service, the status) is refused, not ignored.
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({unknown[0]: "This field cannot be changed here."})
        return attrs


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
