"""`make run`: migrate, load the demo, start the worker and the web server, print how to use it.

Embedded defaults: SQLite, a filesystem Celery broker, the local runtime backend. With
MODELBAY_RUNTIME_BACKEND=docker, instances are containers of this machine's Docker engine
(started and given the runtime image here when needed). Set the variables of
docker-compose.yml for the production stack.
"""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PORT = os.environ.get("PORT", "8000")
HOST = os.environ.get("HOST", "127.0.0.1")
URL = f"http://{HOST}:{PORT}"
os.environ.setdefault("MODELBAY_SITE_URL", URL)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelbay.settings")
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))


def manage(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, check=True, stdout=subprocess.PIPE, text=True
    )
    return result.stdout


def start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=REPO, start_new_session=True)


def wait_ready(service: str, organization: str, timeout_s: float = 120) -> str:
    import django

    django.setup()
    from controlplane.models import Service

    deadline = time.monotonic() + timeout_s
    status = "provisioning"
    while time.monotonic() < deadline:
        service_row = Service.objects.filter(slug=service, organization__slug=organization, deleted_at=None).first()
        status = service_row.status if service_row else "missing"
        if status in ("ready", "failed", "degraded"):
            return status if status != "failed" else f"failed: {service_row.error}"
        time.sleep(0.5)
    return status


def stop_runtimes() -> None:
    from controlplane.backends import get_backend

    backend = get_backend()
    for instance_id in backend.list():
        backend.stop(instance_id)


def prepare_docker() -> None:
    """The engine running and the runtime image of this tree built (once; a few minutes).

    Both scripts install what they need when run as root (docker.io; debootstrap when the
    base image cannot be pulled), whether the engine was running already or not; without
    root they say in one line what to run, and that line is the last one printed.
    """
    print("Docker backend: checking the engine and the runtime image ...", flush=True)
    for script in ("scripts/start-docker.sh", "scripts/build-runtime-image.sh"):
        result = subprocess.run(["bash", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
        if result.returncode != 0:
            sys.exit(result.returncode)  # the script has said why (and what to run), no traceback on top
    os.environ["MODELBAY_RUNTIME_IMAGE"] = result.stdout.strip()


def prepare_sandbox() -> None:
    """The local backend runs every instance in a bubblewrap sandbox (slirp4netns for those
    with egress): install both where they are missing and this can (root with apt). Else
    say what to install; the backend then refuses to start instances, with the same words."""
    if os.environ.get("MODELBAY_UNSANDBOXED_LOCAL") == "1" or (shutil.which("bwrap") and shutil.which("slirp4netns")):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("Installing bubblewrap and slirp4netns (the local backend's sandbox) ...", flush=True)
        install = ["apt-get", "install", "-y", "-qq", "bubblewrap", "slirp4netns"]
        quiet = {"stdout": subprocess.DEVNULL, "env": {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}}
        if subprocess.run(install, **quiet).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], **quiet)
            subprocess.run(install, **quiet)
    if not shutil.which("bwrap"):
        print(
            "WARNING: bubblewrap is missing, and the local backend runs models only in its sandbox:"
            " install it (sudo apt-get install bubblewrap slirp4netns), or use MODELBAY_RUNTIME_BACKEND=docker.",
            flush=True,
        )


def prepare_metrics() -> str:
    """Prometheus' scrape at /metrics: a token kept in the data dir (unless one is given),
    and a folder there where every web process writes its figures. Returns the token."""
    data_dir = Path(os.environ.get("MODELBAY_DATA_DIR") or REPO / "var")
    data_dir.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("MODELBAY_METRICS_TOKEN"):
        token_file = data_dir / "metrics_token"
        if not token_file.exists():
            token_file.write_text(secrets.token_urlsafe(24))
            token_file.chmod(0o600)
        os.environ["MODELBAY_METRICS_TOKEN"] = token_file.read_text().strip()
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(data_dir / "prometheus"))
    return os.environ["MODELBAY_METRICS_TOKEN"]


