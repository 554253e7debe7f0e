"""The production backend: each instance is a hardened container from the runtime image.

Every zone names a Docker endpoint in ``MODELBAY_ZONES`` (one engine may serve several
zones). Containers carry labels naming this installation, the instance, its
organization, service, version and zone; the backend finds them again by those labels
alone, so a restart of the worker or of the engine loses nothing the database does not
know. A zone whose engine does not answer is reported as unreachable, not as "all its
containers died": every zone's engine is listed at once, each call bounded by
``MODELBAY_DOCKER_TIMEOUT``, so that an engine that does not answer delays the others by
one timeout at most, and calls about one instance skip the zones the last listing could
not ask. An engine on another host (``tcp://``) is called over TLS only, with the
client certificate of its zone's ``MODELBAY_ZONE_TLS`` folder (the settings refuse a tcp
zone without one). Each container gets its credential as one read-only file mounted at
``/run/modelbay/credential`` from ``run/instances/<id>/credential``.

Networks. A container on this host's engine has none at all (``network_mode: none``): it
listens on a Unix socket in its own folder, ``run/instances/<id>/sock``, mounted at
``/run/modelbay/sock``, where the gateway calls it. A service with ``"network": "egress"``
joins a bridge network of its own (``modelbay-<namespace>.<org>.<service>.egress``, no
traffic between its containers), still called over the socket; other tenants' networks
and the platform (loopback, compose's internal network) are out of its reach. An engine on
another host cannot share a socket with the gateway: there the container joins its
service's own network and publishes its port; for ``none`` that network has no route out
(no masquerading). A service's network is removed with its last container.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import logging
import os
import tarfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

import docker
import requests
from django.conf import settings
from docker.constants import MINIMUM_DOCKER_API_VERSION
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.tls import TLSConfig

from controlplane.backends import instance_log
from controlplane.backends.base import (
    BackendError,
    InstanceSpec,
    Inventory,
    RunningInstance,
    SOCKET_NAME,
    build_failed,
    disk_full_fails,
    make_socket_dir,
    remove_credential,
    socket_path,
    write_credential,
)
from controlplane.backends.local import _namespace
from controlplane.resources import CPU_PERIOD_US, Resources
from modelbay.core.env import NETWORK_SCHEMES
from runtime.client import unix_endpoint

logger = logging.getLogger(__name__)

LABEL = "modelbay"
RUNTIME_PORT = 8080
RUNTIME_USER = "10001:10001"
CREDENTIAL_PATH = "/run/modelbay/credential"  # inside the container
SOCKET_DIR = "/run/modelbay/sock"  # inside the container
ENGINE_ERRORS = (DockerException, requests.RequestException, OSError)
MODEL_IMAGE = "modelbay/model-env"
WATCH_RETRY_S = 1.0  # how soon a watcher asks an engine it lost again


def _label(key: str) -> str:
    return f"{LABEL}.{key}"


class DockerBackend:
    name = "docker"

    def __init__(self):
        self.namespace = _namespace()
        self.image = settings.MODELBAY_RUNTIME_IMAGE
        self.network_prefix = f"modelbay-{self.namespace}."  # of the services' own networks
        self.run_dir = settings.MODELBAY_RUN_DIR
        self.log_dir = instance_log.folder(settings.MODELBAY_RUN_DIR)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._clients: dict[str, docker.DockerClient] = {}
        self._lock = threading.Lock()
        self._listing = ThreadPoolExecutor(max_workers=max(1, len(settings.MODELBAY_ZONES)), thread_name_prefix="list")
        # What the last listing found: the zones it could not ask, the instances of each zone.
        self._unreachable: dict[str, str] = {}
        self._listed: dict[str, frozenset[str]] = {}

    # --- engines ------------------------------------------------------------------
    def _client(self, zone: str) -> docker.DockerClient:
        """The Docker client of a zone's engine (made once; the SDK reconnects by itself)."""
        endpoint = settings.MODELBAY_ZONES.get(zone)
        if endpoint is None:
            raise BackendError(f"Zone {zone!r} is not in MODELBAY_ZONES.", permanent=True)
        key = f"{endpoint} {_tls_dir(zone) or ''}"
        with self._lock:
            client = self._clients.get(key)
        if client is None:
            # Outside the lock: an engine that does not answer holds up no other zone.
            client = _connect_zone(zone, timeout=settings.MODELBAY_DOCKER_TIMEOUT)
            with self._lock:
                kept = self._clients.setdefault(key, client)
            if kept is not client:
                client.close()  # another thread connected meanwhile
        return self._clients[key]

    def _answering_zones(self) -> list[str]:
        """The zones the last listing could ask (all of them before any listing)."""
        return [zone for zone in settings.MODELBAY_ZONES if zone not in self._unreachable]

    def _publish_host(self, zone: str) -> str:
        """The address the gateway calls a zone's published ports on."""
        endpoint = urlparse(_engine_url(zone))
        if endpoint.scheme in ("tcp", "http", "https", "ssh") and endpoint.hostname:
            return endpoint.hostname
        return settings.MODELBAY_DOCKER_PUBLISH_HOST

    def _containers(self, zone: str, **labels: str) -> list[dict]:
        """This installation's containers in a zone (raw listings, stopped ones included)."""
        filters = [f"{_label('namespace')}={self.namespace}", f"{_label('zone')}={zone}"]
        filters += [f"{_label(key)}={value}" for key, value in labels.items()]
        return self._client(zone).api.containers(all=True, filters={"label": filters})

    # --- interface ----------------------------------------------------------------
    def prepare(self, zone: str, requirements: tuple[str, ...], system_packages: tuple[str, ...] = ()) -> None:
        try:
            self._image_for(zone, requirements, system_packages)
        except ENGINE_ERRORS as error:
            raise BackendError(f"The Docker engine of {zone} failed: {error}") from error

    def start(self, spec: InstanceSpec) -> RunningInstance:
        try:
            with disk_full_fails():  # this host's: the credential, the socket folder
                self._remove(spec.zone, spec.instance_id)
                client = self._client(spec.zone)
                image = self._image_for(spec.zone, spec.requirements, spec.system_packages)
                container = client.containers.run(image, **self._container_options(client, spec))
                container.reload()
        except BackendError:
            raise
        except ImageNotFound as error:
            raise BackendError(
                f"The runtime image is missing on the Docker engine of {spec.zone}: {error.explanation}. "
                "Build it with `make runtime-image`.",
                permanent=True,
            ) from error
        except APIError as error:
            # The engine's disk is full: a failure to report, not to retry for ever.
            permanent = "no space left on device" in str(error).lower()
            raise BackendError(
                f"The Docker engine of {spec.zone} answered an error: {error}", permanent=permanent
            ) from error
        except ENGINE_ERRORS as error:
            raise BackendError(f"The Docker engine of {spec.zone} cannot be reached: {error}") from error
        return RunningInstance(
            spec.instance_id,
            self._endpoint(spec.zone, spec.instance_id, container.attrs),
            alive=True,
            zone=spec.zone,
            created_at=_created_at(container.attrs["Created"]),
        )

    def stop(self, instance_id: str) -> None:
        # A zone out of reach is not asked: if the container is there, the orphan sweep
        # removes it once the engine answers again.
        found, asked_all = False, not self._unreachable
        for zone in self._answering_zones():
            try:
                found |= self._remove(zone, instance_id)
            except ENGINE_ERRORS as error:
                logger.warning("cannot remove %s in %s: %s", instance_id, zone, error)
                asked_all = False
        if found or asked_all:  # an instance has one container: none is left elsewhere
            remove_credential(self.run_dir, instance_id)

    def list(self) -> Inventory:
        inventory = Inventory()
        zones = list(settings.MODELBAY_ZONES)
        for zone, listings in zip(zones, self._listing.map(self._list_zone, zones)):
            if isinstance(listings, str):
                inventory.unreachable[zone] = listings
                continue
            for listing in listings:
                instance_id = listing["Labels"].get(_label("instance"))
                if not instance_id:
                    continue
                inventory[instance_id] = RunningInstance(
                    instance_id,
                    self._endpoint(zone, instance_id, listing),
                    # One of an earlier release, on a network shared with others: reported
                    # dead, so that reconcile starts it again as it starts one now.
                    alive=listing["State"] == "running" and self._own_network(listing) is not None,
                    zone=zone,
                    created_at=float(listing["Created"]),
                )
            self._listed[zone] = frozenset(i.instance_id for i in inventory.values() if i.zone == zone)
        self._unreachable = dict(inventory.unreachable)
        return inventory

    def _list_zone(self, zone: str) -> list[dict] | str:
        """A zone's containers, or why its engine cannot be asked."""
        try:
            return self._containers(zone)
        except ENGINE_ERRORS as error:
            return f"The Docker engine of {zone} cannot be reached: {error}"

    def logs(self, instance_id: str, *, tail: int = 200) -> str:
        for zone in self._answering_zones():
            try:
                for listing in self._containers(zone, instance=instance_id):
                    return self._client(zone).api.logs(listing["Id"], tail=tail).decode("utf-8", "replace")
            except ENGINE_ERRORS:
                continue
        # Gone: what its container printed last, kept when it was removed.
        return instance_log.tail(self._log_path(instance_id), tail)

    def watch(self, on_exit: Callable[[str], None]) -> None:
        """Call ``on_exit(instance_id)`` whenever one of our containers stops, in any zone.

        Runs until the process ends, each zone's engine in its own thread. An engine that
        goes away (its event stream breaks) takes its containers with it as far as the
        gateway can tell: each instance it ran when last listed is reported, so that
        reconcile replaces them in the other zones at once. It is watched again once it
        answers, and then its instances are reported again, to be started there again.
        """
        for zone in settings.MODELBAY_ZONES:
            threading.Thread(target=self._watch_zone, args=(zone, on_exit), name=f"watch-{zone}", daemon=True).start()

    def _watch_zone(self, zone: str, on_exit: Callable[[str], None]) -> None:
        filters = {
            "type": "container",
            "event": ["die"],
            "label": [f"{_label('namespace')}={self.namespace}", f"{_label('zone')}={zone}"],
        }
        answering = True  # as far as this watcher knows
        while True:
            pause_s = WATCH_RETRY_S
            try:
                client = _connect_zone(zone, timeout=None)  # a stream: no read timeout
                events = client.api.events(filters=filters, decode=True)
                if not answering:
                    answering = True
                    logger.info("the Docker engine of %s answers again", zone)
                    self._report_listed(zone, on_exit)
                for event in events:
                    instance_id = event.get("Actor", {}).get("Attributes", {}).get(_label("instance"))
                    if not instance_id:
                        continue
                    # The engine sends "die" before it records the exit; an inspect waits
                    # for the record, so that a listing made next sees the container stopped.
                    try:
                        client.api.inspect_container(event["id"])
                    except NotFound:
                        pass
                    on_exit(instance_id)
                pause_s = 0.1  # the stream ended: an engine going away ends it; ask again at once
            except ENGINE_ERRORS as error:
                logger.info("watching the Docker engine of %s: %s; again in %.0f s", zone, error, WATCH_RETRY_S)
                if answering:
                    answering = False
                    self._report_listed(zone, on_exit)
            time.sleep(pause_s)

    def _report_listed(self, zone: str, on_exit: Callable[[str], None]) -> None:
        for instance_id in self._listed.get(zone, ()):
            on_exit(instance_id)

    def resize(self, instance_id: str, resources: Resources) -> bool:
        """``docker update``: always in place."""
        for zone in self._answering_zones():
            try:
                for listing in self._containers(zone, instance=instance_id):
                    memory = f"{resources.memory_mb}m"
                    self._client(zone).api.update_container(
                        listing["Id"],
                        mem_limit=memory,
                        memswap_limit=memory,
                        cpu_period=CPU_PERIOD_US,
                        cpu_quota=resources.cpu_quota_us,
                    )
            except ENGINE_ERRORS as error:
                raise BackendError(f"Changing the limits of {instance_id} failed: {error}") from error
        return True

    # --- containers ---------------------------------------------------------------
    def _container_options(self, client: docker.DockerClient, spec: InstanceSpec) -> dict:
        resources = spec.resources
        memory = f"{resources.memory_mb}m"
        labels = {
            _label("namespace"): self.namespace,
            _label("instance"): spec.instance_id,
            _label("organization"): spec.organization,
            _label("service"): spec.service,
            _label("version"): str(spec.model_version),
            _label("zone"): spec.zone,
        }
        model_dir = settings.MODELBAY_DOCKER_ARTIFACT_ROOT / spec.model_dir.relative_to(settings.MODELBAY_ARTIFACT_ROOT)
        uid, gid = (int(part) for part in RUNTIME_USER.split(":"))
        credential_file = _docker_host_path(write_credential(self.run_dir, spec, owner=(uid, gid)))
        volumes = {
            str(model_dir): {"bind": "/model", "mode": "ro"},
            str(credential_file): {"bind": CREDENTIAL_PATH, "mode": "ro"},
        }
        command = [
            "--model-dir", "/model",
            "--name", spec.service,
            "--model-version", str(spec.model_version),
            "--instance-id", spec.instance_id,
            "--credential-file", CREDENTIAL_PATH,
        ]  # fmt: skip
        options = dict(
            command=command,
            name=f"modelbay-{self.namespace}-{spec.instance_id}",
            detach=True,
            labels=labels,
            environment={"HOME": "/tmp", "MODELBAY_INSTANCE_ID": spec.instance_id},
            # Hardening: nothing a model does reaches the host or keeps state.
            user=RUNTIME_USER,
            read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={settings.MODELBAY_DOCKER_TMPFS_MB}m,mode=1777"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            mem_limit=memory,
            memswap_limit=memory,  # no swap beyond the memory limit
            cpu_period=CPU_PERIOD_US,
            cpu_quota=resources.cpu_quota_us,
            pids_limit=resources.pids,
            volumes=volumes,
            log_config=_log_config(),
        )
        on_this_host = _on_this_host(spec.zone)
        if on_this_host:
            # The gateway calls it as root or as that same uid (the app image's user).
            socket_dir = make_socket_dir(self.run_dir, spec.instance_id, owner=(uid, gid))
            volumes[str(_docker_host_path(socket_dir))] = {"bind": SOCKET_DIR, "mode": "rw"}
            command += ["--uds", f"{SOCKET_DIR}/{SOCKET_NAME}"]
        else:
            options["ports"] = {f"{RUNTIME_PORT}/tcp": (settings.MODELBAY_DOCKER_PUBLISH_HOST, None)}
        if on_this_host and spec.network == "none":
            options["network_mode"] = "none"
        else:
            options["network"] = self._service_network(client, spec)
        return options

    def _service_network(self, client: docker.DockerClient, spec: InstanceSpec) -> str:
        """The bridge network of the service's own that its containers join, made on demand."""
        name = f"{self.network_prefix}{spec.organization}.{spec.service}.{spec.network}"
        # Not even the service's own containers talk to each other.
        options = {"com.docker.network.bridge.enable_icc": "false"}
        if spec.network != "egress":
            options["com.docker.network.bridge.enable_ip_masquerade"] = "false"  # no route out
        labels = {
            _label("namespace"): self.namespace,
            _label("organization"): spec.organization,
            _label("service"): spec.service,
            _label("network"): spec.network,
        }
        try:
            client.networks.create(name, driver="bridge", options=options, labels=labels, check_duplicate=True)
        except APIError as error:
            if error.status_code != 409:  # it exists already
                raise
        return name

    def _own_network(self, attrs: dict) -> str | None:
        """A container's network, when it is one this backend gives: none, or its service's own."""
        mode = (attrs.get("HostConfig") or {}).get("NetworkMode", "")
        return mode if mode == "none" or mode.startswith(self.network_prefix) else None

    def _endpoint(self, zone: str, instance_id: str, attrs: dict) -> str:
        """Where the gateway calls a container, from a listing or an inspect (both shapes)."""
        if _on_this_host(zone):
            return unix_endpoint(socket_path(self.run_dir, instance_id))
        port = None
        if "Ports" in attrs and isinstance(attrs["Ports"], list):  # a listing
            port = next((p.get("PublicPort") for p in attrs["Ports"] if p.get("PrivatePort") == RUNTIME_PORT), None)
        else:  # an inspect
            bindings = (attrs.get("NetworkSettings", {}).get("Ports") or {}).get(f"{RUNTIME_PORT}/tcp") or []
            port = bindings[0]["HostPort"] if bindings else None
        return f"http://{self._publish_host(zone)}:{port}" if port else ""

    def _remove(self, zone: str, instance_id: str) -> bool:
        """Stop and remove an instance's container, keeping the end of its output; whether
        the zone had one."""
        client = self._client(zone)
        listings = self._containers(zone, instance=instance_id)
        for listing in listings:
            try:
                if listing["State"] == "running":
                    # SIGTERM: the runtime finishes the calls in flight, then exits.
                    client.api.stop(listing["Id"], timeout=_stop_grace_s())
                self._keep_logs(instance_id, client.api.logs(listing["Id"], tail=1000))
                client.api.remove_container(listing["Id"], force=True)
            except NotFound:
                pass  # removed meanwhile
            except APIError as error:
                if error.status_code != 409:  # 409: another worker's removal is in progress
                    raise
            network = self._own_network(listing)
            if network and network != "none":
                _remove_network(client, network)
        return bool(listings)

    def _log_path(self, instance_id: str) -> Path:
        return self.log_dir / f"{instance_id}.log"

    def _keep_logs(self, instance_id: str, output: bytes) -> None:
        """Keep the end of a removed container's output (as much as one log file holds); a
        full disk loses it rather than keeping the container."""
        try:
            self._log_path(instance_id).write_bytes(output[-settings.MODELBAY_INSTANCE_LOG_BYTES :])
        except OSError as error:
            logger.warning("cannot keep the output of %s: %s", instance_id, error)

    # --- images -------------------------------------------------------------------
    def _image_for(self, zone: str, requirements: tuple[str, ...], system_packages: tuple[str, ...] = ()) -> str:
        """The runtime image, or a per-model image with the model's packages on top."""
        client = self._client(zone)
        base = client.images.get(self.image)  # ImageNotFound: the runtime image was never built
        if not requirements and not system_packages:
            return self.image
        parts = [base.id, *sorted(requirements), *(f"apt:{name}" for name in sorted(system_packages))]
        digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
        tag = f"{MODEL_IMAGE}:{digest}"
        lock_path = settings.MODELBAY_RUN_DIR / f"image-{digest}.lock"
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one build per image at a time on this host
            try:
                client.images.get(tag)
            except ImageNotFound:
                self._build_model_image(zone, tag, requirements, system_packages)
        return tag

    def _build_model_image(
        self, zone: str, tag: str, requirements: tuple[str, ...], system_packages: tuple[str, ...]
    ) -> None:
        apt = ""
        if system_packages:  # names are checked by the manifest (Debian package names only)
            apt = (
                "RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq"
                f" --no-install-recommends {' '.join(sorted(system_packages))} && rm -rf /var/lib/apt/lists/*\n"
            )
        dockerfile = (
            f"FROM {self.image}\n"
            "USER root\n"
            f"{apt}"
            "COPY requirements.txt build-ca.crt /tmp/build/\n"
            "RUN PIP_CERT=/tmp/build/build-ca.crt /opt/runtime/bin/pip install --no-cache-dir"
            " --disable-pip-version-check -r /tmp/build/requirements.txt && rm -rf /tmp/build\n"
            f"USER {RUNTIME_USER}\n"
        )
        files = {
            "Dockerfile": dockerfile.encode(),
            "requirements.txt": ("\n".join(requirements) + "\n").encode(),
            "build-ca.crt": Path(settings.MODELBAY_BUILD_CA_BUNDLE).read_bytes(),
        }
        output: list[str] = []
        error = None
        # Builds outlast the per-call timeout: pip may be silent for a while.
        builder = _connect_zone(zone, timeout=900)
        try:
            for chunk in builder.api.build(
                fileobj=_tar(files), custom_context=True, tag=tag, rm=True, forcerm=True, decode=True
            ):
                output.append(chunk.get("stream", ""))
                if "error" in chunk:
                    error = chunk["error"]
                    output.append(error + "\n")
        finally:
            builder.close()
        if error:
            raise build_failed("Installing the model's packages failed", "".join(output))


