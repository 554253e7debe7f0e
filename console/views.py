"""The browser console: thin views over the tenant-scoped selectors and services."""

from datetime import datetime, timedelta
from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import selectors as account_selectors
from accounts import services as account_services
from accounts.middleware import SESSION_KEY
from console import examples
from console.forms import (
    ApiKeyForm,
    DeployForm,
    ModelUploadForm,
    ModelVersionForm,
    OrganizationForm,
    OrganizationSwitchForm,
    ReleaseForm,
    ResourcesForm,
    ScaleForm,
    TrafficForm,
    VersionAddForm,
    add_api_error,
)
from controlplane import releases, resources, selectors, services
from controlplane.choices import ACTIVE_RELEASE_STATUSES, InstanceStatus, ReleaseStatus, ServiceStatus
from modelbay.core.errors import DomainError

NEW_KEY_SESSION_KEY = "console_new_api_key"
POLLED_STATUSES = (ServiceStatus.PROVISIONING, ServiceStatus.DEGRADED)
EARLIER_RELEASES_SHOWN = 10
STATS_WINDOW = timedelta(minutes=5)
# A release action's name in the URL -> the function and what the message says it did.
RELEASE_ACTIONS = {
    "promote": (releases.release_promote, "promoted"),
    "rollback": (releases.release_rollback, "rolled back"),
    "pause": (releases.release_pause, "paused"),
    "resume": (releases.release_resume, "resumed"),
}


