"""``sensorguard calibrate``: a new alert line for a model from held-out normal data.

What it refuses without ``--force`` (rows a label column marks, data unlike the model's normal, a
line that only the data's shortness raises, faults the old line caught) is here with it; loading
and the promise's options are the other verbs' (:mod:`sensorguard.cli`).
"""

from __future__ import annotations

import argparse
import sys

from sensorguard.cli_errors import CliError
from sensorguard.cli_models import promise_words


def cmd_calibrate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from sensorguard.cli import _load, _promise
    from sensorguard.service.bundle import save_bundle
    from sensorguard.service.bundle_loading import load_bundle
    from sensorguard.service.registry import current_version, location, publish
    from sensorguard.training.data import concat_series, drop_labeled
    from sensorguard.training.line import calibrate_bundle
    from sensorguard.training.recorded_alerts import dropped_alerts_note, known_faults, unanswered_alerts
    from sensorguard.training.retrain import load_recorded, parse_since, seen_rows_note
    from sensorguard.training.retrain_gate import UNLIKE_MEDIAN, median_score, missed_faults
    from sensorguard.training.tables import TAKEN_AS_NORMAL

    bundle = load_bundle(args.bundle)
    if not args.data and not args.recorded:
        raise CliError("give held-out normal data: files and/or --recorded DIR")
    if args.since is not None and not args.recorded:
        raise CliError("--since goes with --recorded (it picks recorded readings)")
    parts = []
    if args.data:
        part = _load(args, args.data, channels=list(bundle.channels), label_column=args.label_column, bundle=bundle,
                     normal=True)
        marked = [n.split(": they were")[0] for n in part.notes if TAKEN_AS_NORMAL in n]
        for note in part.notes:  # what the cleaning did, and rows a label column marks (taken as normal:
            if args.force or TAKEN_AS_NORMAL not in note:  # said so above a refusal that took nothing, a walk)
                print(f"note: {note}", file=sys.stderr)
        if marked and not args.force:  # 178 fault rows taken as normal set a line 24x higher, written in place
            raise CliError(f"not recalibrated: {marked[0]} as anomalous (a label-like column): give --label-column "
                           f"{marked[0].split(' marks ')[0]} to leave them out, or --force to take them as normal")
        parts.append(drop_labeled(part, args.label_column) if args.label_column else part)
    if args.recorded:  # what a daemon recorded as normal, false alarms acknowledged as such included
        parts.append(load_recorded(args.recorded, since=parse_since(args.since), channels=bundle.channels,
                                   learns=False))
    data = concat_series(parts) if len(parts) > 1 else parts[0]
    if (seen := seen_rows_note(bundle, data)) is not None:
        print(f"sensorguard calibrate: warning: {seen}", file=sys.stderr)
    # the files only: recorded readings hold the false alarms acknowledged, over the line by definition,
    # which calibrate --recorded is there to learn (their check is missed_faults, below; a review)
    if args.data and not args.force and (median := median_score(bundle, parts[0])) >= UNLIKE_MEDIAN:
        raise CliError(f"not recalibrated: the median window of these data scores {median:.3g} times the current "
                       "line: they are not like the normal data the model learned (other units, another operating "
                       "point, or faults: give --label-column); retrain on them, or --force recalibrates anyway")
    before = bundle
    old = bundle.threshold_
    promise = _promise(args, bundle.promise)
    bundle = calibrate_bundle(bundle, data, promise["threshold_method"], promise["false_alarm_rate"],
                              false_alerts_per_day=promise["false_alerts_per_day"], drift=promise["drift"])
    if not args.force and (weak := _weak_line(bundle, old)) is not None:
        raise CliError(f"not recalibrated: {weak}")
    # a fault under a label column of a name not known ('Störung') was taken as normal and the line rose 47x,
    # with nothing said (a walk): a rise that large on files is said, with what would have caused it
    if old > 0 and bundle.threshold_ > WEAK_RISE * old and args.data:
        print(f"sensorguard calibrate: warning: the new line is {bundle.threshold_ / old:.1f}x the current one: "
              f"{_rise_cause(args)}", file=sys.stderr)
    if args.recorded:  # false alarms learned: the new line must still catch what the old one caught
        missed = missed_faults(bundle, before, data, known_faults(args.recorded, bundle.channels))
        if missed:
            raise CliError(f"not recalibrated: the new line ({bundle.threshold_:.4g}, was {old:.4g}) misses "
                           f"{len(missed)} fault(s) the old one catches: {', '.join(missed[:3])}")
        if (dropped := dropped_alerts_note(bundle, before, unanswered_alerts(args.recorded, bundle.channels))):
            print(f"warning: the new line ({bundle.threshold_:.4g}, was {old:.4g}): "
                  f"{dropped.replace('the current one', 'the old one')}", file=sys.stderr)
    # a retrain gate's verdict was for the old line: a shadow of this version needs a new one, and
    # `models list` must not show the old verdict; the new version is made now (both found by a README walk)
    bundle = replace(bundle, created="", metrics={k: v for k, v in (bundle.metrics or {}).items()
                                                  if k not in ("passed", "compared_with", "promoted", "reason")})
    where = location(args.bundle)
    if where is None:
        save_bundle(bundle, args.bundle)
    else:  # a registry version is never rewritten: the recalibration is a new version (the daemon sees it)
        root, name, version = where
        current = current_version(root, name) == version
        new = publish(bundle, root, name, make_current=current)
        print(f"{name} {version} recalibrated as {new}" + (" (now CURRENT)" if current else
                                                           f" (not current; models promote {new})"))
    rec = bundle.calibration
    per_day = rec.get("expected_false_alarms_per_day")
    promise = rec.get("alerts")
    if promise:
        lo, hi = promise["promised_ci95"]
        said = (f"{promise_words(promise['promised_per_day'], lo, hi, promise.get('promise_note'))}, "
                f"{promise['observed_alerts']} observed in {promise['calibration_days'] * 24:.3g} h")
    else:
        said = f"~{per_day if per_day is not None else 'n/a'} window exceedances/day expected"
    print(f"threshold {old:.4g} -> {bundle.threshold_:.4g} ({rec['method']}, {rec['windows']} windows, {said})")
    if before.level is not None and bundle.level is not None:  # its lines move with the factor (a walk: unsaid)
        print(f"level term's lines x {before.level.calibrated:.4g} -> x {bundle.level.calibrated:.4g} (the fitted "
              "limits' factor: raised until the term adds no alert on these data)")
    return 0


