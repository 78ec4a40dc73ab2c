"""Retraining: train a candidate on new normal data, compare it with the current model, promote or not.

Machines age and processes change, so a model trained last year raises false alarms on today's
normal. ``retrain`` trains a candidate on the new data, calibrates it on the most recent held-out
block, and compares both models on a final held-out block neither has seen (the newest 10 % of the
data; the candidate is calibrated out of fold on the rest): false-alarm rate at each model's own
threshold and mean reconstruction error.
Errors are made comparable by expressing both in raw units divided by the held-out data's own
per-channel variance (each model standardizes with its own scaler, so standardized errors are not).
The candidate is promoted only when it is at least as good on both and still catches every fault
the current model catches: the known faults (alerts acknowledged as real, recorded by the daemon)
and large offsets injected into the held-out block, one channel at a time (the comparison and
these checks: :mod:`retrain_gate`).
"""

from __future__ import annotations

import glob
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from sensorguard.service.bundle import Bundle
from sensorguard.service.durable import write_durably
from sensorguard.service.record_files import FALSE_ALARMS, alert_of
from sensorguard.service.registry import (
    CurrentMoved,
    current_version,
    load_current,
    publish,
    set_current,
    set_shadow,
    validate_name,
)
from sensorguard.training.data import (
    DataError,
    SensorData,
    concat_series,
    drop_labeled,
    load_frame,
    series_from_frame,
    trained_asset_column,
)
from sensorguard.training.recorded_alerts import answers, both_ways_note, dropped_alerts_note, filed
from sensorguard.training.retrain_gate import (
    MIN_PROBE_WINDOWS,
    WINDOW_RATE_TARGET,
    Comparison,
    error_variance,
    judge,
    probe_places,
)
from sensorguard.training.series import LEARNED
from sensorguard.training.splits import split_by_time
from sensorguard.training.train import TrainOptions, train_bundle


@dataclass(frozen=True)
class RetrainResult:
    version: str
    promoted: bool
    reason: str
    candidate: Comparison
    current: Comparison | None
    target_rate: float

    def table(self) -> str:
        rows = [f"{'':22}{'current':>12}{'candidate':>12}"]
        cur = self.current
        rows.append(
            f"{'false-alarm rate':22}{_fmt(cur.false_alarm_rate if cur else None):>12}"
            f"{_fmt(self.candidate.false_alarm_rate):>12}"
        )
        rows.append(
            f"{'mean error (norm.)':22}{_fmt(cur.mean_error if cur else None):>12}{_fmt(self.candidate.mean_error):>12}"
        )
        rows.append(f"{'held-out windows':22}{cur.windows if cur else '-':>12}{self.candidate.windows:>12}")
        if self.candidate.known:
            rows.append(f"{'faults caught':22}{f'{len(cur.caught)}/{cur.known}' if cur else '-':>12}"
                        f"{f'{len(self.candidate.caught)}/{self.candidate.known}':>12}")
        elif cur is not None:  # (the row was left out, and the check with it, unsaid: a walk)
            rows.append(f"{'faults caught':22}{'not checked':>24}")
        verdict = "promoted" if self.promoted else "not promoted"
        rows.append(f"candidate {self.version}: {verdict} ({self.reason})")
        return "\n".join(rows)


