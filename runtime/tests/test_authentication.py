"""Every call to a runtime started with a credential file carries the credential, and
every answer names the instance: real runtime processes, raw HTTP."""

import json
import subprocess
import sys

import httpx
import pytest

from runtime.client import UpstreamPool, WrongInstance, auth_header

from .conftest import REPO_ROOT, free_port, start_runtime

CREDENTIAL = "s3cret-credential-of-i-abc123"

# Every route: (method, path, body). The 200s once authenticated are checked below.
ROUTES = [
    ("GET", "/v2/health/live", None),
    ("GET", "/v2/health/ready", None),
    ("GET", "/v2", None),
    ("GET", "/v2/models/model", None),
    ("GET", "/v2/models/model/versions/1", None),
    ("GET", "/v2/models/model/ready", None),
    (
        "POST",
        "/v2/models/model/infer",
        {"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]},
    ),
    (
        "POST",
        "/v2/models/model/versions/1/infer",
        {"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]},
    ),
    ("POST", "/predict", {"inputs": [[0.0] * 64]}),
]


@pytest.fixture(scope="module")
def secured(digits_onnx_dir, tmp_path_factory):
    rt = start_runtime(
        digits_onnx_dir, tmp_path_factory.mktemp("auth"), credential=CREDENTIAL, instance_id="ns1234/i-abc123"
    )
    yield rt
    rt.stop()


def _call(rt, method, path, body, headers):
    with httpx.Client(base_url=rt.url, timeout=10) as client:  # none of the fixture's headers
        return client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize("method, path, body", ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {CREDENTIAL}x"},
        {"Authorization": CREDENTIAL},
        {"Authorization": f"Basic {CREDENTIAL}"},
        {"X-Modelbay-Credential": CREDENTIAL},
    ],
    ids=["none", "wrong", "longer", "no-scheme", "basic", "other-header"],
)
def test_every_route_answers_401_without_the_right_credential(secured, method, path, body, headers):
    response = _call(secured, method, path, body, headers)
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"] == "unauthenticated"
    assert response.json()["detail"]
    assert CREDENTIAL not in response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["x-modelbay-instance"] == "i-abc123"


@pytest.mark.parametrize("method, path, body", ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_every_route_answers_with_the_credential_and_names_the_instance(secured, method, path, body):
    response = _call(secured, method, path, body, {"Authorization": f"Bearer {CREDENTIAL}"})
    assert response.status_code == 200, response.text
    assert response.headers["x-modelbay-instance"] == "i-abc123"  # the namespace/ prefix left out


def test_errors_past_authentication_are_the_usual_ones_and_name_the_instance(secured):
    auth = {"Authorization": f"Bearer {CREDENTIAL}"}
    for method, path, status in [("GET", "/nope", 404), ("GET", "/predict", 405), ("GET", "/v2/models/other", 404)]:
        response = _call(secured, method, path, None, auth)
        assert response.status_code == status
        assert response.headers["x-modelbay-instance"] == "i-abc123"
    # Unknown paths are not told apart from known ones without the credential.
    assert _call(secured, "GET", "/nope", None, {}).status_code == 401


def test_the_gateways_client_sends_the_credential_and_checks_the_instance(secured):
    pool = UpstreamPool(connect_timeout=1)
    body = json.dumps({"inputs": [[0.0] * 64]}).encode()
    headers = {"Content-Type": "application/json"}

    def call(credential, instance):
        return pool.request(
            secured.url, "POST", "/predict", body=body, headers=headers, timeout=5,
            auth=auth_header(credential), instance=instance,
        )  # fmt: skip

    assert call(CREDENTIAL, b"i-abc123").status == 200
    assert call(CREDENTIAL, b"i-abc123").status == 200
    assert len(pool._idle[secured.url]) == 1  # kept alive as before
    assert call("wrong", b"i-abc123").status == 401
    with pytest.raises(WrongInstance):
        call(CREDENTIAL, b"i-other")  # a runtime that names another instance: dropped
    assert secured.url not in pool._idle  # its connections are not kept


def test_a_runtime_without_the_header_is_the_wrong_instance(digits_onnx_dir, rt_tmp):
    rt = start_runtime(digits_onnx_dir, rt_tmp, credential=CREDENTIAL, instance_id="")
    try:
        assert "x-modelbay-instance" not in rt.client.get("/v2/health/live").headers
        with pytest.raises(WrongInstance):
            UpstreamPool(connect_timeout=1).request(
                rt.url, "GET", "/v2/health/ready", body=None, headers={}, timeout=5,
                auth=auth_header(CREDENTIAL), instance=b"i-abc123",
            )  # fmt: skip
    finally:
        rt.stop()


def test_without_a_credential_file_it_runs_open_and_warns(digits_onnx_dir, rt_tmp):
    rt = start_runtime(digits_onnx_dir, rt_tmp)
    try:
        assert rt.client.get("/v2/health/ready").status_code == 200
        assert "WARNING: no --credential-file" in rt.stderr()
    finally:
        rt.stop()


@pytest.mark.parametrize("content", [None, "", "  \n"], ids=["missing", "empty", "blank"])
def test_an_unusable_credential_file_stops_the_runtime(digits_onnx_dir, tmp_path, content):
    path = tmp_path / "credential"
    if content is not None:
        path.write_text(content)
    result = subprocess.run(
        [sys.executable, "-m", "runtime", "--model-dir", str(digits_onnx_dir), "--port", str(free_port()),
         "--credential-file", str(path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode != 0
    assert "credential file" in result.stderr
