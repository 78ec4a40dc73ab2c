"""How fast ``sensorguard serve`` drains a backlog queued at Mosquitto, with 1 and 2 worker processes.

What it measures: ``--readings`` (60,000) QoS 1 readings of 100 assets under two site prefixes
(``site-a/pump-0`` .. ``site-a/pump-49``, ``site-b/pump-50`` .. ``site-b/pump-99``, topics
``sensors/<asset>/readings``), 6 channels, are published to a fresh Mosquitto while the receiver is
away, so they wait in its persistent session(s); then the receiver starts and the clock runs until it
has them all. Two payload shapes: one reading per message (``{"ts": .., "values": {..}}``) and 50
per message (``{"samples": [..]}``; ``--batched-readings``, 600,000 by default, since 60,000 of them
drain in well under a second). Rows per shape, each on its own broker:

- ``mosquitto_sub`` (C, ``-q 1 -c -i <id> -C N``; session created first with ``-E``): the ceiling,
  timed from its start to its exit;
- ``paho``: ``bench/daemon.py``'s bare MQTT 5 manual-ack subscriber that only acks and counts, timed
  from its connect to its last message (both subscribe to ``sensors/#``);
- ``daemon w1`` / ``daemon w2``: ``sensorguard serve --partition site-a/# --partition site-b/#
  --workers 1|2 --scoring-threads 1`` with ``OMP_NUM_THREADS=1``. Its session(s) (one, or
  ``<id>-w0`` and ``<id>-w1``) are created by a start that waits for ``/readyz`` and a SIGTERM.
  Starting ``serve`` (importing torch, spawning workers) takes seconds, so the drain is timed from the
  moment the parent's ``sensorguard_readings_total`` is first seen > 0 to the moment it (plus
  rejected) reaches the total, polled every 0.05 s; the readings already in at the first poll are left
  out of the rate. Workers connect together once all have loaded their model (``service/workers.py``),
  so both partitions start draining at the same time. ``scored_s``: from the same start until
  ``sensorguard_windows_scored_total`` reaches the windows the readings complete (scoring caught up);
  ``start_s``: from launching ``serve`` to its first reading.

Why: the daemon's receive path is Python and keeps about one core busy, so one process cannot follow
a C subscriber; ``--workers`` splits the partitions over processes, each its own session. This shows
what a restart after an outage (the broker holding a backlog) costs and what a second worker buys.
Targets: >= 0.3 of ``mosquitto_sub`` with one reading per message on 2 cores over two site
partitions; >= 100,000 readings/s with 50 readings per message.

Mosquitto as in ``bench/daemon.py`` (persistence off, ``max_queued_messages 1000000``), with
``max_inflight_messages`` from ``--inflight`` (default 20: Mosquitto's default and the shipped
config's). Run ``python bench/drain.py`` (``--quick``: 12,000 readings; ``--repeat 3``: medians).
Prints a table; asserts nothing (timings vary between runs).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

import daemon_clients as clients  # noqa: E402  (bench/daemon_clients.py)
import daemon_harness as harness  # noqa: E402  (bench/daemon_harness.py)

CHANNELS = tuple(f"ch{i}" for i in range(6))
ROW_DICTS = [dict(zip(CHANNELS, map(float, row), strict=True)) for row in harness.ROWS[:, : len(CHANNELS)]]
ASSETS = [f"site-a/pump-{i}" for i in range(50)] + [f"site-b/pump-{i}" for i in range(50, 100)]
PARTITIONS = ("site-a/#", "site-b/#")
RECEIVERS = ("mosquitto_sub", "paho", "daemon w1", "daemon w2")
TIMEOUT_S = 600.0


def make_bundle_dir(directory: Path) -> Path:
    """``harness.make_bundle_dir`` for 6 channels (it is fixed to 8): same shape, seed and threshold rule."""
    import torch

    from sensorguard.service.bundle import Bundle, save_bundle
    from sensorguard.service.model import ConvAutoencoder, ModelConfig, default_depth, default_latent
    from sensorguard.service.scorer import Scorer

    n, window = len(CHANNELS), harness.WINDOW
    config = ModelConfig(channels=n, window=window, latent=default_latent(n, window), hidden=32,
                         depth=default_depth(window))
    torch.manual_seed(0)
    bundle = Bundle(channels=CHANNELS, config=config, hop=harness.HOP, center_=np.zeros(n), scale_=np.ones(n),
                    threshold_=1.0, state_dict=ConvAutoencoder(config).state_dict(), sample_period=None,
                    name="bench", version="untrained", alert_hop=harness.ALERT_HOP)
    rows = harness.normal_rows(4096)[:, :n]  # the first 6 of its channels: the same normal-looking rows
    windows = np.stack([rows[i : i + window].T for i in range(0, len(rows) - window, 7)])
    errors = Scorer(bundle, device="cpu").score_windows(windows).error
    bundle = bundle.with_threshold(float(errors.max()) * 20, {"method": "bench: 20 x max normal error"})
    return Path(save_bundle(bundle, directory / "bundle"))


def build_messages(per_asset: int, spm: int) -> list[tuple[str, bytes]]:
    """``clients.build_messages`` with 6-channel samples: ``spm`` samples per message, round-robin over assets."""
    out = []
    for start in range(0, per_asset, spm):
        for asset in ASSETS:
            samples = [{"ts": harness.TS0 + k, "values": ROW_DICTS[k % len(ROW_DICTS)]}
                       for k in range(start, min(start + spm, per_asset))]
            out.append((f"sensors/{asset}/readings", orjson.dumps(samples[0] if spm == 1 else {"samples": samples})))
    return out


def publish_all(port: int, messages: list[tuple[str, bytes]]) -> float:
    """Publish every message at QoS 1 (paho, 1000 in flight) until the broker acked each; return the seconds."""
    import paho.mqtt.client as paho

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"bench-drain-pub-{os.getpid()}")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    started = time.time()
    infos = []
    for i, (topic, body) in enumerate(messages):
        if i >= 30_000:  # paho keys outstanding messages by a 16-bit id
            infos[i - 30_000].wait_for_publish(timeout=TIMEOUT_S)
        infos.append(client.publish(topic, body, qos=1))
    for info in infos:
        info.wait_for_publish(timeout=TIMEOUT_S)
    seconds = time.time() - started
    client.disconnect()
    client.loop_stop()
    return seconds


def daemon_args(workers: int) -> tuple[str, ...]:
    parts = [arg for p in PARTITIONS for arg in ("--partition", p)]
    return (*parts, "--workers", str(workers), "--scoring-threads", "1")


def watch_daemon(daemon: harness.DaemonProcess, readings: int, windows: int, launched: float) -> dict[str, float]:
    """Poll the parent's /metrics from launch until every reading is in and scoring caught up."""
    nan = float("nan")
    out = {"seconds": nan, "scored_s": nan, "start_s": nan, "skipped": 0.0, "rejected": 0.0}
    first = accepted = None
    m: dict = {"readings": 0.0, "rejected": 0.0, "windows": 0.0}
    last_windows, last_change = -1.0, time.time()
    while time.time() < launched + TIMEOUT_S:
        if daemon.proc.poll() is not None:
            out["note"] = f"serve exited with {daemon.proc.returncode}"
            break
        try:
            m = daemon.scrape()
        except OSError:  # not listening yet
            time.sleep(0.05)
            continue
        now = time.time()
        got = m["readings"] + m["rejected"]
        if first is None and got > 0:
            first = now
            out["start_s"], out["skipped"] = now - launched, got
        if accepted is None and got >= readings:
            accepted = now
        if m["windows"] != last_windows:
            last_windows, last_change = m["windows"], now
        if accepted is not None and (m["windows"] >= windows or now - last_change > 10):
            break
        time.sleep(0.02 if first is None else 0.05)
    if first is not None and accepted is not None and accepted > first:
        out["seconds"] = accepted - first
        if m["windows"] >= windows:
            out["scored_s"] = last_change - first
    if accepted is None:
        out["note"] = f"got {m['readings']:.0f} of {readings} readings"
    elif accepted == first:
        out["note"] = "all in at the first poll: too few readings to time"
    elif m["windows"] < windows:
        out["note"] = f"scored {m['windows']:.0f} of {windows} windows"
    out["rejected"] = float(m["rejected"])
    return out


