"""The runtime serving ONNX models, as a real subprocess."""

from __future__ import annotations

import signal
import socket

import numpy as np
import pytest

from .conftest import start_runtime

MAX_BODY = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def rt(digits_onnx_dir, tmp_path_factory):
    runtime = start_runtime(
        digits_onnx_dir,
        tmp_path_factory.mktemp("onnx-rt"),
        name="digits",
        version=3,
        env={"MODELBAY_RUNTIME_MAX_BODY": str(MAX_BODY)},
    )
    yield runtime
    # SIGTERM: uvicorn shuts down gracefully, then re-raises the signal
    assert runtime.stop() in (0, -signal.SIGTERM)
    assert "Traceback" not in runtime.stderr()


def infer_body(rows: np.ndarray, nested: bool = False, **extra) -> dict:
    data = rows.tolist() if nested else rows.ravel().tolist()
    return {"inputs": [{"name": "X", "shape": list(rows.shape), "datatype": "FP32", "data": data}], **extra}


def assert_error(r, status: int, code: str, *fragments: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["code"] == code, body
    for fragment in fragments:
        assert fragment in body["detail"], body
    return body


# --- health and metadata -------------------------------------------------------------


def test_health(rt):
    assert rt.client.get("/v2/health/live").json() == {"live": True}
    r = rt.client.get("/v2/health/ready")
    assert (r.status_code, r.json()) == (200, {"ready": True})


def test_server_metadata(rt):
    body = rt.client.get("/v2").json()
    assert body["name"] == "modelbay-runtime"
    assert body["extensions"] == []
    assert isinstance(body["version"], str)


def test_model_metadata(rt):
    expected = {
        "name": "digits",
        "versions": ["3"],
        "platform": "onnxruntime",
        "inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
        ],
    }
    assert rt.client.get("/v2/models/digits").json() == expected
    assert rt.client.get("/v2/models/digits/versions/3").json() == expected


def test_model_ready(rt):
    r = rt.client.get("/v2/models/digits/ready")
    assert (r.status_code, r.json()) == (200, {"name": "digits", "ready": True})
    assert rt.client.get("/v2/models/digits/versions/3/ready").status_code == 200


def test_unknown_model_name_and_version(rt):
    assert_error(rt.client.get("/v2/models/other"), 404, "not_found", "other")
    assert_error(rt.client.get("/v2/models/other/ready"), 404, "not_found")
    assert_error(rt.client.post("/v2/models/other/infer", json=infer_body(np.zeros((1, 64)))), 404, "not_found")
    assert_error(rt.client.get("/v2/models/digits/versions/9"), 404, "not_found", "9")


# --- predictions ---------------------------------------------------------------------------


def test_predict_matches_sklearn_on_all_data(rt, digits):
    expected = digits.clf.predict(digits.X)
    proba = digits.clf.predict_proba(digits.X)
    got_labels, got_proba = [], []
    for chunk in np.array_split(np.arange(len(digits.X)), 4):  # ~300 KB bodies: thread-pool path
        r = rt.client.post("/predict", json={"inputs": digits.X[chunk].tolist()})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_version"] == 3
        assert r.headers["x-model-version"] == "3"
        got_labels += [o["label"] for o in body["outputs"]]
        got_proba += [o["probabilities"] for o in body["outputs"]]
    assert got_labels == expected.tolist()
    np.testing.assert_allclose(np.array(got_proba), proba, atol=1e-4)


def test_predict_examples_as_objects(rt, digits):
    r = rt.client.post("/predict", json={"inputs": [{"X": digits.X[0].tolist()}, {"X": digits.X[1].tolist()}]})
    assert r.status_code == 200, r.text
    assert [o["label"] for o in r.json()["outputs"]] == digits.clf.predict(digits.X[:2]).tolist()


def test_predict_single_example(rt, digits):
    r = rt.client.post("/predict", json={"inputs": [digits.X[5].tolist()]})
    assert r.status_code == 200
    (out,) = r.json()["outputs"]
    assert set(out) == {"label", "probabilities"}
    assert out["label"] == int(digits.clf.predict(digits.X[5:6])[0])
    assert isinstance(out["label"], int)
    assert len(out["probabilities"]) == 10


