"""The control plane survives its dependencies (issue 15, point 3): the worker SIGKILLed
mid-provision and mid-release, the broker (Redis) restarted around a deploy, PostgreSQL
restarted mid-deploy. Each case converges: the service ends ready, as many instances as
desired (rows and real processes alike: no duplicate, no orphan), nothing left starting,
and a release goes on from the step it was on.

Real processes throughout: a Celery worker with beat, runtimes in their sandboxes, and a
Redis and a PostgreSQL of the test's own (tests/own_services.py) for the faults, never the
machine's shared ones.
"""

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import psutil
import pytest
from django.db import transaction

from conftest import REPO, WorkerProcess, _delete_all_services, _stop_all_runtimes, _use_backend, make_zip, wait_for
from controlplane.backends import get_backend
from controlplane.backends.local import _is_wrapper
from controlplane.models import Deployment, Instance, Release, Service
from tests.own_services import OwnPostgres, OwnRedis
from tests.support import Caller, deploy, upload, wait_status

pytestmark = pytest.mark.integration

# load() takes a few seconds: a window in which the worker, the broker or the database fails.
SLOW_LOAD = """
import time

class Model:
    def load(self, model_dir):
        time.sleep(float(open(model_dir + "/load_s.txt").read()))
        self.version = open(model_dir + "/version.txt").read().strip()

    def predict(self, inputs):
        return [self.version for _ in inputs]
"""


def _package(version: str = "v1", load_s: float = 4) -> bytes:
    return make_zip(
        {
            "modelbay.yaml": "framework: python\nentrypoint: predictor:Model\n",
            "predictor.py": SLOW_LOAD,
            "version.txt": version,
            "load_s.txt": str(load_s),
        }
    )


def _add_version(api, content: bytes) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = api.post("/api/v1/models/m/versions", {"file": SimpleUploadedFile("m.zip", content)}, format="multipart")
    assert response.status_code == 201, response.content


# --- what runs -------------------------------------------------------------------------------
def _runtimes() -> dict[str, int]:
    """Instance id -> how many runtime processes (not sandbox wrappers) run for it."""
    counts: dict[str, int] = {}
    for instance_id, processes in get_backend()._processes().items():
        for process in processes:
            try:
                if not _is_wrapper(process.cmdline()) and process.status() != psutil.STATUS_ZOMBIE:
                    counts[instance_id] = counts.get(instance_id, 0) + 1
            except psutil.Error:
                pass
    return counts


def _converged(live: set[str], expected: int) -> bool:
    """``expected`` live instances, each with exactly one runtime, and no other runtime."""
    runtimes = _runtimes()
    return len(live) == expected and set(runtimes) == live and all(n == 1 for n in runtimes.values())


def _wait_converged(slug: str, expected: int, *, since: float, timeout_s: float = 60) -> tuple[float, list[dict]]:
    """The service ready with ``expected`` ready instances and exactly their processes;
    returns the seconds since ``since`` and the instances."""

    def done():
        service = Service.objects.filter(slug=slug).first()
        if service is None or service.status != "ready":
            return None
        rows = list(Instance.objects.filter(deployment__service=service).values("id", "status", "restarts"))
        if any(row["status"] != "ready" for row in rows):
            return None
        return rows if _converged({row["id"] for row in rows}, expected) else None

    rows = wait_for(done, timeout_s=timeout_s, interval_s=0.2, what=f"{slug}: ready, {expected} instances and runtimes")
    return time.monotonic() - since, rows


def _sigkill(worker: WorkerProcess) -> None:
    """SIGKILL the worker and its beat (its process group): no shutdown, no ack, no cleanup."""
    os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait()
    worker.process = None


# --- 1. the worker SIGKILLed mid-provision ---------------------------------------------------
@pytest.mark.timeout(120)
def test_worker_killed_while_instances_load_converges_without_duplicates(worker, api):
    upload(api, "slow", "slow.zip", _package(load_s=5))
    deploy(api, "slow", "slow", replicas=2)
    starting = wait_for(
        lambda: set(Instance.objects.filter(status="starting").values_list("id", flat=True)) if
        Instance.objects.filter(status="starting").count() == 2 else None,
        timeout_s=30, what="2 instances starting",
    )  # fmt: skip
    _sigkill(worker)
    killed_at = time.monotonic()
    # The runtimes outlive the worker (their own sessions) and keep loading.
    assert set(_runtimes()) == starting
    assert Service.objects.get().status == "provisioning"
    time.sleep(1)
    worker.start("local")
    seconds, rows = _wait_converged("slow", 2, since=killed_at)
    assert {row["id"] for row in rows} == starting  # the same instances, none added
    print(
        f"\nworker SIGKILLed while 2 instances loaded: ready {seconds:.1f} s after the kill; "
        f"instances {sorted(starting)} kept, restarts {[row['restarts'] for row in rows]}"
    )


