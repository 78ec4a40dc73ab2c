"""A synthetic plant: correlated sensor channels driven by one shared load, with labeled faults.

Real plants are hard to share, so demos, tests and benchmarks need data that behaves like one: the
channels of a machine move together because they answer the same load (a pump working harder draws
more current, moves more flow and heats up), each with its own gain, lag and inertia, plus small
dynamics of its own and sensor noise. An autoencoder learns exactly that shared structure, so the
faults injected here are the ones it should catch: a value jumping (``spike``, ``level_shift``),
creeping away (``drift``), freezing (``stuck``), leaving the others (``decouple``, the broken
correlation a univariate threshold never sees) or getting noisy (``noise_burst``).

Sizes are relative to each channel's own spread (its standard deviation over the frame), 3 to 8 of
them for spikes, shifts and drifts: clearly abnormal, not absurd. Everything is vectorized and
seeded by one ``numpy.random.Generator``, so a seed always gives the same frame.

>>> frame = simulate(rows=1000, channels=3, seed=1)
>>> list(frame.columns)
['timestamp', 'temp_in', 'temp_out', 'pressure', 'anomaly']
>>> int(frame["anomaly"].sum())
0
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.signal import lfilter

ANOMALY_KINDS: tuple[str, ...] = ("spike", "level_shift", "drift", "stuck", "decouple", "noise_burst")
MIN_EVENT, MAX_EVENT = 10, 300  # rows per injected event
SPIKE_MAX = 30  # a spike is short even when events may be long
MIN_GAP = 50  # normal rows kept between two events, so each event is its own
SIZE_RANGE = (3.0, 8.0)  # fault size in channel standard deviations
DAY_S = 86_400.0


@dataclass(frozen=True)
class ChannelSpec:
    """How one channel answers the load: ``level + gain * lowpass(load delayed by lag_s)``.

    tau_s: first-order inertia (temperatures are slow, currents are fast); own_sd and noise_sd:
    the channel's private slow dynamics and its white sensor noise, in the channel's units.
    """

    name: str
    level: float
    gain: float
    lag_s: float
    tau_s: float
    own_sd: float
    noise_sd: float


NAMED_CHANNELS: tuple[ChannelSpec, ...] = (
    ChannelSpec("temp_in", 40.0, 3.0, 0.0, 120.0, 0.4, 0.15),
    ChannelSpec("temp_out", 55.0, 5.0, 30.0, 180.0, 0.5, 0.2),
    ChannelSpec("pressure", 6.0, 0.8, 0.0, 5.0, 0.08, 0.05),
    ChannelSpec("flow", 120.0, 15.0, 0.0, 2.0, 2.0, 1.5),
    ChannelSpec("current", 30.0, 6.0, 0.0, 1.0, 0.7, 0.5),
    ChannelSpec("vibration", 2.0, 0.4, 5.0, 2.0, 0.08, 0.08),
    ChannelSpec("speed", 1500.0, 120.0, 0.0, 10.0, 12.0, 5.0),
    ChannelSpec("power", 75.0, -15.0, 0.0, 3.0, 2.0, 1.0),  # negative: a generator-like response
)


def channel_specs(channels: int, rng: np.random.Generator) -> tuple[ChannelSpec, ...]:
    """The named plant channels first, then ``ch09``, ``ch10``... with random responses."""
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    specs = list(NAMED_CHANNELS[:channels])
    for i in range(len(specs), channels):
        gain = rng.uniform(0.5, 5.0) * rng.choice([-1.0, 1.0])
        specs.append(
            ChannelSpec(
                f"ch{i + 1:02d}",
                level=float(rng.uniform(0.0, 100.0)),
                gain=float(gain),
                lag_s=float(rng.uniform(0.0, 30.0)),
                tau_s=float(rng.uniform(1.0, 120.0)),
                own_sd=abs(float(gain)) * 0.15,
                noise_sd=abs(float(gain)) * 0.07,
            )
        )
    return tuple(specs)


def simulate(
    rows: int = 20_000,
    channels: int = 8,
    seed: int = 0,
    anomalies: bool = False,
    period_s: float = 1.0,
    start: str = "2026-01-01T00:00:00Z",
    anomaly_rate: float = 0.03,
    anomalies_from: int = 0,
) -> pd.DataFrame:
    """A frame of ``rows`` regular readings: ``timestamp`` (UTC), the channels, ``anomaly`` (0/1).

    With ``anomalies`` about ``anomaly_rate`` of the rows from ``anomalies_from`` on are covered by
    non-overlapping faults of every kind in :data:`ANOMALY_KINDS` (cycled in random order), 10 to
    300 rows each; the rows before ``anomalies_from`` stay normal (a recording's normal lead-in).
    The normal values never depend on ``anomalies``: the same seed gives the same plant either way.
    """
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    if not period_s > 0:
        raise ValueError(f"period_s must be > 0, got {period_s}")
    if not 0 <= anomaly_rate < 0.5:
        raise ValueError(f"anomaly_rate must be in [0, 0.5), got {anomaly_rate}")
    if not 0 <= anomalies_from < rows:
        raise ValueError(f"anomalies_from must be in [0, rows), got {anomalies_from}")
    rng = np.random.default_rng(seed)
    specs = channel_specs(channels, rng)
    times = _timestamps(start, rows, period_s)
    values = _plant_values(specs, times, period_s, rng)
    labels = np.zeros(rows, dtype=np.int64)
    if anomalies:
        scales = values.std(axis=0)
        for kind, first, length, ch in _plan_events(rows - anomalies_from, channels, anomaly_rate, rng):
            first += anomalies_from
            seg = slice(first, first + length)
            values[seg, ch] = fault(values[:, ch], kind, first, length, rng, scale=float(scales[ch]))
            labels[seg] = 1
    frame = pd.DataFrame(values, columns=[s.name for s in specs])
    frame.insert(0, "timestamp", times)
    frame["anomaly"] = labels
    return frame


def inject(
    frame: pd.DataFrame,
    kind: str,
    start: int,
    length: int,
    channel: str,
    rng: np.random.Generator,
    scale: float | None = None,
) -> pd.DataFrame:
    """A copy of ``frame`` with one fault on ``channel`` at rows ``start:start+length``, labeled.

    Lets tests and demos put a chosen fault at a chosen place. ``scale`` (default: the channel's
    standard deviation over the frame) is the unit of the fault's size. Only the labeled rows of
    that one channel change; ``anomaly`` is set to 1 there (and created as zeros if missing).
    """
    if channel not in frame.columns:
        raise ValueError(f"channel {channel!r} is not a column of the frame")
    if length < 1 or start < 0 or start + length > len(frame):
        raise ValueError(f"rows {start}:{start + length} are outside the frame of {len(frame)} rows")
    out = frame.copy()
    column = out[channel].to_numpy(dtype=np.float64, copy=True)
    size = float(np.nanstd(column)) if scale is None else float(scale)
    column[start : start + length] = fault(column, kind, start, length, rng, scale=size)
    out[channel] = column
    labels = out["anomaly"].to_numpy(copy=True) if "anomaly" in out else np.zeros(len(out), dtype=np.int64)
    labels[start : start + length] = 1
    out["anomaly"] = labels
    return out


def fault(
    column: np.ndarray, kind: str, start: int, length: int, rng: np.random.Generator, scale: float
) -> np.ndarray:
    """The faulty values of ``column[start:start+length]`` (a new array; ``column`` is untouched).

    Every returned value differs from the original, so the label marks exactly what changed.
    """
    if kind not in ANOMALY_KINDS:
        raise ValueError(f"kind must be one of {ANOMALY_KINDS}, got {kind!r}")
    if not scale > 0:
        scale = 1.0  # a flat channel still needs a visible fault
    seg = np.asarray(column[start : start + length], dtype=np.float64)
    size = rng.uniform(*SIZE_RANGE) * scale * rng.choice([-1.0, 1.0])
    steps = np.arange(length)
    if kind == "spike":  # a sharp peak, decaying both ways, never zero inside the event
        centre = rng.integers(0, length)
        return seg + size * np.exp(-np.abs(steps - centre) / max(length / 6.0, 1.0))
    if kind == "level_shift":
        return seg + size
    if kind == "drift":  # ramps from one step to the full size
        return seg + size * (steps + 1) / length
    if kind == "stuck":  # the sensor freezes at its last good reading
        held = column[start - 1] if start > 0 else column[min(start + length, len(column) - 1)]
        stuck = np.full(length, held, dtype=np.float64)
        same = stuck == seg
        stuck[same] += 1e-3 * scale  # a frozen value equal to a true one by chance is still frozen
        return stuck
    if kind == "decouple":  # follows an inverted, wandering load of its own instead of the plant's
        mean = seg.mean()
        walk = np.cumsum(rng.normal(size=length))
        walk = walk / max(np.abs(walk).max(), 1e-12)
        return 2 * mean - seg + 0.5 * abs(size) * walk + 0.5 * size
    noise = rng.normal(0.0, abs(size) / 3.0, size=length)  # noise_burst: peaks near 3-8 sd
    noise[noise == 0] = abs(size) / 3.0
    return seg + noise


def _timestamps(start: str, rows: int, period_s: float) -> pd.DatetimeIndex:
    first = pd.Timestamp(start)
    first = first.tz_localize("UTC") if first.tzinfo is None else first.tz_convert("UTC")
    return pd.date_range(first, periods=rows, freq=pd.Timedelta(seconds=period_s))


def _plant_values(
    specs: tuple[ChannelSpec, ...], times: pd.DatetimeIndex, period_s: float, rng: np.random.Generator
) -> np.ndarray:
    """``(rows, channels)`` readings; the load is simulated with a warm-up prefix so lags and
    filters start in their steady state instead of ringing at row 0."""
    rows = len(times)
    warmup = int(min(max(max(s.lag_s + 5 * s.tau_s for s in specs) / period_s, 1), 10_000))
    n = rows + warmup
    seconds = (times[0] - pd.Timestamp("1970-01-01", tz="UTC")).total_seconds()
    t = seconds + (np.arange(n) - warmup) * period_s
    load = _load(t, period_s, rng)
    out = np.empty((rows, len(specs)))
    for j, spec in enumerate(specs):
        lag = int(round(spec.lag_s / period_s))
        response = _lowpass(np.concatenate([np.full(lag, load[0]), load[: n - lag]]), spec.tau_s, period_s)
        own = ar1(n, period_s, tau_s=60.0, rng=rng) * spec.own_sd
        noise = rng.normal(0.0, spec.noise_sd, size=n)
        out[:, j] = (spec.level + spec.gain * response + own + noise)[warmup:]
    return out


def _load(t: np.ndarray, period_s: float, rng: np.random.Generator) -> np.ndarray:
    """The shared load: a slow wandering process, a daily cycle and a short cycle of minutes."""
    wander = ar1(len(t), period_s, tau_s=1800.0, rng=rng)
    daily = np.sin(2 * np.pi * (t % DAY_S) / DAY_S + rng.uniform(0, 2 * np.pi))
    short_period = rng.uniform(180.0, 420.0)
    short = np.sin(2 * np.pi * t / short_period + rng.uniform(0, 2 * np.pi))
    return wander + 0.8 * daily + 0.4 * short


def ar1(n: int, period_s: float, tau_s: float, rng: np.random.Generator) -> np.ndarray:
    """A unit-variance AR(1) process with time constant ``tau_s``, started in its stationary state."""
    phi = float(np.exp(-period_s / tau_s))
    innovations = rng.normal(size=n) * np.sqrt(1.0 - phi**2)
    first = rng.normal()
    out, _ = lfilter([1.0], [1.0, -phi], innovations, zi=[phi * first])
    return out


def _lowpass(x: np.ndarray, tau_s: float, period_s: float) -> np.ndarray:
    """First-order inertia (exponential smoothing with time constant ``tau_s``), started at x[0]."""
    a = float(np.exp(-period_s / tau_s))
    out, _ = lfilter([1.0 - a], [1.0, -a], x, zi=[a * x[0]])
    return out


def _plan_events(
    rows: int, channels: int, rate: float, rng: np.random.Generator
) -> list[tuple[str, int, int, int]]:
    """Non-overlapping ``(kind, start, length, channel)`` events covering about ``rate * rows`` rows.

    Lengths are drawn first; the free rows are then scattered between events (each keeps at least
    ``MIN_GAP`` normal rows on both sides), so placement never needs retries.
    """
    target = rate * rows
    kinds: list[str] = []
    lengths: list[int] = []
    while sum(lengths) < target:
        if len(kinds) == len(lengths):  # every kind once per cycle, in a random order
            kinds += [str(k) for k in rng.permutation(ANOMALY_KINDS)]
        top = SPIKE_MAX if kinds[len(lengths)] == "spike" else MAX_EVENT
        length = int(np.exp(rng.uniform(np.log(MIN_EVENT), np.log(top + 1))))
        lengths.append(min(max(length, MIN_EVENT), top))
    while lengths and sum(lengths) + (len(lengths) + 1) * MIN_GAP > rows:
        lengths.pop()
    n = len(lengths)
    if n == 0:
        return []
    free = rows - sum(lengths) - (n + 1) * MIN_GAP
    offsets = np.sort(rng.integers(0, free + 1, size=n))
    before = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    starts = offsets + before + (np.arange(n) + 1) * MIN_GAP
    chans = rng.integers(0, channels, size=n)
    return [(kinds[i], int(starts[i]), lengths[i], int(chans[i])) for i in range(n)]
