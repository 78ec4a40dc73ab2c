"""Threshold methods: turn reconstruction errors on held-out normal windows into an alert line.

The calibration windows are normal data the model never trained or early-stopped on, so their
errors show what normal looks like to this model. Methods:

- ``quantile``: the empirical ``1 - false_alarm_rate`` quantile; honest when the calibration set
  holds many more windows than ``1 / false_alarm_rate``.
- ``pot``: peaks over threshold. Fits a generalized Pareto tail to the top errors and extrapolates
  to rates the calibration set is too small to show (Siffer et al., KDD 2017). Falls back to the
  quantile when there are too few peaks for a fit.
- ``mean_std``: mean + k * std with ``k`` the Gaussian tail point of the rate; simple and familiar.

>>> errors = np.random.default_rng(0).exponential(1.0, 20_000)
>>> threshold, record = pick_threshold(errors, "quantile", 0.01)
>>> round(threshold, 1), record["method"]
(4.5, 'quantile')
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats

METHODS = ("quantile", "pot", "mean_std")
POT_INIT_QUANTILE = 0.98
POT_MIN_PEAKS = 20


def pick_threshold(
    errors: np.ndarray,
    method: str = "pot",
    false_alarm_rate: float = 1e-3,
    windows_per_day: float | None = None,
) -> tuple[float, dict]:
    """Pick a threshold from calibration errors; return it with a record for ``bundle.json``."""
    if method not in METHODS:
        raise ValueError(f"threshold method must be one of {', '.join(METHODS)}, got {method!r}")
    if not 0 < false_alarm_rate < 1:
        raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}")
    errors = np.asarray(errors, dtype=np.float64)
    errors = errors[np.isfinite(errors)]
    if len(errors) < 10:
        raise ValueError(f"need at least 10 calibration windows, got {len(errors)}")
    params: dict = {}
    used = method
    if method == "quantile":
        threshold = float(np.quantile(errors, 1 - false_alarm_rate))
    elif method == "mean_std":
        k = float(stats.norm.isf(false_alarm_rate))
        threshold = float(errors.mean() + k * errors.std())
        params["k"] = round(k, 4)
    else:
        threshold, params = _pot(errors, false_alarm_rate)
        if threshold is None:
            used = "quantile"
            threshold = float(np.quantile(errors, 1 - false_alarm_rate))
    threshold = max(threshold, float(np.finfo(np.float32).tiny), 1e-12)
    if (errors == threshold).any():  # on a value seen (tied, an idle stretch's): each repeat scores 1.0 and alerts
        threshold = just_above(threshold)
    exceed = float(np.mean(errors >= threshold))
    record = {
        "method": used,
        "requested_method": method,
        "false_alarm_rate": false_alarm_rate,
        "params": params,
        "threshold": threshold,
        "windows": int(len(errors)),
        "observed_exceedance": exceed,
        "error_quantiles": {
            str(q): float(np.quantile(errors, q)) for q in (0.5, 0.9, 0.99, 0.999)
        }
        | {"max": float(errors.max()), "mean": float(errors.mean())},
        "expected_false_alarms_per_day": (
            round(false_alarm_rate * windows_per_day, 3) if windows_per_day else None
        ),
        "errors_sample": _sample(errors, 2000),
    }
    return threshold, record


def just_above(x: float) -> float:
    """A line just above a value seen, with room for float32 rounding: the daemon's error for the same
    window can differ from calibration's in its last float32 bits (another batch), and 1.0 alerts."""
    return x * (1.0 + 1e-6) if x > 0 else float(np.nextafter(x, np.inf))


