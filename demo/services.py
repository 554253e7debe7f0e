"""The demo content that `make run` loads: a demo user and organization with the digits
service and a key, and the marketplace's demo apps, published by "Modelbay Labs".

Each app comes from a model that ships inside a package, so nothing is downloaded at run
time but the PyPI packages a python model requires: the digits classifier (``demo.digits``),
face detection with OpenCV's bundled Haar cascade (``packages/face``) and text OCR with
RapidOCR, whose wheel carries its ONNX models (``packages/ocr``). They are deployed like
any user's models: uploaded, served by a service, listed and published.
"""

import base64
import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from allauth.account.models import EmailAddress
from django.core.files import File
from django.db import transaction

from accounts import services as account_services
from accounts.choices import Role
from accounts.models import Membership, Organization, User
from controlplane import services as controlplane_services
from controlplane.models import Model, Service
from demo.digits import digits_onnx_bytes
from marketplace import services as marketplace_services
from marketplace.models import Listing, ListingStatus

DEMO_EMAIL = "demo@modelbay.local"
DEMO_PASSWORD = "modelbay-demo"
DEMO_ORG = "demo"
DEMO_SERVICE = "digits"


def demo_load(*, data_dir: Path) -> dict:
    """Make the demo user, organization, digits model and service, and a key (idempotent).

    The key's secret is kept in ``data_dir/demo_key`` so that every start can print it.
    """
    with transaction.atomic():
        user = User.objects.filter(email=DEMO_EMAIL).first()
        if user is None:
            user = User.objects.create_user(username=DEMO_EMAIL, email=DEMO_EMAIL, password=DEMO_PASSWORD)
        # The demo login can upload and make keys where email verification is required.
        EmailAddress.objects.update_or_create(
            user=user, email=DEMO_EMAIL, defaults={"verified": True, "primary": True}
        )
        organization = Organization.objects.filter(slug=DEMO_ORG).first()
        if organization is None:
            organization = account_services.organization_create(name="Demo", owner=user, slug=DEMO_ORG)
        Membership.objects.get_or_create(user=user, organization=organization, defaults={"role": Role.OWNER})
    if not Model.objects.filter(organization=organization, slug="digits").exists():
        controlplane_services.model_create(
            organization=organization,
            name="digits",
            description="Handwritten digit classifier (scikit-learn digits, logistic regression, ONNX).",
            upload=File(io.BytesIO(digits_onnx_bytes()), name="digits.onnx"),
        )
    if not Service.objects.filter(organization=organization, slug=DEMO_SERVICE, deleted_at__isnull=True).exists():
        controlplane_services.service_create(organization=organization, name=DEMO_SERVICE, model_slug="digits", replicas=2)
    key_path = data_dir / "demo_key"
    if not key_path.exists():
        _, full_key = account_services.api_key_create(organization=organization, name="demo", created_by=user)
        key_path.write_text(full_key)
        key_path.chmod(0o600)
    return {
        "email": DEMO_EMAIL,
        "password": DEMO_PASSWORD,
        "organization": DEMO_ORG,
        "service": DEMO_SERVICE,
        "key": key_path.read_text().strip(),
    }


APPS_DIR = Path(__file__).resolve().parent / "packages"
PUBLISHER_NAME = "Modelbay Labs"
PUBLISHER_SLUG = "modelbay-labs"
PLANS = [
    {"name": "free", "monthly_quota": 100, "rate_limit_per_s": 5, "price_per_1k": Decimal("0")},
    {"name": "pro", "monthly_quota": 100_000, "rate_limit_per_s": 50, "price_per_1k": Decimal("0.50")},
]


def _zipped(name: str):
    """The package directory ``packages/<name>`` as a zip archive, made in memory."""

    def package() -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted((APPS_DIR / name).iterdir()):
                if path.is_file():
                    archive.write(path, path.name)
        return buffer.getvalue()

    return package


def _example_image(name: str) -> str:
    return base64.b64encode((APPS_DIR / "examples" / name).read_bytes()).decode()


