"""The docker backend on this machine's real engine: containers from the runtime image,
hardened, spread over two zones, healed by reconcile, and what a model inside may not do.

Two zones reach the same engine through two endpoints; zone-b's can be taken away to
play an engine outage (see the ``docker_zones`` fixture). The test that stops a whole
engine and starts it again does it to an engine of its own (``own_docker_engine``).
"""

import os
import threading
import time
from pathlib import Path

import docker
import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from conftest import python_package, wait_for
from controlplane import resources
from controlplane.backends import InstanceSpec, get_backend
from controlplane.models import Instance
from runtime.client import unix_endpoint
from tests.support import (
    assert_uninstallable_requirements_fail_the_service,
    FAILING_LOAD,
    NUMPY_MODEL,
    deploy,
    predict,
    runtime_http,
    upload,
    wait_status,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker]


@pytest.fixture(scope="module")
def engine():
    client = docker.from_env()
    yield client
    client.close()


def _containers(engine, **labels) -> list:
    filters = [f"modelbay.namespace={get_backend().namespace}"] + [f"modelbay.{k}={v}" for k, v in labels.items()]
    return engine.containers.list(all=True, filters={"label": filters})


def _container_of(engine, instance_id: str):
    (container,) = _containers(engine, instance=instance_id)
    return container


def _running_network_modes(engine, **labels) -> dict[str, str]:
    """Container id -> network mode of the running ones, from one listing (no inspect of
    each, which fails for a container removed meanwhile)."""
    filters = [f"modelbay.namespace={get_backend().namespace}"] + [f"modelbay.{k}={v}" for k, v in labels.items()]
    return {c["Id"]: c["HostConfig"]["NetworkMode"] for c in engine.api.containers(filters={"label": filters})}


def _socket_of(instance_id: str) -> Path:
    """Where the worker (and the gateway) find an instance's socket on this host."""
    return Path(settings.MODELBAY_RUN_DIR) / "instances" / instance_id / "sock" / "runtime.sock"


def _service_network(engine, service: str, network: str, *, namespace: str | None = None):
    """The Docker network of a service's own, or None."""
    name = f"modelbay-{namespace or get_backend().namespace}.acme.{service}.{network}"
    found = [n for n in engine.networks.list(names=[name]) if n.name == name]
    return found[0] if found else None


@pytest.fixture
def digits(docker_worker, api, digits_model):
    upload(api, "digits", "digits.onnx", digits_model[0].read_bytes())
    deploy(api, "digits", "digits", replicas=2)
    return wait_status(api, "digits", timeout_s=60)


def test_onnx_model_serves_from_containers_in_two_zones(digits, api, engine, digits_model):
    from demo.digits import digits_data

    features, _ = digits_data()
    response = predict(api, "digits", features[:10].tolist())
    assert response.status_code == 200, response.content
    assert [o["label"] for o in response.json()["outputs"]] == digits_model[1].predict(features[:10]).tolist()

    assert {i["zone"] for i in digits["instances"]} == {"zone-a", "zone-b"}
    for instance in digits["instances"]:
        container = _container_of(engine, instance["id"])
        assert container.status == "running"
        assert container.labels == {
            "modelbay.namespace": get_backend().namespace,
            "modelbay.instance": instance["id"],
            "modelbay.organization": "acme",
            "modelbay.service": "digits",
            "modelbay.version": "1",
            "modelbay.zone": instance["zone"],
        }
        assert container.image.tags and settings.MODELBAY_RUNTIME_IMAGE in container.image.tags