def load_recorded(
    directory: str | Path, since: float | None = None, channels: Sequence[str] | None = None, fill_limit: int = 5,
    learns: bool = True,
) -> SensorData:
    """Readings the daemon recorded (Parquet with ``ts``, ``asset`` and channel columns); ``learns``:
    whether a model is trained on them (retrain) or a line drawn over them (calibrate), as said.

    Files that cannot be read (a crash mid-write leaves only a ``.tmp`` file, which is skipped) are
    reported, not fatal.
    """
    files = sorted(glob.glob(str(Path(directory) / "**" / "*.parquet"), recursive=True))
    said = answers(directory)  # (an alert's parts in another worker's alerts/ follow its answer)
    if (note := both_ways_note(directory)) is not None:
        print(note)
    files = [f for f in files if filed(Path(f), directory, said) in (None, FALSE_ALARMS)]
    if not files:
        raise DataError(f"{directory}: no recorded Parquet files")
    frames, learned, spans = [], set(), []
    for path in files:
        try:  # (only the rows asked for: a whole store can be several GiB in pandas)
            frames.append(pd.read_parquet(path, filters=None if since is None else [("ts", ">=", since)]))
            if filed(Path(path), directory, said) == FALSE_ALARMS and len(frames[-1]):
                learned.add(alert_of(Path(path)))  # (an alert up through a restart has two parts: one alert)
                spans.extend(_spans(frames[-1]))
        except Exception as exc:  # a damaged file must not stop a retrain on the others
            print(f"skipping unreadable recording {path}: {str(exc).splitlines()[0][:120]}")
    if not frames:
        raise DataError(f"{directory}: no readable recordings")
    # the store's files in time order per machine: its false_alarms/ folder sorts apart from the normal
    # files the alerts fell between, and each retrain noted "rows were not in time order" (a walk)
    frame = pd.concat(frames, ignore_index=True).sort_values(["asset", "ts"], kind="stable", ignore_index=True)
    if since is not None:
        frame = frame[frame["ts"] >= since]
    if frame.empty:
        raise DataError(f"{directory}: no recorded readings since the given time")
    if learned:  # (calibrate learns nothing: it draws its line over them, a walk)
        print(f"{'learning' if learns else 'drawing the line over'} {len(learned)} alert(s) acknowledged as "
              f"false alarms{' as normal' if learns else ''} ({FALSE_ALARMS}/)")
    data = series_from_frame(frame, str(directory), time_column="ts", channels=channels, asset_column="asset",
                             fill_limit=fill_limit)
    return replace(data, labels={**data.labels, LEARNED: _inside(data, spans).astype(np.int8)}) if spans else data


def _spans(frame: pd.DataFrame) -> list[tuple[str, float, float]]:
    """``(asset, first, last)`` stamps of each machine in one false alarm's recording."""
    times = frame.groupby("asset")["ts"].agg(["min", "max"])
    return [(str(asset), float(low), float(high)) for asset, (low, high) in times.iterrows()]


def _inside(data: SensorData, spans: list[tuple[str, float, float]]) -> np.ndarray:
    """Per row of ``data``, whether it lies in one of ``spans`` (its machine's; grid rows the
    cleaning filled in included, which a match on the recorded stamps would leave out)."""
    inside = np.zeros(len(data), dtype=bool)
    for asset, low, high in spans:  # (assets None: one machine, the spans')
        inside |= (data.times >= low) & (data.times <= high) & (True if data.assets is None else data.assets == asset)
    return inside