@dataclass(frozen=True)
class DemoApp:
    slug: str  # of the model, its service and its listing
    filename: str
    package: Callable[[], bytes]
    listing: dict  # the listing's fields but its slug and plans
    example_image: str = ""  # an image app's example input: a file of packages/examples


_DIGITS_INPUT = [
    0, 0, 12, 10, 0, 0, 0, 0, 0, 0, 14, 16, 16, 14, 0, 0, 0, 0, 13, 16, 15, 10, 1, 0, 0, 0, 11, 16, 16, 7, 0, 0,
    0, 0, 0, 4, 7, 16, 7, 0, 0, 0, 0, 0, 4, 16, 9, 0, 0, 0, 5, 4, 12, 16, 4, 0, 0, 0, 9, 16, 16, 10, 0, 0,
]  # fmt: skip

_DIGITS_DESCRIPTION = """\
Recognises a handwritten digit (0 to 9) in an 8×8 grayscale image.

## Input

Each example is a list of **64 numbers**, the pixels of the image row by row, from 0 (white)
to 16 (black): the format of scikit-learn's *digits* data set. Send several examples in one
call to classify a batch.

## Output

For each example:

- `label`: the digit it most probably is;
- `probabilities`: ten numbers, the probability of each digit from 0 to 9.

## Call it

The *Call it from code* card on this page has the call in curl and Python, with this
Modelbay's address; send your organization's API key as a Bearer token.

## The model

A logistic regression trained on the 1,797 images of scikit-learn's digits data set,
exported to ONNX and served by onnxruntime.
"""

_FACE_DESCRIPTION = """\
Finds the faces in a photo: use it to check that an avatar or an ID picture shows exactly
one face, to crop around faces, or to count people.

## Input

An image (JPEG, PNG, WebP, BMP, TIFF), either

- as the **request body** itself, with its content type (`image/jpeg`, ...), or
- as a form upload with one part named `file`, or
- as **base64** strings in JSON: `{"inputs": ["<base64>", ...]}`, several images a call.

A body that is not an image is refused with 422 `invalid_input`.

## Output

For each image:

- `faces`: one box per face, `{"x", "y", "width", "height"}` in pixels from the top left;
- `count`: the number of faces;
- `single_face`: `true` when there is exactly one, the usual avatar rule.

## Call it

The *Call it from code* card on this page has the call in curl and Python, with this
Modelbay's address: send a photo as the body with its content type (`image/jpeg`, ...).

## The model

OpenCV's frontal face Haar cascade (Viola–Jones). It finds upright faces seen from the
front, at least 24 pixels wide; faces in profile or strongly tilted are missed.
"""

_OCR_DESCRIPTION = """\
Reads the printed text in an image: scanned documents, receipts, screenshots, signs.

## Input

An image (JPEG, PNG, WebP, BMP, TIFF), either

- as the **request body** itself, with its content type (`image/png`, ...), or
- as a form upload with one part named `file`, or
- as **base64** strings in JSON: `{"inputs": ["<base64>", ...]}`, several images a call.

## Output

For each image:

- `text`: the lines read, top to bottom, joined by new lines;
- `lines`: each line with its `text`, its `score` (confidence, 0 to 1) and its `box`
  (four corners `[x, y]`, clockwise from the top left, in pixels).

## Call it

The *Call it from code* card on this page has the call in curl and Python, with this
Modelbay's address: send a scan as the body with its content type (`image/png`, ...).

## The model

[RapidOCR](https://github.com/RapidAI/RapidOCR) running PaddleOCR's PP-OCRv4 detection and
recognition models on onnxruntime. It reads English and Chinese.
"""

