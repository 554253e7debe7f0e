from django.urls import path

from marketplace.api import views
from marketplace.models import ListingStatus

urlpatterns = [
    path("listings", views.ListingListView.as_view(), name="api-listings"),
    path("listings/<slug:slug>", views.ListingDetailView.as_view(), name="api-listing-detail"),
    path(
        "listings/<slug:slug>/publish",
        views.ListingStatusView.as_view(new_status=ListingStatus.PUBLISHED),
        name="api-listing-publish",
    ),
    path(
        "listings/<slug:slug>/unpublish",
        views.ListingStatusView.as_view(new_status=ListingStatus.UNPUBLISHED),
        name="api-listing-unpublish",
    ),
    path("listings/<slug:slug>/usage", views.ListingUsageView.as_view(), name="api-listing-usage"),
    path("apps/<slug:slug>/predict", views.AppPredictView.as_view(), name="api-app-predict"),
    path("marketplace", views.MarketplaceView.as_view(), name="api-marketplace"),
    path("marketplace/<slug:slug>", views.MarketplaceDetailView.as_view(), name="api-marketplace-detail"),
    path("marketplace/<slug:slug>/subscribe", views.SubscribeView.as_view(), name="api-subscribe"),
    path("subscriptions", views.SubscriptionListView.as_view(), name="api-subscriptions"),
    path("subscriptions/<int:subscription_id>", views.SubscriptionDetailView.as_view(), name="api-subscription-detail"),
    path(
        "subscriptions/<int:subscription_id>/usage",
        views.SubscriptionUsageView.as_view(),
        name="api-subscription-usage",
    ),
]
