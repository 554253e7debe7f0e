"""Fixtures shared by the end-to-end tests in this folder."""

import pytest

from conftest import make_zip
from tests.support import ECHO_MODEL, deploy, upload, wait_status


@pytest.fixture
def echo_service(worker, api):
    """A ready python service, ``echo``: answers ``echo:<input>``; the input "slow" takes 3 s."""
    package = make_zip(
        {
            "modelbay.yaml": "framework: python\nentrypoint: predictor:Model\n",
            "predictor.py": ECHO_MODEL,
            "prefix.txt": "echo:",
        }
    )
    upload(api, "echo", "echo.zip", package)
    deploy(api, "echo", "echo")
    return wait_status(api, "echo")
