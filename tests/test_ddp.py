"""``train --devices N``: Lightning's DDP on CPU processes (gloo on loopback), the same bundle.

Each process takes its share of the same global batches (``GlobalBatches``), so N processes take
the steps one would. Float rounding still differs (DDP averages the halves' gradients), and Adam
magnifies it: on the simulated plant below the alert F1 of a 2-process bundle is no more than 0.02
below the 1-process one (0.635 against 0.562 since the conv path's weight decay), but on other
seeds the two differ as much as two seeds of one process do
(``docs/benchmarks.md``, "Training on more than one process").
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sensorguard.service.bundle_loading import load_bundle
from sensorguard.training import splits
from sensorguard.training.simulate import simulate
from tests.mosquitto import clean_env

ROOT = Path(__file__).resolve().parents[1]

COMPARE = """
import json
from sensorguard.service.alerts import AlertRules
from sensorguard.training.data import series_from_frame
from sensorguard.training.evaluate import detection_metrics
from sensorguard.training.offline import score_data
from sensorguard.training.simulate import simulate
from sensorguard.training.train import TrainOptions, train_bundle

if __name__ == "__main__":
    train = series_from_frame(simulate(rows=10000, channels=4, seed=0), "train", time_column="timestamp",
                              exclude=["anomaly"])
    test = series_from_frame(simulate(rows=8000, channels=4, seed=1, anomalies=True), "test",
                             time_column="timestamp", label_column="anomaly")
    out = {}
    for devices in (1, 2):
        bundle, summary = train_bundle(train, TrainOptions(max_epochs=15, progress=False, seed=0, devices=devices))
        result = score_data(bundle, test, AlertRules())
        out[devices] = {"f1": detection_metrics(result.alert, test.labels["anomaly"])["f1"],
                        "keys": sorted(bundle.state_dict), "window": bundle.window, "epochs": summary.epochs,
                        "processes": bundle.training["processes"]}
    print(json.dumps(out))
"""


def test_global_batches_give_each_process_its_share_of_the_same_batches(monkeypatch):
    dataset = list(range(103))
    monkeypatch.setattr(splits, "_rank_and_world", lambda: (0, 1))
    one = list(splits.GlobalBatches(dataset, 10, 1000, seed=3))
    assert len(one) == 11 and sorted(i for b in one for i in b) == dataset  # one process: every window once
    shares = []
    for rank in range(3):
        monkeypatch.setattr(splits, "_rank_and_world", lambda rank=rank: (rank, 3))
        batches = list(splits.GlobalBatches(dataset, 10, 1000, seed=3))
        assert len(batches) == len(splits.GlobalBatches(dataset, 10, 1000, seed=3)) == 11  # same step count
        shares.append(batches)
    for step, batch in enumerate(one):  # the three shares of each step are exactly that step's batch
        assert sorted(i for share in shares for i in share[step]) == sorted(batch)
    monkeypatch.setattr(splits, "_rank_and_world", lambda: (0, 4))  # a last batch of 3 cannot feed 4
    assert len(list(splits.GlobalBatches(dataset, 10, 1000, seed=3))) == 10


def test_two_cpu_processes_train_a_bundle_as_good_as_one():
    out = subprocess.run([sys.executable, "-c", COMPARE], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env=clean_env(OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    one, two = got["1"], got["2"]
    # two processes trained (else the comparison below holds of one run against itself: a review)
    assert (one["processes"], two["processes"]) == (1, 2)
    assert two["keys"] == one["keys"] and two["window"] == one["window"]  # the same bundle format
    assert one["f1"] > 0.5
    assert two["f1"] >= one["f1"] - 0.02, (one, two)  # as good as one (better is a draw, as another seed)


def test_cli_ddp_relaunches_itself_and_only_the_first_process_writes(tmp_path):
    frame = simulate(rows=2000, channels=3, seed=4)
    frame.to_csv(tmp_path / "normal.csv", index=False)
    out = subprocess.run(
        [sys.executable, "-m", "sensorguard", "train", str(tmp_path / "normal.csv"), "--out", str(tmp_path / "b"),
         "--devices", "2", "--strategy", "ddp", "--max-epochs", "2", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=clean_env(OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("trained bundle ->") == 1
    bundle = load_bundle(tmp_path / "b")
    assert bundle.training["processes"] == 2  # (one process prints one line too: a review)
    assert bundle.channels == tuple(c for c in frame.columns if c not in ("timestamp", "anomaly"))
    assert np.isfinite(bundle.threshold_)


@pytest.mark.parametrize("bad", [["--devices", "0"], ["--strategy", "horovod"]])
def test_bad_devices_or_strategy_is_one_line(tmp_path, bad):
    out = subprocess.run([sys.executable, "-m", "sensorguard", "train", "x.csv", "--out", str(tmp_path / "b"), *bad],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, env=clean_env())
    assert out.returncode == 2 and "Traceback" not in out.stderr and out.stderr.strip()
