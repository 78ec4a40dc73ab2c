"""Offline scoring of a whole series: what ``score`` and ``evaluate`` do, callable from Python.

One function, :func:`score_data`, scores a cleaned series with a bundle exactly as the daemon
would (the same scorer, the hop grid it steps, the drift rule, the alert machine); ``score``
writes its rows out (:func:`score_table`), ``evaluate`` compares them with labels
(:func:`~sensorguard.training.verdict.evaluate_scores`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from sensorguard.service.alerts import AlertRules, judge_rows, silences, step_masks
from sensorguard.service.bundle import Bundle
from sensorguard.service.bundle_checks import bundle_rules, default_rules
from sensorguard.service.cleaning import admit_rows
from sensorguard.service.level import LevelRows
from sensorguard.service.publisher import WRITTEN_UNDER
from sensorguard.service.scorer import Scorer, Scores
from sensorguard.service.sensors import SensorRules, SensorWatch
from sensorguard.service.series_faults import window_faults
from sensorguard.training.data import DataError, SensorData, machine_rows
from sensorguard.training.series import utc_stamps


@dataclass(frozen=True)
class Scored:
    """A series scored by a bundle: per cleaned row its scores (against the asset's line) and alert state."""

    data: SensorData
    scores: Scores
    alert: np.ndarray
    stale_after: float | None = None  # the silence that ended an alert (and starts a sensor watch afresh)
    judged: np.ndarray | None = None  # rows whose window the alert machine stepped on, as the daemon judges them
    level_term: np.ndarray | None = None  # each row's level term over its line (service.level); None: no term
    alert_ids: np.ndarray | None = None  # each row's alert up, as the daemon names it (None: no alert)
    excluded: np.ndarray | None = None  # (T, C) channels left out of each row's window (a sensor fault open)


def score_data(bundle: Bundle, data: SensorData, rules: AlertRules | None = None, name: str = "data") -> Scored:
    """Score every full window of ``data`` and step the alert machine as the daemon does (``rules``:
    the daemon's defaults for ``bundle`` unless given; the one-window raise is always the bundle's,
    as live: it is part of its line's promise, not a setting).

    Several machines in one file (``data.assets``) each get their own windows (their segments
    never join) and their own alert machine and drift baseline, as each asset does live.
    """
    rules = bundle_rules(rules or default_rules(bundle), bundle)
    if len(data) < bundle.window:  # the cleaning's notes say where the rest went (too slow for the model...)
        # a file at another rate than the model's is the likely cause: said first (it came after the count)
        rate = [n for n in data.notes if n.startswith("sampled every")]
        why = "".join(f"; {note}" for note in data.notes if note not in rate)
        raise DataError(f"{name}: {''.join(f'{n}; ' for n in rate)}{len(data)} usable rows, fewer than one window "
                        f"({bundle.window}){why}")
    # a channel with a sensor fault open in a window is imputed by the model and left out, as live
    excluded = None if data.faulted is None else window_faults(data.faulted, data.segments, bundle.window)
    scores = Scorer(bundle).score_series(data.values, data.segments, excluded)
    mask, alert_mask = step_masks(data.segments, bundle.window, bundle.hop, bundle.alert_hop)
    alert = np.zeros(len(data), dtype=np.int8)
    judged = np.zeros(len(data), dtype=bool)
    score = scores.score.copy()
    alive = alive_stamps(data)
    blocked = None if excluded is None else excluded.any(axis=1)
    terms = None if bundle.level is None else np.full(len(data), np.nan)
    ids = np.full(len(data), None, dtype=object)
    for asset, rows in data.blocks():
        level = level_rows(bundle, data.values[rows], None if blocked is None else blocked[rows])
        part = None if terms is None else terms[rows]  # (a view: judge_rows fills it)
        alert[rows], score[rows], judged[rows] = judge_rows(scores.score[rows], mask[rows], data.times[rows], rules,
                                                            bundle.drift_rule, alive.get(asset),
                                                            None if alert_mask is None else alert_mask[rows], level,
                                                            part, ids[rows])
        up = ids[rows] != None  # noqa: E711 - an object array's elementwise test
        ids[rows][up] = f"{asset or ''}@" + ids[rows][up].astype(str)  # as judge names it live, with its asset
    return Scored(data, replace(scores, score=score), alert, rules.stale_after, judged, terms, ids, excluded)


def level_rows(bundle: Bundle, values: np.ndarray, blocked: np.ndarray | None = None) -> LevelRows | None:
    """One machine's rows for the bundle's level term (None: the bundle has none); ``blocked``: rows
    whose window has a channel with a sensor fault open (no term there, as live)."""
    if bundle.level is None:
        return None
    return LevelRows(bundle.level, np.asarray(values, dtype=np.float64), bundle.scored_samples, blocked)


def alive_stamps(data: SensorData) -> dict[str | None, np.ndarray]:
    """Per machine (None: the only one), the sorted stamps of the readings that keep it alive live:
    every finite, new stamp, taken or refused for its rate (a repeat or an older one is not); none
    known (data not read from a file): empty, and the rows alone decide a silence."""
    if data.source_times is None:
        return {}
    times = data.source_times
    groups = ({None: np.arange(len(times))} if data.source_assets is None
              else machine_rows(data.source_assets))
    return {asset: np.unique(times[rows][np.isfinite(times[rows])]) for asset, rows in groups.items()}


def score_table(bundle: Bundle, scored: Scored) -> pd.DataFrame:
    """One row per input row (``source_times``): timestamp, score, anomaly, alert, ``level`` (the level
    term, when the bundle has one), error per channel, ``sensor_faults`` (when the bundle has sensor
    limits), and ``asset`` first when the file holds several machines.

    Rows the cleaning dropped (or the daemon would refuse) get an empty score and the alert state
    of their machine's row before them: the daemon's state does not change at such a reading (an
    ``alert`` of 1, 0, 1 across a repeated stamp counted two alerts; found by review). Rows before
    the first full window get an empty score and no alert.
    """
    data, scores = scored.data, scored.scores
    rows = data.rows_of(data.source_times, data.source_assets)
    # a repeated (asset, time) is the daemon's duplicate_ts: only its first row was kept and scored
    key = pd.DataFrame({"asset": data.source_assets if data.source_assets is not None else "",
                        "t": data.source_times})
    rows[key.duplicated(keep="first").to_numpy()] = -1
    if data.cleaning is not None:  # a reading the daemon refused (slow_rate) has no score, even where
        rows[~_taken(data)] = -1  # the grid row at its time was filled from its neighbours
    found = rows >= 0
    take = np.where(found, rows, 0)
    score = under_the_line(np.where(found, scores.score[take], np.nan))
    out = pd.DataFrame({
        **({"asset": data.source_assets} if data.source_assets is not None else {}),
        "timestamp": utc_stamps(data.source_times),
        "score": score,
        "anomaly": np.where(np.isfinite(score), (score >= 1).astype(int), 0),
        "alert": _carried(np.where(found, scored.alert[take], np.nan), data, scored.stale_after),
    })
    named = scored.alert_ids if scored.alert_ids is not None else np.full(len(data), None, dtype=object)
    out.insert(out.columns.get_loc("alert") + 1, "alert_id", alert_ids(
        out["alert"].to_numpy(), data.source_times, data.source_assets, np.where(found, named[take], None)))
    if scored.level_term is not None:  # the score's other part: where it is the larger, it set the score
        out["level"] = under_the_line(np.where(found, scored.level_term[take], np.nan))
    errors = np.where(found[:, None], scores.channel_error[take], np.nan)  # one frame: a column at a time
    if scored.excluded is not None:  # held and left out: no error of its own (a 0 read as a perfect fit, and a
        errors[found[:, None] & scored.excluded[take]] = np.nan  # mean over the columns understated the window's)
    out = pd.concat([out, pd.DataFrame(errors, columns=[f"error_{c}" for c in bundle.channels])], axis=1)
    if bundle.sensors is not None and data.source_values is not None:  # the fill limit scored with (--fill-limit)
        sensors = replace(bundle.sensors, silence_s=scored.stale_after,
                          fill_limit=bundle.sensors.fill_limit if data.cleaning is None else data.cleaning.fill_limit)
        out["sensor_faults"] = sensor_fault_column(data, sensors)
    return out


def under_the_line(values: np.ndarray) -> np.ndarray:
    """Values under the line (1) kept at most ``WRITTEN_UNDER``, so the table's 6 significant digits never
    write a score the line did not reach as 1 (0.9999996 read ``1`` beside ``anomaly`` 0: a walk); they
    move by under a millionth. Values at or over the line, and NaN, are as they were."""
    return np.where(values < 1, np.minimum(values, WRITTEN_UNDER), values)


def alert_ids(alert: np.ndarray, times: np.ndarray, assets: np.ndarray | None, known: np.ndarray) -> np.ndarray:
    """Each input row's ``alert_id``: ``known`` where its row was scored, else the one up on its
    machine's row before it in time (a row the cleaning dropped or refused), empty where no alert is up."""
    frame = pd.DataFrame({"a": alert, "t": times, "m": "" if assets is None else pd.Series(assets).astype(str)})
    frame = frame.sort_values(["m", "t"], kind="stable")
    up = frame["a"].to_numpy() == 1
    ids = pd.Series(np.asarray(known, dtype=object)[frame.index.to_numpy()], index=frame.index).where(up, None)
    ids = ids.groupby(frame["m"], sort=False).ffill().where(up, None)
    return ids.sort_index().to_numpy(dtype=object)


def _carried(alert: np.ndarray, data: SensorData, stale_after: float | None) -> np.ndarray:
    """``alert`` (NaN where a row was not scored) with each gap taking its machine's state at the
    row before it in time, up to a silence longer than ``stale_after`` (which ends an alert, as the
    daemon's does; 0 before any), as ints."""
    if not np.isnan(alert).any():
        return alert.astype(int)
    frame = pd.DataFrame({"asset": data.source_assets if data.source_assets is not None else "",
                          "t": data.source_times, "alert": alert})
    order = frame.sort_values(["asset", "t"], kind="stable")
    if stale_after is not None:  # each stretch between silences carries its own state
        alive = alive_stamps(data)
        gone, stamps = np.zeros(len(order), dtype=bool), order["t"].to_numpy()
        for asset, rows in order.groupby("asset", sort=False).indices.items():
            t = stamps[rows]
            finite = np.isfinite(t)
            key = None if data.source_assets is None else asset
            gone[rows[finite]] = silences(t[finite], alive.get(key), stale_after)
        order["stretch"] = np.cumsum(gone)
    else:
        order["stretch"] = 0
    filled = order.groupby(["asset", "stretch"], sort=False)["alert"].ffill().fillna(0)
    return filled.reindex(frame.index).to_numpy().astype(int)


def sensor_fault_column(data: SensorData, rules: SensorRules) -> np.ndarray:
    """Per input row, the sensor faults open after it (``kind:channel`` joined by ``;``), as the
    daemon's watch sees them: each machine's readings in time order, a repeated stamp skipped."""
    times, values = data.source_times, data.source_values
    out = np.full(len(times), "", dtype=object)
    alive = alive_stamps(data)
    for rows in _taken_rows(data):  # a reading the daemon refused is not watched either (but keeps it alive)
        watch = SensorWatch(len(rules.channels))
        asset = None if data.source_assets is None else str(data.source_assets[rows[0]]) if len(rows) else None
        silent = (silences(times[rows], alive.get(asset), rules.silence_s) if rules.silence_s is not None
                  else np.zeros(len(rows), dtype=bool))
        for i, gone in zip(rows, silent, strict=True):
            if gone:
                watch = SensorWatch(len(rules.channels))
            watch.step(float(times[i]), values[i].tolist(), rules)
            out[i] = ";".join(f"{f['kind']}:{f['channel']}" for f in watch.describe(rules))
    return out


def _taken_rows(data: SensorData) -> list[np.ndarray]:
    """Per machine, the input rows the daemon takes, in time order: a finite stamp, not a repeat
    of the one before, and at the model's rate (``Cleaner.admit``)."""
    times = data.source_times
    groups = [np.arange(len(times))] if data.source_assets is None else machine_rows(data.source_assets).values()
    out = []
    for rows in groups:
        rows = rows[np.argsort(times[rows], kind="stable")]
        rows = rows[np.isfinite(times[rows])]
        if not len(rows):  # (a machine with no usable stamp: its rows are none of the daemon's)
            continue
        rows = rows[np.r_[True, times[rows][1:] > times[rows][:-1]]]  # a repeated stamp: the daemon refuses it
        if data.cleaning is not None:
            rows = rows[admit_rows(times[rows], data.cleaning)[0]]
        out.append(rows)
    return out


def _taken(data: SensorData) -> np.ndarray:
    """Per input row, whether the daemon takes it (:func:`_taken_rows`)."""
    taken = np.zeros(len(data.source_times), dtype=bool)
    for rows in _taken_rows(data):
        taken[rows] = True
    return taken