def retrain(
    root: str | Path,
    name: str,
    data: SensorData,
    options: TrainOptions = TrainOptions(),
    warm_start: bool = False,
    force: bool = False,
    faults: Sequence[tuple[str, SensorData]] = (),
    shadow: bool = False,
    unanswered: Sequence[tuple[str, SensorData]] = (),
) -> RetrainResult:
    """Train a candidate on ``data``, store it as a new version, and promote it if it is as good
    on held-out data and still catches every fault the current model catches: the known ones
    (``faults``: alerts acknowledged as real) and those injected into the held-out block. The
    second keeps a real fault acknowledged as a false alarm from retraining the detector blind:
    learning a large fault as normal teaches the model to reconstruct large offsets, and the
    injected ones then go unseen. ``shadow``: a candidate that passes is not promoted but run
    beside CURRENT (``SHADOW``), for ``models promote --gate live``. ``unanswered``: recorded alerts
    nobody answered; a candidate that raises none of those the current model raises is said, not
    refused (:func:`~sensorguard.training.recorded_alerts.dropped_alerts_note`)."""
    # no CURRENT is a first model; a CURRENT that cannot be loaded is an error, not "no model" (it
    # would skip the channel check and the gate, and promote anything)
    current = load_current(root, name) if current_version(root, name) is not None else None
    if current is not None and tuple(data.channels) != current.channels:
        raise DataError(f"data channels {list(data.channels)} do not match model {name!r}: {list(current.channels)}")
    regular = current is not None and current.regular and (data.cleaning is None or data.cleaning.regular)
    if regular and not force and (why := _other_period(current.sample_period, data.sample_period)):
        raise DataError(why)
    # the newest 10% is the shared held-out block; train_bundle calibrates on the rest (out of fold)
    parts = split_by_time(data, (0.9, 0.0, 0.1))
    rest, holdout = parts.train, parts.calibration
    if current is not None:
        # (a model saved with a hop past its window, before train refused one: capped at the window)
        same = {"window": current.window, "hop": min(current.hop, current.window)}
        if warm_start:
            same |= {"latent": current.config.latent, "hidden": current.config.hidden}
        options = replace(options, **same)
    if current is not None and not probe_places(holdout, current.window) and not force:  # no fault check
        need = MIN_PROBE_WINDOWS * current.window
        raise DataError(f"the newest 10 % of the data ({len(holdout)} rows) hold no {need} readings in a row of one "
                        f"machine ({MIN_PROBE_WINDOWS} windows of the current model) to compare the models on and "
                        f"inject faults into: give at least {10 * need} rows per machine, without long gaps "
                        "(--force trains and promotes without the check)")
    init = current.state_dict if (warm_start and current is not None) else None
    cold = _seen_rows(current, rest) if init is not None else None
    if cold is not None:  # its weights have seen rows the folds calibrate on: the line came out too low
        init = None
    candidate, _ = train_bundle(rest, options, init_state=init)
    scale = current.scale_ if current is not None else holdout.values.std(axis=0)
    variance = error_variance(holdout, current.scale_ if current is not None else candidate.scale_)
    target = options.false_alarm_rate if options.false_alarm_rate is not None else WINDOW_RATE_TARGET
    cand_cmp, cur_cmp, passed, reason = judge(candidate, current, holdout, variance, faults, scale, target)
    promoted, reason = (True, "forced despite " + reason) if force and not passed else (passed, reason)
    if current is not None and (dropped := dropped_alerts_note(candidate, current, unanswered)) is not None:
        reason += f"; note: {dropped}" + ("; `models rollback` undoes the promotion" if promoted else "")
    if cold is not None:
        reason += f"; {cold}"
    promoted = promoted and not (shadow and current is not None)  # nothing to shadow: promoted
    moved = current_version(root, name)
    if moved != (current.version if current is not None else None):  # promoted or rolled back meanwhile
        promoted, shadow = False, False
        reason += (f"; not promoted: CURRENT became {moved} while it trained (it was compared with "
                   f"{current.version if current is not None else 'none'}); promote it by hand if still wanted")
    metrics = {"holdout": cand_cmp.__dict__, "current_on_holdout": cur_cmp.__dict__ if cur_cmp else None,
               "promoted": promoted, "passed": passed, "reason": reason,
               "compared_with": current.version if current is not None else None}
    # a live feed sends the columns the first training file had beside the channels: the recordings
    # retrained on hold the channels alone, and the candidate would refuse every reading (a walk)
    before = current.ignored_columns if current is not None else ()
    ignored = tuple(c for c in dict.fromkeys((*before, *candidate.ignored_columns)) if c not in candidate.channels)
    candidate = replace(candidate, metrics=metrics, ignored_columns=ignored)
    version = publish(candidate, root, name, make_current=False)
    if promoted:
        try:  # (a promote or rollback may land while the version was written: CURRENT is theirs then)
            set_current(root, name, version, expect=current.version if current is not None else None)
        except CurrentMoved:
            moved = current_version(root, name)
            promoted = False
            reason += (f"; not promoted: CURRENT became {moved} while it was stored (it was compared with "
                       f"{current.version if current is not None else 'none'}); promote it by hand if still wanted")
            _restate(Path(root) / name / version, promoted, reason)  # its bundle.json said promoted
    elif shadow and passed and current is not None:
        set_shadow(root, name, version)
        reason += f"; shadowing CURRENT {current.version} (models promote --gate live)"
    return RetrainResult(version, promoted, reason, cand_cmp, cur_cmp, target)


