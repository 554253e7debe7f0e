"""The example inputs and code samples the console shows (console.examples)."""

import json

from console import examples
from controlplane.models import ModelVersion


# --- a model version's example body ------------------------------------------------------
def test_example_body_follows_the_manifest_schema():
    version = ModelVersion(
        framework="python", manifest={"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2, 3]}]}
    )

    assert json.loads(examples.example_body(version)) == {"inputs": [[[0.0] * 3] * 2]}


def test_example_body_for_text_inputs():
    version = ModelVersion(framework="python", manifest={"inputs": [{"name": "t", "datatype": "BYTES", "shape": [-1]}]})

    assert json.loads(examples.example_body(version)) == {"inputs": [""]}


def test_example_body_without_a_schema_is_a_small_batch():
    assert json.loads(examples.example_body(ModelVersion(framework="python", manifest={}))) == {"inputs": [[0.0]]}


# --- code samples ------------------------------------------------------------------------
def test_code_samples_quote_the_example_for_the_shell_and_write_it_as_python():
    body = {"inputs": ["it's", True, None]}

    assert examples.shell_quoted('{"a": "it\'s"}') == "'{\"a\": \"it'\\''s\"}'"
    assert examples.python_literal(body) == "{'inputs': [\"it's\", True, None]}"
    assert eval(examples.python_literal({"inputs": [[0.0] * 64]}, indent=9)) == {"inputs": [[0.0] * 64]}  # noqa: S307


# --- bounded examples ----------------------------------------------------------------------
def _version_with_shape(shape):
    # ModelVersion is not saved: the manifest is not checked again here, as for versions
    # stored before shapes were bounded, or for an ONNX graph's own (unbounded) shape.
    return ModelVersion(framework="python", manifest={"inputs": [{"name": "x", "datatype": "FP32", "shape": shape}]})


def _count_values(value):
    return sum(_count_values(item) for item in value) if isinstance(value, list) else 1


def test_example_body_of_a_huge_shape_is_a_short_placeholder():
    body = examples.example_body(_version_with_shape([-1, 100_000, 100_000]))

    assert json.loads(body) == {"inputs": [[[0.0]]]}
    assert len(body) < 100


def test_example_body_stays_under_the_limit_of_values():
    limit = examples.MAX_EXAMPLE_VALUES
    at_limit = json.loads(examples.example_body(_version_with_shape([-1, 100, limit // 100])))
    past_limit = json.loads(examples.example_body(_version_with_shape([-1, 100, limit // 100 + 1])))

    assert _count_values(at_limit["inputs"]) == limit
    assert past_limit == {"inputs": [[[0.0]]]}


def test_example_body_of_a_deeply_nested_shape_is_bounded():
    body = json.loads(examples.example_body(_version_with_shape([-1] + [1] * 500)))

    placeholder = 0.0
    for _ in range(examples.MAX_EXAMPLE_RANK):
        placeholder = [placeholder]
    assert body == {"inputs": [placeholder]}


def test_example_body_of_an_onnx_graph_with_a_huge_input_is_bounded(monkeypatch):
    monkeypatch.setattr(examples, "_onnx_input_spec", lambda sha256, model_file: ((-1, 3, 60_000, 60_000), False))
    version = ModelVersion(framework="onnx", manifest={"framework": "onnx", "model": "model.onnx"}, sha256="0" * 64)

    assert json.loads(examples.example_body(version)) == {"inputs": [[[[0.0]]]]}
