"""Fit -> calibrate -> bundle: the whole offline pipeline behind ``sensorguard train``.

Data are split by time (train | validation | calibration), the scaler is fit on the training
block only, the autoencoder is trained with Lightning (early stopping on validation loss, best
weights kept), and the threshold is picked on calibration windows the model never saw. Small data
(up to ``CROSSFIT_MAX_ROWS``) are cross-fitted instead: the line comes from out-of-fold errors of
every row, and the model served is the fold fit on the first 80 % for the epochs early stopping
chose (``training/crossfit.py`` says why); the validation loss and yardsticks in the summary stay
those of the early-stopped model. Small data sets shrink the window so each block still holds
enough windows; the summary says what was chosen.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np

from sensorguard.service.alerts import RAISE_AT, AlertRules, divides_hop
from sensorguard.service.bundle import Bundle
from sensorguard.service.cleaning import CleaningPolicy
from sensorguard.service.drift import DriftRule
from sensorguard.service.model import ModelConfig, default_depth, default_latent
from sensorguard.service.scorer import Scorer
from sensorguard.service.sensors import learn_sensor_rules
from sensorguard.training.calibrate import SPIKY_WEIGHTS, WEIGHT_FLOOR, channel_weights, line_leaders, pick_threshold
from sensorguard.training.crossfit import (
    CROSSFIT_MAX_ROWS,
    FOLDS,
    START_SHARE,
    clean_pieces_beside,
    cross_fit,
    fold_masks,
    scale_spread,
    start_share,
)
from sensorguard.training.data import SensorData
from sensorguard.training.fit import fit_network
from sensorguard.training.level_fit import fit_level, window_terms
from sensorguard.training.linear import naive_error, pca_error
from sensorguard.training.promise import alert_threshold, combined_line
from sensorguard.training.scaling import spiky_channels, spiky_scale
from sensorguard.training.splits import choose_window, split_by_time
from sensorguard.training.summary import (
    TrainSummary,
    short_span_note,
    start_note,
    still_note,
    trend_note,
    yardstick_note,
)


@dataclass(frozen=True)
class TrainOptions:
    """Everything ``train`` can be told; None means "choose from the data"."""

    window: int | None = None
    latent: int | None = None
    hidden: int = 32
    hop: int | None = None
    focus: int | None = None  # newest samples a window's error averages over (None: the hop; 0: all)
    alert_hop: int | None = None  # hop while an alert is up (None: default_alert_hop; 0 or the hop: the hop)
    max_epochs: int = 40
    patience: int = 4
    batch_size: int = 256
    lr: float = 2e-3
    noise: float = 0.0
    conv_weight_decay: float = 0.05  # AdamW decay on the conv path only (training.system)
    max_windows_per_epoch: int = 16384
    threshold_method: str = "pot"
    false_alerts_per_day: float = 1.0
    false_alarm_rate: float | None = None  # advanced: a window rate instead of alerts per day
    weigh_channels: bool = True  # each channel's error over its typical held-out error (False: plain mean)
    drift: bool | None = None  # a drift rule (service.drift): each asset's line widens with its normal level;
    # None: chosen by size (on when one machine has more than CROSSFIT_MAX_ROWS rows: docs/benchmarks.md, session 32)
    level: bool = True  # the level term (service.level): T^2 and Q about a level each asset's normal operation follows
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    seed: int = 0
    progress: bool = True
    device: str | None = None
    devices: int = 1  # processes (CPU) or GPUs training together through Lightning's DDP
    strategy: str | None = None  # with devices > 1: "ddp_fork" (CPU default), "ddp_spawn" (GPU default), "ddp"


# the alert rules a line is calibrated under: the daemon's defaults, and one window at RAISE_AT x the
# line raising at once (recorded in the bundle, which the daemon and `score` then apply)
CALIBRATION_RULES = AlertRules(raise_at=RAISE_AT)

def default_alert_hop(hop: int) -> int:
    """The hop while an alert is up: half the hop when it is even, else 0 (the hop itself).

    Judged twice as often, an alert ends sooner after its fault: the windows hold fault samples
    for a while after it, and the clear needs windows in a row under the line. Finer still (every
    row) let alerts flap inside faults and cut Tennessee Eastman's detection below its target
    (docs/benchmarks.md, session 45), so an odd hop is not split into single rows."""
    return hop // 2 if hop % 2 == 0 else 0


def train_bundle(
    data: SensorData, options: TrainOptions = TrainOptions(), init_state: dict | None = None
) -> tuple[Bundle, TrainSummary]:
    """Train and calibrate a bundle on normal data.

    init_state: weights to start from (warm start from the current model when retraining); used
    when the architecture matches.
    """
    started = time.perf_counter()
    splits = split_by_time(data, options.split)
    window = choose_window(splits, options.window)
    hop = options.hop or max(1, window // 8)
    if hop > window:  # the samples between two windows would never be scored
        raise ValueError(f"--hop {hop} is longer than the window ({window} samples): every sample must be in a "
                         "scored window; give a hop of at most the window")
    alert_hop = default_alert_hop(hop) if options.alert_hop is None else options.alert_hop
    if not divides_hop(alert_hop, hop):  # the hop's windows must be among the alert hop's
        raise ValueError(f"--alert-hop {alert_hop} does not divide the hop ({hop}): give a divisor of it, or 0 "
                         "to judge every hop while an alert is up too")
    latent = options.latent or default_latent(len(data.channels), window)
    config = ModelConfig(
        channels=len(data.channels), window=window, latent=latent, hidden=options.hidden, depth=default_depth(window)
    )
    shared = spiky_scale(data.values)  # spiky channels: all the rows' scale in every fit
    fit = fit_network(splits.train, splits.validation, config, options, init_state=init_state, shared_scale=shared)
    crossfit = len(data) <= CROSSFIT_MAX_ROWS
    longest = max((b.stop - b.start for _, b in data.blocks()), default=0)  # one machine's history
    drift = longest > CROSSFIT_MAX_ROWS if options.drift is None else options.drift
    cleaning = data.cleaning or CleaningPolicy()
    bundle = Bundle(
        channels=data.channels,
        ignored_columns=data.left_out,
        config=fit.config,
        hop=hop,
        focus=min(hop if options.focus is None else options.focus, window),
        alert_hop=alert_hop if alert_hop < hop else 0,
        center_=fit.scaler.center_,
        scale_=fit.scaler.scale_,
        threshold_=1.0,
        state_dict=fit.state,
        sample_period=data.sample_period,
        regular=cleaning.regular,
        fill_limit=cleaning.fill_limit,
        jitter=cleaning.jitter,
        restart_gap_s=cleaning.gap_s,
        sensors=learn_sensor_rules(data.channels, data.values, data.segments, cleaning.fill_limit),
        # (small data: all rows, cross-fitting's folds hold their own; else not the calibration block's)
        level=fit_level(data.values if crossfit else np.vstack([splits.train.values, splits.validation.values]),
                        data.channels) if options.level else None,
    )
    pieces, starts, served, (served_loss, start_loss), fold_scales, terms, piece_folds = (
        cross_fit(data, bundle, options, fit.best_epoch, init_state=init_state, shared_scale=shared) if crossfit
        else ([], [], fit, (math.nan, math.nan), np.empty((0, len(data.channels))), None, []))
    fold_ratio, unsteady = scale_spread(fold_scales, data.channels)
    scaler, start = served.scaler, fit.start
    notes = list(data.notes)
    if np.isfinite(shared).any():
        names = ", ".join(data.channels[j] for j in np.flatnonzero(np.isfinite(shared)))
        alone = np.isfinite(shared).all() or not options.weigh_channels  # (nothing weighed against them)
        weighed = "" if alone else ", and a normal spike weighs no more than other channels' extremes"
        notes.append(f"spiky in training: {names} (a few rows carry most of the spread): every fit measures them in "
                     f"the scale of all the rows{weighed}")
    if scaler.constant:
        names = ", ".join(data.channels[i] for i in scaler.constant)
        notes.append(f"constant in training: {names} (scale = max(|value|, 1); the model learns nothing of them)")
    if init_state is not None and not fit.warm:
        old_rank = len(init_state["project.weight"]) if "project.weight" in init_state else 0
        why = f" (linear path rank {old_rank} -> {fit.config.linear})" if old_rank != fit.config.linear else ""
        notes.append(f"warm start not used: the current model's network does not fit these data's{why}; "
                     "trained from the PCA start")
    if (short := short_span_note(data, drift)) is not None:
        notes.append(short)
    if (trend := trend_note(data)) is not None:
        notes.append(trend)
    if (still := still_note(bundle.sensors, data.sample_period)) is not None:
        notes.append(still)
    if unsteady is not None:
        notes.append(unsteady)
    naive_val, pca_val = naive_error(fit.val_windows), pca_error(start, fit.val_windows)
    if (beaten := yardstick_note(fit.best_val_loss, naive_val, pca_val, start.rank)) is not None:
        notes.append(beaten)
    if served_loss > start_loss * (1 + 1e-4):  # (0 epochs: the PCA start itself, equal but for float32)
        notes.append(f"the model served (fit on the first {FOLDS - 1} of {FOLDS} time folds for {fit.best_epoch} "
                     f"epochs) reconstructs the last fold worse than its PCA start ({served_loss:.4g} against "
                     f"{start_loss:.4g}): training did not help it")
    bundle = replace(
        bundle,
        config=served.config,
        center_=scaler.center_,
        scale_=scaler.scale_,
        state_dict=served.state,
        training={
            **data.fingerprint(),
            "splits": {"train": len(splits.train), "validation": len(splits.validation),
                       "calibration": len(splits.calibration)},
            "epochs": fit.epochs,
            "best_epoch": fit.best_epoch,
            "best_val_loss": fit.best_val_loss,
            "processes": fit.processes,  # what trained together (options.devices is what was asked)
            "options": {k: v for k, v in options.__dict__.items() if k not in ("progress", "device")},
            "notes": notes,
            "scaling": {**scaler.record(data.channels), **({"fold_scale_ratio": fold_ratio} if crossfit else {})},
            "linear_path": {"rank": served.start.rank, "explained_variance": round(served.start.explained, 4)},
            "validation_loss": {"autoencoder": fit.best_val_loss, "naive_window_mean": naive_val,
                                "pca_same_rank": pca_val},
            "calibration_data": f"out-of-fold errors of all rows, {FOLDS} time folds; served: the fold fit on "
                                f"the first {FOLDS - 1} (80 % of the rows)" if crossfit else "the calibration block",
            "served_model": ({"fit_on": f"the first {FOLDS - 1} of {FOLDS} time folds", "epochs": fit.best_epoch,
                              "last_fold_loss": served_loss, "pca_start_last_fold_loss": start_loss}
                             if crossfit else {"fit_on": "the training block", "epochs": fit.best_epoch,
                                               "early_stopped": True}),
        },
    )

    def line(drift: bool) -> Bundle:
        if crossfit:
            return threshold_bundle(bundle, pieces, {**data.fingerprint(), "cross_fitted_folds": FOLDS},
                                    options.threshold_method, options.false_alarm_rate, options.false_alerts_per_day,
                                    weigh_channels=options.weigh_channels, drift=drift,
                                    period=reading_period(data, bundle), starts=starts, terms=terms)
        return calibrate_bundle(bundle, splits.calibration, options.threshold_method, options.false_alarm_rate,
                                device=options.device, false_alerts_per_day=options.false_alerts_per_day,
                                weigh_channels=options.weigh_channels, drift=drift)

    try:
        bundle = line(drift)
    except NoDriftBaseline as exc:
        if options.drift is not None:
            raise  # asked for: say it cannot be had
        bundle = line(False)  # chosen by size: left out, said (every held-out error 0 stopped training)
        notes.append(f"no drift rule: {exc}")
    weights = bundle.channel_weights_  # (the errors the line was set from: weighted as it weighed them)
    weighted = pieces if weights is None else [p * weights for p in pieces]
    if crossfit and (led := start_share(weighted, piece_folds))[0] >= START_SHARE:
        times = data.times[fold_masks(data.times, FOLDS)[0]]
        notes.append(start_note(*led, FOLDS, float(times.min()), float(times.max())))
    if options.drift is None and bundle.drift_rule is not None:
        notes.append(f"drift rule on: one machine's data hold more than {CROSSFIT_MAX_ROWS:,} rows (on smaller "
                     "sets it cost detection; --no-drift turns it off)")
    if bundle.sample_period is None and options.false_alarm_rate is None:
        notes.append("no sample period (the timestamps do not show one): the line is set for a share of windows "
                     f"(a rate of {bundle.calibration.get('false_alarm_rate', 1e-3):g}), not for false alerts a day")
    summary = TrainSummary(
        rows={"train": len(splits.train), "validation": len(splits.validation),
              "calibration": len(splits.calibration)},
        window=window,
        hop=hop,
        alert_hop=bundle.alert_hop,
        latent=latent,
        epochs=fit.epochs,
        best_val_loss=fit.best_val_loss,
        naive_val_loss=naive_val,
        pca_val_loss=pca_val,
        linear=start.rank,
        threshold=bundle.threshold_,
        method=bundle.calibration["method"],
        false_alarms_per_day=bundle.calibration["expected_false_alarms_per_day"],
        promise=bundle.calibration.get("alerts"),
        seconds=time.perf_counter() - started,
        notes=tuple(notes),
        calibration_data=bundle.training["calibration_data"],
        leaders=bundle.calibration.get("largest_errors"),
        level=level_words(bundle),
    )
    return bundle, summary


def level_words(bundle: Bundle) -> str | None:
    """The train summary's line on the level term: its subspace and its line's factor."""
    level = bundle.level
    if level is None:
        return None
    q = f", Q outside them, line {level.q_line:.4g}" if level.q_limit > 0 else ""
    return (f"T^2 in {level.loadings.shape[1]} of {len(bundle.channels)} principal directions about each asset's "
            f"followed level, line {level.line:.4g}{q} (fitted limits x {level.calibrated:.4g}, the line's factor)")


def calibrate_bundle(
    bundle: Bundle,
    data: SensorData,
    method: str = "pot",
    false_alarm_rate: float | None = None,
    device: str | None = None,
    false_alerts_per_day: float | None = 1.0,
    rules: AlertRules = CALIBRATION_RULES,
    weigh_channels: bool = True,
    drift: bool = False,
) -> Bundle:
    """Re-pick the channel weights and threshold from the errors of ``data``'s windows (held-out
    normal data).

    The default targets ``false_alerts_per_day`` alerts through the daemon's raise rule
    (``training.promise``), counting a day in windows from the bundle's sample period (the median
    interval of the training data). ``false_alarm_rate`` (advanced) targets a fraction of windows
    above the line with ``method`` instead, as does a bundle without a sample period.
    """
    if tuple(data.channels) != tuple(bundle.channels):
        raise ValueError(f"data channels {list(data.channels)} do not match the bundle's {list(bundle.channels)}")
    unweighted = replace(bundle, channel_weights_=None)
    scores = Scorer(unweighted, device=device).score_series(data.values, data.segments)
    record = data.fingerprint()
    term = None if bundle.level is None else window_terms(bundle.level, data.values, data.segments,
                                                          bundle.scored_samples)
    pieces, terms, starts, left_out = clean_pieces_beside(scores.channel_error, term, data, bundle.window)
    if data.faulted is not None:
        record["sensor_fault_windows_left_out"] = left_out
    errors = np.concatenate([p[np.isfinite(p).all(axis=1)] for p in pieces]) if pieces else np.empty((0, 1))
    if len(errors) < 10:
        # (rows refused for their rate: the notes calibrate printed say so; not sensor faults)
        faults = " without a sensor fault" if left_out else ""
        raise ValueError(f"calibration data hold {len(errors)} windows of {bundle.window} rows{faults}; need at "
                         f"least 10, so at least {bundle.window + 9} rows in a row without a gap (any notes above "
                         "say what the cleaning left out)")
    return threshold_bundle(bundle, pieces, record, method, false_alarm_rate, false_alerts_per_day, rules,
                            weigh_channels, drift, reading_period(data, bundle), starts, terms)


def reading_period(data: SensorData, bundle: Bundle) -> float | None:
    """Seconds between the readings the daemon will score, for counting its windows a day: the
    sample period on a regular grid; for irregular data (no grid, no filling) the mean step within
    segments, since the daemon scores every ``hop`` readings, not every ``hop`` median steps (60 %
    of steps at 10 s and 40 % at 0.1 s: a median of 10 s, a mean of 6 s, 1.66x the promised alerts)."""
    if bundle.sample_period is None or bundle.regular or len(data) < 2:
        return bundle.sample_period
    step = np.diff(data.times)
    inside = (np.diff(data.segments) == 0) & (step > 0)
    return float(step[inside].mean()) if inside.any() else bundle.sample_period


class NoDriftBaseline(ValueError):
    """No held-out score to set a drift rule's baseline from (every one 0, or none below the line)."""


