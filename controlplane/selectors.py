"""Reads of models and services, always scoped to one organization.

A missing object and another organization's object raise the same Http404.
"""

from django.db.models import Prefetch, QuerySet
from django.shortcuts import get_object_or_404

from controlplane.choices import LIVE_INSTANCE_STATUSES
from controlplane.models import Deployment, Instance, Model, ModelVersion, Service


def model_list(*, organization_id: int) -> QuerySet[Model]:
    return Model.objects.filter(organization_id=organization_id).prefetch_related("versions")


def model_get(*, organization_id: int, slug: str) -> Model:
    return get_object_or_404(model_list(organization_id=organization_id), slug=slug)


def model_version_get(*, organization_id: int, model_slug: str, version: int) -> ModelVersion:
    return get_object_or_404(
        ModelVersion.objects.select_related("model"),
        model__organization_id=organization_id,
        model__slug=model_slug,
        version=version,
    )


def model_is_deployed(*, model: Model) -> bool:
    return Deployment.objects.filter(model_version__model=model).exists()


def service_list(*, organization_id: int) -> QuerySet[Service]:
    instances = Instance.objects.order_by("created_at")
    deployments = Deployment.objects.select_related("model_version").prefetch_related(
        Prefetch("instances", queryset=instances)
    )
    return (
        Service.objects.filter(organization_id=organization_id, deleted_at__isnull=True)
        .select_related("model")
        .prefetch_related(Prefetch("deployments", queryset=deployments))
    )


def service_get(*, organization_id: int, slug: str) -> Service:
    return get_object_or_404(service_list(organization_id=organization_id), slug=slug)


def service_instances(*, service: Service) -> list[Instance]:
    """Every instance of the service, the finished ones included, oldest first."""
    return [instance for deployment in service.deployments.all() for instance in deployment.instances.all()]


def live_instances(*, service: Service) -> QuerySet[Instance]:
    return Instance.objects.filter(deployment__service=service, status__in=LIVE_INSTANCE_STATUSES)
