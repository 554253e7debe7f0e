"""Kept-alive HTTP/1.1 connections from the gateway to runtime instances.

The client is the largest cost on the gateway's hot path. Our runtimes speak plain
HTTP/1.1 on a Unix socket (``unix:///path``: instances on this host, which have no
network) or on a private network (``http://host:port``: instances of a remote zone), so
a call is one ``sendall`` of the request and ``httptools`` (the C parser uvicorn uses,
already a runtime dependency) reading the answer. Measured under gunicorn on our 2-core machine, ``http.client`` spent most of
its time in its ``email``-based header parser, and urllib3 adds its own layers on top
(see bench/README.md); the gateway needs none of their extras (redirects, retries,
TLS, proxies).

Every call to a runtime run by the control plane is authenticated and checked: the caller
passes ``auth`` (the target's header line, built once with :func:`auth_header`) and
``instance`` (the instance id it means to reach); an answer that does not name that
instance in ``X-Modelbay-Instance`` raises :class:`WrongInstance` and is never returned.
"""

import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools


class ConnectFailed(Exception):
    """No connection could be made: the call never reached the instance."""


class Dropped(Exception):
    """The instance closed the connection or vanished before answering in full."""


class TimedOut(Exception):
    """The whole answer did not arrive within the call's timeout (the connection is closed)."""


class TooLarge(Exception):
    """The answer is larger than the caller takes: it was not read in full."""


class WrongInstance(Exception):
    """Another runtime answered at the endpoint (a port reused by another instance): its
    answer is dropped. The call may go to another instance, as after a refused connection."""


INSTANCE_HEADER = "X-Modelbay-Instance"
_INSTANCE_HEADER_LOWER = INSTANCE_HEADER.lower().encode()


def auth_header(credential: str) -> bytes:
    """The request header line carrying an instance's credential: build it once per target."""
    return f"Authorization: Bearer {credential}\r\n".encode("latin-1") if credential else b""


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str


_IDLE_PER_ENDPOINT = 64
_RECV_BYTES = 256 * 1024


class _Reader:
    """httptools callbacks collecting one response."""

    def __init__(self):
        self.content_type = b"application/json"
        self.instance = b""
        self.chunks: list[bytes] = []
        self.complete = False
        self.keep_alive = False
        self.parser: httptools.HttpResponseParser | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-type":
            self.content_type = value
        elif name == _INSTANCE_HEADER_LOWER:
            self.instance = value

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        # Asked here: the parser forgets the message's flags once it returns.
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True


class _Connection:
    def __init__(self, sock: socket.socket, host_header: bytes):
        self.sock = sock
        self.host_header = host_header

    def exchange(
        self, method: str, path: str, body: bytes | None, headers: dict, timeout: float, auth: bytes, max_body: int
    ) -> tuple[Reply, bool, bytes]:
        """Send one request and read its whole response within ``timeout`` seconds in all
        (not per read: an answer trickling in is cut off all the same); returns (reply,
        keep_alive, the answering instance's id as sent)."""
        deadline = time.monotonic() + timeout
        body = body or b""
        head = [f"{method} {path} HTTP/1.1\r\n".encode(), self.host_header, auth]
        for name, value in headers.items():
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        head.append(f"Content-Length: {len(body)}\r\n\r\n".encode())
        self.sock.settimeout(timeout)
        self.sock.sendall(b"".join(head) + body)
        reader = _Reader()
        parser = reader.parser = httptools.HttpResponseParser(reader)
        received = 0
        while not reader.complete:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the whole answer did not arrive in time")
            self.sock.settimeout(left)
            data = self.sock.recv(_RECV_BYTES)
            if not data:
                raise ConnectionResetError("the instance closed the connection")
            received += len(data)
            if received > max_body:
                raise TooLarge(f"the answer is larger than {max_body} bytes")
            parser.feed_data(data)
        reply = Reply(parser.get_status_code(), b"".join(reader.chunks), reader.content_type.decode("latin-1"))
        return reply, reader.keep_alive, reader.instance

    def close(self) -> None:
        self.sock.close()


UNIX_SCHEME = "unix://"
# sun_path holds 108 bytes; a longer path is reached through its folder's descriptor.
_UNIX_PATH_MAX = 100


def unix_endpoint(path: str) -> str:
    """The endpoint of a runtime listening on a Unix socket: ``unix:///abs/path.sock``."""
    return UNIX_SCHEME + str(path)


