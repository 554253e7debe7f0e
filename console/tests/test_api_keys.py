"""The API keys pages: creating a key shown once, expiry, scopes, revoking (console.views.api_keys)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import ApiKey
from console.tests.helpers import url

pytestmark = pytest.mark.django_db


def test_creating_a_key_shows_it_once(owner_client, organization, owner):
    response = owner_client.post(url("key_list"), {"name": "ci", "scopes": ["predict"]})

    assert response.url == url("key_created")
    api_key = ApiKey.objects.get(organization=organization)
    assert (api_key.scopes, api_key.created_by) == (["predict"], owner)
    shown = owner_client.get(url("key_created"))
    full_key = shown.context["full_key"]
    assert full_key.startswith(f"mb_{api_key.prefix}_")
    assert full_key.encode() in shown.content
    assert "no-store" in shown["Cache-Control"]
    again = owner_client.get(url("key_created"))
    assert again.url == url("key_list")
    assert full_key.encode() not in owner_client.get(url("key_list")).content


def test_a_created_key_works_against_the_api(owner_client):
    owner_client.post(url("key_list"), {"name": "ci", "scopes": ["manage"]})
    full_key = owner_client.get(url("key_created")).context["full_key"]

    response = owner_client.get("/api/v1/models", HTTP_AUTHORIZATION=f"Bearer {full_key}")

    assert response.status_code == 200


def test_a_key_can_expire_on_a_future_day(owner_client, organization):
    day = (timezone.now() + timedelta(days=30)).date()

    owner_client.post(url("key_list"), {"name": "temp", "scopes": ["predict"], "expires_on": day.isoformat()})

    assert ApiKey.objects.get(organization=organization).expires_at.date() == day


def test_a_key_cannot_expire_in_the_past(owner_client):
    day = (timezone.now() - timedelta(days=1)).date()

    response = owner_client.post(url("key_list"), {"name": "old", "scopes": ["predict"], "expires_on": day})

    assert response.status_code == 400
    assert "expires_on" in response.context["form"].errors
    assert not ApiKey.objects.exists()


def test_a_key_needs_a_scope(owner_client):
    response = owner_client.post(url("key_list"), {"name": "none"})

    assert "scopes" in response.context["form"].errors


def test_revoking_a_key(owner_client, api_key):
    response = owner_client.post(url("key_revoke", api_key.pk))

    assert response.url == url("key_list")
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    assert list(owner_client.get(url("key_list")).context["keys"]) == []
