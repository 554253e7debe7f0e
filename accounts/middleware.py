from django.utils.functional import SimpleLazyObject

from accounts import selectors

SESSION_KEY = "organization_id"


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
