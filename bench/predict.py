"""Modelbay prediction benchmark: the runtime, KServe, the gateway and the gateway before it.

    .venv/bin/python bench/predict.py [--duration 4] [--concurrency 1,16] [--rounds 4]
                                      [--gateway-workers 1,2] [--baseline 3fab35e]
                                      [--skip-kserve] [--skip-gateway] [--skip-baseline]

Sets everything up in a temporary directory, measures with wrk on 127.0.0.1 only, and
tears everything down at the end (also on Ctrl+C or an error). In one run, interleaved:
the runtime called directly, KServe on the same ONNX model, the gateway (``gunicorn``
with the repository's gunicorn.conf.py: modelbay.asgi on uvicorn workers) with 1 and 2
processes, and the synchronous gateway it replaced (``gunicorn modelbay.wsgi``, sync
workers) run from a ``git worktree`` of ``--baseline`` on the same database. See
bench/README.md for what each figure means. Not a test: it prints figures and exits 0
unless it could not measure at all.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent


def _reexec_in_project_venv() -> None:
    """The bench needs the project's packages (scikit-learn, skl2onnx, psutil): use its venv."""
    try:
        import psutil  # noqa: F401
        import skl2onnx  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError:
        python = REPO / ".venv" / "bin" / "python"
        if python.exists() and Path(sys.executable).resolve() != python.resolve():
            os.execv(str(python), [str(python), *sys.argv])
        raise SystemExit("bench/predict.py needs the project's venv: run `make venv-dev`, then `make bench`.")


_reexec_in_project_venv()
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH_DIR))

import baseline  # noqa: E402
import psutil  # noqa: E402
import wrkload  # noqa: E402

KSERVE_VENV = BENCH_DIR / ".venv-kserve"
KSERVE_REQUIREMENTS = BENCH_DIR / "requirements-kserve.txt"
PROJECT_BIN = REPO / ".venv" / "bin"
MODEL_NAME = "digits"
INFER_PATH = f"/v2/models/{MODEL_NAME}/infer"

# One handwritten zero from scikit-learn's digits data set; batch of 1.
SAMPLE = [
    0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12, 0, 0, 8, 8, 0,
    0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0,
]  # fmt: skip
OIP_BODY = json.dumps(
    {"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "data": [float(v) for v in SAMPLE]}]},
    separators=(",", ":"),
).encode()

# Targets from shared/PERFORMANCE.md (the runtime's) and from the asynchronous gateway's
# issue (the gateway's), printed beside the figures.
TARGET_RUNTIME_VS_KSERVE = 5.0
TARGET_RUNTIME_P99_C64_MS = 10.0
TARGET_GATEWAY_ADDED_P50_MS = 0.5  # over the runtime called directly, c=1
TARGET_GATEWAY_ADDED_P99_MS = 1.0
TARGET_GATEWAY_VS_SYNC = 2.0  # calls/s per process at c=16, against the old sync worker
TARGET_GATEWAY_VS_KSERVE = 2.0  # calls/s per process at c=16, against KServe's one process
# c=1 once more with wrk and every process the bench started on CPU 0: the same chain of
# calls without wake-ups across CPUs, which cost up to milliseconds on a VM (bench/README.md).
ONE_CPU = "1@cpu0"
# Reference figure from shared/PERFORMANCE.md (2 vCPU, c=16): to tell a slow machine from a slow server.
REFERENCE_KSERVE_C16 = 1560
# Target names: the gateway of this tree, and the synchronous one of the baseline worktree.
NEW_PREFIX, OLD_PREFIX = "gateway-w", "old-sync-w"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- HTTP
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy


def http(method: str, url: str, body: dict | bytes | None = None, headers: dict | None = None, timeout: float = 10):
    """(status, body bytes); connection errors come back as status 0 with the error text."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _opener.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, OSError) as error:
        return 0, str(error).encode()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], object], *, timeout_s: float, interval_s: float = 0.1, what: str = "condition"):
    """Poll ``check`` until it returns something truthy; raise TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


# --------------------------------------------------------------------------- processes
@dataclass
class Child:
    name: str
    process: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "".join(self.log_path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
        except OSError:
            return ""


class Stack:
    """Everything the bench starts, and its teardown."""

    def __init__(self, keep: bool = False):
        self.tmp = Path(tempfile.mkdtemp(prefix="modelbay-bench-")).resolve()
        self.logs = self.tmp / "logs"
        self.logs.mkdir()
        self.keep = keep
        self.children: list[Child] = []
        self.data_dir = self.tmp / "data"  # the gateway stack's MODELBAY_DATA_DIR
        # The local backend marks its runtime processes with "--instance-id NAMESPACE/ID",
        # NAMESPACE = sha256(DATA_DIR)[:8] (controlplane.backends.local._namespace).
        self.namespace = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:8]
        self.gateway_env: dict[str, str] | None = None
        self.worktrees: list[Path] = []  # baseline worktrees, removed at teardown

    def start(self, name: str, command: list[str], *, env: dict | None = None, cwd: Path = REPO) -> Child:
        log_path = self.logs / f"{name}.log"
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                command,
                cwd=cwd,
                env=env or os.environ.copy(),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed as a group at teardown
            )
        child = Child(name, process, log_path)
        self.children.append(child)
        return child

    def stop(self, child: Child, grace_s: float = 10.0) -> None:
        if child.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGTERM)
            try:
                child.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait(timeout=5)
        # Whatever is left in its process group (e.g. gunicorn workers, runtime threads).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.process.pid, signal.SIGKILL)

    def our_runtime_processes(self) -> list[psutil.Process]:
        """Processes whose command line carries this bench's namespace or temp dir."""
        found = []
        marker = f"{self.namespace}/"
        me = os.getpid()
        for process in psutil.process_iter(["pid", "cmdline"]):
            if process.info["pid"] == me:
                continue
            cmdline = process.info["cmdline"] or []
            if any(arg.startswith(marker) for arg in cmdline) or any(str(self.tmp) in arg for arg in cmdline):
                found.append(process)
        return found

    def teardown(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl+C must not interrupt the cleanup
        log("tearing down")
        order = ["gunicorn", "celery"]  # the front first, then the worker (so it does not restart instances)
        ranked = sorted(self.children, key=lambda c: next((i for i, p in enumerate(order) if c.name.startswith(p)), 9))
        for child in ranked:
            try:
                started = time.monotonic()
                self.stop(child)
                log(f"stopped {child.name} ({time.monotonic() - started:.1f}s)")
            except Exception as error:  # noqa: BLE001 - keep tearing down
                log(f"stopping {child.name}: {error}")
        if self.gateway_env is not None:
            code = (
                "from controlplane.backends import get_backend\n"
                "b = get_backend()\n"
                "for i in list(b.list()):\n"
                "    b.stop(i)\n"
            )
            try:
                subprocess.run(
                    [str(PROJECT_BIN / "python"), "manage.py", "shell", "-c", code],
                    cwd=REPO, env=self.gateway_env, capture_output=True, timeout=60,
                )  # fmt: skip
            except Exception as error:  # noqa: BLE001
                log(f"backend cleanup: {error}")
        # Safety net: anything still carrying our namespace or temp dir.
        leftovers = self.our_runtime_processes()
        for process in leftovers:
            with contextlib.suppress(psutil.Error):
                process.terminate()
        _, alive = psutil.wait_procs(leftovers, timeout=5)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        if alive:
            log(f"killed {len(alive)} leftover process(es)")
        for path in self.worktrees:
            try:
                baseline.remove_worktree(path)
                log(f"removed the worktree {path}")
            except Exception as error:  # noqa: BLE001
                log(f"removing the worktree {path}: {error}")
        if self.keep:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def process_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


# --------------------------------------------------------------------------- targets
@dataclass
class Target:
    name: str
    url: str  # base URL
    path: str
    headers: dict[str, str]
    processes: Callable[[], list[psutil.Process]]  # whose CPU is counted per call
    note: str = ""
    script: Path | None = None
    workers: int = 1

    @property
    def full_url(self) -> str:
        return self.url + self.path


@dataclass
class Measurement:
    target: str
    concurrency: int
    runs: list[wrkload.WrkResult] = field(default_factory=list)
    cpu_us_per_call: list[float] = field(default_factory=list)
    failure: str = ""

    def median(self, attr: str) -> float:
        values = [getattr(r, attr) for r in self.runs]
        return statistics.median(values) if values else float("nan")

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.runs)

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpu_us_per_call) if self.cpu_us_per_call else float("nan")


