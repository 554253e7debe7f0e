import pytest

from modelbay.core.env import env_bool, env_int, env_list, env_str, parse_zones


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
