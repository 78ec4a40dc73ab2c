"""The drift rule: a slowly updated, guarded baseline per asset that widens the alert line.

Normal operation moves after the training rows: the next day is noisier, temperatures settle, the
load changes. A line calibrated on the training day then fires on normal data (on Tennessee
Eastman the test day's normal scores sit 1.7 times the training day's). Each asset keeps an
exponentially weighted mean of ``log(score)`` over the windows it judged normal, as an offset
from the calibration's mean (``DriftRule.baseline``: the mean log score of the held-out normal
windows below the line). The line is widened by ``exp(offset)``, clipped to ``[1, cap]``.

The guards that keep a fault from being learned away:

- only windows judged normal update the baseline: status ``normal`` before and after the window
  and its widened score below 1; a pending or raised alert freezes it;
- it only widens (never below the calibrated line, so the promise holds), and at most to ``cap``
  times the line: a fault that grows past that alerts whatever the baseline learned;
- it moves slowly: half of its weight is on the last ``halflife`` scored windows, after a start
  where the calibrated baseline counts as ``warmup`` windows.

A fault that rises faster than the baseline follows alerts at once; a slow drift fault can hide
until its score passes ``cap`` times the line, and not beyond. The rule is a pure
``drift_step``, stepped per scored window in the same order by the daemon and by the offline
scorer (``service.alerts.judge``), so both give the same numbers; the state is two numbers per
asset (and the level term's followed level, ``service.level``) kept with its alert state, and it
is relative to the bundle's baseline, so a model swap keeps what was learned about the asset.

>>> rule = DriftRule(baseline=math.log(0.4), halflife=4, warmup=1, cap=1.5)
>>> state = DriftState()
>>> for _ in range(20):
...     state = drift_step(state, 0.8, rule)  # normal windows at twice the calibrated level
>>> round(widening(state, rule), 2)
1.5
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

_FLOOR = math.log(1e6)  # how far below the calibrated baseline the offset may go (log units)


@dataclass(frozen=True)
class DriftRule:
    """baseline: mean log score of held-out normal windows below the line; halflife: scored windows
    holding half the weight; warmup: the weight of the calibrated baseline at the start, in
    windows; cap: the most the line may widen (a factor)."""

    baseline: float
    halflife: float = 64.0
    warmup: int = 8
    cap: float = 1.5

    def __post_init__(self) -> None:
        if not math.isfinite(self.baseline):
            raise ValueError(f"drift baseline must be finite, got {self.baseline}")
        # a cap of infinity would lift the guard against learning a slow fault away
        if not 0 < self.halflife < math.inf or self.warmup < 0 or not 1 <= self.cap < math.inf:
            raise ValueError(f"drift needs a finite halflife > 0, warmup >= 0 and a finite cap >= 1; got "
                             f"{self.halflife}, {self.warmup}, {self.cap}")

    def to_dict(self) -> dict:
        return {"baseline": self.baseline, "halflife": self.halflife, "warmup": self.warmup, "cap": self.cap}

    @classmethod
    def from_dict(cls, record: dict | None) -> DriftRule | None:
        """The rule a bundle's calibration record holds; None when it holds none (drift off)."""
        if not record:
            return None
        return cls(float(record["baseline"]), float(record["halflife"]), int(record["warmup"]), float(record["cap"]))


@dataclass(frozen=True)
class DriftState:
    """One asset's baseline: ``offset`` (log) from the calibrated baseline, after ``updates`` windows;
    ``level``: the level its normal operation follows, per channel in raw units (``service.level``;
    empty: the training mean, nothing learned)."""

    offset: float = 0.0
    updates: int = 0
    level: tuple[float, ...] = ()
    level_key: int = 0  # the channels it was learned under (``LevelMonitor.key``)


def widening(state: DriftState, rule: DriftRule | None) -> float:
    """The factor the alert line is widened by for this asset now (1.0 without a rule)."""
    if rule is None or not state.offset > 0:  # (a NaN offset counts as nothing learned)
        return 1.0
    return min(math.exp(min(state.offset, math.log(rule.cap))), rule.cap)


def drift_step(state: DriftState, score: float, rule: DriftRule) -> DriftState:
    """Move the baseline towards one window judged normal (``score``: its unwidened score)."""
    if not (math.isfinite(score) and score > 0):
        return state
    rate = max(1.0 - 0.5 ** (1.0 / rule.halflife), 1.0 / (rule.warmup + state.updates + 1))
    target = math.log(score) - rule.baseline
    # kept within [-log(1e6), log(cap)]: above the cap it would only delay the line's return
    offset = min(max(state.offset + rate * (target - state.offset), -_FLOOR), math.log(rule.cap))
    return replace(state, offset=offset, updates=min(state.updates + 1, 1 << 30))
