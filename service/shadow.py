"""The shadow model: a candidate scored beside CURRENT on the same windows, never announced.

A gate on held-out data says a candidate is as good on the past; a shadow says how it does on
today's stream before anyone gets its alerts. ``sensorguard models shadow VERSION`` writes a
``SHADOW`` pointer beside ``CURRENT``; the daemon's watcher loads it as it loads ``CURRENT``
(same checks: channels and window must match), and each batch gets one extra forward pass under
the same lock, so both models see exactly the same windows. The shadow steps its own alert
machine and drift baseline per asset (the daemon's rules, the candidate's drift rule, started from
the daemon's baseline of the asset, as a promotion keeps it); its
would-be alerts go to ``sensorguard_shadow_alerts_total{asset}`` and its scores to the
``sensorguard_shadow_score`` histogram, never to MQTT.

Every ``shadow_report_s`` the daemon writes ``<registry>/<name>/live/<instance>.json``: both
versions, since when they ran side by side, windows scored and each one's alerts raised in that
span (raised by its own machine, held or not: a maintenance suppresses announcements, not the
comparison). One file per instance, so daemons serving partitions of a plant add up; an instance
that refused the shadow or stopped it (it failed to score) says so in its file instead.
``models promote --gate live`` (:func:`live_gate`) promotes the shadow only when, summed over the
instances, it ran at least the stated span and raised no more alerts than CURRENT, no instance
refused or stopped it, and the retrain gate passed it on held-out data against this CURRENT. A
report not updated for three intervals (at least 15 minutes) is left out, and named: a daemon
stopped for good, or a worker count lowered, left a frozen span that passed the gate for a model
that had failed there, or blocked it for good (found by review).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from sensorguard.service.alerts import AlertRules, AlertState, alert_steps, judge
from sensorguard.service.bundle import Bundle, BundleError
from sensorguard.service.bundle_checks import bundle_rules
from sensorguard.service.config import Settings
from sensorguard.service.drift import DriftState
from sensorguard.service.durable import write_durably
from sensorguard.service.registry import LIVE_DIR, current_version, promote, read_meta, shadow_version
from sensorguard.service.scorer import Scorer

log = logging.getLogger(__name__)

STALE_REPORTS = 3  # an instance's report left out of the live gate after this many intervals without update
STALE_MIN_S = 900.0  # ... and at least this long (a registry on a slow share, a daemon restarting)
MAX_SHADOW_ASSETS = 100_000  # alert machines kept at most (the daemon's own max_assets is lower)


@dataclass
class Shadow:
    """The candidate and its per-asset alert machines; the live counts of both models since ``since``.

    Stepped only on the scoring worker (no lock of its own)."""

    bundle: Bundle
    scorer: Scorer
    current: str  # the CURRENT version it runs beside (a swap of CURRENT restarts the count)
    since: float = field(default_factory=time.time)
    windows: int = 0
    alerts: int = 0  # would-be alerts of the shadow
    current_alerts: int = 0  # alerts the current model raised on the same windows
    judged: float = math.nan  # the last stepped window's score as judged (NaN: not judged)
    _states: dict[str, AlertState] = field(default_factory=dict)
    _drift: dict[str, DriftState] = field(default_factory=dict)
    _current_ids: dict[str, str] = field(default_factory=dict)  # the current model's last alert id per asset
    _inherited: dict[str, str] = field(default_factory=dict)  # its alert up when the shadow first saw the asset

    def step(self, asset: str, ts: float, score: float, current: AlertState, rules: AlertRules,
             served_drift: DriftState | None = None, learn: bool = True, coarse: bool = True,
             rows: np.ndarray | None = None) -> bool:
        """One window scored by both: the shadow's machine steps on ``score``; ``current``: the
        current model's state after the same window. Returns whether the shadow raised an alert;
        :attr:`judged` holds the window's score as judged (against the widened line, its level term
        in), NaN when it was not judged.

        ``served_drift``: the asset's drift baseline as the daemon holds it. The shadow starts its
        own from it (a promotion keeps the daemon's: it is relative to each model's baseline), so
        an asset that drifted is not judged against the bare line and counted against the shadow.
        ``learn``: whether the window may teach the drift baseline and the level, as for the served
        model; ``rows``: the window's newest rows for the shadow's level term (``service.level``).
        ``coarse`` False: a window of the daemon's alert hop; the shadow steps on it only while its
        own alert is up, with ``rules.alert_steps`` (the daemon's cadence, not its bundle's), and
        never when its bundle judges every hop (alert hop off: it would serve so).
        """
        self.judged = math.nan
        if not coarse and not self.alerting(asset):
            return False
        self.windows += coarse  # the hop grid's windows, as windows_scored_total counts them
        seen = self._current_ids.get(asset)
        if seen is None:  # first sight: an alert of the current model already up is not counted,
            self._current_ids[asset] = current.alert_id
            self._inherited[asset] = current.alert_id if current.status == "alerting" else ""
        elif current.status == "alerting" and current.alert_id != seen:
            self.current_alerts += 1
            self._current_ids[asset] = current.alert_id
        if asset not in self._states and len(self._states) >= MAX_SHADOW_ASSETS:
            return False
        if (self.bundle.drift_rule is not None or self.bundle.level is not None) and served_drift is not None \
                and asset not in self._drift:
            self._drift[asset] = served_drift
        # (the daemon's cadence, or every hop when the shadow's own alert hop is off)
        judged_by = replace(bundle_rules(rules, self.bundle), alert_steps=rules.alert_steps if self.fine else 1)
        state, drift, event, self.judged = judge(self._states.get(asset, AlertState()),
                                                 self._drift.get(asset, DriftState()), score, ts, judged_by,
                                                 self.bundle.drift_rule, asset, learn=learn,
                                                 level=self.bundle.level, rows=rows)
        self._states[asset] = state
        if self.bundle.drift_rule is not None or self.bundle.level is not None:
            self._drift[asset] = drift
        raised = event is not None and event.kind == "raised"
        # ... nor the shadow's raise of the same episode (its machine starts fresh inside it)
        if raised and self._inherited.get(asset) and self._inherited[asset] == current.alert_id:
            return False
        if current.status != "alerting":
            self._inherited.pop(asset, None)
        self.alerts += raised
        return raised

    @property
    def fine(self) -> bool:
        """Whether the shadow's bundle judges an alert up at an alert hop (off: every hop, as a
        bundle from before format 4 or trained with ``--alert-hop 0`` serves)."""
        return alert_steps(self.bundle.hop, self.bundle.alert_hop) > 1

    def alerting(self, asset: str) -> bool:
        """Whether the shadow's own alert of ``asset`` is up and it steps on alert-hop windows then."""
        state = self._states.get(asset)
        return self.fine and state is not None and state.status == "alerting"

    def forget(self, asset: str) -> None:
        """The asset went silent: its machines end, as the current model's do."""
        self._states.pop(asset, None)
        self._drift.pop(asset, None)
        self._current_ids.pop(asset, None)
        self._inherited.pop(asset, None)

    def report(self, instance: str) -> dict:
        return {"instance": instance, "shadow": self.bundle.version, "current": self.current,
                "since": self.since, "updated": time.time(), "windows": self.windows,
                "shadow_alerts": self.alerts, "current_alerts": self.current_alerts}


