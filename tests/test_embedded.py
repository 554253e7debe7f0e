"""`make run`'s embedded defaults, for real: SQLite, the filesystem Celery broker, the
local backend, gunicorn. Starts scripts/run.py as a new user would and calls the demo."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _read_until(process: subprocess.Popen, marker: str, timeout_s: float) -> str:
    os.set_blocking(process.stdout.fileno(), False)
    output, deadline = "", time.monotonic() + timeout_s
    while marker not in output:
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"run.py did not print {marker!r}:\n{output[-3000:]}")
        chunk = process.stdout.read()
        output += chunk.decode() if chunk else ""
        time.sleep(0.2)
    return output


def test_make_run_serves_the_demo_on_embedded_defaults(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")}
    env.update(MODELBAY_DATA_DIR=str(tmp_path), PORT=str(_free_port()))
    process = subprocess.Popen(
        [sys.executable, "scripts/run.py"], cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        output = _read_until(process, "Press Ctrl+C to stop.", timeout_s=240)
        assert re.search(r"demo service: .*", output).group(0) == "demo service:   digits (ready)"
        assert "demo@modelbay.local / modelbay-demo" in output
        url = re.search(r"curl -s -X POST (\S+)", output).group(1)
        key = re.search(r"Authorization: Bearer (mb_\S+)'", output).group(1)
        body = re.search(r"-d '(.+)'", output).group(1)
        request = urllib.request.Request(
            url, data=body.encode(), headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.load(response)
        assert answer["outputs"][0]["label"] == 0
        assert (tmp_path / "db.sqlite3").exists()
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], "runtime processes were left running"