@pytest.mark.parametrize("nested", [False, True])
def test_oip_infer(rt, digits, nested):
    rows = digits.X[:7]
    r = rt.client.post("/v2/models/digits/infer", json=infer_body(rows, nested=nested, id="req-1"))
    assert r.status_code == 200, r.text
    assert r.headers["x-model-version"] == "3"
    body = r.json()
    assert body["model_name"] == "digits"
    assert body["model_version"] == "3"
    assert body["id"] == "req-1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["label"]["datatype"] == "INT64"
    assert outputs["label"]["shape"] == [7]
    assert outputs["label"]["data"] == digits.clf.predict(rows).tolist()
    assert outputs["probabilities"]["datatype"] == "FP32"
    assert outputs["probabilities"]["shape"] == [7, 10]
    assert len(outputs["probabilities"]["data"]) == 70  # flat
    np.testing.assert_allclose(
        np.array(outputs["probabilities"]["data"]).reshape(7, 10), digits.clf.predict_proba(rows), atol=1e-4
    )


def test_oip_infer_versioned_path_and_requested_outputs(rt, digits):
    body = infer_body(digits.X[:2], outputs=[{"name": "label"}], parameters={"foo": 1})
    r = rt.client.post("/v2/models/digits/versions/3/infer", json=body)
    assert r.status_code == 200, r.text
    body = r.json()
    assert "id" not in body
    assert [o["name"] for o in body["outputs"]] == ["label"]


def test_oip_infer_accepts_other_numeric_datatype(rt, digits):
    body = infer_body(digits.X[:1])
    body["inputs"][0]["datatype"] = "FP64"
    assert rt.client.post("/v2/models/digits/infer", json=body).status_code == 200


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"", b"[1, 2]", b'{"inputs": 5}', b'{"inputs": []}', b'{"instances": [[1]]}', b'"text"'],
)
def test_predict_bad_request(rt, content):
    r = rt.client.post("/predict", content=content, headers={"content-type": "application/json"})
    assert_error(r, 400, "invalid_request")


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": {"name": "X"}},
        {"inputs": []},
        {"inputs": [5]},
        {"inputs": [{"shape": [1, 64], "datatype": "FP32", "data": [0] * 64}]},
        {"inputs": [{"name": "X", "datatype": "FP32", "data": [0] * 64}]},
        {"inputs": [{"name": "X", "shape": [1, -64], "datatype": "FP32", "data": [0] * 64}]},
        {"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32"}]},
        {"inputs": [{"name": "X", "shape": [1, 64], "datatype": 5, "data": [0] * 64}]},
        {"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "data": [0] * 64}], "outputs": "label"},
    ],
)
def test_infer_bad_request(rt, body):
    assert_error(rt.client.post("/v2/models/digits/infer", json=body), 400, "invalid_request")


def test_infer_malformed_json(rt):
    r = rt.client.post("/v2/models/digits/infer", content=b'{"inputs": [')
    assert_error(r, 400, "invalid_request", "JSON")


def test_predict_wrong_number_of_features(rt):
    r = rt.client.post("/predict", json={"inputs": [[0.1, 0.2, 0.3]]})
    assert_error(r, 422, "invalid_input", "input 'X': expected shape [-1, 64] (FP32), got [1, 3]")


@pytest.mark.parametrize(
    "inputs, fragment",
    [
        ([["a"] * 64], "strings"),
        ([[None] * 64], "expected shape [-1, 64] (FP32)"),
        ([[0.0] * 64, [0.0] * 63], "expected shape [-1, 64]"),  # ragged
        ([0.5] * 64, "got [64]"),  # one flat example instead of a list of rows
        ([{"Y": [0.0] * 64}], "unknown input 'Y'"),
        ([{"X": [0.0] * 64}, [0.0] * 64], "example 1: expected an object"),
        ([[[0.0] * 64]], "got [1, 1, 64]"),
    ],
)
def test_predict_invalid_input(rt, inputs, fragment):
    assert_error(rt.client.post("/predict", json={"inputs": inputs}), 422, "invalid_input", fragment)


