"""The level term: how far a window's newest rows sit from the level its asset's normal operation follows.

The autoencoder's score is a reconstruction error: it sees a window's shape, and a plant that
moves as a whole to another operating point (a pump's pressure and flow both falling, a slowly
fouling exchanger) can still be reconstructed well. The process-monitoring standard catches that
with Hotelling's T^2 in the principal subspace of the training rows. Each scored window gets

    term = max(mean T^2(row - level) / (limit x calibrated), mean Q(row - level) / (q_limit x calibrated))

over its newest ``focus`` rows, and its score is ``max(reconstruction score, term)``
(``service.alerts.judge``), so 1.0 stays the alert line for both. Q (the squared prediction error)
is the standard's other half: the standardized deviation outside the principal subspace, which
sees channels that stop moving together (on the first proxy of issue 9's bench it ranked rows
better than the reconstruction; docs/benchmarks.md, sessions 55, 58 and 59). ``limit`` and
``q_limit`` are :data:`SHARE` and :data:`Q_SHARE` times the 99th percentile of out-of-fold
training T^2 and Q (``training.level_fit``: a plant that wanders while it trains gets wide
limits); the line's calibration then raises both by one factor (``calibrated``) until the term
adds no alert on held-out normal windows (``training.promise.combined_line``).

``level`` starts at the training mean and follows normal operation: an exponential average over
about ``follow`` rows (:data:`FOLLOW_ROWS`) of the windows judged normal. About the training mean
alone, a normal plant that settled after the training rows alerted all day (the simulated plant's
later hours: 17.7 false alerts a day against 1 promised; docs/benchmarks.md, issue 9). The guards
that keep a fault from being learned away are the drift rule's (``service.drift``): only a window
judged normal, before and after it, with its combined score under the line, moves the level; a
pending or raised alert freezes it; and it moves slowly, so a fault that rises faster than it
follows alerts. A fault slower than ``follow`` rows can be followed: the reconstruction score,
which no level moves, still sees it when it changes the plant's shape.

The level is each asset's, kept in raw units with its drift baseline (``DriftState.level``), so it
is saved, restored and moved between workers with it, and a model swap keeps it (a level learned
under other channels is not read: ``key``). The term and the step are pure float64 functions of the
window's contiguous ``(k, C)`` rows, so the daemon and the offline scorer give the same numbers to
the last bit.

>>> monitor = LevelMonitor(mean=np.zeros(2), scale=np.ones(2), loadings=np.eye(2), eigen=np.ones(2), limit=2.0)
>>> rows = np.array([[2.0, 0.0], [0.0, 2.0]])
>>> monitor.term(rows, DriftState())
2.0
>>> state = monitor.step(DriftState(), np.full((3, 2), 1.0))
>>> [round(x, 5) for x in state.level]
[0.0015, 0.0015]
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from sensorguard.service.drift import DriftState
from sensorguard.service.json_values import number

VARIANCE = 0.90  # the principal subspace: the fewest components explaining this share of the variance
QUANTILE = 0.99  # of out-of-fold training T^2 and Q values
SHARE = 2.0  # the limit is this many times that quantile (chosen with FOLLOW_ROWS on the benchmarks)
FOLLOW_ROWS = 2000.0  # the level's memory, in rows judged normal
Q_SHARE = 4.0  # the Q part's limit: this many times the out-of-fold 99th percentile of training Q (measured: 2, 4, 8)


@dataclass(frozen=True, eq=False)
class LevelMonitor:
    """A bundle's level monitor. mean, scale: ``(C,)`` raw units (the training rows' mean and standard
    deviation, 1 where constant); loadings ``(C, a)`` and eigen ``(a,)``: the kept principal
    directions of the standardized rows and their variances; limit: the fitted limit (``SHARE`` times
    the out-of-fold quantile); follow: the level's memory in rows; calibrated: the factor the line's
    calibration put on both limits (``training.promise.combined_line``), so T^2 at
    ``limit x calibrated`` is term 1.0, and Q at ``q_limit x calibrated``; q_limit (``Q_SHARE``
    times the out-of-fold quantile of Q; 0: no Q part) and q_channels: the Q part's."""

    mean: np.ndarray
    scale: np.ndarray
    loadings: np.ndarray
    eigen: np.ndarray
    limit: float
    follow: float = FOLLOW_ROWS
    calibrated: float = 1.0
    channels: tuple[str, ...] = ()  # the bundle's, in order: a level learned under other channels is not used
    q_limit: float = 0.0  # Q (SPE) that is term 1.0 before calibration; 0: no Q part (bundles before format 6)
    q_channels: np.ndarray | None = None  # ``(C,)`` bool, the channels Q counts (``level_fit._fold_fits``); None: all

    def __post_init__(self) -> None:
        c = len(self.mean)
        shapes = (np.shape(self.scale) == (c,) and np.ndim(self.loadings) == 2 and np.shape(self.loadings)[0] == c
                  and np.shape(self.eigen) == (np.shape(self.loadings)[1],) and np.shape(self.loadings)[1] >= 1)
        if not shapes:
            shown = ", ".join(f"{k} {np.shape(getattr(self, k))}" for k in ("mean", "scale", "loadings", "eigen"))
            raise ValueError(f"level monitor shapes do not fit: {shown}")
        if self.q_channels is not None and np.shape(self.q_channels) != (c,):
            raise ValueError(f"level monitor q_channels has shape {np.shape(self.q_channels)}, the channels ({c},)")
        arrays = (self.mean, self.scale, self.loadings, self.eigen)
        if not all(np.isfinite(a).all() for a in arrays) or not (self.scale > 0).all() or not (self.eigen > 0).all():
            raise ValueError("level monitor values must be finite, with scale and eigenvalues > 0")
        if not (math.isfinite(self.limit) and self.limit > 0 and math.isfinite(self.follow) and self.follow >= 1
                and math.isfinite(self.calibrated) and self.calibrated > 0
                and math.isfinite(self.q_limit) and self.q_limit >= 0):
            raise ValueError(f"level monitor needs a finite limit > 0, follow >= 1, calibrated > 0 and q_limit >= 0, "
                             f"got {self.limit}, {self.follow}, {self.calibrated}, {self.q_limit}")

    @property
    def line(self) -> float:
        """The T^2 (a window's mean) that is term 1.0, the alert line."""
        return self.limit * self.calibrated

    @cached_property
    def key(self) -> int:
        """The channels' fingerprint, kept with each asset's level (``DriftState.level_key``): a
        daemon restarted with a model of other channels, or of the same in another order, must not
        read the saved level as its own (a swapped pair made every window a fault, and an alert up
        freezes the level: it never ended)."""
        return zlib.crc32("\x1f".join(self.channels).encode())

    @cached_property
    def _weights(self) -> np.ndarray:
        """Loadings over each channel's scale and the square root of their eigenvalues: T^2 is the
        squared norm of ``(row - level) @ weights`` (one product a window: the daemon's hot path)."""
        return self.loadings / np.sqrt(self.eigen) / self.scale[:, None]

    @cached_property
    def _mean_level(self) -> tuple[float, ...]:
        return tuple(self.mean.tolist())

    def start(self, state: DriftState) -> np.ndarray:
        """An asset's level as an array: the training mean when nothing was learned, or what was
        learned was under other channels (another model's)."""
        if state.level_key == self.key and len(state.level) == len(self.mean):
            return np.asarray(state.level, dtype=np.float64)
        return self.mean

    @property
    def q_line(self) -> float:
        """The Q (a window's mean) that is term 1.0; infinite without a Q part."""
        return self.q_limit * self.calibrated if self.q_limit > 0 else math.inf

    @cached_property
    def _residual_map(self) -> np.ndarray:
        """``(C, C)``: raw deviations to each counted channel's standardized residual outside the kept
        components, ``diag(1 / scale) (I - P P^T)`` with the columns Q does not count (``q_channels``)
        zeroed: one product a window (the steps one by one took the term from 4 to 10 us)."""
        c = len(self.mean)
        kept = np.ones(c) if self.q_channels is None else np.asarray(self.q_channels, dtype=bool).astype(np.float64)
        return (np.eye(c) - self.loadings @ self.loadings.T) / self.scale[:, None] * kept[None, :]

    def t2(self, deviations: np.ndarray) -> np.ndarray:
        """Each row's T^2 ``(k,)`` from its ``deviations`` ``(k, C)`` from a level, raw units (NaN where
        a value is not finite): calibration's, each row about the level in force before it."""
        return np.sum((deviations @ self._weights) ** 2, axis=1)

    def _residuals(self, deviations: np.ndarray) -> np.ndarray:
        """Each row's standardized deviation outside the kept components ``(k, C)`` (0 for a
        channel Q does not count): Q is its squared norm."""
        return deviations @ self._residual_map

    def q(self, deviations: np.ndarray) -> np.ndarray:
        """Each row's Q (SPE) ``(k,)`` from its ``deviations`` ``(k, C)``, as :meth:`t2`."""
        return np.sum(self._residuals(deviations) ** 2, axis=1)

    def _parts(self, rows: np.ndarray, state: DriftState) -> tuple[float, float, np.ndarray, np.ndarray | None]:
        """The window's T^2 part and Q part (0 without one), each its mean over the rows over its line,
        and the principal scores ``(k, a)`` and residuals ``(k, C)`` (None) they came from."""
        deviations = np.asarray(rows, dtype=np.float64) - self.start(state)
        scores = deviations @ self._weights
        t2 = float(np.vdot(scores, scores)) / (len(rows) * self.line)
        if self.q_limit <= 0:
            return t2, 0.0, scores, None
        residuals = self._residuals(deviations)
        return t2, float(np.vdot(residuals, residuals)) / (len(rows) * self.q_line), scores, residuals

    def term(self, rows: np.ndarray, state: DriftState) -> float:
        """The window's term: the larger of the mean T^2 and the mean Q of its newest ``rows``
        ``(k, C)`` about the asset's level (``state``, its drift state), each over its line; NaN when
        a row is not finite (nothing to judge). The daemon and ``score`` call it on the same
        ``(k, C)`` rows, so they get the same number (about 6 us a window)."""
        if not len(rows):
            return math.nan
        t2, q, _, _ = self._parts(rows, state)
        return max(t2, q) if math.isfinite(t2) and math.isfinite(q) else math.nan

    def contributions(self, rows: np.ndarray, state: DriftState) -> np.ndarray:
        """Each channel's share of :meth:`term` ``(C,)``, non-negative and summing to it, from the
        part that set it: the complete decomposition of T^2 (Alcala and Qin, 2009), ``((z W) P^T)^2``
        per row, or each channel's squared residual for Q."""
        t2, q, scores, residuals = self._parts(rows, state)
        if residuals is not None and q > t2:
            return (residuals**2).mean(axis=0) / self.q_line
        return ((scores @ self.loadings.T) ** 2).mean(axis=0) / self.line

    def step(self, state: DriftState, rows: np.ndarray) -> DriftState:
        """The asset's drift state with its level moved towards a window judged normal: ``len(rows)``
        steps of an exponential average over ``follow`` rows, towards their mean."""
        start, rows = self.start(state), np.asarray(rows, dtype=np.float64)
        k = len(rows)
        if k:  # (sum / k, not np.mean: a third of the step's time; a non-finite row leaves the level)
            moved = start + (1.0 - (1.0 - 1.0 / self.follow) ** k) * (rows.sum(axis=0) / k - start)
            if math.isfinite(float(moved.sum())):
                return DriftState(state.offset, state.updates, tuple(moved.tolist()), self.key)
        level = self._mean_level if start is self.mean else tuple(start.tolist())
        return DriftState(state.offset, state.updates, level, self.key)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(), "loadings": self.loadings.tolist(),
                "eigen": self.eigen.tolist(), "limit": self.limit, "follow": self.follow,
                "calibrated": self.calibrated, "q_limit": self.q_limit,
                **({} if self.q_channels is None else {"q_channels": [bool(x) for x in self.q_channels]})}

    @classmethod
    def from_dict(cls, record: Any, channels: tuple[str, ...]) -> LevelMonitor | None:
        """The monitor ``bundle.json`` holds (None: a bundle without one) for a bundle of ``channels``;
        ValueError for one that does not fit them."""
        if record is None:
            return None
        if not isinstance(record, dict):
            raise ValueError("level must be an object")
        monitor = cls(*(np.asarray(record[k], dtype=np.float64) for k in ("mean", "scale", "loadings", "eigen")),
                      limit=_number(record, "limit"), follow=_number(record, "follow", FOLLOW_ROWS),
                      calibrated=_number(record, "calibrated", 1.0), channels=tuple(channels),
                      q_limit=_number(record, "q_limit", 0.0), q_channels=_flags(record.get("q_channels")))
        if len(monitor.mean) != len(channels):
            raise ValueError(f"level has {len(monitor.mean)} channels, the bundle {len(channels)}")
        if monitor.q_limit > 0 and monitor.q_channels is None:  # (train writes both: counting every channel
            raise ValueError("q_limit needs q_channels")  # would count the ones Q must leave out; a walk)
        return monitor


