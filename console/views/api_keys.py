"""The organization's API keys: list and create, show a new key once, revoke."""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import selectors as account_selectors
from accounts import services as account_services
from console.forms import ApiKeyForm
from console.views.common import form_status, organization_id, organization_required, post_data

NEW_KEY_SESSION_KEY = "console_new_api_key"


@require_http_methods(["GET", "POST"])
@organization_required
def key_list(request):
    form = ApiKeyForm(post_data(request))
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
    keys = account_selectors.api_key_list(organization_id=organization_id(request))
    return render(request, "console/key_list.html", {"keys": keys, "form": form}, status=form_status(form))


@require_GET
@never_cache
@organization_required
def key_created(request):
    """Shows a new key's secret once: it leaves the session as it is shown."""
    created = request.session.pop(NEW_KEY_SESSION_KEY, None)
    if created is None:
        return redirect("console:key_list")
    api_key = account_selectors.api_key_get(organization_id=organization_id(request), key_id=created["id"])
    return render(request, "console/key_created.html", {"api_key": api_key, "full_key": created["key"]})


@require_POST
@organization_required
def key_revoke(request, key_id):
    api_key = account_selectors.api_key_get(organization_id=organization_id(request), key_id=key_id)
    account_services.api_key_revoke(api_key=api_key)
    messages.success(request, f"Key {api_key.name} revoked.")
    return redirect("console:key_list")
