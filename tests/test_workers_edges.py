"""Edges of ``serve --workers``'s parent (service/workers.py) that no test pinned, found by a mutation
audit: the restart backoff, the health checks, when the workers connect, what a restarted worker is
told, the loop's survival of a failed metrics read, and the merged counters across a death.

No worker process is spawned: stand-ins play the processes, and small loopback HTTP servers play
their endpoints, so each test runs in well under a second."""

from __future__ import annotations

import logging
import multiprocessing
import time
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sensorguard.service import worker_process, workers
from sensorguard.service.config import Settings, load_settings
from sensorguard.service.metrics_http import serve_http, shutdown_http
from sensorguard.service.worker_plans import worker_settings
from sensorguard.service.workers import (
    GO_TIMEOUT_S,
    HEALTH_PROBE_S,
    HUNG_RESTART_S,
    RESTART_MAX_S,
    RESTART_MIN_S,
    STABLE_S,
    WATCH_STUCK_S,
    Supervisor,
)

PAGE = """# HELP sensorguard_alerts_total Alerts raised.
# TYPE sensorguard_alerts_total counter
sensorguard_alerts_total{asset="a"} 1
"""
ALERTS = ("sensorguard_alerts_total", (("asset", "a"),))


def settings(partitions: int) -> Settings:
    return load_settings({"model": None, "broker": "mqtt://127.0.0.1:1", "client_id": "sg",
                          "partition": [f"p{k}/#" for k in range(partitions)]}, {}, require_model=False)


def supervisor(partitions: int) -> Supervisor:
    s = settings(partitions)
    sup = Supervisor(s, worker_settings(s, partitions), [()] * partitions)
    for slot in sup.slots:
        slot.readings = sup.context.Value("d", 0.0, lock=False)
    return sup


def values(families: Any) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


class Process:
    """A worker process stand-in: alive until killed (or ``alive`` set False)."""

    pid, exitcode = 4242, None

    def __init__(self, alive: bool = True) -> None:
        self.alive, self.killed = alive, False

    def is_alive(self) -> bool:
        return self.alive

    def kill(self) -> None:
        self.alive, self.killed, self.exitcode = False, True, -9


def test_a_worker_dying_young_waits_twice_as_long_each_time_up_to_the_cap_and_a_stable_one_starts_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash-looping worker (a bad model, a full disk) is restarted after 1, 2, 4 ... s, never more
    than ``RESTART_MAX_S`` apart (uncapped, one that kept dying waited hours after the fault was fixed);
    one that ran ``STABLE_S`` before it died is back after ``RESTART_MIN_S`` again (else a worker
    dying once a day still waited its old crash loop's 30 s). Each respawn counts in
    ``worker_restarts_total``."""
    sup = supervisor(1)
    slot = sup.slots[0]
    clock = {"now": 0.0}

    def spawn(slot: Any) -> None:  # what _spawn does to the slot, without a process
        slot.process, slot.restart_at, slot.started = Process(alive=False), None, clock["now"]

    monkeypatch.setattr(sup, "_spawn", spawn)
    slot.process, slot.started = Process(alive=False), 0.0
    waits = []
    for _ in range(8):
        clock["now"] += 1.0  # it dies a second after its start
        sup.watch(clock["now"])  # found dead
        waits.append(slot.backoff)
        clock["now"] = slot.restart_at
        sup.watch(clock["now"])  # its restart is due: respawned
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, RESTART_MAX_S, RESTART_MAX_S, RESTART_MAX_S]
    assert values(sup.registry.collect())[("sensorguard_worker_restarts_total", ())] == 8
    clock["now"] += STABLE_S  # this one ran a minute before it died
    sup.watch(clock["now"])
    assert slot.backoff == RESTART_MIN_S and slot.restart_at == clock["now"] + RESTART_MIN_S


def test_a_worker_whose_health_check_recovered_is_not_killed_for_its_earlier_failure() -> None:
    """A worker that failed its ``/healthz`` once (a long GC pause, a swap) and answered again is
    healthy: the failure's start is forgotten. Kept, its next single failure a while later counted
    from the first, and a healthy worker was killed, its partitions unserved during its restart."""
    sup = supervisor(1)
    healthy = {"now": False}
    server = serve_http(CollectorRegistry(), "127.0.0.1", 0, lambda: True, alive=lambda: healthy["now"])
    try:
        slot = sup.slots[0]
        slot.process, slot.port, slot.loaded = Process(), server[0].server_address[1], True
        start = time.monotonic()
        sup.watch(start)
        assert slot.unhealthy_since == start
        healthy["now"] = True
        sup.watch(start + HEALTH_PROBE_S)
        assert slot.unhealthy_since is None
        healthy["now"] = False  # one failure, long after the first one
        later = start + HUNG_RESTART_S + HEALTH_PROBE_S
        sup.watch(later)
        assert not slot.process.killed and slot.unhealthy_since == later
    finally:
        shutdown_http(*server)


def test_the_parents_healthz_fails_when_its_own_loop_is_stuck() -> None:
    """The parent's ``/healthz`` is what restarts a wedged parent (systemd's watchdog, a liveness
    probe): its loop not round for ``WATCH_STUCK_S`` must say so, or dead workers are never
    restarted again and nothing notices."""
    sup = supervisor(1)
    sup._watched = time.monotonic()
    assert sup.alive()
    sup._watched = time.monotonic() - WATCH_STUCK_S - 1
    assert not sup.alive()


def test_the_workers_connect_together_once_all_loaded_or_when_one_is_stuck_past_the_go_timeout() -> None:
    """After a restart with a backlog, every partition starts draining at once: no worker connects
    before all have loaded their model. One stuck loading must not hold the others off for ever:
    past ``GO_TIMEOUT_S`` they go anyway."""
    sup = supervisor(2)
    for slot in sup.slots:
        slot.process = Process()
    sup.slots[0].loaded = True
    sup.watch(sup.started + 1)
    assert not sup.go.is_set()  # one loaded, the other still loading
    sup.slots[1].loaded = True
    sup.watch(sup.started + 2)
    assert sup.go.is_set()

    stuck = supervisor(2)
    for slot in stuck.slots:
        slot.process = Process()
    stuck.slots[0].loaded = True
    stuck.watch(stuck.started + GO_TIMEOUT_S - 1)
    assert not stuck.go.is_set()
    stuck.watch(stuck.started + GO_TIMEOUT_S)
    assert stuck.go.is_set()


def test_a_failed_read_of_the_workers_metrics_does_not_stop_the_watch_loop(monkeypatch: pytest.MonkeyPatch,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """The loop that restarts dead workers also reads their metrics every ``COLLECT_S``: a page that
    does not parse must be logged, not raised (raised, it ended ``run_forever`` and stopped every
    worker)."""
    sup = supervisor(1)
    sup.slots[0].process = Process()

    def broken() -> list:
        raise ValueError("a page that does not parse")

    monkeypatch.setattr(sup, "_merged", broken)
    with caplog.at_level(logging.ERROR, logger="sensorguard"):
        sup.watch(time.monotonic())
    assert "reading the workers' metrics failed" in caplog.text


class Spawned:
    """A process the fake spawn context makes: what it was started with is kept."""

    pid = 4343

    def __init__(self, target: Any, name: str, args: tuple) -> None:
        self.args = args

    def start(self) -> None:
        pass


def test_a_restarted_worker_is_told_the_fleets_model_version_and_a_first_start_is_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker restarted after a crash serves what its running siblings serve (a CURRENT they
    refused would put a second model on its partitions): the parent asks them and passes the
    version on. At the first start there is no fleet yet: CURRENT is loaded."""
    sup = supervisor(2)
    context = multiprocessing.get_context("spawn")
    monkeypatch.setattr(sup, "context", SimpleNamespace(Pipe=context.Pipe, Value=context.Value, Process=Spawned))
    monkeypatch.setattr(sup, "fleet_version", lambda restarted: "v0007")
    slot = sup.slots[1]
    sup._spawn(slot)
    fleet = 6  # run_worker(settings, stale, port_out, readings, go, parent, fleet, copies, index)
    assert slot.process.args[fleet] is None
    slot.generation = 1  # found dead once
    sup._spawn(slot)
    assert slot.process.args[fleet] == "v0007" and slot.process.args[8] == 1


