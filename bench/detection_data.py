"""The data sets of the detection benchmark, as (normal training series, labeled test series) pairs.

Why a module of its own: where the data live and how each set is labeled is the part a reader must
trust before any number means anything, so it sits apart from the detectors and the tables.

- simulated: ``training.simulate`` (8 channels); a large and a small (400 rows) training run,
  the same plant's later hours, and short recordings trained on their first 400 rows.
- NAB: real univariate files; trained on the first normal part of each file, tested on the rest.
- TEP: the Tennessee Eastman process (Braatz set), trained on ``d00.dat`` only (see SOURCE.md).

The data root is ``../shared/data`` beside the project root, or ``$SENSORGUARD_DATA``; it is read
when a section runs, never at import time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.detection_pump import TRAIN_ROWS as PUMP_TRAIN_ROWS
from bench.detection_pump import recording as pump_recording
from sensorguard.training.data import SensorData, series_from_frame
from sensorguard.training.simulate import simulate

DATA_ENV = "SENSORGUARD_DATA"
MIN_NORMAL_ROWS = 400
NAB_PROBATION = 0.15, 5000  # NAB's probationary period: 15 % of a file, of at most 5,000 rows (nab/util.py)
RECORDING_ROWS = 1_200  # a test-bench recording: 400 normal rows, then normal and faulty mixed
RECORDING_FAULT_SHARE = 0.35  # of the rows after the normal lead-in
QUICK_NAB_FILES = (
    "realKnownCause/ambient_temperature_system_failure.csv",
    "realKnownCause/ec2_request_latency_system_failure.csv",
    "realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv",
)
TEP_PERIOD_S = 180.0
TEP_FAULT_ROW = 160  # 0-based: rows 161-960 (1-based) of dNN_te.dat are faulty
TEP_FAULTS = tuple(range(1, 22))
TEP_INVISIBLE = (3, 9, 15)  # nearly invisible to every published method; reported, not judged
TEP_CHANNELS = tuple(f"xmeas_{i:02d}" for i in range(1, 42)) + tuple(f"xmv_{i:02d}" for i in range(1, 12))
TEP_START = "2000-01-01T00:00:00Z"  # the files carry no time: rows are stamped from their index


@dataclass(frozen=True)
class Case:
    """One benchmark pair: ``train`` is normal data, ``labels`` marks the anomalous rows of ``test``."""

    name: str
    train: SensorData
    test: SensorData
    labels: np.ndarray


@dataclass(frozen=True)
class TepData:
    """TEP in the small-data protocol: one normal training run and 22 standalone test runs.

    ``tests[0]`` is ``d00_te.dat`` (all normal); ``tests[k]`` is ``dKK_te.dat`` (fault from row 160).
    """

    train: SensorData
    tests: dict[int, SensorData]


def data_root(environ: Mapping[str, str] | None = None) -> Path:
    """``$SENSORGUARD_DATA`` if set, else ``shared/data`` next to the project's own directory."""
    env = os.environ if environ is None else environ
    value = env.get(DATA_ENV)
    if value:
        return Path(value).expanduser()
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


# --- simulated plant -----------------------------------------------------------------------------


def simulated_cases(quick: bool) -> list[Case]:
    """The plant with plenty of history, the same test with only 400 training rows, and the
    same plant's later hours.

    The small case is the product's promise (a new machine with a few hundred rows); the large
    one shows what the model can do when data are no excuse. Their test run is another plant
    (seed 1: another daily phase and short-cycle period), so its normal rows are partly unlike
    anything in training; the third case tests on the hours that follow the training rows of the
    same plant (seed 0, faults injected there only): normal data from the same process that the
    model never saw, the issue's measure of the false-alert promise.
    """
    rows_train, rows_test = (10_000, 8_000) if quick else (30_000, 20_000)
    test = series_from_frame(
        simulate(rows=rows_test, channels=8, seed=1, anomalies=True), "simulated-faults", label_column="anomaly"
    )
    labels = test.labels["anomaly"]
    cases = []
    for rows in (rows_train, 400):
        train = series_from_frame(simulate(rows=rows, channels=8, seed=0), f"simulated-normal[{rows}]")
        name = (
            f"train simulate(rows={rows}, channels=8, seed=0), "
            f"test simulate(rows={rows_test}, channels=8, seed=1, anomalies=True)"
        )
        cases.append(Case(name, train, test, labels))
    total = rows_train + rows_test
    whole = simulate(rows=total, channels=8, seed=0)  # the same normal values as with anomalies=True
    later = simulate(rows=total, channels=8, seed=0, anomalies=True).iloc[rows_train:].reset_index(drop=True)
    train = series_from_frame(whole.iloc[:rows_train].reset_index(drop=True), f"simulated-normal[{rows_train}]")
    test = series_from_frame(later, "simulated-later-faults", label_column="anomaly")
    name = (f"train simulate(rows={total}, channels=8, seed=0) rows 0-{rows_train - 1}, "
            f"test the same with anomalies=True, rows {rows_train}-{total - 1}")
    cases.append(Case(name, train, test, test.labels["anomaly"]))
    return cases


