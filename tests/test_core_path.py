"""End to end on real processes: upload -> deploy (real Celery worker) -> runtime
subprocesses -> predictions through the gateway, and the ways it goes wrong."""

import json
import os
import signal

import numpy as np
import psutil
import pytest

from conftest import python_package, wait_for
from tests.support import (
    assert_uninstallable_requirements_fail_the_service,
    ECHO_MODEL,
    FAILING_LOAD,
    NUMPY_MODEL,
    deploy,
    predict,
    runtime_http,
    upload,
    wait_status,
)
from controlplane import resources
from controlplane.backends import get_backend
from controlplane.models import Instance, Service

pytestmark = pytest.mark.integration


@pytest.fixture
def digits_service(worker, api, digits_model):
    upload(api, "digits", "digits.onnx", digits_model[0].read_bytes())
    deploy(api, "digits", "digits", replicas=2)
    return wait_status(api, "digits")


def test_upload_deploy_predict_matches_the_model(digits_service, api, digits_model):
    from demo.digits import digits_data

    _, classifier = digits_model
    features, _ = digits_data()
    batch = features[:25]
    response = predict(api, "digits", batch.tolist())
    assert response.status_code == 200, response.content
    assert response["X-Model-Version"] == "1"
    body = response.json()
    assert body["model_version"] == 1
    assert len(body["outputs"]) == 25
    assert [o["label"] for o in body["outputs"]] == classifier.predict(batch).tolist()
    probabilities = np.array([o["probabilities"] for o in body["outputs"]])
    np.testing.assert_allclose(probabilities, classifier.predict_proba(batch), atol=1e-4)


def test_replicas_spread_over_zones_and_ready(digits_service):
    instances = digits_service["instances"]
    assert len(instances) == 2
    assert {i["zone"] for i in instances} == {"zone-a", "zone-b"}
    assert all(i["status"] == "ready" and i["version"] == 1 for i in instances)
    assert digits_service["error"] is None


def test_open_inference_protocol_through_the_gateway(digits_service, api, digits_model):
    from demo.digits import digits_data

    features, _ = digits_data()
    metadata = api.get("/v2/models/digits").json()
    assert metadata["name"] == "digits"
    assert metadata["inputs"][0]["shape"] == [-1, 64]
    assert api.get("/v2/models/digits/ready").json() == {"name": "digits", "ready": True}
    request = {"inputs": [{"name": "X", "shape": [2, 64], "datatype": "FP32", "data": features[:2].ravel().tolist()}]}
    response = api.post("/v2/models/digits/infer", request, format="json")
    assert response.status_code == 200, response.content
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["label"]["data"] == digits_model[1].predict(features[:2]).tolist()


@pytest.mark.parametrize(
    "body, content_type, status, code",
    [
        (b"{not json", "application/json", 400, "invalid_request"),
        (b'{"instances": [[1]]}', "application/json", 400, "invalid_request"),
        (b'{"inputs": [[1, 2, 3]]}', "application/json", 422, "invalid_input"),
        (json.dumps({"inputs": [["a"] * 64]}).encode(), "application/json", 422, "invalid_input"),
    ],
    ids=["malformed-json", "missing-inputs", "wrong-shape", "wrong-type"],
)
def test_bad_predict_input_answers_json_errors(digits_service, api, body, content_type, status, code):
    response = api.generic("POST", "/api/v1/services/digits/predict", body, content_type=content_type)
    assert response.status_code == status, response.content
    assert response.json()["code"] == code
    assert response.json()["detail"]


def test_oversized_predict_body_answers_413(digits_service, api, settings):
    settings.MODELBAY_MAX_PREDICT_BYTES = 10_000
    response = predict(api, "digits", [[0.0] * 64] * 200)
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_wrong_scope_and_foreign_tenant_cannotpredict(digits_service, manage_only_api, outsider_api):
    assert predict(manage_only_api, "digits", [[0] * 64]).status_code == 403
    response = predict(outsider_api, "digits", [[0] * 64])
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_killed_runtime_is_restarted_and_calls_keep_working(digits_service, api):
    victim = Instance.objects.filter(status="ready").first()
    process = next(  # the model's process, not its sandbox's bwrap
        p
        for p in psutil.process_iter(["cmdline"])
        if any(victim.id in part for part in (p.info["cmdline"] or [])) and "bwrap" not in p.info["cmdline"][0]
    )
    os.kill(process.pid, signal.SIGKILL)
    # The other replica takes the calls while reconcile brings the killed one back.
    for _ in range(20):
        assert predict(api, "digits", [[0] * 64]).status_code == 200

    def restarted():
        victim.refresh_from_db()
        return victim.restarts >= 1 and victim.status == "ready"

    wait_for(restarted, what="the killed instance to be restarted")
    assert get_backend().list()[victim.id].alive
    assert wait_status(api, "digits")["status"] == "ready"


