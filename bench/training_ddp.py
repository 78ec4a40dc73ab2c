"""Training on more than one process: time per epoch and windows/s of ``train --devices N``.

What it measures: the fit behind ``sensorguard train`` (``training.fit.fit_network``: scaler, PCA
start, Lightning fit) on ``simulate(rows=1_000_000, channels=8, seed=0)`` with 1 and 2 processes
(``ddp_fork`` with gloo on CPU, the default for ``--devices 2`` without a GPU). Each run is a fresh
subprocess; it fits ``E`` and ``E + K`` epochs of fixed length, and the time per epoch is the
difference over ``K``, so process start, the PCA start and DDP's launch are left out (shown apart
as ``setup``). An epoch is ``max_windows_per_epoch`` windows (16,384 by default, the training
default; ``--epoch-windows`` raises it to show longer epochs), so windows/s = epoch windows /
seconds per epoch.

Why: the issue asks whether a second process speeds up training on more data. On a 2-core machine
the two processes share the cores torch would otherwise use... except the fit runs torch on one
thread (``fit._one_thread``: results reproducible across thread counts), so a second process is
the way to use the second core. Run ``python bench/training_ddp.py`` (``--quick``: 200k rows).
Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(rows: int, devices: int, epochs: int, epoch_windows: int, batch: int) -> None:
    sys.path.insert(0, str(ROOT))
    from sensorguard.service.model import ModelConfig
    from sensorguard.training.data import series_from_frame
    from sensorguard.training.fit import fit_network
    from sensorguard.training.simulate import simulate
    from sensorguard.training.train import TrainOptions, default_depth, default_latent

    data = series_from_frame(simulate(rows=rows, channels=8, seed=0), "bench", time_column="timestamp",
                             exclude=["anomaly"])
    config = ModelConfig(channels=8, window=32, latent=default_latent(8, 32), hidden=32, depth=default_depth(32))
    options = TrainOptions(progress=False, devices=devices, max_windows_per_epoch=epoch_windows, batch_size=batch)
    started = time.perf_counter()
    fit_network(data, None, config, options, epochs=epochs)
    print(json.dumps({"seconds": time.perf_counter() - started}))


def run(rows: int, devices: int, epochs: int, epoch_windows: int, batch: int) -> float:
    cmd = [sys.executable, __file__, "--child", str(rows), str(devices), str(epochs), str(epoch_windows), str(batch)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise SystemExit(f"child run failed (rc {proc.returncode}):\n{proc.stderr[-2000:]}")
    return float(json.loads(lines[-1])["seconds"])


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*(int(v) for v in sys.argv[2:7]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200k rows instead of 1M")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--epoch-windows", type=int, default=16384, help="windows per epoch (training default)")
    parser.add_argument("--batch-size", type=int, default=256, help="global batch (training default 256)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of the short run (E)")
    parser.add_argument("--extra", type=int, default=2, help="epochs the long run adds (K)")
    args = parser.parse_args(argv)
    rows = args.rows or (200_000 if args.quick else 1_000_000)
    print(f"python {sys.version.split()[0]}, cpus {os.cpu_count()}; simulate(rows={rows}, channels=8), window 32, "
          f"{args.epoch_windows} windows per epoch, batch {args.batch_size}; one subprocess per run")
    print(f"{'processes':>9s} {'setup_s':>8s} {'s/epoch':>8s} {'windows/s':>10s} {'speedup':>8s}")
    base = None
    for devices in (1, 2):
        short = run(rows, devices, args.epochs, args.epoch_windows, args.batch_size)
        long = run(rows, devices, args.epochs + args.extra, args.epoch_windows, args.batch_size)
        per_epoch = (long - short) / args.extra
        setup = short - args.epochs * per_epoch
        rate = args.epoch_windows / per_epoch
        base = base or rate
        print(f"{devices:9d} {setup:8.1f} {per_epoch:8.2f} {rate:10.0f} {rate / base:7.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
