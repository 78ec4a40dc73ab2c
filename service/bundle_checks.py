"""Serving settings against the bundle: the cleaning they make together, and what breaks its promise.

``cleaning_policy`` and ``sensor_rules`` are the bundle's with the serve overrides applied. The
warnings say which settings break the bundle's false-alert promise or live == offline; the daemon
logs each at start (:meth:`~sensorguard.service.daemon.Daemon.announce`):
the settings are valid on their own, but the bundle was calibrated, and is scored offline, under
other ones, so the user must hear what they change.
"""

from __future__ import annotations

from dataclasses import replace

from sensorguard.service.alerts import AlertRules, alert_steps
from sensorguard.service.bundle import Bundle
from sensorguard.service.cleaning import CleaningPolicy
from sensorguard.service.config import Settings
from sensorguard.service.sensors import SensorRules


def hop_warning(hop: int, bundle: Bundle) -> str | None:
    """Why serving at another hop than the bundle's breaks its promise; None when they agree."""
    if hop == bundle.hop:
        return None
    scored = bundle.scored_samples
    up = f"; an alert up is judged every {hop} too, not every {bundle.alert_hop}" if bundle.alert_hop else ""
    judged = "more than once" if hop < scored else ("partly not at all" if hop > scored else "once")
    promise = ""
    per_day = bundle.calibration.get("expected_false_alarms_per_day")
    if isinstance(per_day, int | float):  # windows a day scale with 1 / hop; alerts need raise_after in a row
        promise = (f" ({per_day:g} false alerts a day at hop {bundle.hop}; windows come {bundle.hop / hop:.3g} "
                   f"times as often at hop {hop}, so expect about {per_day * bundle.hop / hop:.3g} or more)")
    return (f"serving hop {hop} differs from the bundle's hop {bundle.hop}: each score covers the bundle's "
            f"{scored} newest samples, so rows are judged {judged}, and the bundle's false-alert promise "
            f"assumed hop {bundle.hop}{promise}{up}; retrain with train --hop {hop} to change the cadence")


DEFAULT_SILENCE_S = 300.0  # an asset silent this long is silent, unless the bundle fills longer gaps


def silence_after(stale_after: float | None, policy: CleaningPolicy) -> float:
    """Seconds without a reading that end an asset's alert state (and, live, make it ``silent``):
    ``stale_after`` when set, else 300 s or the gap the bundle's cleaning fills, whichever is
    longer. A fixed 300 s cut every alert of 5-minute data short at the first late reading (NAB:
    alert F1 0.22 -> 0.05), and at 10-minute data no alert could rise."""
    if stale_after is not None:
        return stale_after
    return max(DEFAULT_SILENCE_S, policy.restart_gap or 0.0)


def default_rules(bundle: Bundle) -> AlertRules:
    """The alert rules ``serve`` applies to ``bundle`` with default settings (offline scoring, the
    retrain gate's known faults and the benchmarks use them too)."""
    return bundle_rules(AlertRules(stale_after=silence_after(None, bundle.cleaning)), bundle)


def bundle_rules(rules: AlertRules, bundle: Bundle, hop: int | None = None) -> AlertRules:
    """``rules`` with ``bundle``'s own one-window raise (:attr:`Bundle.raise_at`: as its line was
    calibrated; inf for a bundle from before the rule) and its windows per hop while an alert is up
    (``alert_steps``: its hop over its ``alert_hop``; 1 when served at another ``hop``, where the
    alert hop is off). Not a setting: the line and the rule are one promise, set together by
    ``train`` and ``calibrate``, so every window is judged with the rules of the model that scored
    it (live, offline, in a report and in a shadow)."""
    steps = alert_steps(bundle.hop, bundle.alert_hop) if hop in (None, bundle.hop) else 1
    if (rules.raise_at, rules.alert_steps) == (bundle.raise_at, steps):
        return rules
    return replace(rules, raise_at=bundle.raise_at, alert_steps=steps)


def stale_warning(policy: CleaningPolicy, stale_after: float, name: str = "stale_after_s") -> str | None:
    """Why a ``stale_after`` (setting ``name``) shorter than the gap the bundle fills cuts alerts
    short: a silence that long ends the alert state (live and offline alike; live, the window too)
    where the cleaning would carry on over it; at a sample period above it every alert ends at the
    next reading (it said "no alert can rise", and a run raised 88 one-reading alerts, each at one
    window over ``raise_at``: a walk)."""
    gap = policy.restart_gap
    if gap is None or stale_after >= gap:
        return None
    worst = (" at this sampling every step does, so every alert ends at the next reading" if policy.sample_period
             and policy.sample_period > stale_after else "")
    return (f"{name} {stale_after:g} is shorter than the {gap:g} s gap the bundle's cleaning fills: a silence that "
            f"long ends the alert state (live, the window too){worst}; set {name} >= {gap:g}")


def rules_warning(rules: AlertRules, calibration: dict) -> str | None:
    """Why raising after another number of windows than the promise was calibrated with breaks it;
    None when they agree (or the bundle holds no alert-level promise)."""
    alerts = calibration.get("alerts") or {}
    calibrated = alerts.get("raise_after")
    if not isinstance(calibrated, int) or calibrated == rules.raise_after:
        return None
    expect = "more" if rules.raise_after < calibrated else "fewer"
    return (f"raise_after {rules.raise_after} differs from the {calibrated} the bundle's false-alert promise was "
            f"calibrated with: expect {expect} false alerts than its {alerts.get('promised_per_day', '?')} a day "
            f"(serve with raise_after {calibrated} to keep it)")


def cleaning_policy(bundle: Bundle, settings: Settings) -> CleaningPolicy:
    """The bundle's cleaning policy (what offline scoring applies) with the serve overrides."""
    policy = bundle.cleaning
    if settings.fill_limit is not None:
        policy = replace(policy, fill_limit=settings.fill_limit)
    return replace(policy, max_gap_s=settings.max_gap_s)


def sensor_rules(bundle: Bundle, policy: CleaningPolicy) -> SensorRules | None:
    """The bundle's sensor limits, with the fill limit actually applied (a setting may override it)."""
    return None if bundle.sensors is None else replace(bundle.sensors, fill_limit=policy.fill_limit)
