"""Reads of models and services, always scoped to one organization.

A missing object and another organization's object raise the same Http404.
"""

from django.db.models import Prefetch, QuerySet
from django.http import Http404
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


def service_instance_get(*, service: Service, instance_id: str | None) -> Instance:
    """One instance of the service (the newest when none is named); 404 for any other."""
    instances = Instance.objects.filter(deployment__service=service)
    if instance_id is None:
        instance = instances.order_by("-created_at").first()
        if instance is None:
            raise Http404("This service has no instances.")
        return instance
    return get_object_or_404(instances, pk=instance_id)


def instance_logs(*, instance: Instance, tail: int) -> str:
    """The last ``tail`` lines the instance's runtime printed (its traceback, when it failed)."""
    from controlplane.backends import get_backend

    return get_backend().logs(instance.id, tail=tail)
