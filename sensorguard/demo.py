"""``sensorguard demo``: the whole live loop on one machine, with nothing else to install.

1. simulate normal history of a plant and train a small model on it (seconds, with progress);
2. start a broker: ``mosquitto`` when it is on PATH (MQTT 5), else amqtt embedded in this
   process (pure Python, MQTT 3.1.1 only, so the daemon speaks 3.1.1 to it);
3. run the daemon (:class:`service.daemon.Daemon`, exactly what ``sensorguard serve`` runs), with
   metrics on ``127.0.0.1:10100`` (or a free port when that one is taken);
4. stream several simulated assets at an accelerated rate, each its own seed, with faults
   injected at known times (asset 1 stays healthy), and show alerts rising and clearing as the
   daemon publishes them on MQTT: a live table in a terminal, plain lines otherwise (CI, pipes).

This module imports the training stack (it trains); ``serve`` never imports it.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from sensorguard.broker import DemoBroker
from sensorguard.demo_view import AssetView, Fault, View, print_summary, shown
from sensorguard.demo_workdir import claim_workdir, mark_workdir
from sensorguard.service.localhost import port_free

log = logging.getLogger(__name__)

DEMO_CHANNELS = 5  # temp_in, temp_out, pressure, flow, current
FAULTS = (("level_shift", "pressure"), ("level_shift", "flow"), ("level_shift", "temp_out"), ("spike", "current"),
          ("drift", "pressure"))
FAULT_EVERY_S = 12.0  # asset k (k >= 1) gets its fault at k * 12 s of streaming
FAULT_LENGTH_S = 8.0
DEAD_SENSOR = ("dead_sensor", "temp_in", 3.0, 6.0)  # the last asset's temp_in reads -9999 from 3 s to 9 s
DEAD_VALUE = -9999.0  # what many transmitters send for a broken sensor


class Endpoint(Protocol):
    """Where the demo's plant publishes and its view listens: the demo broker, or a NATS node's
    MQTT listener (``demo --cluster``)."""

    port: int
    mqtt_version: str


def watch_hint(broker: DemoBroker) -> str:
    """How to watch the demo from another terminal: ``mosquitto_sub`` where it is installed, else
    sensorguard's own ``alerts`` (with the embedded broker there is no mosquitto, and the hint named
    a program the machine lacks: a walk)."""
    if shutil.which("mosquitto_sub"):
        return f"mosquitto_sub -p {broker.port} -t 'sensorguard/#' -v"
    return f"sensorguard alerts --all --broker {broker.url} --mqtt-version {broker.mqtt_version}"


def plan(assets: int) -> dict[str, list[Fault]]:
    """Asset names and their injected faults: ``pump-1`` stays healthy, the others get one process
    fault each, and the last one (of two or more) also a dead sensor, which the daemon reports as
    a sensor fault and keeps out of the process score."""
    out = {}
    for k in range(assets):
        faults = []
        if k >= 1:
            kind, channel = FAULTS[(k - 1) % len(FAULTS)]
            faults.append(Fault(kind, channel, FAULT_EVERY_S * k, FAULT_LENGTH_S))
        if k >= 1 and k == assets - 1:
            faults.append(Fault(*DEAD_SENSOR))
        out[f"pump-{k + 1}"] = faults
    return out


def plant_streams(faults: dict[str, list[Fault]], rows: int, rate: float, seed: int):
    """Per asset: raw values ``(rows, C)`` with its faults injected, and the channel names."""
    from sensorguard.training.simulate import inject, simulate

    streams = {}
    channels: list[str] = []
    for k, (asset, asset_faults) in enumerate(faults.items()):
        frame = simulate(rows=rows, channels=DEMO_CHANNELS, seed=seed + 1000 + k)
        rng = np.random.default_rng(seed + 2000 + k)
        for f in asset_faults:
            start = int(f.start_s * rate)
            length = min(int(f.length_s * rate), rows - start)
            if length > 0 and f.kind == "dead_sensor":
                frame.iloc[start: start + length, frame.columns.get_loc(f.channel)] = DEAD_VALUE
            elif length > 0:
                frame = inject(frame, f.kind, start, length, f.channel, rng)
        channels = [c for c in frame.columns if c not in ("timestamp", "anomaly")]
        streams[asset] = frame
    return streams, channels


HISTORY_MACHINES = 3


def history_rows(rows: int) -> int:
    """The normal history ``--train-rows`` makes: each machine's share, at least 500 rows (the demo
    said "5 rows" and trained on 1,500; a README walk)."""
    return HISTORY_MACHINES * max(rows // HISTORY_MACHINES, 500)


def train_model(workdir: Path, rows: int, max_epochs: int, seed: int, progress: bool):
    """Simulate normal history of a few machines and train a bundle into ``workdir/model``.

    The history comes from several machines of the same type (an ``asset`` column), as a plant
    would train one model for a fleet: one machine's few hours see too narrow a slice of the
    shared load, and the model then false-alarms on its siblings (measured: 17 of 30 fresh normal
    streams raised an alert with one 20k-row history, 1 of 30 with three 8k-row histories).
    """
    import pandas as pd

    from sensorguard.service.bundle import save_bundle
    from sensorguard.training.data import series_from_frame
    from sensorguard.training.simulate import simulate
    from sensorguard.training.train import TrainOptions, train_bundle

    machines = []
    for k in range(HISTORY_MACHINES):
        frame = simulate(rows=history_rows(rows) // HISTORY_MACHINES, channels=DEMO_CHANNELS, seed=seed + k)
        machines.append(frame.drop(columns=["anomaly"]).assign(asset=f"history-{k + 1}"))
    normal = pd.concat(machines, ignore_index=True)
    normal.to_csv(workdir / "normal.csv", index=False, float_format="%.6g")
    mark_workdir(workdir)  # (stopped while it trains, the next run knows this history for the demo's)
    data = series_from_frame(normal, name="simulated normal history", asset_column="asset")
    options = TrainOptions(max_epochs=max_epochs, seed=seed, progress=progress, max_windows_per_epoch=4096)
    bundle, summary = train_bundle(data, options)
    return save_bundle(bundle, workdir / "model"), summary


# --- the live view -------------------------------------------------------------------------------


# --- the run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoOptions:
    workdir: Path
    seed: int = 0
    duration_s: float = 55.0
    assets: int = 4
    rate: float = 20.0
    train_rows: int = 20_000
    max_epochs: int = 16
    broker: str = "auto"
    metrics_port: int = 10100


@dataclass(frozen=True)
class Prepared:
    """What every demo starts from: a trained bundle and the plant's streams, with their faults."""

    bundle_dir: Path
    window: int
    faults: dict[str, list[Fault]]
    streams: dict
    channels: list[str]
    started: float


