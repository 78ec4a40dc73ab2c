"""The detection benchmark's data plumbing (``bench/detection_data.py``): its numbers are only as
honest as the rows it hands each detector."""

import numpy as np
import pandas as pd


def test_a_case_tests_the_channels_it_trained_on():
    """Loading leaves out a column constant in the training rows (with a note), so the test rows
    had one column more than the bundle: the sensor watch failed on every such recording, and the
    bench skipped it ("zip() argument 2 is shorter than argument 1")."""
    from bench.detection_data import split_case

    rng = np.random.default_rng(0)
    rows = 600
    frame = pd.DataFrame({
        "timestamp": pd.date_range("2026-01-01", periods=rows, freq="1s", tz="UTC"),
        "temp": rng.normal(20, 1, rows),
        "flow": np.r_[np.full(400, 32.0), 32.0 + rng.integers(-1, 2, rows - 400)],  # still while it trains
        "power": rng.normal(5, 0.1, rows),
        "anomaly": np.r_[np.zeros(450, int), np.ones(150, int)],
    })
    case = split_case(frame, "bench", 400)
    assert case.train.channels == ("temp", "power")
    assert case.test.channels == case.train.channels
    np.testing.assert_array_equal(case.test.values, frame[["temp", "power"]].to_numpy()[400:])
    assert case.labels.sum() == 150


def test_pump_recordings_hold_one_fault_after_normal_training_rows():
    """The second proxy of the hidden bench: each recording trains on normal rows only, holds one
    contiguous fault that ends before the recording does, and six seeds in a row hold each kind."""
    from bench.detection_data import pump_cases
    from bench.detection_pump import AFTER_ROWS, FAULTS, ROWS, TRAIN_ROWS, recording

    kinds = []
    for seed in range(100, 106):
        frame, fault = recording(seed)
        kinds.append(fault.kind)
        labels = frame["anomaly"].to_numpy()
        assert len(frame) == ROWS and not labels[:TRAIN_ROWS].any()
        faulty = np.flatnonzero(labels)
        assert faulty[0] == fault.start and len(faulty) == fault.rows == faulty[-1] - faulty[0] + 1
        assert faulty[-1] < ROWS - AFTER_ROWS  # normal rows follow the fault: an alert must clear
        assert np.array_equal(frame["volume_flow"], np.round(frame["volume_flow"]))  # whole units
    assert sorted(kinds) == sorted(FAULTS)
    again, _ = recording(100)
    pd.testing.assert_frame_equal(again, recording(100)[0])
    cases = pump_cases(quick=True)
    assert len(cases) == 6 and all(len(c.train) == TRAIN_ROWS and len(c.test) == ROWS - TRAIN_ROWS for c in cases)


MOVES = {  # the channels each pump fault acts on (the flow meter's rounding may hide a small move)
    "valve_outlet": {"volume_flow", "pressure", "current"},
    "valve_inlet": {"volume_flow", "pressure", "accelerometer1_rms", "accelerometer2_rms"},
    "imbalance": {"accelerometer1_rms", "accelerometer2_rms", "current"},
    "overheating": {"temperature", "thermocouple"},
    "leak": {"volume_flow", "pressure"},
    "overload": {"current", "thermocouple", "accelerometer1_rms"},
}


def test_a_pump_fault_moves_its_channels_and_only_them():
    """A fault changes the labelled rows, from the first, of the channels it acts on and nothing
    else: the same seed without the fault (severity 0) gives the same values everywhere else."""
    from bench.detection_pump import recording

    for seed in range(100, 106):
        faulty, fault = recording(seed)
        clean, _ = recording(seed, severity=0.0)
        channels = [c for c in faulty.columns if c not in ("timestamp", "anomaly")]
        moved = ~np.isclose(faulty[channels].to_numpy(), clean[channels].to_numpy())
        rows = np.flatnonzero(moved.any(axis=1))
        assert rows.min() == fault.start and rows.max() < fault.start + fault.rows, fault.kind  # from its first row
        touched = {channels[j] for j in np.flatnonzero(moved.any(axis=0))}
        assert touched <= MOVES[fault.kind] and touched, fault.kind


def test_the_published_recipes_rules_look_where_they_say():
    """``bench/detection_convae.py``: the published rule reads the 58 windows after a row (kept
    only as a reference), the causal ones only windows ending at the row or before it."""
    from bench.detection_convae import STEPS, decisions

    windows = 400
    rows = windows + STEPS - 1
    over = np.zeros(windows, dtype=bool)
    over[100:220] = True  # windows 100..219 over the limit: they end at rows 159..278
    rules = decisions(over, rows)
    ends = np.flatnonzero(over) + STEPS - 1
    np.testing.assert_array_equal(np.flatnonzero(rules["one window"]), ends)
    causal = np.flatnonzero(rules["causal"])  # 59 windows ending at the row and the 58 before all over
    assert causal[0] == ends[0] + STEPS - 2 and causal[-1] == ends[-1]
    published = np.flatnonzero(rules["published (non-causal)"])
    assert published[0] == 100 + STEPS - 1 and published[-1] == 219 + 1  # before the windows it needs end
    later = over.copy()
    later[221:] = True  # only windows ending after row 279 change
    for rule in ("causal", "one window"):
        np.testing.assert_array_equal(decisions(later, rows)[rule][:280], rules[rule][:280])
    one_low = np.ones(windows, dtype=bool)
    one_low[300] = False  # the window of rows 300..359, under the limit
    ahead = np.flatnonzero(~decisions(one_low, rows)["published (non-causal)"][STEPS - 1:windows - STEPS + 1])
    assert ahead[0] + STEPS - 1 == 301  # row 301's published verdict waits for row 359


def test_a_recording_drawn_without_faults_keeps_every_normal_row():
    """``bench/false_alarm_sources.py`` calls a false alarm drift when it stays on the same
    recording drawn without faults; that holds only while both simulators draw the normal rows
    before the faults. Each twin must equal its faulty recording on every normal row, differ on
    the faulty ones, and keep the faulty version's labels (the pump's twin is its fault at size 0)."""
    from bench.false_alarm_sources import cases, pump_pair, recordings_pair

    for pair in (pump_pair, recordings_pair):
        faulty, twin = cases(pair, 100)
        normal = ~faulty.labels.astype(bool)
        assert normal.any() and not normal.all()
        np.testing.assert_array_equal(twin.test.values[normal], faulty.test.values[normal])
        assert not np.allclose(twin.test.values[~normal], faulty.test.values[~normal])
        np.testing.assert_array_equal(twin.labels, faulty.labels)


def test_the_best_f1_at_a_false_alarm_cap_takes_tied_scores_together():
    """``bench/score_parts.py`` judges each score by the best F1 a threshold reaches with at most
    10 % false alarms. A threshold takes every row tied at it: counting the first of two tied rows
    alone would report an F1 no threshold gives."""
    from bench.score_parts import best_f1_far

    scores = np.array([5.0, 4.0, 3.0, 3.0, 2.0, 1.0, np.nan])
    labels = np.array([1, 0, 1, 0, 1, 0, 1])  # (the unscored row is left out)
    assert best_f1_far(scores, labels, 0.10) == (0.5, 5.0)  # no normal row may be over it
    assert best_f1_far(scores, labels, 0.34) == (0.5, 5.0)  # at 3: both tied rows, 2 of 3 normal ones
    assert best_f1_far(scores, labels, 0.70) == (0.75, 2.0)
    assert np.isnan(best_f1_far(scores, np.ones(7, dtype=int))[0])  # nothing normal: no F1 at a cap
