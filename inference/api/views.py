"""The gateway's endpoints as Django views: for calls that reach Django (the console's
calls on its session, Django's test client) and for the OpenAPI schema.

Calls with an API key are served before Django, by ``inference.gateway.GatewayApp``; both
run the same ``serve_*`` functions, so a call is answered alike whichever way it came.
The request body is passed to the runtime untouched (the runtime validates it and answers
400/422 itself); the gateway authenticates, routes and forwards.
"""

import hmac
import time

from asgiref.sync import async_to_sync
from django.conf import settings
from django.http import HttpResponse, JsonResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from accounts.permissions import HasOrganization
from inference import forwarding, gateway, observability
from modelbay.core import generation

ROUTE_KEY_HEADER = OpenApiParameter(
    "X-Route-Key",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="Sticky routing: calls with the same key reach the same version while the traffic weights stay the same.",
)
PREDICT_REQUEST = inline_serializer("PredictRequest", {"inputs": serializers.ListField(child=serializers.JSONField())})
PREDICT_RESPONSE = inline_serializer(
    "PredictResponse",
    {"outputs": serializers.ListField(child=serializers.JSONField()), "model_version": serializers.IntegerField()},
)


def request_body(request) -> bytes:
    declared = int(request.META.get("CONTENT_LENGTH") or 0)
    if declared > settings.MODELBAY_MAX_PREDICT_BYTES:
        raise gateway.body_too_large()
    return request._request.body


def _call_headers(request) -> dict[str, str]:
    """The request's headers under their lower-case names, as an ASGI server gives them."""
    return {name.lower(): value for name, value in request.headers.items()}


class _JSONOnly(BaseContentNegotiation):
    """Errors are always JSON: skip DRF's Accept-header negotiation on the hot path."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type

    def select_parser(self, request, parsers):
        return None


class GatewayView(APIView):
    """Serve a call with ``handler`` (one of the gateway's ``serve_*``), as GatewayApp does."""

    permission_classes = [HasOrganization]  # the predict scope is the handler's to check
    parser_classes = []
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _JSONOnly
    throttle_classes = []
    route_kind = "service"  # the metrics' label: service, app or oip
    handler = staticmethod(gateway.serve_service)

    def dispatch(self, request, *args, **kwargs):
        started = time.perf_counter()
        response = super().dispatch(request, *args, **kwargs)
        service = getattr(response, "modelbay_service", ("", "", ""))
        data = getattr(response, "data", None)
        code = data.get("code", "") if isinstance(data, dict) else ""
        observability.record_call(self.route_kind, response.status_code, service, code, time.perf_counter() - started)
        return response

    def _serve(self, request, slug: str, *, path: str | None = None, version: int | None = None) -> HttpResponse:
        headers = _call_headers(request)
        call = gateway.Call(
            route_kind=self.route_kind,
            slug=slug,
            method=request.method,
            path=path or request.path_info,
            version=version,
            body=request_body(request) if request.method == "POST" else None,
            headers=forwarding.forwarded_headers(headers),
            route_key=headers.get("x-route-key"),
        )
        serve = gateway.serve_from_django
        answer = async_to_sync(serve)(self.handler, call, request.auth, generation.for_request(request))
        response = HttpResponse(answer.body, status=answer.status, content_type=answer.content_type)
        for name, value in answer.headers:
            response[name] = value
        response.modelbay_service = answer.service
        return response


class ServicePredictView(GatewayView):
    @extend_schema(
        request={"application/json": PREDICT_REQUEST, "application/octet-stream": OpenApiTypes.BINARY},
        responses={200: PREDICT_RESPONSE},
        parameters=[ROUTE_KEY_HEADER],
        summary="Call a service",
        examples=[OpenApiExample("digits", value={"inputs": [[0.0] * 64]}, request_only=True)],
    )
    def post(self, request, slug: str):
        return self._serve(request, slug, path="/predict")


_OIP_TENSOR = inline_serializer(
    "OipTensor",
    {
        "name": serializers.CharField(),
        "shape": serializers.ListField(child=serializers.IntegerField()),
        "datatype": serializers.CharField(),
        "data": serializers.ListField(child=serializers.JSONField()),
    },
)
_OIP_REQUEST = inline_serializer(
    "OipInferRequest", {"id": serializers.CharField(required=False), "inputs": _OIP_TENSOR}
)
_OIP_RESPONSE = inline_serializer(
    "OipInferResponse",
    {"model_name": serializers.CharField(), "model_version": serializers.CharField(), "outputs": _OIP_TENSOR},
)


class OipModelMetadataView(GatewayView):
    route_kind = "oip"

    @extend_schema(responses={200: OpenApiTypes.OBJECT}, summary="Model metadata (Open Inference Protocol v2)")
    def get(self, request, slug: str, version: int | None = None):
        return self._serve(request, slug, version=version)


class OipModelReadyView(GatewayView):
    route_kind = "oip"
    handler = staticmethod(gateway.serve_model_ready)

    @extend_schema(responses={200: OpenApiTypes.OBJECT, 503: OpenApiTypes.OBJECT}, summary="Model readiness (OIP v2)")
    def get(self, request, slug: str, version: int | None = None):
        return self._serve(request, slug, version=version)


class OipInferView(GatewayView):
    route_kind = "oip"

    @extend_schema(request=_OIP_REQUEST, responses={200: _OIP_RESPONSE}, summary="Infer (Open Inference Protocol v2)")
    def post(self, request, slug: str, version: int | None = None):
        return self._serve(request, slug, version=version)


class OipServerHealthView(APIView):
    """Server liveness and readiness: the gateway itself is up (no key needed)."""

    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(responses={200: OpenApiTypes.OBJECT}, summary="Server health (OIP v2)")
    def get(self, request):
        return JsonResponse({"live": True, "ready": True})


def metrics(request):
    """Prometheus' scrape (``inference.observability``), for a caller with the metrics token:
    ``Authorization: Bearer $MODELBAY_METRICS_TOKEN``. Off (404) while no token is set."""
    token = settings.MODELBAY_METRICS_TOKEN
    if not token:
        return JsonResponse({"code": "not_found", "detail": "Metrics are off: set MODELBAY_METRICS_TOKEN."}, status=404)
    given = request.META.get("HTTP_AUTHORIZATION", "").encode()
    if not hmac.compare_digest(given, f"Bearer {token}".encode()):
        detail = "Give the metrics token: Authorization: Bearer $MODELBAY_METRICS_TOKEN."
        return JsonResponse({"code": "unauthenticated", "detail": detail}, status=401)
    body, content_type = observability.exposition()
    return HttpResponse(body, content_type=content_type)