def sanity_call(target: Target) -> str | None:
    """One call before the load; the problem as text, or None when it answered a prediction."""
    status, body = http("POST", target.full_url, OIP_BODY, {**target.headers, "Content-Type": "application/json"})
    if status != 200:
        return f"{target.name}: POST {target.path} -> {status or 'no answer'}: {body[:500].decode(errors='replace')}"
    try:
        outputs = {o["name"]: o for o in json.loads(body)["outputs"]}
        label = outputs["label"]["data"][0]
    except (ValueError, KeyError, IndexError, TypeError) as error:
        return f"{target.name}: unexpected answer ({error!r}): {body[:300].decode(errors='replace')}"
    if label != 0:
        return f"{target.name}: predicted {label} for a handwritten zero"
    return None


# --------------------------------------------------------------------------- setup
def start_runtime(stack: Stack, model_dir: Path) -> Target:
    port = free_port()
    child = stack.start(
        "runtime",
        [str(PROJECT_BIN / "python"), "-m", "runtime", "--model-dir", str(model_dir),
         "--port", str(port), "--name", MODEL_NAME, "--model-version", "1"],
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: http("GET", url + "/v2/health/ready", timeout=2)[0] == 200 or not child.alive(),
             timeout_s=60, what="the runtime to be ready")  # fmt: skip
    if not child.alive():
        raise RuntimeError(f"the runtime exited:\n{child.log_tail()}")
    return Target("runtime", url, INFER_PATH, {"Content-Type": "application/json"},
                  lambda: process_tree(child.process.pid), note="runtime started directly")  # fmt: skip


def ensure_kserve_venv() -> Path:
    """bench/.venv-kserve with requirements-kserve.txt installed (made or updated when needed)."""
    python = KSERVE_VENV / "bin" / "python"
    marker = KSERVE_VENV / ".installed"
    wanted = KSERVE_REQUIREMENTS.read_text()
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    if not python.exists():
        log(f"creating {KSERVE_VENV.relative_to(REPO)} (takes a minute or two)")
        base = shutil.which("python3.11") or sys.executable
        subprocess.run([base, "-m", "venv", str(KSERVE_VENV)], check=True, timeout=300)
    log(f"installing {KSERVE_REQUIREMENTS.relative_to(REPO)} into {KSERVE_VENV.relative_to(REPO)}")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(KSERVE_REQUIREMENTS)],
        check=True, timeout=900,
    )  # fmt: skip
    marker.write_text(wanted)
    return python