def _pot(errors: np.ndarray, rate: float) -> tuple[float | None, dict]:
    """Peaks-over-threshold extrapolation; None when a fit would not be trustworthy."""
    init = float(np.quantile(errors, POT_INIT_QUANTILE))
    peaks = errors[errors > init] - init
    n, n_peaks = len(errors), len(peaks)
    params = {"init_quantile": POT_INIT_QUANTILE, "init_threshold": init, "peaks": int(n_peaks)}
    if rate >= 1 - POT_INIT_QUANTILE:  # inside the observed range: the quantile is exact enough
        return float(np.quantile(errors, 1 - rate)), params
    if n_peaks < POT_MIN_PEAKS or np.ptp(peaks) <= 0:
        params["fallback"] = f"only {n_peaks} peaks (need {POT_MIN_PEAKS})"
        return None, params
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            shape, _, scale = stats.genpareto.fit(peaks, floc=0)
        except Exception as exc:  # scipy's optimizers raise assorted errors on degenerate data
            params["fallback"] = f"GPD fit failed: {exc}"
            return None, params
    ratio = rate * n / n_peaks
    if abs(shape) < 1e-6:
        threshold = init - scale * math.log(ratio)
    else:
        threshold = init + scale / shape * (ratio ** (-shape) - 1)
    params.update(shape=float(shape), scale=float(scale))
    ceiling = 10 * float(errors.max())  # a runaway heavy-tail fit must not disable alerting
    if not math.isfinite(threshold) or threshold <= init or threshold > ceiling:
        params["fallback"] = f"extrapolated threshold {threshold:.4g} out of range"
        return None, params
    return float(threshold), params


def _sample(errors: np.ndarray, k: int) -> list[float]:
    chosen = errors if len(errors) <= k else np.random.default_rng(0).choice(errors, k, replace=False)
    return [float(f"{e:.6g}") for e in np.sort(chosen)]


def _finite_rows(errors: list[np.ndarray]) -> np.ndarray:
    """The ``(n, C)`` pieces stacked, windows with any non-finite channel left out (not scored)."""
    stacked = np.concatenate([np.asarray(e, dtype=np.float64) for e in errors])
    return stacked[np.isfinite(stacked).all(axis=1)]


WEIGHT_FLOOR = 0.1  # a channel's typical error counts as at least this share of a typical channel's
TAIL_SHARE = 0.01  # a channel's normal extremes: the mean of its largest 1 % of held-out window errors
SPIKY_WEIGHTS = (f"; a spiky channel's weight at most what puts the mean of its largest {TAIL_SHARE:.0%} of errors "
                 "at the median other channel's")  # the calibration record's words for _cap_spiky


def channel_weights(channel_errors: list[np.ndarray], spiky: np.ndarray | None = None) -> np.ndarray:
    """Per-channel error weights from held-out per-channel window errors (one ``(n, C)`` per segment).

    A plain mean over channels lets the channels the model reconstructs worst (noisy analysers)
    set the score, so a clear shift in a channel it reconstructs well is diluted away; dividing
    each channel's error by its typical held-out error makes every channel's normal error count
    the same, as normalized residuals do in PCA monitoring (on Tennessee Eastman it caught more of
    the faults at the same false-alarm rate). The typical error is the mean, not the median: a
    channel that sits still and spikes now and then as part of normal work (a server's error
    counter, a relief valve, a quantized flow) has a median near 0, and a weight from it made each
    of its normal spikes the day's largest score, so the line rose above every process fault (a
    simulated server, 8 such channels of 24: alert F1 0.01; with the mean 0.40, PCA T^2/Q 0.52).
    The mean counts how often and how far a channel strays, so its normal spikes weigh what they
    are (docs/benchmarks.md, session 40: F1 rose on every multivariate set but one). The typical
    error is floored at ``WEIGHT_FLOOR`` of a typical channel's, so a channel that barely moved in
    the held-out data (idle, constant) cannot get a weight that turns its first real change into
    an alert. The typical channel is the median one, but never below ``WEIGHT_FLOOR`` of the
    largest: when half the channels or more are near-flat (setpoints, status flags) the median is
    one of them, and a floor from it protected nothing (6 flat channels of 10 got 480,000 times the
    live ones' weight, found by review).

    spiky: ``(C,)`` bool, the channels the scaler found spiky (``scaling.spike_share``). Their mean
    error is their spikes' share and says little of how far one spike reaches: weighted by it, a
    normal spike of one counter held 80-94 % of the largest 1 % of the simulated servers' normal
    windows, the line sat above most process faults (F1 0.43, below PCA T^2/Q's 0.51) and the
    served model's spikes broke the promise (2.0 false alerts a day). So a spiky channel's weight
    is also capped where its normal extremes (mean of its largest ``TAIL_SHARE`` of errors) count
    no more than the median other channel's: F1 0.57 and 0.39 a day (docs/benchmarks.md, session
    44). A set without spiky channels is weighed as before. Weights are scaled to mean 1.
    """
    stacked = _finite_rows(channel_errors)
    if len(stacked) == 0:
        raise ValueError("no finite held-out window errors to weigh channels with")
    typical = stacked.mean(axis=0)
    reference = max(float(np.median(typical)), WEIGHT_FLOOR * float(typical.max()))
    floor = max(WEIGHT_FLOOR * reference, 1e-12)
    weights = 1.0 / np.maximum(typical, floor)
    if spiky is not None and np.any(spiky) and not np.all(spiky):
        weights = _cap_spiky(weights, stacked, np.asarray(spiky, dtype=bool))
    return weights / weights.mean()


