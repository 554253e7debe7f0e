from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from inference.api.urls import api_urlpatterns as inference_api
from inference.api.urls import oip_urlpatterns
from inference.api.views import metrics

api_v1 = [
    *inference_api,
    path("", include("accounts.api.urls")),
    path("", include("controlplane.api.urls")),
    path("", include("marketplace.api.urls")),
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("v2/", include(oip_urlpatterns)),
    path("metrics", metrics, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    path("", include("console.urls")),
]

handler400 = "modelbay.core.errors.json_400"
handler403 = "modelbay.core.errors.json_403"
handler404 = "modelbay.core.errors.json_404"
handler500 = "modelbay.core.errors.json_500"