def measure(receiver: str, spm: int, per_asset: int, bundle_dir: Path, workdir: Path, inflight: int) -> dict:
    """Queue every reading at a fresh broker with ``receiver``'s session(s) away, then time its drain."""
    messages = build_messages(per_asset, spm)
    readings = per_asset * len(ASSETS)
    windows = len(ASSETS) * (1 + (per_asset - harness.WINDOW) // harness.HOP) if per_asset >= harness.WINDOW else 0
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    broker = harness.Broker(run_dir, inflight)
    client_id = f"bench-drain-{receiver.replace(' ', '-')}-{time.monotonic_ns()}"
    ctx = mp.get_context("fork")
    sub_cmd = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t", "sensors/#",
               "-i", client_id, "-c"]
    daemon = sub = None
    out: dict = {"receiver": receiver, "spm": spm, "readings": readings, "messages": len(messages)}
    try:
        extra = daemon_args(int(receiver[-1])) if receiver.startswith("daemon") else ()
        if receiver == "mosquitto_sub":  # 1. the session(s), then nobody connected
            subprocess.run([*sub_cmd, "-E"], check=True, timeout=30)
        elif receiver == "paho":
            sub = ctx.Process(target=clients.count_subscriber,
                              args=(broker.port, 0, client_id, ctx.Queue(), ctx.Queue()))
            sub.start()
            sub.join(timeout=30)
        else:
            harness.DaemonProcess(broker, bundle_dir, run_dir, client_id=client_id, extra=extra, torch_threads=1).stop()
        out["publish_s"] = publish_all(broker.port, messages)  # 2. everything queued
        started = time.time()  # 3. the receiver comes back
        if receiver == "mosquitto_sub":
            sub = subprocess.Popen([*sub_cmd, "-C", str(len(messages))], stdout=subprocess.DEVNULL)
            try:
                sub.wait(timeout=TIMEOUT_S)
                out["seconds"] = time.time() - started
            except subprocess.TimeoutExpired:
                out["note"] = "timed out"
        elif receiver == "paho":
            ready, done = ctx.Queue(), ctx.Queue()
            sub = ctx.Process(target=clients.count_subscriber,
                              args=(broker.port, len(messages), client_id, ready, done))
            sub.start()
            try:
                connected, ended = done.get(timeout=TIMEOUT_S)
                out["seconds"] = ended - connected
            except queue.Empty:
                out["note"] = "timed out"
        else:
            daemon = harness.DaemonProcess(broker, bundle_dir, run_dir, client_id=client_id, extra=extra,
                                        wait_ready=False, torch_threads=1)
            out.update(watch_daemon(daemon, readings, windows, started))
            out["readings"] = readings - out["skipped"]
            log = daemon.log_path.read_text()[-300:].replace("\n", " | ")
            if log and "note" in out and not out["note"].startswith("all in"):
                out["note"] += ": " + log
        return out
    finally:
        if daemon is not None:
            daemon.stop()
        if isinstance(sub, subprocess.Popen):
            harness.stop_process(sub)
        elif sub is not None:
            sub.join(timeout=10)
            if sub.is_alive():
                sub.terminate()
        broker.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def median_row(runs: list[dict]) -> dict:
    """The runs' median of every number (the one run itself when ``--repeat 1``)."""
    row = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, float | int) and not isinstance(value, bool):
            row[key] = statistics.median(r.get(key, float("nan")) for r in runs)
    row["rate"] = statistics.median(r["readings"] / r.get("seconds", float("nan")) for r in runs)
    row["note"] = "; ".join(r["note"] for r in runs if "note" in r)
    return row