def test_containers_are_hardened(digits, engine):
    container = _container_of(engine, digits["instances"][0]["id"])
    host = container.attrs["HostConfig"]
    assert container.attrs["Config"]["User"] == "10001:10001"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["Privileged"] is False
    assert host["Memory"] == 1024 * 1024 * 1024 and host["MemorySwap"] == host["Memory"]
    assert host["CpuQuota"] == host["CpuPeriod"]  # 1 CPU
    assert host["PidsLimit"] == 256
    assert host["PidMode"] == "" and host["IpcMode"] != "host"
    # No network at all, not even the bridge, and nothing published: the gateway calls its socket.
    assert host["NetworkMode"] == "none"
    assert list(container.attrs["NetworkSettings"]["Networks"]) == ["none"]
    assert not host["PortBindings"] and not any(container.attrs["NetworkSettings"]["Ports"].values())
    assert list(host["Tmpfs"]) == ["/tmp"]
    # What it prints is bounded as on the local backend: a file and one rotated.
    max_size = f"{settings.MODELBAY_INSTANCE_LOG_BYTES // 1024}k"
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": max_size, "max-file": "2"}}
    mounts = container.attrs["Mounts"]
    # The model and the instance's credential file, both read-only, and its socket's folder.
    assert sorted((m["Destination"], m["RW"]) for m in mounts) == [
        ("/model", False),
        ("/run/modelbay/credential", False),
        ("/run/modelbay/sock", True),
    ]
    (socket_mount,) = [m for m in mounts if m["Destination"] == "/run/modelbay/sock"]
    socket_dir = _socket_of(digits["instances"][0]["id"]).parent
    assert socket_mount["Source"] == str(socket_dir)
    if os.geteuid() == 0:  # else it could not give the folder to the container's user
        assert (socket_dir.stat().st_mode & 0o777, socket_dir.stat().st_uid) == (0o700, 10001)
    assert not any("docker.sock" in m["Source"] for m in mounts)
    # The runtime itself sees it the same way from inside.
    uid = container.exec_run(["python3", "-c", "import os; print(os.getuid())"], user="").output.decode().strip()
    assert uid == "10001"


def test_a_container_answers_only_calls_with_its_instances_credential(digits, api, engine):
    assert predict(api, "digits", [[0] * 64]).status_code == 200  # through the gateway: as before
    for instance in Instance.objects.filter(status="ready"):
        container = _container_of(engine, instance.id)
        assert instance.endpoint == unix_endpoint(_socket_of(instance.id))
        with runtime_http(instance.endpoint) as runtime:
            for headers in ({}, {"Authorization": "Bearer not-the-credential"}):
                for method, path in (("POST", "/predict"), ("GET", "/v2/health/ready"), ("GET", "/v2/models/digits")):
                    response = runtime.request(method, path, json={"inputs": [[0] * 64]}, headers=headers)
                    assert response.status_code == 401, response.text
                    assert response.json()["code"] == "unauthenticated"
                    assert response.headers["X-Modelbay-Instance"] == instance.id
            response = runtime.post(
                "/predict", json={"inputs": [[0] * 64]}, headers={"Authorization": f"Bearer {instance.credential}"}
            )
        assert response.status_code == 200 and response.headers["X-Modelbay-Instance"] == instance.id
        # Given in a file mounted read-only, never on the command line or in the environment.
        assert instance.credential not in " ".join(container.attrs["Config"]["Cmd"])
        assert not any(instance.credential in variable for variable in container.attrs["Config"]["Env"])
        (mount,) = [m for m in container.attrs["Mounts"] if m["Destination"] == "/run/modelbay/credential"]
        assert mount["RW"] is False and mount["Type"] == "bind"


def test_resources_are_applied_and_changed_in_place(docker_worker, api, engine, digits_model):
    upload(api, "digits", "digits.onnx", digits_model[0].read_bytes())
    deploy(api, "digits", "digits", resources={"cpu": 0.5, "memory_mb": 256})
    instance_id = wait_status(api, "digits", timeout_s=60)["instances"][0]["id"]
    host = _container_of(engine, instance_id).attrs["HostConfig"]
    assert host["Memory"] == 256 * 1024 * 1024
    assert host["CpuQuota"] * 2 == host["CpuPeriod"]

    response = api.patch("/api/v1/services/digits", {"resources": {"memory_mb": 512}}, format="json")
    assert response.status_code == 202, response.content

    def resized():
        host = _container_of(engine, instance_id).attrs["HostConfig"]
        return host["Memory"] == 512 * 1024 * 1024 and host["CpuQuota"] * 2 == host["CpuPeriod"]

    wait_for(resized, timeout_s=30, what="the container's limits to change")
    assert predict(api, "digits", [[0] * 64]).status_code == 200  # the same container, still serving


SNOOPING_MODEL = """
class Model:
    def load(self, model_dir):
        pass

    def predict(self, inputs):
        results = []
        for action, path in inputs:
            try:
                if action == "read":
                    open(path, "rb").read(1)
                else:
                    with open(path, "w") as f:
                        f.write("x")
                results.append("ok")
            except OSError as error:
                results.append(f"{type(error).__name__}: {error.strerror}")
        return results
"""


