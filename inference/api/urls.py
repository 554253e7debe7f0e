from django.urls import path

from inference.api import views

api_urlpatterns = [
    path("services/<slug:slug>/predict", views.ServicePredictView.as_view(), name="api-service-predict"),
]

oip_urlpatterns = [
    path("health/live", views.OipServerHealthView.as_view(), name="oip-live"),
    path("health/ready", views.OipServerHealthView.as_view(), name="oip-ready"),
    path("models/<slug:slug>", views.OipModelMetadataView.as_view(), name="oip-model"),
    path("models/<slug:slug>/ready", views.OipModelReadyView.as_view(), name="oip-model-ready"),
    path("models/<slug:slug>/infer", views.OipInferView.as_view(), name="oip-infer"),
    path("models/<slug:slug>/versions/<int:version>", views.OipModelMetadataView.as_view(), name="oip-model-version"),
    path(
        "models/<slug:slug>/versions/<int:version>/ready", views.OipModelReadyView.as_view(), name="oip-model-version-ready"
    ),
    path("models/<slug:slug>/versions/<int:version>/infer", views.OipInferView.as_view(), name="oip-infer-version"),
]
