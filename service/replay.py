"""``sensorguard replay``: publish a CSV or Parquet file as live readings, paced.

Users test the daemon on their own history: every row becomes one sample on
``<topic_prefix>/<asset>/readings`` (QoS 1), in the payload format the daemon reads. Pacing is
``--rate`` rows per second, or ``--speed`` times the data's own sample rate (default real time).
Timestamps are the wall clock at sending by default, so a file can be replayed again and again
(the daemon rejects timestamps older than the asset's last one); ``--timestamps original`` keeps
the file's own.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
import orjson

from sensorguard.service import mqtt
from sensorguard.service.config import Settings
from sensorguard.service.payload import asset_from_topic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayResult:
    rows: int
    seconds: float
    confirmed: bool


def period_s(times: np.ndarray, rate: float | None, speed: float | None) -> float:
    """Seconds between two published rows."""
    if rate is not None:
        return 1.0 / rate
    steps = np.diff(times)
    sample = float(np.median(steps)) if len(steps) else 1.0
    return sample / (speed or 1.0)


def replay(
    settings: Settings,
    asset: str,
    times: np.ndarray,
    values: np.ndarray,
    channels: list[str],
    period: float,
    original_ts: bool = False,
    batch: int = 1,
    stop: threading.Event | None = None,
) -> ReplayResult:
    """Publish ``values`` rows (one sample each, ``batch`` samples per message) every ``period`` s."""
    if asset_from_topic(f"{settings.topic_prefix}/{asset}/readings", settings.topic_prefix) != asset:
        raise ValueError(f"invalid asset id {asset!r}: levels of letters, digits, '.', '_', '-' joined by '/'")
    stop = stop or threading.Event()
    client = mqtt.create_client(settings, manual_ack=False, persistent=False, will=False)
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
    mqtt.connect_async(client, settings, persistent=False)
    try:
        if not connected.wait(15):
            raise ConnectionError(f"could not connect to {settings.redacted()['broker']}")
        topic = f"{settings.topic_prefix}/{asset}/readings"
        started = time.monotonic()
        last_ts, infos, sent = 0.0, [], 0
        for first in range(0, len(values), batch):
            if stop.is_set():
                break
            samples = []
            for i in range(first, min(first + batch, len(values))):
                ts = float(times[i]) if original_ts else max(time.time(), last_ts + 1e-3)
                last_ts = ts
                samples.append({"ts": round(ts, 3), "values": dict(zip(channels, values[i].tolist(), strict=True))})
            doc = samples[0] if batch == 1 else {"samples": samples}
            infos.append(client.publish(topic, orjson.dumps(doc), qos=1))
            sent += len(samples)
            if len(infos) > 1000:
                infos = [i for i in infos if not i.is_published()]
            delay = started + sent * period - time.monotonic()
            if delay > 0:
                stop.wait(delay)
        confirmed = mqtt.wait_published(infos, 30.0)
        return ReplayResult(sent, time.monotonic() - started, confirmed)
    finally:
        client.disconnect()
        client.loop_stop()
