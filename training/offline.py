"""Offline scoring of a whole series: what ``score`` and ``evaluate`` do, callable from Python.

One function, :func:`score_data`, scores a cleaned series with a bundle exactly as the daemon
would (the same scorer, the hop grid it steps, the drift rule, the alert machine); ``score``
writes its rows out (:func:`score_table`), ``evaluate`` compares them with labels
(:func:`evaluate_scores`).
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
from sensorguard.service.sensors import SensorRules, SensorWatch, window_faults
from sensorguard.training.data import DataError, SensorData, machine_rows
from sensorguard.training.evaluate import best_f1_threshold, detection_metrics, false_alerts, pool_metrics
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
        why = "".join(f"; {note}" for note in data.notes)
        raise DataError(f"{name}: {len(data)} usable rows, fewer than one window ({bundle.window}){why}")
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


def evaluate_scores(bundle: Bundle, scored: Scored, labels: np.ndarray) -> dict:
    """Detection metrics of the ``anomaly`` (score >= 1) and ``alert`` bases against 0/1 ``labels``.

    Each machine's rows before its first full window cannot be judged and are left out (counted in
    ``not_judged``). From there on every reading of the file counts (a grid row the cleaning filled
    into a short gap is scored, as live, but is no row of the file: not counted): a row with no
    score of its own (the first rows after a gap restarted the window) raised no anomaly, and its
    alert state is the one the offline alert machine carries (across a gap shorter than
    ``rules.stale_after``: a longer one ends an alert, as the daemon's silence does).
    Leaving those rows out too dropped a fault that fell in them from the events, so it was neither
    caught nor missed. ``f1_best`` says which threshold would have maximized F1 (a diagnosis, never
    used to set one). With several machines the metrics are pooled over them (counts summed, events
    never joined across machines) and ``assets`` holds each machine's own.
    """
    scores, alert, data = scored.scores, scored.alert, scored.data
    judged = np.isfinite(scores.score)
    real = _read(data)
    counted = np.zeros(len(data), dtype=bool)
    per_asset = {}
    for asset, rows in data.blocks():
        ok = np.maximum.accumulate(judged[rows]) & real[rows]  # from the machine's first scored row on
        counted[rows] = ok
        times, lab = data.times[rows][ok], labels[rows][ok]
        per_asset[asset] = {
            "rows": int(ok.sum()),
            "anomaly": detection_metrics((scores.score[rows][ok] >= 1).astype(int), lab, times),
            "alert": detection_metrics(alert[rows][ok].astype(int), lab, times),
            "false_alerts": false_alerts(alert[rows][ok], lab, data.sample_period),
        }
    result = {
        "rows": int(counted.sum()),
        "not_judged": {"rows": int((~counted & real).sum()),
                       "anomalous_rows": int(labels[~counted & real].astype(bool).sum()),
                       # rows of the file with no row here (repeated stamps, rows still empty after
                       # filling, readings off the rate): the judged and left-out rows did not add up
                       # to the file's, and only a note said why (a walk)
                       "removed_rows": 0 if data.source_times is None else int(len(data.source_times) - real.sum())},
        "threshold": bundle.threshold_,
        "anomaly": pool_metrics([m["anomaly"] for m in per_asset.values()]),
        "alert": pool_metrics([m["alert"] for m in per_asset.values()]),
    }
    result["false_alerts"] = _promise_check(bundle, [m["false_alerts"] for m in per_asset.values()])
    if data.assets is not None:
        result["assets"] = per_asset
    if labels[judged & real].any():
        best_score, best_f1 = best_f1_threshold(scores.score[judged & real], labels[judged & real])
        # with a drift rule each row's line is widened differently: only the score level is meaningful
        threshold = None if bundle.drift_rule is not None else best_score * bundle.threshold_
        result["f1_best"] = {"score": best_score, "threshold": threshold, "f1": best_f1}
    return result


def _promise_check(bundle: Bundle, parts: list[dict]) -> dict:
    """The false alerts on the normal rows of every machine, per asset per day, beside what the
    bundle promises: ``evaluate`` reported rows only, and the promise had to be counted by hand from
    ``score``'s alert column (a walk)."""
    raised = sum(p["raised"] for p in parts)
    days = None if any(p["normal_days"] is None for p in parts) else sum(p["normal_days"] for p in parts)
    record = (bundle.calibration or {}).get("alerts") or {}
    return {"raised": raised, "normal_days": days, "per_day": raised / days if days else None,
            "promised_per_day": record.get("promised_per_day"), "promised_ci95": record.get("promised_ci95")}


def _read(data: SensorData) -> np.ndarray:
    """Per row of ``data``, whether it is a reading of the file: not a grid row the cleaning filled
    into a short gap. Those are scored (the daemon fills them too), but ``evaluate`` counted them
    as rows of the file, with the label of the reading before them (a walk: 6,000 rows judged in a
    file of 5,996)."""
    if data.source_times is None:
        return np.ones(len(data), dtype=bool)
    rows = data.rows_of(data.source_times, data.source_assets)
    real = np.zeros(len(data), dtype=bool)
    real[rows[rows >= 0]] = True
    return real


def _undefined(m: dict) -> set[str]:
    """The ratios a count of zero leaves undefined (printed ``-``, not 0.000: normal data alone
    read as "recall 0.000", a detector that missed everything; found in a README walk)."""
    out = set()
    if m.get("tp", 0) + m.get("fn", 0) == 0:  # no row labelled anomalous
        out |= {"recall", "f1", "missed_alarm_rate", "event_recall"}
    if m.get("tp", 0) + m.get("fp", 0) == 0:  # no row alarmed
        out |= {"precision", "f1"} if "recall" in out else {"precision"}
    if m.get("fp", 0) + m.get("tn", 0) == 0:  # no row labelled normal: "false-alarm rate 0.000" (a walk)
        out.add("false_alarm_rate")
    return out


def _false_alert_line(check: dict | None) -> str | None:
    """``false alerts  3 raised on normal rows in 2.8 h: 25.7 per asset per day; promised 1 (95% CI
    0-23.3): above its interval`` (None: nothing to say)."""
    if not check:
        return None
    days, raised = check["normal_days"], check["raised"]
    span = "" if days is None else f" in {days * 24:.3g} h" if days < 2 else f" in {days:.3g} days"
    line = f"{'false alerts':20}{raised} raised on normal rows{span}"
    if check["per_day"] is not None:
        line += f": {check['per_day']:.3g} per asset per day"
    promised, ci = check.get("promised_per_day"), check.get("promised_ci95")
    if promised is not None and ci is not None:
        line += f"; promised {promised:g} (95% CI {ci[0]:.3g}-{ci[1]:.3g})"
        if check["per_day"] is not None:
            where = ("above" if check["per_day"] > ci[1] else "within") if check["per_day"] >= ci[0] else "below"
            line += f": {where} its interval"
    return line


def delay_words(seconds: float) -> str:
    """A delay in the unit a reader would use: ``42 s``, ``89 s``, ``12.5 min``, ``67 min``, ``3.4 h``,
    ``2.1 days`` (seconds up to two minutes, minutes up to two hours: 61 s read "1.02 min", a walk)."""
    shown = float(f"{seconds:.3g}")  # (the unit from the value as shown: 59.96 s read "60 s")
    for unit, size, start in (("days", 86400.0, 2 * 86400.0), ("h", 3600.0, 7200.0), ("min", 60.0, 120.0)):
        if shown >= start:  # (just under a unit, rounded up into it: 1 min, not 0.999 min)
            return f"{(shown if seconds < start else seconds) / size:.3g} {unit}"
    return f"{shown:g} s"


def format_evaluation(result: dict) -> str:
    """The table ``sensorguard evaluate`` prints."""
    keys = [
        ("precision", "precision"),
        ("recall", "recall"),
        ("f1", "F1"),
        ("false_alarm_rate", "false-alarm rate"),
        ("missed_alarm_rate", "missed-alarm rate"),
        ("event_recall", "event recall"),
        ("mean_detection_delay_s", "mean delay"),
    ]
    left = result.get("not_judged", {})
    before = (f"; {left['rows']} rows before the first full window left out ({left['anomalous_rows']} labeled "
              "anomalous)" if left.get("rows") else "")
    if left.get("removed_rows"):
        before += f"; {left['removed_rows']} rows removed by the cleaning (the notes say which)"
    lines = [
        f"{result['rows']} rows judged, threshold {result['threshold']:.4g}{before}",
        f"{'':20}{'anomaly':>10}{'alert':>10}",
    ]
    for key, label in keys:
        cells = []
        for kind in ("anomaly", "alert"):
            value = None if key in _undefined(result[kind]) else result[kind].get(key)
            if value is not None and key == "mean_detection_delay_s":  # 5400.000 s read as 5,400 (a walk)
                cells.append(delay_words(value))
                continue
            cells.append("-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value))
        lines.append(f"{label:20}{cells[0]:>10}{cells[1]:>10}")
    events = result["anomaly"].get("events")
    if events is not None:
        lines.append(f"{'events':20}{events:>10}")
    if (said := _false_alert_line(result.get("false_alerts"))) is not None:
        lines.append(said)
    if "assets" in result:
        # names in full: cut to 18 characters, site-north/compressor-01 and -02 read as one (a walk)
        width = max(18, *(len(str(asset)) for asset in result["assets"]))
        lines.append(f"per asset (alert):{'':{width - 16}}{'rows':>8}{'F1':>8}{'false-alarm':>13}{'events':>9}"
                     f"{'false alerts':>14}")
        for asset, m in result["assets"].items():
            a = m["alert"]
            f1 = "-" if "f1" in _undefined(a) else f"{a['f1']:.3f}"  # (most of a fleet has no labelled fault)
            far = "-" if "false_alarm_rate" in _undefined(a) else f"{a['false_alarm_rate']:.3f}"
            lines.append(f"  {asset:{width}}{m['rows']:>8}{f1:>8}{far:>13}"
                         f"{a['events_detected']:>5}/{a['events']:<3}{m['false_alerts']['raised']:>14}")
    if "f1_best" in result:
        best = result["f1_best"]
        if best["threshold"] is None:
            lines.append(f"F1-best line would be at score {best['score']:.3g} (F1 {best['f1']:.3f})")
        else:
            lines.append(
                f"F1-best threshold would be {best['threshold']:.4g} (score {best['score']:.3g}, F1 {best['f1']:.3f})"
            )
    return "\n".join(lines)

