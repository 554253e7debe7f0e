"""The model pages: uploading a model or a new version, the list, deleting (console.views.model_pages)."""

import pytest

from console.tests.helpers import url
from controlplane.models import Model, ModelVersion

pytestmark = pytest.mark.django_db


def test_uploading_a_model_redirects_to_its_page(owner_client, organization, digits_upload):
    response = owner_client.post(
        url("model_list"), {"name": "Digits", "description": "Handwritten digits", "file": digits_upload}
    )

    model = Model.objects.get(organization=organization)
    assert response.url == url("model_detail", model.slug)
    assert model.versions.get().framework == "onnx"
    page = owner_client.get(response.url)
    assert b"Handwritten digits" in page.content
    assert model.versions.get().sha256[:12].encode() in page.content


def test_a_bad_package_shows_its_error_and_stores_nothing(owner_client, bad_package):
    response = owner_client.post(url("model_list"), {"name": "Broken", "file": bad_package})

    assert response.status_code == 400
    assert "modelbay.yaml: framework:" in response.context["form"].errors["file"][0]
    assert b"modelbay.yaml: framework:" in response.content
    assert Model.objects.count() == 0
    assert ModelVersion.objects.count() == 0


def test_a_taken_model_name_is_a_form_error(owner_client, model, make_digits_upload):
    response = owner_client.post(url("model_list"), {"name": "Digits", "file": make_digits_upload()})

    assert response.status_code == 400
    assert "already exists" in response.context["form"].non_field_errors()[0]
    assert Model.objects.count() == 1


def test_model_list_shows_versions_framework_and_size(owner_client, model):
    response = owner_client.get(url("model_list"))

    listed = response.context["models"][0]
    assert (listed.version_count, listed.latest.framework) == (1, "onnx")
    assert b"Digits" in response.content


def test_uploading_a_new_version(owner_client, model, make_digits_upload):
    response = owner_client.post(url("model_version_add", model.slug), {"file": make_digits_upload()})

    assert response.url == url("model_detail", model.slug)
    assert list(model.versions.values_list("version", flat=True)) == [1, 2]


def test_a_bad_new_version_is_refused_on_the_model_page(owner_client, model, bad_package):
    response = owner_client.post(url("model_version_add", model.slug), {"file": bad_package})

    assert response.status_code == 400
    assert b"modelbay.yaml: framework" in response.content
    assert model.versions.count() == 1


def test_deleting_a_model(owner_client, model):
    response = owner_client.post(url("model_delete", model.slug))

    assert response.url == url("model_list")
    assert not Model.objects.exists()


def test_deleting_a_deployed_model_shows_the_conflict(owner_client, service):
    response = owner_client.post(url("model_delete", service.model.slug), follow=True)

    assert b"A version of this model is deployed" in response.content
    assert Model.objects.filter(pk=service.model_id).exists()


# --- uploads over the size limit are refused from their Content-Length -------------------
@pytest.fixture
def small_upload_limit(settings, monkeypatch):
    """An upload limit of 1000 bytes, and a body that must not be parsed: reading a
    multipart body is what writes its file to disk."""
    from django.http.multipartparser import MultiPartParser

    def parse(self):
        raise AssertionError("the upload's body was read")

    settings.MODELBAY_MAX_UPLOAD_BYTES = 1000
    monkeypatch.setattr(MultiPartParser, "parse", parse)
    return settings.MODELBAY_MAX_UPLOAD_BYTES


def _big_upload():
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("big.onnx", b"\0" * 200_000, content_type="application/octet-stream")


def _stored_files(settings):
    root = settings.MODELBAY_ARTIFACT_ROOT
    return list(root.iterdir()) if root.exists() else []


def test_an_upload_over_the_limit_is_refused_before_it_is_read(owner_client, small_upload_limit, settings):
    before = _stored_files(settings)

    response = owner_client.post(url("model_list"), {"name": "Big", "file": _big_upload()})

    assert response.status_code == 413
    error = response.context["form"].errors["file"][0]
    assert "uploads are limited to 1000 bytes" in error
    assert b"uploads are limited to 1000 bytes" in response.content
    assert Model.objects.count() == 0
    assert _stored_files(settings) == before


def test_a_declared_content_length_over_the_limit_is_enough(owner_client, small_upload_limit):
    response = owner_client.post(
        url("model_list"), {"name": "Small", "file": b"x"}, CONTENT_LENGTH=str(small_upload_limit + 64 * 1024 + 1)
    )

    assert response.status_code == 413
    assert "1000 bytes" in response.context["form"].errors["file"][0]
    assert Model.objects.count() == 0


def test_a_new_version_over_the_limit_is_refused_before_it_is_read(owner_client, model, small_upload_limit):
    response = owner_client.post(url("model_version_add", model.slug), {"file": _big_upload()})

    assert response.status_code == 413
    assert "uploads are limited to 1000 bytes" in response.context["version_form"].errors["file"][0]
    assert b"uploads are limited to 1000 bytes" in response.content
    assert model.versions.count() == 1


def test_upload_forms_still_check_csrf(owner, model, make_digits_upload):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)

    assert client.post(url("model_list"), {"name": "Other", "file": make_digits_upload()}).status_code == 403
    assert client.post(url("model_version_add", model.slug), {"file": make_digits_upload()}).status_code == 403
    assert Model.objects.count() == 1
    assert model.versions.count() == 1

    client.get(url("model_list"))
    token = client.cookies["csrftoken"].value
    response = client.post(url("model_version_add", model.slug), {"file": make_digits_upload(), "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert model.versions.count() == 2
