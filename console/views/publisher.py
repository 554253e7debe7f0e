"""The publisher's dashboard: the organization's listings with their figures, listing a
service as an app, editing its page and plans, publishing and unpublishing it."""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from console.forms import ListingForm, add_api_error, listing_edit_forms
from console.views import usage_charts
from console.views.common import form_status, organization_id, organization_required, post_data
from controlplane import selectors as controlplane_selectors
from marketplace import selectors, services, usage
from marketplace.models import ListingStatus
from modelbay.core.errors import Conflict, DomainError

DASHBOARD_DAYS = 30


@require_http_methods(["GET", "POST"])
@organization_required
def publisher_listing_list(request):
    """The organization's listings with their figures, and the form to list a service."""
    org_id = organization_id(request)
    form = ListingForm(post_data(request), services=controlplane_selectors.service_list(organization_id=org_id))
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
    return render(request, "console/publisher_listing_list.html", context, status=form_status(form))


@require_GET
@organization_required
def publisher_listing_detail(request, slug):
    listing = selectors.publisher_listing_get(organization_id=organization_id(request), slug=slug)
    figures = usage.listing_usage(listing, days=DASHBOARD_DAYS)
    most = max((day["calls"] for day in figures["daily"]), default=0)
    context = {
        "listing": listing,
        "figures": figures,
        "most": most,
        "days": DASHBOARD_DAYS,
        "chart": usage_charts.calls_and_revenue(figures, DASHBOARD_DAYS),
    }
    if request.GET.get("fragment") == "usage":  # the live page reloads the figures (calls stored)
        return render(request, "console/snippets/listing_usage.html", context)
    return render(request, "console/publisher_listing_detail.html", context)


@require_http_methods(["GET", "POST"])
@organization_required
def publisher_listing_edit(request, slug):
    """Change the listing's page and plans; subscribers of a changed plan keep its old terms."""
    listing = selectors.publisher_listing_get(organization_id=organization_id(request), slug=slug)
    page_form, plan_forms = listing_edit_forms(listing, post_data(request))
    if page_form.is_valid() and plan_forms.is_valid():
        try:
            services.listing_update(listing=listing, plans=plan_forms.plans(), **page_form.page())
        except DomainError as error:
            add_api_error(page_form, error)
        else:
            messages.success(request, f"{listing.title} saved.")
            return redirect("console:publisher_listing_detail", slug=listing.slug)
    context = {"listing": listing, "form": page_form, "plan_forms": plan_forms}
    status = 400 if page_form.is_bound else 200  # a post that got here did not pass
    return render(request, "console/publisher_listing_edit.html", context, status=status)


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
    listing = selectors.publisher_listing_get(organization_id=organization_id(request), slug=slug)
    services.listing_set_status(listing=listing, status=status)
    messages.success(request, f"{listing.title} {done}.")
    return redirect("console:publisher_listing_detail", slug=listing.slug)
