from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from accounts.models import Organization
from controlplane.models import Service


class ListingStatus(models.TextChoices):
    DRAFT = "draft"
    PUBLISHED = "published"
    UNPUBLISHED = "unpublished"


class AppIcon(models.TextChoices):
    """The icons an app may show: SVG files in ``static/img/icons`` (vendored from Lucide)."""

    PUZZLE = "puzzle", "Puzzle piece"
    BRAIN = "brain", "Brain"
    SPARKLES = "sparkles", "Sparkles"
    IMAGE = "image", "Image"
    EYE = "eye", "Eye"
    SMILE = "smile", "Face"
    SCAN_TEXT = "scan-text", "Scanned text"
    FILE_TEXT = "file-text", "Document"
    TYPE = "type", "Text"
    PEN_LINE = "pen-line", "Handwriting"
    HASH = "hash", "Number"
    CHART_COLUMN = "chart-column", "Chart"
    MESSAGE_SQUARE = "message-square", "Chat"
    LANGUAGES = "languages", "Translation"
    MIC = "mic", "Microphone"
    AUDIO_LINES = "audio-lines", "Audio"
    SEARCH = "search", "Search"
    SHIELD_CHECK = "shield-check", "Check"


DEFAULT_APP_ICON = AppIcon.PUZZLE


class Listing(models.Model):
    """A publisher's service offered as an app; subscribers call it by the listing's slug.

    It follows its service: whatever version the service routes to (a gray release
    included) is what subscribers get.
    """

    publisher = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="listings")
    service = models.ForeignKey(Service, on_delete=models.PROTECT, related_name="listings")
    slug = models.SlugField(max_length=64, unique=True)  # unique across the marketplace
    title = models.CharField(max_length=120)
    summary = models.CharField(max_length=300, blank=True)
    description = models.TextField(blank=True)  # Markdown, rendered safely
    category = models.SlugField(max_length=40, blank=True)
    icon = models.CharField(max_length=16, blank=True, choices=AppIcon.choices)
    example_input = models.JSONField(null=True, blank=True)
    example_output = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=ListingStatus.choices, default=ListingStatus.DRAFT)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title"]

    def __str__(self):
        return self.slug

    @property
    def offered_plans(self) -> list["Plan"]:
        """The plans a subscriber may pick now (not the retired ones some still use); read
        from the prefetched plans when there are."""
        return [plan for plan in self.plans.all() if plan.retired_at is None]


class Plan(models.Model):
    """What a subscription allows: calls a month, calls a second, calls in flight at once,
    and the price.

    A plan's terms never change under its subscribers: when the publisher changes or drops
    a plan that subscriptions use, it is retired (``retired_at``) and a new plan of that name
    takes its place; they keep the retired one until they pick another.
    """

    MAX_IN_FLIGHT_LIMIT = 1000

    listing = models.ForeignKey(Listing, on_delete=models.CASCADE, related_name="plans")
    name = models.SlugField(max_length=40)
    monthly_quota = models.PositiveIntegerField()
    rate_limit_per_s = models.PositiveIntegerField()
    max_in_flight = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_IN_FLIGHT_LIMIT)],
        help_text="Calls a subscriber may have in flight at once to the app (1 to 1000); "
        "null means the platform's default (the setting MODELBAY_APP_MAX_IN_FLIGHT).",
    )
    price_per_1k = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["price_per_1k", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["listing", "name"], condition=Q(retired_at__isnull=True), name="unique_offered_plan_name"
            )
        ]

    def __str__(self):
        return f"{self.listing.slug}/{self.name}"

    @property
    def in_flight_cap(self) -> int:
        """The calls in flight a subscriber may have at once: the plan's own, else the platform's default."""
        return self.max_in_flight if self.max_in_flight is not None else settings.MODELBAY_APP_MAX_IN_FLIGHT


class SubscriptionStatus(models.TextChoices):
    ACTIVE = "active"
    CANCELLED = "cancelled"


class Subscription(models.Model):
    subscriber = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="subscriptions")
    listing = models.ForeignKey(Listing, on_delete=models.CASCADE, related_name="subscriptions")
    # A plan goes only with its listing (and the listing's subscriptions with it).
    plan = models.ForeignKey(Plan, on_delete=models.RESTRICT, related_name="subscriptions")
    status = models.CharField(max_length=16, choices=SubscriptionStatus.choices, default=SubscriptionStatus.ACTIVE)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["subscriber", "listing"],
                condition=Q(status=SubscriptionStatus.ACTIVE),
                name="one_active_subscription_per_listing",
            )
        ]

    def __str__(self):
        return f"{self.subscriber.slug} -> {self.listing.slug} ({self.plan.name})"


class DailyUsage(models.Model):
    """Successful app calls of one subscription on one day (UTC), in one billing period,
    on one plan (a change of plan mid-day bills each part at its own price).

    The ledger of billed calls: written only by the gateway processes' metering flushes,
    which add their calls in batches the database takes once each (``UsageBatch``).
    """

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="daily_usage")
    plan = models.ForeignKey(Plan, on_delete=models.RESTRICT, related_name="daily_usage")
    period_start = models.DateTimeField()
    day = models.DateField()
    calls = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["day"]
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "period_start", "plan", "day"], name="one_usage_row_per_day_and_plan"
            )
        ]
        indexes = [models.Index(fields=["subscription", "period_start"])]

    def __str__(self):
        return f"{self.subscription_id} {self.day}: {self.calls}"


class UsageBatch(models.Model):
    """One metering flush of one gateway process, stored in the same transaction as the
    calls it adds to ``DailyUsage``: a flush tried again after its answer was lost (the
    database restarted as it committed) finds its batch here and adds nothing twice."""

    writer = models.CharField(max_length=32)  # the process's random name, new at each start
    seq = models.PositiveBigIntegerField()
    stored_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["writer", "seq"], name="one_usage_batch_per_writer_and_seq")]

    def __str__(self):
        return f"{self.writer}#{self.seq}"
