"""Model package format: ``modelbay.yaml`` parsing and validation.

This module is imported both by the runtime server and by the Django control
plane (to validate uploads), so it depends on the standard library and PyYAML
only.

A model directory holds either

* exactly one bare ``*.onnx`` file and no manifest (framework ``onnx``), or
* a ``modelbay.yaml`` manifest plus the files it names::

    framework: onnx | sklearn | python     # required
    model: model.onnx                      # default model.onnx (onnx) / model.skops (sklearn)
    entrypoint: "predictor:Model"          # python only, required there: module:Class
    requirements: ["numpy>=1.20"]          # python only: pip requirement strings,
                                           # or a file name such as "requirements.txt"
    system_packages: ["libgl1"]            # python only: Debian packages the model's
                                           # container image installs (docker backend)
    name: optional display name
    description: optional
    inputs:  [{name: input, datatype: FP32, shape: [-1, 64]}]   # optional
    outputs: [{name: label, datatype: INT64, shape: [-1]}]      # optional

Every problem raises :class:`ManifestError`, whose ``field`` names the
offending field (``"framework"``, ``"inputs[0].datatype"``, ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

__all__ = [
    "DATATYPES",
    "DEFAULT_MODEL_FILES",
    "FRAMEWORKS",
    "MANIFEST_NAME",
    "Manifest",
    "ManifestError",
    "TensorSpec",
    "load_manifest",
    "parse_manifest",
    "read_manifest_text",
]

MANIFEST_NAME = "modelbay.yaml"
FRAMEWORKS = ("onnx", "sklearn", "python")
DEFAULT_MODEL_FILES = {"onnx": "model.onnx", "sklearn": "model.skops"}
# Open Inference Protocol v2 tensor datatypes.
DATATYPES = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
)

_TOP_LEVEL_KEYS = (
    "framework",
    "model",
    "entrypoint",
    "requirements",
    "system_packages",
    "name",
    "description",
    "inputs",
    "outputs",
)
_TENSOR_KEYS = ("name", "datatype", "shape")
# A requirement is checked whole (``fullmatch``: a trailing newline or anything after the
# specifier is refused), against this subset of PEP 508: a distribution name, optional
# extras, optional version specifiers, an optional environment marker. Direct references
# (``name @ URL``), pip options (--index-url, -e, --hash, ...) and anything a shell or a
# requirements file would read as a second item are refused; "-r FILE" is expanded apart.
_REQ_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REQ_OP = r"(?:===|==|!=|<=|>=|~=|<|>)"
_REQ_VERSION = r"[A-Za-z0-9.*+!_-]+"
_REQ_SPEC = rf"{_REQ_OP} *{_REQ_VERSION}(?: *, *{_REQ_OP} *{_REQ_VERSION})*"
_REQUIREMENT_RE = re.compile(
    rf"{_REQ_NAME}"
    rf"(?: *\[ *{_REQ_NAME}(?: *, *{_REQ_NAME})* *\])?"  # extras: name[a,b]
    rf"(?: *(?:{_REQ_SPEC}|\( *{_REQ_SPEC} *\)))?"  # versions: >=1.2,<2 or (>=1.2)
    r"(?: *; *[A-Za-z0-9_.<>=!~\"'(), -]+)?"  # marker: ; python_version < "3.12"
)
_MAX_REQUIREMENT = 200
_MAX_REQUIREMENTS_FILE = 1024 * 1024
# Debian policy: lower case letters, digits, '+', '-', '.'; two characters at least.
_DEBIAN_PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9+.-]{1,99}")
# Upper bounds on declared tensor shapes, so that nothing sized from a manifest (an
# example input, a buffer) can be made huge by the manifest alone.
MAX_TENSOR_RANK = 32
MAX_TENSOR_DIM = 65_536
MAX_TENSOR_VALUES = 10_000_000  # product of the fixed (not -1) dimensions


class ManifestError(ValueError):
    """A manifest problem; ``field`` names what is wrong, ``message`` says why."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Manifest:
    framework: str
    model_file: str | None
    entrypoint: str | None
    requirements: tuple[str, ...]
    inputs: tuple[TensorSpec, ...] | None
    outputs: tuple[TensorSpec, ...] | None
    name: str | None = None
    description: str | None = None
    system_packages: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """JSON-serialisable form using the manifest's own keys (round-trips
        through :func:`parse_manifest`)."""
        out: dict = {"framework": self.framework}
        if self.model_file is not None:
            out["model"] = self.model_file
        if self.entrypoint is not None:
            out["entrypoint"] = self.entrypoint
        if self.requirements:
            out["requirements"] = list(self.requirements)
        if self.system_packages:
            out["system_packages"] = list(self.system_packages)
        if self.name is not None:
            out["name"] = self.name
        if self.description is not None:
            out["description"] = self.description
        if self.inputs is not None:
            out["inputs"] = [t.to_dict() for t in self.inputs]
        if self.outputs is not None:
            out["outputs"] = [t.to_dict() for t in self.outputs]
        return out


