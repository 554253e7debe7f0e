"""The gateway's asyncio client (runtime/aclient.py) against real runtime processes and
small real socket servers: the cases of test_client.py and test_authentication.py for the
sync pool, and cancellation. Every test runs on uvloop (as uvicorn runs the gateway) and
on asyncio's own loop."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import uvloop

from runtime.aclient import AsyncUpstreamPool
from runtime.client import (
    ConnectFailed,
    Dropped,
    TimedOut,
    TooLarge,
    UpstreamPool,
    WrongInstance,
    auth_header,
    unix_endpoint,
)

from .conftest import REPO_ROOT, free_port, start_runtime

CREDENTIAL = "s3cret-credential-of-i-abc123"
INSTANCE = b"i-abc123"
AUTH = auth_header(CREDENTIAL)
JSON = {"Content-Type": "application/json"}


_pools: list[AsyncUpstreamPool] = []


def _pool(connect_timeout: float = 1) -> AsyncUpstreamPool:
    """A pool that ``run`` closes before its loop ends."""
    pool = AsyncUpstreamPool(connect_timeout=connect_timeout)
    _pools.append(pool)
    return pool


@pytest.fixture(params=["uvloop", "asyncio"])
def run(request):
    """Runs a coroutine to its end on a fresh event loop of the kind given, then closes the
    pools used on that loop (as the gateway does at shutdown)."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    async def close_pools():
        loop = asyncio.get_running_loop()
        for pool in [pool for pool in _pools if pool._loop is not None and pool._loop() is loop]:
            pool.close()
            _pools.remove(pool)
        await asyncio.sleep(0)  # the transports' closing callbacks

    def run(coroutine):
        with asyncio.Runner(loop_factory=factory) as runner:
            try:
                return runner.run(coroutine)
            finally:
                runner.run(close_pools())

    return run


def _wait_listening(endpoint: str, process: subprocess.Popen, **call) -> None:
    pool = UpstreamPool(connect_timeout=1)
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, "the runtime exited"
        try:
            if (
                pool.request(endpoint, "GET", "/v2/health/ready", body=None, headers={}, timeout=1, **call).status
                == 200
            ):
                break
        except (ConnectFailed, Dropped):
            pass
        assert time.monotonic() < deadline, "the runtime did not get ready"
        time.sleep(0.1)
    pool.clear()


@pytest.fixture(scope="module")
def secured(digits_onnx_dir, tmp_path_factory):
    """A runtime as the control plane runs a local instance: on a Unix socket, with a
    credential and an instance id. Yields its endpoint."""
    folder = tmp_path_factory.mktemp("aclient")
    credential_file = folder / "credential"
    credential_file.write_text(CREDENTIAL)
    credential_file.chmod(0o600)
    path = folder / "runtime.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime", "--model-dir", str(digits_onnx_dir), "--uds", str(path), "--name", "d",
         "--credential-file", str(credential_file), "--instance-id", "ns1234/i-abc123"],
        cwd=REPO_ROOT,
    )  # fmt: skip
    endpoint = unix_endpoint(path)
    try:
        _wait_listening(endpoint, process, auth=AUTH)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def plain(digits_onnx_dir, tmp_path_factory):
    """A runtime on loopback TCP, open and naming no instance. Yields its endpoint."""
    rt = start_runtime(digits_onnx_dir, tmp_path_factory.mktemp("aclient-tcp"), name="d", instance_id="")
    yield rt.url
    rt.stop()


@pytest.fixture(params=["unix", "tcp"])
def runtime(request):
    """(endpoint, the keyword arguments its calls need): each real runtime in turn."""
    if request.param == "unix":
        return request.getfixturevalue("secured"), {"auth": AUTH, "instance": INSTANCE}
    return request.getfixturevalue("plain"), {}


async def _predict(pool, endpoint, inputs, *, timeout=5.0, **call):
    body = json.dumps({"inputs": inputs}).encode()
    return await pool.request(endpoint, "POST", "/predict", body=body, headers=JSON, timeout=timeout, **call)


# ---------------------------------------------------------------------------
# against the real runtimes


def test_calls_reuse_one_kept_alive_connection(run, runtime, digits):
    endpoint, call = runtime

    async def main():
        pool = _pool()
        connections = set()
        for row in digits.X[:5]:
            reply = await _predict(pool, endpoint, [row.tolist()], **call)
            assert reply.status == 200
            assert reply.content_type.startswith("application/json")
            assert json.loads(reply.body)["outputs"][0]["label"] == digits.clf.predict(row[None])[0]
            assert len(pool._idle[endpoint]) == 1
            connections.add(pool._idle[endpoint][0])
        assert len(connections) == 1
        pool.close()
        assert not pool._idle

    run(main())