HEADER = (f"{'receiver':>13} {'spm':>3} {'readings':>8} {'msgs/s':>8} {'readings/s':>10} {'x mosq':>6} "
          f"{'drain_s':>7} {'scored_s':>8} {'start_s':>7} {'pub_s':>6} {'rej':>4}")


def format_row(r: dict, ceiling: float) -> str:
    nan = float("nan")
    line = (f"{r['receiver']:>13} {r['spm']:>3} {r['readings']:>8.0f} {r['rate'] / r['spm']:>8.0f} {r['rate']:>10.0f} "
            f"{r['rate'] / ceiling:>6.2f} {r.get('seconds', nan):>7.2f} {r.get('scored_s', nan):>8.2f} "
            f"{r.get('start_s', nan):>7.2f} {r.get('publish_s', nan):>6.2f} {r.get('rejected', nan):>4.0f}")
    return (line + (f"  {r['note']}" if r["note"] else "")).replace(" nan", "   -")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=60_000, help="readings queued per row (all assets)")
    parser.add_argument("--quick", action="store_true", help="12,000 readings")
    parser.add_argument("--repeat", type=int, default=1, help="runs per row; the table shows medians")
    parser.add_argument("--samples-per-message", type=int, default=50, help="readings per batched message")
    parser.add_argument("--batched-readings", type=int, default=600_000,
                        help="readings queued per row of the batched shape (60,000 drain in well under a second)")
    parser.add_argument("--inflight", type=int, default=20, help="Mosquitto max_inflight_messages (0 = no limit)")
    parser.add_argument("--receivers", default=",".join(RECEIVERS), help="rows to run (comma separated)")
    args = parser.parse_args(argv)
    total = 12_000 if args.quick else args.readings
    receivers = args.receivers.split(",")
    print(f"python {sys.version.split()[0]}, cpus {os.cpu_count()}, {harness.load()}")
    version = subprocess.run([harness.mosquitto_binary(), "-h"], capture_output=True, text=True).stdout.split()[2]
    print(f"mosquitto {version}, max_inflight_messages {args.inflight}, persistence off; {len(ASSETS)} assets, "
          f"{len(CHANNELS)} channels, partitions {' '.join(PARTITIONS)}, repeat {args.repeat}")
    workdir = Path(tempfile.mkdtemp(prefix="sensorguard-drain-"))
    try:
        bundle_dir = make_bundle_dir(workdir)
        print("drain: everything queued first; readings/s from the receiver's start (mosquitto_sub), connect (paho) "
              "or first reading (daemon) to its last")
        print(HEADER, flush=True)
        for spm in (1, args.samples_per_message):
            shape_total = total if spm == 1 else (total * 10 if args.quick else args.batched_readings)
            per_asset = max(spm, shape_total // len(ASSETS) // spm * spm)
            runs: dict[str, list[dict]] = {r: [] for r in receivers}
            for _ in range(args.repeat):  # interleaved, so drift in the machine's load hits every row alike
                for receiver in receivers:
                    runs[receiver].append(measure(receiver, spm, per_asset, bundle_dir, workdir, args.inflight))
            rows = {receiver: median_row(got) for receiver, got in runs.items()}
            ceiling = rows["mosquitto_sub"]["rate"] if "mosquitto_sub" in rows else float("nan")
            for row in rows.values():
                print(format_row(row, ceiling), flush=True)
        print(harness.load())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
