"""Loaded models, one class per framework.

Every model offers the same interface to the server:

* ``metadata_inputs`` / ``metadata_outputs``: OIP tensor metadata dicts;
* ``predict(examples) -> list``: ``/predict`` — a batch of examples in, one
  JSON-able output per example out;
* ``infer(tensors, requested) -> list[dict]``: OIP v2 infer — request tensors
  in, OIP output tensors out;
* ``inline_max_body``: requests whose body is at most this many bytes run
  inline on the event loop (fast ONNX models); larger ones, and every request
  to a model with ``-1``, run in the worker thread pool;
* ``accepts_raw``: whether ``/predict`` may send raw bytes as one example;
* ``batcher``: set (ONNX) when inline requests may share a session run; then
  ``infer_async``/``predict_async`` are used instead of ``infer``/``predict``.

Errors are raised as :mod:`.errors` exceptions (InvalidInput → 422,
ModelError → 500).
"""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path

import numpy as np

from .batching import Batcher
from .errors import InvalidInput, ModelError
from .manifest import Manifest, TensorSpec, load_manifest
from .tensors import (
    NUMPY_OF_DATATYPE,
    ONNX_TYPES,
    InputSpec,
    RequestTensor,
    column_tensor,
    datatype_of,
    output_tensor,
)

SKOPS_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.")
ONNX_INLINE_MAX_BODY = 256 * 1024


class Model:
    platform = ""
    accepts_raw = False
    inline_max_body = -1
    batcher = None  # a batching.Batcher when inline runs may be shared (ONNX)
    manifest: Manifest
    inputs: tuple[InputSpec, ...] = ()

    @property
    def metadata_inputs(self) -> list[dict]:
        return [spec.metadata() for spec in self.inputs]

    metadata_outputs: list[dict] = []

    def predict(self, examples: list) -> list:  # pragma: no cover - interface
        raise NotImplementedError

    def infer(self, tensors: list[RequestTensor], requested: list[str] | None) -> list[dict]:  # pragma: no cover
        raise NotImplementedError

    # helpers ---------------------------------------------------------------

    def _input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        known = ", ".join(repr(s.name) for s in self.inputs)
        raise InvalidInput(f"unknown input {name!r} (model inputs: {known})")

    @staticmethod
    def _check_requested(requested: list[str] | None, available: list[str]) -> list[str]:
        if requested is None:
            return available
        for name in requested:
            if name not in available:
                known = ", ".join(repr(n) for n in available)
                raise InvalidInput(f"unknown output {name!r} (model outputs: {known})")
        return requested


def _declared(specs: tuple[TensorSpec, ...] | None) -> dict[str, TensorSpec]:
    return {s.name: s for s in specs} if specs else {}


# ---------------------------------------------------------------------------
# ONNX