def start_kserve(stack: Stack, onnx_path: Path) -> Target:
    python = ensure_kserve_venv()
    port = free_port()
    child = stack.start(
        "kserve",
        [str(python), str(BENCH_DIR / "kserve_onnx_server.py"), "--onnx", str(onnx_path), "--port", str(port),
         "--name", MODEL_NAME],
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: http("GET", url + f"/v2/models/{MODEL_NAME}/ready", timeout=2)[0] == 200 or not child.alive(),
             timeout_s=90, what="KServe to be ready")  # fmt: skip
    if not child.alive():
        raise RuntimeError(f"the KServe server exited:\n{child.log_tail()}")
    return Target(
        "kserve",
        url,
        INFER_PATH,
        {"Content-Type": "application/json"},
        lambda: process_tree(child.process.pid),
        note="KServe 0.21 ModelServer, OIP v2, 1 worker",
    )


@dataclass
class GatewaySetup:
    targets: list[Target] = field(default_factory=list)
    instance: Target | None = None
    demo_ready_s: float | None = None
    deploy_ready_s: float | None = None
    deploy_ready_server_s: float | None = None
    baseline_commit: str | None = None
    problems: list[str] = field(default_factory=list)


def manage(stack: Stack, *args: str, timeout: float = 300) -> str:
    completed = subprocess.run(
        [str(PROJECT_BIN / "python"), "manage.py", *args],
        cwd=REPO, env=stack.gateway_env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if completed.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args[:1])} failed (exit {completed.returncode}):\n"
                           f"{(completed.stdout + completed.stderr)[-3000:]}")  # fmt: skip
    return completed.stdout


def _parse_time(value: str | None) -> float | None:
    from datetime import datetime

    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def embedded_env(stack: Stack) -> dict[str, str]:
    """The embedded stack's environment: SQLite, a file-based cache and a filesystem broker in
    ``stack.data_dir``, the local runtime backend; nothing of a production stack inherited."""
    dropped = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "PROMETHEUS_MULTIPROC_DIR", "WEB_CONCURRENCY",
               "PYTHONPATH")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update({"MODELBAY_DATA_DIR": str(stack.data_dir), "DJANGO_SETTINGS_MODULE": "modelbay.settings"})
    return env


def prepare_embedded(stack: Stack, extra_env: dict[str, str] | None = None) -> dict:
    """The data dir migrated and the demo loaded (organization, digits model and service,
    API key); returns load_demo's answer (``key``, ``service``, ...)."""
    stack.data_dir.mkdir()
    stack.gateway_env = {**embedded_env(stack), **(extra_env or {})}
    log("gateway: migrate")
    manage(stack, "migrate", "--noinput", "-v", "0")
    log("gateway: load_demo (trains the demo model)")
    return json.loads(manage(stack, "load_demo", "--without-apps").strip().splitlines()[-1])


def start_worker(stack: Stack) -> Child:
    """The Celery worker with beat (it starts the runtime processes; beat reconciles every 10 s)."""
    return stack.start("celery-worker", [str(PROJECT_BIN / "celery"), "-A", "modelbay", "worker", "-B",
                                         "--pool=threads", "--concurrency=4"], env=stack.gateway_env)  # fmt: skip


