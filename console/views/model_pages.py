"""The organization's models: list and upload, a model's page, new versions, delete."""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from console.errors import user_message
from console.forms import (
    DeployForm,
    ModelUploadForm,
    ModelVersionForm,
    add_api_error,
    oversized_upload_error,
    refused_upload_form,
)
from console.views.common import form_status, organization_id, organization_required, post_data
from controlplane import selectors, services
from modelbay.core.errors import DomainError, InsufficientStorage


# The two upload views refuse an upload whose Content-Length is over the limit before its
# body is read: CSRF middleware would read the POST (writing the file to disk) to find its
# token, so they are exempt from it and check CSRF themselves (csrf_protect) once the size
# is known to be fine. A refusal changes nothing and renders the page as a GET would; so
# does a full disk met while the body is received (the upload handler removed the file).


@csrf_exempt
@require_http_methods(["GET", "POST"])
@organization_required
def model_list(request):
    error = oversized_upload_error(request) if request.method == "POST" else None
    if error:
        return _render_model_list(request, refused_upload_form(ModelUploadForm, error), status=413)
    try:
        return _model_list(request)
    except InsufficientStorage as no_room:
        return _render_model_list(request, refused_upload_form(ModelUploadForm, no_room.detail), status=507)


@csrf_protect
def _model_list(request):
    form = ModelUploadForm(post_data(request), request.FILES or None)
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
    return _render_model_list(request, form, status=form_status(form))


def _render_model_list(request, form, *, status):
    models = _with_latest_version(selectors.model_list(organization_id=organization_id(request)))
    return render(request, "console/model_list.html", {"models": models, "form": form}, status=status)


@require_GET
@organization_required
def model_detail(request, slug):
    model = selectors.model_get(organization_id=organization_id(request), slug=slug)
    return _render_model_detail(request, model)


@csrf_exempt  # checked by _model_version_add, see model_list
@require_POST
@organization_required
def model_version_add(request, slug):
    model = selectors.model_get(organization_id=organization_id(request), slug=slug)
    error = oversized_upload_error(request)
    if error:
        return _render_model_detail(
            request, model, version_form=refused_upload_form(ModelVersionForm, error), status=413
        )
    try:
        return _model_version_add(request, model)
    except InsufficientStorage as no_room:
        form = refused_upload_form(ModelVersionForm, no_room.detail)
        return _render_model_detail(request, model, version_form=form, status=507)


@csrf_protect
def _model_version_add(request, model):
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
    model = selectors.model_get(organization_id=organization_id(request), slug=slug)
    try:
        services.model_delete(model=model)
    except DomainError as error:
        messages.error(request, user_message(error))
        return redirect("console:model_detail", slug=model.slug)
    messages.success(request, f"Model {model.name} deleted.")
    return redirect("console:model_list")


def _render_model_detail(request, model, *, version_form=None, status=200):
    org_id = organization_id(request)
    services_of_model = [s for s in selectors.service_list(organization_id=org_id) if s.model_id == model.pk]
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