def recordings_cases(quick: bool, count: int | None = None) -> list[Case]:
    """Short test-bench recordings: each trains on its first 400 normal rows, tests on the rest.

    The protocol of the issue's hidden test bench (34 recordings at 1 Hz, a few hundred normal
    rows followed by a mix of normal and faulty operation, trained per recording on the first 400
    rows): here 8 simulated plants (4 with ``--quick``, seeds from 100), 1,200 rows each, faults
    covering about a third of the rows after row 400. Every recording is another plant (seed), so
    the results pool over plants as the hidden bench pools over recordings. ``count`` recordings
    (seeds 100 on) instead: 8 are few to judge a change by (session 40: a change that gained 0.06
    F1 on these 8 lost 0.06 to 0.09 on 24).
    """
    return [split_case(simulate(rows=RECORDING_ROWS, channels=8, seed=seed, anomalies=True,
                                anomaly_rate=RECORDING_FAULT_SHARE, anomalies_from=MIN_NORMAL_ROWS),
                       f"recording seed={seed}", MIN_NORMAL_ROWS)
            for seed in range(100, 100 + (count or (4 if quick else 8)))]


def pump_cases(quick: bool, count: int | None = None) -> list[Case]:
    """The pump test bench (``detection_pump``): each recording trains on its first 400 rows and
    tests on the 800 after them, one fault in them. 24 recordings (``count``; 6 with ``quick``),
    seeds 100 on, so each of the six fault kinds comes four times."""
    cases = []
    for seed in range(100, 100 + (count or (6 if quick else 24))):
        frame, fault = pump_recording(seed)
        cases.append(split_case(frame, f"pump seed={seed} {fault.kind}", PUMP_TRAIN_ROWS))
    return cases


def split_case(frame: pd.DataFrame, name: str, rows: int) -> Case:
    """A labelled frame as a case: trained on its first ``rows`` (normal) rows, tested on the rest."""
    train = series_from_frame(frame.iloc[:rows].drop(columns="anomaly"), f"{name}[train]")
    # the test keeps the trained channels: loading leaves out a column constant in the training rows
    # (a note says so), and `score` reads a bundle's channels by name; the rows did not line up
    rest = frame.iloc[rows:][["timestamp", *train.channels, "anomaly"]].reset_index(drop=True)
    test = series_from_frame(rest, f"{name}[test]", label_column="anomaly")
    return Case(name, train, test, test.labels["anomaly"])


SERVER_ROWS = 4_000  # rows per half of a simulated server: trained on the first, tested on the second


