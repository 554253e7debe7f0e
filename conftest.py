"""Fixtures shared by every app's tests: organizations, users, API clients per role,
a real Celery worker, and a clean slate of runtime processes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from accounts import services as account_services
from accounts.tests.factories import MembershipFactory, OrganizationFactory, UserFactory

REPO = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _fresh_caches(settings):
    """Each test starts with empty in-process and shared caches."""
    from django.core.cache import cache

    from accounts import authentication
    from inference import routing

    cache.clear()
    authentication._key_cache.clear()
    authentication._last_touched.clear()
    routing._routes.clear()
    routing._suspects.clear()


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


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker, tmp_path_factory):
    """A real ``celery worker -B`` process (with beat) on the test database and broker."""
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    schedule = log_path.parent / "beat-schedule"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "modelbay", "worker", "-B",
                "--pool=threads", "--concurrency=4", "--loglevel=INFO", "-s", str(schedule),
            ],
            cwd=REPO, env=_worker_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while b"ready." not in log_path.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the Celery worker did not start:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.2)
    process.log_path = log_path
    yield process
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def worker(celery_worker_process, transactional_db):
    """Integration tests: data is committed so the worker sees it; runtimes are cleaned up."""
    from controlplane.models import Service

    yield celery_worker_process
    Service.objects.all().delete()  # first, so that reconcile does not restart what we stop
    _stop_all_runtimes()


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
    _stop_all_runtimes()


# --- models ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def digits_model(tmp_path_factory):
    """The demo digits classifier and its ONNX file: ``(path, classifier)``."""
    from controlplane.demo import build_digits_onnx

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
