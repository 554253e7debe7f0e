"""Kept-alive HTTP/1.1 connections from the gateway to runtime instances.

A pool of ``http.client`` connections per instance endpoint. Measured on our 2-core
machine, one call costs ~230 µs of CPU this way against ~410 µs through urllib3's pool
(the client is the largest cost on the gateway's hot path; see bench/README.md), and
the gateway needs none of urllib3's extras (redirects, retries, TLS, proxies).
"""

import http.client
import socket
import threading
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit


class ConnectFailed(Exception):
    """No connection could be made: the call never reached the instance."""


class Dropped(Exception):
    """The instance closed the connection or vanished before answering."""


class TimedOut(Exception):
    """The instance took longer than the read timeout to answer."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str


_IDLE_PER_ENDPOINT = 64
# A reused connection the runtime has closed fails at once when written to or read
# from: these mean "try again on a fresh connection", not "the instance is down".
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class UpstreamPool:
    def __init__(self, *, connect_timeout: float):
        self.connect_timeout = connect_timeout
        self._idle: dict[str, deque[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def _take(self, endpoint: str) -> http.client.HTTPConnection | None:
        idle = self._idle.get(endpoint)
        try:
            return idle.pop() if idle else None
        except IndexError:  # another thread took the last one
            return None

    def _give_back(self, endpoint: str, connection: http.client.HTTPConnection) -> None:
        idle = self._idle.get(endpoint)
        if idle is None:
            with self._lock:
                idle = self._idle.setdefault(endpoint, deque())
        if len(idle) < _IDLE_PER_ENDPOINT:
            idle.append(connection)
        else:
            connection.close()

    def _connect(self, endpoint: str) -> http.client.HTTPConnection:
        parts = urlsplit(endpoint)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.connect_timeout)
        try:
            connection.connect()
        except OSError as error:
            raise ConnectFailed(str(error)) from None
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    def request(
        self, endpoint: str, method: str, path: str, *, body: bytes | None, headers: dict, read_timeout: float
    ) -> Reply:
        """One call, on an idle kept-alive connection when there is one."""
        connection = self._take(endpoint)
        if connection is not None:
            try:
                return self._exchange(endpoint, connection, method, path, body, headers, read_timeout)
            except Dropped:
                pass  # the idle connection had gone stale: once more on a fresh one
        return self._exchange(endpoint, self._connect(endpoint), method, path, body, headers, read_timeout)

    def _exchange(self, endpoint, connection, method, path, body, headers, read_timeout) -> Reply:
        connection.sock.settimeout(read_timeout)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except TimeoutError:
            connection.close()
            raise TimedOut() from None
        except (*_STALE, http.client.HTTPException, OSError) as error:
            connection.close()
            raise Dropped(str(error)) from None
        reply = Reply(response.status, data, response.getheader("Content-Type", "application/json"))
        if response.will_close:
            connection.close()
        else:
            self._give_back(endpoint, connection)
        return reply

    def clear(self) -> None:
        with self._lock:
            for idle in self._idle.values():
                while idle:
                    idle.pop().close()
            self._idle.clear()
