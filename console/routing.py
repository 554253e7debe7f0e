"""The console's WebSocket routes (``modelbay.asgi`` serves them): its live pages, on the
session, and only from this site's own pages (the origin must be an allowed host)."""

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from console.consumers import ConsoleConsumer

websocket_application = AllowedHostsOriginValidator(
    AuthMiddlewareStack(URLRouter([path("ws/console/", ConsoleConsumer.as_asgi())]))
)
