"""uvicorn's httptools protocol, sending each small response in one write.

uvicorn writes the response head when the app sends ``http.response.start``
and the body on ``http.response.body``: two ``write()`` system calls and two
TCP segments per response. For the runtime's small JSON responses that second
segment costs as much as the rest of the request, so this subclass holds the
head back and writes it together with the first body chunk. Everything else
is uvicorn's own code.
"""

from __future__ import annotations

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools missing
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

_CONTINUE = b"HTTP/1.1 100 "


class _HeadCoalescingTransport:
    """Wraps a transport for one request/response cycle: the first write (the
    response head) is held until the next write, then both go out together."""

    __slots__ = ("_transport", "_head", "_passthrough")

    def __init__(self, transport) -> None:
        self._transport = transport
        self._head: bytes | None = None
        self._passthrough = False

    def write(self, data: bytes) -> None:
        if self._passthrough:
            self._transport.write(data)
        elif self._head is not None:
            head, self._head = self._head, None
            self._passthrough = True
            self._transport.write(head + data)
        elif data.startswith(_CONTINUE):  # interim "100 Continue": send at once
            self._transport.write(data)
        else:
            self._head = data

    def flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._passthrough = True
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


if HttpToolsProtocol is not None:

    class CoalescingHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc,valid-type]
        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            cycle = self.cycle
            # Only the cycle just created for this request; HEAD responses have
            # no body write to carry the head, so they are left alone.
            if (
                cycle is not None
                and cycle.scope is self.scope
                and cycle.transport is self.transport
                and self.scope.get("method") != "HEAD"
            ):
                cycle.transport = _HeadCoalescingTransport(self.transport)

else:  # pragma: no cover
    CoalescingHttpToolsProtocol = None  # type: ignore[assignment,misc]


def http_protocol() -> object:
    """The ``http`` setting for uvicorn.Config: the coalescing protocol when
    uvicorn's httptools implementation is available and looks as expected."""
    if CoalescingHttpToolsProtocol is not None:
        from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

        try:
            compatible = "transport" in RequestResponseCycle.__init__.__code__.co_varnames
        except AttributeError:  # pragma: no cover
            compatible = False
        return CoalescingHttpToolsProtocol if compatible else "httptools"
    return "h11"
