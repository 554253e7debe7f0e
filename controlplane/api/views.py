from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import selectors as account_selectors
from accounts.models import Organization
from accounts.permissions import CanManage
from controlplane import releases, selectors, series, services
from controlplane.api import serializers as s
from modelbay.core.errors import NotFound, PayloadTooLarge


def _organization(request) -> Organization:
    return account_selectors.organization_get(organization_id=request.auth.organization_id)


def _refuse_oversized_upload(request) -> None:
    """Answer 413 from the declared length, before Django reads the body to disk."""
    declared = int(request.META.get("CONTENT_LENGTH") or 0)
    if declared > settings.MODELBAY_MAX_UPLOAD_BYTES + 64 * 1024:
        raise PayloadTooLarge(f"Uploads are limited to {settings.MODELBAY_MAX_UPLOAD_BYTES} bytes.")


class ModelListView(APIView):
    permission_classes = [CanManage]
    parser_classes = [MultiPartParser]

    @extend_schema(responses=s.ModelSerializer(many=True), summary="List models")
    def get(self, request):
        models = selectors.model_list(organization_id=request.auth.organization_id)
        return Response(s.ModelSerializer(models, many=True).data)

    @extend_schema(request=s.ModelCreateSerializer, responses={201: s.ModelSerializer}, summary="Upload a model")
    def post(self, request):
        _refuse_oversized_upload(request)
        serializer = s.ModelCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        model = services.model_create(
            organization=_organization(request),
            name=data["name"],
            slug=data.get("slug"),
            description=data["description"],
            upload=data["file"],
        )
        model = selectors.model_get(organization_id=request.auth.organization_id, slug=model.slug)
        return Response(s.ModelSerializer(model).data, status=status.HTTP_201_CREATED)


class ModelDetailView(APIView):
    permission_classes = [CanManage]

    @extend_schema(responses=s.ModelSerializer, summary="Get a model with its versions")
    def get(self, request, slug: str):
        model = selectors.model_get(organization_id=request.auth.organization_id, slug=slug)
        return Response(s.ModelSerializer(model).data)

    @extend_schema(responses={204: None}, summary="Delete a model (409 while a version is deployed)")
    def delete(self, request, slug: str):
        model = selectors.model_get(organization_id=request.auth.organization_id, slug=slug)
        services.model_delete(model=model)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ModelVersionListView(APIView):
    permission_classes = [CanManage]
    parser_classes = [MultiPartParser]

    @extend_schema(
        request=s.ModelVersionCreateSerializer,
        responses={201: s.ModelVersionSerializer},
        summary="Upload a new version",
    )
    def post(self, request, slug: str):
        model = selectors.model_get(organization_id=request.auth.organization_id, slug=slug)
        _refuse_oversized_upload(request)
        serializer = s.ModelVersionCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        version = services.model_version_add(model=model, upload=serializer.validated_data["file"])
        return Response(s.ModelVersionSerializer(version).data, status=status.HTTP_201_CREATED)


class ServiceListView(APIView):
    permission_classes = [CanManage]

    @extend_schema(responses=s.ServiceSerializer(many=True), summary="List services")
    def get(self, request):
        services_ = selectors.service_list(organization_id=request.auth.organization_id)
        return Response(s.ServiceSerializer.many(services_))

    @extend_schema(
        request=s.ServiceCreateSerializer,
        responses={202: s.ServiceSerializer},
        summary="Deploy a model version as a service",
    )
    def post(self, request):
        serializer = s.ServiceCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        service = services.service_create(
            organization=_organization(request),
            name=data["name"],
            slug=data.get("slug"),
            model_slug=data["model"],
            version=data.get("version"),
            replicas=data.get("replicas"),
            autoscaling=data.get("autoscaling"),
            resources=data.get("resources"),
            network=data["network"],
            timeout_s=data.get("timeout_s"),
        )
        service = selectors.service_get(organization_id=request.auth.organization_id, slug=service.slug)
        return Response(s.ServiceSerializer(service).data, status=status.HTTP_202_ACCEPTED)


