"""Several machines in one file: each one's rows, and the notes on how a file holds them.

A plant export often holds many machines in one long table: a column names each row's machine
(``asset``, or another name given with ``--asset-column``). Each machine is then its own series,
never stitched to another. Where no such column was named and rows repeat their times, a note
names the column that could be one; where the machines sample at rates twice apart, a note says
one model holds one rate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def machine_rows(assets: np.ndarray) -> dict[str, np.ndarray]:
    """Each machine's row numbers (in order), grouped in one pass rather than a scan per machine."""
    if not len(assets):
        return {}
    codes, names = pd.factorize(np.asarray(assets).astype(str))
    order = np.argsort(codes, kind="stable")
    cuts = np.searchsorted(codes[order], np.arange(1, len(names)))
    return dict(zip(names.tolist(), np.split(order, cuts), strict=True))


MACHINES_MAX = 1000  # distinct values a column naming machines may hold (more: an id per row, a text sensor)


def machine_hint(frame: pd.DataFrame, tcol: str, times: np.ndarray) -> str | None:
    """A note when many rows repeat a timestamp and a text column could name the machines: a file
    whose machine column was named ``Machine`` merged three machines into one series, two thirds of
    its rows dropped as duplicates, and said only that (a walk)."""
    finite = times[np.isfinite(times)]
    repeated = 1.0 - len(np.unique(finite)) / max(len(finite), 1)
    if repeated < 0.1:
        return None
    for col in frame.columns:
        column = frame[col]
        if col == tcol or pd.api.types.is_bool_dtype(column):
            continue
        if pd.api.types.is_numeric_dtype(column):  # a machine number (101, 102): only where each number's
            ids = column.to_numpy(dtype=np.float64)  # rows repeat no time, so it is not a quantized sensor
            if not (np.isfinite(ids).all() and (ids == np.round(ids)).all()
                    and not pd.DataFrame({"m": ids, "t": times}).duplicated().any()):
                continue
        distinct = column.nunique(dropna=True)
        if 2 <= distinct <= min(MACHINES_MAX, len(frame) // 2):
            return (f"{repeated:.0%} of the rows repeat a timestamp, and column {col!r} holds {distinct} distinct "
                    f"values: if it names machines, give --asset-column {col} (each is then its own series)")
    return None


def rates_apart(machines: list[tuple[str, np.ndarray]]) -> str | None:
    """A note when the machines of one file sample at rates twice apart or more: one model holds
    one rate, and the pooled median (35 s for machines at 10 s and 60 s) was neither's (a walk)."""
    steps = {}
    for asset, times in machines:
        diffs = np.diff(np.unique(times[np.isfinite(times)]))
        if len(diffs):
            steps[asset] = float(np.median(diffs))
    if len(steps) < 2 or min(steps.values()) <= 0 or max(steps.values()) < 2 * min(steps.values()):
        return None
    fast, slow = min(steps, key=steps.get), max(steps, key=steps.get)
    return (f"the machines sample at different rates ({fast} every {steps[fast]:g} s, {slow} every "
            f"{steps[slow]:g} s): one model holds one rate, so train machines of one rate together")


def shown_name(asset: str) -> str:
    """A machine's name as a note writes it: quoted when it has spaces at an end or a character not
    printed ("P1 " read as a typo of "P1" in "P1 : none of its rows scored": a walk)."""
    return repr(asset) if asset != asset.strip() or not asset.isprintable() else asset


def spaced_names(assets: list[str]) -> list[str]:
    """The names that another one equals but for spaces at its ends (sorted)."""
    groups: dict[str, list[str]] = {}
    for asset in assets:
        groups.setdefault(asset.strip(), []).append(asset)
    return sorted(a for names in groups.values() if len(names) > 1 for a in names)