def test_the_stop_line_counts_a_worker_killed_at_the_stop_timeout(monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A worker that did not stop in ``STOP_TIMEOUT_S`` was killed without its final save: the stop
    line must not count it as stopped (the operator reads it to know whether state was saved)."""

    class Hung(Process):
        def terminate(self) -> None:
            pass  # ignores SIGTERM

        def join(self, timeout: float | None = None) -> None:
            pass

    monkeypatch.setattr(workers, "STOP_TIMEOUT_S", 0.0)
    sup = supervisor(1)
    sup.slots[0].process = Hung()
    with caplog.at_level(logging.INFO, logger="sensorguard"):
        sup.stop()
    assert "stopped 0 of 1 workers (1 killed)" in caplog.text, caplog.text


def test_a_metrics_read_that_crossed_a_workers_death_does_not_count_its_page_twice(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The main loop may find a worker dead (moving what it counted into the carry) while a scrape is
    reading its page: that page, merged after the carry, counted the worker's counters twice
    (``alerts_total`` jumped, and fell back at the next scrape: a counter reset to Prometheus)."""
    sup = supervisor(1)
    slot = sup.slots[0]
    slot.process, slot.port, slot.started = Process(), 1, time.monotonic()
    monkeypatch.setattr(workers, "at_once", lambda call, ports: [PAGE])
    assert values(sup._merged())[ALERTS] == 1

    def read_while_it_dies(call: Any, ports: list) -> list:
        slot.process.alive, slot.process.exitcode = False, -9
        sup.stopping = True  # (found dead here, not respawned: watch does only the bookkeeping)
        sup.watch(time.monotonic())
        return [PAGE]  # the page read just before it died

    monkeypatch.setattr(workers, "at_once", read_while_it_dies)
    assert values(sup._merged())[ALERTS] == 1 and slot.generation == 1


def test_a_workers_readings_are_counted_in_its_registry_and_in_the_memory_the_parent_reads() -> None:
    """The parent's ``readings_total`` is the shared memory's, exact across a worker's death: a reading
    counted only in the worker's own registry is missing from the merged total (the accounting of
    every reading, and the no-loss check of a kill, read it)."""
    from prometheus_client import Counter

    registry = CollectorRegistry()
    own = Counter("sensorguard_readings", "Samples accepted.", registry=registry)
    shared = multiprocessing.get_context("spawn").Value("d", 0.0, lock=False)
    counter = worker_process._SharedCounter(own, shared)
    counter.inc()
    counter.inc(9)
    assert shared.value == 10 and registry.get_sample_value("sensorguard_readings_total") == 10