def _cap_spiky(weights: np.ndarray, stacked: np.ndarray, spiky: np.ndarray) -> np.ndarray:
    """``weights`` with each spiky channel's lowered until its weighted extremes are the median
    other channel's (never raised). The reference is floored as the typical error is: with half the
    other channels near-flat, their median is a flat one, and a counter's weight fell to 2e-6 of a
    process channel's (found by review)."""
    k = max(1, int(np.ceil(TAIL_SHARE * len(stacked))))
    extremes = np.sort(stacked, axis=0)[-k:].mean(axis=0)
    others = (weights * extremes)[~spiky]
    reference = max(float(np.median(others)), WEIGHT_FLOOR * float(others.max()))
    if not reference > 0:  # the other channels never moved: nothing to compare the spikes with
        return weights
    cap = reference / np.maximum(extremes, 1e-300)
    return np.where(spiky, np.minimum(weights, cap), weights)


LEADERS_SHOWN = 3  # channels named in the train summary's "largest errors" line
LEADER_WINDOWS = (20, 0.01)  # the largest held-out window errors counted: the larger of 20 and 1 % of windows


def largest_windows(errors: np.ndarray) -> np.ndarray:
    """The indices of the largest of the finite window ``errors`` ``(n,)``, largest first: the larger
    of ``LEADER_WINDOWS``' count and share of them (the windows the train summary reads the line by)."""
    least, share = LEADER_WINDOWS
    k = min(len(errors), max(least, math.ceil(share * len(errors))))
    return np.argsort(-errors, kind="stable")[:k]


def line_leaders(errors: list[np.ndarray], channels: tuple[str, ...]) -> dict | None:
    """The channels that hold the largest held-out window errors: where the normal behaviour that
    sets the line shows.

    errors: weighted per-channel window errors (one ``(n, C)`` array per piece; a window's error is
    their mean). Of the largest ``max(20, 1 %)`` window errors, the share each channel leads (holds
    the largest part of), the top ``LEADERS_SHOWN`` kept as ``[name, share]`` pairs, largest first
    (a list: ``bundle.json`` is written with sorted keys, and a mapping would come back in
    alphabetical order). An operator asking why a fault in one channel went unseen needs this: on
    simulated servers, counters that spike as part of normal work led nearly every held-out
    window near the line (docs/benchmarks.md, session 41), and a fault elsewhere must outscore
    them. The shares are of the weighted errors, so they say where the error shows, which need
    not be where a disturbance began. None with one channel or no finite window.
    """
    if len(channels) < 2 or not errors:
        return None
    stacked = _finite_rows(errors)
    if stacked.shape[1] != len(channels):
        raise ValueError(f"window errors of {stacked.shape[1]} channels for {len(channels)} channel names")
    if len(stacked) == 0:
        return None
    top = stacked[largest_windows(stacked.mean(axis=1))]
    k = len(top)
    counts = np.bincount(np.argmax(top, axis=1), minlength=len(channels))
    order = np.argsort(-counts, kind="stable")[:LEADERS_SHOWN]
    return {"windows": int(k), "shares": [[channels[i], round(float(counts[i]) / k, 4)] for i in order if counts[i]]}
