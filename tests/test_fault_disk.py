"""A full disk and a model that prints without end (issue 15, "faults survived", point 4).

For real: a small file system of the test's own (a 4 MiB tmpfs, mounted as root, as `make
test` runs on CI) holds the artifacts and the uploads' temporary files, filled up but for
a little room, so that an upload meets "no space left on device" while Django receives it,
while it is checked, unpacked, or stored. Each time the API answers 507
``insufficient_storage``, nothing is left on that file system but what was there before, no
row is written, and once there is room again the very same upload succeeds.

A model that prints in a loop on the local backend: its log and the one rotated file stay
under MODELBAY_INSTANCE_LOG_BYTES while it prints, and the logs API shows its latest lines.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import tempfile
import threading
from pathlib import Path

import psutil
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from conftest import make_zip, python_package, wait_for
from controlplane.backends import instance_log
from controlplane.models import Model, ModelVersion
from tests.support import NUMPY_MODEL, deploy, predict, upload, wait_status

KIB, MIB = 1024, 1024 * 1024
DISK_BYTES = 4 * MIB
NO_ROOM = {"code": "insufficient_storage", "detail": "The server has no room to store this upload; nothing was kept."}

MODEL_SOURCE = """
class Model:
    def load(self, model_dir):
        self.weights = open(model_dir + "/weights.bin", "rb").read()

    def predict(self, inputs):
        return [len(self.weights) for _ in inputs]
"""


# --- a small disk -----------------------------------------------------------------------
@pytest.fixture
def small_disk():
    """A 4 MiB tmpfs of this test's own, unmounted afterwards whatever happened."""
    if os.geteuid() != 0:
        pytest.fail("This test mounts a small file system of its own: it needs root (as `make test` runs on CI).")
    folder = Path(tempfile.mkdtemp(prefix="mb-disk-"))
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES},mode=0755", "tmpfs", str(folder)],
        check=True,
        capture_output=True,
    )
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)
        folder.rmdir()


def _room(folder: Path) -> int:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def _fill(folder: Path, *, leave: int) -> Path:
    """Fill the file system of ``folder`` but for ``leave`` bytes (to the brim with 0);
    return the ballast file."""
    ballast = folder / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        left = _room(folder) - leave
        while left > 0:
            left -= os.write(fd, b"\0" * min(MIB, left))
    except OSError as error:
        if not (leave == 0 and error.errno == errno.ENOSPC):
            raise
    finally:
        os.close(fd)
    return ballast


def _contents(folder: Path) -> dict[str, int]:
    """Every file and folder under ``folder``, with its size (0 for a folder)."""
    return {str(p.relative_to(folder)): p.stat().st_size if p.is_file() else 0 for p in folder.rglob("*")}


def _package(payload_bytes: int) -> bytes:
    """A python model package whose weights are ``payload_bytes`` of random (incompressible) bytes."""
    return make_zip(
        {
            "modelbay.yaml": "framework: python\nentrypoint: predictor:Model\n",
            "predictor.py": MODEL_SOURCE,
            "weights.bin": os.urandom(payload_bytes),
        }
    )


