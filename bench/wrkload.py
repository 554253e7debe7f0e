"""Run wrk against one URL with a fixed POST body and read back its figures.

One wrk thread (``-t1``: the machine has 2 cores, shared with the servers), a bounded
duration, ``--latency``; a Lua ``done()`` hook prints the counts and percentiles as one
JSON line, so nothing depends on the layout of wrk's human-readable report (which is
still kept, and cross-checked for the "Non-2xx or 3xx responses" count).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

_MARK = "BENCH_RESULT "

_DONE_HOOK = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d,'
    .. '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    "__MARK__", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    calls_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: int  # connect + read + write + timeout
    raw: str = ""

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors

    def as_dict(self) -> dict:
        data = asdict(self)
        data.pop("raw")
        data["errors"] = self.errors
        return data


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def _lua_long_string(text: str) -> str:
    level = 1
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


def write_script(path: Path, body: bytes, headers: dict[str, str]) -> Path:
    """A wrk Lua script that POSTs ``body`` with ``headers`` and reports through done()."""
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_long_string(body.decode())}"]
    for name, value in headers.items():
        lines.append(f"wrk.headers[ {_lua_long_string(name)} ] = {_lua_long_string(value)}")
    path.write_text("\n".join(lines) + "\n" + _DONE_HOOK.replace("__MARK__", _MARK))
    return path


def run(
    url: str,
    script: Path,
    *,
    connections: int,
    duration_s: float,
    timeout_s: float = 5.0,
    cpus: set[int] | None = None,
) -> WrkResult:
    """One bounded wrk run (on ``cpus`` only, when given); raises RuntimeError when wrk
    fails or prints no result."""
    command = [
        wrk_binary() or "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=duration_s + timeout_s + 30,
        stdin=subprocess.DEVNULL,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    output = completed.stdout
    line = next((ln for ln in output.splitlines() if ln.startswith(_MARK)), None)
    if completed.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {completed.returncode}): {completed.stderr.strip() or output.strip()}")
    data = json.loads(line[len(_MARK):])
    non_2xx = data["status"]
    match = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output)
    if match:  # wrk's own line; the done() count is the same number
        non_2xx = max(non_2xx, int(match.group(1)))
    duration_s = data["duration_us"] / 1e6
    return WrkResult(
        requests=data["requests"],
        duration_s=duration_s,
        calls_per_s=data["requests"] / duration_s if duration_s else 0.0,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        mean_ms=data["mean_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        non_2xx=non_2xx,
        socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
        raw=output,
    )
