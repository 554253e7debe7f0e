"""What the console's views share: the organization gate and small request and form helpers."""

from functools import wraps

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect
from django.urls import reverse


def organization_required(view):
    """Log in first; a user without an organization is sent to create one."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.organization:
            return redirect("console:organization_create")
        return view(request, *args, **kwargs)

    return wrapper


def organization_id(request) -> int:
    """The current organization's id, which every read of the console is scoped by."""
    return request.organization.pk


def post_data(request):
    """The data to bind a form to: the POST on a post, else None (an unbound form)."""
    return request.POST if request.method == "POST" else None


def form_status(form) -> int:
    """400 for a form posted with errors, so tests and tools can tell it did not pass."""
    return 400 if form.is_bound and form.errors else 200


def site_url(name: str, *args) -> str:
    """The address of one of the site's URLs as callers reach it: ``MODELBAY_SITE_URL`` and the
    path, the one source for every address the console shows (as the API's)."""
    return settings.SITE_URL + reverse(name, args=args)
