"""docker-compose.yml keeps runtimes away from the platform (issue 11, point 5).

No compose run is possible here (no image registry), so the file is read with PyYAML and
checked for what matters: instances share no network with PostgreSQL, Redis or web (they
have none, and are called on Unix sockets in the data volume web and the worker mount),
passwords come from the environment, only the worker has the Docker socket, every ${VAR}
is required or has a harmless default. And the local backend refuses to run model code
inside the platform's container.
"""

import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from controlplane.backends.base import BackendError, InstanceSpec
from controlplane.backends.docker import RUNTIME_USER, DockerBackend
from controlplane.backends.local import IN_CONTAINER_ENV, LocalBackend, refuse_in_container
from controlplane.resources import Resources
from modelbay.core.env import parse_zones

REPO = Path(__file__).resolve().parent.parent
COMPOSE_TEXT = (REPO / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)  # safe_load resolves the `<<: *app` merge keys
SERVICES = COMPOSE["services"]
APP_SERVICES = ("web", "worker", "beat")
DATA_SERVICES = ("postgres", "redis")

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}; $$ escapes.
VARIABLE = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
BARE_VARIABLE = re.compile(r"(?<!\$)\$(?P<name>[A-Za-z_][A-Za-z0-9_]*)")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY|AUTH", re.IGNORECASE)


def _required(name: str) -> re.Pattern:
    return re.compile(rf"\$\{{{name}:\?[^}}]+\}}")


def _placeholders(text: str) -> str:
    """${NAME:?...} -> REQUIRED-NAME, ${NAME:-...} -> DEFAULT-NAME: a URL that parses."""
    return VARIABLE.sub(lambda m: f"{'REQUIRED' if m['op'] and '?' in m['op'] else 'DEFAULT'}-{m['name']}", text)


def _networks(service: dict) -> set[str]:
    """The compose networks a service joins (none listed: the project's default one)."""
    networks = service.get("networks", ["default"])
    return set(networks) if isinstance(networks, (list, dict)) else {networks}


def _environment(service: dict) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    return {key: str(value) for key, value in environment.items()}


def _data_networks() -> set[str]:
    return set().union(*(_networks(SERVICES[name]) for name in DATA_SERVICES))


class _Engine:
    """What the docker backend asks of an engine to make a service's network: recorded."""

    def __init__(self):
        self.created: list[tuple[str, dict]] = []
        self.networks = self

    def create(self, name: str, **options) -> None:
        self.created.append((name, options))


def _container_options(settings, monkeypatch, tmp_path: Path, network: str) -> tuple[dict, _Engine]:
    """The options the docker backend starts an instance with, under compose's settings."""
    environment = _environment(SERVICES["worker"])
    assert "DOCKER_HOST" not in environment  # the engine of this host, through its socket
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    zones = re.fullmatch(r"\$\{MODELBAY_ZONES:-(?P<default>[^}]*)\}", environment["MODELBAY_ZONES"])["default"]
    settings.MODELBAY_ZONES = parse_zones(zones)
    settings.MODELBAY_ARTIFACT_ROOT = settings.MODELBAY_DOCKER_ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.MODELBAY_RUN_DIR = tmp_path / "run"
    spec = InstanceSpec(
        instance_id="i-compose",
        organization="acme",
        service="svc",
        model_version=1,
        zone=next(iter(settings.MODELBAY_ZONES)),
        model_dir=tmp_path / "artifacts" / "package",
        resources=Resources(cpu=1.0, memory_mb=256, pids=64),
        network=network,
    )
    engine = _Engine()
    return DockerBackend()._container_options(engine, spec), engine


# --- networks ----------------------------------------------------------------------------
def test_no_network_of_the_file_is_for_runtimes():
    for name, service in SERVICES.items():
        assert not any("DOCKER_NETWORK" in key for key in _environment(service)), name
    assert "modelbay-runtime" not in COMPOSE_TEXT
    # The file's networks are the project's own (<project>_<key>), never a service network's
    # name (modelbay-<namespace>.<org>.<service>.<network>).
    for key, network in (COMPOSE.get("networks") or {}).items():
        assert "name" not in (network or {}), key


