import pytest


@pytest.fixture
def digits(api, digits_upload):
    """The digits model, uploaded into the owner's organization."""
    response = api.post("/api/v1/models", {"name": "digits", "file": digits_upload}, format="multipart")
    assert response.status_code == 201
    return response.json()
