"""Fixtures shared by every app's tests: organizations, users, API clients per role,
a real Celery worker, and a clean slate of runtime processes."""

import ipaddress
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from rest_framework.test import APIClient

from accounts import services as account_services
from accounts.tests.factories import MembershipFactory, OrganizationFactory, UserFactory

REPO = Path(__file__).resolve().parent


class OneIterationPasswordHasher(PBKDF2PasswordHasher):
    """The test users' passwords, hashed once rather than Django's million times (0.6 s a
    user on this machine, paid by nearly every test). The hashes are still
    ``pbkdf2_sha256``, so the site processes the tests start verify them as they are, and
    rehash them at full strength at the first sign-in."""

    iterations = 1


settings.PASSWORD_HASHERS = [f"{__name__}.OneIterationPasswordHasher"]

# --- markers: what a test uses, whichever file it is in ------------------------------------
# A test that asks (directly or through another fixture) for one of these carries the
# marker, so that `-m "not integration"` (or "not docker", "not browser") leaves out every
# test that needs a real worker, the Docker engine or Chromium, even one whose file forgot
# its `pytestmark`.
_MARKER_FIXTURES = {
    "integration": {"worker", "docker_worker", "own_engine_worker", "celery_worker_process"},
    "docker": {
        "docker_worker",
        "own_engine_worker",
        "docker_zones",
        "zone_b_engine",
        "own_docker_engine",
        "own_tls_docker_engine",
    },
    "browser": {"browser", "page"},
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        for marker, names in _MARKER_FIXTURES.items():
            if fixtures & names and item.get_closest_marker(marker) is None:
                item.add_marker(marker)


@pytest.fixture(autouse=True)
def _fresh_caches(settings):
    """Each test starts with empty in-process and shared caches."""
    from django.core.cache import cache

    from accounts import authentication
    from inference import routing
    from marketplace import access

    cache.clear()
    authentication._key_cache.clear()
    authentication._last_touched.clear()
    routing._routes.clear()
    routing._suspects.clear()
    access._cache.clear()


@pytest.fixture(autouse=True)
def _background_flushers(request):
    """The gateway stores figures and key use from a thread of its own. Inside a test's
    transaction, that thread's connection would miss the test's rows and its writes would
    outlive the rollback: only transactional tests run it; the others flush by hand.
    Between tests (no database access allowed) it rests, and so does its flush at exit."""
    from accounts import authentication
    from inference import metrics
    from marketplace import metering

    transactional = bool({"transactional_db", "live_server"} & set(request.fixturenames))
    flushers = (metrics.flusher, authentication.touch_flusher, metering.flusher)
    metering.meter.cache_clear()  # an earlier test's unstored calls
    metrics._pending.clear()  # counts of an earlier test's calls
    authentication._touches.clear()
    for flusher in flushers:
        flusher.paused = not transactional
    yield
    for flusher in flushers:
        flusher.paused = True


def _api_client(organization, *, scopes=("manage", "predict"), name="test"):
    api_key, full_key = account_services.api_key_create(organization=organization, name=name, scopes=list(scopes))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {full_key}")
    client.api_key = api_key
    client.full_key = full_key
    client.organization = organization
    return client


@pytest.fixture
def owner(db):
    """A user who owns an organization ("acme")."""
    membership = MembershipFactory(organization=OrganizationFactory(slug="acme", name="Acme"))
    return membership.user


@pytest.fixture
def organization(owner):
    return owner.memberships.get().organization


@pytest.fixture
def outsider_organization(db):
    """Another tenant, with its own owner."""
    return MembershipFactory(organization=OrganizationFactory(slug="globex", name="Globex")).organization


@pytest.fixture
def api(organization):
    """An API client with a manage+predict key of the owner's organization."""
    return _api_client(organization)


@pytest.fixture
def outsider_api(outsider_organization):
    """An API client of another organization."""
    return _api_client(outsider_organization, name="outsider")


@pytest.fixture
def predict_only_api(organization):
    return _api_client(organization, scopes=("predict",), name="predict-only")


@pytest.fixture
def manage_only_api(organization):
    return _api_client(organization, scopes=("manage",), name="manage-only")


@pytest.fixture
def own_redis(tmp_path):
    """A Redis of the test's own on a free port (tests/own_services.py), to stop and start
    under load: never the machine's shared one."""
    from tests.own_services import OwnRedis

    server = OwnRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_api_client():
    return _api_client


@pytest.fixture
def user_factory(db):
    return UserFactory


# --- integration: a real Celery worker and real runtimes --------------------------------
def _worker_env() -> dict[str, str]:
    """The worker talks to the test database pytest-django created."""
    db = settings.DATABASES["default"]
    env = dict(os.environ)
    if db["ENGINE"].endswith("postgresql"):
        env["DATABASE_URL"] = (
            f"postgres://{db['USER'] or ''}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
    else:
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    env["MODELBAY_RECONCILE_INTERVAL"] = "1"
    env["MODELBAY_ORPHAN_GRACE_S"] = "2"
    env["PYTHONUNBUFFERED"] = "1"
    return env


class WorkerProcess:
    """A real ``celery worker -B`` process (with beat) on the test database and broker.

    Tests may stop and start it (a worker outage), and the Docker tests run it with the
    docker backend: ``ensure(backend)`` restarts it when the backend differs.
    """

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.process: subprocess.Popen | None = None
        self.backend: str | None = None
        self.extra_env: dict[str, str] = {}
        self.log_path = log_dir / "worker.log"

    def start(self, backend: str = "local", **extra_env: str) -> None:
        assert self.process is None, "the worker is already running"
        env = {**_worker_env(), **extra_env, "MODELBAY_RUNTIME_BACKEND": backend}
        self.log_path.write_bytes(b"")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "modelbay", "worker", "-B",
                    "--pool=threads", "--concurrency=4", "--loglevel=INFO",
                    "-s", str(self.log_dir / "beat-schedule"),
                ],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.backend, self.extra_env = backend, extra_env
        deadline = time.monotonic() + 60
        while b"ready." not in self.log_path.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Celery worker did not start:\n{self.log_path.read_text()[-4000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def ensure(self, backend: str, **extra_env: str) -> None:
        """Running, with this backend and environment."""
        if self.process is not None and (
            (self.backend, self.extra_env) != (backend, extra_env) or self.process.poll() is not None
        ):
            self.stop()
        if self.process is None:
            self.start(backend, **extra_env)


_session_worker: list[WorkerProcess] = []


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker, tmp_path_factory):
    process = WorkerProcess(tmp_path_factory.mktemp("worker"))
    _session_worker.append(process)
    yield process
    process.stop()


_WORKER_FIXTURES = {"worker", "docker_worker", "celery_worker_process"}


@pytest.fixture(autouse=True)
def _no_worker_unless_asked(request):
    """A test that does not ask for the worker runs without one: otherwise a worker left
    running by an earlier test would provision (or flush) this test's rows behind its back."""
    if _session_worker and not _WORKER_FIXTURES & set(request.fixturenames):
        _session_worker[0].stop()


DEFAULT_ZONES = dict(settings.MODELBAY_ZONES)


def _use_backend(name: str, zones: dict[str, str] | None = None) -> None:
    """Make this (the test) process use a runtime backend and zones, as the worker does."""
    from controlplane.backends import get_backend

    settings.MODELBAY_RUNTIME_BACKEND = name
    settings.MODELBAY_ZONES = zones or DEFAULT_ZONES
    get_backend.cache_clear()


def _delete_all_services() -> None:
    """Delete every service (and the listings that protect them) while the worker may be in
    a pass over one: a deadlock between the two is retried, as the database asks, and so is
    a row the worker added meanwhile (an autoscaler decision: the foreign key refuses the commit)."""
    from django.db import IntegrityError, OperationalError, transaction

    from controlplane.models import Service
    from marketplace.models import Listing

    for attempt in range(5):
        try:
            with transaction.atomic():
                Listing.objects.all().delete()
                Service.objects.all().delete()
            return
        except (OperationalError, IntegrityError):
            if attempt == 4:
                raise
            time.sleep(0.5)


@pytest.fixture
def worker(celery_worker_process, transactional_db):
    """Integration tests: data is committed so the worker sees it; runtimes are cleaned up."""

    _use_backend("local")
    celery_worker_process.ensure("local")
    yield celery_worker_process
    _delete_all_services()  # first, so that reconcile does not restart what we stop
    _stop_all_runtimes()


DOCKER_SOCKET = Path("/var/run/docker.sock")


class UnixSocketProxy:
    """Forwards a unix socket to the Docker engine's; ``stop()`` cuts every connection
    and the socket itself, as an engine that went away would."""

    def __init__(self, path: Path, target: Path):
        self.path, self.target = path, target
        self.server: socket.socket | None = None
        self.connections: list[socket.socket] = []

    def start(self) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(self.path))
        self.server.listen(64)
        threading.Thread(target=self._accept, args=(self.server,), daemon=True).start()

    def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()
        self.path.unlink(missing_ok=True)
        for connection in self.connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()
        self.connections.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # stopped
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(str(self.target))
            except OSError:  # the engine itself is down
                client.close()
                upstream.close()
                continue
            self.connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass


@pytest.fixture(scope="session")
def zone_b_engine(tmp_path_factory) -> UnixSocketProxy:
    proxy = UnixSocketProxy(tmp_path_factory.mktemp("zone-b") / "docker.sock", DOCKER_SOCKET)
    proxy.start()
    yield proxy
    proxy.stop()


def _require_host_engine_and_image() -> None:
    """This machine's engine answers and has the runtime image, or the test fails saying so."""
    import docker

    try:
        client = docker.from_env()
        client.images.get(settings.MODELBAY_RUNTIME_IMAGE)
        client.close()
    except docker.errors.DockerException as error:
        pytest.fail(
            f"The Docker tests need a running engine and the runtime image {settings.MODELBAY_RUNTIME_IMAGE} "
            f"(`make test` starts and builds both as root): {error}"
        )


@pytest.fixture(scope="session")
def docker_zones(zone_b_engine) -> dict[str, str]:
    """Two zones on this machine's engine, each through its own endpoint; zone-b's goes
    through a proxy that a test may stop (an engine outage) and start again."""
    _require_host_engine_and_image()
    return {"zone-a": f"unix://{DOCKER_SOCKET}", "zone-b": f"unix://{zone_b_engine.path}"}


@pytest.fixture
def docker_worker(celery_worker_process, transactional_db, docker_zones):
    """Like ``worker``, with every instance a container of the Docker engine."""

    _use_backend("docker", docker_zones)
    celery_worker_process.ensure("docker", MODELBAY_ZONES=zones_setting(docker_zones))
    yield celery_worker_process
    _delete_all_services()
    _stop_all_runtimes()
    _use_backend("local")


class OwnDockerEngine:
    """A Docker engine of a test's own: a second ``dockerd`` beside this machine's, with its
    own API socket, data root, exec root, pid file, containerd (and containerd namespace)
    and bridge, all under one temporary folder. A test may stop it (SIGTERM: it stops its
    containers and exits, as an engine restart does) and start it again on the same data
    root without ever signalling the machine's engine or touching its containers, or kill
    it as a zone is lost (``kill()``: everything it runs dies at once).

    Its containers publish ports on 127.0.0.1 like the machine's (docker-proxy, over the
    engine's own bridge); it leaves iptables alone (``--iptables=false``), so the machine's
    engine's rules are never rewritten. Needs root, ``dockerd`` and ``ip``.

    With ``tls=True`` it also listens on ``tcp://127.0.0.1:<free port>`` (``tcp_url``) with
    ``--tlsverify``, as an engine on another host would: certificates made here with
    ``openssl`` (a CA of the test's own; the engine's, for 127.0.0.1; a client's). The
    client's folder (``client_tls_dir``: ca.pem, cert.pem, key.pem, the docker CLI's
    layout) is what MODELBAY_ZONE_TLS names; ``rogue_tls_dir`` holds a client certificate
    of another CA, which the engine must refuse. The unix socket stays as it is.
    """

    def __init__(self, root: Path, *, tls: bool = False):
        self.root = root
        self.tls = tls
        self.tls_dir = root / "tls"
        self.client_tls_dir = self.tls_dir / "client"
        self.rogue_tls_dir = self.tls_dir / "rogue"
        self.tcp_port: int | None = None
        self.socket = root / "docker.sock"
        self.data_root = root / "data"
        self.exec_root = root / "exec"
        self.pidfile = root / "docker.pid"
        self.log_path = root / "dockerd.log"
        self.config_file = root / "daemon.json"  # empty: the machine's /etc/docker/daemon.json does not apply
        # An interface name (15 characters at most) as unique as the folder's.
        self.bridge = "mbt" + "".join(c if c.isalnum() else "0" for c in root.name[-8:].lower())
        self.subnet: ipaddress.IPv4Network | None = None
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def tcp_url(self) -> str:
        assert self.tls and self.tcp_port, "the test engine listens on tcp only with tls=True"
        return f"tcp://127.0.0.1:{self.tcp_port}"

    # --- TLS ----------------------------------------------------------------------------
    def make_certificates(self) -> None:
        """A CA, the engine's certificate (127.0.0.1, localhost), a client's, and a rogue
        client's signed by another CA; all valid for two days."""
        folder = self.tls_dir
        for path in (folder, self.client_tls_dir, self.rogue_tls_dir):
            path.mkdir(parents=True, exist_ok=True)
        _make_ca(folder / "ca.pem", folder / "ca-key.pem", "modelbay test CA")
        _make_ca(folder / "rogue-ca.pem", folder / "rogue-ca-key.pem", "someone else's CA")
        _sign(folder / "server-cert.pem", folder / "server-key.pem", folder / "ca.pem", folder / "ca-key.pem",
              "127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")  # fmt: skip
        client_ext = "extendedKeyUsage=clientAuth\n"
        _sign(self.client_tls_dir / "cert.pem", self.client_tls_dir / "key.pem", folder / "ca.pem",
              folder / "ca-key.pem", "modelbay worker", client_ext)  # fmt: skip
        _sign(self.rogue_tls_dir / "cert.pem", self.rogue_tls_dir / "key.pem", folder / "rogue-ca.pem",
              folder / "rogue-ca-key.pem", "modelbay worker", client_ext)  # fmt: skip
        for client in (self.client_tls_dir, self.rogue_tls_dir):
            shutil.copy(folder / "ca.pem", client / "ca.pem")  # both trust the engine's certificate

    # --- the bridge ---------------------------------------------------------------------
    def create_bridge(self) -> None:
        """The engine's bridge, with the first address of a private /24 nothing here uses."""
        subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True, capture_output=True)
        for third in random.sample(range(256), 256):
            subnet = ipaddress.ip_network(f"10.213.{third}.0/24")
            if any(subnet.overlaps(used) for used in _networks_in_use()):
                continue
            gateway = f"{next(subnet.hosts())}/{subnet.prefixlen}"
            subprocess.run(["ip", "addr", "add", gateway, "dev", self.bridge], check=True, capture_output=True)
            # Another run may have picked the same /24 at the same moment: then try another.
            if sum(subnet.overlaps(used) for used in _networks_in_use(addresses_only=True)) == 1:
                self.subnet = subnet
                subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True, capture_output=True)
                return
            subprocess.run(["ip", "addr", "del", gateway, "dev", self.bridge], check=False, capture_output=True)
        raise RuntimeError("no free private /24 in 10.213.0.0/16 for the test engine's bridge")

    def remove_bridge(self) -> None:
        subprocess.run(["ip", "link", "del", self.bridge], check=False, capture_output=True)

    # --- the daemon ---------------------------------------------------------------------
    def start(self, timeout_s: float = 60) -> None:
        import docker

        assert self.process is None, "the test engine is already running"
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            pytest.fail("This test starts a Docker engine of its own and needs `dockerd` (Debian's docker.io).")
        for path in (self.data_root, self.exec_root):
            path.mkdir(parents=True, exist_ok=True)
        if not self.config_file.exists():
            self.config_file.write_text("{}\n")
        # containerd allows single [._-] between letters and digits only: mkdtemp's "_" may repeat.
        namespace = "modelbay-test-" + "".join(c if c.isalnum() else "0" for c in self.root.name[-8:])
        tls_options = []
        if self.tls:
            if not (self.tls_dir / "server-cert.pem").exists():
                self.make_certificates()
            if self.tcp_port is None:  # the same port across a stop and a start
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind(("127.0.0.1", 0))
                    self.tcp_port = sock.getsockname()[1]
            tls_options = [
                f"--host=tcp://127.0.0.1:{self.tcp_port}",
                "--tlsverify",
                f"--tlscacert={self.tls_dir / 'ca.pem'}",
                f"--tlscert={self.tls_dir / 'server-cert.pem'}",
                f"--tlskey={self.tls_dir / 'server-key.pem'}",
            ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    dockerd,
                    f"--host={self.url}",
                    f"--data-root={self.data_root}",
                    f"--exec-root={self.exec_root}",
                    f"--pidfile={self.pidfile}",
                    f"--config-file={self.config_file}",
                    f"--bridge={self.bridge}",
                    "--iptables=false", "--ip-masq=false", "--ip-forward=false",
                    f"--containerd-namespace={namespace}",
                    f"--containerd-plugins-namespace={namespace}-plugins",
                    *tls_options,
                ],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client = docker.DockerClient(base_url=self.url, timeout=5)
                try:
                    client.ping()
                    return
                finally:
                    client.close()
            except docker.errors.DockerException:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-4000:]
                self.stop()
                raise RuntimeError(f"the test's own dockerd did not start:\n{tail}")
            time.sleep(0.25)

    def stop(self, timeout_s: float = 60) -> None:
        """SIGTERM to this engine's dockerd (it stops its containers), then wait for it."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                raise AssertionError(f"the test engine's dockerd did not stop within {timeout_s:.0f} s")

    def kill(self) -> None:
        """SIGKILL to the engine and everything it runs, all frozen first so that none sees
        another die: dockerd, its containerd, the shims and the containers' processes. The
        containers' sockets and mounts are left as they were; ``start()`` brings the engine
        back on the same data root, where it finds its containers dead."""
        import psutil

        process, self.process = self.process, None
        assert process is not None and process.poll() is None, "the test engine is not running"
        victims = self._processes()
        for signalled in (psutil.Process.suspend, psutil.Process.kill):
            for victim in victims:
                try:
                    signalled(victim)
                except psutil.Error:
                    pass
        psutil.wait_procs(victims, timeout=10)
        process.wait(timeout=10)

    def load_image(self, image: str, *, source: str) -> None:
        """``docker -H source save image | docker -H <this engine> load``."""
        docker_cli = shutil.which("docker")
        if docker_cli is None:
            pytest.fail("Loading the runtime image into the test engine needs the `docker` command.")
        saver = subprocess.Popen([docker_cli, "-H", source, "save", image], stdout=subprocess.PIPE)
        loader = subprocess.run(
            [docker_cli, "-H", self.url, "load", "-q"], stdin=saver.stdout, capture_output=True, timeout=600
        )
        saver.stdout.close()
        if saver.wait(timeout=60) != 0 or loader.returncode != 0:
            raise RuntimeError(f"loading {image} into the test engine failed: {loader.stderr.decode()[-2000:]}")

    # --- everything gone --------------------------------------------------------------
    def remove(self) -> None:
        """The daemon, whatever it left running or mounted, its bridge and its folder: each
        step is tried whatever happened to the one before."""
        steps = (self.stop, self._kill_leftovers, self._unmount_leftovers, self.remove_bridge,
                 lambda: shutil.rmtree(self.root, ignore_errors=True))  # fmt: skip
        for step in steps:
            try:
                step()
            except Exception as error:  # noqa: BLE001 - the next steps run regardless
                print(f"removing the test engine: {error}", file=sys.stderr)

    def _kill_leftovers(self) -> None:
        """Processes this engine started that outlived it."""
        import psutil

        leftovers = self._processes()
        for process in leftovers:
            try:
                process.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(leftovers, timeout=10)

    def _processes(self) -> list:
        """This engine's processes (``psutil.Process``): dockerd, its containerd and shims
        (their command lines name this engine's own folder), docker-proxies (they name an
        address on this engine's own bridge), and all their descendants (the containers'
        processes)."""
        import psutil

        def ours(cmdline: list[str]) -> bool:
            if any(str(self.root) in arg for arg in cmdline):
                return True
            if "-container-ip" in cmdline[:-1] and self.subnet is not None:
                try:
                    return ipaddress.ip_address(cmdline[cmdline.index("-container-ip") + 1]) in self.subnet
                except ValueError:
                    return False
            return False

        found = {p.pid: p for p in psutil.process_iter(["cmdline"]) if ours(p.info["cmdline"] or [])}
        for process in list(found.values()):
            try:
                found.update((child.pid, child) for child in process.children(recursive=True))
            except psutil.Error:
                pass
        return list(found.values())

    def _unmount_leftovers(self) -> None:
        root = str(self.root)
        mounts = []
        with open("/proc/self/mountinfo") as mountinfo:
            for line in mountinfo:
                point = line.split()[4].encode().decode("unicode_escape")  # \040 for a space, ...
                if point == root or point.startswith(root + "/"):
                    mounts.append(point)
        for point in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("The test engine's TLS certificates are made with the `openssl` command.")
    subprocess.run([openssl, *args], check=True, capture_output=True)


def _make_ca(cert: Path, key: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
             "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip


def _sign(cert: Path, key: Path, ca_cert: Path, ca_key: Path, name: str, extensions: str) -> None:
    """A key and a certificate for ``name`` signed by the CA, with these v3 extensions."""
    request, extfile = cert.with_suffix(".csr"), cert.with_suffix(".ext")
    extfile.write_text(extensions)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(request), "-subj", f"/CN={name}")
    _openssl("x509", "-req", "-in", str(request), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(extfile))  # fmt: skip
    request.unlink()
    extfile.unlink()


def _networks_in_use(*, addresses_only: bool = False) -> list[ipaddress.IPv4Network]:
    """The IPv4 networks of this machine's interfaces (and, unless addresses_only, routes)."""
    networks = []
    output = subprocess.run(["ip", "-4", "-o", "addr", "show"], check=True, capture_output=True, text=True).stdout
    for line in output.splitlines():
        fields = line.split()
        if "inet" in fields:
            networks.append(ipaddress.ip_interface(fields[fields.index("inet") + 1]).network)
    if not addresses_only:
        output = subprocess.run(["ip", "-4", "route", "show"], check=True, capture_output=True, text=True).stdout
        for line in output.splitlines():
            destination = line.split()[0] if line.split() else "default"
            if destination != "default":
                networks.append(ipaddress.ip_network(destination, strict=False))
    return networks


