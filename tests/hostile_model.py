"""A hostile tenant's python model. Its ``predict`` takes a list of attempts and reports,
for each, whether it ``succeeded`` or was ``refused`` (and by what error):

- ``{"kind": "read", "target": path}``: read a byte of a file;
- ``{"kind": "append", "target": path}``: open a file for writing (nothing is written);
- ``{"kind": "create", "target": folder}``: make a file in a folder (removed at once);
- ``{"kind": "tcp", "target": "host:port"}``: open a TCP connection;
- ``{"kind": "unix", "target": path}``: connect to a Unix socket;
- ``{"kind": "signal", "target": pid}``: send signal 0 to a process;
- ``{"kind": "report"}``: what it sees of itself (uid, environment names, processes, limits).

The tests package this file as the model (``predictor.py``) and also run ``attempt`` in
their own process, unsandboxed, to show that each attempt does succeed where nothing
stands in its way.
"""

import os
import resource
import socket

PROBE_FILE = ".hostile-probe"


def _connect_unix(path: str) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2)
    try:
        if len(path) < 100:
            sock.connect(path)
        else:  # too long for sun_path: through the folder's descriptor
            folder = os.open(os.path.dirname(path), os.O_PATH)
            try:
                sock.connect(f"/proc/self/fd/{folder}/{os.path.basename(path)}")
            finally:
                os.close(folder)
    finally:
        sock.close()


def report() -> dict:
    tmp_writable = True
    try:
        with open("/tmp/.hostile-tmp", "w") as scratch:
            scratch.write("x")
        os.unlink("/tmp/.hostile-tmp")
    except OSError:
        tmp_writable = False
    return {
        "uid": os.getuid(),
        "environment": sorted(os.environ),
        "pids": sorted(int(name) for name in os.listdir("/proc") if name.isdigit()),
        "rlimit_data": resource.getrlimit(resource.RLIMIT_DATA)[0],
        "tmp_writable": tmp_writable,
    }


def attempt(probe: dict):
    kind, target = probe["kind"], probe.get("target")
    if kind == "report":
        return report()
    try:
        if kind == "read":
            with open(target, "rb") as file:
                file.read(1)
        elif kind == "append":
            with open(target, "ab"):
                pass
        elif kind == "create":
            path = os.path.join(target, PROBE_FILE)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(path)
        elif kind == "tcp":
            host, port = target.rsplit(":", 1)
            socket.create_connection((host, int(port)), timeout=2).close()
        elif kind == "unix":
            _connect_unix(target)
        elif kind == "signal":
            os.kill(int(target), 0)
        else:
            return f"unknown attempt {kind!r}"
    except OSError as error:
        return f"refused: {type(error).__name__}: {error}"
    return "succeeded"


class Model:
    def load(self, model_dir):
        pass

    def predict(self, inputs):
        return [attempt(probe) for probe in inputs]