def test_scale_up_then_down(digits_service, api):
    assert api.patch("/api/v1/services/digits", {"replicas": 3}, format="json").status_code == 202
    wait_for(lambda: Instance.objects.filter(status="ready").count() == 3, what="3 ready instances")
    assert api.patch("/api/v1/services/digits", {"replicas": 1}, format="json").status_code == 202
    wait_for(lambda: Instance.objects.count() == 1, what="scale down to 1")
    wait_for(lambda: len(get_backend().list()) == 1, what="extra processes stopped")
    assert predict(api, "digits", [[0] * 64]).status_code == 200


def test_deleting_a_service_stops_its_processes(digits_service, api):
    ids = {i["id"] for i in digits_service["instances"]}
    assert ids <= set(get_backend().list())
    assert api.delete("/api/v1/services/digits").status_code == 202
    assert predict(api, "digits", [[0] * 64]).status_code == 404
    wait_for(lambda: not (ids & set(get_backend().list())), what="the processes to stop")
    wait_for(lambda: not Service.objects.exists(), what="the service row to go")
    assert api.delete("/api/v1/models/digits").status_code == 204


def test_orphan_runtime_process_is_removed(digits_service, digits_model, tmp_path):
    from controlplane.backends import InstanceSpec

    model_dir = tmp_path / "orphan"
    model_dir.mkdir()
    (model_dir / "model.onnx").write_bytes(digits_model[0].read_bytes())
    spec = InstanceSpec("i-orphan00000", "acme", "nobody", 1, "zone-a", model_dir, resources.effective({}))
    get_backend().start(spec)
    assert "i-orphan00000" in get_backend().list()
    wait_for(lambda: "i-orphan00000" not in get_backend().list(), what="reconcile to remove the orphan")


def test_model_whose_load_fails_ends_failed_with_its_message(worker, api):
    upload(api, "broken", "broken.zip", python_package(FAILING_LOAD))
    deploy(api, "broken", "broken")
    body = wait_status(api, "broken", statuses=("failed",), timeout_s=60)
    assert "weights file is corrupt" in body["error"]
    assert all(i["status"] == "failed" for i in body["instances"])
    response = predict(api, "broken", [1])
    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"
    assert response["Retry-After"]


def test_python_model_predicts_json_and_raw_bytes(echo_service, api):
    response = predict(api, "echo", ["a", "b"])
    assert response.status_code == 200, response.content
    assert response.json()["outputs"] == ["echo:a", "echo:b"]
    raw = api.generic("POST", "/api/v1/services/echo/predict", b"\x89PNG....", content_type="image/png")
    assert raw.status_code == 200, raw.content
    assert raw.json()["outputs"] == [8]


def test_a_call_past_its_services_deadline_answers_504_and_a_longer_one_completes(echo_service, api):
    """The "slow" input takes 3 s: past a 1 s deadline, 504; within a 10 s one, its answer."""
    assert api.patch("/api/v1/services/echo", {"timeout_s": 1}, format="json").json()["timeout_s"] == 1
    response = predict(api, "echo", ["slow"])
    assert response.status_code == 504
    assert response.json()["code"] == "upstream_timeout"
    assert predict(api, "echo", ["fast"]).json()["outputs"] == ["echo:fast"]  # its own deadline, not the last's

    assert api.patch("/api/v1/services/echo", {"timeout_s": 10}, format="json").status_code == 202
    response = predict(api, "echo", ["slow"])
    assert response.status_code == 200 and response.json()["outputs"] == ["echo:slow"]


def test_an_answer_larger_than_the_gateway_takes_is_a_model_error(echo_service, api, settings):
    settings.MODELBAY_MAX_RESPONSE_BYTES = 10_000
    assert predict(api, "echo", ["x" * 1000]).status_code == 200
    response = predict(api, "echo", ["x" * 20_000])
    assert response.status_code == 502 and response.json()["code"] == "model_error"
    assert "larger than 10000 bytes" in response.json()["detail"]