def test_a_model_cannot_read_secrets_or_write_outside_tmp(docker_worker, api):
    upload(api, "snoop", "snoop.zip", python_package(SNOOPING_MODEL))
    deploy(api, "snoop", "snoop")
    wait_status(api, "snoop", timeout_s=60)
    attempts = [
        ["read", "/etc/shadow"],
        ["write", "/etc/passwd"],
        ["write", "/app/runtime/x.py"],
        ["write", "/model/predictor.py"],
        ["write", "/root/x"],
        ["read", "/var/run/docker.sock"],
        ["write", "/tmp/scratch"],
    ]
    response = predict(api, "snoop", attempts)
    assert response.status_code == 200, response.content
    results = dict(zip((path for _, path in attempts), response.json()["outputs"]))
    assert results["/etc/shadow"] == "PermissionError: Permission denied"
    assert (
        results["/etc/passwd"].startswith("OSError: Read-only file system")
        or "Permission denied" in results["/etc/passwd"]
    )
    assert results["/app/runtime/x.py"] == "OSError: Read-only file system"
    assert results["/model/predictor.py"] == "OSError: Read-only file system"
    assert results["/root/x"] != "ok"
    assert results["/var/run/docker.sock"] == "FileNotFoundError: No such file or directory"
    assert results["/tmp/scratch"] == "ok"
    # The platform is none the worse: the service is still ready and answers.
    assert wait_status(api, "snoop")["status"] == "ready"
    assert predict(api, "snoop", [["write", "/tmp/again"]]).json()["outputs"] == ["ok"]


def _keep_calling(api, slug: str, stop: threading.Event, results: list) -> threading.Thread:
    def loop():
        try:
            while not stop.is_set():
                results.append(predict(api, slug, [[0] * 64]).status_code)
                time.sleep(0.02)
        finally:
            connection.close()  # this thread's own, or the test database cannot be dropped

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def test_a_killed_container_is_replaced_while_calls_keep_succeeding(digits, api, engine):
    victim = Instance.objects.get(id=digits["instances"][0]["id"])
    old_container = _container_of(engine, victim.id)
    stop, results = threading.Event(), []
    caller = _keep_calling(api, "digits", stop, results)
    try:
        time.sleep(0.3)
        old_container.kill()

        def replaced():
            victim.refresh_from_db()
            return victim.restarts >= 1 and victim.status == "ready"

        wait_for(replaced, timeout_s=60, what="the killed container to be replaced")
        time.sleep(0.3)
    finally:
        stop.set()
        caller.join()
    new_container = _container_of(engine, victim.id)
    assert new_container.id != old_container.id and new_container.status == "running"
    assert len(results) > 20 and set(results) == {200}, f"{len(results)} calls: {sorted(set(results))}"
    assert wait_status(api, "digits")["status"] == "ready"


def test_a_container_removed_behind_the_platforms_back_is_recreated(digits, api, engine):
    victim = Instance.objects.get(id=digits["instances"][1]["id"])
    _container_of(engine, victim.id).remove(force=True)

    def recreated():
        victim.refresh_from_db()
        return victim.restarts >= 1 and victim.status == "ready" and _containers(engine, instance=victim.id)

    wait_for(recreated, timeout_s=60, what="the removed container to be recreated")
    assert predict(api, "digits", [[0] * 64]).status_code == 200


def test_an_orphan_labelled_container_is_removed(digits, engine, tmp_path):
    from controlplane import packages

    version_dir = packages.unpacked_path(
        Instance.objects.first().deployment.model_version.sha256, artifact_root=settings.MODELBAY_ARTIFACT_ROOT
    )
    spec = InstanceSpec("i-orphan00000", "acme", "nobody", 1, "zone-a", Path(version_dir), resources.effective({}))
    get_backend().start(spec)
    assert _containers(engine, instance="i-orphan00000")
    wait_for(lambda: not _containers(engine, instance="i-orphan00000"), timeout_s=30, what="the orphan's removal")
    # The service's own containers are untouched.
    assert all(_containers(engine, instance=i["id"])[0].status == "running" for i in digits["instances"])


