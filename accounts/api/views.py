from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import selectors, services
from accounts.api.serializers import ApiKeyCreatedSerializer, ApiKeyCreateSerializer, ApiKeySerializer
from accounts.permissions import CanManage


class ApiKeyListView(APIView):
    permission_classes = [CanManage]

    @extend_schema(responses=ApiKeySerializer(many=True), summary="List API keys (never their secrets)")
    def get(self, request):
        api_keys = selectors.api_key_list(organization_id=request.auth.organization_id)
        return Response(ApiKeySerializer(api_keys, many=True).data)

    @extend_schema(request=ApiKeyCreateSerializer, responses={201: ApiKeyCreatedSerializer}, summary="Create an API key")
    def post(self, request):
        serializer = ApiKeyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = request.user if getattr(request.user, "pk", None) else None
        api_key, full_key = services.api_key_create(
            organization=selectors.organization_get(organization_id=request.auth.organization_id),
            created_by=user,
            **serializer.validated_data,
        )
        api_key.key = full_key
        return Response(ApiKeyCreatedSerializer(api_key).data, status=status.HTTP_201_CREATED)


class ApiKeyDetailView(APIView):
    permission_classes = [CanManage]

    @extend_schema(responses={204: None}, summary="Revoke an API key")
    def delete(self, request, key_id: int):
        api_key = selectors.api_key_get(organization_id=request.auth.organization_id, key_id=key_id)
        services.api_key_revoke(api_key=api_key)
        return Response(status=status.HTTP_204_NO_CONTENT)
