import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from conftest import make_zip
from controlplane.models import Model, ModelVersion

pytestmark = pytest.mark.django_db


def _upload(name: str, content: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="application/octet-stream")


def _relabelled(path, doc: str) -> bytes:
    """The same ONNX model with another doc string: other bytes, same behaviour."""
    import onnx

    model = onnx.load(path)
    model.doc_string = doc
    return model.SerializeToString()


def _artifacts(settings) -> list:
    root = settings.MODELBAY_ARTIFACT_ROOT
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_upload_bare_onnx_creates_model_with_version_1(api, digits_upload, digits_model):
    import hashlib

    response = api.post("/api/v1/models", {"name": "Digits", "file": digits_upload}, format="multipart")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["slug"] == "digits"
    assert body["name"] == "Digits"
    [version] = body["versions"]
    assert version["version"] == 1
    assert version["framework"] == "onnx"
    assert version["sha256"] == hashlib.sha256(digits_model[0].read_bytes()).hexdigest()
    assert version["size"] == digits_model[0].stat().st_size
    assert set(version) >= {"version", "framework", "sha256", "size", "created_at"}


def test_new_version_is_numbered_and_artifact_stored_once(api, digits_model, settings):
    content = _relabelled(digits_model[0], "stored once")  # a sha256 no other test stores
    before = _artifacts(settings)
    api.post("/api/v1/models", {"name": "digits", "file": _upload("d.onnx", content)}, format="multipart")
    response = api.post("/api/v1/models/digits/versions", {"file": _upload("d.onnx", content)}, format="multipart")
    assert response.status_code == 201
    assert response.json()["version"] == 2
    assert len(set(_artifacts(settings)) - set(before)) == 1
    detail = api.get("/api/v1/models/digits").json()
    assert [v["version"] for v in detail["versions"]] == [1, 2]


def test_python_package_upload(api):
    source = "class Model:\n    def load(self, d):\n        pass\n    def predict(self, xs):\n        return xs\n"
    package = make_zip({"modelbay.yaml": "framework: python\nentrypoint: predictor:Model\n", "predictor.py": source})
    response = api.post("/api/v1/models", {"name": "echo", "file": _upload("echo.zip", package)}, format="multipart")
    assert response.status_code == 201, response.content
    assert response.json()["versions"][0]["framework"] == "python"


def test_slug_taken_answers_409(api, digits_model):
    content = digits_model[0].read_bytes()
    api.post("/api/v1/models", {"name": "digits", "file": _upload("d.onnx", content)}, format="multipart")
    response = api.post("/api/v1/models", {"name": "Digits", "file": _upload("d.onnx", content)}, format="multipart")
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"


BAD_UPLOADS = [
    ("garbage.onnx", b"this is not onnx", "ONNX"),
    ("evil.zip", make_zip({"modelbay.yaml": "framework: onnx\n", "../escape.onnx": b"x"}), ".."),
    ("nomanifest.zip", make_zip({"model.onnx": b"x"}), "modelbay.yaml"),
    ("badframework.zip", make_zip({"modelbay.yaml": "framework: tensorflow\n"}), "framework"),
    ("noentry.zip", make_zip({"modelbay.yaml": "framework: python\n"}), "entrypoint"),
    ("empty.onnx", b"", "empty"),
]


@pytest.mark.parametrize("name, content, mentions", BAD_UPLOADS, ids=[b[0] for b in BAD_UPLOADS])
def test_bad_upload_is_refused_and_stores_nothing(api, settings, name, content, mentions):
    before = _artifacts(settings)
    response = api.post("/api/v1/models", {"name": "bad", "file": _upload(name, content)}, format="multipart")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid_request"
    assert mentions.lower() in body["detail"].lower()
    assert "file" in body["fields"]
    assert Model.objects.count() == 0
    assert _artifacts(settings) == before


def test_bad_new_version_leaves_existing_versions_alone(api, digits_upload, settings):
    api.post("/api/v1/models", {"name": "digits", "file": digits_upload}, format="multipart")
    before = _artifacts(settings)
    response = api.post("/api/v1/models/digits/versions", {"file": _upload("x.onnx", b"junk")}, format="multipart")
    assert response.status_code == 400
    assert ModelVersion.objects.count() == 1
    assert _artifacts(settings) == before


def test_oversized_upload_answers_413_and_stores_nothing(api, digits_upload, settings):
    settings.MODELBAY_MAX_UPLOAD_BYTES = 1000
    before = _artifacts(settings)
    response = api.post("/api/v1/models", {"name": "digits", "file": digits_upload}, format="multipart")
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert Model.objects.count() == 0
    assert _artifacts(settings) == before


def test_missing_fields_are_named(api):
    response = api.post("/api/v1/models", {"name": "x"}, format="multipart")
    assert response.status_code == 400
    assert "file" in response.json()["fields"]


def test_json_body_on_upload_is_refused_as_json_error(api):
    response = api.post("/api/v1/models", {"name": "x"}, format="json")
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


def test_delete_undeployed_model(api, digits_upload):
    api.post("/api/v1/models", {"name": "digits", "file": digits_upload}, format="multipart")
    assert api.delete("/api/v1/models/digits").status_code == 204
    assert api.get("/api/v1/models/digits").status_code == 404


def test_unknown_model_is_404_json(api):
    response = api.get("/api/v1/models/nope")
    assert response.status_code == 404
    assert response.json() == {"code": "not_found", "detail": "Not found."}


def test_unknown_api_path_is_404_json(api):
    response = api.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