@pytest.mark.parametrize(
    "tensor, fragment",
    [
        ({"name": "X", "shape": [1, 3], "datatype": "FP32", "data": [0.0, 0.1, 0.2]},
         "input 'X': expected shape [-1, 64] (FP32), got [1, 3]"),
        ({"name": "X", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 10}, "needs 64 values, got 10"),
        ({"name": "Y", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}, "unknown input 'Y'"),
        ({"name": "X", "shape": [1, 64], "datatype": "BYTES", "data": ["a"] * 64}, "datatype BYTES"),
        ({"name": "X", "shape": [1, 64], "datatype": "FLOAT", "data": [0.0] * 64}, "unknown datatype"),
        ({"name": "X", "shape": [1, 64], "datatype": "FP32", "data": ["x"] * 64}, "strings"),
        ({"name": "X", "shape": [64], "datatype": "FP32", "data": [0.0] * 64}, "got [64]"),
    ],
)
def test_infer_invalid_input(rt, tensor, fragment):
    r = rt.client.post("/v2/models/digits/infer", json={"inputs": [tensor]})
    assert_error(r, 422, "invalid_input", fragment)


def test_infer_unknown_output_and_duplicate_input(rt, digits):
    r = rt.client.post("/v2/models/digits/infer", json=infer_body(digits.X[:1], outputs=[{"name": "nope"}]))
    assert_error(r, 422, "invalid_input", "unknown output 'nope'")
    body = infer_body(digits.X[:1])
    body["inputs"] *= 2
    assert_error(rt.client.post("/v2/models/digits/infer", json=body), 422, "invalid_input", "more than once")


def test_raw_body_refused_for_onnx(rt):
    for ctype in ("image/png", "application/octet-stream", "text/plain"):
        r = rt.client.post("/predict", content=b"\x89PNG...", headers={"content-type": ctype})
        assert_error(r, 422, "invalid_input", "this model takes JSON inputs")


def test_not_found(rt):
    for path in ("/", "/v1/models/digits", "/v2/models", "/predict/x", "/v2/health/other"):
        assert_error(rt.client.get(path), 404, "not_found")


def test_method_not_allowed(rt, digits):
    r = rt.client.get("/v2/models/digits/infer")
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "POST"
    assert_error(rt.client.get("/predict"), 405, "method_not_allowed")
    assert_error(rt.client.post("/v2/health/live"), 405, "method_not_allowed")
    assert_error(rt.client.delete("/v2/models/digits"), 405, "method_not_allowed")


def test_payload_too_large(rt):
    r = rt.client.post("/predict", content=b" " * (MAX_BODY + 1), headers={"content-type": "application/json"})
    assert_error(r, 413, "payload_too_large")
    # chunked upload (no Content-Length)
    def chunks():
        for _ in range(5):
            yield b" " * (MAX_BODY // 4)

    r = rt.client.post("/v2/models/digits/infer", content=chunks())
    assert_error(r, 413, "payload_too_large")
    assert rt.client.get("/v2/health/live").status_code == 200


def test_chunked_body_under_limit(rt, digits):
    import json

    payload = json.dumps({"inputs": digits.X[:3].tolist()}).encode()

    def chunks():
        for i in range(0, len(payload), 100):
            yield payload[i : i + 100]

    r = rt.client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert len(r.json()["outputs"]) == 3


def test_garbage_http_does_not_kill_server(rt):
    host, port = rt.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        s.recv(1024)
    assert rt.client.get("/v2/health/live").status_code == 200


# --- a model with several inputs ------------------------------------------------------------


@pytest.fixture(scope="module")
def two_input_dir(tmp_path_factory):
    import onnx
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 2])
    b = helper.make_tensor_value_info("b", TensorProto.INT64, ["N", 2])
    total = helper.make_tensor_value_info("total", TensorProto.FLOAT, ["N", 2])
    cast = helper.make_node("Cast", ["b"], ["b_float"], to=TensorProto.FLOAT)
    add = helper.make_node("Add", ["a", "b_float"], ["total"])
    graph = helper.make_graph([cast, add], "two", [a, b], [total])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    d = tmp_path_factory.mktemp("two-input")
    (d / "net.onnx").write_bytes(model.SerializeToString())
    (d / "modelbay.yaml").write_text(
        "framework: onnx\nmodel: net.onnx\nname: adder\n"
        "outputs:\n  - {name: total, datatype: FP32, shape: [-1, 2]}\n"
    )
    return d


@pytest.fixture(scope="module")
def rt2(two_input_dir, tmp_path_factory):
    runtime = start_runtime(two_input_dir, tmp_path_factory.mktemp("rt2"))
    yield runtime
    runtime.stop()


