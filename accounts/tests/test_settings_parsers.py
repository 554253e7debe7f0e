import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from modelbay.core.env import env_bool, env_int, env_list, env_str, parse_zone_tls, parse_zones

REPO = Path(__file__).resolve().parents[2]


def test_env_bool_reads_common_spellings(monkeypatch):
    for raw, expected in [("1", True), ("yes", True), ("ON", True), ("0", False), ("false", False), ("", True)]:
        monkeypatch.setenv("X_FLAG", raw)
        assert env_bool("X_FLAG", True) is expected


def test_env_bool_refuses_nonsense(monkeypatch):
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(ValueError, match="X_FLAG"):
        env_bool("X_FLAG")


def test_env_int_default_and_error(monkeypatch):
    monkeypatch.delenv("X_INT", raising=False)
    assert env_int("X_INT", 7) == 7
    monkeypatch.setenv("X_INT", "12")
    assert env_int("X_INT", 7) == 12
    monkeypatch.setenv("X_INT", "twelve")
    with pytest.raises(ValueError, match="X_INT"):
        env_int("X_INT", 7)


def test_env_str_reads_secret_files(monkeypatch, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("hunter2\n")
    monkeypatch.setenv("X_SECRET_FILE", str(secret))
    assert env_str("X_SECRET") == "hunter2"


def test_env_list_splits_on_commas(monkeypatch):
    monkeypatch.setenv("X_LIST", "a, b,,c")
    assert env_list("X_LIST", []) == ["a", "b", "c"]


def test_zones_with_and_without_endpoints():
    assert parse_zones("zone-a,zone-b") == {"zone-a": "", "zone-b": ""}
    assert parse_zones("a=unix:///var/run/docker.sock, b=tcp://10.0.0.2:2375") == {
        "a": "unix:///var/run/docker.sock",
        "b": "tcp://10.0.0.2:2375",
    }


@pytest.mark.parametrize("raw", ["", "a,a", "bad zone"])
def test_bad_zones_are_refused(raw):
    with pytest.raises(ValueError, match="MODELBAY_ZONES"):
        parse_zones(raw)


# --- engines on other hosts: TLS with a client certificate only ----------------------------
@pytest.fixture
def cert_dir(tmp_path):
    folder = tmp_path / "zone-b-certs"
    folder.mkdir()
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (folder / name).write_text("-----BEGIN PLACEHOLDER-----\n")
    return folder


def test_unix_and_endpointless_zones_need_no_tls():
    assert parse_zone_tls("", {"a": "unix:///var/run/docker.sock", "b": ""}) == {}
    assert parse_zone_tls("", {"a": "ssh://deploy@host-b"}) == {}


def test_a_tcp_zone_with_its_certificate_folder_is_accepted(cert_dir):
    zones = {"zone-a": "unix:///var/run/docker.sock", "zone-b": "tcp://10.0.0.2:2376"}
    assert parse_zone_tls(f" zone-b = {cert_dir} ", zones) == {"zone-b": cert_dir.resolve()}
    assert parse_zone_tls(f"zone-b={cert_dir}", {"zone-b": "https://host-b:2376"}) == {"zone-b": cert_dir.resolve()}


@pytest.mark.parametrize("endpoint", ["tcp://10.0.0.2:2375", "http://10.0.0.2:2375", "https://10.0.0.2:2376"])
def test_a_tcp_zone_without_tls_is_refused_naming_the_zone_and_the_setting(endpoint):
    with pytest.raises(ImproperlyConfigured) as caught:
        parse_zone_tls("", {"zone-a": "", "zone-b": endpoint})
    message = str(caught.value)
    assert "'zone-b'" in message and "MODELBAY_ZONE_TLS=zone-b=" in message and "ca.pem, cert.pem, key.pem" in message


@pytest.mark.parametrize(
    ("raw", "zones", "expected"),
    [
        ("zone-b", {"zone-b": "tcp://h:2376"}, "expected zone=/path"),
        ("zone-c={dir}", {"zone-b": "tcp://h:2376"}, "'zone-c' is not in MODELBAY_ZONES"),
        ("zone-b={dir},zone-b={dir}", {"zone-b": "tcp://h:2376"}, "given twice"),
        ("zone-a={dir}", {"zone-a": "unix:///var/run/docker.sock"}, "tcp:// engines only"),
        ("zone-b={dir}/nowhere", {"zone-b": "tcp://h:2376"}, "lacks ca.pem, cert.pem, key.pem"),
    ],
)
def test_bad_tls_settings_are_refused(cert_dir, raw, zones, expected):
    with pytest.raises(ImproperlyConfigured, match=expected):
        parse_zone_tls(raw.format(dir=cert_dir), zones)


def test_a_folder_missing_the_key_is_refused(cert_dir):
    (cert_dir / "key.pem").unlink()
    with pytest.raises(ImproperlyConfigured, match=r"lacks key\.pem"):
        parse_zone_tls(f"zone-b={cert_dir}", {"zone-b": "tcp://h:2376"})


def test_a_zone_on_a_tcp_docker_host_needs_docker_tls_verify():
    with pytest.raises(ImproperlyConfigured, match="DOCKER_TLS_VERIFY"):
        parse_zone_tls("", {"zone-a": ""}, docker_host="tcp://10.0.0.2:2375")
    assert parse_zone_tls("", {"zone-a": ""}, docker_host="tcp://10.0.0.2:2376", docker_tls_verify="1") == {}
    assert parse_zone_tls("", {"zone-a": ""}, docker_host="unix:///run/docker.sock") == {}


def _load_settings(tmp_path, **env: str) -> subprocess.CompletedProcess:
    """Import the settings in a fresh process with this environment."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MODELBAY_", "DOCKER_"))}
    environment.update(MODELBAY_DATA_DIR=str(tmp_path / "data"), DJANGO_SETTINGS_MODULE="modelbay.settings", **env)
    code = "from django.conf import settings; print(repr(settings.MODELBAY_ZONE_TLS))"
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=environment, capture_output=True, text=True)


def test_settings_refuse_a_plain_tcp_zone_and_load_with_its_tls_folder(tmp_path, cert_dir):
    refused = _load_settings(tmp_path, MODELBAY_ZONES="zone-a=unix:///var/run/docker.sock,zone-b=tcp://10.0.0.2:2375")
    assert refused.returncode != 0
    assert "ImproperlyConfigured" in refused.stderr and "zone 'zone-b'" in refused.stderr, refused.stderr
    assert "MODELBAY_ZONE_TLS=zone-b=" in refused.stderr

    loaded = _load_settings(
        tmp_path,
        MODELBAY_ZONES="zone-a=unix:///var/run/docker.sock,zone-b=tcp://10.0.0.2:2376",
        MODELBAY_ZONE_TLS=f"zone-b={cert_dir}",
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == repr({"zone-b": cert_dir.resolve()})

    unix_only = _load_settings(tmp_path, MODELBAY_ZONES="zone-a=unix:///var/run/docker.sock,zone-b")
    assert unix_only.returncode == 0 and unix_only.stdout.strip() == "{}", unix_only.stderr


def test_the_docker_backend_on_a_plain_tcp_docker_host_is_refused(tmp_path):
    refused = _load_settings(tmp_path, MODELBAY_RUNTIME_BACKEND="docker", DOCKER_HOST="tcp://10.0.0.2:2375")
    assert refused.returncode != 0 and "DOCKER_TLS_VERIFY" in refused.stderr, refused.stderr
    # The local backend has no engine to call: DOCKER_HOST is none of its business.
    assert _load_settings(tmp_path, DOCKER_HOST="tcp://10.0.0.2:2375").returncode == 0
