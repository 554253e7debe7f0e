from django.urls import reverse

from accounts import selectors

# The first word of a console URL name -> the list page of that part of the console.
_SECTIONS = {
    "model": "console:model_list",
    "service": "console:service_list",
    "key": "console:key_list",
    "marketplace": "console:marketplace",
    "subscription": "console:subscription_list",
    "publisher": "console:publisher_listing_list",
}


def organizations(request):
    """The current organization, the others the user may switch to, and the console section.

    The section marks the navigation, and an organization switch lands on its list page.
    """
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {
        "current_organization": getattr(request, "organization", None),
        "user_organizations": selectors.organizations_for_user(user=user),
        **_section(request),
    }


def _section(request) -> dict:
    match = getattr(request, "resolver_match", None)
    name = match.url_name.split("_")[0] if match is not None and match.namespace == "console" else None
    return {"section": name, "section_url": reverse(_SECTIONS.get(name, "console:home"))}
