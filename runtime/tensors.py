"""Tensor helpers: OIP datatypes <-> numpy, input validation and conversion,
and Open Inference Protocol request parsing."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import InvalidInput, InvalidRequest
from .manifest import DATATYPES

NUMPY_OF_DATATYPE: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_DATATYPE_OF_NUMPY = {v: k for k, v in NUMPY_OF_DATATYPE.items()}

ONNX_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

# numpy dtype kinds accepted as data for a model input of each datatype family
_FLOAT_KINDS = frozenset("biuf")
_INT_KINDS = frozenset("biu")


def datatype_of(arr: np.ndarray) -> str:
    """OIP datatype of a numpy array (strings and objects are BYTES)."""
    dt = _DATATYPE_OF_NUMPY.get(arr.dtype)
    if dt is not None:
        return dt
    return "BYTES"


def _fmt_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _describe(arr: np.ndarray) -> str:
    kind = arr.dtype.kind
    if kind in "US":
        return "strings"
    if kind == "O":
        return "non-numeric or mixed values"
    if kind == "f":
        return "floating-point numbers"
    if kind == "b":
        return "booleans"
    return "integers"


@dataclass(frozen=True)
class InputSpec:
    """A model input as the runtime validates it."""

    name: str
    datatype: str  # OIP datatype shown in metadata
    shape: tuple[int, ...]  # -1 = any size
    dtype: np.dtype  # what the model is fed

    def metadata(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def expected(self) -> str:
        return f"expected shape {_fmt_shape(self.shape)} ({self.datatype})"

    def shape_matches(self, shape: tuple[int, ...]) -> bool:
        spec = self.shape
        if len(spec) != len(shape):
            return False
        for want, got in zip(spec, shape):
            if want != -1 and want != got:
                return False
        return True

    def check_datatype(self, datatype: str) -> None:
        """Check a request tensor's declared datatype against the model's."""
        if datatype not in NUMPY_OF_DATATYPE:
            raise InvalidInput(
                f"input {self.name!r}: unknown datatype {datatype!r} (expected one of {', '.join(DATATYPES)})"
            )
        if (datatype == "BYTES") != (self.dtype.kind == "O"):
            raise InvalidInput(f"input {self.name!r}: {self.expected()}, got datatype {datatype}")

    def to_array(self, data: object, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """Convert JSON data (flat with ``shape``, or nested) to the model's dtype.

        Raises InvalidInput with a message saying what was expected.
        """
        name = self.name
        target = self.dtype
        if target.kind == "O":
            try:
                arr = np.array(data, dtype=object)
            except (ValueError, TypeError) as exc:
                raise InvalidInput(f"input {name!r}: {self.expected()}, data is not a regular array ({exc})") from None
        else:
            try:
                arr = np.array(data)
            except (ValueError, TypeError, OverflowError) as exc:
                msg = str(exc).split("\n", 1)[0]
                raise InvalidInput(
                    f"input {name!r}: {self.expected()}, data is not a regular array of numbers ({msg})"
                ) from None
            kinds = _FLOAT_KINDS if target.kind in "fc" else _INT_KINDS
            if arr.dtype.kind not in kinds:
                if arr.size == 0 and arr.dtype.kind == "f":
                    arr = arr.astype(target)
                else:
                    raise InvalidInput(f"input {name!r}: {self.expected()}, got {_describe(arr)}")
            if target.kind == "u" and arr.size and arr.min() < 0:
                raise InvalidInput(f"input {name!r}: {self.expected()}, got negative values")
        if shape is not None:
            n = math.prod(shape)
            if arr.size != n:
                raise InvalidInput(
                    f"input {name!r}: shape {_fmt_shape(shape)} needs {n} values, got {arr.size}"
                )
            if arr.shape != shape:
                arr = arr.reshape(shape)
        if not self.shape_matches(arr.shape):
            raise InvalidInput(f"input {name!r}: {self.expected()}, got {_fmt_shape(arr.shape)}")
        if arr.dtype != target:
            arr = arr.astype(target)
        return arr


class RequestTensor:
    """One input tensor of an OIP infer request (structure already checked)."""

    __slots__ = ("name", "shape", "datatype", "data")

    def __init__(self, name: str, shape: tuple[int, ...], datatype: str | None, data: object) -> None:
        self.name = name
        self.shape = shape
        self.datatype = datatype
        self.data = data


_MISSING = object()


def parse_infer_request(body: object) -> tuple[object, list[RequestTensor], list[str] | None]:
    """Validate the structure of an OIP v2 infer request.

    Returns ``(id, inputs, requested output names or None)``. Structural
    problems are InvalidRequest (400); a duplicate input name is InvalidInput.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object with an 'inputs' list")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidRequest("'inputs' must be a non-empty list of tensors")
    tensors: list[RequestTensor] = []
    seen = set()
    for i, t in enumerate(inputs):
        if type(t) is not dict:
            raise InvalidRequest(f"inputs[{i}] must be an object with name, shape, datatype and data")
        name = t.get("name")
        if type(name) is not str:
            raise InvalidRequest(f"inputs[{i}].name must be a string")
        shape = t.get("shape")
        if type(shape) is not list:
            raise InvalidRequest(f"inputs[{i}].shape must be a list of non-negative integers")
        for d in shape:
            if type(d) is not int or d < 0:
                raise InvalidRequest(f"inputs[{i}].shape must be a list of non-negative integers")
        datatype = t.get("datatype")
        if datatype is not None and type(datatype) is not str:
            raise InvalidRequest(f"inputs[{i}].datatype must be a string")
        data = t.get("data", _MISSING)
        if data is _MISSING:
            raise InvalidRequest(f"inputs[{i}].data is required")
        if type(data) is not list:
            if shape:
                raise InvalidRequest(f"inputs[{i}].data must be a list")
            data = [data] if data is not None else data
        if name in seen:
            raise InvalidInput(f"input {name!r} is given more than once")
        seen.add(name)
        tensors.append(RequestTensor(name, tuple(shape), datatype, data))
    requested = None
    outputs = body.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise InvalidRequest("'outputs' must be a list of {\"name\": ...} objects")
        requested = []
        for i, o in enumerate(outputs):
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise InvalidRequest(f"outputs[{i}] must be an object with a string 'name'")
            requested.append(o["name"])
        if not requested:
            requested = None
    params = body.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise InvalidRequest("'parameters' must be an object")
    return body.get("id"), tensors, requested