WEAK_RISE = 2.0  # a recalibrated line over this many times the old one, on too little evidence, is refused


def _weak_line(bundle, old: float) -> str | None:
    """Why a recalibrated line is not written without ``--force``: over ``WEAK_RISE`` times the old
    one because the data were too few for the promise (its margin over the highest the alert rule
    reached on them over 1). The README's 10,000 rows counted as 11 independent samples, the line
    rose 7.7x and the model caught a third fewer fault rows, in silence (a walk)."""
    alerts = bundle.calibration.get("alerts") or {}
    margin, samples, eff = alerts.get("margin"), alerts.get("samples"), alerts.get("effective_samples")
    if not (old > 0 and bundle.threshold_ > WEAK_RISE * old and margin is not None and margin > 1 and eff):
        return None
    return (f"these {samples} windows count as {eff:g} independent samples (their scores move together over about "
            f"{samples / eff:.0f} windows): too few for the promise, so the new line ({bundle.threshold_:.4g}) would "
            f"sit {margin + 1:.1f}x over the highest the alert rule reached on them, {bundle.threshold_ / old:.1f}x "
            f"the current one ({old:.4g}), and the model would alert far less; calibrate on a longer stretch of "
            "normal data (the promise is a rate per day: a day of it or more), or --force writes it")


def _rise_cause(args: argparse.Namespace) -> str:
    """What may have raised the line, as the arguments allow: "give --label-column" to one who gave
    it, and "every row was taken as normal" beside rows a label column left out, were false; with
    ``--recorded`` the false alarms acknowledged raise it by design (a review)."""
    taken = (f"the rows {args.label_column} does not mark were taken as normal" if args.label_column else
             "every row given was taken as normal")
    fix = "a fault unmarked there" if args.label_column else "a label column not recognised: give --label-column"
    learned = "; the recorded false alarms acknowledged raise it too" if args.recorded else ""
    return f"{taken}; if they hold a fault ({fix}), the model will miss faults like it{learned}"
