"""The model bundle (one directory with everything needed to score) and the versioned registry.

A bundle is ``model.pt`` (a state_dict, loaded with ``weights_only=True`` so loading never runs
code) plus ``bundle.json`` (channels, window, scaler, architecture, threshold, calibration record,
training fingerprint). Everything read from disk is validated when it is loaded
(:mod:`sensorguard.service.bundle_loading`), so a corrupt or lying bundle is refused with one clear
:class:`BundleError` instead of failing later inside the scorer.

The versioned registry of bundles lives in :mod:`sensorguard.service.registry`.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sensorguard import __version__
from sensorguard.service.cleaning import CleaningPolicy
from sensorguard.service.drift import DriftRule
from sensorguard.service.durable import fsync_path, temp_folder, write_durably
from sensorguard.service.json_values import is_number
from sensorguard.service.level import LevelMonitor
from sensorguard.service.model import ConvAutoencoder, ModelConfig
from sensorguard.service.sensors import SensorRules

FORMAT_VERSION = 6  # 2: linear and focus; 3: channel_weights; 4: alert_hop; 5: level; 6: level.q_limit; older load
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6)
WEIGHTS_FILE = "model.pt"
META_FILE = "bundle.json"
MIN_THRESHOLD = 1e-30  # errors are squared standardized units, clipped: any line above this scores finite


class BundleError(Exception):
    """A bundle or registry entry that cannot be used; the message says why in one line.

    ``transient``: it came from an I/O error (or memory), which may pass with the files unchanged;
    the hot swap tries such a version again.
    """

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class Bundle:
    """A trained, calibrated model: what ``bundle.json`` and ``model.pt`` hold, validated.

    ``center_`` and ``scale_`` standardize raw readings per channel (fit on training data only);
    ``threshold_`` is the reconstruction error that maps to score 1.0. ``focus`` is how many of a
    window's newest samples its error averages over (0: all of them, as bundles before it did).
    ``channel_weights_`` multiply each channel's error before the mean over channels (None: all 1,
    as bundles before format 3 did); calibration sets them so every channel's typical held-out
    error counts the same. ``alert_hop``: while an asset's alert is up its windows are judged
    every ``alert_hop`` samples instead of every ``hop``, so the alert ends soon after the fault
    does (0: every ``hop``, as bundles before format 4 did; it divides ``hop``, so every window
    judged at ``hop`` is judged at ``alert_hop`` too). ``ignored_columns``: the training file's
    columns that ``train`` left out of the channels (constant, label-like, text, not named in
    ``--channels``...): a live feed that mirrors that file sends them, and their values are ignored
    instead of refusing every reading as ``unknown_channel`` (found in a walk); other names still
    are refused (a typo).
    """

    channels: tuple[str, ...]
    config: ModelConfig
    hop: int
    center_: np.ndarray
    scale_: np.ndarray
    threshold_: float
    state_dict: dict[str, torch.Tensor]
    sample_period: float | None = None
    regular: bool = True  # with sample_period, fill_limit, jitter, restart_gap_s: the cleaning policy
    fill_limit: int = 5
    jitter: float = 0.5  # (service.cleaning)
    restart_gap_s: float | None = None
    sensors: SensorRules | None = None  # sensor-fault limits per channel (service.sensors); None: not checked
    level: LevelMonitor | None = None  # the level term's monitor (service.level); None: no term, as before format 5
    focus: int = 0
    channel_weights_: np.ndarray | None = None
    alert_hop: int = 0
    ignored_columns: tuple[str, ...] = ()  # the training file's columns left out of the channels (see the docstring)
    calibration: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    name: str = ""
    version: str = ""
    path: Path | None = None

    @property
    def window(self) -> int:
        return self.config.window

    @property
    def alert_step(self) -> int:
        """Samples between judged windows while an asset's alert is up (``alert_hop``, else ``hop``)."""
        return self.alert_hop or self.hop

    @property
    def scored_samples(self) -> int:
        """Samples at the end of each window whose reconstruction error makes its score."""
        return self.focus or self.config.window

    @property
    def cleaning(self) -> CleaningPolicy:
        """How readings are put on the sample grid and filled, live and offline alike."""
        return CleaningPolicy(self.sample_period, self.regular, self.fill_limit, jitter=self.jitter,
                              gap_s=self.restart_gap_s)

    @cached_property
    def drift_rule(self) -> DriftRule | None:
        """The calibrated drift rule (``service.drift``); None when the bundle has none (drift off)."""
        return DriftRule.from_dict(self.calibration.get("drift"))

    @cached_property
    def raise_at(self) -> float:
        """The score at which one window raises at once, as its line was calibrated
        (``calibration.alerts.raise_at``, :func:`calibrated_raise_at`); inf: never."""
        return calibrated_raise_at(self.calibration)

    @property
    def promise(self) -> dict[str, Any]:
        """What its line was calibrated for, as ``TrainOptions`` names it: ``drift``, and
        ``false_alerts_per_day`` or (the advanced window rate) ``false_alarm_rate`` with its
        ``threshold_method`` (``calibrate`` and ``retrain`` keep them)."""
        cal = self.calibration
        own: dict[str, Any] = {"drift": self.drift_rule is not None}
        target, rate = (cal.get("alerts") or {}).get("target_per_day"), cal.get("false_alarm_rate")
        if cal.get("method") == "alerts":
            if isinstance(target, int | float) and target > 0:
                own["false_alerts_per_day"] = float(target)
        elif isinstance(rate, int | float) and 0 < rate < 1:
            own["false_alarm_rate"] = float(rate)
            if cal.get("requested_method") in ("quantile", "pot", "mean_std"):
                own["threshold_method"] = cal["requested_method"]
        return own

    def with_threshold(self, threshold: float, calibration: dict[str, Any]) -> Bundle:
        """A copy with a new threshold and calibration record (``sensorguard calibrate``)."""
        return replace(self, threshold_=float(threshold), calibration=calibration)

    def build_model(self) -> ConvAutoencoder:
        net = ConvAutoencoder(self.config)
        net.load_state_dict(self.state_dict)
        return net.eval()

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "sensorguard_version": __version__,
            "channels": list(self.channels),
            "ignored_columns": list(self.ignored_columns),
            "window": self.config.window,
            "hop": self.hop,
            "alert_hop": self.alert_hop,
            "sample_period": self.sample_period,
            "cleaning": self.cleaning.to_dict(),
            "sensors": None if self.sensors is None else self.sensors.to_dict(),
            "level": None if self.level is None else self.level.to_dict(),
            "focus": self.focus,
            "channel_weights": None if self.channel_weights_ is None else self.channel_weights_.tolist(),
            "scaler": {"center": self.center_.tolist(), "scale": self.scale_.tolist()},
            "architecture": self.config.to_dict(),
            "threshold": self.threshold_,
            "calibration": self.calibration,
            "training": self.training,
            "metrics": self.metrics,
            "created": self.created or datetime.now(UTC).isoformat(timespec="seconds"),
        }