def _file(content: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile("model.zip", content, content_type="application/zip")


def _rows() -> tuple[int, int]:
    return Model.objects.count(), ModelVersion.objects.count()


@pytest.fixture
def disk_settings(small_disk, settings):
    """The artifacts and the uploads' temporary files (Django's and the checks') on the small disk."""
    settings.MODELBAY_ARTIFACT_ROOT = small_disk / "artifacts"
    settings.MODELBAY_UPLOAD_TMP_DIR = small_disk / "uploads"
    settings.FILE_UPLOAD_TEMP_DIR = str(settings.MODELBAY_UPLOAD_TMP_DIR)
    for folder in (settings.MODELBAY_ARTIFACT_ROOT, settings.MODELBAY_UPLOAD_TMP_DIR):
        folder.mkdir()
    return settings


# --- uploads ----------------------------------------------------------------------------
# Where the 1 MiB upload meets the full disk: (what Django keeps in memory, room left).
# Django writes an upload over FILE_UPLOAD_MAX_MEMORY_SIZE to a temporary file as it comes
# in; the checks copy the upload into a work folder, then unpack it beside.
WHERE = {
    "while Django receives it": (64 * KIB, 512 * KIB),
    "while it is copied to be checked": (64 * KIB, MIB + 512 * KIB),
    "while it is unpacked": (4 * MIB, MIB + 512 * KIB),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", WHERE)
def test_an_upload_that_finds_the_disk_full_answers_507_and_keeps_nothing(api, disk_settings, small_disk, where):
    disk_settings.FILE_UPLOAD_MAX_MEMORY_SIZE, leave = WHERE[where]
    package = _package(MIB)
    ballast = _fill(small_disk, leave=leave)
    before, rows = _contents(small_disk), _rows()

    response = api.post("/api/v1/models", {"name": "heavy", "file": _file(package)}, format="multipart")

    assert response.status_code == 507, response.content
    assert response.json() == NO_ROOM
    assert str(small_disk) not in response.content.decode()
    assert _contents(small_disk) == before  # no temporary file, work folder or staging folder left
    assert _rows() == rows

    ballast.unlink()
    response = api.post("/api/v1/models", {"name": "heavy", "file": _file(package)}, format="multipart")
    assert response.status_code == 201, response.content
    [version] = response.json()["versions"]
    stored = disk_settings.MODELBAY_ARTIFACT_ROOT / version["sha256"]
    assert (stored / "unpacked" / "weights.bin").stat().st_size == MIB
    assert list(disk_settings.MODELBAY_UPLOAD_TMP_DIR.iterdir()) == []


@pytest.mark.timeout(60)
def test_a_new_version_that_cannot_be_stored_answers_507_and_keeps_nothing(api, disk_settings, small_disk, tmp_path):
    # The uploads wait on another file system: storing copies them to the full one.
    disk_settings.MODELBAY_UPLOAD_TMP_DIR = tmp_path / "uploads"
    disk_settings.FILE_UPLOAD_TEMP_DIR = str(disk_settings.MODELBAY_UPLOAD_TMP_DIR)
    disk_settings.MODELBAY_UPLOAD_TMP_DIR.mkdir()
    disk_settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 64 * KIB
    first, second = _package(512 * KIB), _package(512 * KIB)
    upload(api, "growing", "first.zip", first)
    ballast = _fill(small_disk, leave=256 * KIB)
    before, rows = _contents(small_disk), _rows()

    response = api.post("/api/v1/models/growing/versions", {"file": _file(second)}, format="multipart")

    assert response.status_code == 507, response.content
    assert response.json() == NO_ROOM
    assert _contents(small_disk) == before
    assert _rows() == rows
    assert list(disk_settings.MODELBAY_UPLOAD_TMP_DIR.iterdir()) == []

    ballast.unlink()
    response = api.post("/api/v1/models/growing/versions", {"file": _file(second)}, format="multipart")
    assert response.status_code == 201, response.content
    assert response.json()["version"] == 2


@pytest.mark.timeout(60)
def test_the_console_shows_a_full_disk_on_the_upload_form(owner, disk_settings, small_disk):
    disk_settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 64 * KIB
    ballast = _fill(small_disk, leave=512 * KIB)
    before, rows = _contents(small_disk), _rows()
    client = Client()
    client.force_login(owner)

    response = client.post(reverse("console:model_list"), {"name": "heavy", "file": _file(_package(MIB))})

    assert response.status_code == 507
    assert NO_ROOM["detail"] in response.content.decode()
    assert _contents(small_disk) == before
    assert _rows() == rows
    ballast.unlink()


# --- a failed deploy ends failed --------------------------------------------------------
@pytest.mark.timeout(180)
def test_a_venv_that_finds_the_disk_full_fails_the_service_and_is_not_kept(worker, api, small_disk):
    worker.ensure("local", MODELBAY_VENV_DIR=str(small_disk))
    package = python_package(NUMPY_MODEL, 'requirements: ["six"]\n')
    upload(api, "needs-six", "needs-six.zip", package)
    deploy(api, "needs-six", "needs-six")

    body = wait_status(api, "needs-six", statuses=("failed",), timeout_s=120)

    assert "The disk is full (no space left on device)" in body["error"]
    assert str(small_disk) not in body["error"]
    # The half-made venv is gone; only the (empty) lock file of its build remains.
    leftovers = _contents(small_disk)
    assert all(name.endswith(".lock") and size == 0 for name, size in leftovers.items()), leftovers


# --- bounded instance logs ------------------------------------------------------------
LOG_BYTES = 64 * KIB
LINES = 40_000  # 62 bytes each: about 37 times what one log file may hold

CHATTY_MODEL = f"""
import threading

class Model:
    def load(self, model_dir):
        pass

    def predict(self, inputs):
        threading.Thread(target=self._chatter).start()
        return inputs

    def _chatter(self):
        for n in range({LINES}):
            print(f"line {{n:09d}} {{'x' * 46}}", flush=True)
        print("done", flush=True)
"""


@pytest.fixture
def chatty_worker(worker, settings):
    """The worker, with instance logs of LOG_BYTES per file."""
    worker.ensure("local", MODELBAY_INSTANCE_LOG_BYTES=str(LOG_BYTES))
    settings.MODELBAY_INSTANCE_LOG_BYTES = LOG_BYTES
    return worker


def _log_files(settings, instance_id: str) -> dict[str, int]:
    sizes = {}
    for path in instance_log.folder(settings.MODELBAY_RUN_DIR).glob(f"{instance_id}.log*"):
        try:
            sizes[path.name] = path.stat().st_size
        except FileNotFoundError:
            pass  # rotated away meanwhile
    return sizes


def _numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"^line (\d{9}) x{46}$", text, flags=re.MULTILINE)]