def _number(record: dict, key: str, default: float | None = None) -> float:
    """``record[key]`` (``default`` when absent) as ``bundle.json`` must hold it: a JSON number."""
    return number(record[key] if default is None else record.get(key, default), key)


def _flags(value: Any) -> np.ndarray | None:
    """``q_channels`` as ``bundle.json`` holds it: a list of booleans (None: absent)."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(x, bool) for x in value):
        raise ValueError("q_channels must be a list of true/false")
    return np.array(value, dtype=bool)


@dataclass(frozen=True, eq=False)
class LevelRows:
    """A series' rows for the level term offline (``service.alerts.judge_rows``): the raw ``values``
    ``(T, C)`` the windows end in, their ``focus`` (the bundle's scored samples) and ``blocked``
    (``(T,)`` bool: a channel of the window ending there has a sensor fault open; no term, as live)."""

    monitor: LevelMonitor
    values: np.ndarray
    focus: int
    blocked: np.ndarray | None = None

    def at(self, i: int) -> np.ndarray | None:
        """The newest rows of the window ending at row ``i`` (None: blocked)."""
        if self.blocked is not None and self.blocked[i]:
            return None
        return self.values[max(i - self.focus + 1, 0) : i + 1]


def top_channels(shares: np.ndarray, channels: tuple[str, ...], k: int = 3) -> list[dict]:
    """The ``k`` channels with the largest ``shares`` of a term, as ``Scores.top_channels`` names them."""
    total = float(shares.sum())
    order = np.argsort(-shares, kind="stable")[:k]
    return [{"name": channels[j], "share": round(float(shares[j]) / total, 4) if total > 0 else 0.0} for j in order]