class ServiceDetailView(APIView):
    permission_classes = [CanManage]

    @extend_schema(responses=s.ServiceSerializer, summary="Get a service with its traffic and instances")
    def get(self, request, slug: str):
        service = selectors.service_get(organization_id=request.auth.organization_id, slug=slug)
        return Response(s.ServiceSerializer(service).data)

    @extend_schema(
        request=s.ServiceUpdateSerializer,
        responses={202: s.ServiceSerializer},
        summary="Scale a service (fixed or autoscaled), or change what one instance may use or connect to",
    )
    def patch(self, request, slug: str):
        service = selectors.service_get(organization_id=request.auth.organization_id, slug=slug)
        serializer = s.ServiceUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        services.service_update(
            service=service,
            replicas=data.get("replicas"),
            autoscaling=data.get("autoscaling"),
            resources=data.get("resources"),
            network=data.get("network"),
            timeout_s=data.get("timeout_s"),
        )
        service = selectors.service_get(organization_id=request.auth.organization_id, slug=slug)
        return Response(s.ServiceSerializer(service).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses={202: None}, summary="Delete a service and stop its instances")
    def delete(self, request, slug: str):
        service = selectors.service_get(organization_id=request.auth.organization_id, slug=slug)
        services.service_delete(service=service)
        return Response(status=status.HTTP_202_ACCEPTED)


class ServiceAutoscalerView(APIView):
    permission_classes = [CanManage]
    decisions_listed = 50

    @extend_schema(
        responses=s.AutoscalerSerializer, summary="The autoscaler's latest decisions and cold starts, newest first"
    )
    def get(self, request, slug: str):
        service = selectors.service_get(organization_id=request.auth.organization_id, slug=slug)
        decisions = selectors.autoscaler_decisions(service=service, limit=self.decisions_listed)
        cold_starts = selectors.cold_starts(service=service, limit=self.decisions_listed)
        return Response(s.AutoscalerSerializer({"decisions": decisions, "cold_starts": cold_starts}).data)


class ServiceLogsView(APIView):
    permission_classes = [CanManage]

    @extend_schema(
        parameters=[
            OpenApiParameter("instance", str, description="An instance id; default: the newest instance."),
            OpenApiParameter("tail", int, description="How many lines (1-10000, default 200)."),
        ],
        responses=s.LogsSerializer,
        summary="An instance's recent output",
    )
    def get(self, request, slug: str):
        service = selectors.service_get(organization_id=request.auth.organization_id, slug=slug)
        query = s.LogsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        instance = selectors.service_instance_get(service=service, instance_id=query.validated_data.get("instance"))
        tail = query.validated_data["tail"]
        logs = selectors.instance_logs(instance=instance, tail=tail)
        return Response(
            s.LogsSerializer({"instance": instance.id, "status": instance.status, "tail": tail, "logs": logs}).data
        )


class ServiceTrafficView(APIView):
    permission_classes = [CanManage]

    @extend_schema(
        request=s.TrafficUpdateSerializer, responses=s.ServiceSerializer, summary="Split the calls among versions"
    )
    def put(self, request, slug: str):
        service = selectors.service_get(organization_id=request.auth.organization_id, slug=slug)
        serializer = s.TrafficUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        services.traffic_set(service=service, weights=data["weights"], shadow=data.get("shadow"))
        service = selectors.service_get(organization_id=request.auth.organization_id, slug=slug)
        return Response(s.ServiceSerializer(service).data)


class ServiceVersionListView(APIView):
    permission_classes = [CanManage]

    @extend_schema(
        request=s.VersionDeploySerializer,
        responses={202: s.ServiceSerializer},
        summary="Run another version beside the others (no traffic until given some)",
    )
    def post(self, request, slug: str):
        service = selectors.service_get(organization_id=request.auth.organization_id, slug=slug)
        serializer = s.VersionDeploySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.version_deploy(service=service, version=serializer.validated_data["version"])
        service = selectors.service_get(organization_id=request.auth.organization_id, slug=slug)
        return Response(s.ServiceSerializer(service).data, status=status.HTTP_202_ACCEPTED)


