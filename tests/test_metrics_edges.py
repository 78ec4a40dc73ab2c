"""Edges of service/metrics.py found by a mutation audit: the asset label cap's bounds, the shadow
model's series, and the served model's promise, each read by a rule or a dashboard panel."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry

from sensorguard.service.metrics import OTHER, WINDOW_DROP_REASONS, Metrics
from sensorguard.service.state_writes import STATE_FILES


def value(registry: CollectorRegistry, metric: str, /, **labels: str) -> float | None:
    return registry.get_sample_value(metric, labels)


def series(registry: CollectorRegistry, metric: str) -> list[dict[str, str]]:
    """The label sets of ``metric``'s samples now."""
    return [dict(s.labels) for f in registry.collect() for s in f.samples if s.name == metric]


def test_a_cap_of_no_assets_is_refused() -> None:
    """``max_assets`` 0 would put every asset on ``_other``: per-asset scores and alert counts, the
    dashboard's whole per-asset view, silently gone. A setting that says so is refused at start."""
    with pytest.raises(ValueError, match="max_assets"):
        Metrics(CollectorRegistry(), max_assets=0)
    assert Metrics(CollectorRegistry(), max_assets=1).max_assets == 1


def test_an_asset_named_like_the_shared_label_takes_no_slot() -> None:
    """A sender publishing under the asset id ``_other`` shares the overflow series: given a slot of
    its own, it pushes a real asset out of its per-asset series (and forgetting it would remove the
    shared series that counts every asset beyond the cap)."""
    registry = CollectorRegistry()
    m = Metrics(registry, max_assets=2)
    assert m.asset_label(OTHER) == OTHER
    assert (m.asset_label("a"), m.asset_label("b")) == ("a", "b")
    m.alert_raised(OTHER)
    m.forget_asset(OTHER)
    assert value(registry, "sensorguard_alerts_total", asset=OTHER) == 1.0


def test_a_shadow_models_alert_counters_start_at_zero_for_the_shared_label_too() -> None:
    """A shadow's alerts of assets beyond the cap count under ``_other``: that series must exist at 0
    from the shadow's start, or ``increase()`` hides its first alerts and the live gate's panel
    reads no alert where there was one."""
    registry = CollectorRegistry()
    m = Metrics(registry, max_assets=1)
    m.asset_label("a")
    m.set_shadow("v0002")
    assert value(registry, "sensorguard_shadow_alerts_total", asset=OTHER) == 0.0
    assert value(registry, "sensorguard_shadow_alerts_total", asset="a") == 0.0


def test_shadow_info_names_only_the_shadow_scored_now() -> None:
    """``shadow_info`` says which version is scored beside the served one: after a change exactly
    one series stands, and none once no shadow is scored (a stale one reads as two shadows)."""
    registry = CollectorRegistry()
    m = Metrics(registry)
    m.set_shadow("v0002")
    m.set_shadow("v0003")
    assert series(registry, "sensorguard_shadow_info") == [{"version": "v0003"}]
    m.set_shadow(None)
    assert series(registry, "sensorguard_shadow_info") == []


def test_a_model_without_a_promise_reads_nan_not_zero() -> None:
    """``model_promise_alerts_per_day`` is the per-asset alert-rate rule's yardstick: a bundle without
    a promise must read NaN (the rule then never fires), not 0, which every alert would exceed."""
    registry = CollectorRegistry()
    m = Metrics(registry)
    m.set_model("pumps", "v0001", 0.2, promise=1.5)
    assert value(registry, "sensorguard_model_promise_alerts_per_day") == 1.5
    m.set_model("pumps", "v0002", 0.2)
    promise = value(registry, "sensorguard_model_promise_alerts_per_day")
    assert promise is not None and math.isnan(promise)


def test_every_known_command_result_starts_at_zero() -> None:
    """``commands_total{result="retry"}`` (refused for now: a partition being taken over, busy) is a
    known result of every verb: born at 1 instead of 0, ``increase()`` hid the first retries of a
    takeover from the dashboard, as it hid first alerts before counters started at 0. (``error`` is
    only ever counted for the unknown verb ``?``, so it is not created ahead.)"""
    registry = CollectorRegistry()
    Metrics(registry)
    for verb in ("maintenance", "shelve", "ack"):
        for result in ("accepted", "rejected", "ignored", "duplicate", "retry"):
            assert value(registry, "sensorguard_commands_total", command=verb, result=result) == 0.0, (verb, result)


def test_failure_and_drop_counters_of_known_labels_start_at_zero() -> None:
    """The state-file write failures (by file) and the windows dropped (by reason) feed alert rules
    through ``increase()``, which cannot see a series' first value: born at 1, a first full-disk
    failure of ``controls.json`` or a first lost partition's windows never fired the rule."""
    registry = CollectorRegistry()
    Metrics(registry)
    for name in STATE_FILES:
        assert value(registry, "sensorguard_state_write_failures_total", file=name) == 0.0, name
    for reason in WINDOW_DROP_REASONS:
        assert value(registry, "sensorguard_windows_dropped_total", reason=reason) == 0.0, reason


def test_a_shadow_models_alert_counts_apart_from_the_served_models() -> None:
    """A shadow's would-be alerts are never announced: counted in ``alerts_total`` they would fire
    the alarm-flood and per-asset alert-rate rules for alerts no pager ever got."""
    registry = CollectorRegistry()
    m = Metrics(registry)
    m.set_shadow("v0002")
    m.alert_raised("a", shadow=True)
    assert value(registry, "sensorguard_shadow_alerts_total", asset="a") == 1.0
    assert value(registry, "sensorguard_alerts_total", asset="a") == 0.0
    m.alert_raised("a")
    assert value(registry, "sensorguard_alerts_total", asset="a") == 1.0
    assert value(registry, "sensorguard_shadow_alerts_total", asset="a") == 1.0
