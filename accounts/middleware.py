from django.http import JsonResponse
from django.shortcuts import render
from django.utils.functional import SimpleLazyObject

from accounts import selectors, verification
from modelbay.core.errors import DomainError, error_body, http_status

SESSION_KEY = "organization_id"
API_PATHS = ("/api/", "/v2/")


def _current_organization(request):
    """The organization the console user has switched to, else their first one."""
    user = request.user
    if not user.is_authenticated:
        return None
    organization_id = request.session.get(SESSION_KEY)
    if organization_id is not None:
        membership = selectors.membership_for(user=user, organization_id=organization_id)
        if membership is not None:
            return membership.organization
    organization = selectors.organizations_for_user(user=user).first()
    if organization is not None:
        request.session[SESSION_KEY] = organization.pk
    return organization


class CurrentOrganizationMiddleware:
    """Sets ``request.organization`` (lazily) for console pages and session API calls."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.organization = SimpleLazyObject(lambda: _current_organization(request))
        return self.get_response(request)


class VerifiedEmailMiddleware:
    """Refuses uploads and new API keys to a console user (or session API call) whose email
    address is not verified, where the rule is on (``accounts.verification``): 403
    ``forbidden``, as JSON on the API and as a page in the console. Calls made with an API
    key skip it (``ApiKeyFastPathMiddleware``): a key acts for its organization."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        if not verification.guarded(request) or not request.user.is_authenticated:
            return None
        try:
            verification.require_verified_email(request.user)
        except DomainError as refusal:
            if request.path_info.startswith(API_PATHS):
                return JsonResponse(error_body(refusal.code, refusal.detail), status=http_status(refusal))
            return render(request, "accounts/verify_email.html", {"detail": refusal.detail}, status=http_status(refusal))
        return None
