"""The console's home page, and creating and switching organizations."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import selectors as account_selectors
from accounts import services as account_services
from accounts.middleware import SESSION_KEY
from console.forms import OrganizationForm, OrganizationSwitchForm
from console.views.common import organization_id, organization_required, post_data
from console.views.service_pages import with_instance_counts
from controlplane import selectors
from controlplane.zones import zone_list


@require_GET
@organization_required
def home(request):
    org_id = organization_id(request)
    context = {
        "model_count": selectors.model_list(organization_id=org_id).count(),
        "services": with_instance_counts(selectors.service_list(organization_id=org_id)),
        "key_count": account_selectors.api_key_list(organization_id=org_id).count(),
        "zones": zone_list(),  # the platform's, the same for every organization
    }
    return render(request, "console/home.html", context)


@require_http_methods(["GET", "POST"])
@login_required
def organization_create(request):
    form = OrganizationForm(post_data(request))
    if form.is_valid():
        organization = account_services.organization_create(name=form.cleaned_data["name"], owner=request.user)
        request.session[SESSION_KEY] = organization.pk
        messages.success(request, f"Organization {organization.name} created.")
        return redirect("console:home")
    return render(request, "console/organization_create.html", {"form": form})


@require_POST
@login_required
def organization_switch(request):
    form = OrganizationSwitchForm(request.POST)
    if not form.is_valid():
        raise Http404
    membership = account_selectors.membership_for(user=request.user, organization_id=form.cleaned_data["organization"])
    if membership is None:
        raise Http404
    request.session[SESSION_KEY] = membership.organization_id
    next_url = form.cleaned_data["next"]
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        next_url = reverse("console:home")
    return redirect(next_url)
