"""The demo model: a digits classifier trained on scikit-learn's bundled data set,
exported to ONNX. Nothing is downloaded: the data ships inside scikit-learn."""

import functools
from pathlib import Path

import numpy as np


def digits_data() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data.astype(np.float32), digits.target


def train_digits_classifier():
    from sklearn.linear_model import LogisticRegression

    features, labels = digits_data()
    return LogisticRegression(max_iter=2000).fit(features, labels)


def export_onnx(classifier, path: Path) -> Path:
    """Write the classifier as ONNX: input ``X`` float32 [N, 64]; outputs ``label`` and ``probabilities``."""
    from skl2onnx import to_onnx

    features, _ = digits_data()
    onnx_model = to_onnx(
        classifier,
        features[:1],
        options={id(classifier): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    path.write_bytes(onnx_model.SerializeToString())
    return path


def build_digits_onnx(path: Path):
    """Train and export; returns the fitted classifier so callers can compare predictions."""
    classifier = train_digits_classifier()
    export_onnx(classifier, path)
    return classifier


@functools.cache  # trained once a process
def digits_onnx_bytes() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "digits.onnx"
        build_digits_onnx(path)
        return path.read_bytes()
