"""Where mail is delivered, a person verifies their email address before uploading code or
creating API keys (accounts.verification); the create_api_key command never hands an
organization to an existing account that has not verified its address."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from allauth.account.models import EmailAddress
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.choices import Role
from accounts.models import ApiKey, Membership, Organization
from accounts.tests.factories import MembershipFactory, OrganizationFactory, UserFactory

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def required(settings):
    settings.MODELBAY_REQUIRE_VERIFIED_EMAIL = True


def _verify(user):
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)


def _session_api(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def _console(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_an_unverified_account_cannot_create_keys_nor_upload_on_the_api(required, owner):
    client = _session_api(owner)
    for path, body in (("/api/v1/keys", {"name": "ci"}), ("/api/v1/models", {"name": "m"}),
                       ("/api/v1/models/m/versions", {})):  # fmt: skip
        response = client.post(path, body, format="json")
        assert response.status_code == 403, path
        assert response.json()["code"] == "forbidden"
        assert "Verify your email address" in response.json()["detail"]
    assert not ApiKey.objects.exists()
    assert client.get("/api/v1/keys").status_code == 200  # reading is not guarded


def test_a_verified_account_creates_keys(required, owner):
    _verify(owner)
    client = _session_api(owner)
    assert client.post("/api/v1/keys", {"name": "ci"}, format="json").status_code == 201
    # past the check: the upload is refused for its own reasons (no file), not for the address
    upload = client.post("/api/v1/models", {"name": "m"}, format="json")
    assert upload.status_code != 403 and upload.json()["code"] != "forbidden"


def test_an_unverified_address_matters_only_for_the_accounts_own_email(required, owner):
    EmailAddress.objects.create(user=owner, email="other@example.com", verified=True)
    assert _session_api(owner).post("/api/v1/keys", {"name": "ci"}, format="json").status_code == 403


def test_without_the_rule_an_unverified_account_creates_keys(settings, owner):
    settings.MODELBAY_REQUIRE_VERIFIED_EMAIL = False
    assert _session_api(owner).post("/api/v1/keys", {"name": "ci"}, format="json").status_code == 201


def test_the_console_refuses_the_same_with_a_page(required, owner):
    client = _console(owner)
    for name in ("console:key_list", "console:model_list"):
        response = client.post(reverse(name), {"name": "ci", "scopes": ["predict"]})
        assert response.status_code == 403, name
        assert b"Verify your email address" in response.content
    assert not ApiKey.objects.exists()
    assert client.get(reverse("console:key_list")).status_code == 200
    _verify(owner)
    assert client.post(reverse("console:key_list"), {"name": "ci", "scopes": ["predict"]}).status_code == 302
    assert ApiKey.objects.filter(created_by=owner).exists()


def test_a_call_with_an_api_key_acts_for_its_organization(required, api):
    assert api.post("/api/v1/keys", {"name": "ci"}, format="json").status_code == 201


# --- manage.py create_api_key --------------------------------------------------------------
def test_the_command_refuses_to_make_an_unverified_existing_account_an_owner(capsys):
    squatter = UserFactory(email="ceo@acme.example", username="ceo@acme.example")
    existing = OrganizationFactory(slug="acme")
    for org in ("acme", "newco"):
        with pytest.raises(CommandError, match="has not verified its email address"):
            call_command("create_api_key", "--org", org, "--email", "CEO@acme.example")
    assert not Membership.objects.filter(user=squatter).exists()
    assert not Organization.objects.filter(slug="newco").exists()
    assert not ApiKey.objects.filter(organization=existing).exists()


def test_the_command_uses_an_existing_account_that_is_verified_or_already_a_member(capsys):
    verified = UserFactory(email="ops@acme.example", username="ops@acme.example")
    _verify(verified)
    call_command("create_api_key", "--org", "acme", "--email", "ops@acme.example")
    assert Membership.objects.get(user=verified, organization__slug="acme").role == Role.OWNER
    member = MembershipFactory(organization=OrganizationFactory(slug="globex"), role=Role.MEMBER).user
    call_command("create_api_key", "--org", "globex", "--email", member.email)
    assert Membership.objects.get(user=member, organization__slug="globex").role == Role.MEMBER  # left as it was
    assert ApiKey.objects.filter(organization__slug="globex", created_by=member).exists()


def test_the_command_with_force_makes_an_unverified_account_an_owner(capsys):
    user = UserFactory(email="known@acme.example", username="known@acme.example")
    call_command("create_api_key", "--org", "acme", "--email", "known@acme.example", "--force")
    assert Membership.objects.get(user=user, organization__slug="acme").role == Role.OWNER
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("mb_")


# --- the setting's default -----------------------------------------------------------------
@pytest.mark.parametrize(
    "backend, required_by_default",
    [
        ("django.core.mail.backends.smtp.EmailBackend", True),
        ("django.core.mail.backends.console.EmailBackend", False),
        ("django.core.mail.backends.locmem.EmailBackend", False),
    ],
)
def test_the_rule_is_on_by_default_where_mail_is_delivered(backend, required_by_default, tmp_path):
    env = {**os.environ, "EMAIL_BACKEND": backend, "MODELBAY_DATA_DIR": str(tmp_path)}
    env.pop("MODELBAY_REQUIRE_VERIFIED_EMAIL", None)
    env.pop("MODELBAY_EMAIL_VERIFICATION", None)
    code = (
        "from modelbay import settings as s; "
        "print(s.MODELBAY_REQUIRE_VERIFIED_EMAIL, s.ACCOUNT_EMAIL_VERIFICATION)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    expected = f"{required_by_default} {'optional' if required_by_default else 'none'}"
    assert out.stdout.strip().splitlines()[-1] == expected
