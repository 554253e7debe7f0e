"""The marketplace's demo apps: the face and OCR packages deployed like any user's model (their
requirements pip-installed into a venv by the local backend), called through the gateway on
real runtimes, and the loader that publishes the three apps under "Modelbay Labs"."""

import base64
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image, ImageDraw, ImageFont
from rest_framework.test import APIClient

from accounts.choices import Role
from controlplane.models import Model, Service
from demo.services import APPS, PUBLISHER_SLUG, demo_apps_load
from marketplace.models import Listing, ListingStatus, Subscription
from tests.support import wait_status

# The first install of the apps' packages (OpenCV, RapidOCR, onnxruntime) on a cold pip
# cache takes minutes: up to FIRST_BUILD_S (600 s) per app, one after another.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

# The first deploy builds a venv per package (pip installs OpenCV, RapidOCR, ...).
FIRST_BUILD_S = 600
TEXT = "Modelbay reads 42 lines"


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _astronaut_png() -> bytes:
    from skimage import data

    return _png(Image.fromarray(data.astronaut()))


def _text_png(text: str) -> bytes:
    image = Image.new("RGB", (700, 120), "white")
    ImageDraw.Draw(image).text((20, 30), text, fill="black", font=ImageFont.load_default(size=48))
    return _png(image)


def _post_raw(client, url: str, body: bytes, content_type: str = "image/png"):
    return client.generic("POST", url, body, content_type=content_type)


@pytest.fixture
def demo_apps(worker, user_factory, make_api_client):
    """The demo apps loaded and their services ready; a manage+predict client of their publisher."""
    demo_apps_load(owner=user_factory())
    publisher = make_api_client(Listing.objects.get(slug="digits").publisher)
    for app in APPS:  # all deploying at once, so the venv builds overlap
        wait_status(publisher, app.slug, timeout_s=FIRST_BUILD_S)
    yield publisher
    Subscription.objects.all().delete()  # a listed service cannot be deleted, nor a plan in use
    Listing.objects.all().delete()


@pytest.mark.integration
def test_face_app_finds_the_face_in_a_photo_none_in_a_blank_image_and_refuses_a_non_image(demo_apps):
    url = "/api/v1/services/face-detect/predict"
    response = _post_raw(demo_apps, url, _astronaut_png())
    assert response.status_code == 200, response.content
    (found,) = response.json()["outputs"]
    assert (found["count"], found["single_face"]) == (1, True)
    face = found["faces"][0]
    assert abs(face["x"] - 177) <= 8 and abs(face["y"] - 66) <= 8 and abs(face["width"] - 95) <= 10, face

    blank = _png(Image.new("RGB", (320, 240), (128, 128, 128)))
    response = _post_raw(demo_apps, url, blank)
    assert response.json()["outputs"] == [{"faces": [], "count": 0, "single_face": False}]

    response = _post_raw(demo_apps, url, b"these bytes are not an image", "application/octet-stream")
    assert (response.status_code, response.json()["code"]) == (422, "invalid_input"), response.content
    assert "not an image" in response.json()["detail"]


@pytest.mark.integration
def test_ocr_app_reads_text_sent_raw_as_a_file_part_and_as_base64(demo_apps):
    url = "/api/v1/services/text-ocr/predict"
    image = _text_png(TEXT)
    file_part = {"file": SimpleUploadedFile("line.png", image, content_type="image/png")}
    for response in (
        _post_raw(demo_apps, url, image),
        demo_apps.post(url, file_part, format="multipart"),
        demo_apps.post(url, {"inputs": [base64.b64encode(image).decode()]}, format="json"),
    ):
        assert response.status_code == 200, response.content
        (read,) = response.json()["outputs"]
        assert read["text"] == TEXT
        (line,) = read["lines"]
        assert line["text"] == TEXT and line["score"] > 0.9
        assert len(line["box"]) == 4 and all(isinstance(v, int) for point in line["box"] for v in point)


