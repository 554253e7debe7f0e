"""Text recognition with RapidOCR (PP-OCR models, bundled in its wheel): an image in, lines of
text with their boxes and confidence out.

Each example is an image (PNG, JPEG, ...): raw bytes when the call's body is the image, or a
base64 string in JSON (``{"inputs": ["<base64>"]}``).
"""

import base64
import binascii
import threading

import cv2
import numpy as np
from rapidocr_onnxruntime import RapidOCR

try:  # Modelbay's runtime answers this error with 422 invalid_input
    from runtime.errors import InvalidInput
except ImportError:
    InvalidInput = ValueError


def decode_image(example, index: int) -> np.ndarray:
    """A BGR image from bytes or a base64 string (a ``data:`` URL too)."""
    if isinstance(example, str):
        try:
            example = base64.b64decode(example.rpartition(",")[2], validate=True)
        except binascii.Error:
            raise InvalidInput(f"example {index}: a string must be a base64-encoded image") from None
    if not isinstance(example, bytes):
        raise InvalidInput(f"example {index}: expected an image, got {type(example).__name__}")
    image = cv2.imdecode(np.frombuffer(example, np.uint8), cv2.IMREAD_COLOR) if example else None
    if image is None:
        raise InvalidInput(f"example {index}: not an image OpenCV can read (PNG, JPEG, WebP, BMP, TIFF, ...)")
    return image


class Model:
    def load(self, model_dir):
        # The default ("min") scales an image up until its short side is 736 px, which makes a
        # strip of text some 20 times slower to read for no better result; "max" only scales down.
        self.engine = RapidOCR(det_limit_type="max")
        self.lock = threading.Lock()  # the engine keeps per-call settings on itself

    def predict(self, inputs):
        return [self.read(decode_image(example, index)) for index, example in enumerate(inputs)]

    def read(self, image):
        with self.lock:
            found, _ = self.engine(image)
        lines = [
            {"text": text, "score": round(float(score), 3), "box": [[int(x), int(y)] for x, y in box]}
            for box, text, score in found or []
        ]
        return {"text": "\n".join(line["text"] for line in lines), "lines": lines}
