"""A hostile tenant's model, on each backend: everything it tries against the platform,
the host and another tenant fails, while its own calls and the other tenant's keep
working. With ``"network": "egress"`` it reaches the outside (a listener in a network
namespace this test makes) and still nothing of the platform.

Each attempt is first made from this test's own process, unsandboxed, where it must
succeed: a refusal in the sandbox is then the sandbox's doing, not a wrong path.
"""

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from conftest import make_zip, wait_for
from controlplane import resources
from controlplane.backends import BackendError, InstanceSpec, get_backend
from controlplane.backends import local as local_backend
from controlplane.backends import sandbox
from controlplane.backends.base import credential_dir
from controlplane.models import Instance
from tests import hostile_model
from tests.support import ECHO_MODEL, deploy, predict, runtime_http, upload, wait_status

HOSTILE_SOURCE = Path(hostile_model.__file__).read_text()
PLATFORM_SECRETS = ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "MODELBAY_DATA_DIR")


def _package(source: str, **files: str) -> bytes:
    return make_zip(
        {"modelbay.yaml": "framework: python\nentrypoint: predictor:Model\n", "predictor.py": source, **files}
    )


@pytest.fixture(params=["local", "docker"])
def backend_worker(request):
    """The worker, running instances on the local backend (sandboxes) or as containers."""
    return request.getfixturevalue("worker" if request.param == "local" else "docker_worker")


@pytest.fixture
def victim(backend_worker, outsider_api):
    """Another tenant's service, whose files, socket and process the hostile model goes for."""
    upload(outsider_api, "victim", "victim.zip", _package(ECHO_MODEL, **{"prefix.txt": "victim:"}))
    deploy(outsider_api, "victim", "victim")
    wait_status(outsider_api, "victim")
    return Instance.objects.get(deployment__service__slug="victim", status="ready")


def _hostile(api, network: str) -> Instance:
    upload(api, "hostile", "hostile.zip", _package(HOSTILE_SOURCE))
    deploy(api, "hostile", "hostile", network=network)
    body = wait_status(api, "hostile", timeout_s=120)
    assert body["network"] == network
    return Instance.objects.get(deployment__service__slug="hostile", status="ready")


def _platform_attempts(victim: Instance, worker_pid: int, web_port: int) -> list[dict]:
    """What a hostile model goes for, each a thing that exists on this host."""
    from controlplane import packages

    victim_model = packages.unpacked_path(
        victim.deployment.model_version.sha256, artifact_root=settings.MODELBAY_ARTIFACT_ROOT
    )
    victim_socket = victim.endpoint.removeprefix("unix://")
    secret_key = settings.DATA_DIR / "secret_key"
    if not secret_key.exists():  # SECRET_KEY came from the environment: a file all the same
        secret_key.write_text("not-for-models")
    attempts = [
        # The platform's secrets and data.
        {"kind": "read", "target": str(settings.DATA_DIR / "secret_key")},
        {"kind": "read", "target": f"/proc/{worker_pid}/environ"},
        {"kind": "read", "target": "/etc/shadow"},
        {"kind": "read", "target": str(credential_dir(settings.MODELBAY_RUN_DIR, victim.id) / "credential")},
        {"kind": "read", "target": str(victim_model / "predictor.py")},
        # The platform's code and venv, another tenant's model.
        {"kind": "append", "target": str(settings.BASE_DIR / "manage.py")},
        {"kind": "append", "target": str(Path(sys.prefix) / "pyvenv.cfg")},
        {"kind": "append", "target": str(victim_model / "predictor.py")},
        {"kind": "create", "target": str(victim_model)},
        {"kind": "create", "target": str(settings.BASE_DIR / "runtime")},
        # The platform's services: web, PostgreSQL, Redis, the broker.
        {"kind": "tcp", "target": f"127.0.0.1:{web_port}"},
        {"kind": "tcp", "target": "127.0.0.1:5432"},
        {"kind": "tcp", "target": "127.0.0.1:6379"},
        {"kind": "tcp", "target": "127.0.0.1:5672"},
        # Other processes: the worker, this test, the other tenant's runtime.
        {"kind": "signal", "target": worker_pid},
        {"kind": "signal", "target": os.getpid()},
    ]
    if victim_socket != victim.endpoint:
        attempts.append({"kind": "unix", "target": victim_socket})
    else:  # a port (remote zone)
        attempts.append({"kind": "tcp", "target": victim.endpoint.removeprefix("http://")})
    if Path("/var/run/docker.sock").exists():
        attempts.append({"kind": "unix", "target": "/var/run/docker.sock"})
    return attempts


