"""The demo's broker: ``mosquitto`` as a child process when installed, else amqtt embedded here.

Only ``sensorguard demo`` uses it (zero install: amqtt is pure Python, MQTT 3.1.1 only, so the
daemon speaks 3.1.1 to it). Tests and benchmarks run a real Mosquitto of their own
(``tests/mosquitto.py``); production runs whatever broker the plant has.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import threading
import time
from pathlib import Path

from sensorguard.service.localhost import find_mosquitto, free_port

log = logging.getLogger(__name__)


class DemoBroker:
    """``mosquitto`` as a child process, or amqtt in a thread of this process."""

    def __init__(self, kind: str, workdir: Path) -> None:
        if kind == "auto":
            kind = "mosquitto" if find_mosquitto() else "amqtt"
        self.kind = kind
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.mqtt_version = "5" if kind == "mosquitto" else "3.1.1"  # amqtt refuses MQTT 5
        self._workdir = workdir
        self._proc: subprocess.Popen | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.kind == "amqtt":
            self._start_amqtt()  # returns once amqtt is listening; a probe connection would log an error
            return
        if self.kind == "mosquitto":
            self._start_mosquitto()
        else:
            raise ValueError(f"broker must be auto, mosquitto or amqtt, got {self.kind!r}")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"the demo broker ({self.kind}) did not start listening on port {self.port}")

    def _start_mosquitto(self) -> None:
        binary = find_mosquitto()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto), use --broker amqtt")
        conf = self._workdir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        "max_queued_messages 100000\n")
        self._proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True)  # (Ctrl-C: stopped by the demo after its daemon)

    def _start_amqtt(self) -> None:
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        loop = asyncio.new_event_loop()
        started = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)

            async def boot() -> None:
                self._broker = Broker(config)
                await self._broker.start()

            try:
                loop.run_until_complete(boot())
            except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
                errors.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="sensorguard-demo-broker", daemon=True)
        self._thread.start()
        if not started.wait(15) and not errors:
            errors.append("it did not start within 15 s")
        if errors:
            raise RuntimeError(f"the embedded amqtt broker failed to start: {errors[0]}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
        if self._loop is not None and self._broker is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(10)
            except Exception:  # noqa: BLE001 - best effort at exit
                log.debug("amqtt shutdown failed", exc_info=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._loop = None