def _engine_url(zone: str) -> str:
    return settings.MODELBAY_ZONES.get(zone) or os.environ.get("DOCKER_HOST", "")


def _on_this_host(zone: str) -> bool:
    """The zone's engine runs on this host (a Unix socket): its containers' sockets are ours to call."""
    endpoint = _engine_url(zone)
    return not endpoint or endpoint.startswith("unix://")


def _remove_network(client: docker.DockerClient, name: str) -> None:
    """Remove a service's network unless containers still use it."""
    try:
        client.api.remove_network(name)
    except NotFound:
        pass
    except APIError as error:
        # "has active endpoints": another container of the service (403 on older engines).
        if error.status_code not in (403, 409):
            raise


def _docker_host_path(path: Path) -> Path:
    """Where the Docker host sees a file or folder of MODELBAY_RUN_DIR: MODELBAY_DOCKER_RUN_DIR
    when set; else, when the worker runs in a container and MODELBAY_DOCKER_ARTIFACT_ROOT
    maps the artifacts' folder, the run dir beside it maps the same way (both live in the
    data dir by default); else the same path."""
    run_dir = settings.MODELBAY_RUN_DIR
    relative = path.relative_to(run_dir)
    mapped = settings.MODELBAY_DOCKER_RUN_DIR
    if mapped:
        return Path(mapped) / relative
    artifacts, docker_artifacts = settings.MODELBAY_ARTIFACT_ROOT, settings.MODELBAY_DOCKER_ARTIFACT_ROOT
    if docker_artifacts != artifacts and docker_artifacts.name == artifacts.name:
        try:
            return docker_artifacts.parent / run_dir.relative_to(artifacts.parent) / relative
        except ValueError:
            pass
    return path


