"""The Python client for a Modelbay site's REST API, and the ``modelbay`` command built on it."""

from modelbay_client.client import Client
from modelbay_client.config import Credentials, load_credentials, save_credentials
from modelbay_client.errors import (
    ApiError,
    ConnectionFailed,
    ModelbayError,
    NotConfigured,
    OperationFailed,
    WaitTimedOut,
)
from modelbay_client.version import VERSION as __version__

__all__ = [
    "ApiError",
    "Client",
    "ConnectionFailed",
    "Credentials",
    "ModelbayError",
    "NotConfigured",
    "OperationFailed",
    "WaitTimedOut",
    "__version__",
    "load_credentials",
    "save_credentials",
]
