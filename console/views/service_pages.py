"""The organization's services: list, deploy, a service's page and its polled status block,
scale (fixed or autoscaled), resources, network, delete. The page's other forms (versions,
traffic, releases) post to the views in ``service_versions`` and ``service_releases``, which
answer through ``apply_form``."""

from datetime import datetime, timedelta

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from console import examples
from console.errors import user_message
from console.forms import (
    AutoscalingForm,
    DeployForm,
    NetworkForm,
    ReleaseForm,
    ResourcesForm,
    ScaleForm,
    TrafficForm,
    VersionAddForm,
    add_api_error,
)
from console.views.common import form_status, organization_id, organization_required, post_data, site_url
from controlplane import resources, selectors, services
from controlplane.choices import ACTIVE_RELEASE_STATUSES, InstanceStatus, ReleaseStatus, ServiceStatus
from modelbay.core.errors import DomainError

POLLED_STATUSES = (ServiceStatus.PROVISIONING, ServiceStatus.DEGRADED)
EARLIER_RELEASES_SHOWN = 10
AUTOSCALER_DECISIONS_SHOWN = 10
STATS_WINDOW = timedelta(minutes=5)


@require_GET
@organization_required
def service_list(request):
    services_ = with_instance_counts(selectors.service_list(organization_id=organization_id(request)))
    if request.GET.get("fragment") == "table":  # the live page reloads the table alone
        return render(request, "console/snippets/service_table_card.html", {"services": services_})
    return render(request, "console/service_list.html", {"services": services_})


@require_http_methods(["GET", "POST"])
@organization_required
def service_create(request):
    models = selectors.model_list(organization_id=organization_id(request))
    form = DeployForm(post_data(request), models=models, initial={"model": request.GET.get("model")})
    if form.is_valid():
        try:
            service = services.service_create(
                organization=request.organization,
                name=form.cleaned_data["name"],
                model_slug=form.cleaned_data["model"],
                version=form.cleaned_data["version"],
                replicas=form.cleaned_data["replicas"],
                resources=form.resources(),
                network=form.cleaned_data["network"],
            )
        except DomainError as error:
            add_api_error(form, error)
        else:
            # Said once and true for good: the status block below follows what happens next.
            messages.success(request, f"Service {service.name} created.")
            return redirect("console:service_detail", slug=service.slug)
    return render(request, "console/service_create.html", {"form": form, "models": models}, status=form_status(form))


@require_GET
@organization_required
def service_detail(request, slug):
    service = selectors.service_get(organization_id=organization_id(request), slug=slug)
    return _render_service_detail(request, service)


@require_GET
@organization_required
def service_status(request, slug):
    """The status block alone: the service page polls it while the service settles."""
    service = selectors.service_get(organization_id=organization_id(request), slug=slug)
    return render(request, "console/snippets/service_status.html", _status_context(service))


@require_GET
@organization_required
def service_logs(request, slug):
    """The logs card alone: it follows the status block, as instances come and go."""
    service = selectors.service_get(organization_id=organization_id(request), slug=slug)
    context = {"service": service, "instances": selectors.service_instances(service=service)}
    return render(request, "console/snippets/service_logs.html", {**context, **_logs_context(request, service)})


@require_GET
@organization_required
def service_controls(request, slug):
    """The right-hand column alone (its forms show the service as it is now): the live page
    reloads it when the service changes, unless one of its forms is being filled in."""
    service = selectors.service_get(organization_id=organization_id(request), slug=slug)
    context = {**_status_context(service), **_controls_forms(service)}
    return render(request, "console/snippets/service_controls.html", context)


@require_POST
@organization_required
def service_scale(request, slug):
    service = selectors.service_get(organization_id=organization_id(request), slug=slug)
    return apply_form(request, service, ScaleForm(request.POST), services.service_update, "scale_form")


@require_POST
@organization_required
def service_autoscaling(request, slug):
    service = selectors.service_get(organization_id=organization_id(request), slug=slug)
    return apply_form(request, service, AutoscalingForm(request.POST), services.service_update, "autoscaling_form")


@require_POST
@organization_required
def service_resources(request, slug):
    service = selectors.service_get(organization_id=organization_id(request), slug=slug)
    return apply_form(request, service, ResourcesForm(request.POST), services.service_update, "resources_form")


@require_POST
@organization_required
def service_network(request, slug):
    service = selectors.service_get(organization_id=organization_id(request), slug=slug)
    return apply_form(request, service, NetworkForm(request.POST), services.service_update, "network_form")


@require_POST
@organization_required
def service_delete(request, slug):
    service = selectors.service_get(organization_id=organization_id(request), slug=slug)
    try:
        services.service_delete(service=service)
    except DomainError as error:
        messages.error(request, user_message(error))
        return redirect("console:service_detail", slug=service.slug)
    messages.success(request, f"Service {service.name} is being deleted.")
    return redirect("console:service_list")