def test_worker_outage_then_changed_replicas_converge(digits, api, engine, docker_worker):
    docker_worker.stop()
    assert api.patch("/api/v1/services/digits", {"replicas": 3}, format="json").status_code == 202
    killed = digits["instances"][0]["id"]
    _container_of(engine, killed).kill()
    time.sleep(1)
    assert len(_containers(engine, service="digits")) == 2  # nobody acts while the worker is down
    docker_worker.ensure(docker_worker.backend, **docker_worker.extra_env)

    def converged():
        body = api.get("/api/v1/services/digits").json()
        ready = [i for i in body["instances"] if i["status"] == "ready"]
        return body["status"] == "ready" and len(ready) == 3

    wait_for(converged, timeout_s=90, what="3 ready instances after the worker came back")
    running = [c for c in _containers(engine, service="digits") if c.status == "running"]
    assert len(running) == 3
    assert {c.labels["modelbay.zone"] for c in running} == {"zone-a", "zone-b"}


def test_an_unreachable_engine_degrades_its_zone_then_recovers(digits, api, zone_b_engine):
    zone_b = [i["id"] for i in digits["instances"] if i["zone"] == "zone-b"]
    zone_b_engine.stop()
    try:

        def degraded():
            body = api.get("/api/v1/services/digits").json()
            states = {i["id"]: i["status"] for i in body["instances"]}
            return body if body["status"] == "degraded" and all(states[i] == "unhealthy" for i in zone_b) else None

        body = wait_for(degraded, timeout_s=30, what="zone-b's instances unhealthy and the service degraded")
        assert "The Docker engine of zone-b cannot be reached" in body["error"]
        # zone-a still serves every call.
        assert all(predict(api, "digits", [[0] * 64]).status_code == 200 for _ in range(20))
        time.sleep(2)  # several reconcile passes: still degraded, never failed
        assert api.get("/api/v1/services/digits").json()["status"] == "degraded"
    finally:
        zone_b_engine.start()

    def spread_again():
        body = api.get("/api/v1/services/digits").json()
        placed = sorted((i["zone"], i["status"]) for i in body["instances"])
        return body["status"] == "ready" and placed == [("zone-a", "ready"), ("zone-b", "ready")]

    # zone-b's instance starts there again; once it is ready, its replacement in zone-a drains and goes.
    wait_for(spread_again, timeout_s=60, what="one ready instance per zone again")


@pytest.mark.timeout(600)  # a per-model image build may take its 300 s, and the deploy more
def test_python_requirements_build_a_cached_per_model_image(docker_worker, api, engine):
    # numpy is in the runtime image already: pip resolves it without a download.
    upload(api, "summer", "summer.zip", python_package(NUMPY_MODEL, 'requirements: ["numpy"]\n'))
    deploy(api, "summer", "summer", replicas=2)
    body = wait_status(api, "summer", timeout_s=300)
    assert predict(api, "summer", [[1, 2, 3]]).json()["outputs"] == [6.0]
    images = {_container_of(engine, i["id"]).image.id for i in body["instances"]}
    assert len(images) == 1  # built once, used by both replicas
    (image,) = images
    assert any(tag.startswith("modelbay/model-env:") for tag in engine.images.get(image).tags)


WHICH_MODEL = """
import shutil

class Model:
    def load(self, model_dir):
        pass

    def predict(self, inputs):
        return [shutil.which(name) for name in inputs]
"""


@pytest.mark.timeout(600)  # a per-model image build may take its 300 s, and the deploy more
def test_system_packages_are_installed_into_the_models_image(docker_worker, api):
    upload(api, "which", "which.zip", python_package(WHICH_MODEL, 'system_packages: ["jq"]\n'))
    deploy(api, "which", "which")
    wait_status(api, "which", timeout_s=300)
    assert predict(api, "which", ["jq"]).json()["outputs"] == ["/usr/bin/jq"]


@pytest.mark.timeout(600)  # a per-model image build may take its 300 s, and the deploy more
def test_requirements_that_do_not_install_fail_the_service_with_the_build_output(docker_worker, api):
    assert_uninstallable_requirements_fail_the_service(api)


