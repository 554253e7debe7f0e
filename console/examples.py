"""Example predict bodies for the "Try it" box, made from a model version's input shape
or given by a marketplace listing, and the same body written for a shell and for Python."""

import json
import pprint
from functools import lru_cache

from django.conf import settings

from controlplane import packages
from controlplane.models import ModelVersion, Service

_FALLBACK_SHAPE = (-1, 1)
_ONNX_STRING = 8  # onnx.TensorProto.STRING
# An example is to read and edit, not to fill a page: an input declared larger than this
# (by a manifest, or an ONNX graph, which nothing bounds) gets a placeholder instead, of
# the same nesting with one value per dimension.
MAX_EXAMPLE_VALUES = 10_000
MAX_EXAMPLE_RANK = 8


def example_body(model_version: ModelVersion | None) -> str:
    """``{"inputs": [<one example>]}`` as compact JSON, ready to edit and send."""
    shape, text = _input_spec(model_version) if model_version else (_FALLBACK_SHAPE, False)
    return json.dumps({"inputs": [_filled(shape[1:], "" if text else 0.0)]})


def main_version(service: Service) -> ModelVersion | None:
    """The version taking most of the service's traffic (examples are made for it)."""
    deployments = sorted(service.live_deployments(), key=lambda d: d.weight, reverse=True)
    return deployments[0].model_version if deployments else None


def app_body(listing) -> dict:
    """The body to call a marketplace app with: the listing's example input (a whole body
    ``{"inputs": [...]}``, or the inputs alone), else one made for its service's model."""
    example = listing.example_input
    if isinstance(example, dict) and "inputs" in example:
        return example
    if example is None:
        return json.loads(example_body(main_version(listing.service)))
    return {"inputs": example if isinstance(example, list) else [example]}


def shell_quoted(text: str) -> str:
    """``text`` inside single quotes for a POSIX shell."""
    return "'" + text.replace("'", "'\\''") + "'"


def python_literal(value, *, indent: int = 0) -> str:
    """A JSON value written as Python (``true`` as ``True``, ...), wrapped to fit 88
    columns when it starts ``indent`` columns in."""
    text = pprint.pformat(value, width=88 - indent, compact=True, sort_dicts=False)
    return text.replace("\n", "\n" + " " * indent)


def _filled(shape, value):
    """An example of ``shape`` (-1 and 0 count as 1), or the placeholder if it is too big."""
    if len(shape) > MAX_EXAMPLE_RANK or _values(shape) > MAX_EXAMPLE_VALUES:
        shape = (1,) * min(len(shape), MAX_EXAMPLE_RANK)
    return _nested(shape, value)


def _values(shape) -> int:
    """How many values ``_nested`` would build, counted no further than past the limit."""
    count = 1
    for dim in shape:
        count *= max(dim, 1)
        if count > MAX_EXAMPLE_VALUES:
            break
    return count


def _nested(shape, value):
    if not shape:
        return value
    return [_nested(shape[1:], value) for _ in range(max(shape[0], 1))]


def _input_spec(model_version: ModelVersion) -> tuple[tuple[int, ...], bool]:
    """The first input's shape (batch first) and whether it holds text."""
    inputs = model_version.manifest.get("inputs")
    if inputs:
        return tuple(inputs[0]["shape"]) or _FALLBACK_SHAPE, inputs[0]["datatype"] == "BYTES"
    model_file = model_version.manifest.get("model")
    if model_version.framework == "onnx" and model_file:
        return _onnx_input_spec(model_version.sha256, model_file)
    return _FALLBACK_SHAPE, False


@lru_cache(maxsize=64)
def _onnx_input_spec(sha256: str, model_file: str) -> tuple[tuple[int, ...], bool]:
    import onnx

    path = packages.unpacked_path(sha256, artifact_root=settings.MODELBAY_ARTIFACT_ROOT) / model_file
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # a missing or unreadable artifact only costs the example
        return _FALLBACK_SHAPE, False
    initializers = {tensor.name for tensor in graph.initializer}
    first = next((i for i in graph.input if i.name not in initializers), None)
    if first is None:
        return _FALLBACK_SHAPE, False
    tensor = first.type.tensor_type
    shape = tuple(dim.dim_value or -1 for dim in tensor.shape.dim)
    return shape or _FALLBACK_SHAPE, tensor.elem_type == _ONNX_STRING
