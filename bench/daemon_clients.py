"""The MQTT clients the daemon benchmarks run around a daemon: publishers and subscribers.

Split from ``bench/daemon_harness.py`` (the bundle, the readings, the broker and daemon processes) so
each module stays readable. ``flood_publisher`` and ``paced_publisher`` run in their own processes
(:func:`start_processes`); ``count_subscriber`` counts what a persistent session receives;
:class:`StateProbe` times the daemon's retained states. Nothing here prints a result but the paced
publisher's count of publishes paho refused.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from datetime import datetime

import numpy as np
import orjson
from daemon_harness import TS0, sample


def count_subscriber(port: int, n: int, client_id: str, ready, results) -> None:
    """A plain paho MQTT 5 subscriber, ``manual_ack`` and a persistent session like the daemon's, that
    acknowledges and counts; ``n == 0``: only create the session (subscribe) and leave."""
    import paho.mqtt.client as paho
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    from paho.mqtt.subscribeoptions import SubscribeOptions

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5, manual_ack=True)
    done = threading.Event()
    seen = [0]
    connected = [0.0]

    def on_message(c, userdata, message):
        c.ack(message.mid, message.qos)
        seen[0] += 1
        if seen[0] == n:
            results.put((connected[0], time.time()))
            done.set()

    def on_connect(c, *a):
        connected[0] = time.time()
        c.subscribe("sensors/#", options=SubscribeOptions(qos=1))

    def on_subscribe(*a):
        ready.put("sub")
        if n == 0:
            done.set()

    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.on_connect = on_connect
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
    client.loop_start()
    done.wait(600)
    client.disconnect()
    client.loop_stop()


# --- publishers ----------------------------------------------------------------------------------


def build_messages(assets: list[str], per_asset: int, spm: int) -> list[tuple[str, bytes]]:
    """``per_asset`` samples for each asset as messages of ``spm`` samples, round-robin over assets."""
    out = []
    for start in range(0, per_asset, spm):
        for asset in assets:
            samples = [sample(k, TS0 + k) for k in range(start, min(start + spm, per_asset))]
            body = samples[0] if spm == 1 else {"samples": samples}
            out.append((f"sensors/{asset}/readings", orjson.dumps(body)))
    return out


def flood_publisher(port: int, assets: list[str], per_asset: int, spm: int, go, ready, results) -> None:
    """Publish every message as fast as paho can (QoS 1, 1000 in flight); report send/ack times."""
    import paho.mqtt.client as paho

    messages = build_messages(assets, per_asset, spm)
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}")
    client.max_inflight_messages_set(1000)  # message ids are 16 bits: keep far below 65535
    client.connect("127.0.0.1", port)
    client.loop_start()
    ready.put(len(messages))
    go.wait()
    started = time.time()
    infos = []
    for i, (topic, body) in enumerate(messages):
        if i >= 30_000:  # paho keys outstanding messages by their 16-bit id: never hold more than 30k
            infos[i - 30_000].wait_for_publish(timeout=600)
        infos.append(client.publish(topic, body, qos=1))
    sent = time.time()
    for info in infos:
        info.wait_for_publish(timeout=600)
    results.put((started, sent, time.time(), len(messages)))
    client.loop_stop()
    client.disconnect()


def paced_publisher(port: int, assets: list[str], rate: float, seconds: float, spm: int, spike_every: int,
                     published, go, ready, results) -> None:
    """Publish ``rate`` readings/s for ``seconds``, ``ts`` = the wall-clock send time; count in ``published``."""
    import paho.mqtt.client as paho

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"bench-paced-{os.getpid()}")
    client.max_inflight_messages_set(1000)  # message ids are 16 bits: keep far below 65535
    client.connect("127.0.0.1", port)
    client.loop_start()
    counts = dict.fromkeys(assets, 0)
    last = dict.fromkeys(assets, 0.0)
    per_s = rate / spm
    total = int(per_s * seconds)
    ready.put(total)
    go.wait()
    started = time.perf_counter()
    i = late = failed = 0
    while i < total:
        now = time.perf_counter()
        due = started + i / per_s
        if now < due:
            time.sleep(min(due - now, 0.001))
            continue
        late = max(late, now - due)
        while i < total and started + i / per_s <= now:
            asset = assets[i % len(assets)]
            k, ts = counts[asset], max(time.time(), last[asset] + 1e-5)
            samples = [sample(k + j, ts + j * 1e-5, spike_every) for j in range(spm)]
            counts[asset], last[asset] = k + spm, ts + (spm - 1) * 1e-5
            info = client.publish(f"sensors/{asset}/readings",
                                  orjson.dumps(samples[0] if spm == 1 else {"samples": samples}), qos=1)
            i += 1
            if info.rc != 0:  # e.g. paho's 16-bit message ids all outstanding: not sent, not counted
                failed += 1
                continue
            with published.get_lock():
                published.value += spm
    if failed:
        print(f"paced publisher: {failed} of {i} publishes refused by paho (not counted)", flush=True)
    results.put((time.perf_counter() - started, published.value, late))
    time.sleep(1.0)
    client.loop_stop()
    client.disconnect()


class StateProbe:
    """Subscribes to ``sensorguard/state/#``; each message gives ``arrival - ts`` (publish-to-score)."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as paho

        self.arrivals: list[tuple[float, bytes]] = []
        subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"bench-probe-{os.getpid()}")
        self.client.on_message = lambda c, u, m: self.arrivals.append((time.time(), m.payload))
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe("sensorguard/state/#", qos=0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        subscribed.wait(10)

    def latencies(self, since: float = 0.0, until: float = float("inf")) -> np.ndarray:
        """Seconds from the completing reading's send time to the state's arrival, arrivals in [since, until)."""
        out = []
        for arrival, payload in list(self.arrivals):
            if since <= arrival < until:
                ts = datetime.fromisoformat(orjson.loads(payload)["ts"].replace("Z", "+00:00")).timestamp()
                out.append(arrival - ts)
        return np.array(out)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def start_processes(target, arg_sets: list[tuple]) -> tuple[list, object, object, object]:
    """Start one process per argument tuple; wait until each is ready; return (procs, go, ready, results)."""
    ctx = mp.get_context("fork")
    go, ready, results = ctx.Event(), ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, go, ready, results), daemon=True) for args in arg_sets]
    for proc in procs:
        proc.start()
    total = sum(ready.get(timeout=300) for _ in procs)
    return procs, go, results, total