def test_error_answers_come_back_whole(run, runtime):
    endpoint, call = runtime

    async def main():
        return await _predict(_pool(), endpoint, [[1, 2]], **call)

    reply = run(main())
    assert reply.status == 422
    assert json.loads(reply.body)["code"] == "invalid_input"


def test_large_answers_are_read_in_full(run, runtime):
    endpoint, call = runtime

    async def main():
        return await _predict(_pool(), endpoint, [[0.0] * 64] * 3000, **call)

    reply = run(main())
    assert reply.status == 200
    assert len(json.loads(reply.body)["outputs"]) == 3000


def test_concurrent_callers_each_get_their_answer(run, runtime):
    endpoint, call = runtime

    async def main():
        pool = _pool()
        for _ in range(2):  # the second time on the connections the first left idle
            replies = await asyncio.gather(
                *(_predict(pool, endpoint, [[0.0] * 64] * batch, **call) for batch in range(1, 17))
            )
            assert [len(json.loads(reply.body)["outputs"]) for reply in replies] == list(range(1, 17))
            assert 1 <= len(pool._idle[endpoint]) <= 16

    run(main())


def test_a_stale_idle_connection_is_replaced(run, runtime):
    endpoint, call = runtime

    async def main():
        pool = _pool()
        assert (await _predict(pool, endpoint, [[0.0] * 64], **call)).status == 200
        stale = pool._idle[endpoint][0]
        stale.transport.close()  # as if the runtime had closed it
        assert (await _predict(pool, endpoint, [[0.0] * 64], **call)).status == 200
        assert pool._idle[endpoint][0] is not stale

    run(main())


def test_an_answer_larger_than_asked_for_is_cut_off(run, runtime):
    endpoint, call = runtime
    body = json.dumps({"inputs": [[0.0] * 64] * 50}).encode()

    async def main():
        pool = _pool()
        with pytest.raises(TooLarge):
            await pool.request(endpoint, "POST", "/predict", body=body, headers={}, timeout=5, max_body=200, **call)
        assert not pool._idle.get(endpoint)  # closed, not kept
        assert (
            await pool.request(endpoint, "POST", "/predict", body=body, headers={}, timeout=5, **call)
        ).status == 200

    run(main())


def test_the_credential_is_sent_and_the_instance_checked(run, secured):
    async def main():
        pool = _pool()

        async def call(credential, instance):
            return await _predict(pool, secured, [[0.0] * 64], auth=auth_header(credential), instance=instance)

        assert (await call(CREDENTIAL, INSTANCE)).status == 200
        assert (await call(CREDENTIAL, INSTANCE)).status == 200
        assert len(pool._idle[secured]) == 1  # kept alive
        reply = await call("wrong", INSTANCE)  # a 401 is an answer: it comes back as one
        assert reply.status == 401
        assert json.loads(reply.body)["code"] == "unauthenticated"
        with pytest.raises(WrongInstance):
            await call(CREDENTIAL, b"i-other")  # a runtime that names another instance: dropped
        assert secured not in pool._idle  # its connections are not kept
        assert (await call(CREDENTIAL, INSTANCE)).status == 200

    run(main())


def test_a_runtime_without_the_header_is_the_wrong_instance(run, plain):
    async def main():
        pool = _pool()
        with pytest.raises(WrongInstance, match="an unnamed runtime"):
            await pool.request(plain, "GET", "/v2/health/ready", body=None, headers={}, timeout=5, instance=INSTANCE)
        assert plain not in pool._idle

    run(main())


def test_a_runtime_on_a_unix_socket_with_a_path_longer_than_sun_path(run, digits_onnx_dir, tmp_path):
    folder = tmp_path / ("deep-" * 20)
    folder.mkdir()
    path = folder / "runtime.sock"
    assert len(str(path)) > 108
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime", "--model-dir", str(digits_onnx_dir), "--uds", "runtime.sock", "--name", "d"],
        cwd=folder,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
    )
    endpoint = unix_endpoint(path)
    body = json.dumps({"inputs": [[0.0] * 64]}).encode()

    async def main():
        pool = _pool()
        for _ in range(3):
            reply = await pool.request(endpoint, "POST", "/predict", body=body, headers={}, timeout=5)
            assert reply.status == 200 and len(json.loads(reply.body)["outputs"]) == 1
        assert len(pool._idle[endpoint]) == 1

    try:
        _wait_listening(endpoint, process)
        run(main())
    finally:
        process.terminate()
        process.wait(timeout=30)

    async def gone():
        with pytest.raises(ConnectFailed):
            await _pool().request(endpoint, "GET", "/v2/health/ready", body=None, headers={}, timeout=1)

    run(gone())


# ---------------------------------------------------------------------------
# no connection