def web_workers() -> None:
    """How many web processes (event loops) gunicorn runs, in ``WEB_CONCURRENCY`` (which the
    gateway's caps on calls in flight read too). Without Redis, app usage is metered in
    process memory, which is exact only when one process serves every call: one."""
    if not os.environ.get("REDIS_URL"):
        os.environ["WEB_CONCURRENCY"] = "1"
    os.environ.setdefault("WEB_CONCURRENCY", "2")


def main() -> int:
    docker = os.environ.get("MODELBAY_RUNTIME_BACKEND") == "docker"
    if docker:
        prepare_docker()
    else:
        prepare_sandbox()
    print("Preparing the database and the demo (first run trains the demo model) ...", flush=True)
    manage("migrate", "--noinput", "-v", "0")
    manage("collectstatic", "--noinput", "-v", "0")
    demo = json.loads(manage("load_demo").strip().splitlines()[-1])
    metrics_token = prepare_metrics()
    web_workers()
    children = [
        start([str(BIN / "celery"), "-A", "modelbay", "worker", "-B", "--pool=threads", "--concurrency=4",
               "--loglevel=WARNING"]),
        start([str(BIN / "gunicorn"), "--bind", f"{HOST}:{PORT}", "--timeout", "120", "--no-control-socket"]),
    ]  # fmt: skip
    status = wait_ready(demo["service"], demo["organization"])
    example = json.dumps({"inputs": [[0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0,
                                      0, 4, 12, 0, 0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0,
                                      2, 14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0]]})  # fmt: skip
    print(
        f"""
Modelbay is running at {URL}/
  console login:  {demo["email"]} / {demo["password"]}
  API docs:       {URL}/api/docs/
  demo service:   {demo["service"]} ({status})

Try a prediction (a handwritten zero from the digits data set):
  curl -s -X POST {URL}/api/v1/services/{demo["service"]}/predict \\
    -H 'Authorization: Bearer {demo["key"]}' -H 'Content-Type: application/json' \\
    -d '{example}'

The marketplace: {URL}/marketplace/ (apps by Modelbay Labs: {", ".join(demo.get("apps", []))}; the image
apps install their packages the first time they start, a minute or two). The OCR app on the free plan:
  curl -s -X POST {URL}/api/v1/marketplace/text-ocr/subscribe \\
    -H 'Authorization: Bearer {demo["key"]}' -H 'Content-Type: application/json' -d '{{"plan": "free"}}'
  curl -s -X POST {URL}/api/v1/apps/text-ocr/predict \\
    -H 'Authorization: Bearer {demo["key"]}' -H 'Content-Type: image/png' \\
    --data-binary @{REPO / "demo/packages/examples/invoice.png"}
  curl -s {URL}/api/v1/subscriptions -H 'Authorization: Bearer {demo["key"]}'    # used / quota

Prometheus metrics (calls, latency, in flight, rejections, ready instances):
  curl -s {URL}/metrics -H 'Authorization: Bearer {metrics_token}'

Press Ctrl+C to stop.""",
        flush=True,
    )
    if docker:
        print(
            f"""
Its containers, one per replica over two zones (kill one: the service heals itself):
  docker ps --filter label=modelbay.service={demo["service"]} --format '{{{{.ID}}}} {{{{.Label "modelbay.zone"}}}} {{{{.Status}}}}'
  docker kill <ID>""",
            flush=True,
        )

    def shutdown(*_):
        for child in children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
        stop_runtimes()
        sys.exit(0)

    signal.signal(signal.SIGINT, shutdown)
    signal.signal(signal.SIGTERM, shutdown)
    while all(child.poll() is None for child in children):
        time.sleep(1)
    print("A Modelbay process exited; stopping.", file=sys.stderr)
    shutdown()
    return 1


if __name__ == "__main__":
    sys.exit(main())