def _assert_each_works_unsandboxed(attempts: list[dict]) -> None:
    outcomes = {f"{a['kind']} {a['target']}": hostile_model.attempt(a) for a in attempts}
    assert all(outcome == "succeeded" for outcome in outcomes.values()), outcomes


def _assert_refused_in_sandbox(api, attempts: list[dict]) -> None:
    response = predict(api, "hostile", attempts)
    assert response.status_code == 200, response.content  # its own calls keep working
    outcomes = dict(zip((f"{a['kind']} {a['target']}" for a in attempts), response.json()["outputs"]))
    succeeded = {attempt: outcome for attempt, outcome in outcomes.items() if not outcome.startswith("refused")}
    assert not succeeded, f"the sandbox let these through: {succeeded}"


def _assert_sees_nothing_of_the_platform(api, backend: str) -> dict:
    seen = predict(api, "hostile", [{"kind": "report"}]).json()["outputs"][0]
    assert not set(seen["environment"]) & set(PLATFORM_SECRETS), seen["environment"]
    assert not [name for name in seen["environment"] if "PASSWORD" in name or "SECRET" in name]
    assert seen["uid"] != 0
    assert seen["tmp_writable"]
    assert len(seen["pids"]) <= 3, seen["pids"]  # its own PID namespace: no one else's processes
    if backend == "local":
        assert seen["rlimit_data"] == resources.effective({}).memory_mb * 1024 * 1024
    return seen


@pytest.mark.parametrize("network", ["none", "egress"])
def test_a_hostile_model_reaches_nothing_but_its_own_inputs(
    backend_worker, victim, api, outsider_api, live_server, outside_listener, network, request
):
    backend = request.node.callspec.params["backend_worker"]
    attempts = _platform_attempts(victim, backend_worker.process.pid, int(live_server.url.rsplit(":", 1)[1]))
    outside = {"kind": "tcp", "target": outside_listener}
    _assert_each_works_unsandboxed([*attempts, outside])

    hostile = _hostile(api, network)
    _assert_refused_in_sandbox(api, attempts)
    _assert_sees_nothing_of_the_platform(api, backend)
    reached = predict(api, "hostile", [outside]).json()["outputs"][0]
    if network == "egress":
        assert reached == "succeeded", reached
    else:
        assert reached.startswith("refused"), reached

    # The other tenant's calls keep working, and its runtime answers no one without its credential.
    response = predict(outsider_api, "victim", ["x"])
    assert response.status_code == 200 and response.json()["outputs"] == ["victim:x"]
    for instance in (hostile, victim):
        with runtime_http(instance.endpoint) as runtime:
            assert runtime.post("/predict", json={"inputs": ["x"]}).status_code == 401


# --- the outside, for egress ----------------------------------------------------------
LISTENER = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
while True:
    connection, _ = server.accept()
    connection.sendall(b"outside")
    connection.close()
"""


@pytest.fixture
def outside_listener():
    """A TCP listener in a network namespace of this test's own, reached through a veth
    pair: an address outside this host's loopback, standing in for the internet."""
    if os.geteuid() != 0:
        pytest.fail("this test makes a network namespace: it runs as root (as make test does in CI)")
    tag = f"{os.getpid() % 100_000}"
    namespace, host_end, inside_end = f"mbt-out-{tag}", f"mbth{tag}", f"mbtn{tag}"
    octet = 16 + os.getpid() % 200
    host_address, inside_address = f"10.231.{octet}.1", f"10.231.{octet}.2"

    def ip(*args: str, inside: bool = False) -> None:
        prefix = ["ip", "netns", "exec", namespace] if inside else []
        subprocess.run([*prefix, "ip", *args], check=True, capture_output=True)

    ip("netns", "add", namespace)
    listener = None
    try:
        ip("link", "add", host_end, "type", "veth", "peer", "name", inside_end)
        ip("link", "set", inside_end, "netns", namespace)
        ip("addr", "add", f"{host_address}/30", "dev", host_end)
        ip("link", "set", host_end, "up")
        ip("addr", "add", f"{inside_address}/30", "dev", inside_end, inside=True)
        ip("link", "set", inside_end, "up", inside=True)
        ip("link", "set", "lo", "up", inside=True)
        ip("route", "add", "default", "via", host_address, inside=True)
        listener = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", LISTENER, inside_address, "8099"]
        )
        target = f"{inside_address}:8099"
        wait_for(
            lambda: hostile_model.attempt({"kind": "tcp", "target": target}) == "succeeded", what="the outside listener"
        )
        yield target
    finally:
        if listener is not None:
            listener.kill()
            listener.wait()
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


