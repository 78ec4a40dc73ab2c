"""Edges of the offline evaluation (``training.evaluate``, ``training.verdict``) and of how a file's
columns are read for it (``training.tables``), found by a mutation audit: each test pins a behaviour
that a one-character change to the code left unseen."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from sensorguard.service.bundle import Bundle
from sensorguard.service.scorer import Scores
from sensorguard.training.evaluate import best_f1_threshold, detection_metrics, pool_metrics, to_seconds
from sensorguard.training.offline import Scored
from sensorguard.training.promise import poisson_ci
from sensorguard.training.series import SensorData
from sensorguard.training.tables import DataError, choose_channels, cols, to_numbers, unreadable_note
from sensorguard.training.verdict import _false_alert_line, delay_words, evaluate_scores, format_evaluation


def _three_machines() -> list[dict]:
    """Three machines' metrics worked by hand (delays in rows and seconds):

    A (10 s a row): three faults caught 0, 1 and 2 rows in, no false alarm;
    B (1 s a row): one fault caught 5 rows in, one false alarm on its first row;
    C (1 s a row): one fault missed."""
    a = detection_metrics(np.array([0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0]),
                          np.array([0, 1, 1, 0, 1, 1, 0, 1, 1, 1, 0]), times=np.arange(11) * 10.0)
    b = detection_metrics(np.array([1, 0, 0, 0, 0, 0, 1, 0]),
                          np.array([0, 1, 1, 1, 1, 1, 1, 0]), times=np.arange(8.0))
    c = detection_metrics(np.array([0, 0, 0, 0]), np.array([0, 1, 1, 0]), times=np.arange(4.0))
    return [a, b, c]


def test_pooled_delays_are_the_mean_over_every_detected_fault_not_a_mean_of_machine_means() -> None:
    """A fleet's mean detection delay is what an operator waits on average for a fault: each caught
    fault counts once. Averaging each machine's mean would weigh B's single slow catch (5 rows) as
    much as A's three quick ones, and a machine that caught nothing has no delay to add."""
    pooled = pool_metrics(_three_machines())
    assert pooled["mean_detection_delay_rows"] == pytest.approx((0 + 1 + 2 + 5) / 4)
    assert pooled["mean_detection_delay_s"] == pytest.approx((0 + 10 + 20 + 5) / 4)


def test_pooled_ratios_come_from_the_summed_counts() -> None:
    """The pooled rates are the fleet's own: the false-alarm rate is false alarms over normal rows
    (B's first row: 1 of the 4 + 2 + 2 normal rows of A, B and C), never over the missed rows, and the event
    recall is faults caught over faults (4 of 5), not the mean of each machine's recall (0.67)."""
    pooled = pool_metrics(_three_machines())
    assert (pooled["tp"], pooled["fp"], pooled["tn"], pooled["fn"]) == (4, 1, 7, 11)
    assert pooled["precision"] == pytest.approx(4 / 5)
    assert pooled["recall"] == pytest.approx(4 / 15)
    assert pooled["f1"] == pytest.approx(2 * (4 / 5) * (4 / 15) / (4 / 5 + 4 / 15))
    assert pooled["false_alarm_rate"] == pytest.approx(1 / 8)
    assert pooled["missed_alarm_rate"] == pytest.approx(11 / 15)
    assert (pooled["events"], pooled["events_detected"]) == (5, 4)
    assert pooled["event_recall"] == pytest.approx(4 / 5)


def test_pooling_machines_equals_judging_them_end_to_end() -> None:
    """Two machines pooled must read as one long series judged whole when a normal row separates
    them (no fault joins across): pooling is bookkeeping and must not change a single number."""
    rng = np.random.default_rng(3)
    parts = []
    for rows in (40, 25):
        labels = (rng.random(rows) < 0.3).astype(int)
        labels[[0, -1]] = 0  # normal at both ends: no fault spans the join
        parts.append((rng.integers(0, 2, rows), labels, np.arange(rows) * 2.0))
    pooled = pool_metrics([detection_metrics(p, y, t) for p, y, t in parts])
    whole = detection_metrics(np.concatenate([p for p, _, _ in parts]), np.concatenate([y for _, y, _ in parts]),
                              np.concatenate([t + 1000.0 * k for k, (_, _, t) in enumerate(parts)]))
    assert pooled.keys() == whole.keys()
    for key, value in whole.items():
        assert pooled[key] == (None if value is None else pytest.approx(value)), key


