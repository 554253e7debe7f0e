"""The Python client against a real Modelbay: gunicorn on the test database, a real Celery
worker, real sandboxed runtimes. No mocks: what the client sees is what the API answers.
(The tests with the worker come first: it is still running from test_modelbay_cli.py.)"""

import pytest
from modelbay_site import FREE_PLAN, RAW_MODEL, python_package, running_site

from modelbay_client import ApiError, Client, ConnectionFailed, WaitTimedOut
from tests.own_services import free_port


@pytest.fixture
def site(transactional_db, tmp_path):
    with running_site(tmp_path / "site.log") as url:
        yield url


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_a_python_model_uploaded_deployed_called_with_json_and_bytes_followed_and_scaled(worker, site, api, tmp_path):
    package = python_package(tmp_path / "raw.zip", RAW_MODEL)
    sent = []

    with Client(site, api.full_key, poll_interval_s=0.25) as client:
        model = client.upload_model(package, name="raw", progress=lambda done, total: sent.append((done, total)))
        assert model["slug"] == "raw" and model["versions"][0]["framework"] == "python"
        assert sent[-1] == (package.stat().st_size, package.stat().st_size)

        assert client.deploy_service(name="raw", model="raw")["status"] == "provisioning"
        with pytest.raises(WaitTimedOut):
            client.wait_for_service("raw", timeout_s=0)
        states = []
        service = client.wait_for_service("raw", timeout_s=90, on_poll=states.append)
        assert service["status"] == "ready" and service["replicas"]["ready"] == 1
        assert states[-1] == service

        assert client.predict("raw", [[1, 2], "three"]) == {"outputs": [[1, 2], "three"], "model_version": 1}
        assert client.predict_raw("raw", b"\x89PNG....", content_type="image/png")["outputs"] == [{"bytes": 8}]

        followed = []
        for instance, line in client.follow_logs("raw", tail=1, stop=lambda: "predicting 3 inputs" in followed):
            assert instance == service["instances"][0]["id"]
            if not followed:  # the last line so far; then a line written while following
                client.predict("raw", ["x", "y", "z"])
            followed.append(line)
        assert len(followed) == len(set(followed)) and "raw model loaded" not in followed  # no older line again

        client.scale_service("raw", replicas=2)
        scaled = client.wait_for_service("raw", timeout_s=90)["replicas"]
        assert scaled["desired"] == scaled["ready"] == 2
        client.delete_service("raw")
        with pytest.raises(ApiError, match="not_found"):
            client.get_service("raw")


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_call_over_the_plans_rate_is_sent_again_after_retry_after_unless_told_not_to(
    worker, site, api, outsider_api, tmp_path
):
    with Client(site, api.full_key) as publisher:
        publisher.upload_model(python_package(tmp_path / "raw.zip", RAW_MODEL), name="raw")
        publisher.deploy_service(name="raw", model="raw")
        publisher.wait_for_service("raw", timeout_s=90)
        publisher.create_listing(service="raw", slug="echo", title="Echo", plans=[{**FREE_PLAN, "rate_limit_per_s": 1}])
        publisher.publish_listing("echo")

    with Client(site, outsider_api.full_key, retry_wait_limit_s=0) as impatient:
        impatient.subscribe("echo", plan="free")
        assert impatient.call_app("echo", ["first"])["outputs"] == ["first"]
        with pytest.raises(ApiError) as refused:
            impatient.call_app("echo", ["second"])
        assert (refused.value.status, refused.value.code, refused.value.retry_after_s) == (429, "rate_limited", 1)
    with Client(site, outsider_api.full_key) as patient:
        assert patient.call_app("echo", ["third"])["outputs"] == ["third"]  # refused, waited, sent again
        assert patient.call_app("echo", ["fourth"])["outputs"] == ["fourth"]
        assert patient.usage("echo")["quota"] == FREE_PLAN["monthly_quota"]


def test_api_errors_carry_the_apis_code_detail_and_fields(site, api):
    with Client(site, "mb_nothing_known") as stranger, pytest.raises(ApiError) as refused:
        stranger.list_services()
    assert (refused.value.status, refused.value.code) == (401, "unauthenticated")
    assert refused.value.detail

    with Client(site, api.full_key) as client:
        with pytest.raises(ApiError) as missing:
            client.get_service("no-such-service")
        assert (missing.value.status, missing.value.code) == (404, "not_found")
        with pytest.raises(ApiError) as invalid:
            client.start_release("no-such-service", version=2)
        assert invalid.value.code == "not_found"
        with pytest.raises(ApiError) as unfit:
            client.deploy_service(name="", model="digits")
        assert (unfit.value.status, unfit.value.code) == (400, "invalid_request")
        assert "name" in unfit.value.fields


def test_a_site_that_does_not_answer_raises_connection_failed():
    with Client(f"http://127.0.0.1:{free_port()}", "mb_any") as client, pytest.raises(ConnectionFailed):
        client.list_apps()