def test_logs_of_a_running_and_of_a_failed_instance(worker, api, outsider_api, digits_model):
    upload(api, "digits", "digits.onnx", digits_model[0].read_bytes())
    deploy(api, "digits", "digits")
    ready = wait_status(api, "digits")["instances"][0]["id"]
    response = api.get("/api/v1/services/digits/logs", {"instance": ready, "tail": 50})
    assert response.status_code == 200
    body = response.json()
    assert body["instance"] == ready and body["status"] == "ready" and body["tail"] == 50
    assert f"starting {ready}" in body["logs"]

    upload(api, "broken", "broken.zip", python_package(FAILING_LOAD))
    deploy(api, "broken", "broken")
    wait_status(api, "broken", statuses=("failed",), timeout_s=60)
    logs = api.get("/api/v1/services/broken/logs").json()
    assert "Traceback" in logs["logs"] and "weights file is corrupt" in logs["logs"]

    assert api.get("/api/v1/services/digits/logs", {"instance": "i-nope"}).status_code == 404
    assert api.get("/api/v1/services/broken/logs", {"instance": ready}).status_code == 404  # another service's
    assert api.get("/api/v1/services/digits/logs", {"tail": 0}).json()["code"] == "invalid_request"
    assert outsider_api.get("/api/v1/services/digits/logs").status_code == 404


def test_python_requirements_are_installed_into_a_venv_for_the_model(worker, api, settings):
    # numpy is already in the runtime's environment: pip resolves it without downloading.
    package = python_package(NUMPY_MODEL, 'requirements: ["numpy"]\n')
    upload(api, "summer", "summer.zip", package)
    deploy(api, "summer", "summer")
    wait_status(api, "summer", timeout_s=180)
    assert predict(api, "summer", [[1, 2, 3]]).json()["outputs"] == [6.0]
    venvs = [p for p in settings.MODELBAY_VENV_DIR.iterdir() if p.is_dir()]
    assert any((venv / ".complete").exists() for venv in venvs)


def test_requirements_that_do_not_install_fail_the_service_with_pips_message(worker, api):
    assert_uninstallable_requirements_fail_the_service(api)


EXITING_LOAD = """
import os

class Model:
    def load(self, model_dir):
        print("giving up on loading", flush=True)
        os._exit(3)

    def predict(self, inputs):
        return inputs
"""


def test_a_runtime_that_exits_while_starting_is_tried_again_then_fails(worker, api):
    upload(api, "quitter", "quitter.zip", python_package(EXITING_LOAD))
    deploy(api, "quitter", "quitter")
    body = wait_status(api, "quitter", statuses=("failed",), timeout_s=90)
    assert "The runtime exited while starting, 3 times in a row." in body["error"]
    assert "giving up on loading" in body["error"]
    instance = Instance.objects.get()
    assert instance.restarts == 2 and instance.failed_starts == 3


# --- every gateway -> runtime call is authenticated -----------------------------------------
def _echo_package(prefix: str) -> bytes:
    from conftest import make_zip

    return make_zip(
        {
            "modelbay.yaml": "framework: python\nentrypoint: predictor:Model\n",
            "predictor.py": ECHO_MODEL,
            "prefix.txt": prefix,
        }
    )


def test_a_runtime_answers_only_calls_with_its_instances_credential(digits_service, api, settings):
    from controlplane.backends.base import credential_dir

    assert predict(api, "digits", [[0] * 64]).status_code == 200  # through the gateway: as before
    for instance in Instance.objects.filter(status="ready"):
        assert instance.endpoint.startswith("unix://")  # no port: a socket in the instance's folder
        with runtime_http(instance.endpoint) as runtime:
            for headers in ({}, {"Authorization": "Bearer not-the-credential"}):
                response = runtime.post("/predict", json={"inputs": [[0] * 64]}, headers=headers)
                assert response.status_code == 401, response.text
                assert response.json()["code"] == "unauthenticated"
                assert response.headers["X-Modelbay-Instance"] == instance.id
                assert runtime.get("/v2/health/ready", headers=headers).status_code == 401
            response = runtime.post(
                "/predict", json={"inputs": [[0] * 64]}, headers={"Authorization": f"Bearer {instance.credential}"}
            )
            assert response.status_code == 200 and response.headers["X-Modelbay-Instance"] == instance.id
        # Given in a private file, never on the command line, in the environment or in the API.
        processes = [p for p in psutil.process_iter(["cmdline"]) if instance.id in " ".join(p.info["cmdline"] or [])]
        assert processes
        for process in processes:
            assert instance.credential not in " ".join(process.cmdline())
            assert instance.credential not in " ".join(process.environ().values())
        credential_file = credential_dir(settings.MODELBAY_RUN_DIR, instance.id) / "credential"
        assert os.stat(credential_file).st_mode & 0o777 == 0o600
        assert credential_file.read_text() == instance.credential
    assert all(
        instance.credential not in api.get("/api/v1/services/digits").content.decode()
        for instance in Instance.objects.all()
    )


