"""ASGI entry point for WebSockets (Channels). The HTTP API is served over WSGI."""

import os

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelbay.settings")
django_asgi_app = get_asgi_application()

application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": URLRouter([])})
