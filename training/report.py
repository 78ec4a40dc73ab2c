"""PNG plots that show at a glance whether a model is any good and why it alerts.

- ``calibration.png``: where the threshold sits in the errors of normal calibration windows.
- ``reconstructions.png``: the calmest, a typical and the worst window, original against
  reconstruction, for the channels that explain the worst one.
- ``scores.png``: the score over time with the alert line, the alert periods the alert machine would
  raise (same rules as the daemon) and any labeled anomalies; below, which channels carry the error.

A file of several machines (an ``asset`` column) gets ``reconstructions_<asset>.png`` and
``scores_<asset>.png`` per machine, each scored and alerted as if alone.

Figures are built with ``matplotlib.figure.Figure`` and saved through the Agg canvas directly, so
making a report never touches pyplot's global backend or window state: it works headless and does
not change plotting elsewhere in the same process.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sensorguard.service.alerts import AlertRules, judge_series, step_masks
from sensorguard.service.bundle import Bundle
from sensorguard.service.bundle_checks import bundle_rules, default_rules
from sensorguard.service.level import LevelRows
from sensorguard.service.scorer import Scorer, Scores
from sensorguard.service.series_faults import window_faults
from sensorguard.training.data import SensorData
from sensorguard.training.evaluate import event_bounds, to_seconds
from sensorguard.training.offline import alive_stamps, level_rows
from sensorguard.training.report_list import forget_earlier, list_plots, listed
from sensorguard.training.series import utc_stamps

MAX_CHANNELS_SHOWN = 4  # small multiples stay readable
TOP_SHARE_CHANNELS = 4
ALERT_COLOR, LABEL_COLOR, LINE_COLOR, LEVEL_COLOR = "tab:red", "tab:orange", "tab:blue", "tab:purple"
NAME_CHARS = 32  # a channel name longer than this is cut in the middle (historian tags pushed the plots aside)
MIN_SPAN = 0.002  # the narrowest alert span drawn, as a share of the time axis (8 of 20,000 rows: under a pixel)


def write_report(
    bundle: Bundle,
    out_dir: Path,
    frame: pd.DataFrame | None = None,
    segments: np.ndarray | None = None,
    times: Any = None,
    rules: AlertRules | None = None,
) -> list[Path]:
    """Write the report PNGs into ``out_dir``; return their paths.

    frame: readings with the bundle's channels (and optionally an ``anomaly`` 0/1 column); times
    come from ``times``, else a ``timestamp`` column, else a datetime index, else row numbers.
    segments: per-row segment ids (no window spans two). Without ``frame`` only the calibration
    plot is written. rules: the alert rules shaded as "alert raised" (the serve defaults if None).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [_save(plot_calibration(bundle), out_dir / "calibration.png")]
    if frame is not None:
        paths += write_series(bundle, out_dir, frame, segments, times, rules)
    return paths


def report_data(bundle: Bundle, out_dir: Path, data: SensorData | None, rules: AlertRules,
                label_column: str | None = None, notes: list[str] | None = None) -> list[Path]:
    """``sensorguard report``: the calibration plot and, per machine in ``data``, its
    reconstructions and score timeline (``scores_<asset>.png`` when the file holds several).
    ``notes`` gets a line per machine with no full window, so nothing to plot (a walk: a file of
    20 rows wrote calibration.png alone, with exit 0 and not a word)."""
    earlier = listed(out_dir)
    list_plots(out_dir, earlier | {"calibration.png"}, adding=True)  # (a report stopped midway: its plots listed)
    paths = write_report(bundle, out_dir)
    if data is not None:
        paths += _write_machines(bundle, out_dir, data, rules, label_column, notes)
    forget_earlier(out_dir, paths, earlier, notes)
    return paths


