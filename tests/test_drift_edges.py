"""Edges of the drift rule (service/drift.py) a mutation audit found unpinned.

Expected values are worked by hand from the module's stated arithmetic: the first window weighs
1 / (warmup + 1), a settled one 1 - 0.5^(1 / halflife), and the widening is exp(offset) within [1, cap].
"""

from __future__ import annotations

import math

import pytest

from sensorguard.service.alerts import AlertRules, AlertState, judge
from sensorguard.service.drift import DriftRule, DriftState, drift_step, widening


def test_the_default_rule_is_the_documented_one():
    """As trained (``train.drift_rule`` sets only the baseline): a warm-up of 8 windows (the first
    window weighs 1/9), a half-life of 64 windows, and at most 1.5x (the README's figure)."""
    rule = DriftRule(baseline=0.0)
    assert drift_step(DriftState(), math.e, rule).offset == pytest.approx(1 / 9)
    settled = DriftState(offset=0.0, updates=10_000)
    for _ in range(64):  # one half-life at a constant target of 0.5: half the way
        settled = drift_step(settled, math.exp(0.5), rule)
    assert settled.offset == pytest.approx(0.25, rel=1e-9)
    loud = DriftState()
    for _ in range(2000):
        loud = drift_step(loud, 100.0, rule)
    assert widening(loud, rule) == pytest.approx(1.5)


@pytest.mark.parametrize("rule", [
    {"halflife": math.inf},  # a baseline that never moves after its warm-up
    {"warmup": -1},  # 1 / (warmup + updates + 1) divides by zero at the first window
])
def test_a_rule_that_cannot_step_is_refused(rule):
    with pytest.raises(ValueError, match="drift needs"):
        DriftRule(baseline=0.0, **rule)


def test_a_cap_of_one_is_a_rule_that_never_widens():
    """cap >= 1 is the documented bound: 1 is allowed, and keeps the calibrated line."""
    rule = DriftRule(baseline=0.0, cap=1.0)
    state = DriftState()
    for _ in range(50):
        state = drift_step(state, 10.0, rule)
    assert state.offset == 0.0 and widening(state, rule) == 1.0


def test_an_empty_rule_record_is_no_rule():
    """A calibration record with ``"drift": {}`` (or null) means drift off, like no record."""
    assert DriftRule.from_dict({}) is None and DriftRule.from_dict(None) is None




def test_a_restored_offset_beyond_the_cap_widens_by_the_cap_without_overflow():
    """A saved state may hold any finite offset (``state_entry.drift_state``); exp(1000) overflows a float,
    the clamp to log(cap) first does not."""
    assert widening(DriftState(offset=1000.0), DriftRule(baseline=0.0, cap=1.5)) == pytest.approx(1.5)


def test_the_widening_never_exceeds_the_cap_even_by_rounding():
    """exp(log(2.721)) is one ulp above 2.721 in floats; the line widens at most cap times."""
    rule = DriftRule(baseline=0.0, cap=2.721)
    assert math.exp(math.log(rule.cap)) > rule.cap  # (the rounding this guards against)
    assert widening(DriftState(offset=5.0), rule) == rule.cap


def test_a_score_of_zero_teaches_nothing():
    """A window reconstructed exactly (score 0) has no log: the baseline stays, the daemon does not
    fail; and a zero score judged normal goes through judge the same way."""
    rule = DriftRule(baseline=0.0)
    state = DriftState(offset=0.2, updates=5)
    assert drift_step(state, 0.0, rule) == state
    _, drift, _, score = judge(AlertState(), state, 0.0, 0.0, AlertRules(), rule)
    assert drift == state and score == 0.0




def test_the_count_of_updates_saturates():
    """The count stops at 2^30 (the rate is long at its half-life floor there): it keeps fitting the
    state file's whole numbers however long an asset runs."""
    rule = DriftRule(baseline=0.0)
    assert drift_step(DriftState(updates=1 << 30), 1.0, rule).updates == 1 << 30
    assert drift_step(DriftState(updates=(1 << 30) - 1), 1.0, rule).updates == 1 << 30


def test_a_drift_step_keeps_the_assets_level():
    """The level term's followed level lives in the same state: a step of the baseline keeps it."""
    state = DriftState(offset=0.1, updates=3, level=(1.0, 2.0), level_key=12345)
    stepped = drift_step(state, 2.0, DriftRule(baseline=0.0))
    assert (stepped.level, stepped.level_key) == ((1.0, 2.0), 12345) and stepped.updates == 4
