"""The Content-Security-Policy header (Django 5.2 has none of its own).

Every response gets ``settings.MODELBAY_CSP``, or the policy of the longest prefix of
``settings.MODELBAY_CSP_PATHS`` its path starts with; a view that sets the header itself
keeps its own, and an empty policy sends none. The console loads only its own static
JavaScript and CSS (no inline script, style or event handler), so its policy needs no
nonce.
"""

from django.conf import settings

HEADER = "Content-Security-Policy"


def policy_for(path: str) -> str:
    """The policy of the longest prefix of ``MODELBAY_CSP_PATHS`` that ``path`` starts with,
    else ``MODELBAY_CSP``."""
    prefixes = [prefix for prefix in settings.MODELBAY_CSP_PATHS if path.startswith(prefix)]
    if prefixes:
        return settings.MODELBAY_CSP_PATHS[max(prefixes, key=len)]
    return settings.MODELBAY_CSP


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        # Django's debug pages (DEBUG only) are made of inline styles and scripts.
        if settings.DEBUG and response.status_code >= 400:
            return response
        policy = policy_for(request.path)
        if policy and HEADER not in response:
            response[HEADER] = policy
        return response
