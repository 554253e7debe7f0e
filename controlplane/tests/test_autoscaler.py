"""The autoscaler's decisions, tick by tick, on a clock the test drives: the stable window,
panic on a burst, the scale-down delay, the bounds."""

from controlplane.autoscaler import Policy, Windows, decide

POLICY = Policy(min_replicas=1, max_replicas=10, target_in_flight=4, scale_down_delay_s=30, stable_window_s=60)


def _run(windows: Windows, policy: Policy, loads, *, start: float, ready_of=lambda replicas: replicas, replicas=1):
    """One tick a second with these loads; the decisions, the replicas ready following them."""
    decisions = []
    for i, in_flight in enumerate(loads):
        decision = decide(windows, policy, now=start + i, in_flight=in_flight, ready=ready_of(replicas))
        replicas = decision.replicas
        decisions.append(decision)
    return decisions


def test_a_steady_load_gets_its_load_over_the_target_per_replica():
    # From one replica, 16 in flight is a burst (4 replicas wanted, twice the 1 ready at once):
    # panic; a stable window later, the same load in stable mode.
    decisions = _run(Windows(), POLICY, [16.0] * 120, start=1000)
    assert decisions[0].mode == "panic" and decisions[0].replicas == 4
    assert decisions[-1].replicas == 4
    assert decisions[-1].mode == "stable"
    assert "16.0 calls in flight on average over 60 s, 4 per replica" in decisions[-1].reason


def test_a_burst_panics_and_scales_within_seconds_not_a_stable_window():
    windows = Windows()
    _run(windows, POLICY, [0.0] * 60, start=1000)
    decisions = _run(windows, POLICY, [32.0] * 10, start=1060)
    first_panic = next(i for i, d in enumerate(decisions) if d.mode == "panic")
    assert first_panic == 0
    assert [d.replicas for d in decisions][:7] == [2, 3, 4, 6, 7, 8, 8]  # the panic window fills
    assert "at least twice what 1 ready replica(s) take" in decisions[0].reason


def test_during_a_panic_nothing_scales_down_until_a_stable_window_after_the_burst():
    windows = Windows()
    burst = _run(windows, POLICY, [0.0] * 60 + [32.0] * 10, start=1000)[60:]
    assert burst[0].mode == "panic"  # at 1060: 2 replicas wanted, 1 ready; never twice the ready after
    after = _run(windows, POLICY, [0.0] * 90, start=1070, replicas=8)
    replicas = [d.replicas for d in after]
    assert {d.mode for d in after[:50]} == {"panic"} and set(replicas[:50]) == {8}  # up to 1119
    assert after[50].mode == "stable"  # 1120: a stable window after the last tick over the threshold
    assert set(replicas[50:79]) == {8}  # the delay holds what the panic asked for until 1149
    assert replicas[-1] == 1


def test_a_scale_down_waits_for_the_delay():
    policy = Policy(min_replicas=1, max_replicas=10, target_in_flight=4, scale_down_delay_s=30, stable_window_s=10)
    windows = Windows()
    assert {d.mode for d in _run(windows, policy, [16.0] * 10, start=1000, replicas=4)} == {"stable"}
    decisions = _run(windows, policy, [0.0] * 45, start=1010, replicas=4)
    replicas = [d.replicas for d in decisions]
    # The stable window empties in 10 s; the delay holds 4 for 30 s after the last tick that asked for it.
    assert replicas[:25] == [4] * 25
    assert replicas[-1] == 1
    held = next(d for d in decisions if d.replicas == 4 and "holding" in d.reason)
    assert "asked for within the last 30 s" in held.reason


def test_never_below_min_nor_above_max():
    policy = Policy(min_replicas=2, max_replicas=5, target_in_flight=4, scale_down_delay_s=0, stable_window_s=60)
    high = _run(Windows(), policy, [400.0] * 5, start=1000)
    assert {d.replicas for d in high} == {5}
    assert "max_replicas 5" in high[-1].reason
    low = _run(Windows(), policy, [0.0] * 5, start=1000)
    assert {d.replicas for d in low} == {2}
    assert "min_replicas 2" in low[-1].reason


# --- scale to zero --------------------------------------------------------------------------
TO_ZERO = Policy(
    min_replicas=0, max_replicas=10, target_in_flight=4, scale_down_delay_s=5, stable_window_s=10,
    scale_to_zero_after_s=30,
)  # fmt: skip


def test_min_zero_keeps_one_replica_until_idle_for_scale_to_zero_after_s():
    windows = Windows()
    _run(windows, TO_ZERO, [2.0] * 5, start=1000)  # a call in flight until 1004
    decisions = _run(windows, TO_ZERO, [0.0] * 40, start=1005)
    replicas = [d.replicas for d in decisions]
    # 1034 is the first tick 30 s after the last one with a call in flight.
    assert set(replicas[:29]) == {1} and replicas[29:] == [0] * 11
    assert "keeping 1 until no call for 30 s" in decisions[20].reason
    assert decisions[29].reason.startswith("No call for 30 s (scale_to_zero_after_s 30): scaling to zero")


def test_any_call_in_flight_keeps_a_service_from_zero():
    windows = Windows()
    # A short call now and then: a sliver of a call in flight on average, every 20 s.
    loads = ([0.001] + [0.0] * 19) * 4
    assert {d.replicas for d in _run(windows, TO_ZERO, loads, start=1000)} == {1}


def test_a_new_window_counts_from_its_first_tick_not_from_never():
    # The autoscaler's memory is lost (a new cache): the service is not taken for idle at once.
    decisions = _run(Windows(), TO_ZERO, [0.0] * 31, start=1000)
    assert [d.replicas for d in decisions][-2:] == [1, 0]


def test_held_calls_at_zero_scale_out_in_panic():
    windows = Windows()
    _run(windows, TO_ZERO, [0.0] * 40, start=1000)
    burst = decide(windows, TO_ZERO, now=1040, in_flight=30.0, ready=0)
    assert burst.mode == "panic" and burst.replicas == 8
