"""The ``modelbay`` command against a real Modelbay, run as a user runs it (a subprocess,
``python -m modelbay_client``, with its own config folder): README's whole path through the
command line alone, then its errors and their exit codes."""

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from modelbay_site import FREE_PLAN, RAW_MODEL, python_package, running_site

from conftest import wait_for
from modelbay_client import Client
from modelbay_client.cli import EXIT_API_ERROR, EXIT_FAILED, EXIT_OK, EXIT_TIMED_OUT, EXIT_UNREACHABLE, EXIT_USAGE
from tests.own_services import free_port
from tests.support import FAILING_LOAD


@pytest.fixture
def site(transactional_db, tmp_path):
    with running_site(tmp_path / "site.log") as url:
        yield url


class Modelbay:
    """Runs ``modelbay ARGS`` with a home and config folder of its own and only the
    environment given: no MODELBAY_URL or MODELBAY_KEY unless a test sets them."""

    def __init__(self, home: Path, **environ: str) -> None:
        self.environ = {
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / "config"),
            **environ,
        }

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "modelbay_client", *args]

    def run(self, *args: str, expect: int = EXIT_OK, stdin: str | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(
            self.command(*args), env=self.environ, input=stdin, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == expect, (
            f"modelbay {' '.join(args)}: {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
        return result

    def json(self, *args: str, **options) -> object:
        return json.loads(self.run("--json", *args, **options).stdout)

    @contextmanager
    def started(self, *args: str) -> Iterator[subprocess.Popen]:
        """``modelbay ARGS`` running beside the test (a watch, a follow); killed if still running after."""
        command = self.command(*args)
        with subprocess.Popen(
            command, env=self.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as process:
            try:
                yield process
            finally:
                if process.poll() is None:
                    process.kill()


def test_errors_print_the_apis_detail_and_exit_with_the_documented_codes(site, api, digits_model, tmp_path):
    stranger = Modelbay(tmp_path / "stranger")
    refused = stranger.run("--url", site, "--key", "mb_unknown_key", "services", "list", expect=EXIT_API_ERROR)
    assert refused.stderr.startswith("modelbay: error: unauthenticated: ") and refused.stdout == ""
    as_json = json.loads(
        stranger.run("--url", site, "--key", "mb_bad", "--json", "login", expect=EXIT_API_ERROR).stderr
    )
    assert (as_json["status"], as_json["code"]) == (401, "unauthenticated")
    assert not (tmp_path / "stranger" / "config" / "modelbay").exists()  # a refused key is not saved

    user = Modelbay(tmp_path / "user", MODELBAY_URL=site, MODELBAY_KEY=api.full_key)
    missing = user.run("services", "get", "no-such-service", expect=EXIT_API_ERROR)
    assert missing.stderr.startswith("modelbay: error: not_found: ")
    missing = json.loads(user.run("services", "get", "no-such-service", "--json", expect=EXIT_API_ERROR).stderr)
    assert (missing["status"], missing["code"]) == (404, "not_found")
    unfit = user.run("predict", "no-such-service", "[[1]]", expect=EXIT_API_ERROR)
    assert "not_found" in unfit.stderr

    unreachable = user.run("--url", f"http://127.0.0.1:{free_port()}", "apps", "list", expect=EXIT_UNREACHABLE)
    assert "Could not reach" in unreachable.stderr
    assert "run `modelbay login`" in Modelbay(tmp_path / "new").run("usage", expect=EXIT_USAGE).stderr
    user.run("predict", "digits", expect=EXIT_USAGE)  # no inputs
    user.run("predict", "digits", "@no-such-file.json", expect=EXIT_USAGE)

    # No worker runs in this test: the service stays provisioning, and the wait gives up.
    user.run("models", "upload", str(digits_model[0]), "--name", "digits")
    timed_out = user.run("services", "deploy", "digits", "--wait", "--wait-timeout", "1", expect=EXIT_TIMED_OUT)
    assert "was not ready after 1 s (provisioning" in timed_out.stderr


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_readmes_whole_path_through_the_command_line_alone(worker, site, api, outsider_api, digits_model, tmp_path):
    from demo.digits import digits_data

    features, _ = digits_data()
    batch = features[:3].tolist()
    expected = digits_model[1].predict(features[:3]).tolist()
    publisher = Modelbay(tmp_path / "publisher")

    # login: the key is checked, then saved for the next commands, readable by its owner alone.
    publisher.run("login", "--url", site, "--key", api.full_key)
    config = tmp_path / "publisher" / "config" / "modelbay" / "config.json"
    assert json.loads(config.read_text()) == {"url": site, "key": api.full_key}
    assert stat.S_IMODE(config.stat().st_mode) == 0o600

    # upload, deploy (waiting until both replicas are ready), predict three ways.
    uploaded = publisher.run("models", "upload", str(digits_model[0]), "--name", "digits")
    assert uploaded.stdout.startswith("Uploaded digits version 1 (onnx, ")
    service = publisher.json("services", "deploy", "digits", "--replicas", "2", "--wait")
    assert service["status"] == "ready" and service["replicas"]["ready"] == 2
    assert "digits: ready, 2/2 replicas ready" in publisher.run("services", "get", "digits").stdout

    predicted = publisher.json("predict", "digits", json.dumps(batch))
    assert [o["label"] for o in predicted["outputs"]] == expected and predicted["model_version"] == 1
    inputs_file = tmp_path / "inputs.json"
    inputs_file.write_text(json.dumps({"inputs": batch}))  # a whole curl body is taken too
    assert publisher.json("predict", "digits", f"@{inputs_file}")["outputs"] == predicted["outputs"]
    assert publisher.json("predict", "digits", "-", stdin=json.dumps(batch))["outputs"] == predicted["outputs"]
    printed = json.loads(publisher.run("predict", "digits", json.dumps(batch[:1])).stdout)  # the outputs alone
    assert [o["label"] for o in printed] == expected[:1]
    raw = publisher.run(
        "predict",
        "digits",
        "--file",
        str(inputs_file),
        "--content-type",
        "application/octet-stream",
        expect=EXIT_API_ERROR,
    )
    assert "invalid_input: " in raw.stderr  # an ONNX model takes JSON only: the API's own words
    assert publisher.json("services", "logs", "digits", "--tail", "20")["instance"]

    # gray releases: version 2 rolled back (a watch then ends 5), version 3 promoted while watched (0).
    assert publisher.json("models", "upload", str(digits_model[0]), "--version-of", "digits")["version"] == 2
    release = publisher.json("releases", "start", "digits", "2", "--steps", "50,100", "--interval-s", "60")
    assert (release["from_version"], release["version"], release["status"]) == (1, 2, "starting")
    assert publisher.json("releases", "rollback", "digits")["status"] == "rolled_back"
    watched = publisher.run("releases", "watch", "digits", str(release["id"]), expect=EXIT_FAILED)
    assert "rolled_back" in watched.stdout and "Rolled back by the operator." in watched.stdout

    # (version 2 drains for a while: the next try is a version 3)
    assert publisher.json("models", "upload", str(digits_model[0]), "--version-of", "digits")["version"] == 3
    second = publisher.json("releases", "start", "digits", "3", "--steps", "50,100", "--interval-s", "60")
    with publisher.started("--json", "releases", "watch", "digits") as watch:
        publisher.run("releases", "promote", "digits")
        stdout, stderr = watch.communicate(timeout=60)
    assert watch.returncode == EXIT_OK, stderr
    events = [json.loads(line) for line in stdout.splitlines()]
    assert [e["action"] for e in events][0] == "started" and events[-1]["action"] == "promoted"
    assert {e["release"] for e in events} == {second["id"]}
    assert publisher.json("predict", "digits", json.dumps(batch))["model_version"] == 3

    # The listing is made with the client library (publishing is not the command line's).
    with Client(site, api.full_key) as library:
        library.create_listing(service="digits", slug="digit-reader", title="Handwritten digits", plans=[FREE_PLAN])
        library.publish_listing("digit-reader")

    # Another organization, its key in the environment: find, subscribe, call, see the usage.
    subscriber = Modelbay(tmp_path / "subscriber", MODELBAY_URL=site, MODELBAY_KEY=outsider_api.full_key)
    assert "digit-reader" in subscriber.run("apps", "list").stdout
    assert [app["slug"] for app in subscriber.json("apps", "list", "digits")] == ["digit-reader"]
    subscription = subscriber.json("apps", "subscribe", "digit-reader", "--plan", "free")
    assert (subscription["listing"], subscription["plan"], subscription["used"]) == ("digit-reader", "free", 0)
    called = subscriber.json("apps", "call", "digit-reader", f"@{inputs_file}")
    assert [o["label"] for o in called["outputs"]] == expected
    usage = wait_for(
        lambda: (now := subscriber.json("usage", "digit-reader"))["used"] == 1 and now, what="the call counted"
    )
    assert usage["quota"] == 1000 and sum(day["calls"] for day in usage["daily"]) == 1
    assert subscriber.json("usage")[0]["used"] == 1
    assert "digit-reader  free" in subscriber.run("usage").stdout

    # A model that cannot load: the wait ends with its error and exit 5; then it is deleted.
    publisher.run("models", "upload", str(python_package(tmp_path / "broken.zip", FAILING_LOAD)), "--name", "broken")
    failed = publisher.run("services", "deploy", "broken", "--wait", expect=EXIT_FAILED)
    assert "Service broken is failed: " in failed.stderr and "weights file is corrupt" in failed.stderr
    publisher.run("services", "delete", "broken")
    publisher.run("services", "get", "broken", expect=EXIT_API_ERROR)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_logs_follow_prints_new_lines_until_interrupted(worker, site, api, tmp_path):
    user = Modelbay(tmp_path, MODELBAY_URL=site, MODELBAY_KEY=api.full_key)
    user.run("models", "upload", str(python_package(tmp_path / "raw.zip", RAW_MODEL)), "--name", "raw")
    user.run("services", "deploy", "raw", "--wait")
    with user.started("services", "logs", "raw", "-f", "--tail", "5") as follow:
        assert "raw model loaded" in _line_containing(follow, "raw model loaded")
        user.run("predict", "raw", '["a", "b"]')
        assert _line_containing(follow, "predicting") == "predicting 2 inputs\n"
        follow.send_signal(signal.SIGINT)
        assert follow.wait(timeout=10) == 130


def _line_containing(process: subprocess.Popen, text: str) -> str:
    while line := process.stdout.readline():
        if text in line:
            return line
    raise AssertionError(f"{text!r} never came: {process.stderr.read()}")