def test_a_file_of_fault_rows_only_has_its_best_line_below_every_score() -> None:
    """Every judged row is a labelled fault (a file cut from a fault run): no line can raise a false
    alarm, so the best one catches every row (F1 1 at the lowest score), not "no line at all"."""
    assert best_f1_threshold(np.array([0.9, 0.2, 0.5]), np.array([1, 1, 1])) == (0.2, 1.0)


def test_a_line_that_catches_no_fault_is_no_best_line() -> None:
    """Within a false-alarm budget of half the normal rows, the only line allowed (at 0.9) alarms
    on a normal row and catches nothing: its F1 is 0, so no line is best (nan), as the docstring
    promises, rather than a threshold an operator might copy that detects nothing."""
    threshold, f1 = best_f1_threshold(np.array([0.9, 0.5, 0.1]), np.array([0, 0, 1]), max_false_alarm_rate=0.5)
    assert math.isnan(threshold) and f1 == 0.0


def test_unsigned_epoch_seconds_are_seconds() -> None:
    """Epoch seconds stored unsigned (a Parquet export's uint32 clock) are seconds like any other
    number: read as datetime nanoseconds, a fault caught 30 s in read as caught at once."""
    stamps = np.array([1_700_000_000, 1_700_000_010, 1_700_000_030], dtype=np.uint32)
    assert to_seconds(stamps).tolist() == [1_700_000_000.0, 1_700_000_010.0, 1_700_000_030.0]
    m = detection_metrics(np.array([0, 0, 1]), np.array([1, 1, 1]), times=stamps)
    assert m["mean_detection_delay_s"] == pytest.approx(30.0)


def _scored(score: list[float], alert: list[int], source: list[float] | None = None,
            period: float = 1.0, times: np.ndarray | None = None) -> Scored:
    """One machine's rows at 1 s (times 0, 1, ... unless given) with the given scores (NaN: before
    a full window) and alert states; ``source``: the times of the file's own readings (the rest are
    rows the cleaning filled into a gap)."""
    n = len(score)
    times = np.arange(n, dtype=np.float64) if times is None else times
    data = SensorData(values=np.zeros((n, 3)), times=times, segments=np.zeros(n, dtype=int),
                      channels=("a", "b", "c"), sample_period=period,
                      source_times=None if source is None else np.asarray(source, dtype=np.float64))
    values = np.asarray(score, dtype=np.float64)
    return Scored(data, Scores(error=values, score=values, channel_error=np.zeros((n, 3))),
                  np.asarray(alert, dtype=np.int8))


def test_a_score_exactly_on_the_line_is_an_anomaly(tiny_bundle: Bundle) -> None:
    """An anomaly is a score at or above 1 (``score`` writes its anomaly column so, and the daemon
    raises on it): evaluate must count a row exactly on the line as the anomaly it was shown as."""
    result = evaluate_scores(tiny_bundle, _scored([np.nan, np.nan, 0.5, 1.0, 2.0, 0.2], [0] * 6),
                             np.array([0, 0, 0, 1, 1, 0]))
    assert (result["anomaly"]["tp"], result["anomaly"]["fp"]) == (2, 0)
    assert result["anomaly"]["mean_detection_delay_rows"] == 0.0


def test_rows_left_out_before_the_first_window_count_only_the_files_own_readings(tiny_bundle: Bundle) -> None:
    """Rows 0-2 come before the first full window; row 1 is a grid row the cleaning filled (not
    in the file) and carries the label of the reading before it. The note must say 2 readings were
    left out, 1 of them anomalous: counting the filled row too said more rows (and more anomalous
    ones) than the file holds there."""
    scored = _scored([np.nan, np.nan, np.nan, 0.2, 0.3, 0.1], [0] * 6, source=[0.0, 2.0, 3.0, 4.0, 5.0])
    result = evaluate_scores(tiny_bundle, scored, np.array([1, 1, 0, 0, 0, 0]))
    assert result["not_judged"] == {"rows": 2, "anomalous_rows": 1, "removed_rows": 0}
    assert result["rows"] == 3


