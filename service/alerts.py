"""The alert state machine: a pure ``step(state, score, now, rules) -> (state, event)``.

One scored window of one asset moves its state; an event comes out only when an alert is raised,
cleared or goes stale. Raising needs ``raise_after`` consecutive windows at or above score 1.0
(one noisy window is not an alert), or one window at or above ``raise_at`` (a bundle's line
calibrated with it records it, :data:`RAISE_AT` times the line: a fault that strong is no noise,
and a short one was over before three windows in a row could rise; a bundle calibrated before it
raises on ``raise_after`` alone, so its promise holds as stated). Clearing needs ``clear_after``
hops of consecutive windows below ``clear_level`` (``alert_steps`` windows a hop: while an alert
is up the daemon judges a window every ``alert_hop`` samples, :func:`step_masks`; default level
1.0: the two counts are the hysteresis, so a score hovering at 1.0 does not flap; a lower level
made alerts outlive their cause wherever normal scores sit near the line), or two windows in a row
below ``clear_at`` (default :data:`CLEAR_AT`, half the line: scores that low say the fault is
over, and the alert ends two alert hops after it instead of ``clear_after``; two, not one, or a
fault switching on and off, 2.5 and 0.4 in turn, was raised and cleared at every other window
under a new id each time; the promise is untouched, since every raise still needs a crossing of
the line). A score between the two keeps counting, so a fault that hovers near the line does not
flap.
The daemon and the offline ``sensorguard score`` both use these functions, so they agree on when
alerts are up.

>>> rules = AlertRules(raise_after=2, clear_after=1)
>>> state, event = step(AlertState(), 1.5, 0.0, rules)
>>> state.status, event
('pending', None)
>>> state, event = step(state, 2.0, 1.0, rules)
>>> state.status, event.kind, event.peak_score
('alerting', 'raised', 2.0)
>>> state, event = step(state, 0.1, 2.0, rules)
>>> state.status, event.kind
('normal', 'cleared')
>>> step(AlertState(), 2.5, 3.0, AlertRules(raise_after=3, raise_at=2.0))[0].status
'alerting'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from sensorguard.service.drift import DriftRule, DriftState, drift_step, widening
from sensorguard.service.level import LevelMonitor, LevelRows

Status = Literal["normal", "pending", "alerting", "stale"]
RAISE_AT = 2.0  # new bundles' lines are calibrated with one window at twice the line raising at once
CLEAR_AT = 0.5  # two windows in a row under half the line clear at once: the fault is over


@dataclass(frozen=True)
class AlertRules:
    """raise_after: windows >= 1.0 in a row to raise; clear_after: hops below clear_level to clear;
    stale_after: seconds without readings before an asset is marked stale; raise_at: one window at
    or above it raises at once (inf: never; the bundle's calibration says which, ``Bundle.raise_at``);
    clear_at: two windows in a row below it (and below clear_level) clear at once (0: never);
    alert_steps: windows judged per hop while an alert is up (the bundle's hop over its ``alert_hop``,
    ``bundle_checks.bundle_rules``), so ``clear_after`` x ``alert_steps`` windows in a row span the
    same samples, the hysteresis, whatever the cadence (counting windows halved it, and alerts
    flapped inside Tennessee Eastman's intermittent faults: docs/benchmarks.md, session 45)."""

    raise_after: int = 3
    clear_after: int = 5
    clear_level: float = 1.0
    stale_after: float = 300.0
    raise_at: float = math.inf
    clear_at: float = CLEAR_AT
    alert_steps: int = 1

    def __post_init__(self) -> None:
        if self.raise_after < 1 or self.clear_after < 1 or self.alert_steps < 1:
            raise ValueError(f"raise_after, clear_after and alert_steps must be >= 1, got {self.raise_after}, "
                             f"{self.clear_after}, {self.alert_steps}")
        if not self.raise_at >= 1.0:  # (NaN too)
            raise ValueError(f"raise_at must be >= 1 (inf: never), got {self.raise_at}")
        if not 0 <= self.clear_at <= 1:
            raise ValueError(f"clear_at must be in [0, 1] (0: never), got {self.clear_at}")
        if not 0 < self.clear_level <= 1:
            raise ValueError(f"clear_level must be in (0, 1], got {self.clear_level}")
        if not self.stale_after > 0:
            raise ValueError(f"stale_after must be > 0 seconds, got {self.stale_after}")


@dataclass(frozen=True)
class AlertState:
    status: Status = "normal"
    above: int = 0
    below: int = 0
    peak: float = 0.0
    alert_id: str = ""
    last_score: float = 0.0


@dataclass(frozen=True)
class AlertEvent:
    kind: Literal["raised", "cleared"]
    ts: float
    score: float
    peak_score: float
    alert_id: str


def step(state: AlertState, score: float, now: float, rules: AlertRules,
         asset: str = "") -> tuple[AlertState, AlertEvent | None]:
    """Advance one asset's state by one scored window at time ``now`` (epoch seconds).

    A raised alert's id is ``<asset>@<milliseconds of now>``: unique across assets, and the same
    wherever the same readings are judged (offline, a restarted or a second daemon).
    """
    judged = not math.isnan(score)  # (a NaN counts towards clear_after, as before; it never clears at once)
    if not math.isfinite(score):
        score = math.inf if score > 0 else 0.0  # NaN never raises; +inf is as anomalous as it gets
    if state.status == "stale":
        state = AlertState()
    if state.status == "alerting":
        peak = max(state.peak, score)
        below = state.below + 1 if score < rules.clear_level else 0
        deep = min(rules.clear_at, rules.clear_level)  # two windows in a row under it: the fault is over
        if below >= rules.clear_after * rules.alert_steps or (judged and score < deep and state.last_score < deep):
            event = AlertEvent("cleared", now, score, peak, state.alert_id)
            return AlertState(last_score=score), event
        return replace(state, below=below, peak=peak, last_score=score), None
    if score < 1.0:
        return AlertState(last_score=score), None
    above = state.above + 1
    peak = max(state.peak, score)
    if above >= rules.raise_after or score >= rules.raise_at < math.inf:  # (inf: the rule is off)
        alert_id = f"{asset}@{int(now * 1000):d}" if asset else f"{int(now * 1000):d}"
        new = AlertState("alerting", above=above, peak=peak, alert_id=alert_id, last_score=score)
        return new, AlertEvent("raised", now, score, peak, alert_id)
    return AlertState("pending", above=above, peak=peak, last_score=score), None


def judge(
    state: AlertState, drift: DriftState, score: float, now: float, rules: AlertRules, rule: DriftRule | None,
    asset: str = "", learn: bool = True, level: LevelMonitor | None = None, rows: np.ndarray | None = None,
    term: float | None = None,
) -> tuple[AlertState, DriftState, AlertEvent | None, float]:
    """One scored window through the level term, the drift rule and the alert machine:
    ``(state, drift, event, score)``.

    ``level`` and ``rows`` (the window's newest ``focus`` rows, raw ``(k, C)``; None when a channel
    of the window has a sensor fault open): the window's score is ``max(score, term)``
    (``service.level``). The returned score is that against the asset's widened line
    (``service.drift``); it is what the machine stepped on and what is published. Without a rule
    and a level it is ``score``. ``learn`` False: neither the baseline nor the level is updated
    (the daemon's asset is in a maintenance or its guard band). ``term``: the window's term when the
    caller has it already (``level.term(rows, drift)``).
    """
    combined = score
    if level is not None and rows is not None:
        term = level.term(rows, drift) if term is None else term
        if term > score:  # (a NaN term: a row not finite, the score stands)
            combined = term
    adjusted = combined / widening(drift, rule)
    new, event = step(state, adjusted, now, rules, asset)
    if learn and state.status == "normal" and new.status == "normal" and adjusted < 1.0:
        if rule is not None:  # on the error's score: its baseline is the error's (the larger part would
            drift = drift_step(drift, score, rule)  # widen the line on normal data, found by review)
        if level is not None and rows is not None:
            drift = level.step(drift, rows)
    return new, drift, event, adjusted


UNJUDGED = AlertState(peak=math.nan, last_score=math.nan)  # an asset no window of which was judged: no score


def mark_stale(state: AlertState) -> AlertState:
    """The asset went silent: any alert ends, the process is not judged until it is back (its
    ``silent`` sensor fault says so, ``service/asset_faults.py``)."""
    return AlertState("stale", last_score=state.last_score)


def hop_mask(segments: np.ndarray, window: int, hop: int) -> np.ndarray:
    """Rows whose window the daemon would score: every ``hop``-th full window of each segment.

    The daemon scores an asset's buffer after ``window`` samples and then every ``hop`` samples;
    the offline scorer uses this mask so both step the alert machine on the same windows.
    """
    segments = np.asarray(segments)
    n = len(segments)
    starts = np.concatenate([[0], np.flatnonzero(segments[1:] != segments[:-1]) + 1]) if n else np.array([], int)
    seg_start = np.repeat(starts, np.diff(np.concatenate([starts, [n]])))
    pos = np.arange(n) - seg_start - (window - 1)
    return (pos >= 0) & (pos % hop == 0)


def divides_hop(alert_hop: int, hop: int) -> bool:
    """Whether ``alert_hop`` can be a hop's alert hop: 0 (the hop itself) or a divisor of it, so every
    window judged at the hop is judged at the alert hop too."""
    return alert_hop == 0 or (0 < alert_hop <= hop and hop % alert_hop == 0)


def alert_steps(hop: int, alert_hop: int) -> int:
    """Windows judged per hop while an alert is up (``AlertRules.alert_steps``): 1 without an alert hop."""
    return hop // alert_hop if 0 < alert_hop < hop else 1


def step_masks(segments: np.ndarray, window: int, hop: int, alert_hop: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``(mask, alert_mask)`` for :func:`judge_series`: the rows the daemon judges (every ``hop``-th
    window), and those it also judges while an alert is up (every ``alert_hop``-th; None when that
    adds none: ``alert_hop`` 0 or at least ``hop``, as bundles before it)."""
    mask = hop_mask(segments, window, hop)
    return mask, (hop_mask(segments, window, alert_hop) if alert_steps(hop, alert_hop) > 1 else None)


def alert_series(
    scores: np.ndarray, mask: np.ndarray, times: np.ndarray, rules: AlertRules, drift: DriftRule | None = None,
    alert_mask: np.ndarray | None = None, level: LevelRows | None = None,
) -> np.ndarray:
    """Offline alert state (0/1) per row: the machine steps on ``mask`` rows (and on ``alert_mask``
    rows while an alert is up), state carries between."""
    return judge_series(scores, mask, times, rules, drift, alert_mask=alert_mask, level=level)[0]


def silences(times: np.ndarray, alive: np.ndarray | None, limit: float) -> np.ndarray:
    """Per row of the time-sorted ``times``, whether its asset went silent since the row before: no
    reading for longer than ``limit``. ``alive``: the sorted stamps of every reading that keeps the
    asset alive live (those refused for their rate, ``slow_rate``, included: they bridge the gaps
    between rows); None: the rows alone."""
    times = np.asarray(times, dtype=np.float64)
    if alive is None or not len(times):
        return np.r_[False, np.diff(times) > limit] if len(times) else np.zeros(0, dtype=bool)
    stamps = np.union1d(times, np.asarray(alive, dtype=np.float64))
    gone = np.r_[0, np.cumsum(np.diff(stamps) > limit)]  # silences up to each stamp
    at = gone[np.searchsorted(stamps, times)]
    return np.r_[False, np.diff(at) > 0]


def judge_series(
    scores: np.ndarray, mask: np.ndarray, times: np.ndarray, rules: AlertRules, drift: DriftRule | None = None,
    alive: np.ndarray | None = None, alert_mask: np.ndarray | None = None, level: LevelRows | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Offline ``(alert 0/1, score against the widened line)`` per row: :func:`judge_rows` without
    the rows judged."""
    return judge_rows(scores, mask, times, rules, drift, alive, alert_mask, level)[:2]


def judge_rows(
    scores: np.ndarray, mask: np.ndarray, times: np.ndarray, rules: AlertRules, drift: DriftRule | None = None,
    alive: np.ndarray | None = None, alert_mask: np.ndarray | None = None, level: LevelRows | None = None,
    terms: np.ndarray | None = None, ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offline ``(alert 0/1, score against the widened line, judged)`` per row, as the daemon steps
    them; ``judged``: the rows the machine stepped on (the windows the daemon judges and publishes).

    The machine and the drift rule step on ``mask`` rows (the windows the daemon scores), in row
    order, and while an alert is up on ``alert_mask`` rows too (the bundle's ``alert_hop`` grid,
    :func:`step_masks`; None: ``mask`` alone); every other row's score is divided by the widening
    in force at that row. A gap in
    ``times`` longer than ``rules.stale_after`` ends the alert state as the daemon's silence does
    (the asset went stale: an alert up ends, the next one is a new alert); the drift baseline is
    kept, as the daemon keeps it while a silent asset's return is awaited. ``alive``: the stamps of
    every reading that keeps the asset alive (:func:`silences`): a sender slowed below the model's
    rate has its readings refused, yet live they keep it from going silent. (Live, silence is
    arrival time while connected: a backlog drained after an outage, or a replay faster than real
    time, is judged by its stamps here and may differ.) ``level``: the series' rows for the level
    term (``service.level``): judged rows step it as :func:`judge` does, every other row's score is
    ``max(score, term)`` about the level in force there; ``terms`` (``(T,)``, NaN where none) receives
    each row's term, over its line (``score``'s ``level`` column); ``ids`` (``(T,)`` objects)
    receives the ``alert_id`` of the alert up at each row, without its asset (``score``'s column).
    """
    state, drift_state = AlertState(), DriftState()
    out = np.zeros(len(scores), dtype=np.int8)
    judged = np.zeros(len(scores), dtype=bool)
    adjusted = np.array(scores, dtype=np.float64, copy=True)
    active, factor = 0, 1.0
    silent = silences(times, alive, rules.stale_after)
    fine = alert_mask is not None
    monitor = None if level is None else level.monitor
    for i in range(len(scores)):
        term = None
        if silent[i]:
            state, active = AlertState(), 0
        if (mask[i] or (fine and alert_mask[i] and state.status == "alerting")) and not np.isnan(scores[i]):
            rows = None if level is None else level.at(i)
            term = None if rows is None else monitor.term(rows, drift_state)
            state, drift_state, _, adjusted[i] = judge(state, drift_state, float(scores[i]), float(times[i]), rules,
                                                       drift, level=monitor, rows=rows, term=term)
            judged[i] = True
            active = int(state.status == "alerting")
            factor = widening(drift_state, drift)
        else:
            term = math.nan
            if level is not None and not np.isnan(scores[i]) and (rows := level.at(i)) is not None:
                term = monitor.term(rows, drift_state)
            adjusted[i] = (term if term > scores[i] else scores[i]) / factor
        if terms is not None and term is not None:
            terms[i] = term
        if ids is not None and active:
            ids[i] = state.alert_id
        out[i] = active
    return out, adjusted, judged
