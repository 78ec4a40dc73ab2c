"""One batch of due windows scored: one forward pass under one model, each asset's alert step, the listeners.

What the daemon's scoring worker does with a batch (:meth:`Daemon.score_batch
<sensorguard.service.scoring_worker.ScoringWorker.score_batch>`), apart from the wiring and lifecycle in
``daemon.py``. The whole forward pass runs under the model holder's lock, so a hot swap lands
between two batches and every window of a batch is scored, and its events named, by one model.
A failure of the shadow model (an experiment) stops the shadow and never costs the served model's
windows; a failure of one asset's alert step never costs the rest of the batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from sensorguard.service.alerts import AlertRules
from sensorguard.service.asset_buffer import DueWindow
from sensorguard.service.assets import AssetAlerts
from sensorguard.service.bundle import Bundle
from sensorguard.service.bundle_checks import bundle_rules
from sensorguard.service.hotswap import ModelHolder
from sensorguard.service.metrics import Metrics
from sensorguard.service.recorder import Recorder

# The daemon's logger: these lines keep the name they are known by (``logger`` in JSON logs, filters).
log = logging.getLogger("sensorguard.service.daemon")


@dataclass(frozen=True)
class ScoredWindow:
    """One scored window, as handed to listeners (the demo's view, tests)."""

    asset: str
    ts: float
    score: float
    error: float
    status: str
    channels: list[dict]


def worth_scoring(batch: list[DueWindow], alerting: Callable[[str], bool]) -> list[DueWindow]:
    """The windows of a batch that may be judged: every one on the hop grid, and an alert-hop window
    (``coarse`` False) where its asset's alert is up now or may be by then (an earlier window of the
    asset in the batch may raise it). The alert step skips those that find the asset normal, so
    only assets with an alert up, or a window in this batch before it, cost a forward pass more."""
    kept, seen = [], set()
    for due in batch:
        if due.coarse or due.asset in seen or alerting(due.asset):
            kept.append(due)
            seen.add(due.asset)
    return kept


def term_rows(due: DueWindow, bundle: Bundle) -> np.ndarray | None:
    """The window's newest ``focus`` raw rows ``(k, C)`` for ``bundle``'s level term (None: no term,
    or a channel of the window has a sensor fault open, as offline)."""
    if bundle.level is None or due.excluded:
        return None
    return np.ascontiguousarray(due.window[:, -bundle.scored_samples :].T)  # (as offline's slice: the same
    # sums to the last bit; a strided view rounded otherwise in 1 case of 17, found by review)


def score_batch(batch: list[DueWindow], models: ModelHolder, alerts: AssetAlerts, metrics: Metrics,
                recorder: Recorder | None, rules: Callable[[], AlertRules],
                listeners: list[Callable[[ScoredWindow], None]]) -> None:
    """Score due windows in one forward pass, step their assets' alerts, tell the listeners.

    rules: the daemon's alert rules for the shadow's step, read at each window (a hot swap may
    change the silence that ends an alert while a batch is being stepped).
    """
    watching = models.shadow  # (its alert up keeps an alert-hop window too: it steps on it)
    batch = worth_scoring(batch, lambda a: alerts.alerting(a) or (watching is not None and watching.alerting(a)))
    if not batch:
        return
    windows = np.stack([due.window for due in batch])
    excluded = None
    if any(due.excluded for due in batch):  # sensor faults open: those channels imputed and left out
        excluded = np.zeros(windows.shape[:2], dtype=bool)
        for i, due in enumerate(batch):
            excluded[i, list(due.excluded)] = True
    started = time.perf_counter()
    with models.lock:  # one model for the whole batch; a swap waits for it
        scorer, bundle, shadow = models.scorer, models.bundle, models.shadow
        scores = scorer.score_windows(windows, excluded)
        shadowed = None
        if shadow is not None:
            try:  # an experiment: its failure must not cost the served model's batch
                shadowed = shadow.scorer.score_windows(windows, excluded)
            except Exception as exc:  # noqa: BLE001 - logged, and the shadow is stopped
                models.stop_shadow(shadow, f"scoring failed ({type(exc).__name__}: {exc})")
    metrics.scoring_duration.observe(time.perf_counter() - started)
    now = time.monotonic()
    for due in batch:  # (the hop grid's, as windows_scored_total; before it: a scrape between the two read
        if due.coarse:  # n windows scored and fewer latencies, a test's race on a busy machine)
            metrics.reading_to_score.observe(max(0.0, now - due.received))
    metrics.windows_scored.inc(sum(due.coarse for due in batch))
    tops = scores.all_top_channels(scorer.channels)
    # the shadow's clear_after in the daemon's cadence (the alert hop's windows are the daemon's)
    steps = 1 if shadowed is None else bundle_rules(rules(), bundle, alerts.hop).alert_steps
    alerts.hold_raises = True  # the batch's raises go out once the state file holds them (release_raises)
    try:
        for i, due in enumerate(batch):
            if np.isnan(scores.error[i]):  # every channel has a sensor fault open: nothing to judge
                continue
            channels = tops[i]
            rows = term_rows(due, bundle)
            try:
                judged = alerts.apply(due.asset, due.ts, float(scores.score[i]), channels, bundle, due.coarse, rows)
            except Exception:  # noqa: BLE001 - one asset's bad window must not cost the rest of the batch
                log.exception("applying a scored window of asset %r failed", due.asset)
                continue
            if judged is None:  # an alert-hop window whose asset's alert is not up: not judged, as offline
                state, score = alerts.state_of(due.asset), float("nan")
            else:
                state, score = judged
                channels = alerts.channels_of(due.asset)  # (the level term's leaders where it decided the window)
            if not due.coarse and judged is not None:
                metrics.alert_windows.inc()
            if recorder is not None and judged is not None:  # judged: its readings may now be committed as normal
                recorder.judged(due.asset, due.ts)  # (not before: a window whose alert step failed was never judged)
            if shadowed is not None and not np.isnan(shadowed.score[i]):  # the same window, never announced
                try:
                    if shadow.step(due.asset, due.ts, float(shadowed.score[i]), state,
                                   replace(rules(), alert_steps=steps), alerts.drift_of(due.asset),
                                   alerts.learns(due.asset, due.ts), due.coarse, rows=term_rows(due, shadow.bundle)):
                        metrics.alert_raised(due.asset, shadow=True)
                    # the hop grid's (the windows of windows_scored_total), as judged: the raw score left out
                    # its level term and drift widening, against "1.0 is its alert line" (a walk)
                    if due.coarse and not np.isnan(shadow.judged):
                        metrics.shadow_score.observe(shadow.judged)
                except Exception as exc:  # noqa: BLE001 - as above: the served model's windows go on
                    with models.lock:
                        models.stop_shadow(shadow, f"stepping its alerts failed ({type(exc).__name__}: {exc})")
                    shadowed = None
            if judged is None:
                continue
            scored = ScoredWindow(due.asset, due.ts, score, float(scores.error[i]), state.status, channels)
            for listener in listeners:
                try:
                    listener(scored)
                except Exception:  # noqa: BLE001 - a view must not stop scoring
                    log.exception("listener failed")
    finally:
        alerts.hold_raises = False
        try:
            alerts.release_raises()
        except Exception:  # noqa: BLE001 - the next batches are scored all the same
            log.exception("announcing the batch's raises failed")
