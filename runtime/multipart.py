"""Minimal, defensive multipart/form-data parsing (stdlib only).

Only what the runtime needs: find one named part and return its bytes.
"""

from __future__ import annotations

from email.message import Message

from .errors import InvalidRequest

MAX_PARTS = 64
MAX_PART_HEADER_BYTES = 8192


def header_param(header_value: str, param: str, header: str = "content-type") -> str | None:
    """A parameter (e.g. ``boundary``) of a MIME header value, quotes handled."""
    msg = Message()
    msg[header] = header_value
    value = msg.get_param(param, header=header)
    if isinstance(value, tuple):  # RFC 2231 encoded
        value = value[2]
    return value if isinstance(value, str) else None


def _part_name(headers_blob: bytes) -> str | None:
    if len(headers_blob) > MAX_PART_HEADER_BYTES:
        raise InvalidRequest("multipart part headers are too large")
    for line in headers_blob.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"content-disposition":
            return header_param(value.decode("latin-1").strip(), "name", "content-disposition")
    return None


def get_part(body: bytes, content_type: str, field: str = "file") -> bytes:
    """The content of the first part named ``field`` of a multipart body.

    Raises InvalidRequest for a malformed body or when the part is missing.
    """
    boundary = header_param(content_type, "boundary")
    if not boundary or len(boundary) > 200:
        raise InvalidRequest("multipart/form-data request without a valid boundary parameter")
    delim = b"--" + boundary.encode("latin-1")
    start = body.find(delim)
    if start == -1:
        raise InvalidRequest("malformed multipart body: boundary not found")
    segments = body[start + len(delim) :].split(b"\r\n" + delim)
    for count, seg in enumerate(segments):
        if count >= MAX_PARTS:
            raise InvalidRequest(f"multipart body has more than {MAX_PARTS} parts")
        if seg.startswith(b"--"):  # closing delimiter
            break
        # rest of the delimiter line (transport padding), then the part
        nl = seg.find(b"\r\n")
        if nl == -1:
            raise InvalidRequest("malformed multipart body")
        seg = seg[nl + 2 :]
        if seg.startswith(b"\r\n"):
            headers_blob, content = b"", seg[2:]
        else:
            end = seg.find(b"\r\n\r\n")
            if end == -1:
                raise InvalidRequest("malformed multipart body: part headers not terminated")
            headers_blob, content = seg[:end], seg[end + 4 :]
        if _part_name(headers_blob) == field:
            return content
    raise InvalidRequest(f"multipart/form-data body has no part named {field!r}")
