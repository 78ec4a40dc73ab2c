"""Alert machine rules a mutation audit found unpinned (session 65): each test fails under its mutation."""

from __future__ import annotations

import numpy as np

from sensorguard.service.alerts import AlertRules, AlertState, divides_hop, judge_rows, silences, step


def test_clear_at_one_is_accepted_and_clears_after_two_windows_under_the_line():
    """``clear_at: 1`` passes the settings check; refused by AlertRules, the daemon crashed building its rules."""
    rules = AlertRules(raise_after=1, clear_after=5, clear_at=1.0)
    s, e = step(AlertState(), 2.0, 0.0, rules)
    s, e = step(s, 0.9, 1.0, rules)
    assert e is None
    s, e = step(s, 0.9, 2.0, rules)
    assert e is not None and e.kind == "cleared"


def test_a_score_exactly_at_clear_level_does_not_count_towards_clearing():
    """A score at the line is not below it: counted, an alert hovering on the line cleared."""
    rules = AlertRules(raise_after=1, clear_after=2, clear_level=1.0, clear_at=0.0)
    s, _ = step(AlertState(), 2.0, 0.0, rules)
    events = []
    for t in range(1, 4):
        s, e = step(s, 1.0, float(t), rules)
        events.append(e)
    assert s.status == "alerting" and s.below == 0 and events == [None, None, None]


def test_the_cleared_state_keeps_the_clearing_windows_score():
    """The state and the score gauge after a clear show that window's score, not 0.0."""
    rules = AlertRules(raise_after=1, clear_after=1)
    s, _ = step(AlertState(), 2.0, 0.0, rules)
    s, e = step(s, 0.7, 1.0, rules)
    assert e.kind == "cleared" and s.status == "normal" and s.last_score == 0.7


def test_the_peak_before_the_raising_window_is_carried_to_the_clear():
    """A peak in the pending windows before the raise is the alert's peak (the clear reported less)."""
    rules = AlertRules(raise_after=3, clear_after=2, clear_level=0.8)
    s = AlertState()
    for i, x in enumerate([1.2, 3.0, 1.1]):
        s, e = step(s, x, float(i), rules)
    assert e.kind == "raised" and s.peak == 3.0
    for i, x in enumerate([0.6, 0.6]):
        s, e = step(s, x, 10.0 + i, rules)
    assert e.kind == "cleared" and e.peak_score == 3.0


def test_an_alert_hop_equal_to_the_hop_is_allowed():
    """``train --alert-hop`` equal to the hop is documented as allowed."""
    assert divides_hop(4, 4)


def test_alive_stamps_exactly_stale_after_apart_are_no_silence():
    """Offline, readings exactly ``stale_after`` apart are no silence, with and without rate-refused ones."""
    times = np.array([0.0, 300.0, 600.0])
    assert not silences(times, np.array([0.0, 300.0, 600.0]), 300.0).any()
    assert not silences(times, None, 300.0).any()


def test_a_silence_on_an_unjudged_row_ends_the_alert_there():
    """Offline ``score`` ends an alert at a silence on rows it does not judge, as the daemon marks it stale."""
    scores = np.array([2.0, 2.0, 2.0, 2.0, 2.0])
    mask = np.array([True, True, False, False, True])
    times = np.array([0.0, 1.0, 1000.0, 1001.0, 1002.0])
    out, _, _ = judge_rows(scores, mask, times, AlertRules(raise_after=1, stale_after=300.0))
    assert out.tolist() == [1, 1, 0, 0, 1]
