"""``serve --workers N``: one daemon process per share of the partitions, behind one parent.

The Python daemon keeps about one core busy (paho's network thread and the scorer share a GIL),
so a host with more cores runs several. Worker ``k`` of ``N`` is a whole
:class:`~sensorguard.service.daemon.Daemon` in its own process (``spawn``: no torch state is
forked; :mod:`~sensorguard.service.worker_process`) with:

- its own persistent MQTT session, client id ``<client_id>-w<k>``, instance ``<instance>-w<k>``
  (its retained status, Last Will, event tag and ``partition_info``), so a worker that restarts
  resumes exactly its session and gets what the broker queued meanwhile;
- the partitions ``partition[k::N]``: a stable mapping, the same on every start with the same
  list and ``N``;
- ``<state_dir>/w<k>`` and ``<record_dir>/w<k>`` (``retrain --recorded`` reads the subfolders), and
  ``record_max_mb / N``, so the workers never write each other's files;
- its ``/metrics`` on a loopback port it picks and tells the parent.

The parent holds no MQTT session and scores nothing. It serves the one ``/metrics``, ``/healthz``
and ``/readyz`` (:mod:`sensorguard.service.aggregate` merges the workers'; ready when every worker
is), forwards SIGHUP to the workers, stops them all on SIGTERM/SIGINT (each stops as a single
daemon does: finish what is due, final states, ``offline``), and restarts a worker that died,
after ``RESTART_MIN_S`` doubling to ``RESTART_MAX_S`` while it keeps dying young. A worker whose
parent died stops by itself. ``N == 1`` is the plain single daemon, client id unchanged.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from sensorguard.service.aggregate import WorkerCounters, merge, parse
from sensorguard.service.config import Settings
from sensorguard.service.metrics_http import serve_http, shutdown_http
from sensorguard.service.restart_model import make_copies_dir
from sensorguard.service.state_writes import EXIT_UNSAVED
from sensorguard.service.worker_http import at_once, fetch, why_not_ready
from sensorguard.service.worker_process import run_worker

log = logging.getLogger(__name__)

RESTART_MIN_S = 1.0
RESTART_MAX_S = 30.0
STABLE_S = 60.0  # a worker that ran this long resets the restart backoff
STOP_TIMEOUT_S = 60.0
GO_TIMEOUT_S = 60.0  # workers connect together once all loaded, or after this long
HEALTH_PROBE_S = 5.0  # how often the parent asks each worker's /healthz
COLLECT_S = 5.0  # how often the parent reads its workers' metrics between scrapes (what a crash loses)
HUNG_RESTART_S = 60.0  # a worker failing its /healthz this long is killed, then restarted (its session keeps readings)
WATCH_STUCK_S = 30.0  # the parent's own loop not round for this long: its /healthz says 503
READINGS = ("sensorguard_readings", "sensorguard_readings_total", ())


@dataclass
class Slot:
    """One worker position: its settings and the process serving it now."""

    index: int
    settings: Settings
    process: Any = None
    port: int | None = None
    pipe: Any = None
    readings: Any = None
    loaded: bool = False
    generation: int = 0  # processes of this slot found dead so far
    started: float = 0.0
    restart_at: float | None = None
    backoff: float = 0.0  # the wait before the next restart (0: none yet, the first is RESTART_MIN_S)
    counters: WorkerCounters = field(default_factory=WorkerCounters)
    readings_carry: float = 0.0
    reload_pending: bool = False  # a SIGHUP came while it was loading: sent once it has loaded
    probed: float = 0.0  # when its /healthz was last asked
    unhealthy_since: float | None = None  # its /healthz failing since (None: it answered 200)


class Supervisor:
    """The parent of ``serve --workers N``: starts, watches, restarts and stops the workers and
    answers HTTP for them all."""

    def __init__(self, settings: Settings, plans: list[Settings], stale: list[tuple[str, ...]]) -> None:
        self.settings = settings
        # where a dead worker's readings wait: cluster mode's streams, not an MQTT session (a walk)
        self._kept = ("the readings stream keeps its partitions' readings" if settings.cluster
                      else "its session keeps its readings")
        self.context = mp.get_context("spawn")
        self.slots = [Slot(k, plan) for k, plan in enumerate(plans)]
        self.stale = stale
        self.stopping = False
        self.unsaved_at_stop = False  # a worker's final save is missing: serve exits EXIT_UNSAVED, as one daemon does
        self.go = self.context.Event()
        self.started = self._watched = time.monotonic()
        self._collected = 0.0  # (watch: the workers' metrics read every COLLECT_S)
        self._lock = threading.Lock()  # slots' counters: the HTTP thread merges while the main loop restarts
        self._collecting = threading.Lock()  # collect(): the HTTP thread's and the loop's, one at a time
        self._reload = threading.Event()  # a reload asked, for the main loop to pass on
        self._meta: dict[str, tuple[str, str]] = {}
        self.registry = CollectorRegistry()
        self.registry.register(self)  # collect() below: the merged workers
        self.restarts = Counter("sensorguard_worker_restarts_total", "Worker processes restarted after they died.",
                                registry=self.registry)
        self.running = Gauge("sensorguard_workers", "Worker processes serving now (serve --workers).",
                             registry=self.registry)
        self._http: tuple[Any, threading.Thread] | None = None
        self.copies: str | None = None  # where the workers keep the models they serve (start(); restart_model)
        self._owner = -1  # the copies folder's lock, held while this parent runs (restart_model.make_copies_dir)

    def start(self) -> None:
        """Listen first: a busy metrics port used to fail after the workers were spawned, and they
        waited for ever for a start that never came (the parent hung at exit, systemd saw it up)."""
        self._http = serve_http(self.registry, self.settings.metrics_host, self.settings.metrics_port, self.ready,
                                self.alive, why_not=self.not_ready)
        # (only the workers' own loopback ports were logged, "metrics on http://127.0.0.1:41055/metrics",
        # which an operator took for the endpoint to scrape: a walk)
        host, port = self._http[0].server_address[:2]
        log.info("metrics of the %d workers, summed, on http://%s:%d/metrics (scrape this one; each worker's "
                 "own port below is for this process only)", len(self.slots), host, port)
        self.copies, self._owner = make_copies_dir()  # (restart_model: removed at stop, the lock released)
        self.started = self._watched = time.monotonic()
        for slot in self.slots:
            self._spawn(slot)

    def run_forever(self, stop_event: threading.Event) -> None:
        try:
            self.start()
            while not stop_event.wait(0.2):
                self.watch(time.monotonic())
        finally:
            self.stop()

    def watch(self, now: float) -> None:
        """Note ports the workers announce, restart the dead ones (with backoff), pass a reload on."""
        if self._reload.is_set():
            self._reload.clear()
            self._reload_all()
        alive = 0
        for slot in self.slots:
            self._hear(slot)
            if not self.go.is_set() and (all(s.loaded for s in self.slots) or now - self.started >= GO_TIMEOUT_S):
                self.go.set()  # every worker loaded (or one is stuck): all connect together
            if slot.process is not None and slot.process.is_alive():
                alive += 1
                self._probe(slot, now)
                continue
            if slot.restart_at is None:  # just found dead
                code = slot.process.exitcode if slot.process is not None else None
                slot.backoff = (RESTART_MIN_S if now - slot.started >= STABLE_S or not slot.backoff
                                else min(slot.backoff * 2, RESTART_MAX_S))  # (the first restart after 1 s)
                slot.restart_at = now + slot.backoff
                log.warning("worker w%d (pid %s) exited with %s; restarting it in %.0f s (%s)", slot.index,
                            getattr(slot.process, "pid", None), code, slot.backoff, self._kept)
                with self._lock:  # the dead process's counts move to the carry, once
                    slot.counters.restarted()
                    slot.readings_carry += slot.readings.value
                    slot.readings.value = 0.0
                    slot.port = None
                    slot.generation += 1
                    slot.unhealthy_since = None
            elif now >= slot.restart_at and not self.stopping:
                self.restarts.inc()
                self._spawn(slot)
        self.running.set(alive)
        self._watched = now
        if now - self._collected >= COLLECT_S and not self.stopping:
            # what each worker counted, as of now: read only at scrapes, a worker killed before the next
            # one lost what it counted since the last (a walk: alerts_total, silent sensor faults), and
            # its gauges were held a minute from the last scrape, not from its last answer
            self._collected = now
            try:
                self._merged()
            except Exception:  # noqa: BLE001 - the loop restarts workers: it must go round
                log.exception("reading the workers' metrics failed")

    def _probe(self, slot: Slot, now: float) -> None:
        """Ask a running worker's ``/healthz`` every ``HEALTH_PROBE_S``; kill one failing it for
        ``HUNG_RESTART_S`` (it is then restarted as a dead one is). Only dead workers were restarted:
        one whose scoring hung stayed up, its partitions undrained, and the parent said healthy
        (found by review). A worker still loading has no port yet and is not asked."""
        if slot.port is None or now - slot.probed < HEALTH_PROBE_S or self.stopping:
            return
        slot.probed = now
        if fetch(slot.port, "/healthz") is not None:
            slot.unhealthy_since = None
            return
        slot.unhealthy_since = slot.unhealthy_since if slot.unhealthy_since is not None else now
        if now - slot.unhealthy_since >= HUNG_RESTART_S:
            log.error("worker w%d (pid %s) failed its health check for %.0f s (its scoring stuck, or it does not "
                      "answer): killing it; it is restarted (%s)", slot.index, slot.process.pid,
                      now - slot.unhealthy_since, self._kept)
            slot.process.kill()

    def alive(self) -> bool:
        """The parent's ``/healthz``: its own loop goes round, and no worker has failed its health
        check for ``HUNG_RESTART_S`` (one that did is being killed; if that does not end it, the
        parent is not healthy either)."""
        now = time.monotonic()
        return now - self._watched < WATCH_STUCK_S and all(
            slot.unhealthy_since is None or now - slot.unhealthy_since < HUNG_RESTART_S for slot in self.slots)

    def request_reload(self) -> None:
        """SIGHUP: every worker checks for a new model (at the main loop's next :meth:`watch`, which
        owns the slots: asked from another thread, a worker that said "loaded" meanwhile could miss it)."""
        self._reload.set()

    def _reload_all(self) -> None:
        for slot in self.slots:  # a worker still loading has no SIGHUP handler yet: it would die of it, so
            if not (slot.process is not None and slot.loaded and hang_up(slot.process)):  # it gets it once
                slot.reload_pending = True  # loaded (it may have read the old model: a bundle folder reloads
                # only on SIGHUP, and the request was lost; found by review)

    @staticmethod
    def _hear(slot: Slot) -> None:
        """What a starting worker said: that it loaded its model, then its metrics port."""
        while slot.port is None and slot.pipe is not None and slot.pipe.poll():
            try:
                said = slot.pipe.recv()
            except (EOFError, OSError):  # died before it listened
                slot.pipe = None
                break
            if said == "loaded":
                slot.loaded = True
                if slot.reload_pending:  # (its handler is installed now)
                    slot.reload_pending = False
                    hang_up(slot.process)
            else:
                slot.port = int(said)

    def stop(self) -> None:
        """SIGTERM to every worker, wait for each to finish (killed past ``STOP_TIMEOUT_S``). A worker
        that exits ``EXIT_UNSAVED``, or one with a ``state_dir`` that had to be killed (it never made
        its final save), sets :attr:`unsaved_at_stop`: a killed one's -9 was not looked at, and serve
        exited 0 where the single daemon fails (found by review)."""
        self.stopping = True
        running = [slot for slot in self.slots if slot.process is not None and slot.process.is_alive()]
        for slot in running:
            slot.process.terminate()
        killed = 0
        for slot in self.slots:  # (one that loaded and died within a round had not been heard: a review)
            slot.reload_pending = False  # (stopping: no reload is passed on)
            self._hear(slot)
        dead = [slot for slot in self.slots if slot.process is not None and slot not in running]
        for slot in dead:  # died, and its restart not due yet: its final save never ran (exit 0 said
            # nothing of it, a walk: kill -9 of a worker, then SIGTERM of serve within the restart's wait)
            # (not one never started, exit None, nor one that died loading: it had touched no state; a review)
            unsaved = bool(slot.settings.state_dir) and slot.process.exitcode not in (0, None) and slot.loaded
            if unsaved:
                log.error("worker w%d had died (exit %s) and was not restarted yet: stopped without its final "
                          "save", slot.index, slot.process.exitcode)
            self.unsaved_at_stop |= unsaved
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for slot in self.slots:
            if slot.process is not None:
                slot.process.join(max(0.0, deadline - time.monotonic()))
                if slot.process.is_alive():
                    log.error("worker w%d did not stop in %.0f s: killed%s", slot.index, STOP_TIMEOUT_S,
                              " without its final save" if slot.settings.state_dir else "")
                    slot.process.kill()
                    slot.process.join(5)
                    self.unsaved_at_stop |= bool(slot.settings.state_dir)
                    killed += 1
                self.unsaved_at_stop |= slot.process.exitcode == EXIT_UNSAVED
        if self._http is not None:
            shutdown_http(*self._http)
        if self.copies is not None:
            shutil.rmtree(self.copies, ignore_errors=True)
            os.close(self._owner)
            self.copies, self._owner = None, -1
        # (it said "stopped N workers" of N, also with one dead and restarting, or killed: a walk)
        said = [*([f"{killed} killed"] if killed else []), *([f"{len(dead)} dead before the stop"] if dead else [])]
        log.info("stopped %d of %d workers%s", len(running) - killed, len(self.slots),
                 f" ({', '.join(said)})" if said else "")

    def ready(self) -> bool:
        """Every worker answers ``/readyz`` with 200."""
        return not self.not_ready()

    def not_ready(self) -> list[str]:
        """Each worker that is not ready, with the reasons its own ``/readyz`` gives."""
        ports = [slot.port for slot in self.slots]  # (read once: a port set during the probes was left unasked)
        whys = at_once(why_not_ready, ports)
        return [f"worker w{slot.index}: {'not started, or restarting' if port is None else why}"
                for slot, port, why in zip(self.slots, ports, whys, strict=True) if port is None or why is not None]

    def collect(self):
        """The workers' metrics merged (prometheus_client calls this on each scrape)."""
        yield from self._merged()

    def _merged(self) -> list:
        """The workers' metrics read and merged (each scrape, and the loop every ``COLLECT_S``). One at
        a time, fetched and merged: a scrape and the loop's read merged out of order set a worker's
        counters back to an older page, and a death then carried less than Prometheus had seen, a
        counter reset to it (a review)."""
        with self._collecting:
            pages, generations = [], [slot.generation for slot in self.slots]
            for text in at_once(lambda port: fetch(port, "/metrics"), [slot.port for slot in self.slots]):
                pages.append(None if text is None else parse(text))
            with self._lock:
                # a worker found dead while we scraped: its page is already in the carry
                pages = [None if slot.generation != g else page
                         for slot, g, page in zip(self.slots, generations, pages, strict=True)]
                exact = {READINGS: sum(s.readings_carry + (s.readings.value if s.readings is not None else 0.0)
                                       for s in self.slots)}  # (None: not spawned yet)
                return merge(pages, [s.counters for s in self.slots], self._meta, exact)

    def fleet_version(self, restarted: Slot) -> str | None:
        """The model version the other running workers announce (``model_info``), None if none does."""
        for slot in self.slots:
            if slot is restarted or slot.port is None or (text := fetch(slot.port, "/metrics")) is None:
                continue
            for family in parse(text):
                for sample in family.samples if family.name == "sensorguard_model_info" else ():
                    if sample.value == 1 and sample.labels.get("version"):
                        return sample.labels["version"]
        return None

    def _spawn(self, slot: Slot) -> None:
        receive, send = self.context.Pipe(duplex=False)
        if slot.readings is None:
            slot.readings = self.context.Value("d", 0.0, lock=False)
        slot.loaded = False
        slot.pipe, slot.port, slot.restart_at, slot.started = receive, None, None, time.monotonic()
        fleet = self.fleet_version(slot) if slot.generation else None  # a restart: what the others serve
        slot.process = self.context.Process(
            target=run_worker, name=f"sensorguard-w{slot.index}",
            args=(slot.settings, self.stale[slot.index], send, slot.readings, self.go, os.getpid(), fleet,
                  self.copies, slot.index))
        slot.process.start()
        send.close()
        log.info("worker w%d (pid %d): client id %s, partitions %s", slot.index, slot.process.pid,
                 slot.settings.client_id, ", ".join(slot.settings.static_partitions()) or "the cluster's, by lease")


def hang_up(process) -> bool:
    """SIGHUP to a worker process; False when it is gone (it may end between a check and the
    signal: os.kill raised ProcessLookupError there and ended the parent's watch loop)."""
    if not process.is_alive() or process.pid is None:
        return False
    try:
        os.kill(process.pid, signal.SIGHUP)
    except ProcessLookupError:
        return False
    return True