def test_two_inputs_metadata(rt2):
    body = rt2.client.get("/v2/models/model").json()
    assert body["inputs"] == [
        {"name": "a", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "b", "datatype": "INT64", "shape": [-1, 2]},
    ]
    assert body["outputs"] == [{"name": "total", "datatype": "FP32", "shape": [-1, 2]}]


def test_two_inputs_predict(rt2):
    r = rt2.client.post("/predict", json={"inputs": [{"a": [0.5, 1], "b": [1, 2]}, {"a": [0, 0], "b": [3, 4]}]})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"] == [[1.5, 3.0], [3.0, 4.0]]  # one output: the row value itself


def test_two_inputs_errors(rt2):
    r = rt2.client.post("/predict", json={"inputs": [{"a": [0.5, 1], "b": [1, 2]}, {"a": [0, 0]}]})
    assert_error(r, 422, "invalid_input", "example 1: missing input 'b'")
    r = rt2.client.post("/predict", json={"inputs": [{"a": [0.5, 1], "b": [1, 2], "c": 1}]})
    assert_error(r, 422, "invalid_input", "unknown input 'c'")
    r = rt2.client.post("/predict", json={"inputs": [[0.5, 1]]})
    assert_error(r, 422, "invalid_input", "example 0")
    r = rt2.client.post("/predict", json={"inputs": [{"a": [0.5, 1], "b": [1.5, 2]}]})
    assert_error(r, 422, "invalid_input", "input 'b'", "INT64")


def test_two_inputs_infer(rt2):
    body = {
        "inputs": [
            {"name": "a", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]},
            {"name": "b", "shape": [1, 2], "datatype": "INT64", "data": [[10, 20]]},
        ]
    }
    r = rt2.client.post("/v2/models/model/infer", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"] == [{"name": "total", "datatype": "FP32", "shape": [1, 2], "data": [11.0, 22.0]}]
    body["inputs"].pop()
    assert_error(rt2.client.post("/v2/models/model/infer", json=body), 422, "invalid_input", "missing input 'b'")


def test_instance_id_is_accepted():
    import subprocess
    import sys

    from .conftest import REPO_ROOT

    out = subprocess.run(
        [sys.executable, "-m", "runtime", "--help"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert "--instance-id" in out.stdout


# --- HTTP details (the one-write-per-response protocol) ----------------------------------------


def _raw_exchange(rt, payload: bytes, expect_responses: int, timeout: float = 5.0) -> bytes:
    host, port = rt.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(payload)
        data = b""
        while data.count(b"HTTP/1.1 ") < expect_responses or not data.endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_pipelined_requests_get_ordered_complete_responses(rt, digits):
    import json

    body = json.dumps({"inputs": [digits.X[0].tolist()]}).encode()
    req = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body
    live = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    data = _raw_exchange(rt, req + live + req, 3)
    parts = data.split(b"HTTP/1.1 ")[1:]
    assert len(parts) == 3
    assert all(p.startswith(b"200 OK") for p in parts)
    assert parts[1].endswith(b'{"live":true}')
    assert b'"label":' in parts[0] and b'"label":' in parts[2]


def test_head_request(rt):
    r = rt.client.head("/v2/health/live")
    assert r.status_code == 200
    assert r.content == b""
    assert rt.client.get("/v2/health/live").json() == {"live": True}


def test_expect_100_continue(rt, digits):
    import json

    body = json.dumps({"inputs": [digits.X[0].tolist()]}).encode()
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    host, port = rt.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(head)
        interim = s.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        s.sendall(body)
        data = b""
        while not data.endswith(b"}"):
            data += s.recv(65536)
    assert data.startswith(b"HTTP/1.1 200 OK")


def test_keep_alive_survives_errors(rt, digits):
    import http.client

    host, port = rt.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        for path, body, status in [
            ("/predict", b"{bad", 400),
            ("/predict", b'{"inputs": [[1, 2]]}', 422),
            ("/nope", b"{}", 404),
            ("/predict", b'{"inputs": [[0.5] * 64]}'.replace(b"[0.5] * 64", str([0.5] * 64).encode()), 200),
        ]:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == status
            resp.read()
    finally:
        conn.close()
