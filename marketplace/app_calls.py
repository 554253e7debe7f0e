"""An app call: a subscriber's call to a marketplace app, held to its plan and metered,
then forwarded by the gateway to the publisher's service. The market wraps the gateway.

What the publisher's model says when it fails stays with the publisher: the runtime puts
the model's exception (and prints its traceback) in the instance's output, which the
publisher reads in its service's logs; the subscriber gets a generic ``model_error``.
Answers that are the caller's fault (a request the model cannot take) pass through, as
``{"code", "detail"}`` only and without any traceback.
"""

import json
import re
from dataclasses import replace

from accounts.authentication import AuthContext
from inference import forwarding, gateway, routing
from marketplace import access, metering
from modelbay.core.errors import ModelError, Unavailable, error_body

# The runtime's answers that the caller's request caused: 400 invalid_request, 413
# payload_too_large, 422 invalid_input. Any other error is the app's (or ours), not theirs.
CALLER_FAULTS = frozenset({400, 413, 422})
_MAX_DETAIL = 500
# Where a Python traceback (or a frame of one) starts inside a message.
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s*File \"[^\"]*\", line \d+", re.MULTILINE)


def _without_traceback(detail: str) -> str:
    match = _TRACEBACK.search(detail)
    if match is not None:
        detail = detail[: match.start()]
    return detail.strip()[:_MAX_DETAIL]


def _caller_fault(upstream: forwarding.Upstream) -> forwarding.Upstream:
    """The runtime's 4xx answer as ``{"code", "detail"}``: nothing else of it, no traceback."""
    try:
        answer = json.loads(upstream.body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        answer = {}
    code = answer.get("code") if isinstance(answer.get("code"), str) else "invalid_input"
    detail = _without_traceback(answer["detail"]) if isinstance(answer.get("detail"), str) else ""
    body = error_body(code, detail or "The inputs do not fit the model.")
    return replace(upstream, body=json.dumps(body).encode(), content_type="application/json")


def subscriber_answer(upstream: forwarding.Upstream) -> forwarding.Upstream:
    """What a subscriber may see of the publisher's service's answer."""
    if upstream.status < 400:
        return upstream
    if upstream.status in CALLER_FAULTS:
        return _caller_fault(upstream)
    raise ModelError()


async def serve_app(call: gateway.Call, context: AuthContext, gen: str) -> gateway.Answer:
    """Admit the call on the subscriber's plan, forward it, and bill it only when it succeeded.

    Held to three caps on calls in flight: the subscriber organization's, its plan's for
    this app, and the publisher's service's."""
    gateway.require_predict(context)
    app = await access.app_for(context.organization_id, call.slug, gen=gen)
    route = await routing.aroute_for(app.publisher_id, app.service_slug, gen=gen)
    if route is None:
        raise Unavailable()
    caps = [
        gateway.organization_cap(context.organization_id),
        gateway.Cap(("plan", app.plan.subscription_id), app.plan.max_in_flight, "This subscription to the app"),
        gateway.service_cap(route),
    ]
    deadline = call.deadline(route)
    async with gateway.admitted(caps, deadline=deadline):
        meter = metering.meter()
        ticket = await meter.aadmit(app.plan)
        billed = False
        try:
            upstream = await forwarding.forward(
                route,
                method="POST",
                path="/predict",
                body=call.body,
                headers=call.headers,
                route_key=call.route_key,
                deadline=deadline,
            )
            billed = upstream.status < 400
        finally:
            await meter.asettle(ticket, billed=billed)
    return gateway.upstream_answer(subscriber_answer(upstream))


ENDPOINT = gateway.Endpoint(re.compile(rf"/api/v1/apps/{gateway.SLUG}/predict"), "POST", "app", serve_app, "/predict")