def check_target(directory: str | os.PathLike) -> Path:
    """``directory`` as a place a bundle may be written: absent, empty, or a bundle (replaced);
    BundleError for anything else. ``train`` asks before it trains, so a wrong ``--out`` is one
    line at once, not after the training (found by a README walk)."""
    target = Path(directory)
    if target.exists() and not (target.is_dir() and ((target / META_FILE).is_file() or not any(target.iterdir()))):
        raise BundleError(f"{target}: exists and is not a bundle directory; not replaced (choose another --out)")
    return target


def save_bundle(bundle: Bundle, directory: str | os.PathLike) -> Path:
    """Write ``bundle`` to ``directory`` atomically: built in a sibling temp dir, then renamed.

    An existing bundle at ``directory`` is replaced; readers see the old one or the new one (for an
    instant, neither: a reload then is refused and retried). Anything else already there is refused,
    never replaced: ``train --out`` pointed at a data folder must not delete it.
    """
    target = check_target(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder(target.parent, f".{target.name}.")
    try:
        write_files(bundle, tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def write_files(bundle: Bundle, directory: Path) -> None:
    """Write the bundle's files into ``directory`` (a fresh temporary folder) and fsync them. The
    weights are serialized in memory and written by Python: ``torch.save`` to a path told a full disk
    as ``[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0`` (train --out, retrain
    and the registry said that, as an internal error: a walk); an OSError names the file and the
    cause (``No space left on device``)."""
    weights = io.BytesIO()
    torch.save(bundle.state_dict, weights)
    path = directory / WEIGHTS_FILE
    try:
        with open(path, "wb") as fh:
            fh.write(weights.getbuffer())
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:  # (a write's error names no file: "error: No space left on device", where?)
        if exc.filename or exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    meta = json.dumps(bundle.to_json(), indent=2, sort_keys=True)
    write_durably(directory / META_FILE, meta + "\n")
    fsync_path(directory)


def calibrated_raise_at(calibration: Any) -> float:
    """``calibration.alerts.raise_at``: the score at which one window raises an alert at once, as
    the line was calibrated with it (``training.promise``); inf when absent (a bundle calibrated
    before the rule, or without a false-alert promise: it raises on ``raise_after`` in a row alone,
    so its promise holds as stated). Raises ValueError for a value that is not a number of at
    least 1: a line's promise must not change without a word."""
    alerts = calibration.get("alerts") if isinstance(calibration, dict) else None
    if alerts is None:
        return math.inf
    if not isinstance(alerts, dict):
        raise ValueError("calibration.alerts must be an object")
    value = alerts.get("raise_at")
    if value is None:
        return math.inf
    try:
        number = float(value) if is_number(value) else math.nan
    except OverflowError:  # a JSON integer of 400 digits
        number = math.inf
    if not (math.isfinite(number) and number >= 1.0):
        raise ValueError(f"calibration.alerts.raise_at must be a finite number of at least 1, got {value!r:.40}")
    return number