def test_runtimes_share_no_network_with_postgres_redis_or_web(settings, monkeypatch, tmp_path):
    options, engine = _container_options(settings, monkeypatch, tmp_path, "none")
    assert options["network_mode"] == "none"  # no network at all, not even the bridge
    assert "network" not in options and "ports" not in options and engine.created == []
    # The gateway calls the runtime on a Unix socket in the instance's folder of the data volume.
    assert "--uds" in options["command"]
    assert any(mount["bind"] == "/run/modelbay/sock" for mount in options["volumes"].values())


def test_an_egress_runtime_gets_a_network_of_its_services_own(settings, monkeypatch, tmp_path):
    options, engine = _container_options(settings, monkeypatch, tmp_path, "egress")
    ((name, network),) = engine.created
    assert options["network"] == name and "network_mode" not in options and "ports" not in options
    assert name.startswith("modelbay-") and name.endswith(".acme.svc.egress")
    assert network["driver"] == "bridge" and not network.get("internal")
    assert network["options"]["com.docker.network.bridge.enable_icc"] == "false"


def test_data_services_are_on_internal_networks_only():
    for key in _data_networks():
        # No way out of the host, and no published port.
        assert (COMPOSE.get("networks") or {}).get(key, {}).get("internal") is True, key
    assert "default" not in _data_networks()


def test_gateway_and_probes_reach_runtimes_through_the_data_volume():
    """web (the gateway) and the worker (its probes) mount the data volume where instances'
    sockets are, as the runtimes' own uid (the socket folders are that uid's, 0700)."""
    mounts = {}
    for name in ("web", "worker"):
        service = SERVICES[name]
        assert _environment(service)["MODELBAY_DATA_DIR"] == "/data", name
        (mount,) = [m for m in _mounts(service) if m.endswith(":/data")]
        mounts[name] = mount
        assert "user" not in service, f"{name} runs as the image's user"
    assert mounts["web"] == mounts["worker"]
    dockerfile = (REPO / "Dockerfile").read_text()
    uid = RUNTIME_USER.split(":")[0]
    assert re.search(rf"useradd [^\n]*--uid {uid} ", dockerfile)
    assert re.search(r"^USER modelbay$", dockerfile, re.MULTILINE)


def test_the_app_services_reach_the_data_services():
    for name in APP_SERVICES:
        assert _networks(SERVICES[name]) & _data_networks(), f"{name} cannot reach the database"
    assert _networks(SERVICES["beat"]) <= _data_networks()  # beat needs nothing else


# --- passwords -------------------------------------------------------------------------
def test_postgres_password_comes_from_the_environment():
    environment = _environment(SERVICES["postgres"])
    assert _required("POSTGRES_PASSWORD").fullmatch(environment["POSTGRES_PASSWORD"])
    assert "POSTGRES_HOST_AUTH_METHOD" not in environment
    for name in APP_SERVICES:
        url = urlsplit(_placeholders(_environment(SERVICES[name])["DATABASE_URL"]))
        assert (url.hostname, url.password) == ("postgres", "REQUIRED-POSTGRES_PASSWORD"), name


def test_redis_password_comes_from_the_environment():
    command = SERVICES["redis"]["command"]
    assert isinstance(command, list), "an argument list: the password is one argument, never re-split"
    password = command[command.index("--requirepass") + 1]
    assert _required("REDIS_PASSWORD").fullmatch(password)
    for name in APP_SERVICES:
        environment = _environment(SERVICES[name])
        for key in ("REDIS_URL", "CELERY_BROKER_URL"):
            url = environment[key]
            assert re.fullmatch(r"redis://:\$\{REDIS_PASSWORD:\?[^}]+\}@redis:6379/\d+", url), (name, key, url)


def test_no_literal_password_in_the_file():
    for name, service in SERVICES.items():
        for key, value in _environment(service).items():
            if SECRET_NAME.search(key):
                assert _required(key).fullmatch(value) or VARIABLE.fullmatch(value), (name, key, value)
            if "://" in value:
                password = urlsplit(_placeholders(value)).password
                assert password is None or password.startswith("REQUIRED-"), (name, key, value)


# --- the Docker socket ----------------------------------------------------------------
def _mounts(service: dict) -> list[str]:
    mounts = []
    for volume in service.get("volumes") or []:
        mounts.append(volume if isinstance(volume, str) else f"{volume.get('source', '')}:{volume.get('target', '')}")
    return mounts