def _log_config() -> dict:
    """The json-file driver, bounded as the local backend's logs are: a file and one rotated."""
    max_kib = max(1, settings.MODELBAY_INSTANCE_LOG_BYTES // 1024)
    return {"type": "json-file", "config": {"max-size": f"{max_kib}k", "max-file": "2"}}


def _stop_grace_s() -> int:
    """How long a stopping instance may take to finish its calls: the longest a call may take."""
    return int(settings.MODELBAY_PREDICT_TIMEOUT) + 5


def _tls_dir(zone: str) -> Path | None:
    return (getattr(settings, "MODELBAY_ZONE_TLS", None) or {}).get(zone)


def _connect_zone(zone: str, *, timeout: float | None) -> docker.DockerClient:
    """A client of a zone's engine, over TLS when the zone has a MODELBAY_ZONE_TLS folder."""
    return _connect(settings.MODELBAY_ZONES[zone], timeout=timeout, tls_dir=_tls_dir(zone))


def _connect(endpoint: str, *, timeout: float | None, tls_dir: Path | None = None) -> docker.DockerClient:
    """A client of the engine at ``endpoint``; empty means DOCKER_HOST or the local socket.

    With ``tls_dir`` (ca.pem, cert.pem, key.pem), the engine is called at ``https://`` with
    that client certificate and must show a certificate of that CA. A network endpoint
    without it is refused here too, whatever the settings let through."""
    timeout = int(timeout) if timeout is not None else None
    scheme, _, address = endpoint.partition("://")
    if scheme.lower() in NETWORK_SCHEMES:
        if tls_dir is None:
            # An engine error: the zone is reported unreachable with this reason.
            raise DockerException(
                f"the Docker engine at {endpoint} is on the network and its zone has no MODELBAY_ZONE_TLS "
                "folder: plain-text tcp is refused"
            )
        tls = TLSConfig(
            client_cert=(str(tls_dir / "cert.pem"), str(tls_dir / "key.pem")),
            ca_cert=str(tls_dir / "ca.pem"),
            verify=True,
        )
        client = docker.DockerClient(
            base_url=f"https://{address}", tls=tls, timeout=timeout, version=MINIMUM_DOCKER_API_VERSION
        )
        # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace a session's CA file
        # (psf/requests#3829): the engine is checked against its zone's ca.pem only, and is
        # called directly (no proxy from the environment). Then the API version is asked
        # for, as the SDK does by itself when no version is given.
        client.api.trust_env = False
        client.api._version = client.api._retrieve_server_version()
        return client
    if endpoint:
        return docker.DockerClient(base_url=endpoint, timeout=timeout)
    return docker.from_env(timeout=timeout)


def _tar(files: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    buffer.seek(0)
    return buffer


def _created_at(value: str | int | float) -> float:
    """A container's creation time: epoch seconds in listings, RFC 3339 in inspects."""
    if isinstance(value, (int, float)):
        return float(value)
    return datetime.fromisoformat(value[:26].rstrip("Z") + "+00:00").timestamp()