def test_no_best_f1_line_is_offered_when_every_fault_fell_before_the_first_window(tiny_bundle: Bundle) -> None:
    """The only labelled rows were never judged (before the first full window): the judged rows
    hold no fault, so there is no F1 to maximize and no "F1-best threshold would be nan" line."""
    result = evaluate_scores(tiny_bundle, _scored([np.nan, np.nan, 0.2, 0.3, 0.1], [0] * 5),
                             np.array([1, 0, 0, 0, 0]))
    assert "f1_best" not in result
    assert "F1-best" not in format_evaluation(result)


def test_no_false_alert_in_a_day_is_a_rate_of_zero(tiny_bundle: Bundle) -> None:
    """A day of normal rows with no alert is an observed rate of 0 a day (with its interval), the
    best news ``evaluate`` can give beside the promise, not a rate left unsaid."""
    rows = 1441  # one row a minute: a day of normal rows after the first (unjudged) one
    scored = _scored([np.nan] + [0.1] * (rows - 1), [0] * rows, period=60.0)
    result = evaluate_scores(tiny_bundle, scored, np.zeros(rows, dtype=int))
    assert result["false_alerts"]["raised"] == 0
    assert result["false_alerts"]["normal_days"] == pytest.approx(1.0)
    assert result["false_alerts"]["per_day"] == 0.0
    assert "0 per asset per day (95% CI 0-" in format_evaluation(result)



def test_false_alerts_on_irregular_readings_are_counted_per_day_of_readings(tiny_bundle: Bundle) -> None:
    """On irregular readings (60 % of steps at 10 s, 40 % at 0.1 s) the promise counts the windows
    a day at the mean step, 6.04 s (``line.reading_period``). Counting the normal rows' days at
    the median step (10 s, the bundle's sample period) made 1,001 rows spanning 6,040 s read as
    10,010 s: 1.66x the days, so the observed false alerts a day read 1.66x below the rate the
    promise is stated in, and a line raising too often read as keeping it."""
    irregular = replace(tiny_bundle, sample_period=10.0, regular=False)
    times = np.r_[0.0, np.cumsum(np.tile([10.0, 10.0, 10.0, 0.1, 0.1], 200))]
    rows = len(times)
    scored = _scored([0.1] * rows, [0] * rows, period=10.0, times=times)
    result = evaluate_scores(irregular, scored, np.zeros(rows, dtype=int))
    assert result["false_alerts"]["normal_days"] == pytest.approx(rows * 6.04 / 86400)


def test_an_alert_raised_over_a_window_before_a_fault_is_a_false_alert_too(tiny_bundle: Bundle) -> None:
    """A walk: a model in alert from the first row into a fault read "0 raised on normal rows",
    consistent with its promise, beside a false-alarm rate of 1.0: an alert still up when a fault
    began was that fault's detection only, however long before it rose. It is the fault's detection
    alone when raised at most a window before the fault's first row."""
    w, rows = tiny_bundle.window, 400
    labels = np.zeros(rows, dtype=int)
    labels[300:350] = 1

    def raised(start: int) -> int:
        alert = np.zeros(rows, dtype=int)
        alert[start:350] = 1
        scored = _scored([1.5] * rows, alert.tolist(), period=60.0)
        result = evaluate_scores(tiny_bundle, scored, labels)
        assert result["alert"]["events_detected"] == 1  # the fault is caught either way
        return result["false_alerts"]["raised"]

    assert raised(300 - w) == 0  # a window before: it saw the fault's onset
    assert raised(300 - w - 1) == 1 and raised(0) == 1  # earlier: raised on normal operation


def test_an_observed_interval_that_touches_the_promises_is_not_above_it() -> None:
    """The words "above it" are said only when the observed rate's interval lies wholly above the promise's;
    3 alerts in a day (lower bound 0.62 a day) beside a promise whose interval ends exactly there
    overlap at that point, so the words must be the softer "above the promised rate, inside its
    interval"."""
    lo = poisson_ci(3)[0]
    line = _false_alert_line({"raised": 3, "normal_days": 1.0, "per_day": 3.0, "promised_per_day": 0.1,
                              "promised_ci95": [0.0, lo]})
    assert line.endswith(": above the promised rate, inside its interval (a promise from little data is loose)")


