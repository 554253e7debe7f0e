"""A service's versions: run another version beside the others, set the traffic split,
remove a version (it drains first)."""

from django.contrib import messages
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from console.errors import user_message
from console.forms import TrafficForm, VersionAddForm
from console.views.common import organization_id, organization_required
from console.views.service_pages import apply_form
from controlplane import selectors, services
from modelbay.core.errors import DomainError


@require_POST
@organization_required
def service_version_add(request, slug):
    service = selectors.service_get(organization_id=organization_id(request), slug=slug)
    form = VersionAddForm(request.POST, service=service)
    return apply_form(request, service, form, services.version_deploy, "version_form")


@require_POST
@organization_required
def service_traffic(request, slug):
    service = selectors.service_get(organization_id=organization_id(request), slug=slug)
    form = TrafficForm(request.POST, service=service)
    return apply_form(request, service, form, services.traffic_set, "traffic_form")


@require_POST
@organization_required
def service_version_remove(request, slug, version):
    service = selectors.service_get(organization_id=organization_id(request), slug=slug)
    try:
        services.version_retire(service=service, version=version)
    except DomainError as error:
        messages.error(request, user_message(error))
    else:
        messages.success(request, f"Version {version} is being removed; it finishes the calls it has.")
    return redirect("console:service_detail", slug=service.slug)
