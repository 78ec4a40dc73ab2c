"""Training time, peak memory and learning curve of ``sensorguard train`` defaults on 100k x 8 rows.

What it measures: ``train_bundle(data, TrainOptions(progress=False))`` (the code behind
``sensorguard train``: split, scaler, Lightning fit with early stopping, calibration) on
``simulate(rows=100_000, channels=8, seed=0)``, each run in a fresh subprocess so its peak resident
memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) belongs to that run alone (tracemalloc does
not see torch's allocations). Reported: wall seconds of ``train_bundle`` (data simulation and
imports excluded, shown apart), epochs run, best validation loss, peak RSS before and after
training, and the learning curve: train and validation loss per epoch with the time each epoch
ended. The curve is read by a small Lightning callback added to the trainer ``train_bundle``
builds (the bench wraps the private ``training.train._trainer`` to append it; nothing else changes).

Why: the issue's aim is a default training run under 60 s on 2 CPU cores with the learning curve
flat by then (early stopping should end the run once validation stops improving, not the epoch
cap). Run ``python bench/training.py`` (``--quick``: 30k rows). Prints tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(rows: int, max_epochs: int | None) -> None:
    """One measured run; prints one JSON line."""
    t0 = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    import pytorch_lightning as pl
    import torch

    import sensorguard.training.train as train_mod
    from sensorguard.training.data import series_from_frame
    from sensorguard.training.simulate import simulate

    imports_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    data = series_from_frame(simulate(rows=rows, channels=8, seed=0), "simulated")
    data_s = time.perf_counter() - t1
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    curve: list[dict] = []

    class Curve(pl.Callback):
        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            metrics = trainer.callback_metrics
            curve.append(
                {
                    "epoch": trainer.current_epoch,
                    "train_loss": float(metrics.get("train_loss", float("nan"))),
                    "val_loss": float(metrics.get("val_loss", float("nan"))),
                    "t": time.perf_counter() - started,
                }
            )

    import sensorguard.training.fit as fit_mod

    original = fit_mod._trainer

    def with_curve(options, callbacks, max_epochs, device, *rest):
        return original(options, [*callbacks, Curve()], max_epochs, device, *rest)

    fit_mod._trainer = with_curve
    options = train_mod.TrainOptions(progress=False)
    if max_epochs:
        options = train_mod.TrainOptions(progress=False, max_epochs=max_epochs)
    started = time.perf_counter()
    bundle, summary = train_mod.train_bundle(data, options)
    seconds = time.perf_counter() - started
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "rows": rows,
                "threads": torch.get_num_threads(),
                "imports_s": imports_s,
                "data_s": data_s,
                "train_s": seconds,
                "summary_s": summary.seconds,
                "epochs": summary.epochs,
                "max_epochs": options.max_epochs,
                "best_val_loss": summary.best_val_loss,
                "window": summary.window,
                "latent": summary.latent,
                "split_rows": summary.rows,
                "threshold": summary.threshold,
                "method": summary.method,
                "rss_before_mb": rss_before / 1024,
                "rss_peak_mb": rss_after / 1024,
                "curve": curve,
            }
        )
    )


def run_child(rows: int, max_epochs: int | None) -> dict:
    cmd = [sys.executable, __file__, "--child", "--rows", str(rows)]
    if max_epochs:
        cmd += ["--max-epochs", str(max_epochs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise SystemExit(f"child run failed (rc {proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30k rows instead of 100k")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--max-epochs", type=int, default=None, help="override the default epoch cap")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    rows = args.rows or (30_000 if args.quick else 100_000)
    if args.child:
        child(rows, args.max_epochs)
        return 0
    print(f"python {sys.version.split()[0]}, cpus {os.cpu_count()}; one subprocess per run")
    r = run_child(rows, args.max_epochs)
    print(f"\ndefault train on simulate(rows={rows}, channels=8, seed=0), torch threads {r['threads']}")
    print(f"{'rows per split':26s} {r['split_rows']}")
    print(f"{'window / latent':26s} {r['window']} / {r['latent']}")
    print(f"{'imports / simulate data':26s} {r['imports_s']:.1f} s / {r['data_s']:.1f} s (not in train time)")
    print(f"{'train_bundle wall time':26s} {r['train_s']:.1f} s (summary says {r['summary_s']:.1f} s)")
    print(f"{'epochs run (cap)':26s} {r['epochs']} ({r['max_epochs']})")
    print(f"{'best validation loss':26s} {r['best_val_loss']:.5f}")
    print(f"{'threshold':26s} {r['threshold']:.5g} ({r['method']})")
    print(f"{'peak RSS before training':26s} {r['rss_before_mb']:.0f} MB (imports + data)")
    print(f"{'peak RSS whole run':26s} {r['rss_peak_mb']:.0f} MB")
    print("\nlearning curve (loss = MSE in standardized units; t = seconds since train_bundle started)")
    print(f"{'epoch':>5s}  {'train_loss':>10s}  {'val_loss':>10s}  {'val change':>10s}  {'t (s)':>6s}")
    prev = None
    for point in r["curve"]:
        change = "" if prev is None else f"{(point['val_loss'] - prev) / prev:+.1%}"
        print(
            f"{point['epoch']:5d}  {point['train_loss']:10.5f}  {point['val_loss']:10.5f}  {change:>10s}  "
            f"{point['t']:6.1f}"
        )
        prev = point["val_loss"]
    curve = r["curve"]
    if len(curve) >= 2:
        best = min(c["val_loss"] for c in curve)
        within = next(c for c in curve if c["val_loss"] <= 1.05 * best)
        print(
            f"\nvalidation loss within 5% of its best from epoch {within['epoch']} (t = {within['t']:.1f} s); "
            f"mean epoch {curve[-1]['t'] / len(curve):.1f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
