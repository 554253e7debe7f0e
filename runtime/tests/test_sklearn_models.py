"""The runtime serving scikit-learn models saved with skops."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import start_runtime


@pytest.fixture(scope="module")
def rt(digits_skops_dir, tmp_path_factory):
    runtime = start_runtime(digits_skops_dir, tmp_path_factory.mktemp("sk-rt"))
    yield runtime
    runtime.stop()


def test_metadata(rt):
    body = rt.client.get("/v2/models/model").json()
    assert body["platform"] == "sklearn"
    assert body["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 64]}]
    assert body["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, 10]},
    ]


def test_predict_matches_sklearn(rt, digits):
    X = digits.X[:200]
    r = rt.client.post("/predict", json={"inputs": X.tolist()})
    assert r.status_code == 200, r.text
    outputs = r.json()["outputs"]
    assert [o["label"] for o in outputs] == digits.clf.predict(X).tolist()
    np.testing.assert_allclose([o["probabilities"] for o in outputs], digits.clf.predict_proba(X), atol=1e-6)


def test_oip_infer(rt, digits):
    X = digits.X[:4]
    body = {"inputs": [{"name": "input", "shape": [4, 64], "datatype": "FP32", "data": X.ravel().tolist()}]}
    r = rt.client.post("/v2/models/model/infer", json=body)
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    assert outputs["label"]["data"] == digits.clf.predict(X).tolist()
    assert outputs["probabilities"]["shape"] == [4, 10]


def test_wrong_features(rt):
    r = rt.client.post("/predict", json={"inputs": [[1, 2, 3]]})
    assert r.status_code == 422
    assert r.json() == {"code": "invalid_input",
                        "detail": "input 'input': expected shape [-1, 64] (FP64), got [1, 3]"}
    r = rt.client.post("/predict", json={"inputs": [["a"] * 64]})
    assert (r.status_code, r.json()["code"]) == (422, "invalid_input")
    r = rt.client.post("/predict", json={"inputs": [{"a": 1}]})
    assert (r.status_code, r.json()["code"]) == (422, "invalid_input")
    r = rt.client.post("/predict", content=b"raw", headers={"content-type": "application/octet-stream"})
    assert (r.status_code, r.json()["code"]) == (422, "invalid_input")


def test_regressor_with_named_features(tmp_path, rt_tmp):
    import skops.io as sio
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(0)
    X = rng.random((50, 2))
    y = X @ np.array([2.0, -1.0]) + 0.5
    reg = LinearRegression().fit(X, y)
    reg.feature_names_in_ = np.array(["a", "b"], dtype=object)  # as if fitted on a DataFrame
    sio.dump(reg, tmp_path / "reg.skops")
    (tmp_path / "modelbay.yaml").write_text("framework: sklearn\nmodel: reg.skops\n")
    runtime = start_runtime(tmp_path, rt_tmp)
    try:
        meta = runtime.client.get("/v2/models/model").json()
        assert [o["name"] for o in meta["outputs"]] == ["prediction"]
        r = runtime.client.post("/predict", json={"inputs": [[1.0, 1.0], {"b": 2.0, "a": 1.0}]})
        assert r.status_code == 422  # mixed rows/objects
        r = runtime.client.post("/predict", json={"inputs": [{"a": 1.0, "b": 1.0}, {"b": 2.0, "a": 1.0}]})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["outputs"], [1.5, 0.5])
        r = runtime.client.post("/predict", json={"inputs": [{"a": 1.0}]})
        assert r.status_code == 422
        assert "missing feature 'b'" in r.json()["detail"]
    finally:
        runtime.stop()


def test_untrusted_types_are_refused(tmp_path, rt_tmp):
    import operator

    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    rng = np.random.default_rng(0)
    X = rng.random((20, 3))
    pipe = make_pipeline(FunctionTransformer(operator.neg), LogisticRegression()).fit(X, X[:, 0] > 0.5)
    sio.dump(pipe, tmp_path / "model.skops")
    (tmp_path / "modelbay.yaml").write_text("framework: sklearn\n")
    runtime = start_runtime(tmp_path, rt_tmp, wait_ready=False)
    try:
        body = runtime.wait_loaded()
        assert body["ready"] is False
        assert "_operator.neg" in body["error"]
        assert "allowlist" in body["error"]
    finally:
        runtime.stop()
