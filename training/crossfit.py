"""Cross-fitted calibration errors: every normal row scored by a model that never saw it.

A few hundred rows split 60/20/20 leave a calibration block of a few hours, one slice of the
process: its errors say little about the rest of the day (on Tennessee Eastman the last 100 of 500
normal rows put the threshold below the median error of the next day's normal data). Cross-fitting
uses all of it: the rows are cut into ``FOLDS`` contiguous blocks in time, and each block is scored
by a network fit on the other blocks (same architecture and linear rank as the served model, its
own scaler and principal components, the number of epochs the main model's early stopping chose).
The out-of-fold errors cover every operating state in the data, and each comes from a model
that did not see that period, as the served model will not see tomorrow. A fold choosing its own
rank was calibrating another model: on 400 simulated rows two folds of five kept 3 components
where the served model kept 2, their lower errors set the line, and 28 % of the next day's normal
rows alerted.

On small data the served model is one of the calibrated ones: the last fold's, fit on the first
80 % of the rows in time (the validation block included) for the epochs early stopping chose, its
out-of-fold errors the last 20 %. The early-stopped model of the 60 % training block, served
before, was fit on fewer rows than the models the line was calibrated on, so its normal errors
ran higher than the line assumed: measured (docs/benchmarks.md, session 28), serving the fold
lowered the false alarms everywhere (TEP's pre-fault rows 4.4 % -> 1.3 %, the recordings
27.5 % -> 13.5 %) at about the same detection (TEP 0.936 -> 0.932). It costs ``FOLDS`` extra fits
(about five times the main fit: 10,000 rows took 214 s on a busy 2-core machine), so it runs on
small data only (``CROSSFIT_MAX_ROWS``, which covers the 300-2,000 rows of a new machine); larger
sets calibrate on their calibration block.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np
import torch

from sensorguard.service.bundle import Bundle
from sensorguard.service.model import ConvAutoencoder
from sensorguard.service.scorer import Scorer, segment_bounds
from sensorguard.service.series_faults import window_faults
from sensorguard.training.calibrate import largest_windows
from sensorguard.training.data import SensorData
from sensorguard.training.fit import Fit, fit_network, scaler_apply
from sensorguard.training.level_fit import fit_level, window_terms
from sensorguard.training.linear import pca_error
from sensorguard.training.splits import WindowDataset

FOLDS = 5
CROSSFIT_MAX_ROWS = 5_000


class CrossFit(NamedTuple):
    """What :func:`cross_fit` returns (a tuple: ``pieces, starts, fit, losses, scales, terms, folds``)."""

    pieces: list[np.ndarray]
    starts: list[bool]
    fit: Fit
    losses: tuple[float, float]
    scales: np.ndarray
    terms: list[np.ndarray] | None  # the level term of each piece's windows (None: no monitor)
    folds: list[int]  # the time fold each piece was held out in (0: the earliest rows)


def fold_masks(times: np.ndarray, folds: int = FOLDS) -> list[np.ndarray]:
    """Row masks of ``folds`` contiguous time blocks of equal row count (all machines together)."""
    ordered = np.sort(times)
    n = len(ordered)
    cuts = [ordered[min(int(round(n * k / folds)), n - 1)] for k in range(1, folds)]
    edges = [-np.inf, *cuts, np.inf]
    return [(times >= edges[k]) & (times < edges[k + 1]) for k in range(folds)]


def cross_fit(
    data: SensorData, template: Bundle, options: Any, epochs: int, folds: int = FOLDS,
    init_state: dict | None = None, shared_scale: np.ndarray | None = None,
) -> CrossFit:
    """Per-channel window errors ``(n, C)`` of every fold from a network fit on the others (unit
    channel weights; one array per segment), whether each begins a segment of ``data`` (not a
    fold's cut: :func:`clean_pieces`), the last fold's fit (the network of the first
    ``folds - 1`` blocks in time, which ``train`` serves on small data), its
    :func:`held_out_losses` on the last block, every fold's scale ``(folds, C)``
    (:func:`scale_spread`) and, when ``template`` has a level monitor, each window's level term
    ``(n,)`` beside its errors, from a monitor fitted on the other folds (``level_fit.window_terms``).

    Each fold's network starts where the main one did (``init_state`` for a warm start, else the
    PCA start) and trains for the epochs the main fit kept, so it is the same recipe minus the fold.
    ``shared_scale`` (``fit_network``): the spiky channels' one scale, the same in every fold.
    """
    pieces: list[np.ndarray] = []
    starts: list[bool] = []
    terms: list[np.ndarray] = []
    piece_folds: list[int] = []
    fit: Fit | None = None
    held = data
    scales = []
    learned = data.learned()  # false alarms acknowledged: every fold trains on them, none is scored on them
    for k, mask in enumerate(fold_masks(data.times, folds)):
        held, rest = data.take(mask & ~learned), data.take(~mask | learned)
        fit = fit_network(rest, None, template.config, options, epochs=epochs, init_state=init_state,
                          rank=template.config.linear, shared_scale=shared_scale)
        scales.append(fit.scaler.scale_)
        bundle = replace(template, config=fit.config, center_=fit.scaler.center_, scale_=fit.scaler.scale_,
                         threshold_=1.0, state_dict=fit.state, channel_weights_=None)
        error = Scorer(bundle, device=options.device).score_series(held.values, held.segments).channel_error
        term = None
        if template.level is not None:  # (its own components and limit, as the served one has)
            term = window_terms(fit_level(rest.values), held.values, held.segments, template.scored_samples)
        held_pieces, held_terms, held_starts, _ = clean_pieces_beside(error, term, held, template.window)
        terms.extend(held_terms or [])
        pieces.extend(held_pieces)
        starts.extend(held_starts)
        piece_folds.extend([k] * len(held_pieces))
    assert fit is not None  # folds >= 1
    return CrossFit(pieces, starts, fit, held_out_losses(fit, held), np.array(scales), terms or None, piece_folds)


START_SHARE = 0.75  # of the largest held-out windows in the earliest fold: the line is the start's (5 folds: 0.2 even)


def start_share(pieces: list[np.ndarray], folds: list[int]) -> tuple[float, int]:
    """The share of the largest held-out window errors (``max(20, 1 %)`` of the windows, as
    ``calibrate.line_leaders`` counts them; ``pieces`` weighted as the line weighed them, a
    window's error the mean over its channels) held out in the earliest time fold (all machines'
    rows together), and how many windows were counted (0: none finite).

    Why: a start-up or warm-up in the training rows is held out in the first fold and rebuilt by
    a model of the settled rows; its errors then lead the tail the line is extrapolated from,
    though the served model saw the warm-up. A walk's warming temperatures put the line 5 times
    above the served model's largest score on fresh normal rows, and two clear faults went unseen
    (docs/benchmarks.md, session 54). Leaving that fold out of the line broke other sets, so the
    train summary says it instead, with what to do."""
    if not pieces:
        return 0.0, 0
    means = np.concatenate([np.asarray(p, dtype=np.float64).mean(axis=1) for p in pieces])
    first = np.concatenate([np.full(len(p), k == 0) for p, k in zip(pieces, folds, strict=True)])
    finite = np.isfinite(means)
    top = largest_windows(means[finite])
    return (float(first[finite][top].mean()), len(top)) if len(top) else (0.0, 0)


SCALE_SPREAD = 1.5  # fold scales this far apart: a channel's squared errors differ 2.25x between folds


def scale_spread(fold_scales: np.ndarray, channels: tuple[str, ...]) -> tuple[list[float], str | None]:
    """Per channel, the largest fold scale over the smallest (``bundle.json``: ``training.scaling.
    fold_scale_ratio``), and a note naming the channels where it exceeds ``SCALE_SPREAD``.

    Each fold measures errors in its own scaler's units, and the line pools them. Where the rows
    do not pin a channel's spread (a counter whose standard deviation comes from ten spikes, a
    plant that wanders through a few hundred rows), the units differ from fold to fold and from
    the model served, so the promise is less certain than its interval says: on simulated servers
    whose spiking counters differed 1.6-3.9x between folds, 3.2 false alerts a day came against 1
    promised (docs/benchmarks.md, session 41; such counters now get one scale in every fold,
    ``scaling.spiky_scale``); TEP's channels differ at most 1.33x and keep it.

    >>> ratio, note = scale_spread(np.array([[1.0, 1.0], [1.1, 3.0]]), ("temp", "errors"))
    >>> ratio, note.split(":")[0]
    ([1.1, 3.0], 'the scale of 1 of 2 channels differs more than 1.5x between the cross-fitting folds (errors 3.00x)')
    """
    if len(fold_scales) < 2:
        return [1.0] * len(channels), None
    ratio = fold_scales.max(axis=0) / fold_scales.min(axis=0)
    wide = [j for j in np.argsort(-ratio, kind="stable") if ratio[j] > SCALE_SPREAD]
    rounded = [round(float(r), 3) for r in ratio]
    if not wide:
        return rounded, None
    named = ", ".join(f"{channels[j]} {ratio[j]:.2f}x" for j in wide[:3]) + (
        f" and {len(wide) - 3} more" if len(wide) > 3 else "")
    return rounded, (f"the scale of {len(wide)} of {len(channels)} channels differs more than {SCALE_SPREAD:g}x "
                     f"between the cross-fitting folds ({named}): the training rows do not pin their spread (a "
                     "few spikes, a wander), so train's line pooled their errors in unlike units and is less "
                     "certain than its calibration says; train on more normal data that shows their spikes or "
                     "wander")


def held_out_losses(fit: Fit, held: SensorData) -> tuple[float, float]:
    """Mean squared error over the windows of ``held`` (rows ``fit`` never saw) of the fitted
    network and of its PCA start; NaN without a full window.

    The early-stopped model keeps its PCA start unless training beats it on validation; the fold
    served on small data trains for the chosen epochs with no such check, so ``train`` compares
    the two on the fold's own held-out rows and says so when the start was better.
    """
    window = fit.config.window
    standardized = scaler_apply(fit.scaler, held.values)
    dataset = WindowDataset(standardized, held.segments, window)
    if not len(dataset):
        return math.nan, math.nan
    windows = dataset.__getitems__(list(range(len(dataset))))
    net = ConvAutoencoder(fit.config)
    net.load_state_dict(fit.state)
    net.eval()
    with torch.inference_mode():
        served = float(((net(windows) - windows) ** 2).mean())
    x = windows.numpy()
    # the start without a linear path predicts the center, 0 in standardized units (zero_conv_output)
    return served, pca_error(fit.start, x) if fit.start.rank else float(np.mean(x.astype(np.float64) ** 2))


def out_of_fold_errors(
    data: SensorData, template: Bundle, options: Any, epochs: int, folds: int = FOLDS,
    init_state: dict | None = None,
) -> list[np.ndarray]:
    """The out-of-fold errors of :func:`cross_fit` alone."""
    return cross_fit(data, template, options, epochs, folds, init_state).pieces


def clean_pieces(
    channel_error: np.ndarray, data: SensorData, window: int
) -> tuple[list[np.ndarray], list[bool], int]:
    """``(n, C)`` window errors cut into the runs of each segment whose windows hold no open sensor
    fault (a faulted window is no clean normal data; the windows either side of one are not
    consecutive), whether each run starts where the daemon would start its windows afresh (right
    after a gap in the readings: ``SensorData.fresh_starts``), and how many windows were left out."""
    faulty = np.zeros(len(data), dtype=bool)
    if data.faulted is not None:
        faulty = window_faults(data.faulted, data.segments, window).any(axis=1)
        faulty &= np.isfinite(channel_error).all(axis=1)
    fresh = data.fresh_starts()
    pieces, starts = [], []
    for a, b in segment_bounds(len(data), data.segments):
        for lo, hi in _clean_runs(faulty[a:b]):
            pieces.append(channel_error[a + lo: a + hi])
            starts.append(lo == 0 and bool(fresh[a]))
    return pieces, starts, int(faulty.sum())


def clean_pieces_beside(
    channel_error: np.ndarray, terms: np.ndarray | None, data: SensorData, window: int
) -> tuple[list[np.ndarray], list[np.ndarray] | None, list[bool], int]:
    """:func:`clean_pieces` with each window's level term ``(n,)`` cut beside its errors (None: no
    term): ``(pieces, term pieces or None, starts, left out)``. The term is NaN where the errors are,
    so it changes no cut."""
    if terms is None:
        pieces, starts, left_out = clean_pieces(channel_error, data, window)
        return pieces, None, starts, left_out
    beside = np.where(np.isfinite(channel_error).all(axis=1), terms, np.nan)
    pieces, starts, left_out = clean_pieces(np.column_stack([channel_error, beside]), data, window)
    return [p[:, :-1] for p in pieces], [p[:, -1] for p in pieces], starts, left_out


def _clean_runs(faulty: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of each run of rows that are not ``faulty``."""
    edges = np.flatnonzero(np.diff(np.r_[True, faulty, True].astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True) if b > a]
