"""What the console's tests share besides fixtures (those are in conftest.py): console URLs,
a ready instance and the live traffic split of a service, subscribing and stored usage."""

from django.urls import reverse
from playwright.sync_api import expect

from controlplane.choices import InstanceStatus
from controlplane.models import Instance
from marketplace.models import DailyUsage

# An app description that tries every way of running script (the pages must run none).
XSS_DESCRIPTION = (
    "# Digits\n\n"
    "<script>alert(1)</script>\n\n"
    "<img src=x onerror=alert(1)>\n\n"
    "[x](javascript:alert(1)) [y](JaVaScRiPt:alert(2)) [z](&#106;avascript:alert(3))\n\n"
    '<a href="javascript:alert(4)" onclick="alert(5)">click</a> <b onmouseover=alert(6)>b</b>\n\n'
    "![pic](javascript:alert(7)) [data](data:text/html;base64,PHNjcmlwdD5hbGVydCg4KTwvc2NyaXB0Pg==)\n\n"
    "<iframe src=javascript:alert(9)></iframe><svg onload=alert(10)></svg><style>body{}</style>\n\n"
    "[docs](https://example.com/docs) and `code <b>`"
)


def url(name, *args):
    """The path of a console page, by its name in console/urls.py."""
    return reverse(f"console:{name}", args=args)


def ready_instance(service, version: int) -> Instance:
    """A ready instance of one of the service's versions."""
    deployment = service.deployments.get(model_version__version=version)
    return Instance.objects.create(
        deployment=deployment, zone="zone-a", status=InstanceStatus.READY, endpoint="http://x"
    )


def live_weights(service) -> dict[int, int]:
    """The traffic split of the versions the service runs: version -> weight."""
    return dict(service.deployments.filter(retired_at__isnull=True).values_list("model_version__version", "weight"))


def subscribe(client, listing, plan="free"):
    return client.post(url("marketplace_subscribe", listing.slug), {"plan": plan})


def store_usage(subscription, plan_name, day, calls):
    """Stored calls of a subscription on one day, as the metering flush writes them."""
    plan = subscription.listing.plans.get(name=plan_name)
    DailyUsage.objects.create(
        subscription=subscription, plan=plan, period_start=subscription.period_start, day=day, calls=calls
    )


def log_in(page, user, password="correct-horse-battery"):
    """Sign in in the browser as ``user`` (the fixtures' users share one password)."""
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".user-menu")).to_be_attached()
