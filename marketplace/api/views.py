"""The marketplace's API: publishers list services as apps, anyone browses the published
ones, organizations subscribe with a plan."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import selectors as account_selectors
from accounts.permissions import CanManage
from inference.api.views import PREDICT_REQUEST, PREDICT_RESPONSE, ROUTE_KEY_HEADER, GatewayView
from marketplace import app_calls, selectors, services, usage
from marketplace.api import serializers as s
from marketplace.models import ListingStatus


def _organization(request):
    return account_selectors.organization_get(organization_id=request.auth.organization_id)


class ListingListView(APIView):
    permission_classes = [CanManage]

    @extend_schema(responses=s.PublisherListingSerializer(many=True), summary="Your listings")
    def get(self, request):
        listings = selectors.publisher_listings(organization_id=request.auth.organization_id)
        return Response(s.PublisherListingSerializer(listings, many=True).data)

    @extend_schema(
        request=s.ListingCreateSerializer,
        responses={201: s.PublisherListingSerializer},
        summary="List one of your services as an app (a draft)",
    )
    def post(self, request):
        serializer = s.ListingCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        listing = services.listing_create(
            publisher=_organization(request), service_slug=data.pop("service"), plans=data.pop("plans"), **data
        )
        listing = selectors.publisher_listing_get(organization_id=request.auth.organization_id, slug=listing.slug)
        return Response(s.PublisherListingSerializer(listing).data, status=status.HTTP_201_CREATED)


class ListingDetailView(APIView):
    permission_classes = [CanManage]

    @extend_schema(responses=s.PublisherListingSerializer, summary="One of your listings")
    def get(self, request, slug: str):
        listing = selectors.publisher_listing_get(organization_id=request.auth.organization_id, slug=slug)
        return Response(s.PublisherListingSerializer(listing).data)

    @extend_schema(
        request=s.ListingUpdateSerializer,
        responses=s.PublisherListingSerializer,
        summary="Edit a listing: its page, its plans (subscribers keep a changed plan until they pick another)",
    )
    def patch(self, request, slug: str):
        listing = selectors.publisher_listing_get(organization_id=request.auth.organization_id, slug=slug)
        serializer = s.ListingUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.listing_update(listing=listing, **serializer.validated_data)
        listing = selectors.publisher_listing_get(organization_id=request.auth.organization_id, slug=slug)
        return Response(s.PublisherListingSerializer(listing).data)


class ListingStatusView(APIView):
    """publish / unpublish."""

    permission_classes = [CanManage]
    new_status = ListingStatus.PUBLISHED  # set per URL

    @extend_schema(request=None, responses=s.PublisherListingSerializer, summary="Publish or unpublish a listing")
    def post(self, request, slug: str):
        listing = selectors.publisher_listing_get(organization_id=request.auth.organization_id, slug=slug)
        listing = services.listing_set_status(listing=listing, status=self.new_status)
        return Response(s.PublisherListingSerializer(listing).data)


class ListingUsageView(APIView):
    permission_classes = [CanManage]

    @extend_schema(
        parameters=[OpenApiParameter("days", int, description="How many days back, today included (default 30).")],
        responses=s.ListingUsageSerializer,
        summary="Calls and revenue of a listing: per subscriber organization, per plan, per day",
    )
    def get(self, request, slug: str):
        query = s.ListingUsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        listing = selectors.publisher_listing_get(organization_id=request.auth.organization_id, slug=slug)
        return Response(s.ListingUsageSerializer(usage.listing_usage(listing, **query.validated_data)).data)


class MarketplaceView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        parameters=[OpenApiParameter("q", str), OpenApiParameter("category", str)],
        responses=s.ListingSerializer(many=True),
        summary="Published apps",
    )
    def get(self, request):
        query = s.MarketplaceQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        listings = selectors.published_listings(**query.validated_data)
        return Response(s.ListingSerializer(listings, many=True).data)


class MarketplaceDetailView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses=s.ListingSerializer, summary="A published app, with its plans")
    def get(self, request, slug: str):
        return Response(s.ListingSerializer(selectors.published_listing_get(slug=slug)).data)


class SubscribeView(APIView):
    permission_classes = [CanManage]

    @extend_schema(request=s.SubscribeSerializer, responses={201: s.SubscriptionSerializer}, summary="Subscribe")
    def post(self, request, slug: str):
        serializer = s.SubscribeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        listing = selectors.published_listing_get(slug=slug)
        subscription = services.subscribe(
            subscriber=_organization(request), listing=listing, plan_name=serializer.validated_data["plan"]
        )
        return Response(s.SubscriptionSerializer(subscription).data, status=status.HTTP_201_CREATED)


class SubscriptionListView(APIView):
    permission_classes = [CanManage]

    @extend_schema(responses=s.SubscriptionSerializer(many=True), summary="Your subscriptions")
    def get(self, request):
        subscriptions = selectors.subscriptions(organization_id=request.auth.organization_id)
        return Response(s.SubscriptionSerializer(subscriptions, many=True).data)


class SubscriptionDetailView(APIView):
    permission_classes = [CanManage]

    @extend_schema(responses={204: None}, summary="Cancel a subscription (access ends at once)")
    def delete(self, request, subscription_id: int):
        subscription = selectors.subscription_get(
            organization_id=request.auth.organization_id, subscription_id=subscription_id
        )
        services.subscription_cancel(subscription=subscription)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SubscriptionUsageView(APIView):
    permission_classes = [CanManage]

    @extend_schema(responses=s.SubscriptionUsageSerializer, summary="A subscription's usage: the period and each day")
    def get(self, request, subscription_id: int):
        subscription = selectors.subscription_get(
            organization_id=request.auth.organization_id, subscription_id=subscription_id
        )
        return Response(s.SubscriptionUsageSerializer(usage.subscription_usage(subscription)).data)


class AppPredictView(GatewayView):
    """A subscriber calls a marketplace app with its own key: held to its plan, metered."""

    route_kind = "app"
    handler = staticmethod(app_calls.serve_app)

    @extend_schema(
        request={"application/json": PREDICT_REQUEST, "application/octet-stream": OpenApiTypes.BINARY},
        responses={200: PREDICT_RESPONSE},
        parameters=[ROUTE_KEY_HEADER],
        summary="Call a marketplace app you subscribe to",
        description="403 without an active subscription; 429 `quota_exceeded` or `rate_limited` with "
        "Retry-After, and `too_many_in_flight` beyond the plan's calls in flight. Only successful calls count toward the quota. 422 `invalid_input` (and 400, 413) "
        "when the app cannot take the input, with the app's message; 502 `model_error` when the app "
        "failed (its publisher sees the error in the service's logs).",
    )
    def post(self, request, slug: str):
        return self._serve(request, slug, path="/predict")
