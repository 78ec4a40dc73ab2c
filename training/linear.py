"""PCA, the linear special case of the autoencoder: its start, and the yardsticks it must beat.

The autoencoder's linear path starts at the principal components of the standardized training rows
(``pca_start``). Its rank follows Kaiser's rule: keep the components that carry more variance than
the average channel that varies in training, at least one and fewer than those channels, so the
path is a true bottleneck (a rank-C projection would copy every fault).

Why not the other classic rule, the components explaining 90 % of the variance: on weakly
correlated channels that is nearly every channel (5 of 8 on short simulated recordings), so the
path copies them and a shift inside the copied directions never shows as error. Measured on every
set of ``bench/detection.py`` (docs/benchmarks.md, session 28), both with the folds at the served
rank: the short recordings rank better (mean AUC 0.648 -> 0.701, alert F1 0.33 -> 0.46),
Tennessee Eastman (rank 20 of 52 instead of 30) keeps its target (detection 0.926 -> 0.936), and
plants with plenty of history keep rank 1. The Marchenko-Pastur noise edge (rank 6 on TEP) put 8 %
of TEP's pre-fault rows in alert.

``reference_errors`` puts the trained model's validation error beside two detectors a user could
build in a minute: a naive reconstruction (each window rebuilt as its own per-channel mean) and
per-sample PCA of the same rank. The train summary warns when the autoencoder does not beat them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LIVE_VARIANCE = 0.1  # standardized variance below which a channel's spread is under its scale's floor


@dataclass(frozen=True)
class PcaStart:
    """``components`` ``(rank, C)`` orthonormal rows, ``mean`` ``(C,)`` and the variance they explain."""

    components: np.ndarray
    mean: np.ndarray
    explained: float

    @property
    def rank(self) -> int:
        return len(self.components)


def pca_start(standardized: np.ndarray, rank: int | None = None) -> PcaStart:
    """Principal components of ``(T, C)`` standardized rows above the mean eigenvalue.

    Only channels that vary count: a channel constant in training standardizes to 0, and counting
    it would lower the mean and let the path copy every live channel (one live channel beside one
    constant one took rank 1: a blind model). A channel whose scale a floor set far above its
    spread (``LIVE_VARIANCE``: a status flag, a coarse quantized channel that moves now and then)
    carries almost no variance and does not count either (two such flags beside two process
    channels took rank 2: a copy that saw no shift in them). So the rank is at least 1 and below
    the live channel count; fewer than two live channels have no linear relation to learn: rank 0 (the conv path
    models them alone). ``rank`` fixes the count instead (the cross-fitted folds take the served
    model's), under the same cap.

    >>> rng = np.random.default_rng(0)
    >>> sources = rng.standard_normal((500, 2))
    >>> rows = np.repeat(sources, 3, axis=1) + 0.1 * rng.standard_normal((500, 6))
    >>> pca_start(rows).rank  # two sources behind six channels
    2
    """
    if rank is not None and rank < 0:
        raise ValueError(f"rank must be >= 0, got {rank}")
    x = np.asarray(standardized, dtype=np.float64)
    mean = x.mean(axis=0)
    n_channels = x.shape[1]
    live = int((x.var(axis=0) >= LIVE_VARIANCE).sum()) if len(x) else 0
    # a given rank (a cross-fitted fold takes the served model's) is capped by the channels that
    # move at all, not by the variance cut: a flag near it could fall under in one fold only
    cap = live if rank is None else (int((np.ptp(x, axis=0) > 0).sum()) if len(x) else 0)
    if cap < 2 or len(x) < 2:
        return PcaStart(np.empty((0, n_channels)), mean, 0.0)
    _, sing, vt = np.linalg.svd(x - mean, full_matrices=False)
    power = sing**2
    total = power.sum()
    if rank is None:
        rank = max(int((power > total / live).sum()), 1)
    rank = int(min(rank, cap - 1, len(vt)))
    # a fixed sign per component (largest loading positive): the same data give the same weights
    comps = vt[:rank] * np.sign(vt[:rank][np.arange(rank), np.abs(vt[:rank]).argmax(axis=1)])[:, None]
    return PcaStart(comps, mean, float(power[:rank].sum() / total))


def pca_error(start: PcaStart, windows: np.ndarray) -> float:
    """Mean squared error of per-sample PCA reconstruction over ``(n, C, window)`` windows."""
    x = np.asarray(windows, dtype=np.float64) - start.mean[None, :, None]
    proj = start.components
    recon = np.einsum("kc,nkw->ncw", proj, np.einsum("kc,ncw->nkw", proj, x))
    return float(np.mean((recon - x) ** 2))


def naive_error(windows: np.ndarray) -> float:
    """Mean squared error of rebuilding each window as its own per-channel mean."""
    x = np.asarray(windows, dtype=np.float64)
    return float(np.mean((x - x.mean(axis=2, keepdims=True)) ** 2))
