"""The runtime serving python-framework model packages (user code)."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from .conftest import start_runtime, write_python_model

ECHO = """
import json
import os
import threading
import time


class Model:
    def load(self, model_dir):
        with open(os.path.join(model_dir, "weights.json")) as f:
            self.scale = json.load(f)["scale"]

    def predict(self, inputs):
        out = []
        for x in inputs:
            if isinstance(x, bytes):
                out.append({"kind": "bytes", "size": len(x), "head": x[:4].hex()})
            elif isinstance(x, dict) and x.get("fail"):
                raise ValueError("boom: " + str(x["fail"]))
            elif isinstance(x, dict) and "sleep" in x:
                time.sleep(x["sleep"])
                out.append({"slept": x["sleep"], "thread": threading.current_thread().name})
            elif isinstance(x, dict) and x.get("short"):
                return out  # wrong length
            elif isinstance(x, dict) and x.get("weird"):
                out.append(object())
            elif isinstance(x, (int, float)):
                out.append(x * self.scale)
            elif isinstance(x, list):
                out.append([v * self.scale for v in x])
            elif isinstance(x, str):
                out.append(x.upper())
            else:
                out.append({"echo": x})
        return out
"""


@pytest.fixture(scope="module")
def echo_dir(tmp_path_factory):
    d = write_python_model(tmp_path_factory.mktemp("echo") / "pkg", ECHO)
    (d / "weights.json").write_text('{"scale": 2}')
    return d


@pytest.fixture(scope="module")
def rt(echo_dir, tmp_path_factory):
    runtime = start_runtime(echo_dir, tmp_path_factory.mktemp("py-rt"), name="echo", version=7)
    yield runtime
    runtime.stop()


def test_metadata(rt):
    body = rt.client.get("/v2/models/echo").json()
    assert body == {"name": "echo", "versions": ["7"], "platform": "python", "inputs": [], "outputs": []}


def test_predict_json(rt):
    r = rt.client.post("/predict", json={"inputs": [1, 2.5, [1, 2], "abc", {"k": "v"}]})
    assert r.status_code == 200, r.text
    assert r.json() == {"outputs": [2, 5.0, [2, 4], "ABC", {"echo": {"k": "v"}}], "model_version": 7}
    assert r.headers["x-model-version"] == "7"


def test_predict_raw_bytes(rt):
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    for ctype in ("image/png", "application/octet-stream", "text/plain; charset=utf-8"):
        r = rt.client.post("/predict", content=png, headers={"content-type": ctype})
        assert r.status_code == 200, r.text
        assert r.json()["outputs"] == [{"kind": "bytes", "size": len(png), "head": "89504e47"}]


def test_predict_multipart_file(rt):
    data = b"\x00\x01binary\r\n--not-a-boundary\r\n\xff" * 10
    r = rt.client.post("/predict", files={"file": ("photo.jpg", data, "image/jpeg")}, data={"note": "hello"})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"] == [{"kind": "bytes", "size": len(data), "head": data[:4].hex()}]


def test_multipart_without_file_part(rt):
    r = rt.client.post("/predict", files={"other": ("x.bin", b"abc")})
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_request"
    assert "'file'" in r.json()["detail"]
    r = rt.client.post("/predict", content=b"garbage", headers={"content-type": "multipart/form-data"})
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_request"


def test_predict_error_is_model_error_and_server_keeps_serving(rt):
    r = rt.client.post("/predict", json={"inputs": [1, {"fail": "bad thing"}]})
    assert r.status_code == 500
    assert r.json() == {"code": "model_error", "detail": "ValueError: boom: bad thing"}
    assert "Traceback" in rt.stderr()
    r = rt.client.post("/predict", json={"inputs": [3]})
    assert (r.status_code, r.json()["outputs"]) == (200, [6])


def test_wrong_output_length(rt):
    r = rt.client.post("/predict", json={"inputs": [1, {"short": True}, 3]})
    assert r.status_code == 500
    body = r.json()
    assert body["code"] == "model_error"
    assert "1 outputs for 3 inputs" in body["detail"]


def test_unserialisable_output(rt):
    r = rt.client.post("/predict", json={"inputs": [{"weird": True}]})
    assert r.status_code == 500
    assert r.json()["code"] == "model_error"


def test_bad_requests(rt):
    assert rt.client.post("/predict", json={"inputs": []}).status_code == 400
    assert rt.client.post("/predict", json={"input": [1]}).status_code == 400
    r = rt.client.post("/predict", content=b"{oops", headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["code"]) == (400, "invalid_request")
    r = rt.client.post("/predict", content=b"", headers={"content-type": "application/octet-stream"})
    assert (r.status_code, r.json()["code"]) == (400, "invalid_request")


def test_oip_infer_bytes_rows(rt):
    body = {"id": "x", "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["ab", "cd"]}]}
    r = rt.client.post("/v2/models/echo/infer", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "model_name": "echo",
        "model_version": "7",
        "id": "x",
        "outputs": [{"name": "output", "datatype": "BYTES", "shape": [2], "data": ["AB", "CD"]}],
    }


def test_oip_infer_numeric_rows(rt):
    body = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "INT64", "data": [1, 2, 3, 4, 5, 6]}]}
    r = rt.client.post("/v2/models/echo/infer", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"] == [
        {"name": "output", "datatype": "INT64", "shape": [2, 3], "data": [2, 4, 6, 8, 10, 12]}
    ]


def test_oip_infer_several_inputs_give_dicts(rt):
    body = {
        "inputs": [
            {"name": "a", "shape": [2], "datatype": "INT64", "data": [1, 2]},
            {"name": "b", "shape": [2], "datatype": "BYTES", "data": ["x", "y"]},
        ]
    }
    r = rt.client.post("/v2/models/echo/infer", json=body)
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    assert out["name"] == "echo"  # every output was a dict {"echo": ...}: one tensor per key
    assert out["datatype"] == "BYTES" and out["shape"] == [2]


def test_oip_infer_shape_mismatch(rt):
    body = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "INT64", "data": [1, 2, 3]}]}
    r = rt.client.post("/v2/models/echo/infer", json=body)
    assert (r.status_code, r.json()["code"]) == (422, "invalid_input")


def test_slow_predict_runs_off_the_event_loop(rt):
    results = {}

    def slow():
        results["slow"] = rt.client.post("/predict", json={"inputs": [{"sleep": 1.0}]})

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.2)
    start = time.monotonic()
    assert rt.client.get("/v2/health/live").status_code == 200
    assert rt.client.get("/v2/health/ready").status_code == 200
    assert time.monotonic() - start < 0.5
    t.join()
    body = results["slow"].json()
    assert body["outputs"][0]["slept"] == 1.0
    assert body["outputs"][0]["thread"].startswith("modelbay-predict")


# --- loading ---------------------------------------------------------------------------------


def test_load_failure_reports_error(tmp_path, rt_tmp):
    d = write_python_model(
        tmp_path / "bad",
        """
        class Model:
            def load(self, model_dir):
                raise RuntimeError("weights are corrupt")

            def predict(self, inputs):
                return inputs
        """,
    )
    runtime = start_runtime(d, rt_tmp, wait_ready=False)
    try:
        body = runtime.wait_loaded()
        r = runtime.client.get("/v2/health/ready")
        assert r.status_code == 503
        body = r.json()
        assert body["ready"] is False
        assert body["error"] == "RuntimeError: weights are corrupt"
        assert "Traceback" in body["traceback"] and "predictor.py" in body["traceback"]
        assert runtime.client.get("/v2/health/live").status_code == 200
        r = runtime.client.post("/predict", json={"inputs": [1]})
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert r.json()["code"] == "unavailable"
        assert "weights are corrupt" in r.json()["detail"]
        assert runtime.client.get("/v2/models/model/ready").status_code == 503
        assert runtime.client.get("/v2/models/model").status_code == 503
        assert "weights are corrupt" in runtime.stderr()
    finally:
        runtime.stop()


def test_import_error_and_bad_manifest_are_reported(tmp_path, rt_tmp):
    d = write_python_model(tmp_path / "imp", "import not_a_real_module_xyz\n")
    runtime = start_runtime(d, rt_tmp, wait_ready=False)
    try:
        body = runtime.wait_loaded()
        assert body["ready"] is False
        assert body["error"].startswith("ModuleNotFoundError")
    finally:
        runtime.stop()
    d = write_python_model(tmp_path / "man", "", manifest="framework: python\n")
    runtime = start_runtime(d, rt_tmp, wait_ready=False)
    try:
        body = runtime.wait_loaded()
        assert body["error"].startswith("ManifestError: entrypoint:")
    finally:
        runtime.stop()


def test_loading_happens_after_listening(tmp_path, rt_tmp):
    d = write_python_model(
        tmp_path / "slowload",
        """
        import time

        class Model:
            def load(self, model_dir):
                time.sleep(2)

            def predict(self, inputs):
                return [len(inputs)] * len(inputs)
        """,
    )
    runtime = start_runtime(d, rt_tmp, wait_ready=False)
    try:
        r = runtime.client.get("/v2/health/ready")
        assert r.status_code == 503
        assert r.json() == {"ready": False, "error": None, "loading": True}
        r = runtime.client.post("/predict", json={"inputs": [1]})
        assert (r.status_code, r.json()["code"]) == (503, "unavailable")
        assert runtime.wait_loaded() == {"ready": True}
        assert runtime.client.post("/predict", json={"inputs": [1, 2]}).json()["outputs"] == [2, 2]
    finally:
        runtime.stop()


def test_sigterm_finishes_in_flight_requests(echo_dir, rt_tmp):
    runtime = start_runtime(echo_dir, rt_tmp)
    results = {}

    def slow():
        results["r"] = runtime.client.post("/predict", json={"inputs": [{"sleep": 1.0}]})

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    runtime.proc.send_signal(signal.SIGTERM)
    t.join(10)
    assert results["r"].status_code == 200
    assert runtime.proc.wait(10) in (0, -signal.SIGTERM)
    runtime.stop()


REFUSING_MODEL = """
from runtime.errors import InvalidInput