def test_logs_of_a_running_and_of_a_failed_container(docker_worker, api, digits_model):
    upload(api, "digits", "digits.onnx", digits_model[0].read_bytes())
    deploy(api, "digits", "digits")
    running = wait_status(api, "digits", timeout_s=60)["instances"][0]["id"]
    logs = api.get("/api/v1/services/digits/logs", {"instance": running}).json()
    assert "loaded digits v1" in logs["logs"]

    upload(api, "broken", "broken.zip", python_package(FAILING_LOAD))
    deploy(api, "broken", "broken")
    body = wait_status(api, "broken", statuses=("failed",), timeout_s=60)
    assert "weights file is corrupt" in body["error"]
    logs = api.get("/api/v1/services/broken/logs").json()
    assert "Traceback" in logs["logs"] and "weights file is corrupt" in logs["logs"]


@pytest.fixture
def digits_on_own_engine(own_engine_worker, api, digits_model):
    """The digits service with two replicas, both zones on an engine of the test's own."""
    upload(api, "digits", "digits.onnx", digits_model[0].read_bytes())
    deploy(api, "digits", "digits", replicas=2)
    return wait_status(api, "digits", timeout_s=60)


@pytest.mark.timeout(450)  # an engine of its own to start and fill, then stopped and started again
def test_a_restart_of_the_docker_engine_is_survived(digits_on_own_engine, api, own_docker_engine, engine):
    """dockerd stops (its containers with it) and starts again: the service heals by itself.

    The engine is the test's own (a second dockerd with its own socket, data root and
    bridge, see ``own_docker_engine``), so this machine's engine is never signalled."""
    assert {i["zone"] for i in digits_on_own_engine["instances"]} == {"zone-a", "zone-b"}
    own = docker.DockerClient(base_url=own_docker_engine.url)
    try:
        assert len(own.containers.list(filters={"label": "modelbay.service=digits"})) == 2
    finally:
        own.close()
    assert not _containers(engine, service="digits")  # none on this machine's engine

    own_docker_engine.stop()  # SIGTERM to its dockerd, and wait (60 s at most) until it has exited
    body = wait_status(api, "digits", statuses=("degraded",), timeout_s=30)
    assert {i["status"] for i in body["instances"]} == {"unhealthy"}
    errors = set(Instance.objects.values_list("error", flat=True))
    assert all("The Docker engine of zone-" in error and "cannot be reached" in error for error in errors), errors

    own_docker_engine.start()  # the same data root: its stopped containers are there again
    body = wait_status(api, "digits", timeout_s=90)
    assert all(i["status"] == "ready" for i in body["instances"])
    assert predict(api, "digits", [[0] * 64]).status_code == 200
    assert engine.ping()  # this machine's engine still answers


INTERFACES_MODEL = """
import socket

class Model:
    def load(self, model_dir):
        pass

    def predict(self, inputs):
        return [name for _, name in socket.if_nameindex()]
"""


def test_a_model_sees_no_network_interface_but_loopback(docker_worker, api):
    upload(api, "interfaces", "interfaces.zip", python_package(INTERFACES_MODEL))
    deploy(api, "interfaces", "interfaces")
    wait_status(api, "interfaces", timeout_s=60)
    response = predict(api, "interfaces", [0])
    assert response.status_code == 200, response.content
    assert response.json()["outputs"] == ["lo"]


def test_an_egress_instance_is_on_its_services_own_network(docker_worker, api, engine, digits_model):
    """network "egress": the container joins a bridge network of its service's alone (no
    traffic between its containers either), publishes nothing, and is called on its socket;
    the network goes with the service's last container."""
    upload(api, "digits", "digits.onnx", digits_model[0].read_bytes())
    deploy(api, "digits", "digits", replicas=2, network="egress")
    instances = wait_status(api, "digits", timeout_s=60)["instances"]
    network = _service_network(engine, "digits", "egress")
    assert network is not None
    assert network.attrs["Driver"] == "bridge" and network.attrs["Internal"] is False
    assert network.attrs["Options"]["com.docker.network.bridge.enable_icc"] == "false"
    assert "com.docker.network.bridge.enable_ip_masquerade" not in network.attrs["Options"]  # a way out
    assert network.attrs["Labels"] == {
        "modelbay.namespace": get_backend().namespace,
        "modelbay.organization": "acme",
        "modelbay.service": "digits",
        "modelbay.network": "egress",
    }
    for instance in instances:
        container = _container_of(engine, instance["id"])
        assert container.attrs["HostConfig"]["NetworkMode"] == network.name
        assert list(container.attrs["NetworkSettings"]["Networks"]) == [network.name]  # nothing else
        assert not any(container.attrs["NetworkSettings"]["Ports"].values())  # nothing published
        assert Instance.objects.get(id=instance["id"]).endpoint == unix_endpoint(_socket_of(instance["id"]))
    assert predict(api, "digits", [[0] * 64]).status_code == 200

    # Back to none: the instances start again with no network, and the service's network goes.
    assert api.patch("/api/v1/services/digits", {"network": "none"}, format="json").status_code == 202

    def without_network():
        modes = _running_network_modes(engine, service="digits")
        return list(modes.values()) == ["none", "none"] and _service_network(engine, "digits", "egress") is None

    wait_for(without_network, timeout_s=60, what="the instances to start again without a network")

    def ready_again():
        body = api.get("/api/v1/services/digits").json()
        return body["status"] == "ready" and [i["status"] for i in body["instances"]] == ["ready", "ready"]

    wait_for(ready_again, timeout_s=60, what="both instances ready again")
    assert predict(api, "digits", [[0] * 64]).status_code == 200


