"""Soak: the daemon for several minutes at a high steady rate through Mosquitto; memory, latency and drops over time.

What it does (issue 6): starts Mosquitto and ``sensorguard serve`` exactly as ``bench/daemon.py`` does
(same untrained 8-channel bundle, own processes), then one paced publisher process sends ``--rate``
readings/s for ``--minutes`` (default 5) as ``{"samples": [...]}`` messages (``--samples-per-message``,
default 50) spread round-robin over ``--assets`` assets (default 1000), each sample's ``ts`` being its
wall-clock send time and every ``--spike-every`` samples a spike, so alert states keep changing
(pending, alerting, cleared: alert events, retained states, per-asset metric labels are exercised, not
only the reading path). Every ``--interval`` seconds it prints one row:

- ``pub/s`` and ``acc/s``: readings published (counted by the publisher) and accepted
  (``sensorguard_readings_total``) in the interval; ``backlog``: published - accepted - rejected so
  far (readings at the broker or in the daemon's socket, not yet parsed);
- ``rss_MB``: the daemon's RSS (psutil, sampled every 0.2 s): mean and max in the interval; ``cores``:
  its CPU use;
- ``h_p99``: p99 of ``sensorguard_reading_to_score_seconds`` over the interval only (histogram bucket
  deltas, interpolated as Prometheus does): receive-to-score, the broker hop and socket backlog left out;
- ``e2e_p50`` / ``e2e_p99``: publish-to-score from the retained state messages that arrived in the
  interval (``arrival - ts``; see ``bench/daemon.py``, exact percentiles, up to 1 ms pessimistic).

Then it waits for the backlog to drain and prints a verdict: RSS growth (mean of the last quarter of
the intervals after ``--warmup`` against the first quarter, and the slope over the last half: the
alert-id cache and the allocator's arenas take minutes to fill, :func:`last_half_slope`), p99
creep (median of the per-interval p99s, last quarter against first), and dropped = published -
accepted - rejected after draining (must be 0: QoS 1 end to end, nothing lost).

Why: a daemon that leaks per message or per asset, or whose latency creeps up as state accumulates,
looks fine in a 10-second benchmark and fails after a week. The default rate is 70% of the batched
rate that ``bench/daemon.py``'s measurement gives on this machine, measured at the start (``--rate``
to fix it). Run ``python bench/soak.py`` (``--minutes 1`` for a short run). Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_spec = importlib.util.spec_from_file_location("bench_daemon", Path(__file__).with_name("daemon.py"))
bd = importlib.util.module_from_spec(_spec)
sys.modules["bench_daemon"] = bd  # dataclasses look their module up by name
_spec.loader.exec_module(bd)


def quarter_means(values: list[float]) -> tuple[float, float]:
    """Mean of the first and of the last quarter of ``values`` (at least one value each)."""
    q = max(1, len(values) // 4)
    return float(np.nanmean(values[:q])), float(np.nanmean(values[-q:]))


def last_half_slope(times: list[float], values: list[float]) -> float:
    """Least-squares slope of ``values`` per minute over the last half of the intervals (nan with
    fewer than 4 there). A leak keeps rising at a steady slope; a cache filling to its cap or the
    allocator's arenas growing to the working set level off, which the quarters alone do not show
    when they take minutes to (session 39, 28 minutes: +22.4 % by quarters, +0.09 MB/min over the
    last half, flat from minute 12)."""
    half = len(values) // 2
    t, v = np.asarray(times[half:], dtype=float), np.asarray(values[half:], dtype=float)
    if len(t) < 4 or np.ptp(t) == 0:
        return float("nan")
    return float(np.polyfit(t / 60.0, v, 1)[0])


def quarter_medians(values: list[float]) -> tuple[float, float]:
    q = max(1, len(values) // 4)
    return float(np.nanmedian(values[:q])), float(np.nanmedian(values[-q:]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=None,
                        help="readings/s (default: 70%% of a batched throughput measurement made first)")
    parser.add_argument("--fraction", type=float, default=0.7, help="share of the measured rate when --rate is unset")
    parser.add_argument("--assets", type=int, default=1000)
    parser.add_argument("--samples-per-message", type=int, default=50)
    parser.add_argument("--spike-every", type=int, default=256, help="samples between spikes per asset (0 = none)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds per table row")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds left out of the verdict's quarters")
    parser.add_argument("--torch-threads", type=int, default=0, help="OMP_NUM_THREADS for the daemon (0 = as is)")
    args = parser.parse_args(argv)
    seconds = args.minutes * 60
    spm = args.samples_per_message

    print(f"python {sys.version.split()[0]}, cpus {os.cpu_count()}, {bd.load()}")
    workdir = Path(tempfile.mkdtemp(prefix="sensorguard-soak-"))
    broker = daemon = probe = None
    try:
        bundle_dir = bd.make_bundle_dir(workdir)
        rate = args.rate
        if rate is None:
            r = bd.measure("daemon", args.assets, spm, 500_000, 2, bundle_dir, workdir, 0, "live",
                           torch_threads=args.torch_threads)
            sustained = min(r.rate, r.readings / r.scored_seconds)
            rate = args.fraction * sustained
            print(f"measured: {r.rate:.0f} readings/s accepted, {r.readings / r.scored_seconds:.0f} scored "
                  f"({args.assets} assets, {spm} per message, live); soak rate {args.fraction:.0%} of the lower: "
                  f"{rate:.0f} readings/s")
        print(f"soak: {rate:.0f} readings/s for {args.minutes:g} min, {args.assets} assets, {spm} samples per message, "
              f"spike every {args.spike_every} samples, torch threads {args.torch_threads or 'default'}")
        broker = bd.Broker(workdir / "broker")
        daemon = bd.DaemonProcess(broker, bundle_dir, workdir, args.assets, torch_threads=args.torch_threads)
        probe = bd.StateProbe(broker.port)
        published = mp.get_context("fork").Value("q", 0)
        procs, go, results, _ = bd.start_processes(
            bd.paced_publisher,
            [(broker.port, bd.asset_names(args.assets), rate, seconds, spm, args.spike_every, published)])
        go.set()
        started = time.time()
        print(f"{'t_s':>5} {'pub/s':>7} {'acc/s':>7} {'backlog':>7} {'rej':>4} {'rss_MB':>6} {'max_MB':>6} "
              f"{'cores':>5} {'h_p99_ms':>8} {'e2e_p50':>7} {'e2e_p99':>7} {'probes':>6}")
        rows = []
        prev = {"t": started, "pub": 0, "acc": 0.0, "buckets": {}, "cpu": daemon.watch.cpu()}
        end = started + seconds
        publishing = True
        drain_deadline = float("inf")
        while True:
            target = prev["t"] + args.interval
            time.sleep(max(0.0, target - time.time()))
            now = time.time()
            m = daemon.scrape()
            pub = published.value
            cpu = daemon.watch.cpu()
            rss = [v for t, v in daemon.watch.samples if prev["t"] <= t < now]
            buckets = bd.bucket_delta(m["buckets"], prev["buckets"])
            lat = probe.latencies(prev["t"], now)
            dt = now - prev["t"]
            row = {
                "t": now - started, "pub": (pub - prev["pub"]) / dt, "acc": (m["readings"] - prev["acc"]) / dt,
                "backlog": pub - m["readings"] - m["rejected"], "rej": m["rejected"],
                "rss": np.mean(rss) / 2**20 if rss else float("nan"),
                "rss_max": np.max(rss) / 2**20 if rss else float("nan"),
                "cores": (cpu - prev["cpu"]) / dt, "h_p99": bd.histogram_quantile(0.99, buckets),
                "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
                "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"), "probes": len(lat),
                "publishing": publishing,
            }
            rows.append(row)
            print(f"{row['t']:>5.0f} {row['pub']:>7.0f} {row['acc']:>7.0f} {row['backlog']:>7.0f} {row['rej']:>4.0f} "
                  f"{row['rss']:>6.0f} {row['rss_max']:>6.0f} {row['cores']:>5.2f} {1000 * row['h_p99']:>8.1f} "
                  f"{1000 * row['p50']:>7.1f} {1000 * row['p99']:>7.1f} {row['probes']:>6}", flush=True)
            prev = {"t": now, "pub": pub, "acc": m["readings"], "buckets": m["buckets"], "cpu": cpu}
            if not publishing and row["backlog"] <= 0:
                break
            if publishing and now >= end:
                elapsed, sent, late = results.get(timeout=120)
                publishing = False
                print(f"publisher done: {sent} readings in {elapsed:.1f} s ({sent / elapsed:.0f}/s), worst pacing "
                      f"lag {1000 * late:.0f} ms; draining")
                drain_deadline = time.time() + 120
            elif not publishing and time.time() > drain_deadline:
                print("backlog did not drain within 120 s")
                break
        for proc in procs:
            proc.join(timeout=10)
        m = daemon.scrape()
        total = published.value
        dropped = total - m["readings"] - m["rejected"]
        steady = [r for r in rows if r["publishing"] and r["t"] > args.warmup]
        rss0, rss1 = quarter_means([r["rss"] for r in steady])
        slope = last_half_slope([r["t"] for r in steady], [r["rss"] for r in steady])
        h0, h1 = quarter_medians([r["h_p99"] for r in steady])
        e0, e1 = quarter_medians([r["p99"] for r in steady])
        print(f"\nverdict over {len(steady)} intervals after {args.warmup:g} s of warm-up "
              f"(first quarter -> last quarter):")
        print(f"  RSS {rss0:.0f} -> {rss1:.0f} MB ({100 * (rss1 / rss0 - 1):+.1f}%), peak "
              f"{daemon.watch.peak / 2**20:.0f} MB; last half {slope:+.2f} MB/min "
              "(a leak keeps a steady slope, warm-up levels off)")
        print(f"  p99 receive-to-score {1000 * h0:.1f} -> {1000 * h1:.1f} ms; p99 publish-to-score "
              f"{1000 * e0:.1f} -> {1000 * e1:.1f} ms (medians of per-interval p99s)")
        print(f"  published {total}, accepted {m['readings']:.0f}, rejected {m['rejected']:.0f}, "
              f"dropped {dropped:.0f}; mean accepted rate while publishing {np.mean([r['acc'] for r in steady]):.0f}/s")
        print(bd.load())
    finally:
        if probe is not None:
            probe.close()
        if daemon is not None:
            code = daemon.stop()
            print(f"daemon exit code {code}")
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
