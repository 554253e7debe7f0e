"""``GET /api/v1/zones``: whether each zone's engine answered the worker's last look.
Zones are the platform's: any organization's member may read them."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.models import Zone
from controlplane.zones import zone_list


class ZoneSerializer(serializers.ModelSerializer):
    class Meta:
        model = Zone
        fields = ["name", "reachable", "reason", "checked_at", "changed_at"]
        extra_kwargs = {
            "reason": {"help_text": "Why the zone's engine cannot be reached; empty while it answers."},
            "checked_at": {"help_text": "When the worker last asked the zone's engine."},
            "changed_at": {"help_text": "Since when the zone is reachable (or not)."},
        }


class ZoneListView(APIView):
    @extend_schema(responses=ZoneSerializer(many=True), summary="Zones and whether their engines answer")
    def get(self, request):
        return Response(ZoneSerializer(zone_list(), many=True).data)