def write_report(root: str | Path, name: str, report: dict) -> None:
    """Write one instance's live counts to ``<root>/<name>/live/<instance>.json`` atomically."""
    folder = Path(root) / name / LIVE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", report["instance"])[:100] or "_"
    write_durably(folder / f"{safe}.json", json.dumps(report))


def report_live(settings: Settings, shadow: Shadow | None, failed: tuple[str, str, str] | None = None) -> None:
    """Write the shadow's and CURRENT's live counts for this instance, or that this instance
    refused or stopped the shadow (``failed``: version, CURRENT, why), so the gate does not
    promote on the other instances' counts a model that failed here; neither: nothing to do.
    A failure to write (a read-only registry) is logged, never raised: scoring goes on."""
    if not (settings.registry and settings.name):
        return
    if shadow is not None:
        report = {**shadow.report(settings.instance_name), "every": settings.shadow_report_s}
    elif failed is not None:
        version, current, why = failed
        report = {"instance": settings.instance_name, "shadow": version, "current": current, "failed": why,
                  "updated": time.time(), "every": settings.shadow_report_s}
    else:
        return
    try:
        write_report(settings.registry, settings.name, report)
    except OSError as exc:
        log.warning("writing the shadow's live counts failed: %s", exc)


def _stale_after(report: dict) -> float:
    """Seconds after which an instance's report no longer counts: it stopped writing (a daemon
    stopped for good, a worker count lowered), and its frozen span must not pass or block the gate."""
    every = report.get("every")
    every = float(every) if isinstance(every, int | float) and every > 0 else 60.0
    return max(STALE_REPORTS * every, STALE_MIN_S)