class ServiceVersionDetailView(APIView):
    permission_classes = [CanManage]

    @extend_schema(responses={202: None}, summary="Take a version without traffic out: drained, then stopped")
    def delete(self, request, slug: str, version: int):
        service = selectors.service_get(organization_id=request.auth.organization_id, slug=slug)
        services.version_retire(service=service, version=version)
        return Response(status=status.HTTP_202_ACCEPTED)


class ServiceMetricsView(APIView):
    permission_classes = [CanManage]

    @extend_schema(
        parameters=[OpenApiParameter("window", str, description="How far back, e.g. 15m (default), 90s, 24h.")],
        responses=s.MetricsSerializer,
        summary="Calls, errors and latency per version",
    )
    def get(self, request, slug: str):
        service = selectors.service_get(organization_id=request.auth.organization_id, slug=slug)
        query = s.MetricsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        window_s = query.validated_data["window"]
        stats = selectors.service_version_stats(service=service, since=timezone.now() - timedelta(seconds=window_s))
        return Response(s.MetricsSerializer({"window_s": window_s, "versions": stats}).data)


class ServiceSeriesView(APIView):
    permission_classes = [CanManage]

    @extend_schema(
        parameters=[OpenApiParameter("window", str, description="How far back, e.g. 1h (default), 24h, 7d.")],
        responses=s.SeriesSerializer,
        summary="Figures over time for charts: per version calls, errors, p50/p99; in flight and replicas",
    )
    def get(self, request, slug: str):
        service = selectors.service_get(organization_id=request.auth.organization_id, slug=slug)
        query = s.MetricsQuerySerializer(data={"window": "1h", **request.query_params.dict()})
        query.is_valid(raise_exception=True)
        return Response(series.service_series(service=service, window_s=query.validated_data["window"]))


class ServiceReleaseListView(APIView):
    permission_classes = [CanManage]

    @extend_schema(responses=s.ReleaseSerializer(many=True), summary="The service's releases, newest first")
    def get(self, request, slug: str):
        service = selectors.service_get(organization_id=request.auth.organization_id, slug=slug)
        return Response(s.ReleaseSerializer(service.releases.all(), many=True).data)

    @extend_schema(
        request=s.ReleaseCreateSerializer,
        responses={201: s.ReleaseDetailSerializer},
        summary="Start a gray release of a version",
    )
    def post(self, request, slug: str):
        service = selectors.service_get(organization_id=request.auth.organization_id, slug=slug)
        serializer = s.ReleaseCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        release = releases.release_start(service=service, **serializer.validated_data)
        return Response(s.ReleaseDetailSerializer(release).data, status=status.HTTP_201_CREATED)


class ServiceReleaseDetailView(APIView):
    permission_classes = [CanManage]

    @extend_schema(responses=s.ReleaseDetailSerializer, summary="A release, with every step and decision")
    def get(self, request, slug: str, release_id: int):
        release = selectors.release_get(organization_id=request.auth.organization_id, slug=slug, release_id=release_id)
        return Response(s.ReleaseDetailSerializer(release).data)


class ServiceReleaseActionView(APIView):
    """promote, rollback, pause, resume: each acts at once."""

    permission_classes = [CanManage]
    actions = {
        "promote": releases.release_promote,
        "rollback": releases.release_rollback,
        "pause": releases.release_pause,
        "resume": releases.release_resume,
    }

    @extend_schema(
        request=None,
        responses=s.ReleaseDetailSerializer,
        summary="Promote, roll back, pause or resume",
        operation_id="api_v1_services_releases_action",
    )
    def post(self, request, slug: str, release_id: int, action: str):
        if action not in self.actions:
            raise NotFound(f"No action '{action}'; use promote, rollback, pause or resume.")
        release = selectors.release_get(organization_id=request.auth.organization_id, slug=slug, release_id=release_id)
        release = self.actions[action](release=release)
        return Response(s.ReleaseDetailSerializer(release).data)