def server_frame(seed: int, rows: int = 2 * SERVER_ROWS) -> pd.DataFrame:
    """A server-like machine at 1-minute samples, 24 channels: 8 load-driven process channels with
    faults injected in the second half (``simulate``), 8 that sit near 0 and spike now and then as
    part of normal work (an error counter, a retry count: each row spikes with probability 1/400,
    by 1 to 10), and 8 event counters (Poisson, their rate following the load). The issue's hidden
    "server machines" sets had such channels (a near-constant channel with rare spikes)."""
    rng = np.random.default_rng(seed + 500)
    frame = simulate(rows=rows, channels=8, seed=seed, anomalies=True, anomaly_rate=0.06,
                     anomalies_from=rows // 2, period_s=60.0)
    load = ((frame["current"] - frame["current"].mean()) / frame["current"].std()).to_numpy()
    for i in range(8):
        spikes = np.where(rng.random(rows) < 1 / 400, rng.uniform(1, 10, rows), 0.0)
        frame[f"rare{i}"] = 0.01 * (rng.random(rows) < 0.02) + spikes
    for i in range(8):
        frame[f"count{i}"] = rng.poisson(np.exp(1.5 + 0.3 * load * rng.uniform(0.5, 1.5)))
    return frame[["timestamp", *[c for c in frame.columns if c not in ("timestamp", "anomaly")], "anomaly"]]


def servers_cases(quick: bool) -> list[Case]:
    """Simulated servers (:func:`server_frame`, seeds 200-203, 2 with ``quick``): each trained on
    its first 4,000 normal rows and tested on the 4,000 after them, about 6 % of them faulty."""
    seeds = range(200, 202 if quick else 204)
    return [split_case(server_frame(seed), f"server seed={seed}", SERVER_ROWS) for seed in seeds]


# --- NAB -----------------------------------------------------------------------------------------


def nab_missing(nab_dir: Path) -> str | None:
    """Why the NAB set cannot be used here, or None when it can."""
    if not (nab_dir / "data").is_dir() or not (nab_dir / "labels" / "combined_windows.json").is_file():
        return f"skipped: NAB data not found under {nab_dir} (set {DATA_ENV} to the folder holding nab/ and tep/)"
    return None


def nab_cases(nab_dir: Path, quick: bool) -> Iterator[Case | str]:
    """Each usable file as a Case, or a one-line reason why a file is skipped.

    A file trains on NAB's probationary period (15 % of its rows, of at most 5,000: 750 at most;
    NAB's labeler drops windows overlapping it) and tests on the rest; files with fewer than
    MIN_NORMAL_ROWS such rows are skipped, and so is one with a labeled row there. The cut used to
    end before the first labeled window: a test label chose how many rows trained.
    """
    windows = json.loads((nab_dir / "labels" / "combined_windows.json").read_text())
    found = sorted(p.relative_to(nab_dir / "data").as_posix() for p in (nab_dir / "data").rglob("*.csv"))
    if quick:
        found = [f for f in QUICK_NAB_FILES if f in found] or found[:3]
    for name in found:
        wins = windows.get(name)
        if wins is None:
            yield f"skip {name}: no entry in combined_windows.json"
        elif not wins:
            yield f"skip {name}: no labeled anomaly window (nothing to detect)"
        else:
            yield _nab_case(name, nab_dir / "data" / name, wins)


def _nab_case(name: str, path: Path, wins: list) -> Case | str:
    frame = pd.read_csv(path)
    stamps = pd.to_datetime(frame["timestamp"])
    label = np.zeros(len(frame), dtype=np.int64)
    for start, end in wins:
        label[((stamps >= pd.Timestamp(start)) & (stamps <= pd.Timestamp(end))).to_numpy()] = 1
    share, most = NAB_PROBATION
    n_train = int(min(np.floor(share * len(frame)), share * most))
    if n_train < MIN_NORMAL_ROWS:
        return f"skip {name}: only {n_train} rows in its probationary period (need {MIN_NORMAL_ROWS})"
    if label[:n_train].any():  # (NAB's labeler keeps them out; checked, not assumed)
        return f"skip {name}: a labeled window overlaps its probationary period"
    frame["anomaly"] = label
    train = series_from_frame(frame.iloc[:n_train].drop(columns="anomaly"), f"{name}[train]")
    test = series_from_frame(frame.iloc[n_train:].reset_index(drop=True), f"{name}[test]", label_column="anomaly")
    return Case(name, train, test, test.labels["anomaly"])


# --- Tennessee Eastman ---------------------------------------------------------------------------


def tep_files() -> tuple[str, ...]:
    return ("d00.dat", "d00_te.dat", *(f"d{k:02d}_te.dat" for k in TEP_FAULTS))


def tep_missing(tep_dir: Path) -> str | None:
    """Why the TEP set cannot be used here, or None when it can."""
    absent = [name for name in tep_files() if not (tep_dir / name).is_file()]
    if absent:
        shown = ", ".join(absent[:3]) + (", ..." if len(absent) > 3 else "")
        return (f"skipped: TEP data not found under {tep_dir} (missing {shown}; "
                f"set {DATA_ENV} to the folder holding nab/ and tep/)")
    return None


def load_tep(tep_dir: Path) -> TepData:
    """Read the 23 files; ``d00.dat`` is stored transposed (52 x 500) and is turned to 500 x 52."""
    train = np.loadtxt(tep_dir / "d00.dat")
    if train.shape[0] == len(TEP_CHANNELS) and train.shape[1] != len(TEP_CHANNELS):
        train = train.T
    tests = {0: np.loadtxt(tep_dir / "d00_te.dat")}
    tests |= {k: np.loadtxt(tep_dir / f"d{k:02d}_te.dat") for k in TEP_FAULTS}
    for name, values in [("d00.dat", train), *((f"test {k}", v) for k, v in tests.items())]:
        if values.ndim != 2 or values.shape[1] != len(TEP_CHANNELS):
            raise ValueError(f"{tep_dir / name}: expected {len(TEP_CHANNELS)} columns, got shape {values.shape}")
    return TepData(
        train=tep_series(train, "tep d00.dat"),
        tests={k: tep_series(v, f"tep d{k:02d}_te.dat") for k, v in tests.items()},
    )


def tep_series(values: np.ndarray, name: str) -> SensorData:
    """One TEP run as SensorData, stamped every 3 minutes from row 0 (each file stands alone)."""
    frame = pd.DataFrame(values, columns=list(TEP_CHANNELS))
    frame.insert(0, "timestamp", pd.date_range(TEP_START, periods=len(values), freq=f"{int(TEP_PERIOD_S)}s"))
    data = series_from_frame(frame, name, time_column="timestamp", channels=TEP_CHANNELS)
    if len(data) != len(values) or data.sample_period != TEP_PERIOD_S:
        raise ValueError(f"{name}: cleaning changed the run ({len(data)} rows, period {data.sample_period})")
    return data
