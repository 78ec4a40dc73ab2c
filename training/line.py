"""A bundle's alert line from held-out per-channel window errors: what ``train`` ends with and
``calibrate`` redoes on newer normal data.

The channel weights (each channel's error over its typical held-out error), the threshold for
``false_alerts_per_day`` through the daemon's own alert rules (:mod:`~sensorguard.training.promise`;
a window rate with ``false_alarm_rate``, advanced), the level term's factor so that the score the
daemon judges raises no more alerts than the error did, and the drift rule's baseline when asked
for. The record of how the line was set goes into the bundle (``bundle.calibration``).

>>> round(drift_rule(np.array([0.5, 0.5, 2.0])).baseline, 4)  # the mean log score under the line: log 0.5
-0.6931
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sensorguard.service.alerts import RAISE_AT, AlertRules
from sensorguard.service.bundle import Bundle
from sensorguard.service.drift import DriftRule
from sensorguard.service.scorer import Scorer
from sensorguard.training.calibrate import SPIKY_WEIGHTS, WEIGHT_FLOOR, channel_weights, line_leaders, pick_threshold
from sensorguard.training.crossfit import clean_pieces_beside
from sensorguard.training.data import SensorData
from sensorguard.training.level_fit import window_terms
from sensorguard.training.promise import alert_threshold, combined_line, reading_period
from sensorguard.training.scaling import spiky_channels

# the alert rules a line is calibrated under: the daemon's defaults, and one window at RAISE_AT x the
# line raising at once (recorded in the bundle, which the daemon and `score` then apply)
CALIBRATION_RULES = AlertRules(raise_at=RAISE_AT)


def calibrate_bundle(
    bundle: Bundle,
    data: SensorData,
    method: str = "pot",
    false_alarm_rate: float | None = None,
    device: str | None = None,
    false_alerts_per_day: float | None = 1.0,
    rules: AlertRules = CALIBRATION_RULES,
    weigh_channels: bool = True,
    drift: bool = False,
) -> Bundle:
    """Re-pick the channel weights and threshold from the errors of ``data``'s windows (held-out
    normal data).

    The default targets ``false_alerts_per_day`` alerts through the daemon's raise rule
    (``training.promise``), counting a day in windows from the bundle's sample period (the median
    interval of the training data). ``false_alarm_rate`` (advanced) targets a fraction of windows
    above the line with ``method`` instead, as does a bundle without a sample period.
    """
    if tuple(data.channels) != tuple(bundle.channels):
        raise ValueError(f"data channels {list(data.channels)} do not match the bundle's {list(bundle.channels)}")
    unweighted = replace(bundle, channel_weights_=None)
    scores = Scorer(unweighted, device=device).score_series(data.values, data.segments)
    record = data.fingerprint()
    term = None if bundle.level is None else window_terms(bundle.level, data.values, data.segments,
                                                          bundle.scored_samples)
    pieces, terms, starts, left_out = clean_pieces_beside(scores.channel_error, term, data, bundle.window)
    if data.faulted is not None:
        record["sensor_fault_windows_left_out"] = left_out
    errors = np.concatenate([p[np.isfinite(p).all(axis=1)] for p in pieces]) if pieces else np.empty((0, 1))
    if len(errors) < 10:
        # (rows refused for their rate: the notes calibrate printed say so; not sensor faults)
        faults = " without a sensor fault" if left_out else ""
        raise ValueError(f"calibration data hold {len(errors)} windows of {bundle.window} rows{faults}; need at "
                         f"least 10, so at least {bundle.window + 9} rows in a row without a gap (any notes above "
                         "say what the cleaning left out)")
    return threshold_bundle(bundle, pieces, record, method, false_alarm_rate, false_alerts_per_day, rules,
                            weigh_channels, drift, reading_period(data, bundle), starts, terms)


class NoDriftBaseline(ValueError):
    """No held-out score to set a drift rule's baseline from (every one 0, or none below the line)."""


