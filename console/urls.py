from django.urls import path

from console.views import (
    api_keys,
    marketplace_pages,
    model_pages,
    organizations,
    publisher,
    service_pages,
    service_releases,
    service_versions,
    subscriptions,
)

app_name = "console"

urlpatterns = [
    path("", organizations.home, name="home"),
    path("organizations/new/", organizations.organization_create, name="organization_create"),
    path("organizations/switch/", organizations.organization_switch, name="organization_switch"),
    path("models/", model_pages.model_list, name="model_list"),
    path("models/<slug:slug>/", model_pages.model_detail, name="model_detail"),
    path("models/<slug:slug>/versions/", model_pages.model_version_add, name="model_version_add"),
    path("models/<slug:slug>/delete/", model_pages.model_delete, name="model_delete"),
    path("deploy/", service_pages.service_create, name="service_create"),
    path("services/", service_pages.service_list, name="service_list"),
    path("services/<slug:slug>/", service_pages.service_detail, name="service_detail"),
    path("services/<slug:slug>/status/", service_pages.service_status, name="service_status"),
    path("services/<slug:slug>/logs/", service_pages.service_logs, name="service_logs"),
    path("services/<slug:slug>/controls/", service_pages.service_controls, name="service_controls"),
    path("services/<slug:slug>/scale/", service_pages.service_scale, name="service_scale"),
    path("services/<slug:slug>/autoscaling/", service_pages.service_autoscaling, name="service_autoscaling"),
    path("services/<slug:slug>/resources/", service_pages.service_resources, name="service_resources"),
    path("services/<slug:slug>/network/", service_pages.service_network, name="service_network"),
    path("services/<slug:slug>/versions/", service_versions.service_version_add, name="service_version_add"),
    path(
        "services/<slug:slug>/versions/<int:version>/remove/",
        service_versions.service_version_remove,
        name="service_version_remove",
    ),
    path("services/<slug:slug>/traffic/", service_versions.service_traffic, name="service_traffic"),
    path("services/<slug:slug>/releases/", service_releases.service_release_start, name="service_release_start"),
    path(
        "services/<slug:slug>/releases/<int:release_id>/<str:action>/",
        service_releases.service_release_action,
        name="service_release_action",
    ),
    path("services/<slug:slug>/delete/", service_pages.service_delete, name="service_delete"),
    path("keys/", api_keys.key_list, name="key_list"),
    path("keys/created/", api_keys.key_created, name="key_created"),
    path("keys/<int:key_id>/revoke/", api_keys.key_revoke, name="key_revoke"),
    path("marketplace/", marketplace_pages.marketplace, name="marketplace"),
    path("marketplace/<slug:slug>/", marketplace_pages.marketplace_app, name="marketplace_app"),
    path("marketplace/<slug:slug>/subscribe/", marketplace_pages.marketplace_subscribe, name="marketplace_subscribe"),
    path("subscriptions/", subscriptions.subscription_list, name="subscription_list"),
    path(
        "subscriptions/<int:subscription_id>/cancel/",
        subscriptions.subscription_cancel,
        name="subscription_cancel",
    ),
    path("publisher/", publisher.publisher_listing_list, name="publisher_listing_list"),
    path("publisher/<slug:slug>/", publisher.publisher_listing_detail, name="publisher_listing_detail"),
    path("publisher/<slug:slug>/edit/", publisher.publisher_listing_edit, name="publisher_listing_edit"),
    path(
        "publisher/<slug:slug>/publish/",
        publisher.publisher_listing_publish,
        name="publisher_listing_publish",
    ),
    path(
        "publisher/<slug:slug>/unpublish/",
        publisher.publisher_listing_unpublish,
        name="publisher_listing_unpublish",
    ),
]
