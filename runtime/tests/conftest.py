"""Fixtures for the runtime tests: real model packages in tmp dirs and real
runtime subprocesses on free ports. No Django anywhere."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Runtime:
    """A runtime subprocess; ``client`` talks to it."""

    proc: subprocess.Popen
    url: str
    stderr_path: Path
    client: httpx.Client = field(repr=False)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_loaded(self, timeout: float = 60.0) -> dict:
        """Wait until readiness is no longer 'loading'; return its body."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.client.get("/v2/health/ready")
            body = r.json()
            if not body.get("loading"):
                return body
            if time.monotonic() > deadline:
                raise TimeoutError(f"model still loading after {timeout}s\n{self.stderr()}")
            time.sleep(0.05)

    def stop(self) -> int:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start_runtime(
    model_dir: Path,
    tmp_dir: Path,
    *,
    name: str = "model",
    version: int = 1,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
    credential: str | None = None,
    instance_id: str = "test-instance",
) -> Runtime:
    """``credential``: written to a file given with --credential-file; ``client`` sends it."""
    port = free_port()
    stderr_path = tmp_dir / f"runtime-{port}.stderr"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MODELBAY_RUNTIME_")}
    full_env.update(env or {})
    cmd = [
        sys.executable, "-m", "runtime",
        "--model-dir", str(model_dir),
        "--port", str(port),
        "--name", name,
        "--model-version", str(version),
        "--instance-id", instance_id,
    ]
    headers = {}
    if credential is not None:
        credential_file = tmp_dir / f"credential-{port}"
        credential_file.write_text(credential)
        credential_file.chmod(0o600)
        cmd += ["--credential-file", str(credential_file)]
        headers["Authorization"] = f"Bearer {credential}"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}"
    rt = Runtime(proc, url, stderr_path, httpx.Client(base_url=url, timeout=30, headers=headers))
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"runtime exited with {proc.returncode}\n{rt.stderr()}")
        try:
            if rt.client.get("/v2/health/live").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            rt.stop()
            raise TimeoutError(f"runtime did not come up\n{rt.stderr()}")
        time.sleep(0.05)
    if wait_ready:
        body = rt.wait_loaded()
        if not body.get("ready"):
            rt.stop()
            raise RuntimeError(f"model failed to load: {body}\n{rt.stderr()}")
    return rt


# ---------------------------------------------------------------------------
# model packages


@dataclass
class Digits:
    X: np.ndarray  # float32, [1797, 64], scaled to [0, 1]
    y: np.ndarray
    clf: object


@pytest.fixture(scope="session")
def digits() -> Digits:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    clf = LogisticRegression(max_iter=1000).fit(X, y)
    return Digits(X, y, clf)


@pytest.fixture(scope="session")
def digits_onnx_dir(digits, tmp_path_factory) -> Path:
    """A bare ONNX package (no manifest) of the digits classifier, zipmap off."""
    from skl2onnx import to_onnx

    onx = to_onnx(digits.clf, digits.X[:1], options={id(digits.clf): {"zipmap": False}})
    d = tmp_path_factory.mktemp("digits-onnx")
    (d / "digits.onnx").write_bytes(onx.SerializeToString())
    return d


@pytest.fixture(scope="session")
def digits_skops_dir(digits, tmp_path_factory) -> Path:
    import skops.io as sio

    d = tmp_path_factory.mktemp("digits-sklearn")
    sio.dump(digits.clf, d / "model.skops")
    (d / "modelbay.yaml").write_text("framework: sklearn\nname: digits\n")
    return d


def write_python_model(d: Path, code: str, manifest: str | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "predictor.py").write_text(textwrap.dedent(code))
    (d / "modelbay.yaml").write_text(manifest or 'framework: python\nentrypoint: "predictor:Model"\n')
    return d


@pytest.fixture
def rt_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rt")
