"""The organization's subscriptions to marketplace apps: their plans and usage, and cancelling."""

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from console.views import usage_charts
from console.views.common import organization_id, organization_required
from marketplace import selectors, services, usage
from marketplace.models import ListingStatus, SubscriptionStatus


@require_GET
@organization_required
def subscription_list(request):
    fragment = request.GET.get("fragment", "")
    if fragment:  # the live page reloads one subscription's usage (its app's calls stored)
        return _usage_fragment(request, fragment)
    active, ended = [], []
    for subscription in selectors.subscriptions(organization_id=organization_id(request)):
        if subscription.status == SubscriptionStatus.ACTIVE:
            subscription.usage = with_share(usage.subscription_usage(subscription))
            active.append(subscription)
        else:
            ended.append(subscription)
    context = {"subscriptions": active, "ended": ended, "published": ListingStatus.PUBLISHED}
    return render(request, "console/subscription_list.html", context)


@require_POST
@organization_required
def subscription_cancel(request, subscription_id):
    subscription = selectors.subscription_get(organization_id=organization_id(request), subscription_id=subscription_id)
    if subscription.status == SubscriptionStatus.ACTIVE:
        services.subscription_cancel(subscription=subscription)
        messages.success(request, f"Subscription to {subscription.listing.title} cancelled; its calls answer 403 now.")
    next_url = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        next_url = reverse("console:subscription_list")
    return redirect(next_url)


def _usage_fragment(request, subscription_id: str):
    if not subscription_id.isdigit():
        raise Http404
    subscription = selectors.subscription_get(organization_id=organization_id(request), subscription_id=subscription_id)
    if subscription.status != SubscriptionStatus.ACTIVE:
        raise Http404  # cancelled meanwhile: the page shows its last figures until reloaded
    subscription.usage = with_share(usage.subscription_usage(subscription))
    return render(request, "console/snippets/subscription_usage.html", {"subscription": subscription})


def with_share(figures: dict) -> dict:
    """A subscription's usage, with what is left of the quota, each day's bar length and
    what its chart plots."""
    most = max((day["calls"] for day in figures["daily"]), default=0)
    chart = usage_charts.used_against_quota(figures)
    return {**figures, "left": max(figures["quota"] - figures["used"], 0), "most": most, "chart": chart}
