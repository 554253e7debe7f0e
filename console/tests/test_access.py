"""Who reaches the console's pages: anonymous visitors go to log in, a user without an
organization creates one, and owners, members and outsiders see only their organization's
objects (console.views.common.organization_required and the scoped reads of every view)."""

import pytest
from django.urls import reverse

from accounts import services as account_services
from console.tests.helpers import url
from controlplane import services
from controlplane.models import Model, Service

pytestmark = pytest.mark.django_db


# --- access ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["home", "model_list", "service_list", "service_create", "key_list", "organization_create"]
)
def test_anonymous_visitor_is_sent_to_login(client, name):
    response = client.get(url(name))

    assert response.status_code == 302
    assert response.url.startswith(reverse("account_login"))


def test_user_without_organization_is_sent_to_create_one(client, user_factory):
    client.force_login(user_factory())

    response = client.get(url("service_list"))

    assert response.status_code == 302
    assert response.url == url("organization_create")


def test_every_page_renders_for_the_owner(owner_client, service, api_key):
    slug = service.model.slug
    pages = [
        url("home"),
        url("model_list"),
        url("model_detail", slug),
        url("service_list"),
        url("service_create"),
        url("service_detail", service.slug),
        url("service_status", service.slug),
        url("key_list"),
        url("organization_create"),
    ]
    for page in pages:
        response = owner_client.get(page)
        assert response.status_code == 200, page


def test_auth_pages_render(client, owner):
    for name in ["account_login", "account_signup"]:
        assert client.get(reverse(name)).status_code == 200
    client.force_login(owner)
    assert client.get(reverse("account_logout")).status_code == 200


def test_missing_objects_answer_404(owner_client, organization):
    for page in [url("model_detail", "nope"), url("service_detail", "nope"), url("service_status", "nope")]:
        assert owner_client.get(page).status_code == 404
    assert owner_client.post(url("key_revoke", 999999)).status_code == 404


def test_mutating_views_refuse_get(owner_client, service, api_key):
    for page in [
        url("model_delete", service.model.slug),
        url("service_delete", service.slug),
        url("service_scale", service.slug),
        url("service_autoscaling", service.slug),
        url("service_resources", service.slug),
        url("service_network", service.slug),
        url("service_version_add", service.slug),
        url("service_version_remove", service.slug, 1),
        url("service_traffic", service.slug),
        url("key_revoke", api_key.pk),
    ]:
        assert owner_client.get(page).status_code == 405


# --- owner / member / outsider -----------------------------------------------------------
def _object_pages(service, api_key):
    """Every console page and action addressing one object of the owner's organization."""
    model_slug = service.model.slug
    return [
        ("get", url("model_detail", model_slug)),
        ("post", url("model_version_add", model_slug)),
        ("post", url("model_delete", model_slug)),
        ("get", url("service_detail", service.slug)),
        ("get", url("service_status", service.slug)),
        ("post", url("service_scale", service.slug)),
        ("post", url("service_autoscaling", service.slug)),
        ("post", url("service_resources", service.slug)),
        ("post", url("service_network", service.slug)),
        ("post", url("service_version_add", service.slug)),
        ("post", url("service_version_remove", service.slug, 1)),
        ("post", url("service_traffic", service.slug)),
        ("post", url("service_delete", service.slug)),
        ("post", url("key_revoke", api_key.pk)),
    ]


def test_outsider_gets_404_on_every_object_page_and_action(outsider_client, service, api_key):
    for method, page in _object_pages(service, api_key):
        data = {"replicas": 2, "cpu": 2, "network": "egress"} if method == "post" else None
        response = getattr(outsider_client, method)(page, data)
        assert response.status_code == 404, (method, page)

    service.refresh_from_db()
    api_key.refresh_from_db()
    assert (service.replicas, service.resources, service.deleted_at, api_key.revoked_at) == (1, {}, None, None)
    assert service.network == "none"
    assert Model.objects.filter(pk=service.model_id).exists()


def test_outsider_cannot_deploy_another_organizations_model(outsider_client, model):
    response = outsider_client.post(url("service_create"), {"name": "Stolen", "model": model.slug, "replicas": 1})

    assert response.status_code == 400
    assert "model" in response.context["form"].errors
    assert not Service.objects.exists()


def test_member_can_see_and_use_the_organizations_objects(member_client, service, api_key):
    pages = [url("model_detail", service.model.slug), url("service_detail", service.slug), url("key_list")]
    for page in pages:
        assert member_client.get(page).status_code == 200, page

    response = member_client.post(url("service_scale", service.slug), {"replicas": 2})

    assert response.status_code == 302
    service.refresh_from_db()
    assert service.replicas == 2


def test_list_pages_never_show_another_organizations_objects(
    owner_client, outsider_client, service, api_key, outsider_organization, make_digits_upload
):
    foreign_model = services.model_create(
        organization=outsider_organization, name="Globex secret", upload=make_digits_upload()
    )
    foreign_service = services.service_create(
        organization=outsider_organization, name="Globex service", model_slug=foreign_model.slug
    )
    account_services.api_key_create(organization=outsider_organization, name="globex-key")

    for page in [url("home"), url("model_list"), url("service_list"), url("key_list"), url("service_create")]:
        content = owner_client.get(page).content
        assert b"Globex secret" not in content and b"Globex service" not in content and b"globex-key" not in content

    for page in [url("home"), url("model_list"), url("service_list"), url("key_list"), url("service_create")]:
        content = outsider_client.get(page).content
        assert b"Digits API" not in content and b">ci<" not in content
    assert outsider_client.get(url("service_detail", foreign_service.slug)).status_code == 200