@pytest.mark.parametrize(("seconds", "words"), [(119.5, "2 min"), (7200.0, "2 h"), (172800.0, "2 days")])
def test_a_delay_that_shows_as_two_units_reads_in_that_unit(seconds: float, words: str) -> None:
    """Seconds up to two minutes, minutes up to two hours, hours up to two days: a delay at the
    boundary (or one that rounds to it, 119.5 s shown as 120 s) reads in the larger unit, as
    "2 min", not "1.99 min" or "120 min" beside the "120 s" a reader would check it against."""
    assert delay_words(seconds) == words


def test_a_span_of_two_days_reads_in_days_and_one_machine_is_not_summed() -> None:
    """The normal rows' span reads in hours under two days and in days from there (48 h is
    "2 days"), and "summed over N machines" is said only for more than one machine."""
    line = _false_alert_line({"raised": 1, "normal_days": 2.0, "per_day": 0.5, "machines": 1})
    assert line.startswith(f"{'false alerts':20}1 raised on normal rows in 2 days: 0.5 per asset per day")


def test_a_column_of_leading_zero_decimal_commas_reads_as_fractions() -> None:
    """``"0,250"`` is a number only a decimal comma writes (no one groups thousands after a 0): a
    column of such cells is a quarter and three eighths, never 250 and 375."""
    assert to_numbers(pd.Series(["0,250", "0,375"])).tolist() == [0.25, 0.375]


def test_a_column_of_exactly_ninety_percent_numbers_is_a_channel() -> None:
    """The note promises that columns *under* 90 % numbers are left out: a sensor with 9 readings
    in 10 (one ``ERR`` cell) is at the bar and stays a channel."""
    frame = pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=10, freq="1s", tz="UTC"),
                          "temp": [str(20 + k) for k in range(9)] + ["ERR"], "flow": np.arange(10.0)})
    notes: list[str] = []
    assert choose_channels(frame, "timestamp", None, (), None, "plant.csv", notes) == ("temp", "flow")
    assert not any("under 90 %" in note for note in notes)


def test_a_label_named_column_of_fractions_is_still_no_channel() -> None:
    """Only a name a sensor may bear too (``y``, ``class``, ``target``) holding fractions is read as
    a sensor; an ``anomaly`` column of fractions (a detector's probability exported beside the
    readings) is a label's, and training the model on it would teach it the answer."""
    frame = pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=6, freq="1s", tz="UTC"),
                          "temp": np.arange(6.0), "anomaly": [0.1, 0.0, 0.9, 0.2, 0.0, 0.7],
                          "y": [0.231, 0.5, 0.7, 0.1, 0.3, 0.2]})
    notes: list[str] = []
    assert choose_channels(frame, "timestamp", None, (), None, "plant.csv", notes) == ("temp", "y")
    assert any(note.startswith("label-like columns left out: anomaly") for note in notes)


def test_cells_that_say_missing_in_words_are_not_called_unreadable() -> None:
    """``n/a``, ``-`` or ``NULL`` in a cell mean "no reading", as the user wrote them: only cells
    that hold something else (``35.06 C``, ``ERR``) are worth the note that they were read as missing."""
    frame = pd.DataFrame({"temp": ["20.5", "n/a", "-", "NULL", "21.0"]})
    values = to_numbers(frame["temp"]).to_numpy()[:, None]
    assert unreadable_note(frame, ["temp"], values) is None
    frame.loc[4, "temp"] = "ERR"
    note = unreadable_note(frame, ["temp"], to_numbers(frame["temp"]).to_numpy()[:, None])
    assert note == "cells that are not numbers, read as missing: temp 1 of 5 (e.g. 'ERR')"


def test_only_numeric_columns_are_named_as_sensors_a_model_leaves_out() -> None:
    """Calibrating in a model's channels, a new numeric column is worth a note (a sensor the model
    cannot use until retrained); a text column (the shift's name) is no sensor and not named."""
    frame = pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=4, freq="1s", tz="UTC"),
                          "temp": [1.0, 2.0, 3.0, 4.0], "flow": [5.0, 6.0, 7.0, 9.0], "shift": ["A", "A", "B", "B"]})
    notes: list[str] = []
    assert choose_channels(frame, "timestamp", ["temp"], (), None, "plant.csv", notes, normal=True) == ("temp",)
    left = [note for note in notes if note.startswith("numeric columns not among the channels")]
    assert len(left) == 1 and "flow" in left[0] and "shift" not in left[0]


