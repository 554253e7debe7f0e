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
