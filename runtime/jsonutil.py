"""JSON encoding/decoding with orjson, numpy-aware."""

from __future__ import annotations

import base64
import decimal

import numpy as np
import orjson

loads = orjson.loads
JSONDecodeError = orjson.JSONDecodeError
_OPTS = orjson.OPT_SERIALIZE_NUMPY


def _default(obj: object) -> object:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (bytes, bytearray, memoryview)):
        raw = bytes(obj)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii")
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, decimal.Decimal):
        return float(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dumps(obj: object) -> bytes:
    """Serialise to JSON bytes; numpy arrays/scalars become plain JSON.

    Dicts with non-string keys (e.g. ONNX ZipMap outputs) are retried with
    OPT_NON_STR_KEYS. Raises TypeError for values that cannot be encoded.
    """
    try:
        return orjson.dumps(obj, default=_default, option=_OPTS)
    except orjson.JSONEncodeError as exc:
        try:
            return orjson.dumps(obj, default=_default, option=_OPTS | orjson.OPT_NON_STR_KEYS)
        except orjson.JSONEncodeError:
            raise TypeError(str(exc)) from None