def _seen_rows(current: Bundle, data: SensorData) -> str | None:
    """Why ``--warm-start`` is not used, or None: ``data`` begin before the end of the rows the
    current model trained on, so a network started from its weights has seen rows it is then
    scored on out of fold (cross-fitting), and the line was set on errors too small."""
    span = training_span(current)
    if span is None or not len(data) or float(np.nanmin(data.times)) > span[1]:
        return None
    return (f"warm start not used: the data begin before the end of the current model's training rows "
            f"({current.training['time_range'][1]}), which its weights have seen")


def training_span(bundle: Bundle) -> tuple[float, float] | None:
    """The first and last time (epoch seconds) of the rows ``bundle`` trained on, as its
    ``training.time_range`` records them; None when it does not."""
    span = (bundle.training or {}).get("time_range") or [None, None]
    try:
        start, end = (pd.Timestamp(t).timestamp() for t in span)
    except (TypeError, ValueError):  # (none recorded: NaT has no timestamp)
        return None
    return start, end


def seen_rows_note(bundle: Bundle, data: SensorData) -> str | None:
    """A warning when rows of ``data`` lie inside the time span ``bundle`` trained on (its
    ``training.time_range``): a line calibrated on them is set on errors of rows it may have seen,
    too low. A warning, not a refusal: another machine's rows of the same hours were never seen."""
    span = training_span(bundle)
    listed = (bundle.training or {}).get("time_spans")
    try:  # the stretches it trained on, when it trained on several far apart (series.time_spans)
        spans = [(pd.Timestamp(a).timestamp(), pd.Timestamp(b).timestamp()) for a, b in listed] if listed else [span]
    except (TypeError, ValueError):
        spans = [span]
    inside = 0 if span is None else int(sum(np.sum((data.times >= a) & (data.times <= b)) for a, b in spans))
    if not inside:
        return None
    first, last = bundle.training["time_range"]
    parts = f" in {len(spans)} stretches" if len(spans) > 1 else ""
    return (f"{inside} of {len(data)} rows lie inside the span the model trained on ({first} to {last}{parts}): "
            "if they are its training rows the line comes out too low; calibrate on normal data it never saw")


PERIOD_TOLERANCE = 0.1  # as load's "sampled every ..." note: a median step within 10 % is the same rate


def _other_period(model_s: float | None, data_s: float | None) -> str | None:
    """Why data sampled at another period than CURRENT's cannot retrain it, or None.

    The candidate takes the data's period, so promoting it would make the daemon resample the
    live feed (readings faster than the model's period are dropped, slower ones refused): a
    README walk retrained a 3-minute model on 6-minute data, and it was promoted in silence.
    Irregular sampling (either side) has no period to keep, and is not checked."""
    if not (model_s and data_s and math.isfinite(model_s) and math.isfinite(data_s)):
        return None
    if math.isclose(model_s, data_s, rel_tol=PERIOD_TOLERANCE):  # jitter, not another rate
        return None
    return (f"the data are sampled every {data_s:g} s, the current model every {model_s:g} s: a candidate "
            "would take the data's period and the live feed would no longer fit it; retrain on data at the "
            "model's period, or give --force to train and promote one at the data's")