def start_web(
    stack: Stack,
    name: str,
    workers: int,
    *,
    old_tree: Path | None = None,
    worker_args: list[str] | None = None,
    extra_env: dict[str, str] | None = None,
) -> tuple[Child, str]:
    """One gunicorn on a free port: (its child, its base URL).

    This tree's: ``gunicorn --bind ... --workers N`` from the repository's root, whose
    gunicorn.conf.py serves modelbay.asgi on uvicorn workers; ``WEB_CONCURRENCY=N`` too (the
    gateway divides its caps on calls in flight among its processes). With ``old_tree`` (a
    baseline worktree): its ``gunicorn modelbay.wsgi`` with ``worker_args`` (default
    ``--workers N``, sync workers), run from there (its own gunicorn.conf.py and code), with
    the same environment: the same data dir, database and cache."""
    port = free_port()
    env = {**(stack.gateway_env or {}), "WEB_CONCURRENCY": str(workers), **(extra_env or {})}
    if old_tree is None:
        command = [str(PROJECT_BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
                   "--no-control-socket"]  # fmt: skip
        cwd = REPO
    else:
        env["PYTHONPATH"] = str(old_tree)  # its code, never this tree's
        command = baseline.sync_gateway_command(
            PROJECT_BIN / "gunicorn", port, worker_args or ["--workers", str(workers)]
        )
        cwd = old_tree
    return stack.start(name, command, env=env, cwd=cwd), f"http://127.0.0.1:{port}"


def server_header(url: str) -> str:
    """The ``Server`` header of the console's login page: which web server answers there."""
    try:
        with _opener.open(urllib.request.Request(url + "/accounts/login/"), timeout=10) as response:
            return response.headers.get("Server", "?")
    except urllib.error.HTTPError as error:
        return error.headers.get("Server", "?")
    except (urllib.error.URLError, OSError):
        return "no answer"


def wait_web(child: Child, url: str, timeout_s: float = 90) -> None:
    """Until the server answers the console's login page (any status), or its process exits."""
    wait_for(lambda: http("GET", url + "/accounts/login/", timeout=2)[0] != 0 or not child.alive(),
             timeout_s=timeout_s, interval_s=0.1, what=f"{child.name} to answer")  # fmt: skip
    if not child.alive():
        raise RuntimeError(f"{child.name} exited:\n{child.log_tail()}")


def start_gateway(
    stack: Stack,
    workers_list: list[int],
    setup: GatewaySetup,
    *,
    baseline_ref: str | None = None,
    baseline_workers: list[int] | None = None,
) -> None:
    demo = prepare_embedded(stack)
    demo_loaded_at = time.monotonic()
    key = demo["key"]
    auth = {"Authorization": f"Bearer {key}"}

    worker = start_worker(stack)
    gunicorns: dict[str, tuple[Child, str, int, str]] = {}  # target name -> (child, url, processes, note)
    for workers in workers_list:
        child, url = start_web(stack, f"gunicorn-w{workers}", workers)
        note = f"this tree: gunicorn, {workers} uvicorn worker process(es), modelbay.asgi, OIP v2 via the gateway"
        gunicorns[f"{NEW_PREFIX}{workers}"] = (child, url, workers, note)
    if baseline_ref:
        try:
            tree, commit = baseline.add_worktree(baseline_ref)
            stack.worktrees.append(tree)
            setup.baseline_commit = commit
            log(f"baseline: worktree of {commit[:7]} at {tree}")
            for workers in baseline_workers or workers_list:
                child, url = start_web(stack, f"gunicorn-old-w{workers}", workers, old_tree=tree)
                note = (f"{commit[:7]} worktree: gunicorn modelbay.wsgi --workers {workers} (sync), "
                        f"same database, OIP v2 via the old gateway")  # fmt: skip
                gunicorns[f"{OLD_PREFIX}{workers}"] = (child, url, workers, note)
        except Exception as error:  # noqa: BLE001 - measure the rest
            setup.problems.append(f"baseline {baseline_ref}: {error}")
    api = next(iter(gunicorns.values()))[1] + "/api/v1"

    def service(slug: str) -> dict | None:
        status, body = http("GET", f"{api}/services/{slug}", headers=auth, timeout=5)
        if status != 200:
            return None
        return json.loads(body)

    def ready(slug: str):
        def check():
            if not worker.alive():
                raise RuntimeError(f"the Celery worker exited:\n{worker.log_tail()}")
            data = service(slug)
            if data and data.get("status") == "failed":
                raise RuntimeError(f"service {slug} failed: {data.get('error')}")
            return data if data and data.get("status") == "ready" else None

        return check

    log("gateway: waiting for the demo service to be ready")
    wait_for(ready("digits"), timeout_s=180, interval_s=0.05, what="service digits to be ready")
    setup.demo_ready_s = time.monotonic() - demo_loaded_at

    # Time to ready of a deploy request made through the API, the worker already running.
    log("gateway: deploying digits-2 (1 replica) through the API")
    started = time.monotonic()
    status, body = http("POST", f"{api}/services", {"name": "digits-2", "model": "digits", "replicas": 1}, auth)
    if status not in (200, 201, 202):
        setup.problems.append(f"POST /api/v1/services -> {status}: {body[:500].decode(errors='replace')}")
    else:
        slug = json.loads(body).get("slug", "digits-2")
        try:
            data = wait_for(ready(slug), timeout_s=120, interval_s=0.02, what=f"service {slug} to be ready")
            setup.deploy_ready_s = time.monotonic() - started
            created = _parse_time(data.get("created_at"))
            ready_ats = [_parse_time(i.get("ready_at")) for i in data.get("instances", [])]
            if created and ready_ats and all(ready_ats):
                setup.deploy_ready_server_s = max(ready_ats) - created
        except (TimeoutError, RuntimeError) as error:
            setup.problems.append(f"deploy of digits-2: {error}")
        status, body = http("DELETE", f"{api}/services/{slug}", headers=auth)
        if status not in (200, 202, 204):
            setup.problems.append(f"DELETE /api/v1/services/{slug} -> {status}: {body[:300].decode(errors='replace')}")

    # One replica, so that the gateway and the direct call reach the same runtime process.
    log("gateway: scaling digits to 1 replica")
    status, body = http("PATCH", f"{api}/services/digits", {"replicas": 1}, auth)
    if status not in (200, 202):
        raise RuntimeError(f"PATCH /api/v1/services/digits -> {status}: {body[:500].decode(errors='replace')}")

    def one_instance():
        data = ready("digits")()
        if not data:
            return None
        statuses = [i["status"] for i in data.get("instances", [])]
        live = [s for s in statuses if s in ("starting", "ready", "unhealthy")]
        return data if live == ["ready"] else None

    wait_for(one_instance, timeout_s=120, interval_s=0.1, what="digits to run exactly one ready instance")
    code = (
        "import json\n"
        "from controlplane.models import Instance\n"
        "print(json.dumps([[i.endpoint, i.credential] for i in Instance.objects.filter(status='ready', "
        "deployment__service__slug='digits', deployment__service__deleted_at__isnull=True)]))\n"
    )
    endpoints = json.loads(manage(stack, "shell", "-c", code).strip().splitlines()[-1])
    if len(endpoints) != 1:
        raise RuntimeError(f"expected one ready instance of digits, found endpoints {endpoints}")
    endpoint, credential = endpoints[0][0].rstrip("/"), endpoints[0][1]
    if endpoint.startswith("unix://"):
        # A sandboxed local instance: no network, a Unix socket, which wrk cannot call. The
        # gateway's added latency is then taken against the standalone runtime (same code,
        # same model, loopback TCP).
        log(f"the gateway's instance listens on {endpoint}: not measured directly (wrk speaks TCP only)")
    else:
        port = endpoint.rsplit(":", 1)[-1]

        def instance_processes() -> list[psutil.Process]:
            found = []
            for process in stack.our_runtime_processes():
                with contextlib.suppress(psutil.Error, ValueError, IndexError):
                    cmdline = process.cmdline()
                    if "runtime" in cmdline and cmdline[cmdline.index("--port") + 1] == port:
                        found.append(process)
            return found

        instance_headers = {"Content-Type": "application/json", "Authorization": f"Bearer {credential}"}
        setup.instance = Target("instance", endpoint, INFER_PATH, instance_headers,
                                instance_processes, note="the gateway's runtime instance, called directly")  # fmt: skip
    # Let the gateway processes pick up the new routing table before measuring.
    time.sleep(1.0)
    for name, (child, url, workers, note) in gunicorns.items():
        try:
            wait_web(child, url)
        except (RuntimeError, TimeoutError) as error:
            setup.problems.append(f"{name}: {error}")
            continue
        note = f"{note}; Server: {server_header(url)}"
        setup.targets.append(
            Target(name, url, INFER_PATH, {"Content-Type": "application/json", **auth},
                   (lambda pid=child.process.pid: process_tree(pid)), note=note, workers=workers)
        )  # fmt: skip
    # The other gateway endpoint, checked once on each server (not measured).
    for name, (_child, url, _workers, _note) in gunicorns.items():
        status, body = http("POST", url + "/api/v1/services/digits/predict", {"inputs": [SAMPLE]}, auth)
        if status != 200:
            setup.problems.append(f"{name} POST /api/v1/services/digits/predict -> {status}: "
                                  f"{body[:500].decode(errors='replace')}")  # fmt: skip


# --------------------------------------------------------------------------- measuring
def measure(target: Target, concurrency: int | str, duration_s: float, stack: Stack) -> tuple[wrkload.WrkResult, float]:
    processes = target.processes()
    before = cpu_seconds(processes)
    if concurrency == ONE_CPU:
        with on_cpus(stack, {0}):
            result = wrkload.run(target.full_url, target.script, connections=1, duration_s=duration_s, cpus={0})
    else:
        result = wrkload.run(target.full_url, target.script, connections=concurrency, duration_s=duration_s)
    used = cpu_seconds(processes) - before
    cpu_us = used / result.requests * 1e6 if result.requests else float("nan")
    return result, cpu_us


def stack_threads(stack: Stack) -> set[int]:
    """Every thread of every process the bench started (the control plane's instances too)."""
    pids = {p.pid for child in stack.children for p in process_tree(child.process.pid)}
    pids |= {p.pid for p in stack.our_runtime_processes()}
    threads = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            threads.update(int(tid) for tid in os.listdir(f"/proc/{pid}/task"))
    return threads


@contextlib.contextmanager
def on_cpus(stack: Stack, cpus: set[int]):
    """Pin every thread of the stack to ``cpus`` for the block, then let them run anywhere."""
    everywhere = os.sched_getaffinity(0)
    for tid in stack_threads(stack):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, cpus)
    try:
        yield
    finally:
        for tid in stack_threads(stack):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, everywhere)


