"""The gateway's HTTP endpoints: service predict and the Open Inference Protocol (v2).

The request body is passed to the runtime untouched (the runtime validates it and
answers 400/422 itself); the gateway authenticates, routes and forwards.
"""

import hmac
import time

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from accounts.permissions import CanPredict
from inference import forwarding, observability, routing
from modelbay.core import generation
from modelbay.core.errors import NotFound, PayloadTooLarge

ROUTE_KEY_HEADER = OpenApiParameter(
    "X-Route-Key", str, OpenApiParameter.HEADER, required=False, description="Sticky routing: calls with the same key reach the same version while the traffic weights stay the same."
)
PREDICT_REQUEST = inline_serializer("PredictRequest", {"inputs": serializers.ListField(child=serializers.JSONField())})
PREDICT_RESPONSE = inline_serializer(
    "PredictResponse",
    {"outputs": serializers.ListField(child=serializers.JSONField()), "model_version": serializers.IntegerField()},
)


def request_body(request) -> bytes:
    declared = int(request.META.get("CONTENT_LENGTH") or 0)
    if declared > settings.MODELBAY_MAX_PREDICT_BYTES:
        raise PayloadTooLarge(f"Request bodies are limited to {settings.MODELBAY_MAX_PREDICT_BYTES} bytes.")
    return request._request.body


def _route(request, slug: str) -> routing.Route:
    route = routing.route_for(request.auth.organization_id, slug, gen=generation.for_request(request))
    if route is None:
        raise NotFound(f"No service '{slug}' in this organization.")
    return route


def upstream_response(upstream: forwarding.Upstream) -> HttpResponse:
    response = HttpResponse(upstream.body, status=upstream.status, content_type=upstream.content_type)
    response["X-Model-Version"] = str(upstream.version)
    response.modelbay_service = (str(upstream.organization_id), upstream.service, str(upstream.version))
    return response


class _JSONOnly(BaseContentNegotiation):
    """Errors are always JSON: skip DRF's Accept-header negotiation on the hot path."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type

    def select_parser(self, request, parsers):
        return None


class GatewayView(APIView):
    permission_classes = [CanPredict]
    parser_classes = []
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _JSONOnly
    throttle_classes = []
    route_kind = "service"  # the metrics' label: service, app or oip

    def dispatch(self, request, *args, **kwargs):
        started = time.perf_counter()
        response = super().dispatch(request, *args, **kwargs)
        observability.record_call(self.route_kind, response, time.perf_counter() - started)
        return response

    def _forward(self, request, slug: str, *, path: str, version: int | None = None) -> HttpResponse:
        route = _route(request, slug)
        body = request_body(request) if request.method == "POST" else None
        upstream = forwarding.forward(
            route,
            method=request.method,
            path=path,
            body=body,
            headers=forwarding.forwarded_headers(request.META),
            version=version,
            route_key=request.META.get("HTTP_X_ROUTE_KEY"),
        )
        return upstream_response(upstream)


class ServicePredictView(GatewayView):
    @extend_schema(
        request={"application/json": PREDICT_REQUEST, "application/octet-stream": OpenApiTypes.BINARY},
        responses={200: PREDICT_RESPONSE},
        parameters=[ROUTE_KEY_HEADER],
        summary="Call a service",
        examples=[OpenApiExample("digits", value={"inputs": [[0.0] * 64]}, request_only=True)],
    )
    def post(self, request, slug: str):
        return self._forward(request, slug, path="/predict")


_OIP_TENSOR = inline_serializer(
    "OipTensor",
    {
        "name": serializers.CharField(),
        "shape": serializers.ListField(child=serializers.IntegerField()),
        "datatype": serializers.CharField(),
        "data": serializers.ListField(child=serializers.JSONField()),
    },
)
_OIP_REQUEST = inline_serializer("OipInferRequest", {"id": serializers.CharField(required=False), "inputs": _OIP_TENSOR})
_OIP_RESPONSE = inline_serializer(
    "OipInferResponse",
    {"model_name": serializers.CharField(), "model_version": serializers.CharField(), "outputs": _OIP_TENSOR},
)


class OipModelMetadataView(GatewayView):
    route_kind = "oip"

    @extend_schema(responses={200: OpenApiTypes.OBJECT}, summary="Model metadata (Open Inference Protocol v2)")
    def get(self, request, slug: str, version: int | None = None):
        path = f"/v2/models/{slug}" + (f"/versions/{version}" if version else "")
        return self._forward(request, slug, path=path, version=version)


class OipModelReadyView(GatewayView):
    route_kind = "oip"

    @extend_schema(responses={200: OpenApiTypes.OBJECT, 503: OpenApiTypes.OBJECT}, summary="Model readiness (OIP v2)")
    def get(self, request, slug: str, version: int | None = None):
        route = _route(request, slug)
        ready = route.pick_version(version) is not None
        return JsonResponse({"name": slug, "ready": ready}, status=200 if ready else 503)


class OipInferView(GatewayView):
    route_kind = "oip"

    @extend_schema(request=_OIP_REQUEST, responses={200: _OIP_RESPONSE}, summary="Infer (Open Inference Protocol v2)")
    def post(self, request, slug: str, version: int | None = None):
        path = f"/v2/models/{slug}" + (f"/versions/{version}" if version else "") + "/infer"
        return self._forward(request, slug, path=path, version=version)


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
