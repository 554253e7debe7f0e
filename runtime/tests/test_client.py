"""The gateway's HTTP client against a real runtime process."""

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from runtime.client import ConnectFailed, Dropped, TimedOut, UpstreamPool

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def runtime(digits_onnx_dir):
    model_dir = digits_onnx_dir
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime", "--model-dir", str(model_dir), "--port", str(port), "--name", "d"],
        cwd=REPO,
    )
    endpoint = f"http://127.0.0.1:{port}"
    pool = UpstreamPool(connect_timeout=1)
    deadline = time.monotonic() + 60
    while True:
        try:
            if pool.request(endpoint, "GET", "/v2/health/ready", body=None, headers={}, timeout=1).status == 200:
                break
        except (ConnectFailed, Dropped):
            pass
        assert time.monotonic() < deadline, "runtime did not start"
        time.sleep(0.1)
    yield endpoint
    process.terminate()
    process.wait(timeout=10)


def _predict(pool, endpoint, inputs, timeout=5.0):
    body = json.dumps({"inputs": inputs}).encode()
    return pool.request(
        endpoint, "POST", "/predict", body=body, headers={"Content-Type": "application/json"}, timeout=timeout
    )


def test_calls_reuse_one_kept_alive_connection(runtime, digits):
    pool = UpstreamPool(connect_timeout=1)
    for row in digits.X[:5]:
        reply = _predict(pool, runtime, [row.tolist()])
        assert reply.status == 200
        assert reply.content_type.startswith("application/json")
        assert json.loads(reply.body)["outputs"][0]["label"] == digits.clf.predict(row[None])[0]
    assert len(pool._idle[runtime]) == 1


def test_error_answers_come_back_whole(runtime):
    reply = _predict(UpstreamPool(connect_timeout=1), runtime, [[1, 2]])
    assert reply.status == 422
    assert json.loads(reply.body)["code"] == "invalid_input"


def test_large_answers_are_read_in_full(runtime):
    reply = _predict(UpstreamPool(connect_timeout=1), runtime, [[0.0] * 64] * 3000)
    assert reply.status == 200
    assert len(json.loads(reply.body)["outputs"]) == 3000


def test_concurrent_callers_each_get_their_answer(runtime):
    pool, errors = UpstreamPool(connect_timeout=1), []

    def call(batch):
        reply = _predict(pool, runtime, [[0.0] * 64] * batch)
        if len(json.loads(reply.body)["outputs"]) != batch:
            errors.append(batch)

    threads = [threading.Thread(target=call, args=(n,)) for n in range(1, 17)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []


def test_a_stale_idle_connection_is_replaced(runtime):
    pool = UpstreamPool(connect_timeout=1)
    assert _predict(pool, runtime, [[0.0] * 64]).status == 200
    pool._idle[runtime][0].sock.close()  # as if the runtime had closed it
    assert _predict(pool, runtime, [[0.0] * 64]).status == 200


def test_nothing_listening_is_connect_failed():
    with pytest.raises(ConnectFailed):
        _predict(UpstreamPool(connect_timeout=1), f"http://127.0.0.1:{_free_port()}", [[0]])


def test_a_silent_server_times_out():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
        with pytest.raises(TimedOut):
            _predict(UpstreamPool(connect_timeout=1), endpoint, [[0]], timeout=0.3)


def test_an_answer_trickling_in_times_out_at_the_deadline_in_all():
    """The timeout is the whole answer's, not each read's: a byte every 0.1 s (each read well
    within 0.5 s, the whole answer 14 s) is cut off."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"

        def trickle():
            connection, _ = server.accept()
            with connection:
                connection.recv(65536)
                for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100:
                    try:
                        connection.sendall(bytes([byte]))
                    except OSError:
                        return  # hung up on
                    time.sleep(0.1)

        threading.Thread(target=trickle, daemon=True).start()
        with pytest.raises(TimedOut):
            _predict(UpstreamPool(connect_timeout=1), endpoint, [[0]], timeout=0.5)


def test_an_answer_larger_than_asked_for_is_cut_off(runtime):
    from runtime.client import TooLarge

    body = json.dumps({"inputs": [[0.0] * 64] * 50}).encode()
    pool = UpstreamPool(connect_timeout=1)
    with pytest.raises(TooLarge):
        pool.request(runtime, "POST", "/predict", body=body, headers={}, timeout=5, max_body=200)
    assert pool.request(runtime, "POST", "/predict", body=body, headers={}, timeout=5).status == 200


def test_a_runtime_on_a_unix_socket_with_a_path_longer_than_sun_path(digits_onnx_dir, tmp_path):
    """The runtime's --uds, and the client reaching it at ``unix://`` even where the path is
    too long for a socket address (through the folder's descriptor)."""
    from runtime.client import unix_endpoint

    folder = tmp_path / ("deep-" * 20)
    folder.mkdir()
    path = folder / "runtime.sock"
    assert len(str(path)) > 108
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime", "--model-dir", str(digits_onnx_dir), "--uds", "runtime.sock", "--name", "d"],
        cwd=folder,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    pool = UpstreamPool(connect_timeout=1)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                reply = pool.request(unix_endpoint(path), "GET", "/v2/health/ready", body=None, headers={}, timeout=1)
                if reply.status == 200:
                    break
            except (ConnectFailed, Dropped):
                pass
            assert time.monotonic() < deadline, "the runtime did not listen on its socket"
            time.sleep(0.1)
        body = json.dumps({"inputs": [[0.0] * 64]}).encode()
        reply = pool.request(unix_endpoint(path), "POST", "/predict", body=body, headers={}, timeout=5)
        assert reply.status == 200 and len(json.loads(reply.body)["outputs"]) == 1
    finally:
        process.terminate()
        process.wait(timeout=30)
    with pytest.raises(ConnectFailed):
        UpstreamPool(connect_timeout=1).request(
            unix_endpoint(path), "GET", "/v2/health/ready", body=None, headers={}, timeout=1
        )