def test_a_container_of_an_earlier_release_on_a_shared_network_is_started_again(digits, api, engine, docker_worker):
    """A container on a network of an earlier release's (the default bridge here) is
    replaced by one with no network, under the same instance id."""
    victim = Instance.objects.get(id=digits["instances"][0]["id"])
    old = _container_of(engine, victim.id)
    docker_worker.stop()
    labels, name = old.labels, old.name
    old.remove(force=True)
    stale = engine.containers.run(
        settings.MODELBAY_RUNTIME_IMAGE,
        entrypoint=[
            "python3",
            "-c",
            "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit()); time.sleep(600)",
        ],
        name=name,
        labels=labels,
        detach=True,
    )
    assert stale.attrs["HostConfig"]["NetworkMode"] == "default"
    docker_worker.ensure(docker_worker.backend, **docker_worker.extra_env)

    def replaced():
        victim.refresh_from_db()
        modes = _running_network_modes(engine, instance=victim.id)
        return stale.id not in modes and list(modes.values()) == ["none"] and victim.status == "ready"

    wait_for(replaced, timeout_s=60, what="the earlier release's container to be replaced")
    assert predict(api, "digits", [[0] * 64]).status_code == 200


def test_a_container_that_dies_is_replaced_on_the_engines_event(docker_worker, api, engine, digits_model):
    """With the periodic reconcile 10 minutes away, only the engine's "die" event can bring it back."""
    docker_worker.stop()
    docker_worker.ensure("docker", **docker_worker.extra_env, MODELBAY_RECONCILE_INTERVAL="600")
    upload(api, "digits", "digits.onnx", digits_model[0].read_bytes())
    deploy(api, "digits", "digits")
    victim = Instance.objects.get(id=wait_status(api, "digits", timeout_s=60)["instances"][0]["id"])
    _container_of(engine, victim.id).kill()

    def replaced():
        victim.refresh_from_db()
        return victim.restarts == 1 and victim.status == "ready"

    wait_for(replaced, timeout_s=60, what="the dead container to be replaced")
    assert f"instance {victim.id} exited" in docker_worker.log_path.read_text()
    assert predict(api, "digits", [[0] * 64]).status_code == 200


TRIVIAL_MODEL = """
class Model:
    def load(self, model_dir):
        pass

    def predict(self, inputs):
        return [len(str(item)) for item in inputs]
"""