def _write_machines(bundle: Bundle, out_dir: Path, data: SensorData, rules: AlertRules,
                    label_column: str | None, notes: list[str] | None) -> list[Path]:
    """Each machine's reconstructions and score timeline; a line in ``notes`` for one with none."""
    paths: list[Path] = []
    alive = alive_stamps(data)  # readings refused for their rate keep an alert up, as in score
    for asset, rows in data.blocks():
        frame = pd.DataFrame(data.values[rows], columns=list(bundle.channels))
        frame.insert(0, "timestamp", utc_stamps(data.times[rows]))
        if label_column:
            frame["anomaly"] = data.labels[label_column][rows]
        tag = "" if asset is None else "_" + _file_name(asset)
        excluded = None if data.faulted is None else window_faults(data.faulted[rows], data.segments[rows],
                                                                     bundle.window)
        list_plots(out_dir, {f"reconstructions{tag}.png", f"scores{tag}.png"}, adding=True)
        written = write_series(bundle, Path(out_dir), frame, data.segments[rows], rules=rules, tag=tag,
                               excluded=excluded, alive=alive.get(asset), asset=asset)
        if not written and notes is not None:
            notes.append(f"{'the data' if asset is None else asset}: no window of {bundle.window} samples after "
                         "cleaning, so no score or reconstruction plot")
        paths += written
    return paths


def _file_name(asset: str) -> str:
    """The asset as a file name part: safe characters kept, a short hash when any had to go (so
    ``a/b`` and ``a_b`` never share a file)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", asset)
    return safe if safe == asset else f"{safe}-{hashlib.sha1(asset.encode()).hexdigest()[:6]}"


def write_series(bundle: Bundle, out_dir: Path, frame: pd.DataFrame, segments: np.ndarray | None = None,
                 times: Any = None, rules: AlertRules | None = None, tag: str = "",
                 excluded: np.ndarray | None = None, alive: np.ndarray | None = None,
                 asset: str | None = None) -> list[Path]:
    """``reconstructions<tag>.png`` and ``scores<tag>.png`` of one machine's readings (none when
    shorter than a window); ``excluded``: channels left out per window (sensor faults), ``alive``: the
    stamps that keep the machine alive (``judge_series``), as ``score``."""
    missing = [c for c in bundle.channels if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks the bundle's channels {missing}")
    values = frame[list(bundle.channels)].to_numpy(dtype=np.float64)
    segments = np.zeros(len(frame), dtype=np.int64) if segments is None else np.asarray(segments)
    x = _frame_times(frame, times)
    scorer = Scorer(bundle, device="cpu")
    scores = scorer.score_series(values, segments, excluded)
    if not np.isfinite(scores.score).any():
        return []  # shorter than one window: nothing was scored, so nothing to plot
    labels = frame["anomaly"].to_numpy() if "anomaly" in frame.columns else None
    rules = bundle_rules(rules or default_rules(bundle), bundle)  # (the bundle's raise, as `score`)
    blocked = None if excluded is None else np.asarray(excluded, dtype=bool).any(axis=1)
    judged = judge_scores(bundle, scores, segments, x, rules, alive, level_rows(bundle, values, blocked))  # (once:
    # both plots show its score)
    windows = plot_reconstructions(scorer, values, scores, x, judged[1], excluded)
    timeline = plot_scores(bundle, scores, segments, x, labels, rules, alive, judged)
    if asset is not None:  # each machine's pair named in the picture, not only in its file name (a walk)
        windows.suptitle(f"{asset}: windows and their reconstructions (raw units)")
        timeline.suptitle(asset)
    return [_save(windows, out_dir / f"reconstructions{tag}.png"), _save(timeline, out_dir / f"scores{tag}.png")]


def judge_scores(bundle: Bundle, scores: Scores, segments: np.ndarray, x: np.ndarray, rules: AlertRules,
                 alive: np.ndarray | None = None, level: LevelRows | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(alerts, score)`` per row as ``score`` writes them: the alert machine on the daemon's
    cadence, the level term in (``level``: the rows, ``offline.level_rows``), the score divided by the
    drift widening."""
    mask, alert_mask = step_masks(segments, bundle.window, bundle.hop, bundle.alert_hop)
    return judge_series(scores.score, mask, to_seconds(x), rules, bundle.drift_rule, alive, alert_mask, level)