class OnnxModel(Model):
    """An ONNX model run by onnxruntime on the CPU.

    Metadata comes from the session (symbolic dims are -1); inputs/outputs
    declared in the manifest override names' datatype/shape in metadata and
    (for inputs) the shape used for validation. Data is always converted to the
    session's element type.
    """

    platform = "onnxruntime"
    inline_max_body = ONNX_INLINE_MAX_BODY

    def __init__(self, path: Path, manifest: Manifest, *, threads: int = 1, batching: bool = True) -> None:
        import onnxruntime as ort
        from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

        self.manifest = manifest
        self._invalid_argument = InvalidArgument
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        self._session = sess
        # The C++ session's run() directly: the Python wrapper only re-checks
        # input names, which infer()/predict() have already validated.
        inner = getattr(sess, "_sess", None)
        if inner is not None and callable(getattr(inner, "run", None)):
            self._run = lambda names, feeds: inner.run(names, feeds, None)
        else:  # pragma: no cover - other onnxruntime versions
            self._run = sess.run

        declared_in = _declared(manifest.inputs)
        model_inputs = sess.get_inputs()
        names = {i.name for i in model_inputs}
        for name in declared_in:
            if name not in names:
                raise ValueError(
                    f"manifest input {name!r} is not an input of the model (model inputs: {', '.join(sorted(names))})"
                )
        inputs = []
        for meta in model_inputs:
            datatype = ONNX_TYPES.get(meta.type)
            if datatype is None:
                raise ValueError(f"model input {meta.name!r} has unsupported type {meta.type}")
            shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in meta.shape)
            decl = declared_in.get(meta.name)
            if decl is not None:
                if len(decl.shape) != len(shape) or any(
                    m != -1 and d != -1 and m != d for m, d in zip(shape, decl.shape)
                ):
                    raise ValueError(
                        f"manifest input {meta.name!r} has shape {list(decl.shape)}, "
                        f"but the model's is {list(shape)}"
                    )
                shape = tuple(d if d != -1 else m for m, d in zip(shape, decl.shape))
                datatype = decl.datatype
            inputs.append(InputSpec(meta.name, datatype, shape, NUMPY_OF_DATATYPE[ONNX_TYPES[meta.type]]))
        self.inputs = tuple(inputs)
        self._single_input = inputs[0] if len(inputs) == 1 else None
        self._input_names = frozenset(names)

        declared_out = _declared(manifest.outputs)
        model_outputs = sess.get_outputs()
        out_names = [o.name for o in model_outputs]
        for name in declared_out:
            if name not in out_names:
                raise ValueError(
                    f"manifest output {name!r} is not an output of the model (model outputs: {', '.join(out_names)})"
                )
        outputs = []
        for meta in model_outputs:
            decl = declared_out.get(meta.name)
            if decl is not None:
                outputs.append(decl.to_dict())
            elif meta.type in ONNX_TYPES:
                shape = [d if isinstance(d, int) and d >= 0 else -1 for d in meta.shape]
                outputs.append({"name": meta.name, "datatype": ONNX_TYPES[meta.type], "shape": shape})
            else:  # e.g. ZipMap's seq(map(...)): returned as JSON text
                outputs.append({"name": meta.name, "datatype": "BYTES", "shape": [-1]})
        self.metadata_outputs = outputs
        self.output_names = out_names
        self._single_output = out_names[0] if len(out_names) == 1 else None
        self._warm_up()

        # Dynamic batching (see batching.py): only when every input and output
        # has a dynamic first dimension in the model itself.
        def dynamic_batch(meta) -> bool:
            return meta.type.startswith("tensor(") and len(meta.shape) >= 1 and not isinstance(meta.shape[0], int)

        self.batcher: Batcher | None = None
        if batching and all(map(dynamic_batch, model_inputs)) and all(map(dynamic_batch, model_outputs)):
            self.batcher = Batcher(lambda feeds: self._execute(self.output_names, feeds))

    def _warm_up(self) -> None:
        """One run on zeros so the first real request does not pay for allocation."""
        feeds = {}
        for spec in self.inputs:
            if spec.dtype.kind == "O":
                return
            shape = tuple(1 if d == -1 else d for d in spec.shape)
            feeds[spec.name] = np.zeros(shape, dtype=spec.dtype)
        try:
            self._run(self.output_names, feeds)
        except Exception:
            pass

    def _execute(self, names: list[str] | None, feeds: dict[str, np.ndarray]) -> list:
        try:
            return self._run(names, feeds)
        except self._invalid_argument as exc:
            raise InvalidInput(f"the model rejected the input: {exc}") from None
        except Exception as exc:
            raise ModelError(f"{type(exc).__name__}: {exc}") from None

    # /predict ------------------------------------------------------------

    def _predict_feeds(self, examples: list) -> dict[str, np.ndarray]:
        spec = self._single_input
        if spec is not None and not isinstance(examples[0], dict):
            return {spec.name: spec.to_array(examples)}
        cols: dict[str, list] = {s.name: [] for s in self.inputs}
        for i, ex in enumerate(examples):
            if not isinstance(ex, dict):
                raise InvalidInput(
                    f"example {i}: expected an object with the model inputs "
                    f"({', '.join(repr(s.name) for s in self.inputs)})"
                )
            for key in ex:
                if key not in cols:
                    self._input(key)  # raises "unknown input"
            for name, col in cols.items():
                if name not in ex:
                    raise InvalidInput(f"example {i}: missing input {name!r}")
                col.append(ex[name])
        return {s.name: s.to_array(cols[s.name]) for s in self.inputs}

    def _predict_outputs(self, n: int, outs: list):
        for name, out in zip(self.output_names, outs):
            if isinstance(out, np.ndarray):
                rows = out.shape[0] if out.ndim else -1
            else:
                rows = len(out) if isinstance(out, list) else -1
            if rows != n:
                raise ModelError(f"output {name!r} does not have one row per example ({n} examples)")
        if self._single_output is not None:
            return outs[0]  # serialised row by row
        names = self.output_names
        return [dict(zip(names, row)) for row in zip(*outs)]

    def predict(self, examples: list):
        outs = self._execute(self.output_names, self._predict_feeds(examples))
        return self._predict_outputs(len(examples), outs)

    async def predict_async(self, examples: list):
        """predict(), sharing one session run with concurrent requests."""
        feeds = self._predict_feeds(examples)
        outs = await self.batcher.run(feeds, len(examples))
        return self._predict_outputs(len(examples), outs)

    # OIP infer ----------------------------------------------------------

    def _infer_feeds(self, tensors: list[RequestTensor], requested: list[str] | None):
        feeds = {}
        for t in tensors:
            spec = self._input(t.name)
            if t.datatype is not None:
                spec.check_datatype(t.datatype)
            feeds[t.name] = spec.to_array(t.data, t.shape)
        if len(feeds) != len(self.inputs):
            missing = [s.name for s in self.inputs if s.name not in feeds]
            known = ", ".join(repr(s.name) for s in self.inputs)
            raise InvalidInput(f"missing input {missing[0]!r} (model inputs: {known})")
        return feeds, self._check_requested(requested, self.output_names)

    def infer(self, tensors: list[RequestTensor], requested: list[str] | None) -> list[dict]:
        feeds, names = self._infer_feeds(tensors, requested)
        outs = self._execute(names, feeds)
        return [output_tensor(name, out) for name, out in zip(names, outs)]

    async def infer_async(self, tensors: list[RequestTensor], requested: list[str] | None) -> list[dict]:
        """infer(), sharing one session run with concurrent requests."""
        feeds, names = self._infer_feeds(tensors, requested)
        rows = next(iter(feeds.values())).shape[0]
        outs = await self.batcher.run(feeds, rows)
        by_name = dict(zip(self.output_names, outs))
        return [output_tensor(name, by_name[name]) for name in names]


