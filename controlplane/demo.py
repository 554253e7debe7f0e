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


DEMO_EMAIL = "demo@modelbay.local"
DEMO_PASSWORD = "modelbay-demo"
DEMO_ORG = "demo"
DEMO_SERVICE = "digits"


def demo_load(*, data_dir: Path) -> dict:
    """Make the demo user, organization, digits model and service, and a key (idempotent).

    The key's secret is kept in ``data_dir/demo_key`` so that every start can print it.
    """
    import io

    from django.core.files import File
    from django.db import transaction

    from accounts import services as account_services
    from accounts.choices import Role
    from accounts.models import Membership, Organization, User
    from controlplane import services
    from controlplane.models import Model, Service

    with transaction.atomic():
        user = User.objects.filter(email=DEMO_EMAIL).first()
        if user is None:
            user = User.objects.create_user(username=DEMO_EMAIL, email=DEMO_EMAIL, password=DEMO_PASSWORD)
        organization = Organization.objects.filter(slug=DEMO_ORG).first()
        if organization is None:
            organization = account_services.organization_create(name="Demo", owner=user, slug=DEMO_ORG)
        Membership.objects.get_or_create(user=user, organization=organization, defaults={"role": Role.OWNER})
    if not Model.objects.filter(organization=organization, slug="digits").exists():
        services.model_create(
            organization=organization,
            name="digits",
            description="Handwritten digit classifier (scikit-learn digits, logistic regression, ONNX).",
            upload=File(io.BytesIO(digits_onnx_bytes()), name="digits.onnx"),
        )
    if not Service.objects.filter(organization=organization, slug=DEMO_SERVICE, deleted_at__isnull=True).exists():
        services.service_create(organization=organization, name=DEMO_SERVICE, model_slug="digits", replicas=2)
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
