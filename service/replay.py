"""``sensorguard replay``: publish a CSV or Parquet file as live readings, paced.

Users test the daemon on their own history: every row becomes one sample on
``<topic_prefix>/<asset>/readings`` (QoS 1), in the payload format the daemon reads (a file with
an ``asset`` column: each row on its own asset's topic). Rows go out raw, in time order, as the
file holds them (gaps, jitter, NaN as null, repeated stamps): the daemon cleans them with the
bundle's policy exactly as ``sensorguard score`` cleans the file, so both give the same windows.
Pacing is ``--rate`` rows per second, or ``--speed`` times the rows' own spacing (default real
time: gaps included, each asset of a several-machine file at its own pace). Timestamps keep the
file's spacing, shifted to start at the wall clock by default (with ``--speed`` above 1 they run
ahead of it; the daemon holds readings to the model's sample period by their stamps, not by when
they arrive); ``--timestamps original`` keeps the file's own.
A replay of the same asset started again before the last one's final stamp has its overlap
refused as ``out_of_order``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
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
    refused: int = 0  # messages the broker's acknowledgement refused (MQTT 5: its access rules, a quota)
    refusal: str = ""  # the first refusal's reason


def schedule(times: np.ndarray, rate: float | None, speed: float | None) -> np.ndarray:
    """Seconds after the start at which each (time-sorted) row is sent: ``rate`` rows per second
    evenly, or the rows' own spacing (gaps included; every asset of the file at its own pace)
    divided by ``speed`` (default 1: real time)."""
    if rate is not None:
        return np.arange(len(times)) / rate
    if not len(times):
        return np.zeros(0)
    return (np.asarray(times, dtype=np.float64) - float(times[0])) / (speed or 1.0)


def replay(
    settings: Settings,
    assets: str | Sequence[str],
    times: np.ndarray,
    values: np.ndarray,
    channels: list[str],
    due: np.ndarray,
    original_ts: bool = False,
    batch: int = 1,
    stop: threading.Event | None = None,
) -> ReplayResult:
    """Publish ``values`` rows (time-sorted readings; NaN: a missing value, sent as null), row ``i``
    ``due[i]`` seconds after the start (:func:`schedule`), up to ``batch`` samples of one asset per
    message, fewer where more would pass ``max_payload_bytes`` (the daemon refuses larger messages).

    assets: one asset id for every row, or each row's. Timestamps keep the file's spacing (its
    gaps and jitter, so the daemon cleans them as ``score`` does), shifted to start at the wall
    clock unless ``original_ts``.
    """
    names = [assets] * len(times) if isinstance(assets, str) else [str(a) for a in assets]
    for asset in dict.fromkeys(names):
        if asset_from_topic(f"{settings.topic_prefix}/{asset}/readings", settings.topic_prefix) != asset:
            raise ValueError(f"invalid asset id {asset!r}: levels of letters, digits, '.', '_', '-' joined by '/'")
    stop = stop or threading.Event()
    client = mqtt.create_client(settings, manual_ack=False, persistent=False, will=False)
    connected, settled, refused = threading.Event(), threading.Event(), []

    def refuse(why: str) -> None:  # (a refusal was waited out for 15 s, then "could not connect": a walk)
        if not settled.is_set():
            refused.append(why)
            settled.set()

    mqtt.watch_connects(client, settings, lambda c: (connected.set(), settled.set()), refuse, connected.clear)
    refusals: list[str] = []  # paho counts a refused message published: replay said "published N", exit 0

    def on_publish(c, userdata, mid, reason_code, properties) -> None:
        if reason_code is not None and getattr(reason_code, "is_failure", False):
            refusals.append(mqtt.reason_text(reason_code))

    client.on_publish = on_publish
    mqtt.connect_async(client, settings, persistent=False)
    try:
        settled.wait(15)
        if refused:
            raise mqtt.Refused(f"the broker at {settings.redacted()['broker']} refused {refused[0]}")
        if not connected.is_set():
            raise ConnectionError(f"could not connect to {settings.redacted()['broker']}")
        started = time.monotonic()
        shift = 0.0 if original_ts or not len(times) else time.time() - float(times[0])
        infos, sent, i = [], 0, 0
        while i < len(values) and not stop.is_set():
            if not connected.is_set():  # the broker went away: wait for it, the schedule paused (publishing
                started += _outage(connected, stop, sent)  # on, paho queued without bound and replay
                continue  # ended in "internal error: ... not currently connected"; a README walk)
            asset, samples, size = names[i], [], 16  # (16: the '{"samples":[]}' around them)
            while i < len(values) and len(samples) < batch and names[i] == asset:
                sample = orjson.dumps({"ts": round(float(times[i]) + shift, 6),
                                       "values": dict(zip(channels, values[i].tolist(), strict=True))})
                if size + len(sample) + 1 > settings.max_payload_bytes:  # the daemon refuses larger ones
                    if not samples:
                        raise ValueError(f"one reading of {len(channels)} channels is {len(sample)} bytes, over "
                                         f"max_payload_bytes ({settings.max_payload_bytes}): serve would refuse it")
                    break
                samples.append(sample)
                size += len(sample) + 1
                i += 1
            body = samples[0] if batch == 1 else b'{"samples":[' + b",".join(samples) + b"]}"
            infos.append(client.publish(f"{settings.topic_prefix}/{asset}/readings", body, qos=1))
            sent += len(samples)
            if len(infos) > 1000:
                infos = [info for info in infos if not _out(info)]
            delay = started + (float(due[i]) if i < len(due) else 0.0) - time.monotonic()  # the next row's time
            if delay > 0:
                stop.wait(delay)
        # stopped during an outage: what the broker had not acknowledged will not be now (a 30 s wait
        # outlasted docker's 10 s grace; found by review)
        confirmed = False if stop.is_set() and not connected.is_set() else mqtt.wait_published(infos, 30.0)
        return ReplayResult(sent, time.monotonic() - started, confirmed, len(refusals), next(iter(refusals), ""))
    finally:
        client.disconnect()
        client.loop_stop()


def _outage(connected: threading.Event, stop: threading.Event, sent: int) -> float:
    """Wait for the broker to come back (or ``stop``), saying so once; the seconds waited."""
    began = time.monotonic()
    log.warning("lost the broker after %d readings: waiting for it to come back (the pace resumes then)", sent)
    while not connected.wait(0.5) and not stop.is_set():
        pass
    if connected.is_set():
        log.warning("the broker is back after %.0f s: replaying on", time.monotonic() - began)
    return time.monotonic() - began


def _out(info) -> bool:
    """Whether a publish went out; one made as the connection dropped never will (paho raises)."""
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return False
