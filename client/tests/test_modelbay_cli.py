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
from modelbay_site import RAW_MODEL, python_package, running_site

from conftest import wait_for
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

    # keys: one made for a CI job (predict only, its secret shown once), listed without it, revoked.
    made = publisher.run("keys", "create", "ci")
    assert "scopes predict" in made.stdout and "shown only this once" in made.stdout
    secret = made.stdout.splitlines()[-1]
    listed = publisher.run("keys", "list").stdout
    key_id, _, prefix, scopes = next(row.split()[:4] for row in listed.splitlines() if row.split()[1] == "ci")
    assert (prefix, scopes) == ("_".join(secret.split("_")[:2]) + "_…", "predict")
    assert secret.split("_", 2)[2] not in listed
    ci = Modelbay(tmp_path / "ci", MODELBAY_URL=site, MODELBAY_KEY=secret)
    assert ci.json("predict", "digits", json.dumps(batch[:1]))["model_version"] == 1
    publisher.run("keys", "revoke", key_id)
    revoked = ci.run("predict", "digits", json.dumps(batch[:1]), expect=EXIT_API_ERROR)
    assert revoked.stderr.startswith("modelbay: error: unauthenticated: ")

    # gray releases: version 2 rolled back (a watch then ends 5); version 3 paused by the operator,
    # resumed and promoted while watched (0).
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
        # An operator's pause holds the release: the watch goes on through it (an analysis's pause
        # would end it with 5, naming `releases resume`: test_modelbay_config.py).
        seen = _events_until(watch, "step")  # version 3 is up and takes 50 %
        assert publisher.json("releases", "pause", "digits")["status"] == "paused"
        seen += _events_until(watch, "paused")  # the watch saw it paused, and watches on
        assert "Resumed at 50 %" in publisher.run("releases", "resume", "digits").stdout
        publisher.run("releases", "promote", "digits")
        stdout, stderr = watch.communicate(timeout=60)
    assert watch.returncode == EXIT_OK, stderr
    events = seen + [json.loads(line) for line in stdout.splitlines()]
    assert [e["action"] for e in events] == ["started", "step", "paused", "resumed", "promoted"]
    assert {e["release"] for e in events} == {second["id"]}
    assert publisher.json("predict", "digits", json.dumps(batch))["model_version"] == 3

    # publishing: a draft listing with a plan given as a spec, then published.
    example = tmp_path / "example.json"
    example.write_text(json.dumps(batch[:1]))
    draft = publisher.json("listings", "create", "digits", "--slug", "digit-reader", "--title", "Handwritten digits",
                           "--plan", "free:1000:5:0", "--example-input", f"@{example}")  # fmt: skip
    assert (draft["status"], draft["service"], draft["example_input"]) == ("draft", "digits", batch[:1])
    assert [(p["name"], p["monthly_quota"], p["rate_limit_per_s"], p["price_per_1k"]) for p in draft["plans"]] == [
        ("free", 1000, 5, "0.00")
    ]
    assert "digit-reader: Handwritten digits (published)" in publisher.run("listings", "publish", "digit-reader").stdout

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

    # The publisher changes the free plan and adds one: its subscriber keeps the free plan it has.
    edited = publisher.json("listings", "edit", "digit-reader", "--summary", "Reads handwritten digits.",
                            "--plan", "free:500:5:0", "--plan", "pro:100000:50:0.40")  # fmt: skip
    assert edited["summary"] == "Reads handwritten digits." and edited["title"] == "Handwritten digits"
    assert sorted((p["name"], p["monthly_quota"]) for p in edited["plans"]) == [("free", 500), ("pro", 100000)]
    report = publisher.run("listings", "usage", "digit-reader", "--days", "7").stdout
    assert ": 1 calls, revenue 0.00, 1 active subscriptions" in report.splitlines()[0]
    rows = {tuple(line.split()) for line in report.splitlines()}
    assert (outsider_api.organization.slug, "1", "0.00") in rows  # the subscriber: its calls, its revenue
    # per plan (price, subscribers, calls, revenue): the retired free plan keeps its subscriber and its call
    assert {("free", "0.00", "0", "0", "0.00"), ("pro", "0.40", "0", "0", "0.00")} < rows
    assert ("free", "(retired)", "0.00", "1", "1", "0.00") in rows

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


def _events_until(process: subprocess.Popen, action: str) -> list[dict]:
    """The events a ``--json`` watch prints, up to the first ``action``."""
    events = []
    while line := process.stdout.readline():
        events.append(json.loads(line))
        if events[-1]["action"] == action:
            return events
    raise AssertionError(f"no {action!r} came: {events} {process.stderr.read()}")


def _line_containing(process: subprocess.Popen, text: str) -> str:
    while line := process.stdout.readline():
        if text in line:
            return line
    raise AssertionError(f"{text!r} never came: {process.stderr.read()}")