def fmt(value: float, digits: int = 2) -> str:
    if value is None or value != value:  # None or NaN
        return "n/a"
    return f"{value:,.{digits}f}"


def print_table(targets: list[Target], concurrencies: list[int], results: dict) -> str:
    header = f"{'target':<12} {'conc':>6} {'calls/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'CPU µs/call':>12}"
    lines = [header, "-" * len(header)]
    for target in targets:
        for c in concurrencies:
            m: Measurement = results[(target.name, c)]
            if not m.runs:
                lines.append(f"{target.name:<12} {c:>6} {'failed: ' + m.failure[:60]}")
                continue
            lines.append(
                f"{target.name:<12} {c:>6} {fmt(m.median('calls_per_s'), 0):>10} {fmt(m.median('p50_ms')):>8} "
                f"{fmt(m.median('p99_ms')):>8} {m.errors:>7} {fmt(m.cpu, 0):>12}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Modelbay prediction benchmark (runtime, KServe, the gateway and the old sync gateway)."
    )
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per wrk run (default 4)")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated connection counts (default 1,16)")
    parser.add_argument("--rounds", type=int, default=4, help="measure every target/concurrency this many times, "
                        "interleaved; the table shows medians (default 4)")  # fmt: skip
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load per target first")
    parser.add_argument(
        "--gateway-workers",
        default="1,2",
        help="gateway processes (uvicorn workers) to measure, one gunicorn each (default 1,2)",
    )
    parser.add_argument(
        "--baseline",
        default=baseline.DEFAULT_REF,
        metavar="REF",
        help="commit of the synchronous gateway to measure beside this tree's, from a git worktree "
        f"in /tmp (default {baseline.DEFAULT_REF})",
    )
    parser.add_argument(
        "--baseline-workers",
        default=None,
        help="sync worker counts of the baseline (default: the same as --gateway-workers)",
    )
    parser.add_argument("--skip-one-cpu", action="store_true",
                        help=f"do not measure c=1 with everything on CPU 0 (the {ONE_CPU} rows)")  # fmt: skip
    parser.add_argument("--skip-kserve", action="store_true", help="do not start or measure KServe")
    parser.add_argument("--skip-gateway", action="store_true", help="do not start or measure the gateways")
    parser.add_argument("--skip-baseline", action="store_true", help="do not measure the old sync gateway")
    parser.add_argument("--json", type=Path, help="also write all figures to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database) after the run")
    args = parser.parse_args(argv)
    concurrencies: list[int | str] = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not args.skip_one_cpu and os.cpu_count() > 1:
        concurrencies.append(ONE_CPU)
    gateway_workers = [int(w) for w in args.gateway_workers.split(",") if w.strip()]
    args.baseline_workers = [int(w) for w in (args.baseline_workers or args.gateway_workers).split(",") if w.strip()]
    if not wrkload.wrk_binary():
        raise SystemExit("wrk is not installed: apt-get install -y wrk")

    problems: list[str] = []
    return run_in_stack(lambda stack: run(args, stack, concurrencies, gateway_workers, problems), keep=args.keep)


