"""What the client's tests share: a real Modelbay site (this repository's, served by gunicorn
on the test database, as production serves it) and small python models.

The tests run from the repository's root (`make test`, or `pytest client/tests`): the root
conftest.py gives them the test database, API keys and a real Celery worker.
"""

import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import _worker_env
from tests.own_services import Gateway

FREE_PLAN = {"name": "free", "monthly_quota": 1000, "rate_limit_per_s": 5, "price_per_1k": "0.00"}

# Answers each JSON input as it came and each raw input (bytes) with its length; says so on stdout (the logs).
RAW_MODEL = """
class Model:
    def load(self, model_dir):
        print("raw model loaded", flush=True)

    def predict(self, inputs):
        print(f"predicting {len(inputs)} inputs", flush=True)
        return [{"bytes": len(x)} if isinstance(x, bytes) else x for x in inputs]
"""


@contextmanager
def running_site(log_path: Path) -> Iterator[str]:
    """The site's URL while it runs (one web process: the tests make few calls at once)."""
    gateway = Gateway(_worker_env(), log_path, workers=1)
    try:
        yield gateway.start()
    finally:
        gateway.stop()


def python_package(path: Path, source: str) -> Path:
    """A zip python model package at ``path`` whose module ``predictor`` (``source``) defines ``Model``."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("modelbay.yaml", "framework: python\nentrypoint: predictor:Model\n")
        archive.writestr("predictor.py", source)
    return path