def plot_calibration(bundle: Bundle) -> Any:
    """Histogram of calibration-window errors with the threshold line (or a note when none stored)."""
    from matplotlib.figure import Figure

    calibration = bundle.calibration or {}
    threshold = float(calibration.get("threshold", bundle.threshold_))
    errors = np.asarray(calibration.get("errors_sample") or [], dtype=np.float64)
    errors = errors[np.isfinite(errors)]
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    method = calibration.get("method", "unknown")
    ax.set_title(f"Calibration errors on normal data (method: {method})")
    ax.set_xlabel("window reconstruction error (standardized units)")
    ax.set_ylabel("windows")
    if len(errors) == 0:
        ax.text(0.5, 0.5, "no calibration errors stored in this bundle", ha="center", va="center",
                transform=ax.transAxes, fontsize=12, color="grey")
        ax.axvline(threshold, color=ALERT_COLOR, linestyle="--", label=f"threshold = {threshold:.4g}")
        ax.set_xlim(0, 2 * threshold)
        ax.legend(loc="upper right")
        return fig
    positive = errors[errors > 0]
    spread = positive.max() / positive.min() if len(positive) > 1 else 1.0
    if spread > 100 and len(positive) == len(errors):  # errors span decades: log bins read better
        lo, hi = np.log10(min(positive.min(), threshold)), np.log10(max(positive.max(), threshold))
        bins = np.logspace(lo, hi, 60)
        ax.set_xscale("log")
    else:
        bins = np.linspace(min(errors.min(), threshold), max(errors.max(), threshold), 60)
    used = calibration.get("windows")  # errors_sample is a sample of them: "2000" read as all (a walk)
    counted = (f"a sample of {len(errors)} of the {used} calibration windows"
               if isinstance(used, int) and used > len(errors) else f"{len(errors)} calibration windows")
    ax.hist(errors, bins=bins, color=LINE_COLOR, alpha=0.75, label=counted)
    above = float(np.mean(errors >= threshold))
    ax.axvline(threshold, color=ALERT_COLOR, linestyle="--", linewidth=2,
               label=f"threshold = {threshold:.4g} ({above:.2%} of windows above)")
    ax.legend(loc="best")  # (upper right hid a histogram's peak: a walk; 60 bins are quick to place around)
    return fig


