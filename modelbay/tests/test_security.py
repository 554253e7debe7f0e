"""Security settings from the environment, and the headers of a console page."""

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from modelbay.core import csp

REPO = Path(__file__).resolve().parents[2]
_SETTINGS_ENV = (
    "MODELBAY_SITE_URL",
    "MODELBAY_BEHIND_PROXY",
    "MODELBAY_SECURE_COOKIES",
    "MODELBAY_HSTS_SECONDS",
    "MODELBAY_HSTS_INCLUDE_SUBDOMAINS",
    "MODELBAY_CSP",
)
_READ = (
    "import json, modelbay.settings as s; print(json.dumps({name: getattr(s, name, None) for name in ("
    "'SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', 'SECURE_HSTS_SECONDS', 'SECURE_HSTS_INCLUDE_SUBDOMAINS', "
    "'SECURE_CONTENT_TYPE_NOSNIFF', 'SECURE_PROXY_SSL_HEADER', 'MODELBAY_CSP', 'MIDDLEWARE')}))"
)


def _settings_with(tmp_path, **env) -> dict:
    """The settings module as a fresh process reads it with ``env`` set."""
    full = {k: v for k, v in os.environ.items() if k not in _SETTINGS_ENV}
    full.update(MODELBAY_DATA_DIR=str(tmp_path), **env)
    out = subprocess.run([sys.executable, "-c", _READ], cwd=REPO, env=full, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_http_site_keeps_cookies_usable_without_tls(tmp_path):
    values = _settings_with(tmp_path, MODELBAY_SITE_URL="http://127.0.0.1:8000")

    assert values["SESSION_COOKIE_SECURE"] is False
    assert values["CSRF_COOKIE_SECURE"] is False
    assert values["SECURE_HSTS_SECONDS"] == 0
    assert values["SECURE_PROXY_SSL_HEADER"] is None
    assert values["SECURE_CONTENT_TYPE_NOSNIFF"] is True
    assert "script-src 'self';" in values["MODELBAY_CSP"]


def test_https_site_turns_on_secure_cookies_and_hsts(tmp_path):
    values = _settings_with(tmp_path, MODELBAY_SITE_URL="https://models.example.com")

    assert values["SESSION_COOKIE_SECURE"] is True
    assert values["CSRF_COOKIE_SECURE"] is True
    assert values["SECURE_HSTS_SECONDS"] == 365 * 24 * 3600
    assert values["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is False
    assert values["SECURE_PROXY_SSL_HEADER"] is None  # not behind a proxy unless told
    middleware = values["MIDDLEWARE"]
    assert middleware.index("modelbay.core.csp.ContentSecurityPolicyMiddleware") == (
        middleware.index("django.middleware.security.SecurityMiddleware") + 1
    )


def test_https_settings_can_be_tuned_from_the_environment(tmp_path):
    values = _settings_with(
        tmp_path,
        MODELBAY_SITE_URL="https://models.example.com",
        MODELBAY_BEHIND_PROXY="1",
        MODELBAY_HSTS_SECONDS="3600",
        MODELBAY_HSTS_INCLUDE_SUBDOMAINS="true",
        MODELBAY_CSP="default-src 'none'",
    )

    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert values["SECURE_HSTS_SECONDS"] == 3600
    assert values["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert values["MODELBAY_CSP"] == "default-src 'none'"


def test_the_500_page_inline_style_is_allowed_by_its_hash():
    from django.conf import settings

    style = re.search(r"<style>(.*?)</style>", (REPO / "templates" / "500.html").read_text(), re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()

    assert f"'sha256-{digest}'" in settings.MODELBAY_CSP


# --- the headers of a console page --------------------------------------------------------
@pytest.fixture
def https_settings(settings):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    settings.SECURE_HSTS_SECONDS = 365 * 24 * 3600
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = False
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    return settings


@pytest.mark.django_db
def test_console_page_headers_behind_an_https_proxy(owner, organization, https_settings):
    client = Client()
    client.force_login(owner)

    response = client.get("/models/", HTTP_X_FORWARDED_PROTO="https")

    assert response.status_code == 200
    assert response["Strict-Transport-Security"] == "max-age=31536000"
    assert response["X-Content-Type-Options"] == "nosniff"
    policy = response["Content-Security-Policy"]
    assert policy == https_settings.MODELBAY_CSP
    assert "script-src 'self';" in policy and "'unsafe-inline'" not in policy
    assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
    assert response.cookies["csrftoken"]["secure"] is True


@pytest.mark.django_db
def test_login_page_sets_secure_cookies(https_settings):
    response = Client().get("/accounts/login/", HTTP_X_FORWARDED_PROTO="https")

    assert response.status_code == 200
    assert "Content-Security-Policy" in response
    assert response.cookies["csrftoken"]["secure"] is True


@pytest.mark.django_db
def test_plain_http_gets_no_hsts_but_the_policy(owner, organization, https_settings):
    client = Client()
    client.force_login(owner)

    response = client.get("/models/")  # no X-Forwarded-Proto: not a secure request

    assert "Strict-Transport-Security" not in response
    assert response["Content-Security-Policy"] == https_settings.MODELBAY_CSP


@pytest.mark.django_db
def test_the_api_docs_get_their_own_policy(client):
    response = client.get("/api/docs/")

    assert response.status_code == 200
    assert response["Content-Security-Policy"] == csp.policy_for("/api/docs/")
    assert "'unsafe-inline'" in response["Content-Security-Policy"]


def test_an_empty_policy_sends_no_header(rf, settings):
    from django.http import HttpResponse

    settings.MODELBAY_CSP = ""
    settings.MODELBAY_CSP_PATHS = {}
    middleware = csp.ContentSecurityPolicyMiddleware(lambda request: HttpResponse("ok"))

    assert "Content-Security-Policy" not in middleware(rf.get("/"))


def test_a_view_own_policy_is_kept(rf):
    from django.http import HttpResponse

    def view(request):
        response = HttpResponse("ok")
        response["Content-Security-Policy"] = "default-src 'none'"
        return response

    assert csp.ContentSecurityPolicyMiddleware(view)(rf.get("/"))["Content-Security-Policy"] == "default-src 'none'"