@pytest.mark.timeout(300)  # an engine of its own to start and fill
def test_an_engine_on_another_host_is_called_over_tls_with_a_client_certificate(
    own_tls_docker_engine, settings, monkeypatch
):
    """A zone at tcp://: the backend calls the engine over TLS with the zone's client
    certificate (MODELBAY_ZONE_TLS), lists and starts an instance there; a client without
    that certificate, with one of another CA, or in plain text is refused by the engine."""
    from controlplane.backends.docker import DockerBackend
    from controlplane.reconcile import probe
    from modelbay.core.env import parse_zone_tls

    engine = own_tls_docker_engine
    address = engine.tcp_url.removeprefix("tcp://")
    client_dir, rogue_dir = engine.client_tls_dir, engine.rogue_tls_dir

    # The engine itself: only a client with a certificate of its CA gets an answer. (These
    # plain SDK clients would verify the engine against REQUESTS_CA_BUNDLE when it is set:
    # the backend's own client does not, see _connect.)
    with monkeypatch.context() as patched:
        for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            patched.delenv(name, raising=False)
        _tls_engine_refuses_strangers(address, client_dir, rogue_dir)

    # The settings: the zone's folder is accepted; without it the zone is refused.
    zones = {"zone-tls": engine.tcp_url}
    with pytest.raises(ImproperlyConfigured, match="MODELBAY_ZONE_TLS=zone-tls="):
        parse_zone_tls("", zones)
    settings.MODELBAY_ZONES = zones
    settings.MODELBAY_ZONE_TLS = parse_zone_tls(f"zone-tls={client_dir}", zones)

    backend = DockerBackend()
    inventory = backend.list()
    assert not inventory.unreachable and not list(inventory)

    model_dir = Path(settings.MODELBAY_ARTIFACT_ROOT) / "tls-test" / "package"
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "modelbay.yaml").write_text("framework: python\nentrypoint: predictor:Model\n")
    (model_dir / "predictor.py").write_text(TRIVIAL_MODEL)
    model_dir.chmod(0o755)
    spec = InstanceSpec(
        "i-tls000000000", "acme", "tls", 1, "zone-tls", model_dir, resources.effective({}), credential="tls-secret"
    )
    started = backend.start(spec)
    own = docker.DockerClient(base_url=engine.url)  # the unix socket: what runs there
    try:
        assert started.zone == "zone-tls" and started.endpoint.startswith("http://127.0.0.1:")
        listed = backend.list()
        assert not listed.unreachable
        assert listed["i-tls000000000"].alive and listed["i-tls000000000"].zone == "zone-tls"
        wait_for(
            lambda: probe(started.endpoint, instance_id=spec.instance_id, credential="tls-secret").ready,
            timeout_s=60,
            what="the instance on the TLS engine to be ready",
        )
        (container,) = own.containers.list()
        assert container.labels["modelbay.zone"] == "zone-tls"
        # No socket to share across hosts: its service's own network, with no way out, and
        # its port published on the engine's host.
        network = _service_network(own, "tls", "none", namespace=backend.namespace)
        assert network is not None
        assert list(container.attrs["NetworkSettings"]["Networks"]) == [network.name]
        options = network.attrs["Options"]
        assert options["com.docker.network.bridge.enable_icc"] == "false"
        assert options["com.docker.network.bridge.enable_ip_masquerade"] == "false"
        (binding,) = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"]
        assert started.endpoint == f"http://127.0.0.1:{binding['HostPort']}"
        assert not any(m["Destination"] == "/run/modelbay/sock" for m in container.attrs["Mounts"])
    finally:
        backend.stop(spec.instance_id)
    try:
        assert "i-tls000000000" not in backend.list()
        assert _service_network(own, "tls", "none", namespace=backend.namespace) is None  # gone with it
    finally:
        own.close()

    # The same zone without its folder (the settings would refuse it): never plain text.
    settings.MODELBAY_ZONE_TLS = {}
    unreachable = DockerBackend().list().unreachable["zone-tls"]
    assert "plain-text tcp is refused" in unreachable


def _tls_engine_refuses_strangers(address: str, client_dir: Path, rogue_dir: Path) -> None:
    """Only a client with a certificate of the engine's CA gets an answer."""
    import httpx
    import requests
    from docker.tls import TLSConfig

    def client(client_cert: tuple[Path, Path] | None, ca: Path) -> docker.DockerClient:
        cert = (str(client_cert[0]), str(client_cert[1])) if client_cert else None
        tls = TLSConfig(client_cert=cert, ca_cert=str(ca), verify=True)
        return docker.DockerClient(base_url=f"https://{address}", tls=tls, timeout=10)  # asks for the version

    good = client((client_dir / "cert.pem", client_dir / "key.pem"), client_dir / "ca.pem")
    assert good.ping()
    good.close()
    strangers = {
        "no client certificate": (None, client_dir / "ca.pem"),
        "a certificate of another CA": ((rogue_dir / "cert.pem", rogue_dir / "key.pem"), rogue_dir / "ca.pem"),
    }
    for what, (cert, ca) in strangers.items():
        with pytest.raises((docker.errors.DockerException, requests.RequestException)):
            client(cert, ca).ping()
            pytest.fail(f"the engine answered a client with {what}")
    plain = httpx.get(f"http://{address}/_ping", timeout=10)  # plain text to the TLS port
    assert plain.status_code == 400, plain.text