@pytest.mark.timeout(120)
def test_worker_killed_inside_a_pass_after_it_started_runtimes_leaves_no_orphan_nor_stranger(worker, api):
    """A pass is one transaction: a worker killed after it started runtimes but before it
    committed leaves a runtime no row owns (a new instance) and one whose credential its
    row does not know (an instance started again). To stop the pass at that point for
    sure, the test holds the row of the instance it starts again: the pass has started
    version 1's new instance and version 2's dead one, and waits to write the latter."""
    from controlplane import services

    upload(api, "m", "m.zip", _package("v1", load_s=0))
    _add_version(api, _package("v2", load_s=0))
    deploy(api, "m", "m", version=1, replicas=1)
    wait_status(api, "m")
    services.version_deploy(service=Service.objects.get(), version=2)
    wait_for(lambda: Instance.objects.filter(status="ready").count() == 2, timeout_s=30, what="version 2 ready")
    worker.stop()  # gracefully: the instances run on
    restarted = Instance.objects.get(deployment__model_version__version=2)
    _kill_runtime(restarted.id)
    Service.objects.update(replicas=2)
    committed = set(Instance.objects.values_list("id", flat=True))
    with transaction.atomic():
        Instance.objects.select_for_update().get(pk=restarted.pk)
        worker.start("local")  # beat's first reconcile pass

        def started():
            runtimes = set(_runtimes())
            return runtimes - committed if restarted.id in runtimes and runtimes - committed else None

        uncommitted = wait_for(started, timeout_s=30, what="the pass to start both runtimes")
        time.sleep(0.5)
        assert set(Instance.objects.values_list("id", flat=True)) == committed  # not committed
        _sigkill(worker)
        killed_at = time.monotonic()
    assert uncommitted | {restarted.id} <= set(_runtimes())  # the runtimes outlive the pass
    worker.start("local")
    seconds, rows = _wait_converged("m", 4, since=killed_at)
    assert not uncommitted & {row["id"] for row in rows}
    restarts = next(row["restarts"] for row in rows if row["id"] == restarted.id)
    print(
        f"\nworker SIGKILLed inside a pass, runtime {sorted(uncommitted)} started without a committed row and "
        f"{restarted.id} started again with an uncommitted credential: orphan removed, {restarted.id} started "
        f"again (restarts {restarts}), 4 instances ready {seconds:.1f} s after the kill (orphan grace 2 s)"
    )


def _kill_runtime(instance_id: str) -> None:
    for process in get_backend()._processes()[instance_id]:
        if not _is_wrapper(process.cmdline()):
            process.kill()
    wait_for(lambda: instance_id not in _runtimes(), timeout_s=10, what=f"{instance_id}'s runtime to exit")


# --- 1. the worker SIGKILLed mid-release -----------------------------------------------------
def _release(release_id: int) -> Release:
    return Release.objects.get(pk=release_id)


@pytest.mark.timeout(150)
def test_worker_killed_at_each_stage_of_a_release_resumes_it_where_it_was(worker, api, settings):
    settings.MODELBAY_RELEASE_MIN_INTERVAL_S = 1  # steps of seconds, for a test
    upload(api, "m", "m.zip", _package("v1", load_s=0))
    _add_version(api, _package("v2", load_s=4))
    deploy(api, "m", "m", version=1, replicas=2)
    wait_status(api, "m")
    # The analysis judges a step on calls to both versions: a caller throughout. What is
    # tested is where the release resumes, not the judging: any latency passes.
    judged_on = {"min_calls": 1, "max_p99_ratio": 100}
    body = api.post(
        "/api/v1/services/m/releases",
        {"version": 2, "steps": [10, 50, 100], "interval_s": 3, **judged_on},
        format="json",
    ).json()
    release_id = body["id"]
    seen = []
    with Caller(api, "m"):
        # a) while version 2's instances load (the release is starting)
        wait_for(
            lambda: Instance.objects.filter(deployment__model_version__version=2, status="starting").count() == 2,
            timeout_s=30, what="version 2's instances starting",
        )  # fmt: skip
        _sigkill(worker)
        assert _release(release_id).status == "starting"
        time.sleep(1)
        killed_at = time.monotonic()
        worker.start("local")
        wait_for(lambda: _release(release_id).step == 0, timeout_s=40, what="the release's first step")
        seen.append(f"starting -> step 0 (10 %) {time.monotonic() - killed_at:.1f} s after the restart")

        # b) at its first step, past the step's interval while the worker is down
        _sigkill(worker)
        step_started_at = _release(release_id).step_started_at
        time.sleep(4)  # longer than interval_s: the step is due when the worker comes back
        release = _release(release_id)
        assert (release.status, release.step, release.step_started_at) == ("rolling", 0, step_started_at)
        killed_at = time.monotonic()
        worker.start("local")
        wait_for(lambda: _release(release_id).step == 1, timeout_s=30, what="the release's second step")
        release = _release(release_id)
        assert release.status == "rolling"  # one step on, not to the end
        seen.append(f"step 0 -> step 1 (50 %) {time.monotonic() - killed_at:.1f} s after the restart")

        # c) promoted, the old version's instances draining
        wait_for(lambda: _release(release_id).status == "promoted", timeout_s=30, what="the release promoted")
        _sigkill(worker)
        assert Deployment.objects.filter(model_version__version=1).exclude(retired_at=None).exists()
        time.sleep(3)  # past MODELBAY_DRAIN_S
        killed_at = time.monotonic()
        worker.start("local")
        seconds, rows = _wait_converged("m", 2, since=killed_at)
        seen.append(f"promoted, draining -> version 1 stopped {seconds:.1f} s after the restart")

    assert list(Deployment.objects.values_list("model_version__version", "weight")) == [(2, 100)]
    history = [(entry["action"], entry["weight"]) for entry in _release(release_id).history]
    assert history == [("started", 0), ("step", 10), ("step", 50), ("promoted", 100)], history
    print(f"\nworker SIGKILLed 3 times in a release: {'; '.join(seen)}; history {history}; instances {len(rows)}")