# ---------------------------------------------------------------------------
# scikit-learn (skops files)


def load_skops(path: Path):
    """Load a skops file, trusting only sklearn/numpy/scipy types."""
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    refused = [t for t in untrusted if not t.startswith(SKOPS_TRUSTED_PREFIXES)]
    if refused:
        raise ValueError(
            f"refusing to load {path.name}: it contains types outside the sklearn/numpy/scipy allowlist: "
            + ", ".join(refused)
        )
    return sio.load(path, trusted=untrusted)


class SklearnModel(Model):
    """A scikit-learn estimator saved with skops.

    ``/predict`` examples are rows of features (or objects keyed by feature
    name when the estimator was fitted with named features). Each output is
    ``{"label": ..., "probabilities": [...]}`` when the estimator has
    ``predict_proba``, else the predicted value. OIP outputs are ``label`` and
    ``probabilities``, or ``prediction``.
    """

    platform = "sklearn"

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.manifest = manifest
        est = load_skops(path)
        if not callable(getattr(est, "predict", None)):
            raise TypeError(f"{type(est).__name__} has no predict() method")
        self.estimator = est
        self.has_proba = hasattr(est, "predict_proba")
        n_features = getattr(est, "n_features_in_", None)
        self.n_features = int(n_features) if isinstance(n_features, (int, np.integer)) else None
        names = getattr(est, "feature_names_in_", None)
        self.feature_names = [str(n) for n in names] if names is not None else None

        if manifest.inputs:
            if len(manifest.inputs) != 1:
                raise ValueError("a sklearn model takes exactly one input tensor; the manifest declares "
                                 f"{len(manifest.inputs)}")
            d = manifest.inputs[0]
            spec = InputSpec(d.name, d.datatype, d.shape, NUMPY_OF_DATATYPE[d.datatype])
        elif self.n_features is not None:
            spec = InputSpec("input", "FP64", (-1, self.n_features), np.dtype(np.float64))
        else:
            spec = InputSpec("input", "BYTES", (-1,), np.dtype(object))
        self.input_spec = spec
        self.inputs = (spec,)

        classes = getattr(est, "classes_", None)
        label_type = datatype_of(np.asarray(classes)) if classes is not None else "FP64"
        if self.has_proba:
            n_classes = len(classes) if classes is not None else -1
            outputs = [
                {"name": "label", "datatype": label_type, "shape": [-1]},
                {"name": "probabilities", "datatype": "FP64", "shape": [-1, n_classes]},
            ]
        else:
            outputs = [{"name": "prediction", "datatype": label_type, "shape": [-1]}]
        declared = _declared(manifest.outputs)
        self.output_names = [o["name"] for o in outputs]
        self.metadata_outputs = [declared[o["name"]].to_dict() if o["name"] in declared else o for o in outputs]

    def _features(self, examples: list) -> np.ndarray:
        names = self.feature_names
        if isinstance(examples[0], dict):
            if names is None:
                raise InvalidInput("this model takes each example as a list of feature values, not an object")
            rows = []
            allowed = set(names)
            for i, ex in enumerate(examples):
                if not isinstance(ex, dict):
                    raise InvalidInput(f"example {i}: expected an object of features like example 0")
                for key in ex:
                    if key not in allowed:
                        raise InvalidInput(f"example {i}: unknown feature {key!r} (features: {', '.join(names)})")
                try:
                    rows.append([ex[n] for n in names])
                except KeyError as exc:
                    raise InvalidInput(f"example {i}: missing feature {exc.args[0]!r}") from None
            examples = rows
        try:
            X = np.array(examples)
        except (ValueError, TypeError, OverflowError):
            X = None
        if X is None or X.dtype.kind not in "biuf":
            try:
                X = np.array(examples, dtype=object)
            except (ValueError, TypeError):
                raise InvalidInput("examples are not a regular table of feature values") from None
        return self._check_shape(X)

    def _check_shape(self, X: np.ndarray) -> np.ndarray:
        spec = self.input_spec
        if not spec.shape_matches(X.shape):
            raise InvalidInput(f"input {spec.name!r}: {spec.expected()}, got [{', '.join(map(str, X.shape))}]")
        return X

    def _run(self, X: np.ndarray) -> list[np.ndarray]:
        est = self.estimator
        try:
            out = [np.asarray(est.predict(X))]
            if self.has_proba:
                out.append(np.asarray(est.predict_proba(X)))
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"the model rejected the input: {exc}") from None
        except Exception as exc:
            traceback.print_exc()
            raise ModelError(f"{type(exc).__name__}: {exc}") from None
        return out

    def predict(self, examples: list):
        out = self._run(self._features(examples))
        if self.has_proba:
            return [{"label": label, "probabilities": proba} for label, proba in zip(out[0], out[1])]
        return out[0]

    def infer(self, tensors: list[RequestTensor], requested: list[str] | None) -> list[dict]:
        if len(tensors) != 1:
            raise InvalidInput(f"this model takes exactly one input tensor {self.input_spec.name!r}")
        t = tensors[0]
        spec = self._input(t.name)
        if spec.dtype.kind == "O":
            try:
                X = np.array(t.data, dtype=object).reshape(t.shape)
            except ValueError as exc:
                raise InvalidInput(f"input {spec.name!r}: {exc}") from None
            X = self._check_shape(X)
        else:
            if t.datatype is not None:
                spec.check_datatype(t.datatype)
            X = spec.to_array(t.data, t.shape)
        names = self._check_requested(requested, self.output_names)
        outs = dict(zip(self.output_names, self._run(X)))
        return [output_tensor(name, outs[name]) for name in names]