def run_in_stack(run, *, keep: bool) -> int:
    """``run(stack)`` on a fresh Stack, torn down whatever happens (Ctrl+C, SIGTERM, SIGHUP)."""

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (`cmd &`)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    stack = Stack(keep=keep)
    try:
        return run(stack)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        stack.teardown()


def run(args, stack: Stack, concurrencies: list[int | str], gateway_workers: list[int], problems: list[str]) -> int:
    from demo.digits import build_digits_onnx

    log(f"temp dir {stack.tmp}")
    model_dir = stack.tmp / "model"
    model_dir.mkdir()
    onnx_path = model_dir / "digits.onnx"
    log("building the demo ONNX model")
    build_digits_onnx(onnx_path)

    targets: list[Target] = []
    log("starting the runtime")
    runtime = start_runtime(stack, model_dir)
    targets.append(runtime)
    if not args.skip_kserve:
        log("starting KServe")
        try:
            targets.append(start_kserve(stack, onnx_path))
        except Exception as error:  # noqa: BLE001 - measure the rest
            problems.append(f"KServe: {error}")
    gateway = GatewaySetup()
    if not args.skip_gateway:
        try:
            start_gateway(stack, gateway_workers, gateway,
                          baseline_ref=None if args.skip_baseline else args.baseline,
                          baseline_workers=args.baseline_workers)  # fmt: skip
        except Exception as error:  # noqa: BLE001 - measure the rest
            problems.append(f"gateway setup: {error}")
        problems.extend(gateway.problems)
        if gateway.instance is not None:
            targets.append(gateway.instance)
        # Interleaved by process count: the new and the old gateway with N processes side by side.
        targets.extend(sorted(gateway.targets, key=lambda t: (t.workers, not t.name.startswith(NEW_PREFIX))))

    usable = []
    for target in targets:
        target.script = wrkload.write_script(stack.tmp / f"{target.name}.lua", OIP_BODY, target.headers)
        problem = sanity_call(target)
        if problem:
            problems.append(f"sanity call failed, not measured: {problem}")
        else:
            usable.append(target)
    targets = usable

    if args.warmup > 0:
        for target in targets:
            log(f"warm-up {target.name} ({args.warmup:.0f}s)")
            with contextlib.suppress(RuntimeError):
                wrkload.run(target.full_url, target.script, duration_s=args.warmup,
                            connections=max(c for c in concurrencies if isinstance(c, int)))  # fmt: skip

    load_before = os.getloadavg()[0]
    if load_before > 1.0:
        log(f"note: load average {load_before:.2f} before measuring: other work shares the cores")
    results = {(t.name, c): Measurement(t.name, c) for t in targets for c in concurrencies}
    total = args.rounds * len(concurrencies) * len(targets)
    done = 0
    for round_ in range(args.rounds):
        for c in concurrencies:
            for target in targets:  # interleaved: every target at this concurrency, then the next
                done += 1
                log(f"[{done}/{total}] round {round_ + 1} {target.name} c={c} {args.duration:.0f}s")
                m = results[(target.name, c)]
                try:
                    result, cpu_us = measure(target, c, args.duration, stack)
                except (RuntimeError, subprocess.TimeoutExpired) as error:
                    m.failure = str(error)
                    problems.append(f"{target.name} c={c}: {error}")
                    continue
                m.runs.append(result)
                m.cpu_us_per_call.append(cpu_us)
                if result.errors:
                    status, body = http("POST", target.full_url, OIP_BODY, target.headers)
                    problems.append(
                        f"{target.name} c={c}: {result.non_2xx} non-2xx, {result.socket_errors} socket errors "
                        f"of {result.requests} calls; a call after the run -> {status}: "
                        f"{body[:300].decode(errors='replace')}"
                    )

    load_after = os.getloadavg()[0]
    table = print_table(targets, concurrencies, results)
    figures = ratios(results, gateway, concurrencies)

    print()
    print(f"Modelbay prediction benchmark — wrk -t1 -d{args.duration:.0f}s --latency, OIP v2 infer, batch of 1, "
          f"{args.rounds} round(s){' (medians)' if args.rounds > 1 else ''}; {os.cpu_count()} cores, "
          f"load generator on the same machine")  # fmt: skip
    if gateway.baseline_commit:
        print(f"old sync gateway: {gateway.baseline_commit[:7]} (git worktree in /tmp, same database and data dir)")
    print(f"1-min load average: {load_before:.2f} before measuring, {load_after:.2f} after "
          f"(well above 2 means other work shared the cores with the bench)")  # fmt: skip
    for target in targets:
        print(f"  {target.name:<12} {target.note}")
    print()
    print(table)
    print()
    for line in figures["lines"]:
        print(line)
    if figures["summary"]:
        print()
        print("Side by side (c=1 latency and what it adds over the runtime called directly; c=16 calls/s per "
              "process; x old = the new gateway per process over the old sync one with as many processes; "
              "x KServe = over KServe's one process):")  # fmt: skip
        for line in figures["summary"]:
            print(line)
    for child in stack.children:
        if not child.alive():
            problems.append(f"{child.name} exited early (exit {child.process.returncode}):\n{child.log_tail()}")
    if problems:
        print()
        print("Problems seen:")
        for problem in problems:
            print(f"  - {problem}")
    if args.json:
        payload = {
            "duration_s": args.duration,
            "rounds": args.rounds,
            "concurrency": concurrencies,
            "targets": {t.name: t.note for t in targets},
            "results": [
                {"target": m.target, "concurrency": m.concurrency, "cpu_us_per_call": m.cpu,
                 "runs": [r.as_dict() for r in m.runs], "failure": m.failure}
                for m in results.values()
            ],
            "figures": figures["values"],
            "baseline_commit": gateway.baseline_commit,
            "load_average": [load_before, load_after],
            "problems": problems,
        }  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
    return 0 if any(m.runs for m in results.values()) else 1


