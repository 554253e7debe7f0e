"""A minimal KServe 0.21 model server for an ONNX file, the baseline of bench/predict.py.

Runs in bench/.venv-kserve (see requirements-kserve.txt), not in the project's venv:

    bench/.venv-kserve/bin/python bench/kserve_onnx_server.py --onnx digits.onnx --port 8085 --name digits

Serves the Open Inference Protocol v2 (``POST /v2/models/NAME/infer``) and KServe's V1
(``POST /v1/models/NAME:predict``) on 127.0.0.1 (KServe binds 0.0.0.0; the bench only
calls 127.0.0.1). onnxruntime runs with one intra-op thread, like Modelbay's runtime.

Logging: per-call logging is switched off so the comparison is not about log lines:
uvicorn's access log and the ``kserve.trace`` timing lines (TimingMiddleware, latency
logging) are raised to WARNING. What stays on: KServe's Prometheus histograms (they are
part of its request path and cannot be switched off without patching KServe), its
TimingMiddleware (it still times each call; only the log line is dropped), and startup
/ error logging.
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np
import onnxruntime as ort

# kserve.model_server parses sys.argv at import time (parse_known_args); keep our own
# flags out of its way by parsing them first and then clearing argv.
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--onnx", required=True, help="path to the .onnx file")
parser.add_argument("--port", type=int, required=True, help="HTTP port")
parser.add_argument("--name", default="digits", help="model name in the URL")
parser.add_argument("--per-call-logging", action="store_true", help="keep KServe's default per-call log lines")
options = parser.parse_args()
sys.argv = sys.argv[:1]

import kserve  # noqa: E402
from kserve import InferOutput, InferRequest, InferResponse  # noqa: E402
from kserve.utils.utils import generate_uuid  # noqa: E402


class OnnxModel(kserve.Model):
    def __init__(self, name: str, path: str):
        super().__init__(name)
        self.path = path
        self.session: ort.InferenceSession | None = None
        self.input_name = ""
        self.output_names: list[str] = []
        self.load()

    def load(self) -> bool:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, sess_options=so, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None, response_headers=None):
        if isinstance(payload, InferRequest):  # Open Inference Protocol v2
            features = payload.inputs[0].as_numpy().astype(np.float32, copy=False)
            results = self.session.run(self.output_names, {self.input_name: features})
            outputs = []
            for name, value in zip(self.output_names, results):
                datatype = "INT64" if value.dtype == np.int64 else "FP32"
                output = InferOutput(name=name, shape=list(value.shape), datatype=datatype)
                output.set_data_from_numpy(value, binary_data=False)
                outputs.append(output)
            return InferResponse(
                response_id=payload.id or generate_uuid(),
                model_name=self.name,
                infer_outputs=outputs,
            )
        # KServe V1: {"instances": [[...64 floats...]]}
        features = np.asarray(payload["instances"], dtype=np.float32)
        labels, probabilities = self.session.run(self.output_names, {self.input_name: features})
        return {"predictions": labels.tolist()}


def main() -> None:
    model = OnnxModel(options.name, options.onnx)
    server = kserve.ModelServer(
        http_port=options.port,
        workers=1,
        enable_grpc=False,
        enable_docs_url=False,
        enable_latency_logging=options.per_call_logging,
    )
    if not options.per_call_logging:
        logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
        logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    server.start([model])


if __name__ == "__main__":
    main()
