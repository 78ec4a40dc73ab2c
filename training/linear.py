"""PCA, the linear special case of the autoencoder: its start, and the yardsticks it must beat.

The autoencoder's linear path starts at the principal components of the standardized training rows
(``pca_start``). Its rank is the number of components that explain ``VARIANCE`` of the training
variance, the classic choice of process monitoring (PCA with T^2 and Q limits), capped below the
channel count so the path is a true bottleneck (a rank-C projection would copy every fault).

``reference_errors`` puts the trained model's validation error beside two detectors a user could
build in a minute: a naive reconstruction (each window rebuilt as its own per-channel mean) and
per-sample PCA of the same rank. The train summary warns when the autoencoder does not beat them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VARIANCE = 0.90


@dataclass(frozen=True)
class PcaStart:
    """``components`` ``(rank, C)`` orthonormal rows, ``mean`` ``(C,)`` and the variance they explain."""

    components: np.ndarray
    mean: np.ndarray
    explained: float

    @property
    def rank(self) -> int:
        return len(self.components)


def pca_start(standardized: np.ndarray, variance: float = VARIANCE) -> PcaStart:
    """Principal components of ``(T, C)`` standardized rows explaining ``variance`` (rank < C).

    A single channel has no linear relation to learn: rank 0 (the conv path models it alone).
    """
    x = np.asarray(standardized, dtype=np.float64)
    mean = x.mean(axis=0)
    n_channels = x.shape[1]
    if n_channels < 2 or len(x) < 2:
        return PcaStart(np.empty((0, n_channels)), mean, 0.0)
    _, sing, vt = np.linalg.svd(x - mean, full_matrices=False)
    power = sing**2
    total = power.sum()
    if total <= 0:
        return PcaStart(np.empty((0, n_channels)), mean, 0.0)
    share = np.cumsum(power) / total
    rank = int(min(np.searchsorted(share, variance) + 1, n_channels - 1, len(vt)))
    # a fixed sign per component (largest loading positive): the same data give the same weights
    comps = vt[:rank] * np.sign(vt[:rank][np.arange(rank), np.abs(vt[:rank]).argmax(axis=1)])[:, None]
    return PcaStart(comps, mean, float(share[rank - 1]))


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
