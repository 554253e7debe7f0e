"""Reconcile's health probe against a real runtime process: it presents the instance's
credential and only an answer naming the instance counts."""

import socket
import subprocess
import sys

import pytest

from conftest import REPO, wait_for
from controlplane.backends.base import InstanceSpec, credential_dir, remove_credential, write_credential
from controlplane.reconcile import probe

CREDENTIAL = "the-credential-of-i-probe000001"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def runtime(digits_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("probe")
    model_dir = folder / "model"
    model_dir.mkdir()
    (model_dir / "model.onnx").write_bytes(digits_model[0].read_bytes())
    spec = InstanceSpec("i-probe000001", "acme", "s", 1, "zone-a", model_dir, None, credential=CREDENTIAL)
    credential_file = write_credential(folder / "run", spec)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime", "--model-dir", str(model_dir), "--port", str(port),
         "--instance-id", "ns/i-probe000001", "--credential-file", str(credential_file)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: probe(endpoint, instance_id="i-probe000001", credential=CREDENTIAL).ready,
            timeout_s=60,
            what="the runtime to be ready",
        )
        yield endpoint, folder / "run"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_credential_file_is_private(runtime):
    _, run_dir = runtime
    folder = credential_dir(run_dir, "i-probe000001")
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / "credential").stat().st_mode & 0o777 == 0o600
    assert (folder / "credential").read_text() == CREDENTIAL


def test_the_right_instance_with_its_credential_is_ready(runtime):
    endpoint, _ = runtime
    assert probe(endpoint, instance_id="i-probe000001", credential=CREDENTIAL).ready


def test_another_instance_at_the_endpoint_is_wrong(runtime):
    endpoint, _ = runtime
    result = probe(endpoint, instance_id="i-someoneelse", credential=CREDENTIAL)
    assert not result.ready and result.wrong


def test_a_runtime_that_refuses_the_credential_is_wrong(runtime):
    endpoint, _ = runtime
    result = probe(endpoint, instance_id="i-probe000001", credential="not-its-credential")
    assert not result.ready and result.wrong


def test_nothing_listening_is_not_ready_but_not_wrong():
    result = probe(f"http://127.0.0.1:{free_port()}", instance_id="i-probe000001", credential=CREDENTIAL)
    assert not result.ready and not result.wrong


def test_removing_the_credential_removes_its_folder(tmp_path):
    spec = InstanceSpec("i-gone00000001", "acme", "s", 1, "zone-a", tmp_path, None)
    path = write_credential(tmp_path, spec)
    assert len(path.read_text()) >= 40  # none given: one is made up, never an open runtime
    remove_credential(tmp_path, "i-gone00000001")
    assert not credential_dir(tmp_path, "i-gone00000001").exists()