def output_tensor(name: str, value: object, datatype: str | None = None) -> dict:
    """An OIP output tensor dict with flat data.

    numpy arrays are kept as arrays (serialised by orjson); lists of arbitrary
    objects (e.g. ZipMap dictionaries) become BYTES holding JSON text.
    """
    if isinstance(value, np.ndarray):
        dt = datatype_of(value)
        if dt == "BYTES":
            data = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value.ravel().tolist()]
            if not all(isinstance(v, str) for v in data):
                data = [_json_text(v) for v in data]
            return {"name": name, "datatype": "BYTES", "shape": list(value.shape), "data": data}
        return {"name": name, "datatype": dt, "shape": list(value.shape), "data": value.ravel()}
    seq = list(value) if isinstance(value, (list, tuple)) else [value]
    return {"name": name, "datatype": "BYTES", "shape": [len(seq)], "data": [_json_text(v) for v in seq]}


def column_tensor(name: str, column: list) -> dict:
    """An OIP output tensor for one value per example (python models)."""
    if all(isinstance(v, str) for v in column):
        return {"name": name, "datatype": "BYTES", "shape": [len(column)], "data": column}
    try:
        arr = np.array(column)
    except (ValueError, TypeError, OverflowError):
        arr = None
    if arr is not None and arr.dtype.kind in "biuf" and arr.dtype in _DATATYPE_OF_NUMPY:
        return {"name": name, "datatype": datatype_of(arr), "shape": list(arr.shape), "data": arr.ravel()}
    return {"name": name, "datatype": "BYTES", "shape": [len(column)], "data": [_json_text(v) for v in column]}


def _json_text(value: object) -> str:
    from .jsonutil import dumps

    if isinstance(value, str):
        return value
    return dumps(value).decode()