def organization_required(view):
    """Log in first; a user without an organization is sent to create one."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.organization:
            return redirect("console:organization_create")
        return view(request, *args, **kwargs)

    return wrapper


def _org_id(request) -> int:
    return request.organization.pk


# --- home and organizations ----------------------------------------------------------------
@require_GET
@organization_required
def home(request):
    org_id = _org_id(request)
    context = {
        "model_count": selectors.model_list(organization_id=org_id).count(),
        "services": _with_instance_counts(selectors.service_list(organization_id=org_id)),
        "key_count": account_selectors.api_key_list(organization_id=org_id).count(),
    }
    return render(request, "console/home.html", context)


@require_http_methods(["GET", "POST"])
@login_required
def organization_create(request):
    form = OrganizationForm(_post_data(request))
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


# --- models --------------------------------------------------------------------------------
@require_http_methods(["GET", "POST"])
@organization_required
def model_list(request):
    form = ModelUploadForm(_post_data(request), request.FILES or None)
    if form.is_valid():
        try:
            model = services.model_create(
                organization=request.organization,
                name=form.cleaned_data["name"],
                description=form.cleaned_data["description"],
                upload=form.cleaned_data["file"],
            )
        except DomainError as error:
            add_api_error(form, error)
        else:
            messages.success(request, f"Model {model.name} uploaded as version 1.")
            return redirect("console:model_detail", slug=model.slug)
    models = _with_latest_version(selectors.model_list(organization_id=_org_id(request)))
    return render(request, "console/model_list.html", {"models": models, "form": form}, status=_status(form))


@require_GET
@organization_required
def model_detail(request, slug):
    model = selectors.model_get(organization_id=_org_id(request), slug=slug)
    return _render_model_detail(request, model)


@require_POST
@organization_required
def model_version_add(request, slug):
    model = selectors.model_get(organization_id=_org_id(request), slug=slug)
    form = ModelVersionForm(request.POST, request.FILES)
    if form.is_valid():
        try:
            version = services.model_version_add(model=model, upload=form.cleaned_data["file"])
        except DomainError as error:
            add_api_error(form, error)
        else:
            messages.success(request, f"Version {version.version} uploaded.")
            return redirect("console:model_detail", slug=model.slug)
    return _render_model_detail(request, model, version_form=form, status=400)


@require_POST
@organization_required
def model_delete(request, slug):
    model = selectors.model_get(organization_id=_org_id(request), slug=slug)
    try:
        services.model_delete(model=model)
    except DomainError as error:
        messages.error(request, str(error.detail))
        return redirect("console:model_detail", slug=model.slug)
    messages.success(request, f"Model {model.name} deleted.")
    return redirect("console:model_list")


def _render_model_detail(request, model, *, version_form=None, status=200):
    services_of_model = [s for s in selectors.service_list(organization_id=_org_id(request)) if s.model_id == model.pk]
    versions = list(model.versions.all())
    context = {
        "model": model,
        "versions": versions,
        "services": services_of_model,
        "version_form": version_form or ModelVersionForm(),
        "deploy_form": DeployForm.for_model(model, versions),
    }
    return render(request, "console/model_detail.html", context, status=status)


def _with_latest_version(models):
    for model in models:
        versions = list(model.versions.all())
        model.version_count = len(versions)
        model.latest = versions[-1] if versions else None
    return models


# --- services ------------------------------------------------------------------------------
@require_GET
@organization_required
def service_list(request):
    services_ = _with_instance_counts(selectors.service_list(organization_id=_org_id(request)))
    return render(request, "console/service_list.html", {"services": services_})


@require_http_methods(["GET", "POST"])
@organization_required
def service_create(request):
    models = selectors.model_list(organization_id=_org_id(request))
    form = DeployForm(_post_data(request), models=models, initial={"model": request.GET.get("model")})
    if form.is_valid():
        try:
            service = services.service_create(
                organization=request.organization,
                name=form.cleaned_data["name"],
                model_slug=form.cleaned_data["model"],
                version=form.cleaned_data["version"],
                replicas=form.cleaned_data["replicas"],
                resources=form.resources(),
            )
        except DomainError as error:
            add_api_error(form, error)
        else:
            messages.success(request, f"Service {service.name} is being provisioned.")
            return redirect("console:service_detail", slug=service.slug)
    return render(request, "console/service_create.html", {"form": form, "models": models}, status=_status(form))


@require_GET
@organization_required
def service_detail(request, slug):
    service = selectors.service_get(organization_id=_org_id(request), slug=slug)
    return _render_service_detail(request, service)


@require_GET
@organization_required
def service_status(request, slug):
    """The status block alone: the service page polls it while the service settles."""
    service = selectors.service_get(organization_id=_org_id(request), slug=slug)
    return render(request, "console/snippets/service_status.html", _status_context(service))


@require_POST
@organization_required
def service_scale(request, slug):
    service = selectors.service_get(organization_id=_org_id(request), slug=slug)
    return _apply(request, service, ScaleForm(request.POST), services.service_update, "scale_form")


@require_POST
@organization_required
def service_resources(request, slug):
    service = selectors.service_get(organization_id=_org_id(request), slug=slug)
    return _apply(request, service, ResourcesForm(request.POST), services.service_update, "resources_form")


@require_POST
@organization_required
def service_version_add(request, slug):
    service = selectors.service_get(organization_id=_org_id(request), slug=slug)
    form = VersionAddForm(request.POST, service=service)
    return _apply(request, service, form, services.version_deploy, "version_form")


@require_POST
@organization_required
def service_traffic(request, slug):
    service = selectors.service_get(organization_id=_org_id(request), slug=slug)
    form = TrafficForm(request.POST, service=service)
    return _apply(request, service, form, services.traffic_set, "traffic_form")


@require_POST
@organization_required
def service_release_start(request, slug):
    service = selectors.service_get(organization_id=_org_id(request), slug=slug)
    form = ReleaseForm(request.POST, service=service)
    return _apply(request, service, form, releases.release_start, "release_form")


@require_POST
@organization_required
def service_release_action(request, slug, release_id, action):
    """Promote, roll back, pause or resume a release at once."""
    release = selectors.release_get(organization_id=_org_id(request), slug=slug, release_id=release_id)
    if action not in RELEASE_ACTIONS:
        raise Http404
    function, done = RELEASE_ACTIONS[action]
    try:
        release = function(release=release)
    except DomainError as error:
        messages.error(request, str(error.detail))
    else:
        messages.success(
            request,
            f"Release of version {release.version} {done}; version {release.version} takes {release.weight}% of the calls.",
        )
    return redirect("console:service_detail", slug=slug)


def _apply(request, service, form, action, form_name: str):
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


@require_POST
@organization_required
def service_version_remove(request, slug, version):
    service = selectors.service_get(organization_id=_org_id(request), slug=slug)
    try:
        services.version_retire(service=service, version=version)
    except DomainError as error:
        messages.error(request, str(error.detail))
    else:
        messages.success(request, f"Version {version} is being removed; it finishes the calls it has.")
    return redirect("console:service_detail", slug=service.slug)


@require_POST
@organization_required
def service_delete(request, slug):
    service = selectors.service_get(organization_id=_org_id(request), slug=slug)
    try:
        services.service_delete(service=service)
    except DomainError as error:
        messages.error(request, str(error.detail))
        return redirect("console:service_detail", slug=service.slug)
    messages.success(request, f"Service {service.name} is being deleted.")
    return redirect("console:service_list")


def _logs_context(request, service) -> dict:
    """The output of the instance named by ``?logs=`` (default: the newest), if any."""
    try:
        instance = selectors.service_instance_get(service=service, instance_id=request.GET.get("logs"))
    except Http404:
        if request.GET.get("logs"):
            raise
        return {"log_instance": None, "logs": ""}
    return {"log_instance": instance, "logs": selectors.instance_logs(instance=instance, tail=200)}


def _render_service_detail(request, service, *, status=200, **bound_forms):
    """The service page; ``bound_forms`` (by context name) replace the blank forms."""
    predict_url = request.build_absolute_uri(reverse("api-service-predict", args=[service.slug]))
    context = {
        **_status_context(service),
        **_logs_context(request, service),
        "scale_form": ScaleForm(initial={"replicas": service.replicas}),
        "resources_form": ResourcesForm(initial=service.resources),
        "version_form": VersionAddForm(service=service),
        "traffic_form": TrafficForm(service=service),
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
        "release_form": ReleaseForm(service=service),
        "polling": active or _settling(service, instances),
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


def _with_instance_counts(services_):
    for service in services_:
        instances = selectors.service_instances(service=service)
        service.ready_count = sum(1 for i in instances if i.status == InstanceStatus.READY)
    return services_


# --- API keys ------------------------------------------------------------------------------
@require_http_methods(["GET", "POST"])
@organization_required
def key_list(request):
    form = ApiKeyForm(_post_data(request))
    if form.is_valid():
        api_key, full_key = account_services.api_key_create(
            organization=request.organization,
            name=form.cleaned_data["name"],
            scopes=form.cleaned_data["scopes"],
            expires_at=form.expires_at(),
            created_by=request.user,
        )
        request.session[NEW_KEY_SESSION_KEY] = {"id": api_key.pk, "key": full_key}
        return redirect("console:key_created")
    keys = account_selectors.api_key_list(organization_id=_org_id(request))
    return render(request, "console/key_list.html", {"keys": keys, "form": form}, status=_status(form))


@require_GET
@never_cache
@organization_required
def key_created(request):
    """Shows a new key's secret once: it leaves the session as it is shown."""
    created = request.session.pop(NEW_KEY_SESSION_KEY, None)
    if created is None:
        return redirect("console:key_list")
    api_key = account_selectors.api_key_get(organization_id=_org_id(request), key_id=created["id"])
    return render(request, "console/key_created.html", {"api_key": api_key, "full_key": created["key"]})


@require_POST
@organization_required
def key_revoke(request, key_id):
    api_key = account_selectors.api_key_get(organization_id=_org_id(request), key_id=key_id)
    account_services.api_key_revoke(api_key=api_key)
    messages.success(request, f"Key {api_key.name} revoked.")
    return redirect("console:key_list")


def _post_data(request):
    return request.POST if request.method == "POST" else None


def _status(form) -> int:
    """400 for a form posted with errors, so tests and tools can tell it did not pass."""
    return 400 if form.is_bound and form.errors else 200