def streamed_faults(faults: dict[str, list[Fault]], duration_s: float, rate: float,
                    window: int) -> tuple[dict[str, list[Fault]], list[str]]:
    """The planned faults a run can show, and one line each for the others: one starting after
    ``--duration``, or ending before the first window is full (``window / rate`` seconds), was
    listed as missed (a walk)."""
    kept: dict[str, list[Fault]] = {}
    left: list[str] = []
    first = window / rate
    for asset, planned in faults.items():
        kept[asset] = []
        for f in planned:
            why = (f"after --duration {duration_s:g}s" if f.start_s >= duration_s else
                   f"over before the first window is full ({first:g}s at --rate {rate:g})"
                   if f.start_s + f.length_s <= first else None)
            if why is None:
                kept[asset].append(f)
            else:
                left.append(f"{asset}: {f.kind} on {f.channel} at {f.start_s:g}s ({why})")
    return kept, left


def prepare(options: DemoOptions, console, steps: int) -> Prepared:
    """Step 1 of ``steps``: train a small model, then simulate the plant (saved beside it as CSV)."""
    workdir = options.workdir
    claim_workdir(workdir)
    started = time.monotonic()
    console.print(f"[bold]1/{steps}[/] training a small model on {history_rows(options.train_rows)} rows of "
                  "simulated normal "
                  f"history of {HISTORY_MACHINES} machines ({DEMO_CHANNELS} channels) in {workdir}")
    bundle_dir, summary = train_model(workdir, options.train_rows, options.max_epochs, options.seed,
                                      progress=console.is_terminal)
    mark_workdir(workdir)
    console.print(f"    trained in {time.monotonic() - started:.1f}s: window {summary.window}, hop {summary.hop}, "
                  f"threshold {summary.threshold:.4g}, {summary.epochs} epochs")
    faults, left = streamed_faults(plan(options.assets), options.duration_s, options.rate, summary.window)
    for line in left:
        console.print(f"    not shown in this run: {line}")
    rows = int(options.duration_s * options.rate) + 1
    streams, channels = plant_streams(faults, rows, options.rate, options.seed)
    for asset, frame in streams.items():
        frame.to_csv(workdir / f"plant-{asset}.csv", index=False, float_format="%.6g")
    return Prepared(bundle_dir, summary.window, faults, streams, channels, started)