# ---------------------------------------------------------------------------
# python (user code)


class PythonModel(Model):
    """User code: ``entrypoint: "module:Class"``.

    The model directory is put on ``sys.path``, ``module`` imported, ``Class()``
    instantiated without arguments, then ``obj.load(model_dir)`` called (if
    defined). ``obj.predict(inputs: list) -> list`` gets a batch of examples and
    must return one output per example; it runs in a worker thread, possibly
    several at once.

    Examples are the JSON values of ``/predict``'s ``inputs`` list, or one
    ``bytes`` object for a raw (non-JSON) body or multipart ``file`` part.

    OIP infer mapping: each input tensor is reshaped to its ``shape`` and split
    along the first dimension; with one input tensor the examples are its rows
    (scalars for a 1-D tensor, nested lists otherwise; BYTES elements are the
    strings as sent), with several tensors each example is a dict
    ``{input_name: row}``. The outputs become OIP tensors: if every output is a
    dict, one tensor per key; otherwise one tensor named ``output`` (or the single
    output declared in the manifest). Numeric values give a numeric tensor of
    shape ``[N, ...]``, strings a BYTES tensor, anything else a BYTES tensor of
    JSON texts.
    """

    platform = "python"
    accepts_raw = True

    def __init__(self, model_dir: Path, manifest: Manifest) -> None:
        self.manifest = manifest
        assert manifest.entrypoint is not None
        module_name, _, class_name = manifest.entrypoint.partition(":")
        root = model_dir.resolve()
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        importlib.invalidate_caches()
        module = importlib.import_module(module_name)
        file = getattr(module, "__file__", None)
        if file is None or not Path(file).resolve().is_relative_to(root):
            raise ImportError(
                f"module {module_name!r} resolves to {file or 'a built-in module'}, outside the model "
                "directory; rename your module"
            )
        cls = getattr(module, class_name, None)
        if cls is None:
            raise AttributeError(f"module {module_name!r} has no attribute {class_name!r}")
        obj = cls()
        load = getattr(obj, "load", None)
        if callable(load):
            load(str(model_dir))
        predict = getattr(obj, "predict", None)
        if not callable(predict):
            raise TypeError(f"{class_name} has no predict() method")
        self.obj = obj
        self._predict = predict
        self.inputs = tuple(
            InputSpec(d.name, d.datatype, d.shape, NUMPY_OF_DATATYPE[d.datatype]) for d in manifest.inputs or ()
        )
        self.metadata_outputs = [d.to_dict() for d in manifest.outputs or ()]

    def predict(self, examples: list) -> list:
        try:
            result = self._predict(examples)
        except InvalidInput:  # the model's own word that the input does not fit: 422
            raise
        except Exception as exc:
            traceback.print_exc()
            raise ModelError(f"{type(exc).__name__}: {exc}") from None
        if isinstance(result, (tuple, np.ndarray)):
            result = list(result)
        if not isinstance(result, list):
            raise ModelError(f"predict() must return a list with one output per input, got {type(result).__name__}")
        if len(result) != len(examples):
            raise ModelError(
                f"predict() returned {len(result)} outputs for {len(examples)} inputs; "
                "it must return exactly one output per input"
            )
        return result

    def _examples(self, tensors: list[RequestTensor]) -> list:
        columns = []
        for t in tensors:
            if self.inputs:
                spec = self._input(t.name)
                if t.datatype is not None:
                    spec.check_datatype(t.datatype)
            if not t.shape:
                raise InvalidInput(f"input {t.name!r}: shape needs a first (batch) dimension")
            try:
                if t.datatype == "BYTES":
                    arr = np.array(t.data, dtype=object)
                else:
                    arr = np.array(t.data)
                    if arr.dtype.kind not in "biufUO":
                        arr = np.array(t.data, dtype=object)
                arr = arr.reshape(t.shape)
            except (ValueError, TypeError, OverflowError) as exc:
                msg = str(exc).split("\n", 1)[0]
                raise InvalidInput(f"input {t.name!r}: data does not fit shape {list(t.shape)} ({msg})") from None
            columns.append((t.name, arr.tolist()))
        if len(columns) == 1:
            return columns[0][1]
        n = len(columns[0][1])
        for name, col in columns:
            if len(col) != n:
                raise InvalidInput(f"input {name!r}: batch size {len(col)} differs from {columns[0][0]!r}'s {n}")
        names = [name for name, _ in columns]
        return [dict(zip(names, row)) for row in zip(*(col for _, col in columns))]

    def infer(self, tensors: list[RequestTensor], requested: list[str] | None) -> list[dict]:
        examples = self._examples(tensors)
        if not examples:
            raise InvalidInput("empty batch")
        outputs = self.predict(examples)
        if all(isinstance(o, dict) for o in outputs):
            keys: dict[str, None] = {}
            for o in outputs:
                keys.update(dict.fromkeys(map(str, o)))
            tensors_out = {k: [o.get(k) for o in outputs] for k in keys}
        else:
            declared = self.manifest.outputs
            name = declared[0].name if declared and len(declared) == 1 else "output"
            tensors_out = {name: outputs}
        names = self._check_requested(requested, list(tensors_out))
        return [column_tensor(name, tensors_out[name]) for name in names]


# ---------------------------------------------------------------------------


def load_model(model_dir: Path, *, threads: int = 1, batching: bool = True) -> Model:
    """Read the manifest of ``model_dir`` and load the model it describes."""
    model_dir = Path(model_dir)
    manifest = load_manifest(model_dir)
    if manifest.framework == "onnx":
        assert manifest.model_file is not None
        return OnnxModel(model_dir / manifest.model_file, manifest, threads=threads, batching=batching)
    if manifest.framework == "sklearn":
        assert manifest.model_file is not None
        return SklearnModel(model_dir / manifest.model_file, manifest)
    return PythonModel(model_dir, manifest)
