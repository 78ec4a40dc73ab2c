"""What ``train`` tells its user: the summary it prints and the notes that warn.

The summary says what was chosen from the data (splits, window, hop, latent), how well the model
learned beside two yardsticks, and what the line promises; a note names anything that makes the
promise or the model weaker than it looks (a short span, a yardstick not beaten).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from sensorguard.service.sensors import SensorRules
from sensorguard.training.data import SensorData

DAY_S = 86_400.0


@dataclass(frozen=True)
class TrainSummary:
    rows: dict[str, int]
    window: int
    hop: int
    latent: int
    epochs: int
    best_val_loss: float
    naive_val_loss: float
    pca_val_loss: float
    linear: int
    threshold: float
    method: str
    false_alarms_per_day: float | None
    promise: dict | None
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)
    calibration_data: str = "the calibration block"  # what the line was picked from
    leaders: dict | None = None  # calibrate.line_leaders: the channels that lead the largest held-out errors
    alert_hop: int = 0  # the hop while an alert is up (0: the hop)
    level: str | None = None  # the level term, in words (None: none)

    def _promise_line(self, fa: str) -> str:
        p = self.promise
        if not p:
            return f"false alarms    ~{fa} window exceedances per day expected on normal data"
        lo, hi = p["promised_ci95"]
        # (a negative margin read "tail extrapolated: threshold -40% against the largest value seen": a walk)
        above = p.get("margin", 0) >= 0
        margin = {"exponential": f", tail {'extrapolated' if above else 'fitted'}: threshold {abs(p['margin']):.0%} "
                                 f"{'above' if above else 'below'} the largest held-out raise value seen",
                  "none": ", the top values tied, no tail to fit: the line is just above the largest held-out "
                          "raise value seen",
                  }.get(p["tail"], "")
        if margin:  # (the raise value, not a window's score: calibration.png showed windows 33 % over the
            # largest value seen and 3.5 % of them over the line, a walk)
            margin += "; a raise value: the lowest score of the windows in a row an alert needs"
        return (f"false alerts    {p['promised_per_day']:g} per asset per day promised (95% CI {lo:.3g}-{hi:.3g}"
                f"{margin}); observed {p['observed_alerts']} in {p['calibration_days'] * 24:.3g} h of "
                f"calibration data ({p['effective_samples']:g} effective samples)"
                f"{'; ' + p['promise_note'] if p.get('promise_note') else ''}")

    def _leaders(self) -> str:
        assert self.leaders is not None
        named = ", ".join(f"{name} {share:.0%}" for name, share in self.leaders["shares"])
        return f"led by {named} (share of the {self.leaders['windows']} largest held-out window errors)"

    def lines(self) -> list[str]:
        fa = "n/a" if self.false_alarms_per_day is None else f"{self.false_alarms_per_day:g}"
        rows = ", ".join(f"{k} {v}" for k, v in self.rows.items())
        return [
            f"rows per split  {rows} (the line from {self.calibration_data})",
            f"window          {self.window} samples (hop {self.hop}"
            f"{f', {self.alert_hop} while an alert is up' if self.alert_hop else ''}, latent {self.latent})",
            f"epochs          {self.epochs} (best validation loss {self.best_val_loss:.4g})",
            f"yardsticks      validation loss of naive window means {self.naive_val_loss:.4g}"
            + (f", PCA of rank {self.linear} (the model's linear path) per sample {self.pca_val_loss:.4g}"
               if self.linear else " (no PCA yardstick: the model has no linear path)"),
            f"threshold       {self.threshold:.4g} ({self.method})",
            *([f"level term      {self.level}"] if self.level else []),
            self._promise_line(fa),
            *([f"largest errors  {self._leaders()}"] if self.leaders else []),
            f"time            {self.seconds:.1f} s to fit and calibrate",
            *[f"note            {n}" for n in self.notes],
        ]


def short_span_note(data: SensorData, drift: bool) -> str | None:
    """A note when the longest stretch of one machine's data covers under a day: the alert line
    was calibrated on the hours it saw, and a part of the day or a load it never saw alerts more
    (measured on the simulated plant: 8.3 training hours, 8.9 false alerts a day on the hours
    after them against 1 promised; 0 with the drift rule). None with a day or more, or without a
    sample period (no time step to judge a span by)."""
    if data.sample_period is None or not len(data):
        return None
    # each row stands for one sample period; max - min: a retrain's rows need not be in time order
    span = max(float(np.ptp(data.times[rows])) for _, rows in data.blocks()) + data.sample_period
    if span >= DAY_S:
        return None
    whole = int(span)  # rounded down: 23 h 59 min must not read "24 h, less than a day"
    hours = f"{whole // 3600} h {whole % 3600 // 60} min" if whole >= 3600 else f"{whole // 60} min {whole % 60} s"
    advice = "retrain on a longer stretch" + ("" if drift else ", or train with --drift")
    return (f"the data cover {hours}, less than a day: the alert line was calibrated on conditions like "
            f"these; a part of the day or a load not seen yet will alert more ({advice})")


def yardstick_note(loss: float, naive: float, pca: float, rank: int) -> str | None:
    """The train summary's note when the autoencoder's validation loss does not beat a yardstick,
    naming only those it does not beat (it named PCA too when it beat PCA; found by a README walk)."""
    beaten_by = [f"naive window means ({naive:.4g})"] if loss >= naive else []
    if rank and loss >= pca:
        beaten_by.append(f"PCA of rank {rank} ({pca:.4g})")
    return f"the autoencoder (validation loss {loss:.4g}) does not beat {' or '.join(beaten_by)}" if beaten_by else None


TREND_SHARE = 0.5  # a channel trends when a straight line in time explains this share of its variance


def trend_note(data: SensorData) -> str | None:
    """A note naming the channels that trend through the training rows (a straight line in time
    explains at least ``TREND_SHARE`` of their variance, rows weighted over the machines), such as
    temperatures still warming up. The model saw them only on their way: where they settle, their
    errors grow and the line over-fires (a guessed test bench whose two temperatures warm past the
    training rows: 47.5 % of its normal rows alerted, against 15.3 % without the warm-up;
    docs/benchmarks.md, session 47). None when no channel trends."""
    shares = np.zeros(len(data.channels))
    for _, rows in data.blocks():
        times, values = data.times[rows], data.values[rows]
        if len(times) < 3 or np.ptp(times) == 0:
            continue
        t = (times - times.mean()) / np.ptp(times)
        x = values - values.mean(axis=0)
        spread = (x * x).sum(axis=0)
        slope_part = (t @ x) ** 2 / (t @ t)  # the variance a straight line in time explains
        shares += len(t) * np.divide(slope_part, spread, out=np.zeros_like(spread), where=spread > 0)
    shares /= max(len(data), 1)
    trending = [j for j in np.argsort(-shares, kind="stable") if shares[j] >= TREND_SHARE]
    if not trending:
        return None
    named = ", ".join(f"{data.channels[j]} {100 * shares[j]:.0f} %" for j in trending)
    return (f"trending through the training rows (the share of their variance a straight line in time "
            f"explains): {named}; the model saw them only on their way, so as they move on or settle it will "
            f"alert more: train on rows where they have settled")


def start_note(share: float, windows: int, folds: int, first: float, last: float) -> str:
    """The note for a line led by the training rows' start (``crossfit.start_share``): where that
    stretch is and what to do. ``folds``: the cross-fitting folds; ``first``, ``last``: the earliest
    fold's times (epoch seconds)."""
    def when(ts: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))

    return (f"{100 * share:.0f} % of the {windows} largest held-out errors, which set the line, lie in the "
            f"earliest {100 / folds:.0f} % of the training rows in time ({when(first)} to {when(last)} UTC), "
            "rebuilt there by a model of the later rows: if that was a start-up or a warm-up, the line allows such "
            "errors everywhere and may miss faults in settled operation; `calibrate` the model on normal rows it did "
            "not train on (a later stretch) to set the line from its own errors, or train on rows after the start-up")


STILL_NOTE = 30  # readings unchanged in a row, on a channel that changes on most: said in the summary


def still_note(sensors: SensorRules | None, sample_period: float | None) -> str | None:
    """A note naming channels that changed on most training readings yet held one value for
    ``STILL_NOTE`` readings or more in a row: a sensor stuck while the training rows were recorded.
    Its stuck limit is twice that run, so live it would be called stuck that much later: a walk's
    thermocouple stuck for 30 minutes in training got a limit of 122 readings (an hour) where 10
    were the rule, with nothing said."""
    if sensors is None:
        return None
    still = [(name, lim.stuck_after // 2) for name, lim in zip(sensors.channels, sensors.limits, strict=True)
             if lim.seen is None and lim.stuck_after is not None and lim.stuck_after // 2 >= STILL_NOTE]
    if not still:
        return None
    span = (lambda n: f" ({n * sample_period / 60:.0f} min)") if sample_period else (lambda n: "")
    named = ", ".join(f"{name} {run} readings{span(run)}" for name, run in still)
    return (f"held one value in a row in training, though they change on most readings: {named}. A sensor stuck "
            "then? Its stuck fault now waits twice as long live; leave those rows out and train again")
