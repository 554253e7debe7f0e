"""The bounded instance log: the writer's rotation, reading its tail, pruning gone instances'."""

import os
import threading
import time

from controlplane.backends import instance_log


def _feed(data: bytes) -> int:
    """A real pipe that a thread fills with ``data``, then closes; returns its read end."""
    read_end, write_end = os.pipe()

    def write():
        for start in range(0, len(data), 4096):
            os.write(write_end, data[start : start + 4096])
        os.close(write_end)

    threading.Thread(target=write, daemon=True).start()
    return read_end


def test_the_log_rotates_once_full_and_keeps_one_rotated_file(tmp_path):
    path = tmp_path / "i-1.log"
    data = b"".join(f"line {n:06d}\n".encode() for n in range(100_000))  # 1.2 MB
    source = _feed(data)

    instance_log.copy_rotating(source, path, max_bytes=100_000)  # more than a pipe holds

    os.close(source)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["i-1.log", "i-1.log.1"]
    assert all((tmp_path / name).stat().st_size <= 100_000 for name in files)
    kept = instance_log.rotated_path(path).read_bytes() + path.read_bytes()
    assert data.endswith(kept) and len(kept) > 100_000  # the end of it, nothing missing between the files


def test_a_chunk_larger_than_the_bound_keeps_its_end(tmp_path):
    path = tmp_path / "i-1.log"
    read_end, write_end = os.pipe()
    os.write(write_end, b"a" * 5000 + b"end\n")  # in the pipe before the writer reads: one chunk
    os.close(write_end)

    instance_log.copy_rotating(read_end, path, max_bytes=1000)

    os.close(read_end)
    assert path.read_bytes() == b"a" * 996 + b"end\n"


def test_tail_reads_the_rotated_file_when_the_log_has_fewer_lines(tmp_path):
    path = tmp_path / "i-1.log"
    instance_log.rotated_path(path).write_text("one\ntwo\nthr")  # a line cut by the rotation
    path.write_text("ee\nfour\n")

    assert instance_log.tail(path, 1) == "four\n"
    assert instance_log.tail(path, 2) == "ee\nfour\n"  # the log alone has two lines
    assert instance_log.tail(path, 3) == "three\nfour\n"
    assert instance_log.tail(path, 100) == "one\ntwo\nthree\nfour\n"
    assert instance_log.tail(tmp_path / "i-none.log", 10) == ""


def test_prune_removes_only_the_logs_of_gone_instances_idle_long_enough(tmp_path):
    old = time.time() - 7200
    for name in ("i-gone.log", "i-gone.log.1", "i-live.log", "i-fresh.log"):
        (tmp_path / name).write_text("x\n")
    for name in ("i-gone.log", "i-gone.log.1", "i-live.log"):
        os.utime(tmp_path / name, (old, old))

    removed = instance_log.prune(tmp_path, keep={"i-live"}, idle_s=3600)

    assert sorted(removed) == ["i-gone.log", "i-gone.log.1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i-fresh.log", "i-live.log"]
