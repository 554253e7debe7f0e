"""The marketplace in the console: browse the published apps, an app's page (its plans, how
to call it, Try it), and subscribing to it or changing plan."""

import json

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from console import examples
from console.forms import MarketplaceSearchForm, SubscribeForm, add_api_error
from console.views.common import organization_id, organization_required, site_url
from console.views.subscriptions import with_share
from marketplace import selectors, services, usage
from marketplace.markdown import render_markdown
from modelbay.core.errors import DomainError


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
    if request.GET.get("fragment") == "usage":  # the live page reloads the subscription's usage
        return _usage_fragment(request, listing)
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


def _usage_fragment(request, listing):
    subscription = _active_subscription(request, listing)
    if subscription is None:
        raise Http404  # cancelled meanwhile: the page shows its last figures until reloaded
    context = {
        "listing": listing,
        "subscription": subscription,
        "usage": with_share(usage.subscription_usage(subscription)),
    }
    return render(request, "console/snippets/app_usage.html", context)


def _active_subscription(request, listing):
    return selectors.active_subscription(organization_id=organization_id(request), listing=listing)


def _render_app(request, listing, *, subscribe_form=None, status=200):
    subscription = _active_subscription(request, listing)
    body = examples.app_body(listing)
    body_json = json.dumps(body)
    context = {
        "listing": listing,
        "plans": listing.offered_plans,
        "description": render_markdown(listing.description),
        "subscription": subscription,
        "usage": with_share(usage.subscription_usage(subscription)) if subscription else None,
        "subscribe_form": subscribe_form or SubscribeForm(),
        "selected_plan": _selected_plan(subscribe_form, subscription, listing),
        "endpoint": site_url("api-app-predict", listing.slug),
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
    first = next(iter(listing.offered_plans), None)
    return first.name if first else ""


def _pretty(value) -> str:
    return "" if value is None else json.dumps(value, indent=2)
