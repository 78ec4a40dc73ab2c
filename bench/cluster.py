"""Cluster mode (``serve --cluster``) against the MQTT path: drain rate, CPU per reading, takeover time.

Drain, as in ``bench/drain.py`` (same 100 assets under two sites, 6 channels, one reading per
message, ``--readings`` 60,000 by default): everything is queued first, then the receiver starts and
the clock runs from its first reading to its last. Rows, in one run:

- ``mosquitto_sub``: the C subscriber draining Mosquitto (``bench/drain.py``'s row): the ceiling;
- ``mqtt w1`` / ``mqtt w2``: ``serve --partition site-a/# --partition site-b/# --workers 1|2``
  draining Mosquitto (the MQTT path: the same daemon work per reading, another broker);
- ``cluster w1`` / ``cluster w2``: ``serve --cluster --workers 1|2`` on a fresh single
  ``nats-server`` (JetStream file storage, ``cluster init --partitions 8``), the readings published
  over MQTT 3.1.1 into its MQTT listener and waiting in the readings stream;
- ``bare w1`` / ``w2``: 1 or 2 processes pulling the 8 partitions with the daemon's own puller
  (``service/pull.py`` on ``service/natswire.py``), acknowledging each batch and counting, nothing
  parsed or scored: the ceiling of the daemon's NATS reading (the issue's probe measured nats-py's
  ``fetch`` this way);
- ``cpu_us``: CPU time of the serve process tree (parent and workers) per reading while it drained:
  the per-reading cost of each path on the same machine; ``server_us``: the same for the broker
  (Mosquitto or nats-server), which shares the cores.

Takeover (``--takeovers`` times, medians): two ``serve --cluster`` processes share 8 partitions
while 100 assets stream 10 readings/s each; one is killed with SIGKILL (``kill_s``: until the
survivor owns all 8: at most a lease, 3 s, plus a renewal period) or stopped with SIGTERM
(``term_s``: the clean hand-over). Both: from the signal to the survivor's
``sensorguard_partitions_owned`` reading 8, polled every 0.05 s.

Target (issue 14): cluster w2 >= 0.5 of mosquitto_sub on 2 cores. Everything shares this machine's
cores: Mosquitto or nats-server, the publisher before the clock starts, and the workers.
Run ``OMP_NUM_THREADS=1 python bench/cluster.py`` (``--quick``: 12,000 readings, one takeover;
``--repeat 3``: medians; ``--spm 50 --readings 600000``: 50 readings per message). Prints tables;
asserts nothing (timings vary between runs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import daemon_harness as harness  # noqa: E402  (bench/daemon_harness.py)
import drain  # noqa: E402  (bench/drain.py: the same data, publisher and mosquitto_sub row)

from sensorguard.nats_local import NatsCluster, stream_messages  # noqa: E402
from sensorguard.service import cluster  # noqa: E402

PARTITIONS = 8
TIMEOUT_S = 600.0
RECEIVERS = ("mosquitto_sub", "bare w1", "bare w2", "mqtt w1", "mqtt w2", "cluster w1", "cluster w2")


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its live children (the workers of ``serve --workers N``)."""
    total = 0.0
    try:
        proc = psutil.Process(pid)
        for p in [proc, *proc.children(recursive=True)]:
            with_times = p.cpu_times()
            total += with_times.user + with_times.system
    except psutil.Error:
        pass
    return total


def start_node(run_dir: Path) -> NatsCluster:
    node = NatsCluster(run_dir / "nats", 1).start()
    cluster.run_init(cluster.Layout(partitions=PARTITIONS, servers=node.urls))
    return node


def cluster_args(node: NatsCluster, name: str, workers: int) -> tuple[str, ...]:
    return ("--cluster", node.urls[0], "--mqtt-version", "3.1.1", "--instance", name, "--workers", str(workers),
            "--scoring-threads", "1")


