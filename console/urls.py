from django.urls import path

from console import marketplace_views, views

app_name = "console"

urlpatterns = [
    path("", views.home, name="home"),
    path("organizations/new/", views.organization_create, name="organization_create"),
    path("organizations/switch/", views.organization_switch, name="organization_switch"),
    path("models/", views.model_list, name="model_list"),
    path("models/<slug:slug>/", views.model_detail, name="model_detail"),
    path("models/<slug:slug>/versions/", views.model_version_add, name="model_version_add"),
    path("models/<slug:slug>/delete/", views.model_delete, name="model_delete"),
    path("deploy/", views.service_create, name="service_create"),
    path("services/", views.service_list, name="service_list"),
    path("services/<slug:slug>/", views.service_detail, name="service_detail"),
    path("services/<slug:slug>/status/", views.service_status, name="service_status"),
    path("services/<slug:slug>/scale/", views.service_scale, name="service_scale"),
    path("services/<slug:slug>/resources/", views.service_resources, name="service_resources"),
    path("services/<slug:slug>/versions/", views.service_version_add, name="service_version_add"),
    path(
        "services/<slug:slug>/versions/<int:version>/remove/",
        views.service_version_remove,
        name="service_version_remove",
    ),
    path("services/<slug:slug>/traffic/", views.service_traffic, name="service_traffic"),
    path("services/<slug:slug>/releases/", views.service_release_start, name="service_release_start"),
    path(
        "services/<slug:slug>/releases/<int:release_id>/<str:action>/",
        views.service_release_action,
        name="service_release_action",
    ),
    path("services/<slug:slug>/delete/", views.service_delete, name="service_delete"),
    path("keys/", views.key_list, name="key_list"),
    path("keys/created/", views.key_created, name="key_created"),
    path("keys/<int:key_id>/revoke/", views.key_revoke, name="key_revoke"),
    path("marketplace/", marketplace_views.marketplace, name="marketplace"),
    path("marketplace/<slug:slug>/", marketplace_views.marketplace_app, name="marketplace_app"),
    path("marketplace/<slug:slug>/subscribe/", marketplace_views.marketplace_subscribe, name="marketplace_subscribe"),
    path("subscriptions/", marketplace_views.subscription_list, name="subscription_list"),
    path(
        "subscriptions/<int:subscription_id>/cancel/",
        marketplace_views.subscription_cancel,
        name="subscription_cancel",
    ),
    path("publisher/", marketplace_views.publisher_listing_list, name="publisher_listing_list"),
    path("publisher/<slug:slug>/", marketplace_views.publisher_listing_detail, name="publisher_listing_detail"),
    path(
        "publisher/<slug:slug>/publish/",
        marketplace_views.publisher_listing_publish,
        name="publisher_listing_publish",
    ),
    path(
        "publisher/<slug:slug>/unpublish/",
        marketplace_views.publisher_listing_unpublish,
        name="publisher_listing_unpublish",
    ),
]