def connect_unix(path: str, *, timeout: float) -> socket.socket:
    """A connection to a Unix socket, whatever the length of its path: a path too long for
    ``sun_path`` is named as ``/proc/self/fd/<its folder>/<name>``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        if len(path.encode()) <= _UNIX_PATH_MAX:
            sock.connect(path)
        else:
            folder, name = os.path.split(path)
            folder_fd = os.open(folder, os.O_PATH | os.O_DIRECTORY)
            try:
                sock.connect(f"/proc/self/fd/{folder_fd}/{name}")
            finally:
                os.close(folder_fd)
    except BaseException:
        sock.close()
        raise
    return sock


class UpstreamPool:
    def __init__(self, *, connect_timeout: float):
        self.connect_timeout = connect_timeout
        self._idle: dict[str, deque[_Connection]] = {}
        self._lock = threading.Lock()

    def _take(self, endpoint: str) -> _Connection | None:
        idle = self._idle.get(endpoint)
        try:
            return idle.pop() if idle else None
        except IndexError:  # another thread took the last one
            return None

    def _give_back(self, endpoint: str, connection: _Connection) -> None:
        idle = self._idle.get(endpoint)
        if idle is None:
            with self._lock:
                idle = self._idle.setdefault(endpoint, deque())
        if len(idle) < _IDLE_PER_ENDPOINT:
            idle.append(connection)
        else:
            connection.close()

    def _connect(self, endpoint: str) -> _Connection:
        if endpoint.startswith(UNIX_SCHEME):
            try:
                sock = connect_unix(endpoint[len(UNIX_SCHEME) :], timeout=self.connect_timeout)
            except OSError as error:
                raise ConnectFailed(str(error)) from None
            return _Connection(sock, b"Host: runtime\r\n")
        parts = urlsplit(endpoint)
        try:
            sock = socket.create_connection((parts.hostname, parts.port), timeout=self.connect_timeout)
        except OSError as error:
            raise ConnectFailed(str(error)) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Connection(sock, f"Host: {parts.netloc}\r\n".encode())

    def request(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        body: bytes | None,
        headers: dict,
        timeout: float,
        auth: bytes = b"",
        instance: bytes | None = None,
        max_body: int = 2**62,
    ) -> Reply:
        """One call, on an idle kept-alive connection when there is one.

        ``timeout``: seconds for the whole answer to arrive (:class:`TimedOut` after).
        ``auth``: header line(s) sent as they are (:func:`auth_header`). ``instance``: the
        id the answer must name in ``X-Modelbay-Instance``, else :class:`WrongInstance`.
        ``max_body``: the most bytes of answer taken (:class:`TooLarge` beyond)."""
        call = (method, path, body, headers, timeout, auth, max_body)
        connection = self._take(endpoint)
        if connection is not None:
            try:
                return self._exchange(endpoint, connection, call, instance)
            except Dropped:
                pass  # the idle connection had gone stale: once more on a fresh one
        return self._exchange(endpoint, self._connect(endpoint), call, instance)

    def _exchange(self, endpoint, connection, call, instance) -> Reply:
        try:
            reply, keep_alive, answered_by = connection.exchange(*call)
        except TimeoutError:
            connection.close()  # the runtime sees the call hung up
            raise TimedOut() from None
        except TooLarge:
            connection.close()
            raise
        except (OSError, httptools.HttpParserError) as error:
            connection.close()
            raise Dropped(str(error)) from None
        if instance is not None and answered_by != instance:
            # Someone else listens there now: none of our connections to it is any use.
            connection.close()
            self.forget(endpoint)
            raise WrongInstance(
                f"{endpoint} answered as {answered_by.decode('latin-1') or 'an unnamed runtime'!r},"
                f" not {instance.decode('latin-1')!r}"
            )
        if keep_alive:
            self._give_back(endpoint, connection)
        else:
            connection.close()
        return reply

    def forget(self, endpoint: str) -> None:
        """Close the idle connections to one endpoint."""
        with self._lock:
            idle = self._idle.pop(endpoint, None)
        while idle:
            try:
                idle.pop().close()
            except IndexError:
                break

    def clear(self) -> None:
        with self._lock:
            for idle in self._idle.values():
                while idle:
                    idle.pop().close()
            self._idle.clear()