def test_nothing_listening_is_connect_failed(run, tmp_path):
    not_listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    not_listening.bind(str(tmp_path / "bound.sock"))  # a socket file nobody listens on
    long_folder = tmp_path / ("deep-" * 20)
    long_folder.mkdir()
    endpoints = [
        f"http://127.0.0.1:{free_port()}",  # refused
        unix_endpoint(tmp_path / "missing.sock"),  # no such file
        unix_endpoint(tmp_path / "bound.sock"),  # refused
        unix_endpoint(long_folder / "missing.sock"),  # no such file, through /proc/self/fd
        unix_endpoint(tmp_path / ("missing-" * 20) / "runtime.sock"),  # no such folder
    ]

    async def main():
        pool = _pool()
        for endpoint in endpoints:
            started = time.monotonic()
            with pytest.raises(ConnectFailed):
                await _predict(pool, endpoint, [[0]])
            assert time.monotonic() - started < 0.5, endpoint

    try:
        run(main())
    finally:
        not_listening.close()


def _unanswered_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A TCP port whose accept queue is full: the next connect is never answered."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(server.getsockname())
        except BlockingIOError:
            pass
        fillers.append(filler)
    time.sleep(0.1)
    return server, fillers


def test_a_connect_not_answered_is_connect_failed_after_connect_timeout(run):
    server, fillers = _unanswered_listener()
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"

    async def main():
        pool = _pool(0.3)
        started = time.monotonic()
        with pytest.raises(ConnectFailed):
            await _predict(pool, endpoint, [[0]], timeout=5)
        assert 0.25 < time.monotonic() - started < 1.5
        # The call's own deadline shorter than the connect timeout: the call timed out.
        started = time.monotonic()
        with pytest.raises(TimedOut):
            await _predict(pool, endpoint, [[0]], timeout=0.1)
        assert time.monotonic() - started < 0.25

    try:
        run(main())
    finally:
        for sock in [server, *fillers]:
            sock.close()


# ---------------------------------------------------------------------------
# against a small real server that misbehaves on request


class Server:
    """A raw HTTP/1.1 server on a Unix socket or loopback TCP, one thread per connection.
    By path: ``/ok`` answers 200 (kept alive); ``/ok-then-close`` answers 200 (kept alive)
    and closes the connection; ``/hang`` reads the request and never
    answers; ``/close`` closes without answering; ``/trickle`` sends a 200 answer a byte
    every 0.1 s. It counts connections and records the client hanging up on each."""

    def __init__(self, unix_path: Path | None = None):
        if unix_path is not None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(str(unix_path))
            self.endpoint = unix_endpoint(unix_path)
        else:
            self.sock = socket.socket()
            self.sock.bind(("127.0.0.1", 0))
            self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.sock.listen(16)
        self.connections = 0
        self.requests: list[bytes] = []
        self.hung_up = threading.Semaphore(0)  # released once per connection the client closed
        self.received = threading.Semaphore(0)  # released once per request read
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        buffer = b""
        with connection:
            try:
                while True:
                    while b"\r\n\r\n" not in buffer:
                        data = connection.recv(65536)
                        if not data:
                            self.hung_up.release()
                            return
                        buffer += data
                    head, buffer = buffer.split(b"\r\n\r\n", 1)
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    while len(buffer) < length:
                        buffer += connection.recv(65536)
                    buffer = buffer[length:]
                    path = head.split(b" ")[1]
                    self.requests.append(path)
                    self.received.release()
                    if path in (b"/ok", b"/ok-then-close"):
                        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        if path == b"/ok-then-close":
                            return
                    elif path == b"/close":
                        return
                    elif path == b"/trickle":
                        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100:
                            connection.sendall(bytes([byte]))
                            time.sleep(0.1)
                    # /hang: read on; the client's hanging up ends it
            except OSError:  # the client hung up while we wrote
                self.hung_up.release()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["unix", "tcp"])
def server(request, tmp_path):
    server = Server(tmp_path / "server.sock" if request.param == "unix" else None)
    yield server
    server.close()


async def _get(pool, endpoint, path, timeout=5.0):
    return await pool.request(endpoint, "GET", path, body=None, headers={}, timeout=timeout)


def test_a_connection_dropped_after_the_request_is_sent_is_replaced_once(run, server):
    """The runtime closed the idle connection just as the call went out on it: the call goes
    once more, on a fresh connection."""

    async def main():
        pool = _pool()
        assert (await _get(pool, server.endpoint, "/ok")).status == 200
        assert server.connections == 1
        # On the kept connection the server closes without an answer; the fresh one gets
        # the same request and closes too: Dropped, after exactly one more try.
        with pytest.raises(Dropped):
            await _get(pool, server.endpoint, "/close")
        assert server.connections == 2
        assert server.requests == [b"/ok", b"/close", b"/close"]
        # A fresh connection that drops the call is not tried again.
        with pytest.raises(Dropped):
            await _get(pool, server.endpoint, "/close")
        assert server.connections == 3

    run(main())