def run_demo(options: DemoOptions, stop: threading.Event | None = None) -> int:
    """Train, start broker and daemon, stream the plant, show alerts; 0 when it ran to the end."""
    from rich.console import Console

    console = Console(soft_wrap=True)
    stop = stop or threading.Event()
    workdir = options.workdir
    ready = prepare(options, console, 3)
    bundle_dir, faults, streams, channels, started = (ready.bundle_dir, ready.faults, ready.streams, ready.channels,
                                                      ready.started)

    broker = DemoBroker(options.broker, workdir)
    daemon = None
    interrupted = False  # Ctrl-C: 130, not the 0 of a run to its end (a walk)
    try:
        broker.start()  # (inside: a mosquitto that never listened is stopped too)
        port = options.metrics_port if port_free(options.metrics_port) else 0
        daemon = start_daemon({"model": str(bundle_dir), "broker": broker.url, "mqtt_version": broker.mqtt_version,
                               "client_id": f"sensorguard-demo-{broker.port}", "metrics_port": port},
                              f"the demo broker at {broker.url}")
        host, port = daemon.metrics_address
        console.print(f"[bold]2/3[/] broker: {broker.kind} at {broker.url} (MQTT {broker.mqtt_version}); "
                      f"daemon metrics at http://{host}:{port}/metrics")
        console.print(f"[bold]3/3[/] streaming {len(streams)} assets at {options.rate:g} readings/s each for "
                      f"{options.duration_s:g}s (watch: {watch_hint(broker)})")
        views = {a: AssetView(a, f) for a, f in faults.items()}
        view = View(views, console)
        daemon.add_listener(view.scored)
        watcher = watch_alerts(broker, view)
        try:
            stream_plant(streams, channels, broker, options, view, stop)
        finally:
            watcher.loop_stop()
            watcher.disconnect()
        print_summary(console, views)
    except KeyboardInterrupt:
        console.print("interrupted: stopping")
        interrupted = True
    finally:
        try:
            if daemon is not None:
                daemon.stop()
        finally:
            broker.stop()  # (whatever the daemon's stop raised: never a broker left behind)
    console.print(f"done in {time.monotonic() - started:.0f}s; files in {workdir}")
    return 130 if interrupted else 0


def start_daemon(flags: dict, where: str, timeout: float = 15.0):
    """A daemon (exactly what ``serve`` runs) from serve ``flags``, started and ready."""
    from sensorguard.service.config import load_settings
    from sensorguard.service.daemon import Daemon
    from sensorguard.service.hotswap import load_model

    settings = load_settings({"stale_after_s": 30.0, **flags}, {})
    daemon = Daemon(settings, load_model(settings))
    try:
        daemon.start()
    except BaseException:
        daemon.stop()
        raise
    deadline = time.monotonic() + timeout
    while not daemon.ready():
        if time.monotonic() > deadline:
            daemon.stop()
            raise RuntimeError(f"the daemon could not connect to {where}")
        time.sleep(0.05)
    return daemon


def mqtt_client(broker: Endpoint, client_id: str):
    import paho.mqtt.client as paho

    v5 = broker.mqtt_version == "5"
    return paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                       protocol=paho.MQTTv5 if v5 else paho.MQTTv311)


def watch_alerts(broker: Endpoint, view: View):
    """Subscribe to the daemon's alert events, as any consumer would."""
    subscribed = threading.Event()
    client = mqtt_client(broker, f"sensorguard-demo-view-{broker.port}")
    client.on_connect = lambda c, *a: c.subscribe("sensorguard/alerts/#", qos=1)
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = lambda c, u, msg: view.event(json.loads(msg.payload))
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    if not subscribed.wait(10):
        client.loop_stop()
        raise RuntimeError(f"the demo's alert view could not subscribe on port {broker.port}")
    return client


def stream_plant(streams, channels, broker: Endpoint, options: DemoOptions, view: View, stop: threading.Event) -> None:
    """Publish one reading per asset every ``1 / rate`` seconds (QoS 1), refreshing the view.

    Readings carry the plant's own clock (its sample period, from the moment streaming starts), so
    the daemon sees them at the model's rate however fast they are streamed (a publisher faster than
    the model is resampled, ``service/cleaning.py``)."""
    from rich.live import Live

    publisher = mqtt_client(broker, f"sensorguard-demo-plant-{broker.port}")
    publisher.connect("127.0.0.1", broker.port)
    publisher.loop_start()
    arrays = {a: f[channels].to_numpy() for a, f in streams.items()}
    rows = min(len(v) for v in arrays.values())
    period = 1.0 / options.rate
    stamps = next(iter(streams.values()))["timestamp"]
    step = (stamps.iloc[1] - stamps.iloc[0]).total_seconds() if rows > 1 else 1.0  # the plant's sample period
    live = Live(view.render(), console=view.console, refresh_per_second=4) if view.live else None
    next_report = 10.0
    try:
        if live is not None:
            live.start()
        begin, start_ts = time.monotonic(), time.time()
        for i in range(rows):
            if stop.is_set():
                break
            ts = start_ts + i * step
            for asset, values in arrays.items():
                sample = {"ts": round(ts, 3), "values": dict(zip(channels, values[i].tolist(), strict=True))}
                publisher.publish(f"sensors/{asset}/readings", json.dumps(sample), qos=1)
            if live is not None:
                live.update(view.render())
            elif view.elapsed() >= next_report:
                scores = "  ".join(f"{a.name}{'@' + a.owner if a.owner else ''} {a.status} {shown(a.score).strip()}"
                                   for a in view.assets.values())
                print(f"{view.elapsed():6.1f}s  scores: {scores}", flush=True)
                next_report += 10.0
            delay = begin + (i + 1) * period - time.monotonic()
            if delay > 0:
                stop.wait(delay)
        time.sleep(0.5)  # let the last windows be scored and their events arrive
        if live is not None:
            live.update(view.render())
    finally:
        if live is not None:
            live.stop()
        publisher.loop_stop()
        publisher.disconnect()