def drift_rule(scores: np.ndarray) -> DriftRule:
    """The drift rule's baseline from held-out normal scores: the mean log score below the line."""
    below = scores[np.isfinite(scores) & (scores > 0) & (scores < 1.0)]
    if len(below) == 0:
        raise NoDriftBaseline("no held-out window scores below the line to set the drift baseline from")
    return DriftRule(baseline=float(np.mean(np.log(below))))


def threshold_bundle(
    bundle: Bundle,
    channel_pieces: list[np.ndarray],
    data_record: dict,
    method: str = "pot",
    false_alarm_rate: float | None = None,
    false_alerts_per_day: float | None = 1.0,
    rules: AlertRules = CALIBRATION_RULES,
    weigh_channels: bool = True,
    drift: bool = False,
    period: float | None = None,
    starts: list[bool] | None = None,
    terms: list[np.ndarray] | None = None,
) -> Bundle:
    """The bundle with channel weights and a threshold picked from held-out per-channel window
    errors (one ``(n, C)`` array per segment, unit weights).

    data_record: what the errors came from (a data fingerprint), kept in the calibration record.
    period: seconds between readings for counting scored windows a day (:func:`reading_period`;
    None: the bundle's sample period). starts: per piece, whether the daemon starts its windows
    afresh there (``clean_pieces``), where one window over ``raise_at`` times the line raises alone.
    terms: the level term of each piece's windows (``level_fit.window_terms``), for a bundle with a
    level monitor: the term's line is then raised until the score the daemon judges,
    ``max(error / threshold, term)``, raises no more alerts there than the error did
    (``promise.combined_line``).
    """
    spiky = spiky_channels(bundle.training, len(bundle.channels))
    if bundle.level is not None:  # (a line calibrated again starts from the term's fitted limit)
        bundle = replace(bundle, level=replace(bundle.level, calibrated=1.0))
    weights = channel_weights(channel_pieces, spiky) if weigh_channels else None
    weighted = channel_pieces if weights is None else [e * weights for e in channel_pieces]
    pieces = [e.mean(axis=1) for e in weighted]
    bundle = replace(bundle, channel_weights_=weights)
    errors = np.concatenate([p[np.isfinite(p)] for p in pieces]) if pieces else np.empty(0)
    period = period or bundle.sample_period
    per_day = 86400.0 / (period * bundle.hop) if period else None
    window_rate = false_alarm_rate if false_alarm_rate is not None else 1e-3
    threshold, record = pick_threshold(errors, method, window_rate, per_day)
    if false_alarm_rate is None and false_alerts_per_day is not None and per_day:
        threshold, alerts = alert_threshold(pieces, bundle.hop, rules, per_day, false_alerts_per_day, starts,
                                            bundle.alert_hop)
        if bundle.level is not None and terms is not None:
            alerts, factor = combined_line(pieces, terms, threshold, alerts, bundle.hop, rules, bundle.alert_hop)
            bundle = replace(bundle, level=replace(bundle.level, calibrated=factor))
        for unused in ("false_alarm_rate", "params"):  # the window-rate fit's, not what set this line
            record.pop(unused, None)
        record.update(method="alerts", requested_method="alerts", threshold=threshold, alerts=alerts,
                      observed_exceedance=float(np.mean(errors >= threshold)),
                      expected_false_alarms_per_day=alerts["promised_per_day"])  # (capped, as promised)
    record["data"] = data_record
    if bundle.level is not None and record.get("method") != "alerts":  # (a window-rate line, or no period)
        record["level_note"] = "the level term's line is its fitted limit: only a line for false alerts a day " \
                               "calibrates it"
    if (leaders := line_leaders(weighted, bundle.channels)) is not None:
        record["largest_errors"] = leaders
    if drift:
        record["drift"] = drift_rule(errors / threshold).to_dict()
    if weights is not None:
        record["channel_weights"] = (f"1 / mean held-out error per channel, floored at {WEIGHT_FLOOR:g} of the "
                                     f"channels' median and at least {WEIGHT_FLOOR**2:g} of the largest, mean 1"
                                     + (SPIKY_WEIGHTS if spiky is not None and 0 < spiky.sum() < len(spiky) else ""))
    return bundle.with_threshold(threshold, record)
