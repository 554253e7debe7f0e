"""An app call: a subscriber's call to a marketplace app, held to its plan and metered,
then forwarded by the gateway to the publisher's service. The market wraps the gateway."""

from inference import forwarding, routing
from marketplace import metering
from marketplace.access import AppAccess
from modelbay.core.errors import Unavailable


def app_call(*, app: AppAccess, body: bytes, headers: dict[str, str], route_key: str | None, gen: str) -> forwarding.Upstream:
    """Admit the call on the subscriber's plan, forward it, and bill it only when it succeeded."""
    route = routing.route_for(app.publisher_id, app.service_slug, gen=gen)
    if route is None:
        raise Unavailable()
    meter = metering.meter()
    ticket = meter.admit(app.plan)
    billed = False
    try:
        upstream = forwarding.forward(route, method="POST", path="/predict", body=body, headers=headers, route_key=route_key)
        billed = upstream.status < 400
    finally:
        meter.settle(ticket, billed=billed)
    return upstream
