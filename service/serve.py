"""``sensorguard serve``: check the model and the instance names, lay out saved state for the
worker count, then run one daemon or a supervisor of worker processes until SIGTERM or SIGINT.

Kept apart from :mod:`sensorguard.service.workers` (the supervisor and its worker processes):
this is the command's start-up, the same whatever the worker count.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import torch

from sensorguard.service.config import ConfigError, Settings
from sensorguard.service.daemon import Daemon
from sensorguard.service.folder_locks import held_folders
from sensorguard.service.hotswap import load_model
from sensorguard.service.instances import InstanceCheck, check_instances, read_statuses, served_meanwhile
from sensorguard.service.logs import configure_logging
from sensorguard.service.record_layout import adopt_orphans
from sensorguard.service.relayout import asset_owner, relayout_states
from sensorguard.service.signals import on_signals, pass_on
from sensorguard.service.state_writes import EXIT_UNSAVED
from sensorguard.service.worker_plans import worker_count, worker_settings
from sensorguard.service.workers import Supervisor

log = logging.getLogger(__name__)


def _folders_unmade(settings: Settings) -> list[str]:
    """``state_dir`` and ``record_dir`` made now, or why not: a path under /proc was taken, every
    save failed for the daemon's whole run (each ack answered "NOT SAVED") and it exited 74 (a walk)."""
    problems = []
    for name in ("state_dir", "record_dir"):
        if folder := getattr(settings, name):
            try:
                Path(folder).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                problems.append(f"{name}: {folder!r} cannot be made ({exc.strerror or exc})")
    return problems


def serve(settings: Settings, reload_asked: threading.Event | None = None, stop: threading.Event | None = None) -> int:
    """``sensorguard serve``: configure logging, load the model, run a daemon (or, with more than
    one worker, a :class:`~sensorguard.service.workers.Supervisor` of daemons) until SIGTERM or SIGINT.
    Returns the command's exit status: 0, or ``EXIT_UNSAVED`` when the final save to ``state_dir``
    failed, or a worker's did, or a worker with a ``state_dir`` had to be killed at stop, so that a
    lost save shows in ``systemctl status``, not only in the log.

    SIGHUP (``systemctl reload``) asks for a new model now; the watcher thread does the work. Must
    run on the main thread (signal handlers). reload_asked: set by the caller's SIGHUP handler (the
    command installs one before importing torch, so a reload during the slow start is not fatal):
    each time it is set a reload is asked of the daemon; without it, serve installs one. stop: set
    by the caller's SIGTERM and SIGINT handlers (installed as early); one set before the daemon
    starts ends serve with 0 there. Without it, serve installs them.
    """
    configure_logging(settings.log_json, settings.log_level)
    workers = worker_count(settings)
    # One scoring thread by default: the daemon shares its cores with paho's network thread and often
    # the broker, and torch's OpenMP workers spin at barriers; measured 12x the scoring rate under load.
    torch.set_num_threads(settings.scoring_threads)
    bundle = load_model(settings)  # a bad model is one line here, before any worker starts
    plans = [settings] if workers == 1 else worker_settings(settings, workers)
    statuses = read_statuses(settings)  # before any session: a refused instance takes no reading
    checks = [check_instances(plan, statuses=statuses) if statuses is not None else InstanceCheck([]) for plan in plans]
    problems = [f"instance {plan.instance_name!r}: {p}" for plan, check in zip(plans, checks, strict=True)
                for p in check.conflicts]
    if problems:
        raise ConfigError(problems)
    for plan in plans if statuses is not None else ():
        for line in served_meanwhile(plan.instance_name, plan.client_id, plan.static_partitions(), plan.topic_prefix,
                                     statuses):
            log.warning("instance %r: %s", plan.instance_name, line)
    if unmade := _folders_unmade(settings):
        raise ConfigError(unmade)
    folders = {"state_dir": settings.state_dir, "record_dir": settings.record_dir}
    with held_folders(folders, settings.instance_name) as refused:  # before anything in them is read or moved
        if refused:
            raise ConfigError(refused)
        return _serve(settings, bundle, plans, checks, workers, reload_asked, stop)


def _serve(settings: Settings, bundle: Any, plans: list[Settings], checks: list[InstanceCheck], workers: int,
           reload_asked: threading.Event | None, stop: threading.Event | None) -> int:
    """:func:`serve` once its folders are held: move saved state between worker folders, run."""
    if settings.record_dir:  # the worker count changed: the old layout's recordings are trimmed too
        folders = [Path(plan.record_dir) for plan in plans]
        adopt_orphans(settings.record_dir, folders, asset_owner(plans, folders))
    if settings.state_dir and not settings.cluster:  # (cluster mode keeps asset state in its bucket)
        try:
            relayout_states(settings.state_dir, plans)  # each asset's state where its worker reads it
        except OSError as exc:  # (an unlistable state_dir): losing saved state must never stop scoring
            log.warning("could not move saved asset state between worker folders: %s", exc.strerror or exc)
    if stop is None:
        stop = threading.Event()
        on_signals({signal.SIGTERM: stop.set, signal.SIGINT: stop.set})
    if stop.is_set():
        log.info("stopped before serving")
        return 0
    runner: Any
    if workers == 1:
        runner = Daemon(settings, bundle)
        runner.connection.unsubscribe = checks[0].stale_filters
    else:
        if settings.cluster:  # (its partitions are the cluster's, taken by leases: `partition` is unused)
            log.info("serving with %d workers, sharing the cluster's partitions by leases", workers)
        else:
            log.info("serving with %d workers on %d partitions", workers, len(settings.partition))
        runner = Supervisor(settings, plans, [check.stale_filters for check in checks])
    if reload_asked is None:
        reload_asked = threading.Event()
        on_signals({signal.SIGHUP: reload_asked.set})
    # SIGHUP keeps the one handler the command installed: a second one here left a gap in which a
    # SIGHUP went to the first, whose relay set reload_asked after the check for it (found by review)
    threading.Thread(target=pass_on, args=(reload_asked, runner.request_reload), name="reloads", daemon=True).start()
    runner.run_forever(stop)
    return EXIT_UNSAVED if runner.unsaved_at_stop else 0  # (a Supervisor's: any worker's final save missing)
