"""Face detection with the Haar cascade that ships inside OpenCV: an image in, face boxes out.

Each example is an image (PNG, JPEG, ...): raw bytes when the call's body is the image, or a
base64 string in JSON (``{"inputs": ["<base64>"]}``).
"""

import base64
import binascii
import threading

import cv2
import numpy as np

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
        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        self.lock = threading.Lock()  # one classifier, calls may come from several threads

    def predict(self, inputs):
        return [self.detect(decode_image(example, index)) for index, example in enumerate(inputs)]

    def detect(self, image):
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        with self.lock:
            boxes = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5)
        faces = [{"x": int(x), "y": int(y), "width": int(w), "height": int(h)} for x, y, w, h in boxes]
        return {"faces": faces, "count": len(faces), "single_face": len(faces) == 1}