def _restate(path: Path, promoted: bool, reason: str) -> None:
    """Correct a stored version's ``metrics.promoted`` and ``reason`` (written before the outcome)."""
    meta = json.loads((path / "bundle.json").read_text())
    meta.setdefault("metrics", {}).update(promoted=promoted, reason=reason)
    write_durably(path / "bundle.json", json.dumps(meta, indent=2, sort_keys=True))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def new_normal_data(
    registry: str | Path, name: str, paths: list[str], recorded: str | None, since: str | None,
    label_column: str | None = None, time_column: str | None = None, exclude: tuple[str, ...] = (),
    fill_limit: int = 5, asset_column: str | None = None,
) -> SensorData:
    """What ``retrain`` learns from: the files (labeled rows dropped) and the recorded readings, from
    ``since`` on (``parse_since``), in the current model's channels when there is one."""
    validate_name(name)
    if not paths and not recorded:
        raise DataError("give new normal data: files and/or a recorded directory")
    current = load_current(registry, name) if current_version(registry, name) else None
    channels = list(current.channels) if current is not None else None
    start = parse_since(since)
    parts = []
    if paths:
        data = load_frame(paths, time_column=time_column, channels=channels, exclude=exclude,
                          label_column=label_column, fill_limit=fill_limit, normal=True, asset_column=asset_column,
                          trained_asset_column=trained_asset_column(current))
        if label_column:
            data = drop_labeled(data, label_column)
        if start is not None:
            kept = data.times >= start
            if not kept.any() and not recorded and len(data):  # else the size check said "0 rows" of data
                newest = datetime.fromtimestamp(float(np.nanmax(data.times)), UTC).isoformat(timespec="seconds")
                raise DataError(f"--since {since}: none of the {len(data)} rows is that recent (the newest is "
                                f"from {newest.replace('+00:00', 'Z')})")  # (with --recorded those may be)
            if dropped := int((~kept).sum()):  # with --recorded it was silent: 4,000 rows gone (a README walk)
                said = f"--since {since}: {dropped} of the {len(data)} rows of the files are older: left out"
                data = replace(data, notes=(*data.notes, said))
            data = data.take(kept)
        parts.append(data)
    if recorded:
        parts.append(load_recorded(recorded, since=start, channels=channels, fill_limit=fill_limit))
    return concat_series(parts, [n for p in parts for n in p.notes]) if len(parts) > 1 else parts[0]


KEPT_OPTIONS = ("latent", "hidden", "max_epochs", "patience", "batch_size", "lr", "noise", "conv_weight_decay",
                "max_windows_per_epoch", "focus", "alert_hop",
                "weigh_channels", "split", "level")  # window and hop: retrain() keeps the model's own always


def own_options(bundle: Bundle | None) -> dict:
    """The model's own training settings that a retrain keeps (``KEPT_OPTIONS``, as ``train`` was
    told them: None where it chose from the data), from ``bundle.json``'s ``training.options``.

    Without them a weekly retrain trained ``--hidden 8 --noise 0.1`` models at the defaults."""
    stored = (bundle.training or {}).get("options") if bundle is not None else None
    if not isinstance(stored, dict):
        return {}
    own = {k: stored[k] for k in KEPT_OPTIONS if k in stored}
    if isinstance(own.get("split"), list):
        own["split"] = tuple(own["split"])
    return own


def unrecorded_options(bundle: Bundle | None) -> list[str]:
    """The ``KEPT_OPTIONS`` a model's ``bundle.json`` does not hold (trained by an older sensorguard):
    a retrain takes today's defaults for them, and says so (``conv_weight_decay`` came in session
    31: such a model trained with 1e-5 and is retrained with 0.05)."""
    if bundle is None:
        return []
    stored = (bundle.training or {}).get("options")
    return [k for k in KEPT_OPTIONS if k not in stored] if isinstance(stored, dict) else list(KEPT_OPTIONS)


def parse_since(text: str | None) -> float | None:
    """``--since``: RFC 3339 time, epoch seconds, or an age like ``7d`` / ``12h`` / ``30m``."""
    if not text:
        return None
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(text[:-1]) * units[text[-1]]
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise DataError(f"--since: expected a time, epoch seconds or an age (7d), got {text!r}")
        return value
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise DataError(
            f"--since: expected a time (2026-11-01T00:00:00Z), epoch seconds or an age (7d), got {text!r}"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)  # naive times are UTC, as everywhere in sensorguard
    return stamp.timestamp()
