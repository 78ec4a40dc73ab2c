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

from sensorguard.service.alerts import divides_hop
from sensorguard.service.bundle import Bundle
from sensorguard.service.cleaning import CleaningPolicy
from sensorguard.service.model import ModelConfig, default_depth, default_latent
from sensorguard.service.sensors import learn_sensor_rules
from sensorguard.training.crossfit import (
    CROSSFIT_MAX_ROWS,
    FOLDS,
    START_SHARE,
    cross_fit,
    fold_masks,
    scale_spread,
    start_share,
)
from sensorguard.training.data import SensorData
from sensorguard.training.fit import fit_network
from sensorguard.training.level_fit import fit_level
from sensorguard.training.line import NoDriftBaseline, calibrate_bundle, reading_period, threshold_bundle
from sensorguard.training.linear import naive_error, pca_error
from sensorguard.training.scaling import spiky_scale
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
    values = len(data.channels) * window  # a window's values: the bottleneck must be narrower
    latent = options.latent or min(default_latent(len(data.channels), window), max(values - 1, 1))
    if latent >= values:  # no bottleneck: it copies every fault (100,000 trained for minutes)
        raise ValueError(f"--latent {latent} is no bottleneck: a window holds {values} values "
                         f"({len(data.channels)} channels x {window} samples); give fewer" if options.latent else
                         f"a window of {window} samples of {len(data.channels)} channel(s) is too small to compress: "
                         "give a longer --window")
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