@pytest.fixture
def own_docker_engine():
    """A Docker engine of this test's own (see OwnDockerEngine), with the runtime image
    loaded from this machine's engine; everything of it is removed afterwards."""
    yield from _own_engine(tls=False)


@pytest.fixture
def own_tls_docker_engine():
    """Like ``own_docker_engine``, also listening on tcp with ``--tlsverify``, as an engine
    on another host (``tcp_url``, ``client_tls_dir``, ``rogue_tls_dir``)."""
    yield from _own_engine(tls=True)


def _own_engine(*, tls: bool):
    if os.geteuid() != 0:
        pytest.fail("This test starts a Docker engine of its own: it needs root (as `make test` runs on CI).")
    _require_host_engine_and_image()
    # A short folder: the engine's and its containerd's unix sockets live under it (108 bytes at most).
    engine = OwnDockerEngine(Path(tempfile.mkdtemp(prefix="mbe-", dir="/tmp")), tls=tls)
    try:
        engine.create_bridge()
        engine.start()
        host = os.environ.get("DOCKER_HOST") or f"unix://{DOCKER_SOCKET}"
        engine.load_image(settings.MODELBAY_RUNTIME_IMAGE, source=host)
        yield engine
    finally:
        engine.remove()


@pytest.fixture
def own_engine_worker(celery_worker_process, transactional_db, own_docker_engine):
    """Like ``docker_worker``, with both zones on the test's own engine, which the test may
    stop and start: an outage of a whole engine, this machine's engine untouched."""
    yield from worker_on_zones(
        celery_worker_process, {"zone-a": own_docker_engine.url, "zone-b": own_docker_engine.url}
    )


