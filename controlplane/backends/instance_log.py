"""An instance's output on this host, bounded: at most ``max_bytes`` in its log file and
as much in one rotated file before it (``<id>.log``, ``<id>.log.1``).

The local backend hands an instance's processes the write end of a pipe, never a file: a
small writer process of ours (this file, run as a script) appends what comes out of the
pipe to the log, and past ``max_bytes`` renames the log over the rotated file and starts a
new one. It runs in a session of its own, so it outlives the worker as the instance does,
and ends when the instance's last process has closed the pipe. A write that fails (a full
disk) loses that output, never blocks or stops the instance.

The writer runs as ``python -I -S instance_log.py``, outside Django and the project: this
module imports nothing but the standard library. It is told its log and bound in its
environment (``LOG_ENV``), not on its command line, where tools (and tests) find an
instance's runtime by the instance's id.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

_CHUNK = 64 * 1024
LOG_ENV, MAX_BYTES_ENV = "MODELBAY_INSTANCE_LOG", "MODELBAY_INSTANCE_LOG_BYTES"


def folder(run_dir: Path) -> Path:
    """Where the logs of the instances on this host are (both backends')."""
    return run_dir / "logs"


def rotated_path(path: Path) -> Path:
    return path.with_name(path.name + ".1")


def start_writer(path: Path, *, max_bytes: int) -> int:
    """Start the writer of the log at ``path`` and return the write end of its pipe, for
    the instance's processes; the caller closes its own copy once they have it."""
    read_end, write_end = os.pipe()
    try:
        subprocess.Popen(
            [sys.executable, "-I", "-S", __file__],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
            # Its log and bound, and none of the worker's secrets.
            env={LOG_ENV: str(path), MAX_BYTES_ENV: str(max_bytes), "LANG": "C.UTF-8"},
            start_new_session=True,  # it outlives the worker, as the instance does
        )
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    return write_end


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of the log at ``path``, from the rotated file too when the
    log has fewer."""
    newest = _last_lines(path, lines)
    if len(newest) < lines:
        newest.extendleft(reversed(_last_lines(rotated_path(path), lines - len(newest))))
    return "".join(newest)


def _last_lines(path: Path, lines: int) -> deque[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as log:
            return deque(log, maxlen=lines)
    except FileNotFoundError:
        return deque()


def prune(logs: Path, *, keep: set[str], idle_s: float) -> list[str]:
    """Remove the logs of the instances not in ``keep`` that nothing wrote to for ``idle_s``
    seconds; return the names of the files removed."""
    cutoff = time.time() - idle_s
    removed = []
    for path in logs.glob("*.log*"):
        try:
            if path.name.partition(".log")[0] not in keep and path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path.name)
        except FileNotFoundError:
            pass  # removed meanwhile
    return removed


def copy_rotating(source: int, path: Path, *, max_bytes: int) -> None:
    """Append what comes out of the file descriptor ``source`` to ``path`` until its end,
    keeping each file under ``max_bytes`` (the writer's work)."""
    log: int | None = None
    while chunk := os.read(source, _CHUNK):
        chunk = chunk[-max_bytes:]
        try:
            if log is None:
                log = _open(path)
            if os.fstat(log).st_size + len(chunk) > max_bytes:
                os.close(log)
                log = None
                os.replace(path, rotated_path(path))
                log = _open(path)
            _write_all(log, chunk)
        except OSError:
            # A full disk or the folder gone: this output is lost; try again with the next.
            if log is not None:
                os.close(log)
                log = None


def _open(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


if __name__ == "__main__":
    copy_rotating(sys.stdin.fileno(), Path(os.environ[LOG_ENV]), max_bytes=int(os.environ[MAX_BYTES_ENV]))