def _assert_close(actual, expected, where="output"):
    """Equal but for small differences in numbers (another CPU may round a little differently)."""
    if isinstance(expected, bool) or isinstance(expected, str):
        assert actual == expected, where
    elif isinstance(expected, (int, float)):
        assert abs(actual - expected) <= (2 if isinstance(expected, int) else 0.02), f"{where}: {actual} != {expected}"
    elif isinstance(expected, dict):
        assert actual.keys() == expected.keys(), where
        for key in expected:
            _assert_close(actual[key], expected[key], f"{where}.{key}")
    else:
        assert len(actual) == len(expected), where
        for index, (a, e) in enumerate(zip(actual, expected)):
            _assert_close(a, e, f"{where}[{index}]")


@pytest.mark.integration
def test_each_listing_example_is_what_its_app_answers(demo_apps):
    for listing in Listing.objects.all():
        response = demo_apps.post(
            f"/api/v1/services/{listing.service.slug}/predict", listing.example_input, format="json"
        )
        assert response.status_code == 200, response.content
        _assert_close(response.json(), listing.example_output, listing.slug)


@pytest.mark.integration
def test_a_subscriber_reads_text_through_the_app_with_its_own_key(demo_apps, outsider_api):
    url = "/api/v1/apps/text-ocr/predict"
    image = _text_png(TEXT)
    assert _post_raw(outsider_api, url, image).status_code == 403
    response = outsider_api.post("/api/v1/marketplace/text-ocr/subscribe", {"plan": "free"}, format="json")
    assert response.status_code == 201, response.content
    response = _post_raw(outsider_api, url, image)
    assert response.status_code == 200, response.content
    assert response.json()["outputs"][0]["text"] == TEXT


@pytest.mark.django_db
def test_demo_apps_load_is_idempotent_and_publishes_three_apps(user_factory):
    owner = user_factory()
    assert demo_apps_load(owner=owner) == ["digits", "face-detect", "text-ocr"]
    assert demo_apps_load(owner=owner) == ["digits", "face-detect", "text-ocr"]

    listings = Listing.objects.filter(publisher__slug=PUBLISHER_SLUG)
    assert sorted(listings.values_list("slug", "status")) == [
        ("digits", ListingStatus.PUBLISHED),
        ("face-detect", ListingStatus.PUBLISHED),
        ("text-ocr", ListingStatus.PUBLISHED),
    ]
    assert (Model.objects.count(), Service.objects.filter(deleted_at__isnull=True).count()) == (3, 3)
    assert owner.memberships.get(organization__slug=PUBLISHER_SLUG).role == Role.OWNER
    for listing in listings:
        plans = {(p.name, p.monthly_quota, p.rate_limit_per_s, str(p.price_per_1k)) for p in listing.plans.all()}
        assert plans == {("free", 100, 5, "0.00"), ("pro", 100000, 50, "0.50")}

    browsed = APIClient().get("/api/v1/marketplace").json()
    assert {(app["slug"], app["publisher"], app["category"]) for app in browsed} == {
        ("digits", "Modelbay Labs", "classification"),
        ("face-detect", "Modelbay Labs", "vision"),
        ("text-ocr", "Modelbay Labs", "ocr"),
    }
    face = Listing.objects.get(slug="face-detect")
    example = Image.open(io.BytesIO(base64.b64decode(face.example_input["inputs"][0])))
    assert example.format == "JPEG"


def test_the_demo_login_has_a_verified_email_so_it_can_upload_where_verification_is_required(db, tmp_path, settings):
    from accounts.models import User
    from accounts.verification import email_verified
    from demo.services import DEMO_EMAIL, demo_load

    settings.MODELBAY_REQUIRE_VERIFIED_EMAIL = True
    demo_load(data_dir=tmp_path)
    assert email_verified(User.objects.get(email=DEMO_EMAIL))