# --- 2. the broker restarted -----------------------------------------------------------------
@contextmanager
def _test_process_broker(url: str):
    """This process (the web's part: services enqueue after commit) sends to ``url``."""
    from celery import current_app

    app = current_app._get_current_object()  # the app controlplane.jobs sends with

    def reset(broker_url):
        # broker_url gives way to the CELERY_BROKER_URL of the environment; this one does not.
        app.conf.broker_write_url = broker_url
        app._pool = None
        app.amqp._producer_pool = None

    reset(url)
    try:
        yield
    finally:
        reset(None)


@pytest.fixture
def broker(tmp_path):
    redis = OwnRedis(tmp_path / "broker")
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture
def own_broker_worker(celery_worker_process, transactional_db, broker):
    """The worker (with beat) and this process on the test's own Redis as the broker."""
    _use_backend("local")
    with _test_process_broker(broker.url(0)):
        celery_worker_process.ensure("local", CELERY_BROKER_URL=broker.url(0))
        try:
            yield celery_worker_process
        finally:
            _delete_all_services()
            _stop_all_runtimes()
            celery_worker_process.stop()  # its broker goes with this test


@pytest.mark.timeout(120)
def test_a_deploy_sent_while_the_broker_is_down_converges_when_it_returns(own_broker_worker, broker, api):
    upload(api, "slow", "slow.zip", _package(load_s=1))
    broker.stop()
    sent = time.monotonic()
    response = api.post("/api/v1/services", {"name": "slow", "model": "slow", "replicas": 2}, format="json")
    assert response.status_code == 202, response.content  # recorded; the worker hears of it later
    time.sleep(2)
    assert (Service.objects.get().status, Instance.objects.count()) == ("provisioning", 0)
    broker.start()
    back = time.monotonic()
    seconds, rows = _wait_converged("slow", 2, since=back)
    assert own_broker_worker.process.poll() is None
    print(
        f"\ndeploy posted with the broker down ({back - sent:.1f} s): answered 202, ready {seconds:.1f} s after "
        f"the broker returned; instances {len(rows)}"
    )


@pytest.mark.timeout(120)
def test_a_provision_task_lost_with_the_broker_does_not_leave_the_service_stuck(own_broker_worker, broker, api):
    upload(api, "slow", "slow.zip", _package(load_s=1))
    own_broker_worker.stop()
    deploy(api, "slow", "slow", replicas=2)  # the task waits in the broker...
    broker.stop()  # ...which loses it (no snapshot, no AOF)
    broker.start()
    restarted = time.monotonic()
    own_broker_worker.start("local", CELERY_BROKER_URL=broker.url(0))
    seconds, rows = _wait_converged("slow", 2, since=restarted)
    print(
        f"\nprovision task lost with the broker: ready {seconds:.1f} s after the worker started; instances {len(rows)}"
    )


