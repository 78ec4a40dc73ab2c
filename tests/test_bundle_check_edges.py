"""Edges of the serving checks against a bundle (service/bundle_checks.py) a mutation audit found unpinned."""

from __future__ import annotations

from dataclasses import replace

from sensorguard.service.alerts import AlertRules
from sensorguard.service.bundle_checks import (
    bundle_rules,
    cleaning_policy,
    hop_warning,
    rules_warning,
    sensor_rules,
    stale_warning,
)
from sensorguard.service.cleaning import CleaningPolicy
from sensorguard.service.config import Settings
from sensorguard.service.sensors import ChannelLimits, SensorRules


def test_serving_at_a_hop_equal_to_the_scored_samples_judges_each_row_once(tiny_bundle):
    bundle = replace(tiny_bundle, hop=2, focus=4)
    assert "rows are judged once," in hop_warning(4, bundle)
    assert "judged more than once" in hop_warning(3, bundle) and "partly not at all" in hop_warning(5, bundle)


def test_the_hop_warning_states_the_window_rate_and_the_alert_hop(tiny_bundle):
    """Bundle hop 4, alert hop 2, a promise of 2 false alerts a day (a JSON whole number): served at
    hop 1, windows come 4 times as often, so about 8 a day; an alert up is judged every 1, not 2."""
    bundle = replace(tiny_bundle, hop=4, focus=4, alert_hop=2, calibration={"expected_false_alarms_per_day": 2})
    note = hop_warning(1, bundle)
    assert "(2 false alerts a day at hop 4; windows come 4 times as often at hop 1" in note
    assert "expect about 8 or more)" in note
    assert "an alert up is judged every 1 too, not every 2" in note
    assert "an alert up" not in hop_warning(1, replace(bundle, alert_hop=0))


def test_the_bundles_raise_at_is_applied_even_where_the_alert_steps_already_agree(tiny_bundle):
    """A bundle calibrated with a one-window raise at 3.0: rules that already hold its alert steps
    (1: no alert hop) but not its raise_at still get it."""
    bundle = replace(tiny_bundle, calibration={"alerts": {"raise_at": 3.0}})
    assert bundle.raise_at == 3.0
    rules = bundle_rules(AlertRules(), bundle)
    assert rules.raise_at == 3.0 and rules.alert_steps == 1


def test_the_stale_warning_says_every_alert_ends_only_at_a_sample_period_above_the_setting():
    """Readings every 60 s, filled up to 390 s: a stale_after of 30 s is shorter than one period (every
    step ends the alert); one of 60 s is not (a reading on time is not a silence longer than it)."""
    policy = CleaningPolicy(sample_period=60.0, fill_limit=5)
    assert "every alert ends at the next reading" in stale_warning(policy, 30.0)
    assert "every alert ends at the next reading" not in stale_warning(policy, 60.0)
    assert "stale_after_s >= 390" in stale_warning(policy, 60.0)


def test_a_raise_after_that_is_not_a_whole_number_in_the_record_is_no_promise():
    """A hand-edited calibration record with ``"raise_after": "3"`` holds no alert-level promise to
    compare (and no comparison of a string with a number)."""
    assert rules_warning(AlertRules(raise_after=1), {"alerts": {"raise_after": "3"}}) is None


def test_a_fill_limit_of_zero_set_at_serve_overrides_the_bundles(tiny_bundle):
    """fill_limit 0 (no forward fill) is a valid setting; unset (None) keeps the bundle's 5."""
    assert tiny_bundle.cleaning.fill_limit == 5
    policy = cleaning_policy(tiny_bundle, Settings(fill_limit=0, max_gap_s=30.0))
    assert policy.fill_limit == 0 and policy.max_gap_s == 30.0
    assert cleaning_policy(tiny_bundle, Settings()).fill_limit == 5


def test_the_sensor_rules_take_the_fill_limit_in_force(tiny_bundle):
    limits = SensorRules(("a", "b", "c"), (ChannelLimits(0.0, 10.0, None),) * 3, fill_limit=5)
    bundle = replace(tiny_bundle, sensors=limits)
    assert sensor_rules(bundle, CleaningPolicy(fill_limit=1)).fill_limit == 1
    assert sensor_rules(tiny_bundle, CleaningPolicy(fill_limit=1)) is None