def worker_on_zones(process: WorkerProcess, zones: dict[str, str], **extra_env: str):
    """The worker (and this process) on the docker backend with these zones; afterwards every
    service and runtime gone, and the worker stopped, since a zone's engine is about to go."""
    _use_backend("docker", zones)
    process.ensure("docker", MODELBAY_ZONES=zones_setting(zones), **extra_env)
    yield process
    try:
        _delete_all_services()
        _stop_all_runtimes()
    finally:
        process.stop()
        _use_backend("local")


def zones_setting(zones: dict[str, str]) -> str:
    """MODELBAY_ZONES for these zones: ``zone=endpoint`` pairs."""
    return ",".join(f"{zone}={endpoint}" for zone, endpoint in zones.items())


def wait_for(condition, *, timeout_s: float = 90, interval_s: float = 0.25, what: str = "condition"):
    """Poll until ``condition()`` returns something truthy; return it. Fails after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def _stop_all_runtimes() -> None:
    from controlplane.backends import get_backend

    backend = get_backend()
    for instance_id in backend.list():
        backend.stop(instance_id)


@pytest.fixture(scope="session", autouse=True)
def _no_runtime_left_behind():
    yield
    _use_backend("docker")  # an engine that is not running has nothing to stop
    _stop_all_runtimes()
    _use_backend("local")
    _stop_all_runtimes()


# --- models ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def digits_model(tmp_path_factory):
    """The demo digits classifier and its ONNX file: ``(path, classifier)``."""
    from demo.digits import build_digits_onnx

    path = tmp_path_factory.mktemp("digits") / "digits.onnx"
    classifier = build_digits_onnx(path)
    return path, classifier


@pytest.fixture
def digits_upload(digits_model):
    """A fresh upload of the digits ONNX file, as a multipart client would send it."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("digits.onnx", digits_model[0].read_bytes(), content_type="application/octet-stream")


def make_zip(files: dict[str, str | bytes]) -> bytes:
    """A zip archive of ``{name: content}``."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def python_package(predictor_source: str, manifest_extra: str = "") -> bytes:
    """A zip python model package whose module ``predictor`` defines class ``Model``."""
    manifest = "framework: python\nentrypoint: predictor:Model\n" + manifest_extra
    return make_zip({"modelbay.yaml": manifest, "predictor.py": predictor_source})