@pytest.mark.timeout(120)
def test_the_broker_restarted_mid_deploy_then_the_worker_goes_on(own_broker_worker, broker, api):
    upload(api, "slow", "slow.zip", _package(load_s=4))
    deploy(api, "slow", "slow", replicas=2)
    wait_for(lambda: Instance.objects.filter(status="starting").count() == 2, timeout_s=30, what="2 starting")
    broker.stop()
    time.sleep(2)
    broker.start()
    back = time.monotonic()
    seconds, rows = _wait_converged("slow", 2, since=back)
    assert own_broker_worker.process.poll() is None
    # The worker still takes tasks from the broker it reconnected to.
    scaled = time.monotonic()
    assert api.patch("/api/v1/services/slow", {"replicas": 3}, format="json").status_code == 202
    scale_s, rows = _wait_converged("slow", 3, since=scaled)
    print(
        f"\nbroker restarted mid-deploy: ready {seconds:.1f} s after it returned, instances 2; "
        f"scaled to 3 afterwards in {scale_s:.1f} s"
    )


# --- 3. PostgreSQL restarted mid-deploy ------------------------------------------------------
SEED = """
import json, sys
import django
django.setup()
from django.core.files.uploadedfile import SimpleUploadedFile
from accounts.models import Organization
from controlplane import services
from controlplane.models import Service

step = json.loads(sys.argv[1])
if step["do"] == "deploy":
    organization = Organization.objects.create(slug="acme", name="Acme")
    upload = SimpleUploadedFile("slow.zip", open(step["package"], "rb").read())
    services.model_create(organization=organization, name="slow", upload=upload)
    services.service_create(organization=organization, name="slow", model_slug="slow", replicas=step["replicas"])
else:
    services.service_update(service=Service.objects.get(slug="slow"), replicas=step["replicas"])
"""


def _manage(env: dict[str, str], *args: str) -> None:
    result = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


class OwnDatabase:
    """What the test reads of the own PostgreSQL's rows, through a connection of its own
    that it opens again after a restart."""

    def __init__(self, url: str):
        self.url, self.connection = url, None

    def query(self, sql: str, *params) -> list[tuple] | None:
        import psycopg2

        try:
            if self.connection is None or self.connection.closed:
                self.connection = psycopg2.connect(self.url, connect_timeout=2)
                self.connection.autocommit = True
            with self.connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall()
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            self.connection = None
            return None

    def close(self):
        if self.connection is not None:
            self.connection.close()


@pytest.fixture
def own_postgres():
    server = OwnPostgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.mark.timeout(180)
def test_postgres_restarted_mid_deploy_converges_and_the_worker_goes_on(own_postgres, broker, tmp_path):
    import psycopg2

    connection = psycopg2.connect(own_postgres.url())
    connection.autocommit = True
    connection.cursor().execute("CREATE DATABASE modelbay")
    connection.close()
    env = {
        **os.environ,
        "DATABASE_URL": own_postgres.url("modelbay"),
        "CELERY_BROKER_URL": broker.url(0),
        "DJANGO_SETTINGS_MODULE": "modelbay.settings",
    }
    _manage(env, "manage.py", "migrate", "--noinput", "-v", "0")
    package = tmp_path / "slow.zip"
    package.write_bytes(_package(load_s=4))
    worker = WorkerProcess(tmp_path)
    worker.start("local", DATABASE_URL=env["DATABASE_URL"], CELERY_BROKER_URL=env["CELERY_BROKER_URL"])
    database = OwnDatabase(own_postgres.url("modelbay"))
    try:
        _manage(env, "-c", SEED, json.dumps({"do": "deploy", "package": str(package), "replicas": 2}))

        def instances(status: str | None = None) -> set[str] | None:
            rows = database.query("SELECT id, status FROM controlplane_instance")
            return None if rows is None else {id for id, s in rows if status is None or s == status}

        wait_for(lambda: len(instances("starting") or ()) == 2, timeout_s=30, what="2 instances starting")
        own_postgres.stop("fast")  # sessions cut, as at a restart
        time.sleep(3)
        own_postgres.start()
        back = time.monotonic()

        def converged(expected: int):
            service = database.query("SELECT status FROM controlplane_service")
            ready = instances("ready")
            if service != [("ready",)] or ready is None or instances() != ready:
                return None
            return ready if _converged(ready, expected) else None

        ready = wait_for(lambda: converged(2), timeout_s=60, what="ready, 2 instances and their runtimes")
        seconds = time.monotonic() - back
        assert worker.process.poll() is None
        scaled = time.monotonic()
        _manage(env, "-c", SEED, json.dumps({"do": "scale", "replicas": 3}))
        wait_for(lambda: converged(3), timeout_s=60, what="scaled to 3")
        log = worker.log_path.read_text(errors="replace")
        errors = log.count("OperationalError") + log.count("InterfaceError")
        print(
            f"\nPostgreSQL restarted mid-deploy (down 3 s): ready {seconds:.1f} s after it returned, "
            f"instances {len(ready)}; scaled to 3 afterwards in {time.monotonic() - scaled:.1f} s; "
            f"database errors in the worker's log: {errors}"
        )
    finally:
        database.close()
        worker.stop()
        _stop_all_runtimes()
