"""The cost of a shadow model on the daemon's scoring worker: windows/s of ``Daemon.score_batch``
(forward pass, alert machines, metrics) without a shadow and with one (a second forward pass
and a second alert machine per window), measured alternately in one run on the same threads.

Run ``python bench/shadow.py`` (``--quick``: fewer rounds). The daemon is built but never
started (no broker): the worker's scoring step is called directly on ready batches of 1,000
assets' windows, as the worker gets them from the ingest queue. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.scoring import make_bundle, make_config  # noqa: E402
from sensorguard.service.asset_buffer import DueWindow  # noqa: E402
from sensorguard.service.config import Settings  # noqa: E402
from sensorguard.service.daemon import Daemon  # noqa: E402
from sensorguard.service.scorer import Scorer  # noqa: E402
from sensorguard.service.shadow import Shadow  # noqa: E402


def batches(channels: int, window: int, assets: int, size: int, count: int) -> list[list[DueWindow]]:
    rng = np.random.default_rng(0)
    out, ts = [], 0.0
    for _ in range(count):
        batch = []
        for i in range(size):
            ts += 1.0
            batch.append(DueWindow(f"site/asset-{i % assets}", ts, rng.normal(size=(channels, window)), 0.0))
        out.append(batch)
    return out


def rate(daemon: Daemon, work: list[list[DueWindow]]) -> float:
    started = time.perf_counter()
    for batch in work:
        daemon.score_batch(batch)
    return sum(len(b) for b in work) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 3 if args.quick else 7
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'model':34}{'batch':>7}{'no shadow w/s':>15}{'shadow w/s':>13}{'ratio':>8}")
    for channels, window, hidden in ((8, 32, 32), (8, 64, 64)):
        bundle = replace(make_bundle(make_config(channels, window, hidden)), name="bench", version="v0001",
                         sample_period=1.0)
        candidate = replace(bundle, version="v0002", threshold_=2.0)
        for size in (64, 512):
            daemon = Daemon(Settings(model="bench", metrics_port=0), bundle)
            work = batches(channels, window, 1000, size, max(4, 20_000 // size))
            rate(daemon, work[:2])  # warm-up: torch's first calls, the assets' first states
            plain, shadowed = [], []
            for _ in range(rounds):  # alternate, so load drifts hit both alike
                daemon.models.shadow = None
                plain.append(rate(daemon, work))
                daemon.models.shadow = Shadow(candidate, Scorer(candidate, device="cpu"), current="v0001")
                shadowed.append(rate(daemon, work))
            p, s = float(np.median(plain)), float(np.median(shadowed))
            name = f"C={channels} W={window} hidden={hidden}"
            print(f"{name:34}{size:>7}{p:>15,.0f}{s:>13,.0f}{s / p:>8.2f}")


if __name__ == "__main__":
    main()
