"""A bundle directory read back: :func:`load_bundle`, and everything it checks before a bundle is used.

Split from :mod:`sensorguard.service.bundle` (what a bundle is, and how it is written). Nothing read
from disk is trusted: ``bundle.json`` is validated field by field, ``model.pt`` is read with
``weights_only=True`` (loading never runs code), must be a plain state_dict of finite tensors, and
must fit the network ``bundle.json`` describes, checked on the meta device before anything is built.
Whatever is wrong is one :class:`~sensorguard.service.bundle.BundleError` naming the file and the
problem; ``transient`` when it may pass with the files unchanged (:func:`transient_error`).
"""

from __future__ import annotations

import json
import math
import os
import warnings
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sensorguard.service.alerts import divides_hop
from sensorguard.service.bundle import (
    FORMAT_VERSION,
    META_FILE,
    MIN_THRESHOLD,
    READABLE_VERSIONS,
    WEIGHTS_FILE,
    Bundle,
    BundleError,
    calibrated_raise_at,
)
from sensorguard.service.cleaning import CleaningPolicy
from sensorguard.service.drift import DriftRule
from sensorguard.service.json_values import is_number, number, whole
from sensorguard.service.level import LevelMonitor
from sensorguard.service.logs import first_line
from sensorguard.service.model import ConvAutoencoder, ModelConfig
from sensorguard.service.sensors import SensorRules


def load_bundle(directory: str | os.PathLike) -> Bundle:
    """Load and validate a bundle directory; raise :class:`BundleError` naming the problem."""
    path = Path(directory)
    if path.is_file():  # a swap of the bundle and the data, or the bundle's own file (a README walk)
        hint = f"give its directory, {path.parent}" if path.name == META_FILE else "the directory train wrote"
        raise BundleError(f"{path} is a file, not a bundle directory ({hint})")
    if not path.is_dir():
        raise BundleError(f"bundle directory not found: {path}")
    meta = _read_meta(path / META_FILE)
    bundle = _bundle_from_meta(meta, path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():  # (a folder in its place was "missing": a walk)
        raise BundleError(f"{weights}: {_not_file(weights) or 'missing model weights'}")
    expected = _weights_bytes(bundle.config)  # read whole below: a wrong huge file must not exhaust memory
    try:
        size = weights.stat().st_size
    except OSError as exc:  # (replaced meanwhile: a registry swap)
        raise BundleError(f"{weights}: {first_line(exc, 200)}", transient=transient_error(exc)) from None
    if expected is not None and size > 4 * expected + (1 << 20):
        raise BundleError(f"{weights}: {size} bytes, far more than the {expected} the network of bundle.json holds")
    if (entry := _failed_crc(weights)) is not None:
        raise BundleError(f"{weights}: damaged ({entry} fails its CRC-32 check: the file changed after it was "
                          "written; restore it from a backup, or train again)")
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle headers; the error below says it all
            warnings.simplefilter("ignore")
            state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses pickled code; torch raises several types
        # (a file of other bytes gives a KeyError of a number: "damaged (174812789)", a walk)
        why = "not a file torch.save wrote" if isinstance(exc, KeyError) else first_line(exc, 200)
        transient = transient_error(exc)
        if transient and isinstance(exc, OSError) and _not_an_archive(weights):
            # (torch says a model.pt cut short as "[Errno 22] Invalid argument", an I/O error: retried with
            # the files unchanged, an error line each time, for good: a walk)
            why, transient = "cut short, or not a file torch.save wrote: no complete zip archive", False
        raise BundleError(f"{weights}: not a plain weights file, or damaged ({why})", transient=transient) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BundleError(f"{weights}: expected a state_dict of tensors")
    try:  # shapes checked on the meta device: a network sized by bundle.json alone could be any size
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")  # copying into meta tensors is a no-op, said once per tensor
            ConvAutoencoder(bundle.config).load_state_dict(state, strict=True)
    except Exception as exc:  # noqa: BLE001 - a shape or size torch cannot build raises more than RuntimeError
        raise BundleError(f"{weights}: weights do not match bundle.json ({first_line(exc, 200)})") from None
    for key, tensor in state.items():  # as the model will hold them: float64's 1e300 is inf in float32
        if tensor.is_floating_point() and not torch.isfinite(tensor.float()).all():
            raise BundleError(f"{weights}: non-finite values in {key} (as float32)")
    return replace(bundle, state_dict=state)


def _failed_crc(weights: Path) -> str | None:
    """The first entry of ``model.pt`` (a zip archive, as ``torch.save`` writes it) whose bytes fail
    the CRC-32 the archive records for them, or None (all pass, none recorded, or no archive to check: ``torch.load``
    then says what the file is). torch reads the stored tensors without checking them: a walk
    flipped 2,000 bytes inside a served version's ``model.pt``, the daemon took it as "its files
    edited", swapped it in, and every asset raised an alert at score inf ("top channels temp_in nan%")."""
    try:
        with zipfile.ZipFile(weights) as archive:
            for info in archive.infolist():
                if info.CRC == 0:  # none recorded: torch.serialization.set_crc32_options(False) writes 0 for
                    continue  # every entry (a valid file, which torch loads; testzip called it damaged)
                try:
                    with archive.open(info) as entry:
                        while entry.read(1 << 20):  # (the CRC is checked as its end is read)
                            pass
                except zipfile.BadZipFile:
                    return info.filename
    except Exception:  # noqa: BLE001 - not a zip, cut short, unreadable: torch.load names the problem
        return None
    return None


def _not_an_archive(weights: Path) -> bool:
    """Whether ``model.pt`` reads, but as no zip archive (cut short, other bytes); False when it
    cannot be read (an I/O error, which may pass)."""
    try:
        with zipfile.ZipFile(weights):
            return False
    except zipfile.BadZipFile:
        return True
    except Exception:  # noqa: BLE001 - unreadable: not this question
        return False


def _weights_bytes(config: ModelConfig) -> int | None:
    """The float32 bytes of the network ``config`` describes (built on the meta device: no memory),
    or None when it cannot be built (the shape check below names the problem)."""
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            return 4 * sum(t.numel() for t in ConvAutoencoder(config).state_dict().values())
    except Exception:  # noqa: BLE001 - any failure is reported by the shape check
        return None


def transient_error(exc: BaseException) -> bool:
    """An error that may pass with the files unchanged: I/O (not a missing file or a folder where a
    file belongs: those wait for the files to change) or memory."""
    if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError | PermissionError):
        return False
    return isinstance(exc, OSError | MemoryError)


