"""End-to-end daemon throughput and latency through a real Mosquitto, against the broker's own ceiling.

What it measures, all in one run on the same machine (issue 3):

- **throughput**: readings/s from the first publish until the daemon's ``sensorguard_readings_total``
  (scraped from ``/metrics``) reaches the number published ("accepted"), and until
  ``windows_scored_total`` reaches the windows those readings complete ("scored"); for 1, 100 and
  1,000 assets, 8 channels, one reading per message and ``{"samples": [...]}`` batches (50 per
  message by default). The daemon is ``sensorguard serve`` in its own process (its own GIL; peak
  RSS and CPU read with psutil). Publishers are separate processes (paho, QoS 1, up to 1000 in flight, payloads built
  before the clock starts, assets partitioned so each asset's order is kept) pushing as fast as
  they can.
- **broker ceiling**, same stream, same publishers, no daemon: ``mosquitto_sub -q 1 -C N`` (C) and a
  plain paho MQTT 5 subscriber with ``manual_ack`` like the daemon's that only acknowledges and counts
  (Python). The daemon's rate is reported as % of each: that is what the daemon's own work costs.
- **latency** at a paced 10,000 readings/s (100 assets, one reading per message, ``ts`` = the
  wall-clock send time of each reading): (a) the daemon's ``reading_to_score_seconds`` histogram,
  which measures from ``on_message`` (the reading is in the process) to the end of its window's
  scoring batch, so it leaves out the broker hop and any backlog in the daemon's socket; p50/p99
  interpolated inside Prometheus buckets; (b) **publish-to-score**, measured outside the daemon:
  readings carry a spike every ``--spike-every`` samples, so each asset's alert state changes
  (normal -> pending -> alerting -> normal, default rules) and the daemon publishes the new state on
  ``sensorguard/state/<asset>``; that payload's ``ts`` is the ``ts`` of the reading that completed
  the window, i.e. its send time (truncated to the millisecond by the daemon's RFC 3339 format, so up
  to 1 ms pessimistic). A subscriber here takes ``arrival - ts``: publish -> broker -> daemon ->
  scored -> state published -> broker -> subscriber. Exact percentiles over every state message.

The model is an **untrained** valid bundle (random weights, seed 0) of exactly the shape
``train_bundle`` builds for 8 channels (window 32, hop 4, latent 16, hidden 32, depth 3): scoring
cost does not depend on the weights, and it saves a minute of training. Its threshold is set from
the errors of normal-looking windows so those score far below 1 and spikes far above. It declares
no sample period: the paced publisher stamps readings with its send time (for publish-to-score),
so an asset's readings are as far apart as the pace makes them, and a bundle with a period would
resample or refuse them as off its rate (``service/cleaning.py``); the rate check costs one moving
average per reading (``Buffers.add`` 290k/s before it, 259k/s with it, ``docs/benchmarks.md``).

Why: the daemon's reading path is Python (paho's network thread parses, buffers and acknowledges
each message; a second thread scores), so it cannot reach a C subscriber; this shows how far below
the broker it stays, where the time goes and whether batching senders fixes it. Aims: at least 50%
of the ceiling with one reading per message, at least 50,000 readings/s with batched messages, p99
under 100 ms at 10,000 readings/s.

Mosquitto is started here on a free loopback port with a generated config (persistence off,
``max_queued_messages 1000000``, ``max_inflight_messages`` from ``--inflight``, 0 = no limit;
Mosquitto's default and the shipped deploy config's is 20). Run ``python bench/daemon.py``
(``--quick`` for a short run). Prints tables; asserts nothing (timings vary between runs).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon_clients import count_subscriber, flood_publisher, start_processes  # noqa: E402
from daemon_harness import (  # noqa: E402  (bench/daemon_harness.py)
    HOP,
    WINDOW,
    Broker,
    DaemonProcess,
    Watch,
    asset_names,
    histogram_quantile,
    load,
    make_bundle_dir,
    mosquitto_binary,
    stop_process,
)
from daemon_latency import measure_latency  # noqa: E402  (bench/daemon_latency.py)

# --- one throughput measurement --------------------------------------------------------------------


@dataclass
class Result:
    receiver: str
    assets: int
    spm: int
    readings: int
    seconds: float
    scored_seconds: float = float("nan")
    publish_seconds: float = float("nan")
    rss_mb: float = float("nan")
    cpu_cores: float = float("nan")
    busiest_thread: float = float("nan")
    broker_cores: float = float("nan")
    rejected: float = 0.0
    p50: float = float("nan")
    p99: float = float("nan")
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.readings / self.seconds


def measure(receiver: str, assets: int, spm: int, readings: int, publishers: int, bundle_dir: Path,
            workdir: Path, inflight: int = 0, mode: str = "live", torch_threads: int = 0) -> Result:
    """Push ``readings`` through a fresh broker to ``receiver`` (daemon | mosquitto_sub | paho) and time it.

    ``live``: the receiver is connected and the publishers push while it reads; the clock runs from the
    first publish. ``drain``: the receiver's persistent session is created, everything is published and
    queued at the broker with the receiver away, then the receiver connects and the clock runs from its
    first reading (daemon, paho) or its start (mosquitto_sub): the receiver has the CPU to itself.
    """
    names = asset_names(assets)
    per_asset = max(1, readings // assets)
    per_asset = max(spm, per_asset // spm * spm)
    readings = per_asset * assets
    n_messages = assets * (per_asset // spm)
    windows = assets * (1 + (per_asset - WINDOW) // HOP) if per_asset >= WINDOW else 0
    publishers = max(1, min(publishers, assets))
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    broker = Broker(run_dir, inflight)
    broker_watch = Watch(broker.proc.pid, interval=1.0)
    client_id = f"bench-{receiver}-{time.monotonic_ns()}"
    ctx = mp.get_context("fork")
    daemon = sub = sub_watch = None
    result = Result(receiver, assets, spm, readings, float("nan"))
    shares = [names[i::publishers] for i in range(publishers)]
    try:
        def start_receiver(wait: bool):
            nonlocal daemon, sub, sub_watch, sub_done
            if receiver == "daemon":
                daemon = DaemonProcess(broker, bundle_dir, run_dir, assets, client_id=client_id, wait_ready=wait,
                                       torch_threads=torch_threads)
            elif receiver == "mosquitto_sub":
                sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t",
                                        "sensors/#", "-C", str(n_messages), "-i", client_id, "-c"],
                                       stdout=subprocess.DEVNULL)
                sub_watch = Watch(sub.pid)
                if wait:
                    time.sleep(1.0)
            else:
                sub_ready, sub_done = ctx.Queue(), ctx.Queue()
                sub = ctx.Process(target=count_subscriber, args=(broker.port, n_messages, client_id, sub_ready,
                                                                  sub_done), daemon=True)
                sub.start()
                sub_watch = Watch(sub.pid)
                if wait:
                    sub_ready.get(timeout=30)

        sub_done = None
        if mode == "drain":  # create the session, leave, publish everything, then come back
            if receiver == "daemon":
                DaemonProcess(broker, bundle_dir, run_dir, assets, client_id=client_id).stop()
            elif receiver == "mosquitto_sub":
                subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t",
                                "sensors/#", "-i", client_id, "-c", "-E"], check=True, timeout=30)
            else:
                q1, q2 = ctx.Queue(), ctx.Queue()
                p = ctx.Process(target=count_subscriber, args=(broker.port, 0, client_id, q1, q2), daemon=True)
                p.start()
                p.join(timeout=30)
        else:
            start_receiver(True)
        procs, go, results, total = start_processes(
            flood_publisher, [(broker.port, share, per_asset, spm) for share in shares])
        assert total == n_messages, (total, n_messages)
        broker_cpu0 = broker_watch.cpu()
        go.set()
        started = time.time()
        if mode == "drain":
            ends = [results.get(timeout=600) for _ in procs]
            result.publish_seconds = max(e[2] for e in ends) - started
            broker_cpu0 = broker_watch.cpu()
            started = time.time()
            start_receiver(False)
        if daemon is not None:
            cpu0 = daemon.watch.cpu()
            first = accepted_at = None
            m: dict = {}
            deadline = started + 600
            while time.time() < deadline:
                try:
                    m = daemon.scrape()
                except OSError:
                    time.sleep(0.02)
                    continue
                now = time.time()
                got = m["readings"] + m["rejected"]
                if first is None and (mode == "live" or got > 0):
                    first = (now, 0.0 if mode == "live" else got, daemon.watch.cpu())
                    started = now if mode == "drain" else started
                if accepted_at is None and got >= readings:
                    accepted_at = now
                if accepted_at is not None and m["windows"] >= windows:
                    break
                time.sleep(0.02 if first is None else 0.1)
            else:
                result.notes.append(f"timed out: {m}")
            result.readings = int(readings - first[1])
            result.seconds = (accepted_at or now) - started
            result.scored_seconds = now - started
            cpu0 = first[2] if mode == "drain" else cpu0
            result.cpu_cores = (daemon.watch.cpu() - cpu0) / (now - started)
            threads = daemon.watch.threads()
            result.busiest_thread = threads[0] / (now - started) if threads else float("nan")
            result.rejected = float(m["rejected"])
            result.p50 = histogram_quantile(0.5, m["buckets"])
            result.p99 = histogram_quantile(0.99, m["buckets"])
            result.rss_mb = daemon.watch.peak / 2**20
        elif receiver == "mosquitto_sub":
            while sub.poll() is None:  # sample CPU until it exits
                cpu = sub_watch.cpu()
                time.sleep(0.05)
            now = time.time()
            result.seconds = now - started
            result.cpu_cores = (cpu - sub_watch.cpu0) / result.seconds
        else:
            connected, now = sub_done.get(timeout=600)
            cpu = sub_watch.cpu()
            if mode == "drain":
                started = connected
            result.seconds = now - started
            result.cpu_cores = (cpu - sub_watch.cpu0) / result.seconds
            sub.join(timeout=10)
        result.broker_cores = (broker_watch.cpu() - broker_cpu0) / (now - started)
        if mode == "live":
            ends = [results.get(timeout=600) for _ in procs]
            result.publish_seconds = max(e[2] for e in ends) - started
        for proc in procs:
            proc.join(timeout=30)
        return result
    finally:
        if daemon is not None:
            daemon.stop()
        if isinstance(sub, subprocess.Popen):
            stop_process(sub)
        elif sub is not None and sub.is_alive():
            sub.terminate()
        broker_watch.stop()
        broker.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


# --- main ----------------------------------------------------------------------------------------------


HEADER = (f"{'receiver':>13} {'assets':>6} {'spm':>3} {'readings':>8} {'msgs/s':>8} {'readings/s':>10} {'% C':>5} "
          f"{'% py':>5} {'scored/s':>9} {'pub_s':>6} {'rss_MB':>6} {'cores':>5} {'thread':>6} {'broker':>6} "
          f"{'rej':>4} {'p50_ms':>6} {'p99_ms':>6}")


def row(r: Result, ceiling_c: float, ceiling_py: float) -> str:
    scored = r.readings / r.scored_seconds if r.scored_seconds == r.scored_seconds else float("nan")
    line = (f"{r.receiver:>13} {r.assets:>6} {r.spm:>3} {r.readings:>8} {r.rate / r.spm:>8.0f} {r.rate:>10.0f} "
            f"{100 * r.rate / ceiling_c:>5.0f} {100 * r.rate / ceiling_py:>5.0f} {scored:>9.0f} "
            f"{r.publish_seconds:>6.2f} {r.rss_mb:>6.0f} {r.cpu_cores:>5.2f} {r.busiest_thread:>6.2f} "
            f"{r.broker_cores:>6.2f} {r.rejected:>4.0f} {1000 * r.p50:>6.1f} {1000 * r.p99:>6.1f}")
    return (line + ("  " + "; ".join(r.notes) if r.notes else "")).replace(" nan", "   -")


def throughput_table(mode: str, args, assets_list: list[int], bundle_dir: Path, workdir: Path) -> None:
    single_n = 30_000 if args.quick else 100_000
    batch_n = 200_000 if args.quick else 1_000_000
    print(f"\nthroughput, {mode}: " + (
        "readings/s from the first publish until all are accepted (daemon) / received (ceilings)" if mode == "live"
        else "everything queued at the broker first; readings/s from the receiver's first reading to its last"))
    print(HEADER)
    for spm in (1, args.samples_per_message):
        for assets in assets_list:
            n = single_n if spm == 1 else batch_n
            pubs = 1 if assets == 1 else args.publishers
            got: dict[str, Result] = {}
            for receiver in ("mosquitto_sub", "paho", "daemon"):
                got[receiver] = measure(receiver, assets, spm, n, pubs, bundle_dir, workdir, args.inflight, mode)
                print(row(got[receiver], got["mosquitto_sub"].rate, got.get("paho", got["mosquitto_sub"]).rate),
                      flush=True)
            if args.torch_threads and assets == args.compare_assets:
                r = measure("daemon", assets, spm, n, pubs, bundle_dir, workdir, args.inflight, mode,
                            torch_threads=args.torch_threads)
                r.receiver = f"daemon omp={args.torch_threads}"
                print(row(r, got["mosquitto_sub"].rate, got["paho"].rate), flush=True)
            if args.compare_inflight and assets == args.compare_assets and spm == 1:
                r = measure("daemon", assets, spm, n, pubs, bundle_dir, workdir, args.compare_inflight, mode)
                r.receiver = f"daemon infl={args.compare_inflight}"
                print(row(r, got["mosquitto_sub"].rate, got["paho"].rate), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer readings and a shorter latency run")
    parser.add_argument("--assets", default="1,100,1000", help="asset counts to run (comma separated)")
    parser.add_argument("--modes", default="live,drain", help="throughput modes: live, drain (see measure)")
    parser.add_argument("--samples-per-message", type=int, default=50, help="samples per batched message")
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes (1 for a single asset)")
    parser.add_argument("--inflight", type=int, default=0, help="Mosquitto max_inflight_messages (0 = no limit)")
    parser.add_argument("--compare-assets", type=int, default=100, help="asset count of the comparison rows below")
    parser.add_argument("--compare-inflight", type=int, default=20,
                        help="also run the daemon with single readings at this broker inflight limit (0 = skip)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="also run the daemon with OMP_NUM_THREADS set to this (torch intra-op threads; 0 = skip)")
    parser.add_argument("--latency-rate", type=float, default=10_000, help="readings/s for the latency runs")
    parser.add_argument("--latency-assets", type=int, default=100)
    parser.add_argument("--latency-spm", default="1,10", help="samples per message of the latency runs")
    parser.add_argument("--latency-seconds", type=float, default=None)
    parser.add_argument("--spike-every", type=int, default=64, help="samples between spikes in the latency run")
    parser.add_argument("--no-level", action="store_true", help="a bundle without the level term (as before it)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args(argv)
    latency_s = args.latency_seconds or (8.0 if args.quick else 20.0)
    assets_list = [int(a) for a in args.assets.split(",")]

    print(f"python {sys.version.split()[0]}, cpus {os.cpu_count()}, {load()}")
    print(f"mosquitto {subprocess.run([mosquitto_binary(), '-h'], capture_output=True, text=True).stdout.split()[2]}"
          f", max_inflight_messages {args.inflight}, persistence off")
    workdir = Path(tempfile.mkdtemp(prefix="sensorguard-bench-"))
    try:
        bundle_dir = make_bundle_dir(workdir, level=not args.no_level)
        level = "off" if args.no_level else "on"
        print(f"bundle: untrained, 8 channels, window {WINDOW}, hop {HOP}, level term {level}")
        if not args.skip_throughput:
            for mode in args.modes.split(","):
                throughput_table(mode, args, assets_list, bundle_dir, workdir)
                print(load())
        if not args.skip_latency:
            runs = [(int(x), 0) for x in args.latency_spm.split(",")]
            if args.torch_threads:
                runs.insert(1, (runs[0][0], args.torch_threads))
            for spm, threads in runs:
                res = measure_latency(args.latency_assets, spm, args.latency_rate, latency_s, args.spike_every,
                                      bundle_dir, workdir, args.inflight, torch_threads=threads)
                daemon = f"daemon with OMP_NUM_THREADS={threads}" if threads else "daemon as shipped"
                print(f"\n{daemon}: latency at {res['rate']:.0f} readings/s paced ({res['achieved']:.0f} achieved, "
                      f"worst pacing lag {1000 * res['late_s']:.1f} ms), {res['assets']} assets, "
                      f"{spm} reading(s) per message, {latency_s:.0f} s (first 2 s left out)")
                print(f"  sent {res['sent']}, accepted {res['accepted']:.0f}, rejected {res['rejected']:.0f}, "
                      f"drained {res['drain_s']:.2f} s after the last publish; daemon {res['cpu_cores']:.2f} cores, "
                      f"peak RSS {res['rss_mb']:.0f} MB")
                print(f"  receive-to-score (daemon histogram, {res['windows']:.0f} windows): "
                      f"p50 {1000 * res['hist_p50']:.1f} ms, p99 {1000 * res['hist_p99']:.1f} ms (interpolated)")
                print(f"  publish-to-score (state messages, {res['probes']} probes): p50 {1000 * res['p50']:.1f} ms, "
                      f"p99 {1000 * res['p99']:.1f} ms, max {1000 * res['max']:.1f} ms", flush=True)
            print(f"\n{load()}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
