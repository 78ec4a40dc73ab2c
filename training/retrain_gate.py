"""The retrain gate: how a candidate and the current model are compared, and when a candidate passes.

Both models are judged on the same held-out block neither trained on, with errors made comparable
across their different scalers (raw units over the held-out variance), and on the same faults: the
known ones and offsets injected into that block, sized by the current model's scale. Kept apart
from ``retrain`` (training, storing, promoting) because ``calibrate --recorded`` applies the same
fault check (``missed_faults``) to a new line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from sensorguard.service.bundle import Bundle
from sensorguard.service.logs import some
from sensorguard.service.scorer import Scorer
from sensorguard.service.series_faults import window_faults
from sensorguard.training.data import SensorData
from sensorguard.training.offline import score_data

WINDOW_RATE_TARGET = 1e-3  # windows above the line a candidate may show beyond the current model's, x2
ERROR_TOLERANCE = 0.05  # candidate mean error may exceed the current one by 5% and still count as "as good"
INJECTED_SIGMAS = 6.0  # the size of the faults injected into held-out data, in the current model's scale


@dataclass(frozen=True)
class Comparison:
    """How a model does on the shared held-out block, and which known faults it catches."""

    false_alarm_rate: float
    mean_error: float
    windows: int
    caught: tuple[str, ...] = ()  # known and injected faults with a window at or above the line
    known: int = 0


@dataclass(frozen=True)
class Probes:
    """Offsets injected into the held-out block (``faults``: name -> series) and the same stretch
    without them (``clean``: None when the block holds no probe). ``quiet``: whether the model the
    stretch was chosen for raises no alert on it (only then can its offsets be judged)."""

    faults: tuple[tuple[str, SensorData], ...] = ()
    clean: SensorData | None = None
    quiet: bool = True


MIN_PROBE_WINDOWS = 2  # a probe needs this many windows of held-out rows in one segment
PROBE_PLACES = 5  # stretches tried per segment for one where the current model is quiet


def injected_faults(holdout: SensorData, window: int, scale: np.ndarray, quiet_for: Bundle | None = None) -> Probes:
    """Faults put into the held-out block: one channel at a time offset by +-``INJECTED_SIGMAS``
    times ``scale`` (the current model's: the same faults for both models, sized by the normal
    it was trained on, not by held-out data that may hold what was learned) for two windows; each
    probe holds only the windows that reach into the offset. The stretch is the first, of the
    middle of each segment (longest first) and then other places along it, on which ``quiet_for``
    raises no alert: an offset counts as caught only where the model is quiet without it
    (:func:`caught`), and a stretch holding the false alarms being learned would judge nothing.
    A segment under four windows gives a shorter probe (its whole length, the offset from its
    first window's end): with 320 to 1,280 rows retrained on, the check was skipped without a word
    and a model trained on a fault was promoted (a walk). None under ``MIN_PROBE_WINDOWS``."""
    probes = Probes()
    for rows in probe_places(holdout, window):
        mask = np.zeros(len(holdout), dtype=bool)
        mask[rows] = True
        clean = holdout.take(mask)
        offset = slice(window - 1, min(3 * window - 1, len(clean)))
        faults = []
        for j, channel in enumerate(holdout.channels):
            for sign in (1, -1):
                values = clean.values.copy()
                values[offset, j] += sign * INJECTED_SIGMAS * scale[j]
                faults.append((f"{channel}{'+' if sign > 0 else '-'}{INJECTED_SIGMAS:g}sd",
                               replace(clean, values=values)))
        probes = Probes(tuple(faults), clean, quiet_for is None or not alerts_on(quiet_for, clean))
        if probes.quiet:
            break
    return probes


def probe_places(holdout: SensorData, window: int) -> list[slice]:
    """Where a probe may go: in each segment of at least ``MIN_PROBE_WINDOWS`` windows (longest
    first), four windows less a row at its middle and then at ``PROBE_PLACES`` places along it, or
    the whole segment when shorter."""
    segments, starts = np.unique(holdout.segments, return_index=True)
    counts = np.bincount(np.searchsorted(segments, holdout.segments))
    out: list[slice] = []
    length = 4 * window - 1
    for k in np.argsort(-counts, kind="stable"):
        n, first = int(counts[k]), int(starts[k])
        if n < MIN_PROBE_WINDOWS * window:
            break
        if n < 4 * window:
            out.append(slice(first, first + n))
            continue
        mid = first + n // 2 - window + 1
        places = [mid, *(int(p) for p in np.linspace(first, first + n - length, PROBE_PLACES))]
        out += [slice(p, p + length) for p in dict.fromkeys(places)]
    return out


def judgeable(known: Sequence[tuple[str, SensorData]], window: int) -> list[tuple[str, SensorData]]:
    """The known faults that hold a whole window (``alerts_on`` judges no shorter one): an alert
    raised within the guard band after an earlier clear is filed from its raise on only, as that band
    is recorded nowhere, and may hold fewer readings than a window."""
    return [(name, fault) for name, fault in known if len(fault) >= window]


def alerts_on(bundle: Bundle, fault: SensorData) -> bool:
    """Whether ``bundle`` raises an alert on ``fault`` under the default alert rules."""
    if len(fault) < bundle.window:
        return False
    return bool(score_data(bundle, fault).alert.any())


def caught(bundle: Bundle, known: Sequence[tuple[str, SensorData]], probes: Probes) -> tuple[str, ...]:
    """The known faults and injected offsets ``bundle`` raises an alert on. An offset counts only
    where the model is quiet on the same stretch without it: a model that alerts on every normal
    window "caught" every offset, so each sane candidate missed them and was refused for good
    (a walk)."""
    names = [name for name, fault in known if alerts_on(bundle, fault)]
    if probes.clean is not None and not alerts_on(bundle, probes.clean):
        names += [name for name, fault in probes.faults if alerts_on(bundle, fault)]
    return tuple(names)


def missed_faults(new: Bundle, old: Bundle, data: SensorData,
                  known: Sequence[tuple[str, SensorData]] = ()) -> list[str]:
    """The faults ``old`` raises an alert on and ``new`` does not: the ``known`` ones and offsets
    injected into ``data`` (``injected_faults``). ``calibrate --recorded`` refuses a new line that
    misses one, as ``retrain`` refuses such a candidate."""
    probes = injected_faults(data, old.window, old.scale_, quiet_for=old)
    mine = set(caught(new, known, probes))
    missed = [name for name in caught(old, known, probes) if name not in mine]
    if probes.clean is not None and not probes.quiet:  # the old line alerts on every stretch: the new one is
        probes = injected_faults(data, old.window, old.scale_, quiet_for=new)  # held to the offsets on its own
        mine = set(caught(new, (), probes))  # (a review: the check was skipped without a word)
        missed += [name for name, _ in probes.faults if name not in mine] if probes.quiet else [
            "every injected offset (neither line is quiet on any stretch of these data)"]
    return missed


def compare(bundle: Bundle, data: SensorData, variance: np.ndarray,
            known: Sequence[tuple[str, SensorData]] = (), probes: Probes = Probes()) -> Comparison:
    """False-alarm rate and variance-normalized mean error of ``bundle`` on normal ``data``, and
    which of the ``known`` faults and injected ``probes`` it catches (:func:`caught`)."""
    scorer = Scorer(bundle)
    scores = scorer.score_series(data.values, data.segments)
    ok = np.isfinite(scores.score)
    weights = 1.0 if bundle.channel_weights_ is None else bundle.channel_weights_
    raw = scores.channel_error[ok] / weights * bundle.scale_**2  # unweighted, back to raw units squared
    normalized = (raw / variance).mean(axis=1)
    return Comparison(
        false_alarm_rate=float(np.mean(scores.score[ok] >= 1)) if ok.any() else 0.0,
        mean_error=float(normalized.mean()) if ok.any() else float("nan"),
        windows=int(ok.sum()),
        caught=caught(bundle, known, probes),
        # (offsets judged only on a quiet stretch; a known fault shorter than a window holds none to judge: counted,
        # "11/12" said that both models missed a fault the served one had raised live, a README walk)
        known=len(judgeable(known, bundle.window)) + (len(probes.faults) if probes.quiet else 0),
    )


def error_variance(holdout: SensorData, scale: np.ndarray) -> np.ndarray:
    """Per channel, what the comparison divides a reconstruction error by: the held-out variance,
    floored at a tenth of the model's ``scale`` squared. Floored at 1e-12 only, a channel flat in
    the held-out rows (a setpoint) turned its small residual into an error of 1e8 that alone
    decided the verdict."""
    return np.maximum(holdout.values.var(axis=0), np.maximum((0.1 * np.asarray(scale)) ** 2, 1e-12))


def judge(candidate: Bundle, current: Bundle | None, holdout: SensorData, variance: np.ndarray,
          known: Sequence[tuple[str, SensorData]], scale: np.ndarray,
          target: float) -> tuple[Comparison, Comparison | None, bool, str]:
    """Both models on the held-out block, and whether the candidate passes, with why.

    The offsets go on a stretch where the current model is quiet. When it alerts on every stretch
    (the process changed, when a retrain is needed most; or the rows are a fault taken as normal),
    it can be held to none: the candidate is then held to them on its own, on a stretch it is quiet
    on, and a promotion says so. When no stretch is quiet
    for either, or the block holds none, the check cannot run and the candidate does not pass,
    known faults or not (a review: known faults alone passed a candidate whose offsets went
    unjudged)."""
    probes = injected_faults(holdout, candidate.window, scale, quiet_for=current)
    alone = current is not None and probes.clean is not None and not probes.quiet
    if alone:
        probes = injected_faults(holdout, candidate.window, scale, quiet_for=candidate)
    cand = compare(candidate, holdout, variance, known, probes)
    # (alone: the current model was judged on no offset; its row counts the known faults only)
    cur = None if current is None else compare(current, holdout, variance, known,
                                                replace(probes, quiet=False) if alone else probes)
    passed, reason = decide(cand, cur, target)
    if cur is None:
        return cand, cur, passed, reason
    if not (probes.clean is not None and probes.quiet):
        unchecked = "its fault check cannot run: " + (
            "the newest 10 % of the data hold no stretch to inject faults into" if probes.clean is None else
            "both models alert on every stretch of the newest 10 % of the data the faults would be injected into")
        return cand, cur, False, (f"{unchecked}; --force promotes it" if passed else f"{reason}; {unchecked}")
    if alone:
        why = []
        if missed := [n for n, _ in probes.faults if n not in cand.caught]:
            why.append(f"misses {len(missed)} of the faults injected into held-out data ({some(missed, 3)})")
        said = (f"the current model {current.version} alerts on every held-out stretch tried, so the candidate "
                "is held to the injected faults on its own")
        if why:
            return cand, cur, False, f"{'; '.join(why)} ({said})" + ("" if passed else f"; {reason}")
        if passed:
            reason += (f"; note: {said}: if those rows were not normal (a fault acknowledged as a false alarm), "
                       "`models rollback`")
    return cand, cur, passed, reason


def decide(cand: Comparison, cur: Comparison | None, target: float) -> tuple[bool, str]:
    """Whether the candidate passes the gate, and why: the reason is printed and stored with the
    version, so a rejected candidate says which check it failed."""
    if cur is None:
        return True, "no current model"
    # false alarms: as few as the current model, or at least within twice the target rate
    far_ok = cand.false_alarm_rate <= max(cur.false_alarm_rate, 2 * target)
    err_ok = cand.mean_error <= cur.mean_error * (1 + ERROR_TOLERANCE)
    missed = [f for f in cur.caught if f not in cand.caught]
    if far_ok and err_ok and not missed:
        return True, "at least as good on held-out data" + (", catches the faults it catches" if cur.caught else "")
    why = []
    if missed:
        more = f" and {len(missed) - 3} more" if len(missed) > 3 else ""  # (the count named 4, the list 3)
        gained = [f for f in cand.caught if f not in cur.caught]  # "faults caught 14/15 14/15" beside
        # "misses 1" read as a contradiction (a walk): each missed another
        also = f" (it catches {len(gained)} the current one misses: {some(gained, 3, quote=False)})" if gained else ""
        why.append(f"misses {len(missed)} fault(s) the current model catches: {', '.join(missed[:3])}{more}{also}")
    if not far_ok:
        why.append(f"more false alarms ({cand.false_alarm_rate:.4f} > {max(cur.false_alarm_rate, 2 * target):.4f})")
    if not err_ok:
        why.append(f"higher error ({cand.mean_error:.4g} > {cur.mean_error:.4g} + {ERROR_TOLERANCE:.0%})")
    return False, "; ".join(why)



UNLIKE_MEDIAN = 1.0  # the median window of "normal" data at or over the current line: not this model's normal


def median_score(bundle: Bundle, data: SensorData) -> float:
    """The median window score (error over the line) of ``data`` under ``bundle`` as it is (NaN:
    no window).

    Why: ``calibrate`` sets a line from these data's errors. One channel in kW where the model
    learned W made every window's error huge, the line went from 0.0044 to 4.5, and the model then
    missed every fault it had caught, with exit 0 (a walk). Normal data the model knows score a
    fraction of the line in the median; half of them over it are other units, another operating
    point or faults, which want a retrain (or labels), not a new line."""
    excluded = None if data.faulted is None else window_faults(data.faulted, data.segments, bundle.window)
    scores = Scorer(bundle).score_series(data.values, data.segments, excluded).score  # (as calibrate: faults out)
    finite = scores[np.isfinite(scores)]
    return float(np.median(finite)) if len(finite) else float("nan")
