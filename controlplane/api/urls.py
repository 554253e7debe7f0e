from django.urls import path

from controlplane.api import views, zones

urlpatterns = [
    path("models", views.ModelListView.as_view(), name="api-models"),
    path("models/<slug:slug>", views.ModelDetailView.as_view(), name="api-model-detail"),
    path("models/<slug:slug>/versions", views.ModelVersionListView.as_view(), name="api-model-versions"),
    path("services", views.ServiceListView.as_view(), name="api-services"),
    path("services/<slug:slug>", views.ServiceDetailView.as_view(), name="api-service-detail"),
    path("services/<slug:slug>/autoscaler", views.ServiceAutoscalerView.as_view(), name="api-service-autoscaler"),
    path("services/<slug:slug>/logs", views.ServiceLogsView.as_view(), name="api-service-logs"),
    path("services/<slug:slug>/metrics", views.ServiceMetricsView.as_view(), name="api-service-metrics"),
    path("services/<slug:slug>/metrics/series", views.ServiceSeriesView.as_view(), name="api-service-series"),
    path("services/<slug:slug>/releases", views.ServiceReleaseListView.as_view(), name="api-service-releases"),
    path(
        "services/<slug:slug>/releases/<int:release_id>",
        views.ServiceReleaseDetailView.as_view(),
        name="api-service-release-detail",
    ),
    path(
        "services/<slug:slug>/releases/<int:release_id>/<str:action>",
        views.ServiceReleaseActionView.as_view(),
        name="api-service-release-action",
    ),
    path("services/<slug:slug>/traffic", views.ServiceTrafficView.as_view(), name="api-service-traffic"),
    path("services/<slug:slug>/versions", views.ServiceVersionListView.as_view(), name="api-service-versions"),
    path(
        "services/<slug:slug>/versions/<int:version>",
        views.ServiceVersionDetailView.as_view(),
        name="api-service-version-detail",
    ),
    path("zones", zones.ZoneListView.as_view(), name="api-zones"),
]
