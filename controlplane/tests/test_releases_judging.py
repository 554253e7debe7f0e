"""The analysis of a release step (controlplane.releases.step_verdict): judged only on
enough calls on each version, against the old version's own figures, under the ceilings."""

import pytest

from controlplane.models import Release
from controlplane.releases import Verdict, step_verdict


def _release(**bounds) -> Release:
    return Release(version=2, from_version=1, steps=[10, 50, 100], interval_s=60,
                   **{"max_error_rate": 0.05, "max_p99_ms": None, **bounds})  # fmt: skip


def _version(requests: int, errors: int = 0, p99_ms: float = 5.0, p95_ms: float | None = None) -> dict:
    return {
        "requests": requests,
        "errors": errors,
        "error_rate": round(errors / requests, 4) if requests else 0.0,
        "p95_ms": (p95_ms or p99_ms) if requests else None,
        "p99_ms": p99_ms if requests else None,
    }


def _verdict(new: dict, old: dict, **bounds) -> Verdict:
    return step_verdict(release=_release(**bounds), figures={"new": new, "old": old})


def test_no_calls_is_no_verdict():
    verdict = _verdict(_version(0), _version(0))

    assert verdict.outcome == Verdict.WAIT
    assert verdict.message == (
        "Not enough traffic to judge: 0 calls on version 2 and 0 on version 1 in this step; each needs min_calls 100."
    )


@pytest.mark.parametrize("new, old", [(99, 5000), (5000, 99), (50, 50)])
def test_fewer_calls_than_min_calls_on_either_version_is_no_verdict(new, old):
    assert _verdict(_version(new), _version(old)).outcome == Verdict.WAIT


def test_min_calls_is_per_release():
    assert _verdict(_version(20), _version(20), min_calls=20).outcome == Verdict.PASS


def test_a_ceiling_needs_enough_calls_on_the_new_version_only():
    verdict = _verdict(_version(200, errors=50), _version(0))

    assert verdict.outcome == Verdict.FAIL
    assert "error rate 25.00% over 200 calls exceeds max_error_rate 5.00%" in verdict.message


def test_a_few_failed_calls_are_not_yet_a_breach():
    assert _verdict(_version(10, errors=10), _version(1000)).outcome == Verdict.WAIT


def test_a_new_version_like_the_old_one_passes():
    verdict = _verdict(_version(500, errors=5), _version(4500, errors=45))

    assert verdict.outcome == Verdict.PASS
    assert verdict.limits["error_rate"] < 0.05  # the old version's figures set the bound, not the ceiling


def test_a_higher_error_rate_than_the_old_version_rolls_back_under_the_ceiling():
    verdict = _verdict(_version(2000, errors=60), _version(2000, errors=2), max_error_rate=0.2)

    assert verdict.outcome == Verdict.FAIL
    assert verdict.message.startswith(
        "Rolled back: version 2's error rate 3.00% over 2000 calls is worse than version 1's 0.10% over 2000 calls "
        "by more than max_error_rate_increase 1.00% (+"
    )
    assert verdict.limits["error_rate"] < 0.03 < verdict.limits["max_error_rate"]


def test_a_difference_chance_explains_on_few_calls_is_not_a_breach():
    # 2 failed calls in 100 against none in 100: within 3 standard errors of the difference.
    verdict = _verdict(_version(100, errors=2), _version(100))

    assert verdict.outcome == Verdict.PASS
    assert verdict.limits["error_rate_noise"] > 0.02


def test_the_same_difference_on_many_calls_is_a_breach():
    assert _verdict(_version(10_000, errors=200), _version(10_000)).outcome == Verdict.FAIL


def test_the_tolerance_is_per_release():
    new, old = _version(2000, errors=60), _version(2000, errors=2)

    assert _verdict(new, old, max_error_rate=0.2, max_error_rate_increase=0.05).outcome == Verdict.PASS


def test_a_p99_over_the_ratio_of_the_old_one_rolls_back_without_a_ceiling():
    verdict = _verdict(_version(1000, p99_ms=300), _version(1000, p99_ms=100))

    assert verdict.outcome == Verdict.FAIL
    assert verdict.message == (
        "Rolled back: version 2's p99 latency 300 ms (p95 300 ms) is over max_p99_ratio 1.5 times version 1's 100 ms "
        "(bound 150 ms)."
    )
    assert verdict.limits["p99_ms"] == 150


def test_a_p99_over_the_bound_on_few_calls_needs_the_p95_over_it_too():
    old = _version(900, p99_ms=9)
    assert _verdict(_version(100, p95_ms=6, p99_ms=20), old).outcome == Verdict.PASS  # a cold start, say
    assert _verdict(_version(100, p95_ms=20, p99_ms=20), old).outcome == Verdict.FAIL
    assert _verdict(_version(1000, p95_ms=6, p99_ms=20), old).outcome == Verdict.FAIL  # p99 is then 10 calls


def test_p99s_a_few_milliseconds_apart_are_alike():
    assert _verdict(_version(1000, p99_ms=4.0), _version(1000, p99_ms=1.5)).outcome == Verdict.PASS


def test_the_ceilings_cap_what_the_old_version_allows():
    verdict = _verdict(_version(1000, p99_ms=180), _version(1000, errors=40, p99_ms=150), max_p99_ms=170)

    assert verdict.outcome == Verdict.FAIL
    assert "exceeds max_p99_ms 170 ms" in verdict.message
    assert (verdict.limits["error_rate"], verdict.limits["p99_ms"]) == (0.05, 170)


def test_the_limits_name_every_bound_used():
    limits = _verdict(_version(1000), _version(1000)).limits

    assert set(limits) == {
        "min_calls", "max_error_rate", "max_p99_ms", "max_error_rate_increase", "max_p99_ratio",
        "error_rate_noise", "error_rate", "p99_ms",
    }  # fmt: skip
    assert (limits["min_calls"], limits["error_rate"], limits["p99_ms"]) == (100, 0.01, 15.0)
