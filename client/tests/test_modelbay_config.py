"""The client's parts that need no site: where credentials come from, the saved file's mode,
the API's errors read from an answer, new log lines, the command line's exit codes, plan
specs and listing files, and what a watch does with a paused release."""

import argparse
import json
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from modelbay_client import (
    ApiError,
    Client,
    Credentials,
    NotConfigured,
    OperationFailed,
    load_credentials,
    save_credentials,
)
from modelbay_client.cli import (
    EXIT_FAILED,
    EXIT_USAGE,
    UsageError,
    _watch,
    build_parser,
    exit_code,
    listing_fields,
    main,
    plan_spec,
)
from modelbay_client.client import new_lines, paused_by_analysis
from modelbay_client.config import config_path
from modelbay_client.terminal import Terminal


def test_flags_beat_the_environment_which_beats_the_saved_file(tmp_path):
    path = save_credentials(Credentials(url="http://saved:8000", key="mb_saved_key"), path=tmp_path / "config.json")
    environ = {"MODELBAY_URL": "http://env:8000/", "MODELBAY_KEY": "mb_env_key"}

    assert load_credentials(path=path, environ={}) == Credentials(url="http://saved:8000", key="mb_saved_key")
    assert load_credentials(path=path, environ=environ) == Credentials(url="http://env:8000", key="mb_env_key")
    flagged = load_credentials(url="http://flag:8000", key="mb_flag_key", path=path, environ=environ)
    assert flagged == Credentials(url="http://flag:8000", key="mb_flag_key")


