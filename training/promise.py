"""The promise in alerts: a threshold for a target number of false alerts per asset per day.

Operators count alerts, not windows. An alert is raised when ``raise_after`` windows in a row
score at or above 1.0, or one at or above ``raise_at`` (``service.alerts``), so what matters is
the raise statistic (:func:`raise_statistic`): the larger of the running minimum of the error over
``raise_after`` consecutive scored windows (one every ``hop`` rows) and the newest window's error
over ``raise_at``: an alert starts where it crosses the threshold. The threshold is the level
that statistic is at or above on about
``target`` scored steps a day of normal data the model never trained on (every raise needs such a
step, and an alert up or a burst spans several, so raises come at most that often: "at most
``target``" is an upper bound, 0.58 raises a day on a smooth error process where 1 was set):

- when the calibration data hold at least ``MIN_TAIL_EVENTS`` expected crossings at the target
  rate, the empirical quantile at its upper ``TAIL_CONFIDENCE`` bound (the order statistic a
  binomial count on the effective samples gives: the quantile alone is a point estimate, with 10
  expected crossings over the target in 58 % of draws; no tail shape is assumed, so it converges
  on light tails too);
- otherwise (a few hundred rows hold less than a day) the tail is extrapolated with an
  exponential fit to the excesses over the 90th percentile (peaks over threshold with the shape
  fixed at 0, the Gumbel domain of Gaussian-like errors). With a handful of independent excesses
  the fitted scale is itself uncertain, and a point estimate would break the promise about half
  the time, so the threshold uses the scale's upper ``TAIL_CONFIDENCE`` bound (chi^2 on the
  effective excess count): the promise is "at most ``target`` a day" at that confidence, and the
  point estimate of the rate at the threshold is recorded beside it. This widens the threshold
  beyond the largest value seen by a stated, data-driven margin instead of taking the maximum; it
  shrinks to the point estimate as the calibration data grow. (On Tennessee Eastman, one day of
  normal data, the point estimate put the line where the next two days alerted on 28 % of rows.)

The calibration windows overlap, so their statistics are far from independent: the effective
number of samples comes from the error's autocorrelation (integrated autocorrelation time), and
the promise's 95 % interval uses it. The record also runs the calibration data through the alert
rules and reports what was observed there, beside what is promised.

>>> rng = np.random.default_rng(0)
>>> errors = [np.convolve(rng.exponential(1.0, 5000), np.ones(8) / 8, mode="valid")]
>>> threshold, record = alert_threshold(errors, hop=2, rules=AlertRules(), steps_per_day=1000.0, target=1.0)
>>> record["tail"], record["calibration_days"], record["observed_alerts"]
('exponential', 2.4965, 0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

from sensorguard.service.alerts import AlertRules, alert_series, alert_steps, step_masks
from sensorguard.training.calibrate import just_above

if TYPE_CHECKING:
    from sensorguard.service.bundle import Bundle
    from sensorguard.training.series import SensorData

MIN_TAIL_EVENTS = 10
TAIL_QUANTILE = 0.90
TAIL_CONFIDENCE = 0.90
ACF_MIN = 64  # samples a series needs for its own autocorrelation time
# more scored windows than this share crossing the line is a loose line (the classic limit is the 99th
# percentile): said, with the --false-alerts-per-day that would keep it. On slow data a day holds few
# windows (hourly readings, hop 4: 6), and one false alert a day let the line cross on a sixth of the
# normal windows (daily readings: half; 85 % of a model's own training rows in alert, a walk). Not
# capped there: a cap at 1 % moved NAB's promise from 1.74x to 4.2x what its unseen rows observed,
# at 10 %, to 2.0x (session 71): the operator chooses, told
LOOSE_STEP_RATE = 0.01


def run_min(errors: np.ndarray, hop: int, raise_after: int) -> np.ndarray:
    """At every row, in row order: the minimum over the ``raise_after`` scored windows ending there.

    Row ``t`` gets ``min(e[t], e[t - hop], ..., e[t - (raise_after - 1) * hop])``: every phase of the
    hop grid at once, kept in time order so its autocorrelation counts neighbouring phases (near
    copies of each other) as the dependent samples they are.
    """
    e = np.asarray(errors, dtype=np.float64)
    span = (raise_after - 1) * hop
    if len(e) <= span:
        return np.empty(0)
    return np.minimum.reduce([e[span - j * hop : len(e) - j * hop] for j in range(raise_after)])


def raise_statistic(errors: np.ndarray, hop: int, rules: AlertRules, start: bool = False) -> np.ndarray:
    """Per row, the line at or below which the windows up to it raise an alert: :func:`run_min`,
    or the row's own error over ``rules.raise_at`` where one window that high raises at once.

    A piece's first ``(raise_after - 1) * hop`` rows have too few windows before them for a run;
    where the daemon starts its windows afresh there (``start``: right after a gap in the readings)
    the one-window raise alone can fire, so they count with their error over ``raise_at``. At a
    cross-fitting fold's cut (mostly what pieces are) the readings went on and no window starts
    afresh, and a machine's first readings start once, not a day: those are left out. Counting
    every piece's first rows was tried: TEP's mean detection fell from 0.930 to 0.918 without a
    false alarm less (docs/benchmarks.md, session 38), and counting the data's first rows alone
    took it to 0.841 (session 40): one window there set the extrapolated tail. A file of many
    short segments was promised fewer alerts than their starts raise until gaps counted."""
    low = run_min(errors, hop, rules.raise_after)
    if math.isinf(rules.raise_at):
        return low
    e = np.asarray(errors, dtype=np.float64)
    span = (rules.raise_after - 1) * hop
    alone = e[:span] / rules.raise_at if start else np.empty(0)
    return np.r_[alone, np.maximum(low, e[span:] / rules.raise_at)] if len(low) else alone


def effective_fraction(series: Sequence[np.ndarray]) -> float:
    """Independent samples per sample: 1 / integrated autocorrelation time (summed while above 0.05).

    Each series gets its own time ``tau``; the fraction is ``sum(n_i / tau_i) / sum(n_i)``, so a
    few short pieces (gaps, folds) weigh by their length, not one vote each. The time is measured
    on series of at least ``ACF_MIN`` samples (on those of at least 8 when none is that long: a
    dozen samples of a slow process read as nearly independent); the others get the measured
    series' pooled time. When none can be measured (too short, or flat), each series counts as one
    independent sample: the cautious reading, a piece of overlapping windows is one observation
    until shown otherwise.
    """
    sizes = [len(x) for x in series]
    total = sum(sizes)
    if total == 0:
        return 1.0
    floor = ACF_MIN if max(sizes) >= ACF_MIN else 8
    taus = [_autocorrelation_time(np.asarray(x, dtype=np.float64)) if len(x) >= floor else None for x in series]
    measured = [(n, t) for n, t in zip(sizes, taus, strict=True) if t is not None]
    if not measured:
        return min(len(sizes) / total, 1.0)
    pooled = sum(n for n, _ in measured) / sum(n / t for n, t in measured)  # length-weighted harmonic
    return min(sum(n / (t if t is not None else pooled) for n, t in zip(sizes, taus, strict=True)) / total, 1.0)


def _autocorrelation_time(x: np.ndarray) -> float | None:
    """Integrated autocorrelation time of one series (None when it is flat).

    The autocorrelation comes from an FFT (zero-padded, so it is not circular): ``np.correlate``
    costs O(n^2), and a 400,000-row calibration block took 28 s there.
    """
    if np.ptp(x) == 0:
        return None
    x = x - x.mean()
    size = 1 << (2 * len(x) - 1).bit_length()
    spectrum = np.fft.rfft(x, size)
    acf = np.fft.irfft(spectrum * np.conj(spectrum), size)[: len(x)] / (x @ x)
    tau = 1.0
    for rho in acf[1 : len(x) // 2]:
        if rho <= 0.05:
            break
        tau += 2 * rho
    return float(tau)


def reading_period(data: SensorData, bundle: Bundle) -> float | None:
    """Seconds between the readings the daemon will score, for counting its windows a day: the
    sample period on a regular grid; for irregular data (no grid, no filling) the mean step within
    segments, since the daemon scores every ``hop`` readings, not every ``hop`` median steps (60 %
    of steps at 10 s and 40 % at 0.1 s: a median of 10 s, a mean of 6 s, 1.66x the promised alerts)."""
    if bundle.sample_period is None or bundle.regular or len(data) < 2:
        return bundle.sample_period
    step = np.diff(data.times)
    inside = (np.diff(data.segments) == 0) & (step > 0)
    return float(step[inside].mean()) if inside.any() else bundle.sample_period


def alert_threshold(
    errors: Sequence[np.ndarray], hop: int, rules: AlertRules, steps_per_day: float, target: float,
    starts: Sequence[bool] | None = None, alert_hop: int = 0,
) -> tuple[float, dict]:
    """Threshold for ``target`` false alerts per day from per-segment window errors (one per row).

    errors: the error of the window ending at each row, one array per contiguous segment of
    calibration data (the model never trained on it). steps_per_day: windows the daemon scores a
    day per asset (86400 / (sample period x hop)). starts: per segment, whether the daemon starts
    its windows afresh there (:func:`raise_statistic`); None: none does (cross-fitting's cuts).
    alert_hop: the daemon's hop while an alert is up (0: ``hop``); only the observed count uses it:
    every raise still needs a crossing of the raise statistic, which the threshold bounds.
    """
    if not target > 0:
        raise ValueError(f"false alerts per day must be > 0, got {target}")
    pieces = [e[np.isfinite(e)] for e in (np.asarray(e, dtype=np.float64) for e in errors)]
    raise_after = rules.raise_after
    fresh = [False] * len(pieces) if starts is None else [bool(x) for x in starts]
    if len(fresh) != len(pieces):
        raise ValueError(f"{len(fresh)} start flags for {len(pieces)} pieces of calibration errors")
    stat = [raise_statistic(e, hop, rules, start) for e, start in zip(pieces, fresh, strict=True)]
    pooled = np.concatenate(stat) if stat else np.empty(0)
    if len(pooled) < 10:
        raise ValueError(f"calibration data hold {len(pooled)} alert steps; need at least 10")
    p = min(target / steps_per_day, 0.5)  # per-step probability of a crossing
    eff = effective_fraction([s for s in stat if len(s)])
    n_eff = len(pooled) * eff
    days = sum(len(e) for e in pieces) / hop / steps_per_day
    u = float(np.quantile(pooled, TAIL_QUANTILE))
    excess = pooled[pooled > u] - u
    record: dict = {"target_per_day": target, "steps_per_day": round(steps_per_day, 4), "per_step_rate": p,
                    "raise_after": raise_after, **({} if math.isinf(rules.raise_at) else {"raise_at": rules.raise_at}),
                    "hop": hop, "calibration_days": round(days, 4),
                    "samples": int(len(pooled)), "effective_samples": round(n_eff, 1)}
    frac = len(excess) / len(pooled)
    rate = p * steps_per_day  # the target, unless over a crossing every other step
    if n_eff * p >= MIN_TAIL_EVENTS or len(excess) < 2 or frac <= p:
        if len(excess) >= 2:  # plenty of data, or a rate inside the data's top tenth: the quantile
            threshold = float(np.quantile(pooled, 1 - p))
            record.update(tail="empirical", margin=0.0)
            if n_eff * p >= MIN_TAIL_EVENTS:  # the quantile is a point estimate, over the target about half the
                # time: the order statistic that holds the rate at TAIL_CONFIDENCE (binomial on n_eff, no tail shape)
                fewer = float(stats.binom.ppf(1 - TAIL_CONFIDENCE, max(int(n_eff), 1), p))
                bound = float(np.quantile(pooled, 1 - max(fewer, 1.0) / n_eff))
                if bound > threshold:
                    threshold = bound
                    record.update(tail_note=f"the quantile's {TAIL_CONFIDENCE:.0%} upper bound (binomial)")
            if (pooled == threshold).any():  # on a value seen (an idle stretch's, tied): each repeat scores 1.0
                threshold = just_above(threshold)  # and alerts (the bound's order statistic too, found by review)
        else:  # the top tenth is one tied value (quantized or constant errors): no tail to fit
            threshold = just_above(float(pooled.max()))  # scores >= 1 alert: tied values must not
            record.update(tail="none", margin=0.0,
                          tail_note="fewer than 2 values above the 90th percentile: the line is just above "
                                    "the largest value seen")
        # the rate at the line chosen, not around the target: a line raised to the bound (or above every
        # value seen) crosses less often than the target, and an interval centred on it said otherwise
        # (found by review). Crossings counted on the pooled steps, made effective as the samples are.
        lo, hi = poisson_ci(float(np.sum(pooled >= threshold)) * eff)
        record["promised_ci95"] = [round(steps_per_day * lo / n_eff, 4), round(steps_per_day * hi / n_eff, 4)]
    else:
        sigma = float(excess.mean())
        n_exc = max(len(excess) * eff, 1.0)
        sigma_hi = sigma * 2 * n_exc / float(stats.chi2.ppf(1 - TAIL_CONFIDENCE, 2 * n_exc))
        threshold = u + sigma_hi * math.log(frac / p)
        record.update(tail="exponential", tail_start=u, tail_scale=sigma, tail_fraction=frac,
                      tail_confidence=TAIL_CONFIDENCE, tail_scale_bound=sigma_hi,
                      point_estimate_per_day=round(steps_per_day * frac * math.exp(-(threshold - u) / sigma), 4),
                      margin=round(threshold / float(pooled.max()) - 1.0, 4))
        record["promised_ci95"] = _tail_ci(threshold, u, sigma, frac, len(excess) * eff, steps_per_day)
    threshold = max(threshold, 1e-12)
    record["promised_per_day"] = round(rate, 6)
    capped = f"{target:g} a day is more than one every other scored window: capped at {rate:g}"
    if p > LOOSE_STEP_RATE:  # (said, so a daily or hourly series' alerting is no surprise)
        # the share of the calibration's windows over the line, measured: p is the raise statistic's
        # (raise_after windows in a row), and single windows cross it more often (a review)
        share = float(np.mean(np.concatenate(pieces) >= threshold))
        record["promise_note"] = (f"{capped if rate < target else f'{target:g} a day'}: the alert rule "
                                  f"({raise_after} windows in a row) crosses the line on {100 * p:.2g} % of normal "
                                  f"scored steps, single windows on {100 * share:.2g} % of the calibration's (of "
                                  f"{steps_per_day:.3g} scored a day; the classic limit is 1 %); for a tighter line, "
                                  f"--false-alerts-per-day "
                                  f"{_floor2(LOOSE_STEP_RATE * steps_per_day):g} or lower")
    record["threshold"] = threshold
    record.update(_observed(pieces, threshold, hop, rules, days, alert_hop))
    return threshold, record


def _floor2(x: float) -> float:
    """``x`` to two significant digits, rounded down: a knob said as "this or lower" must not be
    over the rate it is said for (0.288 said as 0.29 was loose again, a review)."""
    k = 1 - math.floor(math.log10(x))
    return math.floor(x * 10**k + 1e-9) / 10**k


def combined_line(
    pieces: Sequence[np.ndarray], terms: Sequence[np.ndarray], threshold: float, record: dict, hop: int,
    rules: AlertRules, alert_hop: int = 0,
) -> tuple[dict, float]:
    """The level term's line for a bundle judged on ``max(error / threshold, term)``
    (``service.level``): ``(record, factor)``, the factor on the term's fitted limit.

    ``threshold`` and ``record``: what :func:`alert_threshold` set on the errors alone, the promise;
    ``terms``: each piece's window terms over the term's fitted limit (0 where none). The term's
    limit is raised by the smallest factor of at least 1 at which the combined score raises no more
    alerts on the held-out normal windows than the error alone did at its line: the term adds no
    false alert there, and the error's line and promise stay as calibrated. Tried first (session
    53): the combined score's own tail, calibrated as the error's is (its shape is not the error's:
    the extrapolated line moved 0.72x to 2.2x on the same data), and one factor on both lines
    (the servers' error line went up with the term's, 0.5993 -> 0.5475 F1).
    """
    parts = [(np.asarray(e, dtype=np.float64) / threshold, np.nan_to_num(np.asarray(t, dtype=np.float64)))
             for e, t in zip(pieces, terms, strict=True)]
    parts = [(e[np.isfinite(e)], t[np.isfinite(e)]) for e, t in parts]
    days, allowed = record["calibration_days"], record["observed_alerts"]

    def observed(factor: float) -> dict:
        return _observed([np.maximum(e, t / factor) for e, t in parts], 1.0, hop, rules, days, alert_hop)

    factor, seen = 1.0, observed(1.0)
    if seen["observed_alerts"] > allowed:  # bisect: the count falls as the term's line rises
        low, high = 1.0, min(max(float(np.max(t)) for _, t in parts if len(t)) * 1.001, 1e300)
        while high / low > 1.001:
            middle = math.sqrt(low * high)
            low, high = (middle, high) if observed(middle)["observed_alerts"] > allowed else (low, middle)
        factor, seen = high, observed(high)
    out = {**record, **seen, "level_factor": round(factor, 6),
           "score": "max(error / threshold, level term): the term's line raised by level_factor until it added "
                    "no alert on the held-out windows (promise and tail: the error's)"}
    return out, factor


def _observed(pieces: list[np.ndarray], threshold: float, hop: int, rules: AlertRules, days: float,
              alert_hop: int = 0) -> dict:
    """Alerts the daemon's raise and clear rules raise on the calibration data (phase 0 of the hop grid)."""
    raises = 0
    judged_by = replace(rules, alert_steps=alert_steps(hop, alert_hop))  # (as bundle_checks.bundle_rules)
    for e in pieces:
        mask, fine = step_masks(np.zeros(len(e), dtype=int), 1, hop, alert_hop)  # (one piece: one segment)
        alert = alert_series(np.asarray(e) / threshold, mask, np.arange(len(e), dtype=np.float64), judged_by,
                             alert_mask=fine)
        raises += int(np.sum(np.diff(np.r_[0, alert]) == 1))
    lo, hi = poisson_ci(raises)
    per_day = raises / days if days > 0 else float("nan")
    return {"observed_alerts": int(raises), "observed_per_day": round(per_day, 4),
            "observed_ci95": [round(lo / days, 4), round(hi / days, 4)] if days > 0 else None}


def poisson_ci(k: float) -> tuple[float, float]:
    """Exact (Garwood) 95 % interval of a Poisson mean after observing ``k`` events."""
    lo = 0.0 if k <= 0 else float(stats.chi2.ppf(0.025, 2 * k) / 2)
    hi = float(stats.chi2.ppf(0.975, 2 * k + 2) / 2)
    return lo, hi


def _tail_ci(threshold: float, u: float, sigma: float, frac: float, n_exc: float, per_day: float) -> list[float]:
    """95 % interval of the rate at ``threshold``: exceedance count (Poisson) and tail scale (chi^2)."""
    n_exc = max(n_exc, 1.0)
    f_lo, f_hi = (frac * v / n_exc for v in poisson_ci(n_exc))
    s_lo = sigma * 2 * n_exc / float(stats.chi2.ppf(0.975, 2 * n_exc))
    s_hi = sigma * 2 * n_exc / float(stats.chi2.ppf(0.025, 2 * n_exc))
    lo = per_day * f_lo * math.exp(-(threshold - u) / s_lo)
    hi = per_day * f_hi * math.exp(-(threshold - u) / s_hi)
    return [round(lo, 4), round(hi, 4)]