def live_counts(root: str | Path, name: str, shadow: str, current: str, now: float | None = None) -> dict:
    """The live reports of every instance that ran ``shadow`` beside ``current``, summed: windows,
    both alert counts, instances, and the span (the shortest any of them ran); ``failed``: the
    instances that refused or stopped it, and why; ``stale``: those whose report stopped coming
    (left out). The reports go when ``SHADOW`` or ``CURRENT`` changes (:mod:`registry`)."""
    now = time.time() if now is None else now
    total = {"windows": 0, "shadow_alerts": 0, "current_alerts": 0, "instances": 0, "span_s": 0.0,
             "failed": [], "stale": []}
    spans = []
    for path in sorted((Path(root) / name / LIVE_DIR).glob("*.json")):
        try:
            report = json.loads(path.read_text())
            if report.get("shadow") != shadow or report.get("current") != current:
                continue
            instance = str(report.get("instance", path.stem))
            if now - float(report["updated"]) > _stale_after(report):
                total["stale"].append(f"{instance} ({(now - float(report['updated'])) / 3600:.3g} h old)")
                continue
            if report.get("failed"):
                total["failed"].append(f"{instance}: {report['failed']}")
                continue
            for key in ("windows", "shadow_alerts", "current_alerts"):
                total[key] += int(report[key])
            spans.append(float(report["updated"]) - float(report["since"]))
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("skipping unreadable live report %s", path)
            continue
        total["instances"] += 1
    total["span_s"] = min(spans) if spans else 0.0
    return total


def live_gate(root: str | Path, name: str, span_s: float) -> tuple[bool, str]:
    """``models promote --gate live``: promote the shadow when it passes; ``(promoted, why)``.

    Passes when the retrain gate passed it on held-out data against this CURRENT (``metrics``
    of its bundle), every instance running it beside CURRENT did so for at least ``span_s``, and
    together they saw it raise no more alerts than CURRENT on the same windows."""
    shadow, current = shadow_version(root, name), current_version(root, name)
    if shadow is None:
        raise BundleError(f"model {name!r} has no SHADOW: models shadow VERSION runs one beside CURRENT")
    meta = read_meta(Path(root) / name / shadow)
    gate = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
    counts = live_counts(root, name, shadow, current or "")
    said = (f"{shadow} beside {current}: {counts['windows']} windows on {counts['instances']} instance(s) over "
            f"{counts['span_s'] / 3600:.3g} h; alerts {counts['shadow_alerts']} (shadow) vs "
            f"{counts['current_alerts']} (current)")
    if counts["stale"]:
        said += f"; left out, no longer reporting: {', '.join(counts['stale'])}"
    if counts["failed"]:
        return False, f"{said}; not promoted: it failed on {'; '.join(counts['failed'])}"
    if not gate.get("passed"):
        return False, f"{said}; not promoted: the retrain gate did not pass it on held-out data " \
                      f"({gate.get('reason', 'no gate result: make candidates with retrain')})"
    if gate.get("compared_with") != current:
        return False, (f"{said}; not promoted: the retrain gate compared it with {gate.get('compared_with')}, "
                       f"CURRENT is {current} (retrain again)")
    if not counts["instances"] or counts["span_s"] < span_s:
        return False, f"{said}; not promoted: it must run at least {span_s / 3600:.3g} h beside CURRENT"
    if counts["shadow_alerts"] > counts["current_alerts"]:
        return False, f"{said}; not promoted: more alerts live than CURRENT"
    promote(root, name, shadow, expect=current)  # checks that it loads and CURRENT did not move; clears SHADOW
    return True, f"{said}; promoted: CURRENT {current} -> {shadow}"

