"""Kept-alive HTTP/1.1 connections from the asyncio gateway to runtime instances.

The asyncio twin of :class:`runtime.client.UpstreamPool`, with its semantics, its
exceptions and its :class:`~runtime.client.Reply`: an ``asyncio.Protocol`` per connection
feeding ``httptools`` (the C parser uvicorn uses, already a runtime dependency), one
``transport.write`` per request, one future per answer, one timer per call for its
deadline. Nothing else is on the hot path.

Why hand-written rather than aiohttp's client (the project's rule is a well-kept library
first, unless the hand-written hot path is measurably faster): ``bench/transport.py``, one
uvloop event loop calling a runtime on a Unix socket, interleaved rounds on this project's
2-core machine (2026-11-30, three runs; bench/README.md, "Async client to the runtimes",
has the table):

- client CPU per call, the figure that matters on the gateway (its worker, not the
  runtime, is the bottleneck): 55-59 µs at c=1 and 29-33 µs at c=16 tasks, against
  aiohttp 3.14's 162-173 and 91-141 µs (``UnixConnector``, cookies and decompression off):
  0.24-0.36x aiohttp's in every run; httpx 0.28: over 1,000 µs;
- calls/s: 1.6-2.2x aiohttp's at c=1, 1.4-2.9x at c=16; 0.92-0.94x the synchronous
  pool's at c=1 (p50 within 0.025 ms of it; 10-14 µs more CPU per call: the event loop's
  own), where aiohttp reaches only 0.44-0.56x the synchronous pool: an aiohttp gateway
  would forward each call more slowly than the synchronous one does today.

aiohttp would also need a session (a ``UnixConnector``) per socket path, every local
instance having its own socket; it connects by path, so a path longer than ``sun_path``
would need the ``/proc/self/fd`` name with the folder's descriptor held open for the
session's life; and its timeouts, size limit and retries would have to be bent to these
rules (one deadline for connect, send and the whole answer; the answer's size counted as
it arrives; one retry of a stale kept-alive connection). The hand-written part is this
module's Protocol and pool, a few hundred lines beside the synchronous client whose
exceptions, ``Reply``, ``auth_header`` and ``unix_endpoint`` it shares.

Semantics, as :class:`runtime.client.UpstreamPool`:

- idle kept-alive connections per endpoint, at most 64 each, the last used first;
- ``timeout`` is ONE deadline for connecting, sending and the whole answer: past it,
  :class:`TimedOut` and the connection is closed, so the runtime sees the call hung up.
  A connect is also bounded by ``connect_timeout`` (:class:`ConnectFailed` past it,
  :class:`TimedOut` when the call's own deadline came first);
- a connection refused, a missing socket file, a connect that does not finish:
  :class:`ConnectFailed` (the call never reached the instance);
- an idle connection the runtime has closed is dropped when taken; one that turns out to
  be gone once the request is sent (:class:`Dropped`) is replaced once by a fresh one;
- an answer larger than ``max_body`` bytes (head included): :class:`TooLarge`, connection
  closed; ``instance`` given and the answer naming another one (or none) in
  ``X-Modelbay-Instance``: :class:`WrongInstance`, the connection is closed and the
  endpoint's idle connections with it;
- Unix socket paths longer than ``sun_path`` are reached through
  ``/proc/self/fd/<folder>/<name>``, as :func:`runtime.client.connect_unix` does, but with
  a non-blocking connect.

Cancellation: if the task awaiting :meth:`AsyncUpstreamPool.request` is cancelled (the
gateway's own client went away), the connection in use is closed at once (the runtime
sees the hang-up) and never returns to the pool; ``CancelledError`` propagates.

One event loop: a pool, its connections and its futures belong to the event loop that
first used it, and there are no locks (none are needed: everything runs on that loop's
thread). Create one pool per event loop, e.g. in the ASGI app's lifespan startup (uvicorn
runs one loop per worker process), and ``close()`` it on that loop before the loop ends:
idle connections hold their transports, which hold the loop (a mapping of loops to pools
with weak keys does not let go of a loop whose pool still has idle connections). A pool
used from a second loop while its first is alive raises ``RuntimeError``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import weakref
from collections import deque
from urllib.parse import urlsplit

import httptools

from runtime.client import (
    _IDLE_PER_ENDPOINT,
    _INSTANCE_HEADER_LOWER,
    _UNIX_PATH_MAX,
    UNIX_SCHEME,
    ConnectFailed,
    Dropped,
    Reply,
    TimedOut,
    TooLarge,
    WrongInstance,
)

__all__ = ["AsyncUpstreamPool", "ConnectFailed", "Dropped", "Reply", "TimedOut", "TooLarge", "WrongInstance"]


class _Connection(asyncio.Protocol):
    """One kept-alive connection: the transport, the parser (kept for the connection's
    life: it starts over after each complete message) and the call in progress."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        # The call in progress (reset by begin()).
        self.waiter: asyncio.Future | None = None
        self.max_body = 0
        self.received = 0
        self.chunks: list[bytes] = []
        self.content_type = b"application/json"
        self.instance = b""
        self.keep_alive = False
        self.complete = False

    # -- asyncio.Protocol

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("the instance closed the connection"))

    def eof_received(self) -> bool:
        return False  # close our side too: connection_lost follows

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            self.abort()  # bytes nobody asked for: the connection cannot be trusted
            return
        self.received += len(data)
        if self.received > self.max_body:
            waiter.set_exception(TooLarge(f"the answer is larger than {self.max_body} bytes"))
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            if not waiter.done():
                waiter.set_exception(error)
            else:  # trailing garbage after a complete answer
                self.keep_alive = False

    # -- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-type":
            self.content_type = value
        elif name == _INSTANCE_HEADER_LOWER:
            self.instance = value

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.complete:  # a second answer to one request: keep nothing of this connection
            self.keep_alive = False
            return
        # Asked here: the parser forgets the message's flags once it returns.
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the pool's side

    def begin(self, waiter: asyncio.Future, max_body: int) -> None:
        self.waiter = waiter
        self.max_body = max_body
        self.received = 0
        self.chunks = []
        self.content_type = b"application/json"
        self.instance = b""
        self.keep_alive = False
        self.complete = False

    def usable(self) -> bool:
        return not self.closed and not self.transport.is_closing()

    def time_out(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(TimeoutError("the whole answer did not arrive in time"))

    def abort(self) -> None:
        """Close at once, whatever is buffered: the runtime sees the hang-up."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Address:
    """What an endpoint string says, parsed once."""

    __slots__ = ("unix_path", "host", "port", "host_header")

    def __init__(self, endpoint: str):
        if endpoint.startswith(UNIX_SCHEME):
            self.unix_path = endpoint[len(UNIX_SCHEME) :]
            self.host = self.port = None
            self.host_header = b"Host: runtime\r\n"
        else:
            parts = urlsplit(endpoint)
            self.unix_path = None
            self.host, self.port = parts.hostname, parts.port
            self.host_header = f"Host: {parts.netloc}\r\n".encode()


class AsyncUpstreamPool:
    """Kept-alive connections to runtime instances, for ONE event loop (see the module's
    docstring): no locks, and the pool refuses to be used from a second loop."""

    def __init__(self, *, connect_timeout: float):
        self.connect_timeout = connect_timeout
        self._idle: dict[str, deque[_Connection]] = {}
        self._addresses: dict[str, _Address] = {}
        # Held weakly: a pool does not keep a finished loop alive (its idle connections do,
        # through their transports, until closed).
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None

    async def request(
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

        ``timeout``: seconds for connecting, sending and the whole answer, in all
        (:class:`TimedOut` after). ``auth``: header line(s) sent as they are
        (:func:`runtime.client.auth_header`). ``instance``: the id the answer must name in
        ``X-Modelbay-Instance``, else :class:`WrongInstance`. ``max_body``: the most bytes
        of answer taken (:class:`TooLarge` beyond)."""
        loop = asyncio.get_running_loop()
        if self._loop is None or self._loop() is not loop:
            if self._loop is not None and self._loop() is not None:
                raise RuntimeError("an AsyncUpstreamPool is used from one event loop only: make one per loop")
            self._loop = weakref.ref(loop)  # the first loop, or the first since the last one is gone
        deadline = loop.time() + timeout
        address = self._addresses.get(endpoint)
        if address is None:
            address = self._addresses[endpoint] = _Address(endpoint)
        body = body or b""
        head = [f"{method} {path} HTTP/1.1\r\n".encode(), address.host_header, auth]
        for name, value in headers.items():
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        head.append(f"Content-Length: {len(body)}\r\n\r\n".encode())
        message = b"".join(head) + body

        connection = self._take(endpoint)
        if connection is not None:
            try:
                return await self._exchange(endpoint, connection, message, deadline, instance, max_body)
            except Dropped:
                pass  # the idle connection had gone stale: once more on a fresh one
        connection = await self._connect(endpoint, address, loop, deadline)
        return await self._exchange(endpoint, connection, message, deadline, instance, max_body)

    def _take(self, endpoint: str) -> _Connection | None:
        idle = self._idle.get(endpoint)
        while idle:
            connection = idle.pop()
            if connection.usable():
                return connection
            connection.close()  # the runtime closed it while it was idle: the next one
        return None

    def _give_back(self, endpoint: str, connection: _Connection) -> None:
        idle = self._idle.get(endpoint)
        if idle is None:
            idle = self._idle[endpoint] = deque()
        if len(idle) < _IDLE_PER_ENDPOINT:
            idle.append(connection)
        else:
            connection.close()

    async def _connect(self, endpoint: str, address: _Address, loop, deadline: float) -> _Connection:
        left = deadline - loop.time()
        try:
            async with asyncio.timeout(min(self.connect_timeout, left)):
                if address.unix_path is None:
                    _, connection = await loop.create_connection(
                        lambda: _Connection(loop), address.host, address.port
                    )  # TCP_NODELAY: asyncio and uvloop set it on TCP transports
                elif len(address.unix_path.encode()) <= _UNIX_PATH_MAX:
                    _, connection = await loop.create_unix_connection(lambda: _Connection(loop), address.unix_path)
                else:
                    sock = await _connect_long_unix_path(loop, address.unix_path)
                    try:
                        _, connection = await loop.create_unix_connection(lambda: _Connection(loop), sock=sock)
                    except BaseException:
                        sock.close()
                        raise
        except TimeoutError:  # before OSError: TimeoutError is one
            if left <= self.connect_timeout:
                raise TimedOut() from None  # the call's own deadline came first
            raise ConnectFailed(f"no connection to {endpoint} within {self.connect_timeout} s") from None
        except OSError as error:
            raise ConnectFailed(str(error)) from None
        return connection

    async def _exchange(
        self, endpoint: str, connection: _Connection, message: bytes, deadline: float, instance, max_body: int
    ) -> Reply:
        if not connection.usable():
            raise Dropped("the instance closed the connection")
        loop = connection.loop
        waiter = loop.create_future()
        connection.begin(waiter, max_body)
        timer = loop.call_at(deadline, connection.time_out)
        try:
            connection.transport.write(message)
            await waiter
        except BaseException as error:  # CancelledError too: never back to the pool
            connection.abort()  # the runtime sees the call hung up
            if isinstance(error, TimeoutError):  # before OSError: TimeoutError is one
                raise TimedOut() from None
            if isinstance(error, (OSError, httptools.HttpParserError)):
                raise Dropped(str(error)) from None
            raise  # TooLarge, CancelledError
        finally:
            timer.cancel()
            connection.waiter = None
        answered_by = connection.instance
        if instance is not None and answered_by != instance:
            # Someone else listens there now: none of our connections to it is any use.
            connection.abort()
            self.forget(endpoint)
            raise WrongInstance(
                f"{endpoint} answered as {answered_by.decode('latin-1') or 'an unnamed runtime'!r},"
                f" not {instance.decode('latin-1')!r}"
            )
        reply = Reply(
            connection.parser.get_status_code(),
            b"".join(connection.chunks),
            connection.content_type.decode("latin-1"),
        )
        connection.chunks = []
        if connection.keep_alive and connection.usable():
            self._give_back(endpoint, connection)
        else:
            connection.close()
        return reply

    def forget(self, endpoint: str) -> None:
        """Close the idle connections to one endpoint."""
        idle = self._idle.pop(endpoint, None)
        self._addresses.pop(endpoint, None)
        while idle:
            idle.pop().close()

    def close(self) -> None:
        """Close every idle connection. A call still in progress keeps its connection and
        gives it back when it ends: at shutdown, close once the calls are over."""
        for endpoint in list(self._idle):
            self.forget(endpoint)
        self._addresses.clear()


async def _connect_long_unix_path(loop: asyncio.AbstractEventLoop, path: str) -> socket.socket:
    """A connected non-blocking socket to a Unix socket whose path is too long for
    ``sun_path``: named as ``/proc/self/fd/<its folder>/<name>`` while the connect runs."""
    folder, name = os.path.split(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        folder_fd = os.open(folder, os.O_PATH | os.O_DIRECTORY)
        try:
            await loop.sock_connect(sock, f"/proc/self/fd/{folder_fd}/{name}")
        finally:
            os.close(folder_fd)
    except BaseException:
        sock.close()
        raise
    return sock