def test_a_connection_the_server_closed_while_idle_is_not_used(run, server):
    """The runtime closed an idle connection (its keep-alive expiry): the next call does not
    try it, it goes on a fresh connection at once."""

    async def main():
        pool = _pool()
        assert (await _get(pool, server.endpoint, "/ok-then-close")).status == 200
        idle = pool._idle[server.endpoint][0]
        for _ in range(200):  # until the loop has seen the server's close
            if not idle.usable():
                break
            await asyncio.sleep(0.01)
        assert not idle.usable()
        assert (await _get(pool, server.endpoint, "/ok")).status == 200
        assert server.connections == 2
        assert server.requests == [b"/ok-then-close", b"/ok"]  # nothing sent on the closed one

    run(main())


def test_a_silent_server_times_out_and_is_hung_up_on(run, server):
    async def main():
        pool = _pool()
        started = time.monotonic()
        with pytest.raises(TimedOut):
            await _get(pool, server.endpoint, "/hang", timeout=0.3)
        assert 0.25 < time.monotonic() - started < 0.6
        assert not pool._idle.get(server.endpoint)

    run(main())
    assert server.hung_up.acquire(timeout=2), "the server did not see the call hung up"


def test_an_answer_trickling_in_times_out_at_the_deadline_in_all(run, server):
    """The timeout is the whole answer's, not each read's: a byte every 0.1 s (each read well
    within 0.5 s, the whole answer 14 s) is cut off at 0.5 s, and the server sees it."""

    async def main():
        pool = _pool()
        started = time.monotonic()
        with pytest.raises(TimedOut):
            await _get(pool, server.endpoint, "/trickle", timeout=0.5)
        assert 0.45 < time.monotonic() - started < 0.8  # (uvloop: a millisecond clock)
        assert not pool._idle.get(server.endpoint)

    run(main())
    assert server.hung_up.acquire(timeout=2), "the server did not see the call hung up"


def test_a_cancelled_call_closes_its_connection(run, server):
    """The gateway's client went away: the task awaiting the call is cancelled. The
    connection is closed at once (the server sees EOF), never reused, and CancelledError
    propagates."""

    async def main():
        pool = _pool()
        assert (await _get(pool, server.endpoint, "/ok")).status == 200
        kept = pool._idle[server.endpoint][0]
        call = asyncio.create_task(_get(pool, server.endpoint, "/hang", timeout=30))
        while len(server.requests) < 2:  # the server has the request
            await asyncio.sleep(0.01)
        assert not pool._idle[server.endpoint]  # the kept connection is in use
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert kept.closed
        assert not pool._idle[server.endpoint]
        hung_up = await asyncio.to_thread(server.hung_up.acquire, timeout=2)
        assert hung_up, "the server did not see the call hung up"
        # The next call is on a new connection.
        assert (await _get(pool, server.endpoint, "/ok")).status == 200
        assert server.connections == 2
        assert pool._idle[server.endpoint][0] is not kept

    run(main())


def test_a_call_cancelled_by_the_callers_own_timeout_closes_its_connection(run, server):
    async def main():
        pool = _pool()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(_get(pool, server.endpoint, "/hang", timeout=30), 0.2)
        assert not pool._idle.get(server.endpoint)
        hung_up = await asyncio.to_thread(server.hung_up.acquire, timeout=2)
        assert hung_up, "the server did not see the call hung up"

    run(main())


def test_close_and_forget_close_the_idle_connections(run, server):
    async def main():
        pool = _pool()
        await asyncio.gather(*(_get(pool, server.endpoint, "/ok") for _ in range(3)))
        assert len(pool._idle[server.endpoint]) == 3
        pool.forget(server.endpoint)
        assert server.endpoint not in pool._idle
        for _ in range(3):
            assert await asyncio.to_thread(server.hung_up.acquire, timeout=2)
        await _get(pool, server.endpoint, "/ok")
        pool.close()
        assert not pool._idle
        assert await asyncio.to_thread(server.hung_up.acquire, timeout=2)

    run(main())


@pytest.mark.parametrize("new_loop", [uvloop.new_event_loop, asyncio.new_event_loop], ids=["uvloop", "asyncio"])
def test_a_pool_belongs_to_one_event_loop(new_loop, server):
    pool = AsyncUpstreamPool(connect_timeout=1)

    async def call():
        return (await _get(pool, server.endpoint, "/ok")).status

    first, second = new_loop(), new_loop()
    try:
        assert first.run_until_complete(call()) == 200
        with pytest.raises(RuntimeError, match="one event loop"):
            second.run_until_complete(call())
        first.call_soon(pool.close)
        first.run_until_complete(asyncio.sleep(0))
    finally:
        first.close()
        second.close()