# --------------------------------------------------------------------------
# helpers


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


def _relative_file(field: str, value: object) -> str:
    """Validate a file path relative to the model directory (no escaping it)."""
    if not isinstance(value, str) or not value.strip():
        raise ManifestError(field, f"must be a non-empty file name, got {_type_name(value)}")
    if "\\" in value or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ManifestError(field, f"invalid file name {value!r}")
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts:
        raise ManifestError(field, f"must be a path inside the model directory, got {value!r}")
    return str(path)


def _check_file_exists(field: str, model_dir: Path, rel: str) -> Path:
    full = model_dir / rel
    if not full.is_file():
        raise ManifestError(field, f"file {rel!r} not found in the model directory")
    return full


def _optional_str(data: dict, key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ManifestError(key, f"must be a string, got {_type_name(value)}")
    return value


def _parse_framework(data: dict) -> str:
    if "framework" not in data or data["framework"] is None:
        raise ManifestError("framework", f"is required (one of: {', '.join(FRAMEWORKS)})")
    value = data["framework"]
    if not isinstance(value, str):
        raise ManifestError("framework", f"must be a string, got {_type_name(value)}")
    if value not in FRAMEWORKS:
        raise ManifestError("framework", f"unknown framework {value!r} (expected one of: {', '.join(FRAMEWORKS)})")
    return value


def _parse_entrypoint(value: object, framework: str, model_dir: Path | None) -> str | None:
    if framework != "python":
        if value is not None:
            raise ManifestError("entrypoint", "is only used by the python framework")
        return None
    if value is None:
        raise ManifestError("entrypoint", "is required for the python framework (e.g. 'predictor:Model')")
    if not isinstance(value, str):
        raise ManifestError("entrypoint", f"must be a string like 'predictor:Model', got {_type_name(value)}")
    module, sep, cls = value.partition(":")
    parts = module.split(".")
    if not sep or not cls.isidentifier() or not all(p.isidentifier() for p in parts):
        raise ManifestError("entrypoint", f"must look like 'module:Class' (e.g. 'predictor:Model'), got {value!r}")
    if model_dir is not None:
        base = model_dir.joinpath(*parts)
        if not (base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()):
            rel = "/".join(parts)
            raise ManifestError(
                "entrypoint", f"module {module!r} not found in the model directory (expected {rel}.py)"
            )
    return value


def _check_requirement(field: str, req: object) -> str:
    if not isinstance(req, str):
        raise ManifestError(field, f"must be a requirement string, got {_type_name(req)}")
    req = req.strip()
    if not req:
        raise ManifestError(field, "must not be empty")
    if any(c in req for c in "\n\r\x0b\x0c\x85\u2028\u2029"):
        raise ManifestError(field, f"must be a single line, got {req!r}")
    if req.startswith("-"):
        raise ManifestError(field, f"pip options are not allowed: {req!r}")
    if len(req) > _MAX_REQUIREMENT:
        raise ManifestError(field, f"is longer than {_MAX_REQUIREMENT} characters")
    # pip reads " -x" anywhere in a requirements-file line as the start of per-line options.
    if not _REQUIREMENT_RE.fullmatch(req) or re.search(r"\s-", req):
        raise ManifestError(
            field,
            f"not a valid requirement: {req!r} (expected one PEP 508 requirement such as "
            "'numpy>=1.20' or 'pkg[extra]==1.0; python_version >= \"3.10\"'; "
            "URLs, pip options and several items on one line are not allowed)",
        )
    return req


def _read_requirements_file(field: str, model_dir: Path, rel: str) -> list[str]:
    full = _check_file_exists(field, model_dir, rel)
    if full.stat().st_size > _MAX_REQUIREMENTS_FILE:
        raise ManifestError(field, f"{rel!r} is too large")
    try:
        text = full.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(field, f"cannot read {rel!r}: {exc}") from None
    out: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        # strip comments: a whole-line '#' or ' #' inline comment (pip's rule)
        if line.lstrip().startswith("#"):
            continue
        line = re.split(r"\s+#", line, maxsplit=1)[0].strip()
        if not line:
            continue
        out.append(_check_requirement(f"{field} ({rel} line {lineno})", line))
    return out


def _parse_requirements(value: object, framework: str, model_dir: Path | None) -> tuple[str, ...]:
    """A list of requirement strings, or a string naming a requirements file.

    Without ``model_dir`` a file reference is kept as the single item
    ``"-r FILE"`` (pip's own syntax), which is expanded once a directory is
    given.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[object] = [f"-r {value}"]
    elif isinstance(value, list):
        items = list(value)
    else:
        raise ManifestError(
            "requirements", f"must be a list of requirement strings or a file name, got {_type_name(value)}"
        )
    if items and framework != "python":
        raise ManifestError("requirements", "are only used by the python framework")
    out: list[str] = []
    for i, item in enumerate(items):
        field = "requirements" if isinstance(value, str) else f"requirements[{i}]"
        if isinstance(item, str) and item.strip().startswith("-r ") or item == "-r":
            rel = _relative_file(field, item.strip()[2:].strip() if isinstance(item, str) else None)
            if model_dir is None:
                out.append(f"-r {rel}")
            else:
                out.extend(_read_requirements_file(field, model_dir, rel))
        else:
            out.append(_check_requirement(field, item))
    return tuple(out)


def _parse_system_packages(value: object, framework: str) -> tuple[str, ...]:
    """Debian package names (the docker backend installs them into the model's image)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ManifestError("system_packages", f"must be a list of Debian package names, got {_type_name(value)}")
    if value and framework != "python":
        raise ManifestError("system_packages", "are only used by the python framework")
    for i, item in enumerate(value):
        # fullmatch: with match() and "$", "jq\n" would pass and end the Dockerfile's line.
        if not isinstance(item, str) or not _DEBIAN_PACKAGE_RE.fullmatch(item):
            raise ManifestError(
                f"system_packages[{i}]",
                f"is not a Debian package name: {item!r} (one name per item: lower case "
                "letters, digits, '+', '-' and '.', no spaces or options)",
            )
    return tuple(value)


def _parse_int(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ManifestError(field, f"must be an integer, got {_type_name(value)}")
    if value < -1:
        raise ManifestError(field, f"must be >= 0, or -1 for any size, got {value}")
    return value


def _parse_shape(field: str, shape: list) -> tuple[int, ...]:
    """Dimensions of at most MAX_TENSOR_DIM each (or -1), MAX_TENSOR_VALUES fixed values."""
    if len(shape) > MAX_TENSOR_RANK:
        raise ManifestError(field, f"has {len(shape)} dimensions; at most {MAX_TENSOR_RANK} are allowed")
    dims = tuple(_parse_int(f"{field}[{j}]", d) for j, d in enumerate(shape))
    for j, d in enumerate(dims):
        if d > MAX_TENSOR_DIM:
            raise ManifestError(f"{field}[{j}]", f"must be at most {MAX_TENSOR_DIM}, or -1 for any size, got {d}")
    values = 1
    for d in dims:
        if d != -1:
            values *= d
    if values > MAX_TENSOR_VALUES:
        raise ManifestError(
            field, f"holds {values} values per call without its -1 dimensions; at most {MAX_TENSOR_VALUES} are allowed"
        )
    return dims


def _parse_tensors(key: str, value: object) -> tuple[TensorSpec, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise ManifestError(key, f"must be a list of tensors, got {_type_name(value)}")
    if not value:
        raise ManifestError(key, "must not be empty (leave it out instead)")
    specs: list[TensorSpec] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        base = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise ManifestError(base, f"must be a mapping with name, datatype and shape, got {_type_name(item)}")
        for k in item:
            if k not in _TENSOR_KEYS:
                raise ManifestError(f"{base}.{k}", f"unknown field (expected: {', '.join(_TENSOR_KEYS)})")
        for k in _TENSOR_KEYS:
            if item.get(k) is None:
                raise ManifestError(f"{base}.{k}", "is required")
        name = item["name"]
        if not isinstance(name, str) or not name.strip():
            raise ManifestError(f"{base}.name", f"must be a non-empty string, got {_type_name(name)}")
        if name in seen:
            raise ManifestError(f"{base}.name", f"duplicate tensor name {name!r}")
        seen.add(name)
        datatype = item["datatype"]
        if not isinstance(datatype, str) or datatype.upper() not in DATATYPES:
            raise ManifestError(
                f"{base}.datatype", f"must be one of {', '.join(DATATYPES)}, got {datatype!r}"
            )
        shape = item["shape"]
        if not isinstance(shape, list):
            raise ManifestError(f"{base}.shape", f"must be a list of integers, got {_type_name(shape)}")
        dims = _parse_shape(f"{base}.shape", shape)
        specs.append(TensorSpec(name=name, datatype=datatype.upper(), shape=dims))
    return tuple(specs)


# --------------------------------------------------------------------------
# public API


def parse_manifest(data: object, *, model_dir: Path | None = None) -> Manifest:
    """Validate an already-decoded manifest document.

    With ``model_dir``, also check that the files it names exist there and
    expand a requirements file into its list of requirements.
    """
    if not isinstance(data, dict):
        raise ManifestError(MANIFEST_NAME, f"must be a mapping of fields, got {_type_name(data)}")
    for key in data:
        if key not in _TOP_LEVEL_KEYS:
            raise ManifestError(str(key), f"unknown field (allowed: {', '.join(_TOP_LEVEL_KEYS)})")
    if model_dir is not None:
        model_dir = Path(model_dir)

    framework = _parse_framework(data)

    model_file: str | None
    raw_model = data.get("model")
    if raw_model is None:
        model_file = DEFAULT_MODEL_FILES.get(framework)
    else:
        model_file = _relative_file("model", raw_model)
    if model_dir is not None and model_file is not None:
        _check_file_exists("model", model_dir, model_file)

    entrypoint = _parse_entrypoint(data.get("entrypoint"), framework, model_dir)
    requirements = _parse_requirements(data.get("requirements"), framework, model_dir)
    system_packages = _parse_system_packages(data.get("system_packages"), framework)
    name = _optional_str(data, "name")
    description = _optional_str(data, "description")
    inputs = _parse_tensors("inputs", data.get("inputs"))
    outputs = _parse_tensors("outputs", data.get("outputs"))
    return Manifest(
        framework=framework,
        model_file=model_file,
        entrypoint=entrypoint,
        requirements=requirements,
        inputs=inputs,
        outputs=outputs,
        name=name,
        description=description,
        system_packages=system_packages,
    )


def read_manifest_text(text: str, *, model_dir: Path | None = None) -> Manifest:
    """Parse ``modelbay.yaml`` text (YAML, safe loader) and validate it."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ManifestError(MANIFEST_NAME, f"invalid YAML: {exc}") from None
    return parse_manifest(data, model_dir=model_dir)


def load_manifest(model_dir: Path) -> Manifest:
    """The manifest of a model directory.

    ``modelbay.yaml`` when present; otherwise a directory with exactly one
    ``*.onnx`` file is an ONNX model package.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ManifestError(MANIFEST_NAME, f"missing: model directory {str(model_dir)!r} does not exist")
    manifest_path = model_dir / MANIFEST_NAME
    if manifest_path.is_file():
        try:
            text = manifest_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(MANIFEST_NAME, f"cannot read: {exc}") from None
        return read_manifest_text(text, model_dir=model_dir)
    onnx_files = sorted(p.name for p in model_dir.iterdir() if p.suffix == ".onnx" and p.is_file())
    if len(onnx_files) == 1:
        return Manifest(
            framework="onnx",
            model_file=onnx_files[0],
            entrypoint=None,
            requirements=(),
            inputs=None,
            outputs=None,
        )
    if not onnx_files:
        raise ManifestError(MANIFEST_NAME, f"missing: add a {MANIFEST_NAME} or a single .onnx file")
    raise ManifestError(
        MANIFEST_NAME,
        f"missing: found {len(onnx_files)} .onnx files ({', '.join(onnx_files)}); "
        f"add a {MANIFEST_NAME} naming the model file",
    )
