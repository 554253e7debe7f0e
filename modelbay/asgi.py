"""The ASGI application that serves the whole site (uvicorn workers under gunicorn).

A protocol router (Channels): HTTP calls with an API key to the predict endpoints are
served by the asynchronous gateway (``inference.gateway.GatewayApp``) without entering
Django; every other HTTP request goes to Django (the console, the control API, the
console's own predict calls on its session); WebSockets are for the console's live pages.
"""

import os

from channels.routing import ProtocolTypeRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelbay.settings")
django_asgi_app = get_asgi_application()

from console.routing import websocket_application  # noqa: E402  (after Django is set up)
from inference import gateway  # noqa: E402
from marketplace import app_calls  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": gateway.GatewayApp([*gateway.ENDPOINTS, app_calls.ENDPOINT], fallback=django_asgi_app),
        "websocket": websocket_application,  # the console's live pages
        "lifespan": gateway.lifespan,
    }
)
