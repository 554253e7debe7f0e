"""A service's releases: start a progressive release of a version, and promote, roll back,
pause or resume it. The release itself shows in the service page's status block."""

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from console.forms import ReleaseForm
from console.views.common import organization_id, organization_required
from console.views.service_pages import apply_form
from controlplane import releases, selectors
from modelbay.core.errors import DomainError

# A release action's name in the URL -> the function and what the message says it did.
RELEASE_ACTIONS = {
    "promote": (releases.release_promote, "promoted"),
    "rollback": (releases.release_rollback, "rolled back"),
    "pause": (releases.release_pause, "paused"),
    "resume": (releases.release_resume, "resumed"),
}


@require_POST
@organization_required
def service_release_start(request, slug):
    service = selectors.service_get(organization_id=organization_id(request), slug=slug)
    form = ReleaseForm(request.POST, service=service)
    return apply_form(request, service, form, releases.release_start, "release_form")


@require_POST
@organization_required
def service_release_action(request, slug, release_id, action):
    """Promote, roll back, pause or resume a release at once."""
    release = selectors.release_get(organization_id=organization_id(request), slug=slug, release_id=release_id)
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