def drift_rule(scores: np.ndarray) -> DriftRule:
    """The drift rule's baseline from held-out normal scores: the mean log score below the line."""
    below = scores[np.isfinite(scores) & (scores > 0) & (scores < 1.0)]
    if len(below) == 0:
        raise NoDriftBaseline("no held-out window scores below the line to set the drift baseline from")
    return DriftRule(baseline=float(np.mean(np.log(below))))


def threshold_bundle(
    bundle: Bundle,
    channel_pieces: list[np.ndarray],
    data_record: dict,
    method: str = "pot",
    false_alarm_rate: float | None = None,
    false_alerts_per_day: float | None = 1.0,
    rules: AlertRules = CALIBRATION_RULES,
    weigh_channels: bool = True,
    drift: bool = False,
    period: float | None = None,
    starts: list[bool] | None = None,
    terms: list[np.ndarray] | None = None,
) -> Bundle:
    """The bundle with channel weights and a threshold picked from held-out per-channel window
    errors (one ``(n, C)`` array per segment, unit weights).

    data_record: what the errors came from (a data fingerprint), kept in the calibration record.
    period: seconds between readings for counting scored windows a day (:func:`reading_period`;
    None: the bundle's sample period). starts: per piece, whether the daemon starts its windows
    afresh there (``clean_pieces``), where one window over ``raise_at`` times the line raises alone.
    terms: the level term of each piece's windows (``level_fit.window_terms``), for a bundle with a
    level monitor: the term's line is then raised until the score the daemon judges,
    ``max(error / threshold, term)``, raises no more alerts there than the error did
    (``promise.combined_line``).
    """
    spiky = spiky_channels(bundle.training, len(bundle.channels))
    if bundle.level is not None:  # (a line calibrated again starts from the term's fitted limit)
        bundle = replace(bundle, level=replace(bundle.level, calibrated=1.0))
    weights = channel_weights(channel_pieces, spiky) if weigh_channels else None
    weighted = channel_pieces if weights is None else [e * weights for e in channel_pieces]
    pieces = [e.mean(axis=1) for e in weighted]
    bundle = replace(bundle, channel_weights_=weights)
    errors = np.concatenate([p[np.isfinite(p)] for p in pieces]) if pieces else np.empty(0)
    period = period or bundle.sample_period
    per_day = 86400.0 / (period * bundle.hop) if period else None
    window_rate = false_alarm_rate if false_alarm_rate is not None else 1e-3
    threshold, record = pick_threshold(errors, method, window_rate, per_day)
    if false_alarm_rate is None and false_alerts_per_day is not None and per_day:
        threshold, alerts = alert_threshold(pieces, bundle.hop, rules, per_day, false_alerts_per_day, starts,
                                            bundle.alert_hop)
        if bundle.level is not None and terms is not None:
            alerts, factor = combined_line(pieces, terms, threshold, alerts, bundle.hop, rules, bundle.alert_hop)
            bundle = replace(bundle, level=replace(bundle.level, calibrated=factor))
        for unused in ("false_alarm_rate", "params"):  # the window-rate fit's, not what set this line
            record.pop(unused, None)
        record.update(method="alerts", requested_method="alerts", threshold=threshold, alerts=alerts,
                      observed_exceedance=float(np.mean(errors >= threshold)),
                      expected_false_alarms_per_day=alerts["promised_per_day"])  # (capped, as promised)
    record["data"] = data_record
    if bundle.level is not None and record.get("method") != "alerts":  # (a window-rate line, or no period)
        record["level_note"] = "the level term's line is its fitted limit: only a line for false alerts a day " \
                               "calibrates it"
    if (leaders := line_leaders(weighted, bundle.channels)) is not None:
        record["largest_errors"] = leaders
    if drift:
        record["drift"] = drift_rule(errors / threshold).to_dict()
    if weights is not None:
        record["channel_weights"] = (f"1 / mean held-out error per channel, floored at {WEIGHT_FLOOR:g} of the "
                                     f"channels' median and at least {WEIGHT_FLOOR**2:g} of the largest, mean 1"
                                     + (SPIKY_WEIGHTS if spiky is not None and 0 < spiky.sum() < len(spiky) else ""))
    return bundle.with_threshold(threshold, record)
