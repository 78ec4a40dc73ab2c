"""Fit -> calibrate -> bundle: the whole offline pipeline behind ``sensorguard train``.

Data are split by time (train | validation | calibration), the scaler is fit on the training
block only, the autoencoder is trained with Lightning (early stopping on validation loss, best
weights kept), and the threshold is picked on calibration windows the model never saw. Small data
sets shrink the window so each block still holds enough windows; the summary says what was chosen.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, EarlyStopping

from service.bundle import Bundle
from service.model import ModelConfig, default_depth, default_latent
from service.scorer import Scorer, pick_device
from training.calibrate import pick_threshold
from training.data import (
    SensorData,
    WindowDataset,
    choose_window,
    eval_loader,
    split_by_time,
    train_loader,
    window_starts,
)
from training.system import AutoencoderSystem


@dataclass(frozen=True)
class TrainOptions:
    """Everything ``train`` can be told; None means "choose from the data"."""

    window: int | None = None
    latent: int | None = None
    hidden: int = 32
    hop: int | None = None
    max_epochs: int = 40
    patience: int = 4
    batch_size: int = 256
    lr: float = 2e-3
    noise: float = 0.0
    max_windows_per_epoch: int = 16384
    threshold_method: str = "pot"
    false_alarm_rate: float = 1e-3
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    seed: int = 0
    progress: bool = True
    device: str | None = None


@dataclass(frozen=True)
class TrainSummary:
    rows: dict[str, int]
    window: int
    hop: int
    latent: int
    epochs: int
    best_val_loss: float
    threshold: float
    method: str
    false_alarms_per_day: float | None
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    def lines(self) -> list[str]:
        fa = "n/a" if self.false_alarms_per_day is None else f"{self.false_alarms_per_day:g}"
        rows = ", ".join(f"{k} {v}" for k, v in self.rows.items())
        return [
            f"rows per split  {rows}",
            f"window          {self.window} samples (hop {self.hop}, latent {self.latent})",
            f"epochs          {self.epochs} (best validation loss {self.best_val_loss:.4g})",
            f"threshold       {self.threshold:.4g} ({self.method})",
            f"false alarms    ~{fa} window exceedances per day expected on normal data",
            f"time            {self.seconds:.1f} s",
            *[f"note            {n}" for n in self.notes],
        ]


def fit_scaler(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Robust per-channel center (median) and scale (IQR/1.349, falling back to std, then 1).

    Robust statistics keep a few outliers in "normal" training data from squashing the scale.
    """
    center = np.median(values, axis=0)
    q75, q25 = np.percentile(values, [75, 25], axis=0)
    scale = (q75 - q25) / 1.349
    std = values.std(axis=0)
    scale = np.where(scale > 1e-9 * np.maximum(1, np.abs(center)), scale, std)
    scale = np.where(scale > 1e-12, scale, 1.0)
    return center.astype(np.float64), scale.astype(np.float64)


class _KeepBest(Callback):
    """Remember the weights of the best validation epoch (early stopping stops later than that)."""

    def __init__(self) -> None:
        self.best = float("inf")
        self.state: dict | None = None

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loss = trainer.callback_metrics.get("val_loss")
        if loss is not None and not trainer.sanity_checking and float(loss) < self.best:
            self.best = float(loss)
            self.state = copy.deepcopy(pl_module.net.state_dict())


def train_bundle(
    data: SensorData, options: TrainOptions = TrainOptions(), init_state: dict | None = None
) -> tuple[Bundle, TrainSummary]:
    """Train and calibrate a bundle on normal data.

    init_state: weights to start from (warm start from the current model when retraining); the
    architecture must match.
    """
    started = time.perf_counter()
    pl.seed_everything(options.seed, workers=True, verbose=False)
    splits = split_by_time(data, options.split)
    window = choose_window(splits, options.window)
    hop = options.hop or max(1, window // 8)
    latent = options.latent or default_latent(len(data.channels), window)
    config = ModelConfig(
        channels=len(data.channels), window=window, latent=latent, hidden=options.hidden, depth=default_depth(window)
    )
    center, scale = fit_scaler(splits.train.values)

    def dataset(part: SensorData, stride: int = 1) -> WindowDataset:
        return WindowDataset((part.values - center) / scale, part.segments, window, stride)

    train_set = dataset(splits.train)
    n_val = len(window_starts(splits.validation.segments, window))
    val_set = dataset(splits.validation, stride=max(1, n_val // 4096))
    system = AutoencoderSystem(
        channels=config.channels,
        window=window,
        latent=latent,
        hidden=options.hidden,
        depth=config.depth,
        lr=options.lr,
        noise=options.noise,
    )
    if init_state is not None:
        system.net.load_state_dict(init_state)
    keep_best = _KeepBest()
    trainer = _trainer(options, [EarlyStopping("val_loss", patience=options.patience, min_delta=1e-4), keep_best])
    trainer.fit(
        system,
        train_loader(train_set, options.batch_size, options.max_windows_per_epoch, options.seed),
        eval_loader(val_set, 4096),
    )
    state = keep_best.state or system.net.state_dict()
    state = {k: v.detach().cpu().clone() for k, v in state.items()}

    bundle = Bundle(
        channels=data.channels,
        config=config,
        hop=hop,
        center_=center,
        scale_=scale,
        threshold_=1.0,
        state_dict=state,
        sample_period=data.sample_period,
        training={
            **data.fingerprint(),
            "splits": {"train": len(splits.train), "validation": len(splits.validation),
                       "calibration": len(splits.calibration)},
            "epochs": trainer.current_epoch,
            "best_val_loss": keep_best.best,
            "options": {k: v for k, v in options.__dict__.items() if k not in ("progress", "device")},
            "notes": list(data.notes),
        },
    )
    bundle = calibrate_bundle(bundle, splits.calibration, options.threshold_method, options.false_alarm_rate,
                              device=options.device)
    summary = TrainSummary(
        rows={"train": len(splits.train), "validation": len(splits.validation),
              "calibration": len(splits.calibration)},
        window=window,
        hop=hop,
        latent=latent,
        epochs=trainer.current_epoch,
        best_val_loss=keep_best.best,
        threshold=bundle.threshold_,
        method=bundle.calibration["method"],
        false_alarms_per_day=bundle.calibration["expected_false_alarms_per_day"],
        seconds=time.perf_counter() - started,
        notes=data.notes,
    )
    return bundle, summary


def calibrate_bundle(
    bundle: Bundle, data: SensorData, method: str, false_alarm_rate: float, device: str | None = None
) -> Bundle:
    """Re-pick the threshold from the errors of ``data``'s windows (held-out normal data)."""
    if tuple(data.channels) != tuple(bundle.channels):
        raise ValueError(f"data channels {list(data.channels)} do not match the bundle's {list(bundle.channels)}")
    scores = Scorer(bundle, device=device).score_series(data.values, data.segments)
    errors = scores.error[np.isfinite(scores.error)]
    if len(errors) < 10:
        raise ValueError(
            f"calibration data hold {len(errors)} windows of {bundle.window} rows; need at least 10"
        )
    per_day = 86400.0 / (bundle.sample_period * bundle.hop) if bundle.sample_period else None
    threshold, record = pick_threshold(errors, method, false_alarm_rate, per_day)
    record["data"] = data.fingerprint()
    return bundle.with_threshold(threshold, record)


def _trainer(options: TrainOptions, callbacks: list[Callback]) -> pl.Trainer:
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*num_workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    device = pick_device(options.device)
    return pl.Trainer(
        max_epochs=options.max_epochs,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=options.progress,
        deterministic=True,
        num_sanity_val_steps=0,
    )