class Model:
    def predict(self, inputs):
        if any(not isinstance(x, str) for x in inputs):
            raise InvalidInput("each input must be a string")
        return [x.upper() for x in inputs]
"""


def test_a_model_refuses_an_input_with_invalid_input(tmp_path):
    model_dir = write_python_model(tmp_path / "pkg", REFUSING_MODEL)
    runtime = start_runtime(model_dir, tmp_path, name="refuse")
    try:
        r = runtime.client.post("/predict", json={"inputs": ["a", 1]})
        assert r.status_code == 422
        assert r.json() == {"code": "invalid_input", "detail": "each input must be a string"}
        assert runtime.client.post("/predict", json={"inputs": ["a"]}).json()["outputs"] == ["A"]
    finally:
        runtime.stop()


RECORDING = """
import os
import time

class Model:
    def load(self, model_dir):
        self.log = os.path.join(model_dir, "ran.txt")

    def predict(self, inputs):
        for item in inputs:
            with open(self.log, "a") as log:
                log.write(item["run"] + "\\n")
            time.sleep(item.get("sleep", 0))
        return [item["run"] for item in inputs]
"""


def test_a_call_whose_caller_hung_up_before_its_turn_never_runs(tmp_path, rt_tmp):
    """One prediction thread: "a" runs, "b" waits for the thread and its caller hangs up,
    "c" comes after. "b" is dropped: the thread goes from "a" straight to "c"."""
    import socket
    from urllib.parse import urlsplit

    model_dir = write_python_model(tmp_path / "recording", RECORDING)
    runtime = start_runtime(model_dir, rt_tmp, name="recording", env={"MODELBAY_RUNTIME_WORKERS": "1"})
    try:
        first = threading.Thread(
            target=lambda: runtime.client.post("/predict", json={"inputs": [{"run": "a", "sleep": 1.5}]})
        )
        first.start()
        time.sleep(0.3)
        body = b'{"inputs": [{"run": "b"}]}'
        url = urlsplit(runtime.url)
        with socket.create_connection((url.hostname, url.port)) as caller:
            caller.sendall(
                b"POST /predict HTTP/1.1\r\nHost: runtime\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            time.sleep(0.3)  # "b" waits for the thread "a" holds
        first.join()
        third = runtime.client.post("/predict", json={"inputs": [{"run": "c"}]})
        assert third.json()["outputs"] == ["c"]
        assert (model_dir / "ran.txt").read_text().split() == ["a", "c"]
    finally:
        runtime.stop()