def _writers_of(path: Path) -> list[psutil.Process]:
    """The log writers (alive, not zombies) of the log at ``path``."""
    found = []
    for process in psutil.process_iter(["cmdline", "environ", "status"]):
        if process.info["status"] == psutil.STATUS_ZOMBIE or instance_log.__file__ not in (
            process.info["cmdline"] or []
        ):
            continue
        if (process.info["environ"] or {}).get(instance_log.LOG_ENV) == str(path):
            found.append(process)
    return found


@pytest.mark.timeout(180)
def test_a_model_that_prints_in_a_loop_keeps_its_logs_bounded(chatty_worker, api, settings):
    upload(api, "chatty", "chatty.zip", python_package(CHATTY_MODEL))
    deploy(api, "chatty", "chatty")
    instance_id = wait_status(api, "chatty")["instances"][0]["id"]
    log_path = instance_log.folder(settings.MODELBAY_RUN_DIR) / f"{instance_id}.log"

    assert predict(api, "chatty", ["go"]).status_code == 200
    sizes = []

    def finished():
        sizes.append(_log_files(settings, instance_id))  # sampled while it prints
        return instance_log.tail(log_path, 1) == "done\n"

    wait_for(finished, timeout_s=60, interval_s=0.02, what="the model to print its last line")
    assert all(set(sample) <= {log_path.name, f"{log_path.name}.1"} for sample in sizes), sizes
    assert all(size <= LOG_BYTES for sample in sizes for size in sample.values()), sizes
    assert set(_log_files(settings, instance_id)) == {log_path.name, f"{log_path.name}.1"}  # it rotated

    # The logs API shows the latest lines, from the rotated file too when the log has fewer.
    logs = api.get("/api/v1/services/chatty/logs", {"instance": instance_id, "tail": 3}).json()["logs"]
    assert logs.splitlines()[-1] == "done" and _numbers(logs) == [LINES - 2, LINES - 1]
    in_log = len(log_path.read_text().splitlines())
    logs = api.get("/api/v1/services/chatty/logs", {"instance": instance_id, "tail": 10_000}).json()["logs"]
    numbers = _numbers(logs)
    assert len(numbers) > in_log  # some came from the rotated file
    assert numbers == list(range(LINES - len(numbers), LINES))  # in order, none lost in between
    assert len(logs.encode()) <= 2 * LOG_BYTES

    # The log's writer ends with its instance. (Its command line does not name the instance:
    # tools find an instance's runtime by the id in command lines.)
    [writer] = _writers_of(log_path)
    assert instance_id not in " ".join(writer.cmdline())
    assert api.delete("/api/v1/services/chatty").status_code == 202
    wait_for(lambda: not _writers_of(log_path), timeout_s=60, what="the log writer to end with its instance")


@pytest.mark.timeout(60)
def test_a_log_writer_on_a_full_disk_drops_output_and_goes_on(small_disk):
    ballast = _fill(small_disk, leave=0)
    log_path = small_disk / "i-full.log"
    pipe = instance_log.start_writer(log_path, max_bytes=LOG_BYTES)
    try:
        # An instance printing on: never blocked by the full disk (the writer drains the pipe).
        writer = threading.Thread(target=lambda: [os.write(pipe, b"y" * 1000 + b"\n") for _ in range(2000)])
        writer.start()
        writer.join(timeout=20)
        assert not writer.is_alive(), "the instance was blocked on its output"
        assert sum(_contents(small_disk).values()) <= ballast.stat().st_size + 2 * LOG_BYTES

        ballast.unlink()
        os.write(pipe, b"room again\n")
        wait_for(
            lambda: instance_log.tail(log_path, 1) == "room again\n", timeout_s=10, what="output after room is made"
        )
    finally:
        os.close(pipe)
    wait_for(lambda: not _writers_of(log_path), timeout_s=10, what="the writer to end with its pipe")