def ratios(results: dict, gateway: GatewaySetup, concurrencies: list[int]) -> dict:
    """The lines under the table (targets beside them), a side-by-side summary, and the values."""

    def get(name: str, c: int) -> Measurement | None:
        m = results.get((name, c))
        return m if m and m.runs else None

    lines, values = [], {}

    def mark(ok: bool) -> str:
        return "meets target" if ok else "MISSES target"

    runtime16, kserve16 = get("runtime", 16), get("kserve", 16)
    if runtime16 and kserve16:
        ratio = runtime16.median("calls_per_s") / kserve16.median("calls_per_s")
        values["runtime_vs_kserve_c16"] = ratio
        lines.append(
            f"runtime / KServe throughput at c=16: {ratio:.2f}x "
            f"(target >= {TARGET_RUNTIME_VS_KSERVE:.0f}x: {mark(ratio >= TARGET_RUNTIME_VS_KSERVE)})"
        )
    if kserve16:
        speed = REFERENCE_KSERVE_C16 / kserve16.median("calls_per_s")
        values["machine_slowdown_vs_reference"] = speed
        lines.append(f"machine check: KServe at c=16 does {kserve16.median('calls_per_s'):,.0f} calls/s here, "
                     f"{REFERENCE_KSERVE_C16:,} in shared/PERFORMANCE.md: this run is {speed:.1f}x "
                     f"{'slower' if speed >= 1 else 'faster'} than the reference machine")  # fmt: skip
    runtime64 = get("runtime", 64)
    if runtime64:
        p99 = runtime64.median("p99_ms")
        values["runtime_p99_c64_ms"] = p99
        lines.append(
            f"runtime p99 at c=64: {p99:.2f} ms "
            f"(target < {TARGET_RUNTIME_P99_C64_MS:.0f} ms: {mark(p99 < TARGET_RUNTIME_P99_C64_MS)})"
        )

    # c=1: what each gateway adds over the runtime called directly.
    direct_name, direct = "instance", "the same instance called directly"
    if get("instance", 1) is None:  # a sandboxed instance on a Unix socket: the standalone runtime instead
        direct_name, direct = "runtime", "the runtime called directly (same code and model, loopback TCP)"
    direct1 = get(direct_name, 1)
    gateways = sorted({name for name, _ in results if name.startswith((NEW_PREFIX, OLD_PREFIX))},
                      key=lambda n: (n.startswith(OLD_PREFIX), int(n.rsplit("w", 1)[1])))  # fmt: skip
    summary: dict[str, dict] = {}
    for name in gateways:
        old = name.startswith(OLD_PREFIX)
        workers = int(name.rsplit("w", 1)[1])
        row = summary.setdefault(name, {"workers": workers, "old": old})
        m1 = get(name, 1)
        if m1 and direct1:
            row["added_p50"] = m1.median("p50_ms") - direct1.median("p50_ms")
            row["added_p99"] = m1.median("p99_ms") - direct1.median("p99_ms")
            values[f"{name}_added_p50_ms_c1"], values[f"{name}_added_p99_ms_c1"] = row["added_p50"], row["added_p99"]
            target = ""
            if not old:
                ok = row["added_p50"] <= TARGET_GATEWAY_ADDED_P50_MS and row["added_p99"] <= TARGET_GATEWAY_ADDED_P99_MS
                target = f" (target <= +{TARGET_GATEWAY_ADDED_P50_MS} / +{TARGET_GATEWAY_ADDED_P99_MS} ms: {mark(ok)})"
            lines.append(f"added latency at c=1, {name} minus {direct}: p50 {row['added_p50']:+.2f} ms, "
                         f"p99 {row['added_p99']:+.2f} ms{target}")  # fmt: skip
        pinned, direct_pinned = get(name, ONE_CPU), get(direct_name, ONE_CPU)
        if pinned and direct_pinned:
            added50 = pinned.median("p50_ms") - direct_pinned.median("p50_ms")
            added99 = pinned.median("p99_ms") - direct_pinned.median("p99_ms")
            values[f"{name}_added_p50_ms_c1_one_cpu"], values[f"{name}_added_p99_ms_c1_one_cpu"] = added50, added99
            target = ""
            if not old:
                ok = added50 <= TARGET_GATEWAY_ADDED_P50_MS and added99 <= TARGET_GATEWAY_ADDED_P99_MS
                target = f" ({mark(ok)})"
            lines.append(f"  the same with wrk and the whole stack on CPU 0 ({ONE_CPU}, no wake-ups across CPUs): "
                         f"p50 {added50:+.2f} ms, p99 {added99:+.2f} ms{target}")  # fmt: skip
        m16 = get(name, 16)
        if m16:
            row["per_process"] = m16.median("calls_per_s") / workers
            values[f"{name}_calls_per_s_per_process_c16"] = row["per_process"]
    kserve_per_process = kserve16.median("calls_per_s") if kserve16 else None  # KServe: one process
    for name in gateways:
        row = summary[name]
        if "per_process" not in row:
            continue
        lines.append(f"calls/s per process at c=16, {name}: {row['per_process']:,.0f} "
                     f"({row['per_process'] * row['workers']:,.0f} in all, {row['workers']} process(es))")  # fmt: skip
        if row["old"]:
            continue
        twin = summary.get(f"{OLD_PREFIX}{row['workers']}", {})
        if "per_process" in twin:
            row["vs_old"] = row["per_process"] / twin["per_process"]
            values[f"{name}_vs_old_sync_c16"] = row["vs_old"]
            lines.append(
                f"  {name} / {OLD_PREFIX}{row['workers']} per process at c=16: {row['vs_old']:.2f}x "
                f"(target >= {TARGET_GATEWAY_VS_SYNC:.0f}x: {mark(row['vs_old'] >= TARGET_GATEWAY_VS_SYNC)})"
            )
        if kserve_per_process:
            row["vs_kserve"] = row["per_process"] / kserve_per_process
            values[f"{name}_vs_kserve_c16"] = row["vs_kserve"]
            lines.append(f"  {name} per process / KServe (1 process) at c=16: {row['vs_kserve']:.2f}x "
                         f"(target >= {TARGET_GATEWAY_VS_KSERVE:.0f}x: "
                         f"{mark(row['vs_kserve'] >= TARGET_GATEWAY_VS_KSERVE)})")  # fmt: skip
    if gateway.demo_ready_s is not None:
        values["demo_ready_s"] = gateway.demo_ready_s
        lines.append(f"time to ready, demo service (load_demo done -> ready, incl. starting the Celery worker; "
                     f"2 replicas): {gateway.demo_ready_s:.2f} s")  # fmt: skip
    if gateway.deploy_ready_s is not None:
        values["deploy_ready_s"] = gateway.deploy_ready_s
        server = (f"; server-side created_at -> ready_at {gateway.deploy_ready_server_s:.2f} s"
                  if gateway.deploy_ready_server_s is not None else "")  # fmt: skip
        lines.append(f"time to ready, POST /api/v1/services digits-2 (1 replica) -> status ready: "
                     f"{gateway.deploy_ready_s:.2f} s{server}")  # fmt: skip
    return {"lines": lines, "values": values, "summary": side_by_side(summary, results, direct_name)}


