"""What a subscriber sees of a publisher's service's answer (no worker needed)."""

import json

import pytest

from inference.forwarding import Upstream
from marketplace.app_calls import subscriber_answer
from modelbay.core.errors import ModelError

TRACE = 'Traceback (most recent call last):\n  File "/srv/model.py", line 9, in predict\nKeyError: \'api-secret\'\n'


def _upstream(status: int, body) -> Upstream:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Upstream(status, raw, "application/json", 3)


def test_a_success_passes_untouched():
    upstream = _upstream(200, {"outputs": [1]})
    assert subscriber_answer(upstream) is upstream


@pytest.mark.parametrize("status", [500, 502, 503, 401, 404])
def test_any_other_error_becomes_a_generic_model_error(status):
    with pytest.raises(ModelError) as raised:
        subscriber_answer(_upstream(status, {"code": "model_error", "detail": f"RuntimeError: boom\n{TRACE}"}))
    assert (raised.value.code, raised.value.detail) == ("model_error", "The app failed on this input.")


def test_an_invalid_input_keeps_its_message_but_never_a_traceback():
    body = {"code": "invalid_input", "detail": f"no such key\n{TRACE}", "traceback": TRACE, "extra": 1}
    answer = subscriber_answer(_upstream(422, body))
    assert (answer.status, answer.version) == (422, 3)
    assert json.loads(answer.body) == {"code": "invalid_input", "detail": "no such key"}


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"code": "invalid_input", "detail": TRACE}, {"code": "invalid_input", "detail": "The inputs do not fit the model."}),
        (b"not json", {"code": "invalid_input", "detail": "The inputs do not fit the model."}),
        ({"code": "invalid_request", "detail": "bad JSON"}, {"code": "invalid_request", "detail": "bad JSON"}),
    ],
)
def test_a_caller_fault_is_only_code_and_detail(body, expected):
    answer = subscriber_answer(_upstream(400, body))
    assert json.loads(answer.body) == expected