# --- the local backend without a sandbox ----------------------------------------------
def _spec(tmp_path, instance_id: str) -> InstanceSpec:
    model_dir = tmp_path / "model"
    model_dir.mkdir(exist_ok=True)
    (model_dir / "modelbay.yaml").write_text("framework: python\nentrypoint: predictor:Model\n")
    (model_dir / "predictor.py").write_text(HOSTILE_SOURCE)
    return InstanceSpec(instance_id, "acme", "hostile", 1, "zone-a", model_dir, resources.effective({}))


def test_without_bubblewrap_the_local_backend_refuses_and_says_what_to_install(monkeypatch, settings, tmp_path):
    settings.MODELBAY_UNSANDBOXED_LOCAL = False
    real_which = local_backend.shutil.which
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None if name == "bwrap" else real_which(name))
    sandbox.check_available.cache_clear()
    try:
        with pytest.raises(BackendError) as refused:
            local_backend.LocalBackend().start(_spec(tmp_path, "i-nobwrap0001"))
    finally:
        sandbox.check_available.cache_clear()
    assert refused.value.permanent
    assert "apt-get install bubblewrap" in str(refused.value)
    assert "MODELBAY_UNSANDBOXED_LOCAL=1" in str(refused.value)
    assert "i-nobwrap0001" not in get_backend().list()


def _ask(endpoint: str, credential: str, probe: dict):
    """One attempt made by the model at ``endpoint`` (waiting for it to be ready first)."""
    headers = {"Authorization": f"Bearer {credential}"}
    with runtime_http(endpoint) as runtime:

        def answers():
            try:
                return runtime.get("/v2/health/ready", headers=headers).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(answers, what="the runtime")
        return runtime.post("/predict", json={"inputs": [probe]}, headers=headers).json()["outputs"][0]


def test_a_local_sandbox_runs_as_its_own_uid_with_the_services_limits(worker, api):
    """A uid of its own (this test runs as root), and the service's memory limit, which
    follows a change of the service's resources (rlimits here: no delegated cgroup v2)."""
    hostile = _hostile(api, "none")
    seen = predict(api, "hostile", [{"kind": "report"}]).json()["outputs"][0]
    assert seen["uid"] == sandbox.sandbox_uid(hostile.id)
    assert seen["rlimit_data"] == resources.effective({}).memory_mb * 1024 * 1024

    response = api.patch("/api/v1/services/hostile", {"resources": {"memory_mb": 512}}, format="json")
    assert response.status_code == 202, response.content

    def limited():
        response = predict(api, "hostile", [{"kind": "report"}])
        return response.status_code == 200 and response.json()["outputs"][0]["rlimit_data"] == 512 * 1024 * 1024

    wait_for(limited, what="the new memory limit to reach the sandbox")


def test_unsandboxed_local_runs_only_when_asked_for(settings, tmp_path):
    """MODELBAY_UNSANDBOXED_LOCAL=1 (a single-user laptop): a plain process, which reaches
    what the worker reaches, still on its own socket and still behind its credential."""
    settings.MODELBAY_UNSANDBOXED_LOCAL = True
    backend = local_backend.LocalBackend()
    spec = _spec(tmp_path, "i-unsandbox001")
    running = backend.start(spec)
    try:
        credential = (credential_dir(settings.MODELBAY_RUN_DIR, spec.instance_id) / "credential").read_text()
        seen = _ask(running.endpoint, credential, {"kind": "report"})
        assert len(seen["pids"]) > 3  # the host's processes: no sandbox, as asked
    finally:
        backend.stop(spec.instance_id)
    wait_for(lambda: spec.instance_id not in backend.list(), what="the process to stop")
