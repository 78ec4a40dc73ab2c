"""What ``sensorguard evaluate`` says of a scored file: its metrics against the labels, per machine
and pooled, the false alerts on its normal rows beside the bundle's promise, and the table printed.

The metrics themselves (point-wise and by event, with the delay to the first alarm) are
:mod:`~sensorguard.training.evaluate`'s; this module decides which rows count (the readings of
the file, from each machine's first scored window on) and how the verdict is worded.

>>> delay_words(61.0), delay_words(4000.0), delay_words(12240.0)
('61 s', '66.7 min', '3.4 h')
"""

from __future__ import annotations

import numpy as np

from sensorguard.service.bundle import Bundle
from sensorguard.training.data import SensorData
from sensorguard.training.evaluate import best_f1_threshold, detection_metrics, false_alerts, pool_metrics
from sensorguard.training.offline import Scored
from sensorguard.training.promise import poisson_ci, reading_period


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
    # a day of irregular readings (no grid) at their mean step, as the promise counts it: the median
    # step (the sample period) read 1.66x the days for 60 % of steps at 10 s and 40 % at 0.1 s (an audit)
    period = data.sample_period if bundle.regular or bundle.sample_period is None else reading_period(data, bundle)
    for asset, rows in data.blocks():
        ok = np.maximum.accumulate(judged[rows]) & real[rows]  # from the machine's first scored row on
        counted[rows] = ok
        times, lab = data.times[rows][ok], labels[rows][ok]
        per_asset[asset] = {
            "rows": int(ok.sum()),
            "anomaly": detection_metrics((scores.score[rows][ok] >= 1).astype(int), lab, times),
            "alert": detection_metrics(alert[rows][ok].astype(int), lab, times),
            "false_alerts": false_alerts(alert[rows][ok], lab, period, bundle.window),
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
    return {"raised": raised, "normal_days": days, "per_day": raised / days if days else None, "machines": len(parts),
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


def _false_alert_line(check: dict | None, stood: float | None = None) -> str | None:
    """``false alerts  3 raised on normal rows in 2.8 h: 25.7 per asset per day (95% CI 5.3-75);
    promised 1 (95% CI 0-23.3): above it`` (None: nothing to say). Above or below only when the
    observed rate's own interval (Garwood, from the count) lies wholly outside the promise's: 0
    alerts in 4.6 h read "below its interval" of a promise of one a day, which so short a span
    cannot tell (a walk); "above the promised rate" when the observed interval lies above the
    promised rate but inside the promise's interval (34 a day, at least 4.1, read "consistent"
    with a promise of one: a walk); else "consistent with it". ``stood``: the share of normal rows an
    alert was up on, said when over :data:`STANDING_SHARE` beside alerts raised on normal rows and no
    "above": the promise counts raises, and 2 raised in 13.8 h read "consistent with it" while alerts
    stood on 79 % of the normal rows (a walk). None raised there, the alarmed normal rows are alerts
    raised on faults and up past their end, not "few raised, long up".

    >>> _false_alert_line({"raised": 0, "normal_days": 0.2, "per_day": 0.0, "promised_per_day": 1.0,
    ...                    "promised_ci95": [0.1, 5.0]}).split(": ", 1)[1]
    '0 per asset per day (95% CI 0-18.4); promised 1 (95% CI 0.1-5): consistent with it'
    >>> _false_alert_line({"raised": 2, "normal_days": 0.059, "per_day": 33.9, "promised_per_day": 1.0,
    ...                    "promised_ci95": [0.0, 6.79]}).rsplit("): ", 1)[1]
    'above the promised rate, inside its interval (a promise from little data is loose)'
    >>> _false_alert_line({"raised": 1, "normal_days": 1.85, "per_day": 0.54, "machines": 2}).split(": ")[0]
    'false alerts        1 raised on normal rows in 44.4 h (summed over 2 machines)'
    """
    if not check:
        return None
    days, raised = check["normal_days"], check["raised"]
    span = "" if days is None else f" in {days * 24:.3g} h" if days < 2 else f" in {days:.3g} days"
    if span and check.get("machines", 1) > 1:  # (two machines' 24 h read "in 44.4 h": a walk)
        span += f" (summed over {check['machines']} machines)"
    line = f"{'false alerts':20}{raised} raised on normal rows{span}"
    observed = None
    if check["per_day"] is not None and days:
        lo, hi = poisson_ci(raised)
        observed = (lo / days, hi / days)
        line += f": {check['per_day']:.3g} per asset per day (95% CI {observed[0]:.3g}-{observed[1]:.3g})"
    promised, ci = check.get("promised_per_day"), check.get("promised_ci95")
    above = False
    if promised is not None and ci is not None:
        line += f"; promised {promised:g} (95% CI {ci[0]:.3g}-{ci[1]:.3g})"
        if observed is not None:
            where = ("above it" if observed[0] > ci[1] else "below it" if observed[1] < ci[0] else
                     "above the promised rate, inside its interval (a promise from little data is loose)"
                     if observed[0] > promised else "consistent with it")
            line += f": {where}"
            above = where.startswith("above")
    if stood is not None and stood > STANDING_SHARE and raised and not above:
        line += (f"; but alerts stood on {stood:.1%} of the normal rows (few raised, long up: the model does not "
                 "fit these normal rows; `calibrate` on normal data like them, or retrain)")
    return line


STANDING_SHARE = 0.10  # alerts up on more of the normal rows than this: "consistent" alone misleads


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
    stood = None if "false_alarm_rate" in _undefined(result["alert"]) else result["alert"].get("false_alarm_rate")
    if (said := _false_alert_line(result.get("false_alerts"), stood)) is not None:
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

