"""The marketplace in the console: browse and call apps, subscribe, follow usage, and the
publisher's dashboard. Thin views over the marketplace's selectors, services and usage reads."""

import json

from django.conf import settings
from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from console import examples
from console.forms import ListingForm, MarketplaceSearchForm, SubscribeForm, add_api_error
from console.views import _org_id, _post_data, _status, organization_required
from controlplane import selectors as controlplane_selectors
from marketplace import selectors, services, usage
from marketplace.markdown import render_markdown
from marketplace.models import ListingStatus, SubscriptionStatus
from modelbay.core.errors import Conflict, DomainError

DASHBOARD_DAYS = 30


# --- browse --------------------------------------------------------------------------------
@require_GET
@organization_required
def marketplace(request):
    form = MarketplaceSearchForm(request.GET)
    query = form.query()
    listings = selectors.published_listings(**query)
    context = {"form": form, "query": query, "listings": listings, "categories": selectors.published_categories()}
    return render(request, "console/marketplace.html", context)


@require_GET
@organization_required
def marketplace_app(request, slug):
    listing = selectors.published_listing_get(slug=slug)
    return _render_app(request, listing)


@require_POST
@organization_required
def marketplace_subscribe(request, slug):
    """Subscribe on a plan, or change the plan of the current subscription."""
    listing = selectors.published_listing_get(slug=slug)
    form = SubscribeForm(request.POST)
    if form.is_valid():
        changing = _active_subscription(request, listing) is not None
        try:
            subscription = services.subscribe(
                subscriber=request.organization, listing=listing, plan_name=form.cleaned_data["plan"]
            )
        except DomainError as error:
            add_api_error(form, error)
        else:
            done = "Plan changed to" if changing else f"Subscribed to {listing.title} on"
            messages.success(request, f"{done} the {subscription.plan.name} plan.")
            return redirect("console:marketplace_app", slug=listing.slug)
    return _render_app(request, listing, subscribe_form=form, status=400)


def _active_subscription(request, listing):
    return selectors.active_subscription(organization_id=_org_id(request), listing=listing)


def _render_app(request, listing, *, subscribe_form=None, status=200):
    subscription = _active_subscription(request, listing)
    body = examples.app_body(listing)
    body_json = json.dumps(body)
    context = {
        "listing": listing,
        "plans": list(listing.plans.all()),
        "description": render_markdown(listing.description),
        "subscription": subscription,
        "usage": _with_share(usage.subscription_usage(subscription)) if subscription else None,
        "subscribe_form": subscribe_form or SubscribeForm(),
        "selected_plan": _selected_plan(subscribe_form, subscription, listing),
        "endpoint": settings.SITE_URL + reverse("api-app-predict", args=[listing.slug]),
        "example": body_json,
        "example_shell": examples.shell_quoted(body_json),
        "example_python": examples.python_literal(body, indent=len("    json=")),
        "example_output": _pretty(listing.example_output),
    }
    return render(request, "console/marketplace_app.html", context, status=status)


def _selected_plan(form, subscription, listing) -> str:
    """The plan checked in the plan form: as posted, else the current one, else the cheapest."""
    if form is not None and form.data.get("plan"):
        return form.data["plan"]
    if subscription is not None:
        return subscription.plan.name
    first = next(iter(listing.plans.all()), None)
    return first.name if first else ""


def _pretty(value) -> str:
    return "" if value is None else json.dumps(value, indent=2)


def _with_share(figures: dict) -> dict:
    """A subscription's usage, with what is left of the quota and each day's bar length."""
    most = max((day["calls"] for day in figures["daily"]), default=0)
    return {**figures, "left": max(figures["quota"] - figures["used"], 0), "most": most}


# --- subscriptions -------------------------------------------------------------------------
@require_GET
@organization_required
def subscription_list(request):
    active, ended = [], []
    for subscription in selectors.subscriptions(organization_id=_org_id(request)):
        if subscription.status == SubscriptionStatus.ACTIVE:
            subscription.usage = _with_share(usage.subscription_usage(subscription))
            active.append(subscription)
        else:
            ended.append(subscription)
    context = {"subscriptions": active, "ended": ended, "published": ListingStatus.PUBLISHED}
    return render(request, "console/subscription_list.html", context)


@require_POST
@organization_required
def subscription_cancel(request, subscription_id):
    subscription = selectors.subscription_get(organization_id=_org_id(request), subscription_id=subscription_id)
    if subscription.status == SubscriptionStatus.ACTIVE:
        services.subscription_cancel(subscription=subscription)
        messages.success(request, f"Subscription to {subscription.listing.title} cancelled; its calls answer 403 now.")
    next_url = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        next_url = reverse("console:subscription_list")
    return redirect(next_url)


# --- publisher -----------------------------------------------------------------------------
@require_http_methods(["GET", "POST"])
@organization_required
def publisher_listing_list(request):
    """The organization's listings with their figures, and the form to list a service."""
    org_id = _org_id(request)
    form = ListingForm(_post_data(request), services=controlplane_selectors.service_list(organization_id=org_id))
    if form.is_valid():
        try:
            listing = services.listing_create(publisher=request.organization, **form.listing())
        except Conflict as error:
            form.add_error("slug", str(error.detail))
        except DomainError as error:
            add_api_error(form, error)
        else:
            messages.success(request, f"Draft listing {listing.title} created; publish it when it is ready.")
            return redirect("console:publisher_listing_detail", slug=listing.slug)
    listings = list(selectors.publisher_listings(organization_id=org_id))
    for listing in listings:
        listing.figures = usage.listing_usage(listing, days=DASHBOARD_DAYS)
    context = {"listings": listings, "form": form, "days": DASHBOARD_DAYS}
    return render(request, "console/publisher_listing_list.html", context, status=_status(form))


@require_GET
@organization_required
def publisher_listing_detail(request, slug):
    listing = selectors.publisher_listing_get(organization_id=_org_id(request), slug=slug)
    figures = usage.listing_usage(listing, days=DASHBOARD_DAYS)
    most = max((day["calls"] for day in figures["daily"]), default=0)
    context = {"listing": listing, "figures": figures, "most": most, "days": DASHBOARD_DAYS}
    return render(request, "console/publisher_listing_detail.html", context)


@require_POST
@organization_required
def publisher_listing_publish(request, slug):
    return _set_status(request, slug, ListingStatus.PUBLISHED, "is in the marketplace now")


@require_POST
@organization_required
def publisher_listing_unpublish(request, slug):
    return _set_status(
        request, slug, ListingStatus.UNPUBLISHED, "left the marketplace; current subscribers can still call it"
    )


def _set_status(request, slug, status, done):
    listing = selectors.publisher_listing_get(organization_id=_org_id(request), slug=slug)
    services.listing_set_status(listing=listing, status=status)
    messages.success(request, f"{listing.title} {done}.")
    return redirect("console:publisher_listing_detail", slug=listing.slug)
