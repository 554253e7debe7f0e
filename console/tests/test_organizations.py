"""The home page and organizations: creating one, switching between one's own (console.views.organizations)."""

import pytest

from accounts import services as account_services
from accounts.middleware import SESSION_KEY
from accounts.models import Membership
from console.tests.helpers import url

pytestmark = pytest.mark.django_db


# --- home --------------------------------------------------------------------------------
def test_home_counts_the_organizations_objects(owner_client, service, api_key):
    response = owner_client.get(url("home"))

    assert response.context["model_count"] == 1
    assert list(response.context["services"]) == [service]
    assert response.context["key_count"] == 1


# --- organizations -----------------------------------------------------------------------
def test_creating_an_organization_makes_the_creator_owner_and_switches_to_it(owner_client, owner):
    response = owner_client.post(url("organization_create"), {"name": "Research Lab"})

    membership = Membership.objects.get(user=owner, organization__name="Research Lab")
    assert membership.role == "owner"
    assert response.url == url("home")
    assert owner_client.session[SESSION_KEY] == membership.organization_id


def test_user_without_organization_can_create_one(client, user_factory):
    user = user_factory()
    client.force_login(user)

    client.post(url("organization_create"), {"name": "Solo"})

    assert client.get(url("home")).context["current_organization"].name == "Solo"


def test_switching_to_an_own_organization(owner_client, owner):
    other = account_services.organization_create(name="Second", owner=owner)

    response = owner_client.post(url("organization_switch"), {"organization": other.pk, "next": url("model_list")})

    assert response.url == url("model_list")
    assert owner_client.session[SESSION_KEY] == other.pk
    assert owner_client.get(url("home")).context["current_organization"] == other


def test_switching_to_another_users_organization_is_404(owner_client, organization, outsider_organization):
    response = owner_client.post(url("organization_switch"), {"organization": outsider_organization.pk})

    assert response.status_code == 404
    assert owner_client.get(url("home")).context["current_organization"] == organization


def test_switch_ignores_a_foreign_next_url(owner_client, organization):
    response = owner_client.post(
        url("organization_switch"), {"organization": organization.pk, "next": "https://evil.example/"}
    )

    assert response.url == url("home")


def test_switcher_lists_only_the_users_organizations(owner_client, outsider_organization):
    response = owner_client.get(url("home"))

    assert b"Acme" in response.content
    assert b"Globex" not in response.content