def test_only_the_worker_has_the_docker_socket():
    holders = {name for name, service in SERVICES.items() if any("docker.sock" in m for m in _mounts(service))}
    assert holders == {"worker"}
    for name, service in SERVICES.items():
        if name != "worker":
            assert "DOCKER_HOST" not in _environment(service), name
            assert not service.get("group_add"), name
        assert not service.get("privileged"), name
        assert service.get("network_mode") != "host", name


def test_compose_offers_no_local_backend():
    for name in APP_SERVICES:
        environment = _environment(SERVICES[name])
        assert environment["MODELBAY_RUNTIME_BACKEND"] == "docker", name
        assert environment[IN_CONTAINER_ENV] == "1", name
    assert "RUNTIME_BACKEND=local" not in COMPOSE_TEXT


# --- variables -------------------------------------------------------------------------
def _strings(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def test_every_variable_is_required_or_has_a_harmless_default():
    raw = yaml.safe_load(COMPOSE_TEXT)
    seen = set()
    for text in _strings(raw):
        for match in VARIABLE.finditer(text):
            name, op, arg = match["name"], match["op"], match["arg"]
            seen.add(name)
            assert op is not None, f"${{{name}}} has neither a default nor :? (compose would use an empty value)"
            if op.endswith("-"):
                assert op == ":-", f"{match[0]}: an empty value would be used as is"
                assert not SECRET_NAME.search(name), f"{match[0]}: a secret with a default"
                assert not re.search(r"://[^/\s]*:[^/\s]*@", arg), f"{match[0]}: a credential in a default"
            else:
                assert op == ":?" and arg.strip(), f"{match[0]}: say what to set (and refuse an empty value)"
        leftover = VARIABLE.sub("", text).replace("$$", "")
        assert not BARE_VARIABLE.search(leftover), f"{text!r}: a bare $VAR (write ${{VAR:?...}} or ${{VAR:-...}})"
    assert {"SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD"} <= seen


def test_env_example_names_every_required_variable():
    example = (REPO / ".env.example").read_text()
    required = {m["name"] for m in VARIABLE.finditer(COMPOSE_TEXT) if m["op"] == ":?"} - {"PWD"}
    for name in required:
        assert re.search(rf"^{name}=\s*$", example, re.MULTILINE), f".env.example lacks {name}= (empty)"


def test_env_example_is_not_committed_as_env():
    tracked = subprocess.run(["git", "ls-files", ".env"], cwd=REPO, capture_output=True, text=True).stdout
    assert tracked.strip() == ""


# --- the local backend in a container ------------------------------------------------------
def _spec(tmp_path: Path) -> InstanceSpec:
    return InstanceSpec(
        instance_id="in-container",
        organization="org",
        service="svc",
        model_version=1,
        zone="zone-a",
        model_dir=tmp_path,
        resources=Resources(cpu=1.0, memory_mb=256, pids=64),
        requirements=("numpy",),
    )


def test_local_backend_refuses_inside_the_container(monkeypatch, tmp_path):
    monkeypatch.setenv(IN_CONTAINER_ENV, "1")
    started = []
    monkeypatch.setattr("controlplane.backends.local.subprocess.Popen", lambda *a, **k: started.append(a))
    monkeypatch.setattr("controlplane.backends.local.subprocess.run", lambda *a, **k: started.append(a))
    backend = LocalBackend()
    with pytest.raises(BackendError) as start_error:
        backend.start(_spec(tmp_path))
    assert start_error.value.permanent
    assert "worker container" in str(start_error.value) and "Docker socket" in str(start_error.value)
    with pytest.raises(BackendError) as prepare_error:  # no pip (packages' build code) either
        backend.prepare("zone-a", ("numpy",))
    assert prepare_error.value.permanent
    assert started == []


@pytest.mark.parametrize("value", [None, "", "0", "false"])
def test_local_backend_runs_outside_the_container(monkeypatch, value):
    if value is None:
        monkeypatch.delenv(IN_CONTAINER_ENV, raising=False)
    else:
        monkeypatch.setenv(IN_CONTAINER_ENV, value)
    refuse_in_container()  # no error
