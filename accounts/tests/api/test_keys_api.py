import secrets
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiKey, Organization

pytestmark = pytest.mark.django_db


def test_create_key_shows_secret_once_then_lists_without_it(api):
    response = api.post("/api/v1/keys", {"name": "ci", "scopes": ["predict"]}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert set(body) >= {"id", "name", "prefix", "scopes", "key"}
    assert body["key"].startswith(f"mb_{body['prefix']}_")
    assert body["scopes"] == ["predict"]
    listed = api.get("/api/v1/keys").json()
    assert body["id"] in [k["id"] for k in listed]
    assert all("key" not in k and "secret_hash" not in k for k in listed)


def test_new_key_works_and_revoked_key_answers_401(api):
    created = api.post("/api/v1/keys", {"name": "temp"}, format="json").json()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {created['key']}")
    assert client.get("/api/v1/models").status_code == 200
    assert api.delete(f"/api/v1/keys/{created['id']}").status_code == 204
    response = client.get("/api/v1/models")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"
    assert "revoked" in response.json()["detail"]


def test_only_hash_of_secret_is_stored(api):
    created = api.post("/api/v1/keys", {"name": "x"}, format="json").json()
    row = ApiKey.objects.get(pk=created["id"])
    secret = created["key"].split("_", 2)[2]
    assert secret not in row.secret_hash
    assert len(row.secret_hash) == 64


@pytest.mark.parametrize(
    "payload, field",
    [({}, "name"), ({"name": "x", "scopes": ["admin"]}, "scopes.0"), ({"name": "x", "scopes": []}, "scopes")],
)
def test_bad_key_requests_name_the_field(api, payload, field):
    response = api.post("/api/v1/keys", payload, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_request"
    assert field in body["fields"]


def test_expiry_in_the_past_is_refused(api):
    past = (timezone.now() - timedelta(days=1)).isoformat()
    response = api.post("/api/v1/keys", {"name": "x", "expires_at": past}, format="json")
    assert response.status_code == 400
    assert "expires_at" in response.json()["fields"]


def test_expired_key_answers_401(api, make_api_client, organization):
    client = make_api_client(organization, name="short-lived")
    ApiKey.objects.filter(pk=client.api_key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = client.get("/api/v1/models")
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


@pytest.mark.parametrize(
    "header",
    ["", "Bearer", "Bearer mb_000000000000_nope", "Bearer not-a-key", "Basic dXNlcjpwYXNz", "Token abc"],
)
def test_missing_or_unknown_keys_answer_401_json(db, header):
    client = APIClient()
    if header:
        client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/v1/models")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_real_keys_prefix_with_a_wrong_secret_answers_401_json(api):
    prefix = api.api_key.prefix
    assert api.full_key.startswith(f"mb_{prefix}_")
    assert api.get("/api/v1/models").status_code == 200  # the key is known (and now cached)
    real_secret = api.full_key.split("_", 2)[2]
    wrong_secret = secrets.token_urlsafe(32)
    assert wrong_secret != real_secret
    for secret in (wrong_secret, real_secret[:-1] + ("A" if real_secret[-1] != "A" else "B")):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer mb_{prefix}_{secret}")
        for method, path in [("get", "/api/v1/models"), ("post", "/api/v1/services/x/predict")]:
            response = getattr(client, method)(path, format="json")
            assert response.status_code == 401, (path, response.content)
            assert response["Content-Type"].startswith("application/json")
            body = response.json()
            assert body["code"] == "unauthenticated", body
            assert response["WWW-Authenticate"].startswith("Bearer")
            # The same answer as for a prefix nobody has: a caller learns nothing of the key.
            unknown = APIClient()
            unknown.credentials(HTTP_AUTHORIZATION=f"Bearer mb_000000000000_{secret}")
            assert getattr(unknown, method)(path, format="json").json() == body
    assert api.get("/api/v1/models").status_code == 200  # the real key is none the worse


def test_predict_only_key_cannot_manage(predict_only_api):
    for method, path in [("get", "/api/v1/models"), ("get", "/api/v1/keys"), ("post", "/api/v1/services")]:
        response = getattr(predict_only_api, method)(path)
        assert response.status_code == 403, path
        assert response.json()["code"] == "forbidden"


def test_foreign_key_cannot_be_revoked(api, outsider_api):
    response = outsider_api.delete(f"/api/v1/keys/{api.api_key.pk}")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert ApiKey.objects.get(pk=api.api_key.pk).revoked_at is None
    assert api.api_key.pk not in [k["id"] for k in outsider_api.get("/api/v1/keys").json()]


def test_last_used_is_recorded_without_a_write_per_call(api, django_assert_max_num_queries):
    from accounts import authentication

    with django_assert_max_num_queries(2):  # the key's lookup and the listing: no write in the request
        api.get("/api/v1/keys")
    authentication.flush_touches()  # what the process's flusher thread does about once a second
    api.api_key.refresh_from_db()
    first = api.api_key.last_used_at
    assert first is not None
    # The key is cached in process and touched at most once a minute: no key query,
    # no update on the next calls (only the keys listing itself).
    with django_assert_max_num_queries(1):
        api.get("/api/v1/keys")
    authentication.flush_touches()
    api.api_key.refresh_from_db()
    assert api.api_key.last_used_at == first


def test_create_api_key_command_bootstraps_user_org_and_prints_key_last(capsys):
    call_command("create_api_key", "--org", "newco", "--email", "ops@newco.example", "--scopes", "manage")
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert key.startswith("mb_")
    organization = Organization.objects.get(slug="newco")
    assert organization.memberships.get().user.email == "ops@newco.example"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get("/api/v1/models").status_code == 200
    assert client.post("/api/v1/services/x/predict", {"inputs": [1]}, format="json").status_code == 403


def test_create_api_key_command_refuses_unknown_scope():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="scopes"):
        call_command("create_api_key", "--org", "x", "--email", "a@b.c", "--scopes", "root")