def apply_form(request, service, form, action, form_name: str):
    """One of the service page's forms, applied with the service function ``action``;
    errors show on the form."""
    if form.is_valid():
        try:
            action(service=service, **form.changes())
        except DomainError as error:
            add_api_error(form, error)
        else:
            messages.success(request, form.done_message(service))
            return redirect("console:service_detail", slug=service.slug)
    return _render_service_detail(request, service, **{form_name: form}, status=400)


def with_instance_counts(services_):
    """Each service's ready instances, as ``service.ready_count``."""
    for service in services_:
        instances = selectors.service_instances(service=service)
        service.ready_count = sum(1 for i in instances if i.status == InstanceStatus.READY)
    return services_


def _logs_context(request, service) -> dict:
    """The output of the instance named by ``?logs=`` (default: the newest), if any."""
    chosen = request.GET.get("logs") or None
    try:
        instance = selectors.service_instance_get(service=service, instance_id=chosen)
    except Http404:
        if chosen:
            raise
        return {"log_instance": None, "logs": "", "logs_chosen": False}
    logs = selectors.instance_logs(instance=instance, tail=200)
    return {"log_instance": instance, "logs": logs, "logs_chosen": bool(chosen)}


def _controls_forms(service) -> dict:
    """The right-hand column's forms, filled in with the service as it is now."""
    return {
        "scale_form": ScaleForm(initial={"replicas": service.replicas}),
        "autoscaling_form": AutoscalingForm.for_service(service),
        "resources_form": ResourcesForm(initial=service.resources),
        "network_form": NetworkForm(initial={"network": service.network}),
        "version_form": VersionAddForm(service=service),
        "traffic_form": TrafficForm(service=service),
    }


def _render_service_detail(request, service, *, status=200, **bound_forms):
    """The service page; ``bound_forms`` (by context name) replace the blank forms."""
    predict_url = site_url("api-service-predict", service.slug)
    context = {
        **_status_context(service),
        **_logs_context(request, service),
        **_controls_forms(service),
        **bound_forms,
        "example": examples.example_body(examples.main_version(service)),
        "predict_url": predict_url,
    }
    return render(request, "console/service_detail.html", context, status=status)


def _status_context(service) -> dict:
    """What the polled status block shows: the service, its versions, its release."""
    instances = selectors.service_instances(service=service)
    recent = list(service.releases.all()[: EARLIER_RELEASES_SHOWN + 1])
    release = recent[0] if recent else None
    active = release is not None and release.status in ACTIVE_RELEASE_STATUSES
    cold_starts = selectors.service_cold_starts(service=service)
    return {
        "service": service,
        "deployments": _with_stats(service, _with_instance_states(service.live_deployments())),
        "resources": resources.effective(service.resources),
        "instances": instances,
        "release": release,
        "release_active": active,
        "next_step_at": _next_step_at(release),
        "timeline": _timeline(release),
        "earlier_releases": recent[1:],
        "autoscaler_decisions": selectors.autoscaler_decisions(service=service, limit=AUTOSCALER_DECISIONS_SHOWN),
        "replicas": selectors.service_replicas(service=service),
        "in_flight": selectors.service_in_flight(service=service),
        "cold_starts": cold_starts,
        "release_form": ReleaseForm(service=service),
        "polling": active or cold_starts.starting or _settling(service, instances),
    }


def _with_stats(service, deployments):
    """Each version's calls over the last few minutes, as ``deployment.stats``."""
    since = timezone.now() - STATS_WINDOW
    stats = {entry.version: entry for entry in selectors.service_version_stats(service=service, since=since)}
    for deployment in deployments:
        deployment.stats = stats.get(deployment.model_version.version)
    return deployments


def _next_step_at(release) -> datetime | None:
    """When beat next judges a rolling release (a step or the promotion)."""
    if release is None or release.status != ReleaseStatus.ROLLING or release.step_started_at is None:
        return None
    return release.step_started_at + timedelta(seconds=release.interval_s)


def _timeline(release) -> list[dict]:
    """The release's history in order, with each entry's time as a datetime."""
    if release is None:
        return []
    return [{**entry, "at": datetime.fromisoformat(entry["at"])} for entry in release.history]


def _settling(service, instances) -> bool:
    """Whether the status block should follow the service: while it settles, a version's
    instances start (the service stays ready meanwhile) or a removed version drains."""
    return (
        service.status in POLLED_STATUSES
        or any(instance.status == InstanceStatus.STARTING for instance in instances)
        or any(deployment.retired_at for deployment in service.deployments.all())
    )


def _with_instance_states(deployments):
    for deployment in deployments:
        states = [instance.status for instance in deployment.instances.all()]
        deployment.ready_count = states.count(InstanceStatus.READY)
        deployment.starting_count = states.count(InstanceStatus.STARTING)
    return deployments