def time_drain(daemon: harness.DaemonProcess, readings: int, server_pid: int) -> dict:
    """From the first reading seen to the last: seconds, and CPU of the serve tree and of the
    broker meanwhile."""
    out: dict = {}
    first = None
    cpu0 = server0 = 0.0
    deadline = time.time() + TIMEOUT_S
    while time.time() < deadline:
        if daemon.proc.poll() is not None:
            out["note"] = f"serve exited with {daemon.proc.returncode}: " + daemon.log_path.read_text()[-300:]
            return out
        try:
            m = daemon.scrape()
        except OSError:
            time.sleep(0.05)
            continue
        got = m["readings"] + m["rejected"]
        now = time.time()
        if first is None and got > 0:
            first, skipped, cpu0, server0 = now, got, tree_cpu(daemon.proc.pid), tree_cpu(server_pid)
        if got >= readings:
            if first is None or now == first:
                out["note"] = "all in at the first poll: too few readings to time"
                return out
            out.update(seconds=now - first, readings=readings - skipped, rejected=m["rejected"],
                       cpu_us=(tree_cpu(daemon.proc.pid) - cpu0) / (readings - skipped) * 1e6,
                       server_us=(tree_cpu(server_pid) - server0) / (readings - skipped) * 1e6)
            return out
        time.sleep(0.02 if first is None else 0.05)
    out["note"] = f"timed out with {got:.0f} of {readings}"
    return out