def test_an_error_names_the_first_twelve_columns() -> None:
    """A refusal lists the file's columns so the user can see what was there: the first twelve in
    full, then ``...`` for the rest."""
    frame = pd.DataFrame({f"c{k}": [0] for k in range(13)})
    assert cols(frame) == ", ".join(f"c{k}" for k in range(12)) + ", ..."


def test_an_error_cuts_a_long_column_name_and_names_a_space_separated_file() -> None:
    """Tennessee Eastman's ``d00.dat`` (numbers separated by spaces, no header) read as one column
    named by its whole first row: the refusal quoted 8,000 characters of it (a walk)."""
    row = "   ".join(f"{0.25 + k / 1000:.7e}" for k in range(52))
    line = cols(pd.DataFrame({row: [0.0]}))
    assert line.startswith(row[:37] + f"... ({len(row)} characters)") and len(line) < 200
    assert line.endswith("a file separated by spaces is not read (comma, semicolon or tab are)")
    assert cols(pd.DataFrame({"flow rate": [0.0]})) == "flow rate"  # (a name with one space: no such hint)


def test_a_column_both_kept_and_excluded_is_refused() -> None:
    """``--channels temp --exclude temp`` contradicts itself: keeping the column silently (the
    exclusion ignored) trains a model on a sensor the user asked to leave out, so it is refused."""
    frame = pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=4, freq="1s", tz="UTC"),
                          "temp": [1.0, 2.0, 3.0, 4.0], "flow": [5.0, 6.0, 7.0, 9.0]})
    with pytest.raises(DataError, match=r"^plant.csv: temp in both --channels and --exclude$"):
        choose_channels(frame, "timestamp", ["temp", "flow"], ["temp"], None, "plant.csv", [])


def test_a_verdict_of_consistent_says_when_alerts_stood_on_much_of_the_normal_rows(tiny_bundle: Bundle) -> None:
    """The promise counts alerts raised: 2 raised in 13.8 h read "consistent with it" while alerts
    stood on 79 % of the normal rows (a walk). Past 10 % the verdict says so; at or under, nothing."""
    rows = 2000
    labels = np.zeros(rows, dtype=int)
    labels[1800:1900] = 1

    def verdict(up: int) -> tuple[str, float]:
        alert = np.zeros(rows, dtype=int)
        alert[100:100 + up] = 1  # one alert raised on normal rows, up for ``up`` rows
        alert[1800:1900] = 1
        result = evaluate_scores(tiny_bundle, _scored([1.5] * rows, alert.tolist(), period=60.0), labels)
        line = next(line for line in format_evaluation(result).splitlines() if line.startswith("false alerts"))
        return line, result["alert"]["false_alarm_rate"]

    line, share = verdict(1500)
    assert share > 0.7 and line.endswith(
        f"; but alerts stood on {share:.1%} of the normal rows (few raised, long up: the model does not fit these "
        "normal rows; `calibrate` on normal data like them, or retrain)"), line
    line, share = verdict(180)
    assert 0.09 < share <= 0.10 and "stood on" not in line, (line, share)
    line, share = verdict(200)
    assert share > 0.10 and "stood on" in line, (line, share)


def test_alerts_up_past_their_faults_are_not_called_few_raised_long_up(tiny_bundle: Bundle) -> None:
    """An alert raised on a fault and up long past its end alarms normal rows while none is raised
    on them: "0 raised ... ; but alerts stood on 14 % of the normal rows (few raised, long up: the
    model does not fit these normal rows ...)" blamed the normal rows for the clear's lag (a review)."""
    rows = 2000
    labels = np.zeros(rows, dtype=int)
    labels[300:320] = 1
    alert = np.zeros(rows, dtype=int)
    alert[300:620] = 1  # raised on the fault, up 300 rows past it
    result = evaluate_scores(tiny_bundle, _scored([1.5] * rows, alert.tolist(), period=60.0), labels)
    line = next(line for line in format_evaluation(result).splitlines() if line.startswith("false alerts"))
    assert result["false_alerts"]["raised"] == 0 and result["alert"]["false_alarm_rate"] > 0.10
    assert "stood on" not in line, line
