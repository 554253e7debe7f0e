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