APPS = [
    DemoApp(
        slug="digits",
        filename="digits.onnx",
        package=digits_onnx_bytes,
        listing={
            "title": "Handwritten digits",
            "summary": "Tells which digit, 0 to 9, an 8×8 handwritten image shows, with the probability of each.",
            "description": _DIGITS_DESCRIPTION,
            "category": "classification",
            "icon": "pen-line",
            "example_input": {"inputs": [_DIGITS_INPUT]},
            "example_output": {
                "outputs": [{"label": 5, "probabilities": [0.0, 0.002, 0.0, 0.0, 0.0, 0.908, 0.0, 0.0, 0.0, 0.09]}],
                "model_version": 1,
            },
        },
    ),
    DemoApp(
        slug="face-detect",
        filename="face-detect.zip",
        package=_zipped("face"),
        listing={
            "title": "Face detection",
            "summary": "Finds the faces in a photo and returns their boxes: check that an avatar shows exactly one face.",
            "description": _FACE_DESCRIPTION,
            "category": "vision",
            "icon": "smile",
            "example_output": {
                "outputs": [
                    {"faces": [{"x": 15, "y": 15, "width": 38, "height": 38}], "count": 1, "single_face": True}
                ],
                "model_version": 1,
            },
        },
        example_image="face.jpg",
    ),
    DemoApp(
        slug="text-ocr",
        filename="text-ocr.zip",
        package=_zipped("ocr"),
        listing={
            "title": "Text OCR",
            "summary": "Reads the printed text in an image: each line with its position and confidence.",
            "description": _OCR_DESCRIPTION,
            "category": "ocr",
            "icon": "scan-text",
            "example_output": {
                "outputs": [
                    {
                        "text": "Invoice 2041\nTotal: 42.50 EUR",
                        "lines": [
                            {"text": "Invoice 2041", "score": 0.986, "box": [[11, 14], [186, 14], [186, 42], [11, 42]]},
                            {
                                "text": "Total: 42.50 EUR",
                                "score": 0.971,
                                "box": [[11, 53], [235, 53], [235, 79], [11, 79]],
                            },
                        ],
                    }
                ],
                "model_version": 1,
            },
        },
        example_image="invoice.png",
    ),
]


def listing_fields(app: DemoApp) -> dict:
    """The listing of an app. An image app's example input is a small image in base64 JSON,
    a body the console's "Try it" box and curl can send as it is."""
    if not app.example_image:
        return app.listing
    return {**app.listing, "example_input": {"inputs": [_example_image(app.example_image)]}}


def demo_apps_load(*, owner: User) -> list[str]:
    """Publish the demo apps under "Modelbay Labs", an organization ``owner`` owns
    (idempotent: what exists already is left as it is, but for the listings' descriptions,
    which take the demo's current text); returns the listings' slugs."""
    publisher = _publisher(owner)
    for app in APPS:
        if not Model.objects.filter(organization=publisher, slug=app.slug).exists():
            upload = File(io.BytesIO(app.package()), name=app.filename)
            controlplane_services.model_create(
                organization=publisher,
                name=app.listing["title"],
                slug=app.slug,
                description=app.listing["summary"],
                upload=upload,
            )
        if not Service.objects.filter(organization=publisher, slug=app.slug, deleted_at__isnull=True).exists():
            controlplane_services.service_create(
                organization=publisher, name=app.listing["title"], slug=app.slug, model_slug=app.slug, replicas=1
            )
        if not Listing.objects.filter(slug=app.slug).exists():
            listing = marketplace_services.listing_create(
                publisher=publisher, service_slug=app.slug, plans=PLANS, slug=app.slug, **listing_fields(app)
            )
            marketplace_services.listing_set_status(listing=listing, status=ListingStatus.PUBLISHED)
        else:  # an earlier demo's text (which named a port of its own) gives way to this one's
            Listing.objects.filter(slug=app.slug, publisher=publisher).update(description=app.listing["description"])
    return [app.slug for app in APPS]


def _publisher(owner: User) -> Organization:
    with transaction.atomic():
        publisher = Organization.objects.filter(slug=PUBLISHER_SLUG).first()
        if publisher is None:
            return account_services.organization_create(name=PUBLISHER_NAME, owner=owner, slug=PUBLISHER_SLUG)
        Membership.objects.get_or_create(user=owner, organization=publisher, defaults={"role": Role.OWNER})
    return publisher
