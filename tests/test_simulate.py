"""The synthetic plant: deterministic, shaped as promised, correlated, with faults exactly where labeled."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sensorguard.training.simulate import ANOMALY_KINDS, inject, simulate

NAMES = ["temp_in", "temp_out", "pressure", "flow", "current", "vibration", "speed", "power"]


def test_same_seed_same_frame_other_seed_other_frame():
    a = simulate(rows=2000, channels=4, seed=7, anomalies=True)
    b = simulate(rows=2000, channels=4, seed=7, anomalies=True)
    c = simulate(rows=2000, channels=4, seed=8, anomalies=True)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["temp_in"], c["temp_in"])


@pytest.mark.parametrize("channels", [1, 3, 8, 11])
def test_columns_and_timestamps(channels):
    frame = simulate(rows=500, channels=channels, period_s=60.0, start="2026-03-01T12:00:00Z")
    expected = NAMES[:channels] + [f"ch{i:02d}" for i in range(9, channels + 1)]
    assert list(frame.columns) == ["timestamp", *expected, "anomaly"]
    assert len(frame) == 500
    stamps = frame["timestamp"]
    assert str(stamps.dt.tz) == "UTC"
    assert stamps.iloc[0] == pd.Timestamp("2026-03-01T12:00:00Z")
    assert (stamps.diff().dropna() == pd.Timedelta(minutes=1)).all()
    assert frame[expected].notna().all().all()
    assert frame["anomaly"].dtype.kind == "i"


def test_labels_only_with_anomalies():
    clean = simulate(rows=20_000, channels=4, seed=1)
    dirty = simulate(rows=20_000, channels=4, seed=1, anomalies=True)
    assert clean["anomaly"].sum() == 0
    share = dirty["anomaly"].mean()
    assert 0.01 < share < 0.08
    assert set(dirty["anomaly"].unique()) == {0, 1}


def test_events_have_allowed_lengths_and_are_separate():
    frame = simulate(rows=50_000, channels=8, seed=3, anomalies=True)
    edges = np.diff(np.concatenate([[0], frame["anomaly"].to_numpy(), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    lengths = stops - starts
    assert len(starts) >= len(ANOMALY_KINDS)
    assert lengths.min() >= 10 and lengths.max() <= 300


def test_channels_are_correlated_but_not_identical():
    frame = simulate(rows=20_000, channels=6, seed=2)
    corr = frame[NAMES[:6]].corr().abs().to_numpy()
    off = corr[~np.eye(6, dtype=bool)]
    assert off.mean() > 0.3
    assert off.max() < 0.999


def test_anomalies_leave_normal_rows_like_the_clean_plant():
    clean = simulate(rows=5000, channels=3, seed=4)
    dirty = simulate(rows=5000, channels=3, seed=4, anomalies=True)
    normal = dirty["anomaly"].to_numpy() == 0
    assert np.allclose(clean.loc[normal, NAMES[:3]], dirty.loc[normal, NAMES[:3]])
    assert not np.allclose(clean.loc[~normal, NAMES[:3]], dirty.loc[~normal, NAMES[:3]])


def test_anomalies_from_keeps_the_lead_in_normal():
    clean = simulate(rows=1200, channels=3, seed=7)
    dirty = simulate(rows=1200, channels=3, seed=7, anomalies=True, anomaly_rate=0.3, anomalies_from=400)
    labels = dirty["anomaly"].to_numpy()
    assert labels[:400].sum() == 0
    assert 0.2 < labels[400:].mean() < 0.45
    assert np.allclose(clean[NAMES[:3]].iloc[:400], dirty[NAMES[:3]].iloc[:400])


@pytest.mark.parametrize("kind", ANOMALY_KINDS)
def test_each_kind_changes_exactly_the_labeled_rows(kind):
    frame = simulate(rows=1000, channels=3, seed=5)
    out = inject(frame, kind, start=400, length=60, channel="temp_out", rng=np.random.default_rng(0))
    assert out["anomaly"].tolist() == [0] * 400 + [1] * 60 + [0] * 540
    changed = ~np.isclose(out["temp_out"].to_numpy(), frame["temp_out"].to_numpy(), rtol=0, atol=1e-9)
    assert changed[400:460].all(), f"{kind} left labeled rows unchanged"
    assert not changed[:400].any() and not changed[460:].any()
    pd.testing.assert_frame_equal(out[["temp_in", "pressure"]], frame[["temp_in", "pressure"]])
    assert frame["anomaly"].sum() == 0, "inject must not modify its input"
    if kind == "stuck":
        return  # a frozen sensor is abnormal for being flat, not big (checked below)
    size = np.abs(out["temp_out"].to_numpy() - frame["temp_out"].to_numpy())[400:460].max()
    assert size > 1.0 * frame["temp_out"].std(), f"{kind} is too small to matter"


def test_stuck_is_constant_and_shift_is_within_design_size():
    frame = simulate(rows=1000, channels=2, seed=6)
    std = frame["temp_in"].std()
    stuck = inject(frame, "stuck", 200, 50, "temp_in", np.random.default_rng(1))
    assert stuck["temp_in"].iloc[200:250].nunique() == 1
    shifted = inject(frame, "level_shift", 200, 50, "temp_in", np.random.default_rng(1))
    delta = (shifted["temp_in"] - frame["temp_in"]).iloc[200:250].abs()
    assert np.allclose(delta, delta.iloc[0]) and 3 * std <= delta.iloc[0] <= 8 * std


def test_bad_arguments_raise():
    frame = simulate(rows=100, channels=2)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="kind"):
        inject(frame, "meteor", 10, 5, "temp_in", rng)
    with pytest.raises(ValueError, match="outside"):
        inject(frame, "spike", 90, 20, "temp_in", rng)
    with pytest.raises(ValueError, match="channel"):
        inject(frame, "spike", 10, 5, "nope", rng)
    with pytest.raises(ValueError, match="anomaly_rate"):
        simulate(rows=100, anomaly_rate=0.9)
    with pytest.raises(ValueError, match="anomalies_from"):
        simulate(rows=100, anomalies=True, anomalies_from=100)