def test_the_saved_file_is_readable_by_its_owner_alone_in_the_xdg_config_folder(tmp_path):
    path = config_path({"XDG_CONFIG_HOME": str(tmp_path)})
    assert path == tmp_path / "modelbay" / "config.json"
    path.parent.mkdir()
    path.write_text("{}")
    path.chmod(0o644)  # an earlier, looser file is narrowed

    save_credentials(Credentials(url="http://site", key="mb_secret"), path=path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_credentials(path=path, environ={}).key == "mb_secret"


def test_missing_credentials_say_what_is_missing_and_how_to_give_it(tmp_path):
    with pytest.raises(NotConfigured, match="No API key: run `modelbay login`"):
        load_credentials(url="http://site", path=tmp_path / "none.json", environ={})


def test_an_api_error_carries_code_detail_fields_and_retry_after():
    body = {"code": "invalid_request", "detail": "Check the fields.", "fields": {"replicas": ["Too many."]}}
    error = ApiError.from_response(httpx.Response(400, json=body, headers={"Retry-After": "3"}))
    assert (error.status, error.code, error.detail, error.retry_after_s) == (
        400,
        "invalid_request",
        "Check the fields.",
        3,
    )
    assert str(error) == "invalid_request: Check the fields.\n  replicas: Too many."


def test_an_answer_that_is_not_the_apis_json_still_gives_its_status_and_text():
    error = ApiError.from_response(httpx.Response(502, text="<html><h1>Bad Gateway</h1></html>"))
    assert (error.status, error.code) == (502, "http_502")
    assert "Bad Gateway" in error.detail


def test_new_lines_are_what_follows_the_previous_window():
    assert new_lines([], ["a", "b"]) == ["a", "b"]
    assert new_lines(["a", "b"], ["a", "b", "c"]) == ["c"]  # the log grew
    assert new_lines(["a", "b", "c"], ["b", "c", "d", "e"]) == ["d", "e"]  # the window slid
    assert new_lines(["a", "b"], ["a", "b"]) == []


def test_bad_arguments_and_missing_credentials_exit_with_the_usage_code(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("MODELBAY_URL", raising=False)
    monkeypatch.delenv("MODELBAY_KEY", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["services", "scale", "digits", "many"])
    assert exited.value.code == EXIT_USAGE

    assert main(["services", "list"]) == EXIT_USAGE
    assert "run `modelbay login`" in capsys.readouterr().err
    assert main(["--url", "http://site", "--key", "mb_k", "predict", "digits", "[1, 2"]) == EXIT_USAGE
    assert "the inputs is not JSON" in capsys.readouterr().err


def test_the_modelbay_command_is_installed_beside_python():
    modelbay = Path(sys.executable).parent / "modelbay"
    result = subprocess.run([modelbay, "--version"], capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout) == (0, "modelbay 0.1.0\n")


def test_a_plan_spec_is_the_apis_plan_and_a_bad_one_a_usage_error_naming_the_form(capsys):
    assert plan_spec("free:1000:5:0") == {
        "name": "free",
        "monthly_quota": 1000,
        "rate_limit_per_s": 5,
        "price_per_1k": "0",
    }
    assert plan_spec("pro:100000:50:0.40:8") == {
        "name": "pro",
        "monthly_quota": 100000,
        "rate_limit_per_s": 50,
        "price_per_1k": "0.40",
        "max_in_flight": 8,
    }
    for bad in (
        "free",
        "free:1000:5",
        ":1000:5:0",
        "free:many:5:0",
        "free:1000:5:0.4.0",
        "free:1000:5:nan",
        "a:1:2:3:4:5",
    ):
        with pytest.raises(SystemExit) as exited:
            main(["--url", "http://site", "--key", "mb_k", "listings", "create", "svc", "--plan", bad])
        assert exited.value.code == EXIT_USAGE
        assert "NAME:MONTHLY_QUOTA:RATE_LIMIT_PER_S:PRICE_PER_1K[:MAX_IN_FLIGHT]" in capsys.readouterr().err


def test_a_listings_fields_come_from_the_file_and_the_options_given_win(tmp_path):
    listing_file = tmp_path / "listing.json"
    listing_file.write_text(
        json.dumps(
            {"service": "digits", "slug": "reader", "title": "Old", "category": "vision", "plans": ["free:10:1:0"]}
        )
    )
    (tmp_path / "about.md").write_text("# Digits\n")
    (tmp_path / "example.json").write_text("[[0, 1]]")

    args = _parsed("listings", "create", "--from-file", str(listing_file), "--title", "New", "--description",
                   f"@{tmp_path / 'about.md'}", "--example-input", f"@{tmp_path / 'example.json'}")  # fmt: skip
    assert listing_fields(args, creating=True) == {
        "service": "digits",
        "slug": "reader",
        "title": "New",
        "category": "vision",
        "description": "# Digits\n",
        "example_input": [[0, 1]],
        "plans": [{"name": "free", "monthly_quota": 10, "rate_limit_per_s": 1, "price_per_1k": "0"}],
    }
    # An edit sends what is given alone; --plan replaces the file's plans (the API: all the plans offered).
    edit = _parsed("listings", "edit", "reader", "--from-file", str(listing_file), "--plan", "pro:500:5:1.5")
    listing_file.write_text(json.dumps({"summary": "Reads digits.", "plans": ["free:10:1:0"]}))
    assert listing_fields(edit, creating=False) == {
        "summary": "Reads digits.",
        "plans": [{"name": "pro", "monthly_quota": 500, "rate_limit_per_s": 5, "price_per_1k": "1.5"}],
    }
    assert listing_fields(_parsed("listings", "edit", "reader", "--example-output", "null"), creating=False) == {
        "example_output": None
    }  # a JSON null is given: it clears the example

    listing_file.write_text(json.dumps({"title": "T", "status": "published"}))
    with pytest.raises(UsageError, match="unknown fields status"):
        listing_fields(edit, creating=False)
    listing_file.write_text(json.dumps({"plans": ["free:ten:1:0"]}))
    with pytest.raises(UsageError, match="is not a plan: expected NAME:MONTHLY_QUOTA"):
        listing_fields(edit, creating=False)
    with pytest.raises(UsageError, match="--example-input is not JSON"):
        listing_fields(_parsed("listings", "edit", "reader", "--example-input", "[1,"), creating=False)


def _parsed(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(argv)


class ScriptedReleases(Client):
    """A client whose ``get_release`` answers these states in turn (as the API would, one per poll)."""

    def __init__(self, *states: dict) -> None:
        super().__init__("http://unused", "mb_unused", poll_interval_s=0)
        self.states = iter(states)

    def get_release(self, service, release_id=None):
        return next(self.states)


def test_a_watch_goes_on_through_an_operators_pause_and_ends_5_on_the_analysiss_naming_resume(capsys):
    started = {"at": "2026-11-30T12:00:00Z", "action": "started", "weight": 0, "message": "Bringing up version 3."}
    step = {"at": "2026-11-30T12:00:05Z", "action": "step", "weight": 50, "message": "Version 3 takes 50 %."}
    held = {"at": "2026-11-30T12:00:09Z", "action": "paused", "weight": 50, "message": "Paused at 50 %."}
    resumed = {"at": "2026-11-30T12:00:20Z", "action": "resumed", "weight": 50, "message": "Resumed at 50 %."}
    reason = "Paused: not enough traffic to judge: 0 calls on version 3 and 0 on version 1 in this step; ..."
    stuck = {"at": "2026-11-30T12:07:00Z", "action": "paused", "weight": 50, "message": reason, "figures": {}}
    release = {"id": 7, "version": 3, "from_version": 1, "weights": {"1": 50, "3": 50}, "reason": ""}
    states = [
        {**release, "status": "rolling", "history": [started, step]},
        {**release, "status": "paused", "history": [started, step, held]},  # an operator's: watched on
        {**release, "status": "paused", "history": [started, step, held]},
        {**release, "status": "rolling", "history": [started, step, held, resumed]},
        {**release, "status": "paused", "reason": reason, "history": [started, step, held, resumed, stuck]},
    ]
    assert not paused_by_analysis(states[1]) and paused_by_analysis(states[-1])

    with ScriptedReleases(*states) as client, pytest.raises(OperationFailed) as failed:
        _watch(client, Terminal(json_mode=False), "digits", 7, None)
    assert exit_code(failed.value) == EXIT_FAILED
    assert "is paused by its analysis. `modelbay releases resume digits 7` rolls it on" in str(failed.value)
    out, err = capsys.readouterr()
    assert [line.split()[1] for line in out.splitlines()[:5]] == ["started", "step", "paused", "resumed", "paused"]
    assert f"paused, weights v1 50 %, v3 50 %\n  {reason}" in out  # the pause and its reason, at the end
    assert err.count("Paused by an operator: watching on") == 1

    rolled_back = {**release, "status": "rolled_back", "history": [started, step]}
    with ScriptedReleases(rolled_back) as client:
        assert _watch(client, Terminal(json_mode=True), "digits", 7, None) == EXIT_FAILED
