"""The client's parts that need no site: where credentials come from, the saved file's mode,
the API's errors read from an answer, new log lines, and the command line's exit codes."""

import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from modelbay_client import ApiError, Credentials, NotConfigured, load_credentials, save_credentials
from modelbay_client.cli import EXIT_USAGE, main
from modelbay_client.client import new_lines
from modelbay_client.config import config_path


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