def _not_file(path: Path) -> str | None:
    """What is in the place of a bundle's file that is not one: a folder or other, or None (none)."""
    if path.is_dir():
        return "a folder, not a file"
    return "not a regular file" if path.exists() else None


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BundleError(f"{path}: {_not_file(path) or 'missing'} (is this a sensorguard bundle?)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, MemoryError) as exc:  # ValueError: JSON's,
        # or an integer of over 4,300 digits; RecursionError: nesting too deep
        raise BundleError(f"{path}: unreadable ({first_line(exc, 200)})", transient=transient_error(exc)) from None
    if not isinstance(meta, dict):
        raise BundleError(f"{path}: expected a JSON object")
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        raise BundleError(f"{path}: unsupported format_version {version!r} (this build reads 1 to {FORMAT_VERSION})")
    return meta


def _bundle_from_meta(meta: dict[str, Any], path: Path) -> Bundle:
    where = path / META_FILE
    try:
        channels = tuple(meta["channels"])
        ignored = meta.get("ignored_columns") or []
        arch = dict(meta["architecture"])
        config = ModelConfig(**arch)
        center = np.asarray(meta["scaler"]["center"], dtype=np.float64)
        scale = np.asarray(meta["scaler"]["scale"], dtype=np.float64)
        threshold = number(meta["threshold"], "threshold")  # (float() read a JSON true as 1.0)
        hop = whole(meta["hop"], "hop")
        window = whole(meta["window"], "window")
        focus = whole(meta.get("focus") or 0, "focus")
        alert_hop = whole(meta.get("alert_hop") or 0, "alert_hop")
        raw_weights = meta.get("channel_weights")
        weights = None if raw_weights is None else np.asarray(raw_weights, dtype=np.float64)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise BundleError(f"{where}: invalid or missing field ({first_line(exc, 200)})") from None
    problems = []
    if not channels or not all(isinstance(c, str) and c for c in channels) or len(set(channels)) != len(channels):
        problems.append("channels must be unique non-empty names")
    if not isinstance(ignored, list) or not all(isinstance(c, str) and c not in channels for c in ignored):
        problems.append("ignored_columns must be a list of names that are not channels")
    if config.channels != len(channels):
        problems.append(f"architecture has {config.channels} channels, channel list has {len(channels)}")
    if window != config.window:
        problems.append(f"window {window} differs from architecture window {config.window}")
    if center.shape != (len(channels),) or scale.shape != (len(channels),):
        problems.append("scaler length does not match the channel list")
    elif not (np.isfinite(center).all() and np.isfinite(scale).all() and (scale > 0).all()):
        problems.append("scaler values must be finite with positive scale")
    if not (math.isfinite(threshold) and threshold >= MIN_THRESHOLD):  # (1e-320: every error scored inf)
        problems.append(f"threshold must be a number of at least {MIN_THRESHOLD:g}, got {threshold}")
    for name in ("calibration", "training", "metrics"):
        if not isinstance(meta.get(name) or {}, dict):
            problems.append(f"{name} must be an object")
    if hop < 1:  # (a longer hop than the window, which train refuses now, loads: bundles saved so before)
        problems.append(f"hop must be >= 1, got {hop}")
    period = meta.get("sample_period")
    if period is not None and not (is_number(period) and 0 < period < 1e300):  # (0 read as none: checks off)
        problems.append(f"sample_period must be a positive number of seconds or null, got {str(period)[:40]}")
    if not divides_hop(alert_hop, hop):
        problems.append(f"alert_hop must be 0 or a divisor of the hop ({hop}), got {alert_hop}")
    if not 0 <= focus <= window:
        problems.append(f"focus must be between 0 and the window ({window}), got {focus}")
    if weights is not None and (weights.shape != (len(channels),) or not (np.isfinite(weights).all()
                                                                           and (weights > 0).all())):
        problems.append("channel_weights must be one positive number per channel")
    try:
        calibrated_raise_at(meta.get("calibration") or {})
    except (TypeError, ValueError) as exc:
        problems.append(str(exc))
    try:
        DriftRule.from_dict((meta.get("calibration") or {}).get("drift"))
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        problems.append(f"calibration.drift is not a usable drift rule ({first_line(exc, 200)})")
    cleaning = CleaningPolicy()
    try:
        cleaning = CleaningPolicy.from_dict(meta.get("cleaning"), meta.get("sample_period") or None)
    except (TypeError, ValueError, AttributeError) as exc:
        problems.append(f"cleaning is not a usable policy ({first_line(exc, 200)})")
    sensors = None
    try:
        sensors = SensorRules.from_dict(meta.get("sensors"), channels, cleaning.fill_limit)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        problems.append(f"sensors is not a usable set of sensor limits ({first_line(exc, 200)})")
    level = None
    try:
        level = LevelMonitor.from_dict(meta.get("level"), channels)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        problems.append(f"level is not a usable level monitor ({first_line(exc, 200)})")
    if problems:
        raise BundleError(f"{where}: " + "; ".join(problems))
    return Bundle(
        channels=channels,
        config=config,
        hop=hop,
        center_=center,
        scale_=scale,
        threshold_=threshold,
        state_dict={},
        sample_period=float(period) if period else None,
        regular=cleaning.regular,
        fill_limit=cleaning.fill_limit,
        jitter=cleaning.jitter,
        restart_gap_s=cleaning.gap_s,
        sensors=sensors,
        level=level,
        focus=focus,
        channel_weights_=weights,
        alert_hop=alert_hop,
        ignored_columns=tuple(ignored),
        calibration=dict(meta.get("calibration") or {}),
        training=dict(meta.get("training") or {}),
        metrics=dict(meta.get("metrics") or {}),
        created=str(meta.get("created", "")),
        path=path,
    )
