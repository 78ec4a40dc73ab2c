"""A real Mosquitto broker for integration tests, and small MQTT/HTTP helpers around it.

The broker runs on a free loopback port with a generated config (persistence on, so sessions and
queued readings survive a broker restart; a large queue so tests never hit the default 1000).
Without ``mosquitto`` the tests are skipped with the reason printed, except under ``CI=true``,
where they fail: CI must really run them.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from sensorguard.service.localhost import MOSQUITTO_PLACES, free_port


def client_id(prefix: str) -> str:
    """A client id no other client of the broker holds: a broker drops the older of two clients with
    one id, so a suffix drawn from free ports (random, and they repeat) could drop a test's daemon."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def need_program(program: str, *extra: str, package: str | None = None) -> str:
    """Path of a real program the test talks to; skip with the reason printed, or fail under CI=true."""
    path = shutil.which(program) or next((p for p in extra if os.access(p, os.X_OK)), None)
    if path:
        return path
    reason = f"{program} not found (apt-get install {package or program})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: required under CI=true")
    print(f"SKIP: {reason}")
    pytest.skip(reason)


def need_mosquitto() -> str:
    return need_program("mosquitto", *MOSQUITTO_PLACES, package="mosquitto mosquitto-clients")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a ``sensorguard`` subprocess: no stray SENSORGUARD_* settings from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSORGUARD_")}
    return {**env, **extra}


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05,
             proc: subprocess.Popen | None = None, log: Path | None = None):
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``.

    With ``proc``, fail at once (showing ``log``) if that process exits while we wait.
    """
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: process exited with {proc.returncode}\n{log.read_text() if log else ''}")
        try:
            value = predicate()
        except (OSError, urllib.error.URLError):
            value = None
        if value:
            return value
        time.sleep(interval)
    tail = log.read_text()[-4000:] if log else ""
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last value {value!r})\n{tail}")


class Mosquitto:
    """One broker process in ``workdir``; ``stop()`` and ``start()`` again keep its port and data."""

    def __init__(self, workdir: Path) -> None:
        self.binary = need_mosquitto()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = self.workdir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None
        (self.workdir / "mosquitto.conf").write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"user {getpass.getuser()}\n"  # as root, mosquitto would switch to 'mosquitto' and not write here
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "max_queued_messages 100000\n"
            "max_queued_bytes 0\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.workdir / "mosquitto.conf")], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"mosquitto exited with {self.proc.returncode}:\n{self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"mosquitto did not listen on {self.port}:\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its persistence file) and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


class Collector:
    """A plain MQTT subscriber that records every message it gets (topic, JSON or text, retain)."""

    def __init__(self, broker: Mosquitto, topic: str = "sensorguard/#", client_id: str | None = None) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, object, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        client_id = client_id or f"collector-{time.monotonic_ns()}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        wait_for(self._subscribed.is_set, 10, f"subscription to {topic}")

    def _on_message(self, client, userdata, msg) -> None:
        text = msg.payload.decode()
        try:
            payload = json.loads(text)
        except ValueError:
            payload = text
        with self._lock:
            self.messages.append((msg.topic, payload, bool(msg.retain)))

    def on(self, topic: str) -> list:
        with self._lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def statuses(self, prefix: str = "sensorguard/status/") -> list[str]:
        """The ``state`` of every instance status received under ``prefix``, in order."""
        with self._lock:
            return [payload["state"] for t, payload, _ in self.messages
                    if t.startswith(prefix) and isinstance(payload, dict)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Publisher:
    """Publishes readings with QoS 1 and waits until the broker has each one."""

    def __init__(self, broker: Mosquitto) -> None:
        import paho.mqtt.client as mqtt

        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"publisher-{time.monotonic_ns()}")
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def raw(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(timeout=10)

    def samples(self, asset: str, times, values, channels, batch: int = 50, prefix: str = "sensors") -> None:
        """Publish rows ``values[i]`` at ``times[i]`` in batches of ``batch`` samples."""
        infos = []
        for start in range(0, len(times), batch):
            samples = [
                {"ts": float(times[i]), "values": {c: float(values[i][j]) for j, c in enumerate(channels)}}
                for i in range(start, min(start + batch, len(times)))
            ]
            infos.append(self.client.publish(f"{prefix}/{asset}/readings", json.dumps({"samples": samples}), qos=1))
        for info in infos:
            info.wait_for_publish(timeout=10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """``/metrics`` as {(sample name, sorted label items): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def metric(url: str, name: str, **labels) -> float | None:
    return scrape(url).get((name, tuple(sorted(labels.items()))))


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def start_daemon(flags: dict, ready_timeout: float = 20.0):
    """An in-process ``Daemon`` built from serve ``flags``, started and ready; returns (daemon, metrics url)."""
    from sensorguard.service.config import load_settings
    from sensorguard.service.daemon import Daemon
    from sensorguard.service.hotswap import load_model

    settings = load_settings(flags, {})
    daemon = Daemon(settings, load_model(settings))
    daemon.start()
    host, port = daemon.metrics_address
    url = f"http://{host}:{port}"
    try:
        wait_for(lambda: http_status(f"{url}/readyz") == 200, ready_timeout, "/readyz")
    except BaseException:  # pytest.fail raises a BaseException: never leave the daemon running
        daemon.stop()
        raise
    return daemon, url

