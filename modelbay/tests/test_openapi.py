import pytest
import yaml

pytestmark = pytest.mark.django_db

DOCUMENTED = {
    "/api/v1/keys": {"get", "post"},
    "/api/v1/keys/{key_id}": {"delete"},
    "/api/v1/models": {"get", "post"},
    "/api/v1/models/{slug}": {"get", "delete"},
    "/api/v1/models/{slug}/versions": {"post"},
    "/api/v1/services": {"get", "post"},
    "/api/v1/services/{slug}": {"get", "patch", "delete"},
    "/api/v1/services/{slug}/predict": {"post"},
    "/api/v1/services/{slug}/logs": {"get"},
    "/api/v1/services/{slug}/releases": {"get", "post"},
    "/api/v1/services/{slug}/traffic": {"put"},
    "/api/v1/listings": {"get", "post"},
    "/api/v1/listings/{slug}/publish": {"post"},
    "/api/v1/listings/{slug}/usage": {"get"},
    "/api/v1/marketplace": {"get"},
    "/api/v1/marketplace/{slug}": {"get"},
    "/api/v1/marketplace/{slug}/subscribe": {"post"},
    "/api/v1/subscriptions": {"get"},
    "/api/v1/subscriptions/{subscription_id}": {"delete"},
    "/api/v1/subscriptions/{subscription_id}/usage": {"get"},
    "/api/v1/apps/{slug}/predict": {"post"},
    "/v2/health/live": {"get"},
    "/v2/health/ready": {"get"},
    "/v2/models/{slug}": {"get"},
    "/v2/models/{slug}/ready": {"get"},
    "/v2/models/{slug}/infer": {"post"},
}


def test_schema_describes_every_endpoint(client):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    for path, methods in DOCUMENTED.items():
        assert path in schema["paths"], path
        assert methods <= set(schema["paths"][path]), (path, set(schema["paths"][path]))
    assert "ApiKey" in schema["components"]["securitySchemes"]


def test_docs_page_uses_vendored_assets(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    assert "cdn.jsdelivr.net" not in html and "unpkg.com" not in html