@pytest.fixture
def alpha_and_beta(worker, api, outsider_api):
    """Two tenants' echo services: acme's "alpha" (two replicas) and globex's "beta"."""
    upload(api, "alpha", "alpha.zip", _echo_package("alpha:"))
    deploy(api, "alpha", "alpha", replicas=2)
    upload(outsider_api, "beta", "beta.zip", _echo_package("beta:"))
    deploy(outsider_api, "beta", "beta")
    wait_status(api, "alpha")
    wait_status(outsider_api, "beta")
    beta = Instance.objects.get(deployment__service__slug="beta")
    return beta


def _pin_route(api, slug: str, targets) -> None:
    """Put a routing table with these targets in this (the gateway's) process, as if it
    had been loaded under the current generation."""
    from inference import routing
    from modelbay.core import generation

    key = (api.organization.id, slug)
    gen = generation.current()
    loaded = routing.route_for(*key, gen=gen)
    version = routing.VersionRoute(loaded.versions[0].version, 100, tuple(targets))
    routing._routes._entries[key] = (
        gen,
        routing.Route(loaded.organization_id, loaded.service_id, loaded.slug, (version,)),
    )


def test_a_reused_port_never_gives_another_tenants_answer(alpha_and_beta, api):
    """A gateway whose table points one of alpha's instances at the endpoint where beta's
    runtime listens (a port reused by another tenant): the answer is dropped, the call
    goes to alpha's other instance, and the table is reloaded."""
    from inference import routing
    from modelbay.core import generation

    beta = alpha_and_beta
    first, second = (
        routing.Target(i.id, i.endpoint, i.zone, i.credential)
        for i in Instance.objects.filter(deployment__service__slug="alpha").order_by("id")
    )
    stale = routing.Target(first.instance_id, beta.endpoint, first.zone, first.credential)
    for _ in range(5):
        routing._wrong.clear()  # else the stale target, known now, is not even tried...
        routing._suspects.clear()  # ...or tried last
        _pin_route(api, "alpha", [stale, second])  # the stale target is tried first
        response = predict(api, "alpha", ["x"])
        assert response.status_code == 200, response.content
        assert response.json()["outputs"] == ["alpha:x"]
        assert (first.instance_id, beta.endpoint) in routing._wrong
        # The stale table was dropped: the next call reloads the right one.
        reloaded = routing.route_for(api.organization.id, "alpha", gen=generation.current())
        assert {t.endpoint for t in reloaded.versions[0].targets} == {first.endpoint, second.endpoint}

    # Known stale: not even tried; the call goes to the right instance only.
    _pin_route(api, "alpha", [stale, second])
    assert predict(api, "alpha", ["x"]).json()["outputs"] == ["alpha:x"]

    # With no right instance left to try, 503, never beta's answer.
    routing._wrong.clear()
    _pin_route(api, "alpha", [stale])
    response = predict(api, "alpha", ["x"])
    assert response.status_code == 503 and response.json()["code"] == "unavailable", response.content
    assert predict(api, "alpha", ["x"]).json()["outputs"] == ["alpha:x"]  # reloaded from the database


def test_an_instance_row_pointing_at_another_runtime_is_never_answered_by_it(alpha_and_beta, api):
    """An Instance row whose endpoint names another tenant's runtime, and a new generation:
    calls get alpha's answers or 503, never beta's, and reconcile mends the row."""
    from modelbay.core import generation

    beta = alpha_and_beta
    victim = Instance.objects.filter(deployment__service__slug="alpha").order_by("id").first()
    right_endpoint = victim.endpoint
    Instance.objects.filter(pk=victim.pk).update(endpoint=beta.endpoint)
    generation.bump()
    answers = set()
    for _ in range(20):
        response = predict(api, "alpha", ["x"])
        assert response.status_code in (200, 503), response.content
        if response.status_code == 200:
            answers.update(response.json()["outputs"])
    assert answers == {"alpha:x"}

    def mended():
        victim.refresh_from_db()
        return victim.endpoint == right_endpoint and victim.status == "ready"

    wait_for(mended, what="reconcile to mend the instance's endpoint")
    # Its own runtime answers with its own credential: nothing was restarted for it.
    assert victim.restarts == 0
    assert predict(api, "alpha", ["x"]).json()["outputs"] == ["alpha:x"]