def side_by_side(summary: dict, results: dict, direct_name: str) -> list[str]:
    """One line per server: c=1 latency and what it adds over the runtime called directly,
    c=16 calls/s per process and its ratios to the old sync gateway with as many processes
    and to KServe (one process)."""
    nan = float("nan")

    def median(name: str, c: int, attr: str) -> float:
        m = results.get((name, c))
        return m.median(attr) if m and m.runs else nan

    rows = [
        (f"runtime direct [{direct_name}]", direct_name, nan, nan, median(direct_name, 16, "calls_per_s"), nan, nan)
    ]
    for name, data in summary.items():
        what = "old sync gateway" if data["old"] else "new gateway"
        rows.append((f"{what} x{data['workers']} [{name}]", name, data.get("added_p50", nan),
                     data.get("added_p99", nan), data.get("per_process", nan), data.get("vs_old", nan),
                     data.get("vs_kserve", nan)))  # fmt: skip
    if ("kserve", 16) in results:
        rows.append(("KServe x1 [kserve]", "kserve", nan, nan, median("kserve", 16, "calls_per_s"), nan, nan))
    width = max(len(r[0]) for r in rows)
    header = (f"{'server (x processes)':<{width}} {'c=1 p50':>8} {'c=1 p99':>8} {'+p50 ms':>8} {'+p99 ms':>8} "
              f"{'c=16/proc':>10} {'x old':>6} {'x KServe':>8}")  # fmt: skip
    lines = [header, "-" * len(header)]
    for label, name, added50, added99, per_process, vs_old, vs_kserve in rows:
        lines.append(f"{label:<{width}} {fmt(median(name, 1, 'p50_ms')):>8} {fmt(median(name, 1, 'p99_ms')):>8} "
                     f"{fmt(added50):>8} {fmt(added99):>8} {fmt(per_process, 0):>10} "
                     f"{fmt(vs_old):>6} {fmt(vs_kserve):>8}")  # fmt: skip
    return lines


if __name__ == "__main__":
    sys.exit(main())
