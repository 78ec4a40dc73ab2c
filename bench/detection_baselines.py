"""The detectors of the detection benchmark: sensorguard itself and the baselines it must beat.

Why baselines: an autoencoder only earns its complexity if it beats cheap detectors on the same
rows. Every detector is fit on normal data only and is causal: the decision for a row uses that
row and earlier ones (a window ends at its row). Each returns a per-row score normalized so that
1.0 is its own limit (NaN where it has no decision yet, e.g. before the first full window).

Window detectors (``sensorguard``, ``iforest``/``pca`` on flattened windows, ``naive``) share the
bundle's split, scaler, window and threshold method: their limits come from the bundle's
calibration block through ``pick_threshold``, and their alert machine steps every ``hop`` rows,
and every ``alert_hop`` rows while an alert is up, where the daemon would. Per-sample detectors
(``pca_t2q``, ``pca_t2_f`` and the per-sample IsolationForest, ``iforest`` in the TEP section)
follow the classic process-monitoring recipe: StandardScaler on all training rows, limits from the
training statistics themselves (99th percentile, or the F distribution for ``pca_t2_f``), and their
alert machine steps every row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.preprocessing import StandardScaler

from sensorguard.service.alerts import AlertRules, alert_steps, judge_series, step_masks
from sensorguard.service.bundle import Bundle
from sensorguard.service.bundle_checks import default_rules
from sensorguard.service.drift import DriftRule
from sensorguard.service.level import LevelRows
from sensorguard.service.scorer import Scorer, segment_bounds
from sensorguard.service.series_faults import watch_rows, window_faults
from sensorguard.training.calibrate import pick_threshold
from sensorguard.training.data import SensorData
from sensorguard.training.line import reading_period
from sensorguard.training.offline import level_rows
from sensorguard.training.promise import alert_threshold
from sensorguard.training.splits import split_by_time
from sensorguard.training.train import TrainOptions, TrainSummary, train_bundle

LIMIT_LEVEL = 0.99  # the classic monitoring limit: 1 % of normal samples beyond it
VARIANCE_KEPT = 0.90  # PCA keeps the fewest components explaining this share of training variance


@dataclass(frozen=True)
class Fitted:
    """A trained detector. ``score(test)`` gives one score per row, 1.0 = its own limit.

    window, hop: where its alert machine steps (``hop_mask``); 1, 1 means every row. alert_hop: where
    it also steps while its alert is up (``step_masks``; 0: the hop alone).
    promised_per_day: the limit exceedances per day its own calibration predicts on normal data
    (for sensorguard the bundle's promise), None when the sample period is unknown.
    """

    name: str
    window: int
    hop: int
    score: Callable[[SensorData], np.ndarray]
    promised_per_day: float | None
    train_s: float
    info: str = ""
    drift: DriftRule | None = None  # sensorguard's drift rule (widens its line per test series)
    sensor_faults: Callable[[SensorData], np.ndarray] | None = None  # rows with a sensor fault open
    alert_hop: int = 0
    level: Callable[[SensorData], LevelRows | None] | None = None  # sensorguard's level term's rows


@dataclass(frozen=True)
class Detection:
    """One detector on one test series: score, per-row decision (score >= 1) and alert state."""

    name: str
    score: np.ndarray
    decision: np.ndarray
    alert: np.ndarray
    promised_per_day: float | None
    train_s: float
    sensor: np.ndarray | None = None  # rows where the sensor watch holds a fault open (sensorguard)


def detect(fitted: Fitted, test: SensorData, rules: AlertRules = AlertRules()) -> Detection:
    """Score ``test``; rows without a score are neither decided anomalous nor alerted."""
    score = np.asarray(fitted.score(test), dtype=np.float64)
    mask, alert_mask = step_masks(test.segments, fitted.window, fitted.hop, fitted.alert_hop)
    rules = replace(rules, alert_steps=alert_steps(fitted.hop, fitted.alert_hop))  # clear_after spans hops
    level = None if fitted.level is None else fitted.level(test)
    alert, score = judge_series(score, mask, test.times, rules, fitted.drift, alert_mask=alert_mask, level=level)
    decision = np.where(np.isnan(score), False, score >= 1.0)
    sensor = None if fitted.sensor_faults is None else np.asarray(fitted.sensor_faults(test), dtype=bool)
    return Detection(fitted.name, score, decision, alert.astype(bool), fitted.promised_per_day, fitted.train_s,
                     sensor)


def bases(det: Detection) -> list[tuple[str, np.ndarray]]:
    """The 0/1 series an operator view reports: sensorguard's alert state first, then its raw
    ``anomaly`` (score >= 1), then ``alert|sensor``: its alert state or a sensor fault open (what
    an operator is told about: a stuck sensor is a ``sensor_fault`` event, never a process alert,
    so ``alert`` alone counts every stuck fault the simulator injects as missed); for a baseline
    its per-row decision first, then its alert state."""
    if det.name == "sensorguard":
        both = [] if det.sensor is None else [("alert|sensor", det.alert | det.sensor)]
        return [("alert", det.alert), ("anomaly", det.decision), *both]
    return [("decision", det.decision), ("alert", det.alert)]


def promised_per_day(bundle: Bundle) -> float | None:
    """False alerts per day the bundle promises: the alerts record when present, else exceedances."""
    cal = bundle.calibration
    return (cal.get("alerts") or {}).get("promised_per_day", cal.get("expected_false_alarms_per_day"))


def fit_sensorguard(train: SensorData, options: TrainOptions) -> tuple[Fitted, Bundle, TrainSummary]:
    """``train_bundle`` with the given options, scored exactly as ``sensorguard score`` does."""
    started = time.perf_counter()
    bundle, summary = train_bundle(train, options)
    seconds = time.perf_counter() - started
    scorer = Scorer(bundle, device=options.device)

    def watched(test: SensorData) -> tuple[np.ndarray, np.ndarray | None]:
        """As `score`: the readings with faulted channels held, and the ``(T, C)`` faults (None: no watch)."""
        if bundle.sensors is None:
            return test.values, None
        values, faulted = test.values.copy(), np.zeros(test.values.shape, dtype=bool)
        rules = replace(bundle.sensors, silence_s=default_rules(bundle).stale_after)
        for _, rows in test.blocks():
            values[rows], faulted[rows], _ = watch_rows(test.times[rows], test.values[rows], rules)
        return values, faulted

    def score(test: SensorData) -> np.ndarray:
        values, faulted = watched(test)  # a channel with a sensor fault open is held and left out
        excluded = None if faulted is None else window_faults(faulted, test.segments, bundle.window)
        return scorer.score_series(values, test.segments, excluded).score

    def level(test: SensorData) -> LevelRows | None:
        values, faulted = watched(test)  # as `score`: no term where a channel of the window has a fault open
        blocked = None if faulted is None else window_faults(faulted, test.segments, bundle.window).any(axis=1)
        return level_rows(bundle, values, blocked)

    def sensor_faults(test: SensorData) -> np.ndarray:
        faulted = watched(test)[1]
        return np.zeros(len(test), dtype=bool) if faulted is None else faulted.any(axis=1)

    info = f"window {bundle.window}, hop {bundle.hop}, latent {bundle.config.latent}"
    fitted = Fitted("sensorguard", bundle.window, bundle.hop, score, promised_per_day(bundle), seconds, info,
                    bundle.drift_rule, sensor_faults, bundle.alert_hop, level)
    return fitted, bundle, summary


# --- window detectors, calibrated like the bundle ------------------------------------------------


def windows_of(std: np.ndarray, segments: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n, C, window)`` windows inside segments and the row each ends at (as ``score_series``)."""
    pieces, ends = [], []
    starts = np.concatenate([[0], np.flatnonzero(segments[1:] != segments[:-1]) + 1])
    stops = np.concatenate([starts[1:], [len(segments)]])
    for a, b in zip(starts, stops, strict=True):
        if b - a >= window:
            pieces.append(sliding_window_view(std[a:b], window, axis=0))
            ends.append(np.arange(a + window - 1, b))
    if not pieces:
        return np.empty((0, std.shape[1], window), np.float32), np.empty(0, np.int64)
    return np.concatenate(pieces).astype(np.float32), np.concatenate(ends)


def naive_errors(windows: np.ndarray) -> np.ndarray:
    """Each window "reconstructed" by its own per-channel mean: the mean squared deviation from it.

    This is what an autoencoder that learned nothing but the level would score; a model that does
    not beat it has not learned the plant's dynamics.
    """
    return windows.var(axis=2).mean(axis=1)


def fit_window(kind: str, bundle: Bundle, train: SensorData, options: TrainOptions) -> Fitted:
    """``iforest``, ``pca`` (as many components as the bottleneck) or ``naive`` on the bundle's windows.

    Fit on the bundle's training block, threshold from its calibration block with the bundle's
    method and rate, in the bundle's standardized units: the same footing as the autoencoder.
    """
    started = time.perf_counter()
    window, hop = bundle.window, bundle.hop
    splits = split_by_time(train, options.split)

    def std(values: np.ndarray) -> np.ndarray:
        return ((values - bundle.center_) / bundle.scale_).astype(np.float32)

    # the whole window's error, not sensorguard's newest samples: measured in session 35, the focused
    # variants were the weaker baselines (recordings alert F1 pca 0.43 -> 0.28, naive 0.40 -> 0.12)
    if kind == "naive":
        errors = naive_errors
    else:
        train_w, _ = windows_of(std(splits.train.values), splits.train.segments, window)
        errors = _window_model(kind, train_w, bundle.config.latent, options.seed)
    cal_w, cal_rows = windows_of(std(splits.calibration.values), splits.calibration.segments, window)
    period = reading_period(splits.calibration, bundle)  # (the mean step on irregular data, as train counts)
    per_day = 86400.0 / (period * hop) if period else None
    method, rate = calibration_rule(bundle, options)
    if method == "alerts":  # the bundle's rule: a threshold for N false alerts a day through the raise rule
        cal_errors = errors(cal_w)
        seg = splits.calibration.segments[cal_rows]
        cuts = np.flatnonzero(np.diff(seg)) + 1
        pieces = np.split(cal_errors, cuts)
        # as train: a piece's first windows count where a gap in the readings ends just before it
        fresh = splits.calibration.fresh_starts()
        first_rows = segment_bounds(len(splits.calibration), splits.calibration.segments)  # (segment ids count from 0)
        starts = [bool(fresh[first_rows[seg[i]][0]]) for i in np.r_[0, cuts]] if len(seg) else [False] * len(pieces)
        alerts = bundle.calibration["alerts"]
        rules = AlertRules(raise_after=alerts["raise_after"], raise_at=bundle.raise_at)
        threshold, promise = alert_threshold(pieces, hop, rules, per_day, alerts["target_per_day"], starts,
                                             bundle.alert_hop)
        record = {"method": f"alerts ({promise['tail']} tail)", "windows": len(cal_w),
                  "expected_false_alarms_per_day": promise["promised_per_day"]}
    else:
        threshold, record = pick_threshold(errors(cal_w), method, rate, per_day)

    def score(test: SensorData) -> np.ndarray:
        out = np.full(len(test), np.nan)
        test_w, rows = windows_of(std(test.values), test.segments, window)
        if len(test_w):
            out[rows] = errors(test_w) / threshold
        return out

    seconds = time.perf_counter() - started
    info = f"window {window}, threshold {record['method']} from {record['windows']} calibration windows"
    if kind != "iforest":  # a reconstruction error: comparable with sensorguard's validation loss
        val_w, _ = windows_of(std(splits.validation.values), splits.validation.segments, window)
        info += f", validation error {float(np.mean(errors(val_w))):.4g}" if len(val_w) else ""
    return Fitted(kind, window, hop, score, record["expected_false_alarms_per_day"], seconds, info,
                  alert_hop=bundle.alert_hop)  # (the bundle's alert machine, as every window detector's)


def calibration_rule(bundle: Bundle, options: TrainOptions) -> tuple[str, float]:
    """The threshold method and window exceedance rate the bundle was calibrated with.

    Read from its calibration record first, so the baselines follow the bundle even when the rate
    is derived (e.g. from a promised number of alerts per day) rather than given in the options.
    """
    cal = bundle.calibration
    method = cal.get("requested_method") or cal.get("method") or options.threshold_method
    rate = cal.get("false_alarm_rate") or options.false_alarm_rate or 1e-3
    return str(method), float(rate)


def _window_model(kind: str, train_w: np.ndarray, components: int, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """Fit a sklearn model on flattened windows; return its error function (higher = more anomalous)."""
    flat = train_w.reshape(len(train_w), -1)
    if kind == "iforest":
        forest = IsolationForest(n_estimators=100, random_state=seed, n_jobs=1).fit(flat)
        return lambda w: -forest.score_samples(w.reshape(len(w), -1))
    if kind == "pca":
        pca = PCA(n_components=components, random_state=seed).fit(flat)

        def recon_error(w: np.ndarray) -> np.ndarray:
            x = w.reshape(len(w), -1)
            return np.mean((pca.inverse_transform(pca.transform(x)) - x) ** 2, axis=1)

        return recon_error
    raise ValueError(f"unknown window detector {kind!r}")


# --- per-sample process-monitoring detectors -----------------------------------------------------


@dataclass(frozen=True)
class PcaMonitor:
    """PCA on standardized samples: Hotelling T^2 in the kept subspace, Q (SPE) in the residual."""

    scaler: StandardScaler
    mean_: np.ndarray
    loadings_: np.ndarray  # (C, a)
    eigen_: np.ndarray  # (a,) variances of the kept components
    n_train: int

    @property
    def components(self) -> int:
        return len(self.eigen_)

    def statistics(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = self.scaler.transform(values) - self.mean_
        t = x @ self.loadings_
        t2 = np.sum(t**2 / self.eigen_, axis=1)
        q = np.sum((x - t @ self.loadings_.T) ** 2, axis=1)
        return t2, q

    def t2_f_limit(self, level: float = LIMIT_LEVEL) -> float:
        """T2_lim = a(n-1)(n+1) / (n(n-a)) F_{a,n-a}(level), the textbook limit for new samples."""
        a, n = self.components, self.n_train
        return a * (n - 1) * (n + 1) / (n * (n - a)) * float(stats.f.ppf(level, a, n - a))


def fit_pca_monitor(values: np.ndarray, variance: float = VARIANCE_KEPT) -> PcaMonitor:
    scaler = StandardScaler().fit(values)
    pca = PCA().fit(scaler.transform(values))
    a = int(np.searchsorted(np.cumsum(pca.explained_variance_ratio_), variance) + 1)
    a = min(a, len(pca.explained_variance_))
    return PcaMonitor(scaler, pca.mean_, pca.components_[:a].T, pca.explained_variance_[:a], len(values))


def fit_pca_t2q(train: SensorData) -> Fitted:
    """Alarm when T^2 or Q exceeds the 99th percentile of its training values (score = the larger ratio)."""
    started = time.perf_counter()
    monitor = fit_pca_monitor(train.values)
    t2_train, q_train = monitor.statistics(train.values)
    t2_lim = float(np.quantile(t2_train, LIMIT_LEVEL))
    q_lim = float(np.quantile(q_train, LIMIT_LEVEL))
    q_lim = q_lim if q_lim > 1e-12 else np.inf  # all variance kept (one channel): Q is identically 0

    def score(test: SensorData) -> np.ndarray:
        return _rowwise(test.values, lambda v: np.maximum(*_ratios(monitor.statistics(v), (t2_lim, q_lim))))

    info = f"{monitor.components} of {len(train.channels)} components, T2 lim {t2_lim:.4g}, Q lim {q_lim:.4g}"
    return Fitted("pca_t2q", 1, 1, score, _promise(train), time.perf_counter() - started, info)


def fit_pca_t2_f(train: SensorData) -> Fitted:
    """Hotelling T^2 alone against the F-distribution limit at 99 % (same components as pca_t2q)."""
    started = time.perf_counter()
    monitor = fit_pca_monitor(train.values)
    t2_lim = monitor.t2_f_limit()

    def score(test: SensorData) -> np.ndarray:
        return _rowwise(test.values, lambda v: monitor.statistics(v)[0] / t2_lim)

    info = f"{monitor.components} components, n {monitor.n_train}, T2 lim (F, 99 %) {t2_lim:.4g}"
    return Fitted("pca_t2_f", 1, 1, score, _promise(train), time.perf_counter() - started, info)


def fit_iforest_rows(train: SensorData, seed: int, name: str = "iforest_row") -> Fitted:
    """IsolationForest on single standardized samples, limit at the 99th percentile of training scores."""
    started = time.perf_counter()
    scaler = StandardScaler().fit(train.values)
    forest = IsolationForest(n_estimators=100, random_state=seed, n_jobs=1).fit(scaler.transform(train.values))
    limit = float(np.quantile(-forest.score_samples(scaler.transform(train.values)), LIMIT_LEVEL))

    def score(test: SensorData) -> np.ndarray:
        return _rowwise(test.values, lambda v: -forest.score_samples(scaler.transform(v)) / limit)

    info = f"per sample, 100 trees, random_state {seed}, limit {limit:.4g}"
    return Fitted(name, 1, 1, score, _promise(train), time.perf_counter() - started, info)


def _ratios(statistics: tuple[np.ndarray, ...], limits: tuple[float, ...]) -> list[np.ndarray]:
    return [s / lim for s, lim in zip(statistics, limits, strict=True)]


def _rowwise(values: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``fn`` on the complete rows only; a row with a missing value gets no score (NaN)."""
    out = np.full(len(values), np.nan)
    ok = np.isfinite(values).all(axis=1)
    if ok.any():
        out[ok] = fn(values[ok])
    return out


def _promise(train: SensorData) -> float | None:
    """A 99 % limit on single samples promises 1 % of normal samples beyond it: this many per day."""
    return (1 - LIMIT_LEVEL) * 86400.0 / train.sample_period if train.sample_period else None
