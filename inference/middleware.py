from django.urls import Resolver404, resolve

# Paths served by views that authenticate the caller themselves (the API, Prometheus' scrape).
API_PREFIXES = ("/api/v1/", "/v2/", "/metrics")


class ApiKeyFastPathMiddleware:
    """Calls made with an API key go straight to their view.

    Sessions, CSRF, messages, allauth and the console's organization lookup serve the
    browser; a client program's Bearer call to the control API (or ``/metrics``) needs none
    of them. (Predict calls with a key never reach Django: ``inference.gateway`` serves
    them first.) Browser calls (no Authorization header) and
    unknown paths take the full chain. Must be first in MIDDLEWARE.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "HTTP_AUTHORIZATION" not in request.META or not request.path_info.startswith(API_PREFIXES):
            return self.get_response(request)
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return self.get_response(request)
        request.resolver_match = match
        response = match.func(request, *match.args, **match.kwargs)
        if hasattr(response, "render"):
            response.render()
        return response