def plot_reconstructions(scorer: Scorer, values: np.ndarray, scores: Scores, x: np.ndarray,
                         score: np.ndarray | None = None, excluded: np.ndarray | None = None) -> Any:
    """Original vs reconstruction of the lowest-, median- and highest-score windows.

    ``score``: the scores as ``score`` writes them (divided by the drift widening; default the
    scorer's own): the titles showed the undivided one, 8.04 where the scores file said 7.98 (a walk).
    ``excluded``: ``(T, C)`` channels left out of each window (a sensor fault): labelled so, not
    "0% of error" beside a held value (a walk).

    Rows are the channels contributing most to the highest-score window (what explains the worst
    case), the same in every column so the three windows compare directly.
    """
    from matplotlib.figure import Figure

    score = scores.score if score is None else score
    valid = np.flatnonzero(np.isfinite(score))
    ranked = valid[np.argsort(score[valid], kind="stable")]
    picks = [("lowest", ranked[0]), ("median", ranked[len(ranked) // 2]), ("highest", ranked[-1])]
    window = scorer.window
    ends = np.array([end for _, end in picks])
    windows = np.stack([values[end - window + 1 : end + 1].T for end in ends])
    recon = scorer.reconstruct(windows)
    shown = np.argsort(-scores.channel_error[ends[-1]], kind="stable")[:MAX_CHANNELS_SHOWN]
    fig = Figure(figsize=(12, 2.2 * len(shown) + 1), layout="constrained")
    axes = fig.subplots(len(shown), len(picks), squeeze=False)
    for col, (name, end) in enumerate(picks):
        rows = x[end - window + 1 : end + 1]
        for row, ch in enumerate(shown):
            ax = axes[row, col]
            ax.plot(rows, windows[col, ch], color="black", linewidth=1.2, label="original")
            ax.plot(rows, recon[col, ch], color=ALERT_COLOR, linewidth=1.2, linestyle="--",
                    label="reconstruction")
            share = _share(scores.channel_error[end], ch)
            held = excluded is not None and bool(excluded[end, ch])
            said = "sensor fault: held, left out" if held else f"{share:.0%} of error"
            ax.set_ylabel(f"{_short(scorer.channels[ch])}\n({said})", fontsize=9)
            ax.tick_params(labelsize=8)
            if row == 0:
                title = f"{name} score: {score[end]:.3g}\nwindow ending {_fmt(x[end])}"
                ax.set_title(title, fontsize=10)
        for ax in axes[:, col]:  # (only the bottom row was turned: the others' labels overlapped, a walk)
            ax.tick_params(axis="x", labelrotation=30)
    axes[0, 0].legend(loc="best", fontsize=8)
    fig.suptitle("Windows and their reconstructions (raw units)")
    return fig


def plot_scores(
    bundle: Bundle, scores: Scores, segments: np.ndarray, x: np.ndarray, labels: np.ndarray | None,
    rules: AlertRules, alive: np.ndarray | None = None, judged: tuple[np.ndarray, np.ndarray] | None = None,
) -> Any:
    """Score timeline with alert line, alert periods and labels; below, error share of top channels.
    ``judged``: the ``(alerts, score)`` of :func:`judge_scores` when the caller has them (without
    them the level term is left out: it needs the readings, which ``write_series`` passes)."""
    from matplotlib.figure import Figure

    alerts, score = judged or judge_scores(bundle, scores, segments, x, rules, alive)
    fig = Figure(figsize=(13, 7), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    top.plot(*_broken(x, segments, score), color=LINE_COLOR, linewidth=0.8, label="score")
    top.axhline(1.0, color=ALERT_COLOR, linestyle="--", linewidth=1.2, label="alert line (1.0)")
    finite = score[np.isfinite(score) & (score > 0)]
    if len(finite) and finite.max() / max(finite.min(), 1e-12) > 50:
        top.set_yscale("log")
    at_once = f" or one at {rules.raise_at:g}" if rules.raise_at < np.inf else ""
    clear_at = f" or 2 under {min(rules.clear_at, rules.clear_level):g}" if rules.clear_at > 0 else ""
    rule_text = f"raise after {rules.raise_after}{at_once}, clear after {rules.clear_after}{clear_at}, hop {bundle.hop}"
    rule_text += f" ({bundle.alert_step} while up)" if bundle.alert_step < bundle.hop else ""
    _shade(top, x, alerts, ALERT_COLOR, 0.18, "alert raised", segments=segments)
    if labels is not None:
        _shade(top, x, np.asarray(labels) != 0, LABEL_COLOR, 0.35, "labeled anomaly", band=(0.0, 0.06),
               segments=segments)
    with np.errstate(invalid="ignore"):  # only the level term lifts a row over its error: the error's channels
        by_level = score > np.asarray(scores.score) * (1 + 1e-9)  # (below) do not explain it (a walk: NAB's alert)
    _shade(top, x, by_level, LEVEL_COLOR, 0.5, "level term above the error", band=(0.94, 1.0), segments=segments)
    top.set_ylabel("score (1 = alert line)" if bundle.level is None and bundle.drift_rule is None
                   else "score (1 = alert line;\nerror or level term over the line)")
    # rows, not windows: each row scores the window ending there, the daemon only every hop-th
    raised = len(event_bounds(np.asarray(alerts).astype(np.int8))[0])
    top.set_title(f"Anomaly score over time: {raised} alert{'s' * (raised != 1)} raised, "
                  f"{int(np.nansum(score >= 1))} rows at or above 1.0\n({rule_text})", fontsize=10)
    # beside the plot, not on it: top left it hid the first alert's peak (a walk)
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    _plot_shares(bottom, x, scores.channel_error, bundle.channels, bundle.window, segments)
    if np.asarray(x).dtype.kind == "M":  # the month and year beside the ticks, the zone in the label (a walk:
        from matplotlib.dates import AutoDateLocator, ConciseDateFormatter  # "02 00:00" read as local time)

        locator = AutoDateLocator()
        bottom.xaxis.set_major_locator(locator)
        bottom.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        bottom.set_xlabel("time (UTC)")
    else:
        bottom.set_xlabel("time")
    bottom.tick_params(axis="x", labelrotation=20)
    return fig


def _plot_shares(
    ax: Any, x: np.ndarray, channel_error: np.ndarray, channels: tuple[str, ...], window: int,
    segments: np.ndarray | None = None,
) -> None:
    """Stacked share of the window error carried by the channels contributing most overall."""
    totals = np.nansum(channel_error, axis=0)
    # one channel left over is named itself, not "other channels" (a README walk: a band of one)
    shown = len(channels) if len(channels) <= TOP_SHARE_CHANNELS + 1 else TOP_SHARE_CHANNELS
    top = np.argsort(-totals, kind="stable")[:shown]
    row_total = np.nansum(channel_error, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):  # rows without a score: none (were 0, a ramp to them)
        share = np.where(row_total[:, None] > 0, channel_error / row_total[:, None], np.nan)
    pieces = np.zeros(len(share), dtype=np.int64) if segments is None else np.asarray(segments)
    share = (pd.DataFrame(share).groupby(pieces).rolling(window, min_periods=1).mean()  # within each piece
             .reset_index(level=0, drop=True).sort_index().to_numpy())
    stacks = [share[:, j] for j in top]
    names = [_short(channels[j]) for j in top]
    if len(top) < len(channels):
        stacks.append(np.clip(1.0 - np.sum(stacks, axis=0), 0.0, 1.0))
        names.append("other channels")
    if segments is not None:
        x, *stacks = _broken(x, segments, *stacks)
    ax.stackplot(x, *stacks, labels=names, alpha=0.85)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"share of error\n(mean over {window} rows)")
    ax.set_title("Which channels carry the reconstruction error")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # (one row of five ran off the figure)


def _broken(x: np.ndarray, segments: np.ndarray, *series: np.ndarray) -> tuple[np.ndarray, ...]:
    """``x`` and each of ``series`` with a NaN point where a new segment starts (a long gap in the
    readings): the score line and the shares' areas were drawn straight across gaps (a walk)."""
    segments = np.asarray(segments)
    cuts = np.flatnonzero(segments[1:] != segments[:-1]) + 1
    if not len(cuts):
        return (x, *series)
    return (np.insert(np.asarray(x), cuts, np.asarray(x)[cuts]),
            *(np.insert(np.asarray(s, dtype=np.float64), cuts, np.nan) for s in series))


def _shade(
    ax: Any, x: np.ndarray, flags: np.ndarray, color: str, alpha: float, label: str,
    band: tuple[float, float] = (0.0, 1.0), segments: np.ndarray | None = None,
) -> None:
    """Shade each run of flagged rows across ``band`` (fraction of the axes height)."""
    starts, stops = event_bounds(np.asarray(flags).astype(np.int8))
    x = np.asarray(x)
    step = np.median(np.diff(x)) if len(x) > 1 else None  # a typical row's span (datetime64 or float)
    narrowest = (x[-1] - x[0]) * MIN_SPAN if len(x) > 1 else None  # (8 rows of 20,000 were not seen: a walk)
    for i, (a, b) in enumerate(zip(starts, stops, strict=True)):
        # to the next row's time: a run of one row had no width, so it was not drawn (a walk); not across
        # a long gap (the next piece's first row): one row's span instead (a review)
        joined = b < len(x) and (segments is None or segments[b] == segments[b - 1])
        right = x[b] if joined else (x[b - 1] + step if step is not None else x[b - 1])
        if narrowest is not None and right - x[a] < narrowest:
            right = x[a] + narrowest
        ax.axvspan(x[a], right, ymin=band[0], ymax=band[1], color=color, alpha=alpha,
                   label=label if i == 0 else None, linewidth=0)


def _frame_times(frame: pd.DataFrame, times: Any) -> np.ndarray:
    """Plot x values: given times, else the ``timestamp`` column, else a datetime index, else rows."""
    if times is not None:
        raw = times
    elif "timestamp" in frame.columns:
        raw = frame["timestamp"]
    elif isinstance(frame.index, pd.DatetimeIndex):
        raw = frame.index
    else:
        return np.arange(len(frame), dtype=np.float64)
    arr = np.asarray(raw)
    if len(arr) != len(frame):
        raise ValueError(f"times must have one entry per row, got {len(arr)} for {len(frame)} rows")
    if arr.dtype.kind in "iuf":
        return arr.astype(np.float64)
    stamps = pd.to_datetime(pd.Index(raw), utc=True)
    return stamps.tz_localize(None).to_numpy()  # naive UTC datetime64: matplotlib plots it directly


def _short(name: str) -> str:
    """``name`` cut in the middle past ``NAME_CHARS`` (a historian tag's unit and point id stay)."""
    if len(name) <= NAME_CHARS:
        return name
    head = NAME_CHARS // 3  # more of the end: tags of one unit share their start, the point id ends them
    return f"{name[:head]}…{name[-(NAME_CHARS - 1 - head):]}"


def _share(row: np.ndarray, j: int) -> float:
    total = float(np.nansum(row))
    return float(row[j]) / total if total > 0 else 0.0


def _fmt(value: Any) -> str:
    if isinstance(value, np.datetime64):
        return str(value.astype("datetime64[s]")).replace("T", " ") + " UTC"
    return f"row {value:.0f}" if float(value).is_integer() else f"{value:.6g}"


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path
