"""A worker process of ``serve --workers N``: one daemon, started and stopped as its parent says,
and the readings count it shares with the parent.

:func:`run_worker` is what each spawned process runs (:class:`~sensorguard.service.workers.Supervisor`
starts, watches and restarts them). Kept apart from the supervisor: this is the child's side of
the pair (a daemon per process), the supervisor the parent's, which holds no MQTT session and scores
nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any

import torch

from sensorguard.service.bundle import Bundle
from sensorguard.service.config import Settings
from sensorguard.service.daemon import Daemon
from sensorguard.service.logs import configure_logging
from sensorguard.service.restart_model import keep_served, worker_model
from sensorguard.service.signals import on_signals
from sensorguard.service.state_writes import EXIT_UNSAVED

# The supervisor's logger: a worker's lines keep the name they are known by (``logger`` in JSON logs, filters).
log = logging.getLogger("sensorguard.service.workers")


def run_worker(settings: Settings, stale: tuple[str, ...], port_out: Any, readings: Any, go: Any,
               parent: int, fleet: str | None = None, copies: str | None = None, index: int = 0) -> None:
    """A worker process: one daemon until SIGTERM or until its parent is gone.

    It loads its model (:func:`worker_model`; ``fleet``: the version its running siblings serve, on
    a restart), says so, and connects only on ``go``: the parent sets it once every worker has
    loaded, so after a restart with a backlog every partition starts draining at the same time
    (importing torch takes seconds, more when the workers start together). It keeps a copy of the
    model it serves in ``copies`` (:mod:`~sensorguard.service.restart_model`), for its siblings'
    restarts.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    configure_logging(settings.log_json, settings.log_level, who=settings.instance_name)
    torch.set_num_threads(settings.scoring_threads)
    bundle, copied = worker_model(settings, fleet, copies)
    daemon = Daemon(settings, bundle)
    daemon.commands.answers_unnamed = index == 0  # (static partitions; a cluster's worker of NO_ASSET answers)
    if copied:
        daemon.models.serving_a_copy()
    keep_served(copies, index, bundle)
    applied = daemon.models.on_swap

    def swapped(new: Bundle) -> None:  # the daemon's own step first, then the copy
        if applied is not None:
            applied(new)
        keep_served(copies, index, new)

    daemon.models.on_swap = swapped
    daemon.connection.unsubscribe = stale
    daemon.metrics.readings = _SharedCounter(daemon.metrics.readings, readings)
    stop = threading.Event()
    on_signals({signal.SIGTERM: stop.set, signal.SIGHUP: daemon.request_reload})
    port_out.send("loaded")
    while not go.wait(0.2):
        if stop.is_set() or os.getppid() != parent:
            return
    daemon.start()
    port_out.send(daemon.metrics_address[1])
    try:
        while not stop.wait(0.5):
            if os.getppid() != parent:
                log.warning("the parent process is gone: stopping")
                break
    finally:
        daemon.stop()
    if daemon.unsaved_at_stop:  # the parent's serve exits with it
        sys.exit(EXIT_UNSAVED)


class _SharedCounter:
    """``readings_total`` counted in the worker's registry and in memory the parent reads, so the
    merged total stays exact across a worker's death (the accounting of every reading needs it)."""

    def __init__(self, counter: Any, shared: Any) -> None:
        self.counter = counter
        self.shared = shared

    def inc(self, amount: float = 1) -> None:
        self.counter.inc(amount)
        self.shared.value += amount  # one writer (the network thread): no lock needed