def measure(receiver: str, per_asset: int, bundle_dir: Path, workdir: Path, inflight: int, spm: int = 1) -> dict:
    """One drain: the readings queued for ``receiver`` (``spm`` per message), then timed while it takes them."""
    if receiver == "mosquitto_sub":
        return {**drain.measure(receiver, spm, per_asset, bundle_dir, workdir, inflight), "cpu_us": float("nan")}
    if receiver.startswith("bare"):
        return measure_bare(int(receiver[-1]), per_asset, workdir, spm)
    messages = drain.build_messages(per_asset, spm)
    readings = per_asset * len(drain.ASSETS)
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    out: dict = {"receiver": receiver, "readings": readings}
    workers = int(receiver[-1])
    name = f"bench-{receiver.replace(' ', '-')}-{time.monotonic_ns()}"
    broker = node = daemon = None
    try:
        if receiver.startswith("mqtt"):
            broker = harness.Broker(run_dir, inflight)
            extra = drain.daemon_args(workers)
            harness.DaemonProcess(broker, bundle_dir, run_dir, client_id=name, extra=extra, torch_threads=1).stop()
            out["publish_s"] = drain.publish_all(broker.port, messages)
        else:
            node = start_node(run_dir)
            broker = SimpleNamespace(url=node.nodes[0].mqtt_url, stop=lambda: None, proc=node.nodes[0].proc)
            extra = cluster_args(node, name, workers)
            out["publish_s"] = drain.publish_all(node.nodes[0].mqtt_port, messages)
            deadline = time.time() + 120
            while stream_messages(node.urls, cluster.READINGS_STREAM) < len(messages) and time.time() < deadline:
                time.sleep(0.2)
        launched = time.time()
        daemon = harness.DaemonProcess(broker, bundle_dir, run_dir, client_id=name, extra=extra, wait_ready=False,
                                    torch_threads=1)
        got = time_drain(daemon, readings, broker.proc.pid)
        out.update(got)
        out["start_s"] = time.time() - launched - got.get("seconds", 0.0)
        return out
    finally:
        if daemon is not None:
            daemon.stop()
        if broker is not None:
            broker.stop()
        if node is not None:
            node.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def _bare(servers: tuple[str, ...], partitions: list[int], out) -> None:
    """A bare receiver (a process): service/pull.py's puller on ``partitions`` over one
    service/natswire.py connection, each batch acknowledged and counted, nothing parsed; puts
    (count, first, last) when idle 1 s."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    from sensorguard.service.natswire import connect as connect_wire
    from sensorguard.service.pull import Puller

    async def run() -> tuple[int, float, float]:
        nc = await cluster.connect(servers)
        wire = await connect_wire(servers)
        counts, first, last = [0], [float("inf")], [0.0]

        async def drain(k: int) -> None:
            durable = f"sg-p{k}"
            await nc.jetstream().add_consumer(cluster.READINGS_STREAM, ConsumerConfig(
                durable_name=durable, filter_subject=f"{cluster.READINGS_ROOT}.{k}.>", ack_policy=AckPolicy.EXPLICIT,
                ack_wait=30, max_ack_pending=20_000, deliver_policy=DeliverPolicy.ALL))
            puller = Puller(wire, cluster.READINGS_STREAM, durable, 256, 0.5, lambda: True)
            puller.open()
            while True:
                got = await puller.fetch(1.0)
                if not got:
                    if counts[0]:
                        break
                    continue
                first[0] = min(first[0], time.time())
                wire.ack(got)
                counts[0] += len(got)
                last[0] = time.time()
            await puller.close()

        await asyncio.gather(*(drain(k) for k in partitions))
        wire.close()
        await nc.close()
        return counts[0], first[0], last[0]

    out.put(asyncio.run(run()))


def measure_bare(processes: int, per_asset: int, workdir: Path, spm: int = 1) -> dict:
    """Readings queued in a fresh node, drained by ``processes`` bare receivers sharing the partitions
    (messages counted: each holds ``spm`` readings)."""
    import multiprocessing as mp

    messages = drain.build_messages(per_asset, spm)
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    node = start_node(run_dir)
    out: dict = {"receiver": f"bare w{processes}", "readings": len(messages), "cpu_us": float("nan")}
    try:
        out["publish_s"] = drain.publish_all(node.nodes[0].mqtt_port, messages)
        while stream_messages(node.urls, cluster.READINGS_STREAM) < len(messages):
            time.sleep(0.2)
        ctx = mp.get_context("fork")
        results = ctx.Queue()
        procs = [ctx.Process(target=_bare, args=(node.urls, list(range(i, PARTITIONS, processes)), results))
                 for i in range(processes)]
        server0 = tree_cpu(node.nodes[0].proc.pid)
        for proc in procs:
            proc.start()
        got = [results.get(timeout=TIMEOUT_S) for _ in procs]
        server_s = tree_cpu(node.nodes[0].proc.pid) - server0  # from their start to their end (a second idle)
        for proc in procs:
            proc.join(10)
        out["readings"] = sum(n for n, _, _ in got) * spm
        out["server_us"] = server_s / out["readings"] * 1e6
        out["seconds"] = max(last for _, _, last in got) - min(first for _, first, _ in got)
        return out
    finally:
        node.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def owned(daemon: harness.DaemonProcess) -> float:
    """Its ``sensorguard_partitions_owned`` (nan while it does not answer)."""
    try:
        with urllib.request.urlopen(daemon.url + "/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return float("nan")
    return next((float(line.split()[-1]) for line in text.splitlines()
                 if line.startswith("sensorguard_partitions_owned ")), float("nan"))


def measure_takeover(signal_name: str, bundle_dir: Path, workdir: Path) -> dict:
    """Two workers on 8 partitions under a paced stream; one stopped by ``signal_name``: seconds until
    the survivor owns all 8."""
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    node = start_node(run_dir)
    broker = SimpleNamespace(url=node.nodes[0].mqtt_url)
    pair: list[harness.DaemonProcess] = []
    stop = threading.Event()
    out: dict = {"signal": signal_name}
    try:
        for name in ("victim", "survivor"):
            (run_dir / name).mkdir()
            pair.append(harness.DaemonProcess(broker, bundle_dir, run_dir / name, client_id=name,
                                           extra=cluster_args(node, name, 1), torch_threads=1))
        victim, survivor = pair
        deadline = time.time() + 60
        while (owned(victim), owned(survivor)) != (4, 4) and time.time() < deadline:
            time.sleep(0.1)
        sender = threading.Thread(target=_paced, args=(node.nodes[0].mqtt_port, stop), daemon=True)
        sender.start()
        time.sleep(3.0)  # readings flowing through both
        signalled = time.time()
        if signal_name == "SIGKILL":
            psutil.Process(victim.proc.pid).kill()
        else:
            victim.proc.terminate()
        while owned(survivor) != PARTITIONS and time.time() < signalled + 60:
            time.sleep(0.05)
        out["seconds"] = time.time() - signalled if owned(survivor) == PARTITIONS else float("nan")
        return out
    finally:
        stop.set()
        for daemon in pair:
            daemon.stop()
        node.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def _paced(port: int, stop: threading.Event, rate: float = 10.0) -> None:
    """Every asset one reading each ``1 / rate`` seconds (QoS 1) until ``stop``."""
    import orjson
    import paho.mqtt.client as paho

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"bench-paced-{os.getpid()}")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    k = 0
    begin = time.monotonic()
    while not stop.is_set():
        ts = harness.TS0 + k / rate
        for asset in drain.ASSETS:
            body = orjson.dumps({"ts": ts, "values": drain.ROW_DICTS[k % len(drain.ROW_DICTS)]})
            client.publish(f"sensors/{asset}/readings", body, qos=1)
        k += 1
        stop.wait(max(0.0, begin + k / rate - time.monotonic()))
    client.disconnect()
    client.loop_stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=60_000, help="readings queued per drain row")
    parser.add_argument("--quick", action="store_true", help="12,000 readings, one takeover of each kind")
    parser.add_argument("--repeat", type=int, default=1, help="runs per drain row; the table shows medians")
    parser.add_argument("--takeovers", type=int, default=None,
                        help="takeovers of each kind (medians; 0: none; default 3, 1 with --quick)")
    parser.add_argument("--inflight", type=int, default=20, help="Mosquitto max_inflight_messages")
    parser.add_argument("--receivers", default=",".join(RECEIVERS), help="drain rows to run (comma separated)")
    parser.add_argument("--spm", type=int, default=1, help="readings per message (the target is for 1)")
    args = parser.parse_args(argv)
    total = 12_000 if args.quick else args.readings
    takeovers = args.takeovers if args.takeovers is not None else (1 if args.quick else 3)
    if takeovers < 0:
        parser.error(f"--takeovers must be >= 0, got {takeovers}")
    per_asset = max(1, total // len(drain.ASSETS))
    nats_version = os.popen("nats-server --version").read().strip()
    print(f"python {sys.version.split()[0]}, cpus {os.cpu_count()}, {harness.load()}; {nats_version}; "
          f"{len(drain.ASSETS)} assets, {len(drain.CHANNELS)} channels, {args.spm} reading(s) per message, "
          f"{PARTITIONS} partitions, repeat {args.repeat}")
    workdir = Path(tempfile.mkdtemp(prefix="sensorguard-cluster-bench-"))
    try:
        bundle_dir = drain.make_bundle_dir(workdir)
        receivers = args.receivers.split(",")
        runs: dict[str, list[dict]] = {r: [] for r in receivers}
        for _ in range(args.repeat):  # interleaved, so drift in the machine's load hits every row alike
            for receiver in receivers:
                runs[receiver].append(measure(receiver, per_asset, bundle_dir, workdir, args.inflight, args.spm))
        rows = {r: drain.median_row(got) for r, got in runs.items()}
        ceiling = rows["mosquitto_sub"]["rate"] if "mosquitto_sub" in rows else float("nan")
        print(f"{'receiver':>13} {'readings':>8} {'readings/s':>10} {'x mosq':>6} {'drain_s':>7} {'cpu_us':>6} "
              f"{'server_us':>9} {'start_s':>7} {'pub_s':>6} {'rej':>4}")
        for r in rows.values():
            line = (f"{r['receiver']:>13} {r['readings']:>8.0f} {r['rate']:>10.0f} {r['rate'] / ceiling:>6.2f} "
                    f"{r.get('seconds', float('nan')):>7.2f} {r.get('cpu_us', float('nan')):>6.1f} "
                    f"{r.get('server_us', float('nan')):>9.1f} "
                    f"{r.get('start_s', float('nan')):>7.2f} {r.get('publish_s', float('nan')):>6.2f} "
                    f"{r.get('rejected', 0):>4.0f}")
            print((line + (f"  {r['note']}" if r.get("note") else "")).replace(" nan", "   -"), flush=True)
        if takeovers:
            print(f"takeover: 2 workers x 4 partitions, {len(drain.ASSETS)} assets at 10 readings/s each; "
                  "seconds from the signal until the survivor owns all 8 (median, min-max)")
            for signal_name in ("SIGKILL", "SIGTERM"):
                got = [measure_takeover(signal_name, bundle_dir, workdir)["seconds"] for _ in range(takeovers)]
                print(f"{signal_name:>8}: {statistics.median(got):.2f} s ({min(got):.2f}-{max(got):.2f}, "
                      f"n={len(got)})", flush=True)
        print(harness.load())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
