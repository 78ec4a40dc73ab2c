"""The verbs that are MQTT clients of a running daemon: ``replay`` (readings in) and
``maintenance``, ``ack``, ``shelve`` (commands in, answers out). ``sensorguard/cli.py`` dispatches
to them; errors are :class:`~sensorguard.cli_errors.CliError` lines like every verb's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

from sensorguard.cli import _load
from sensorguard.cli_errors import EXIT_ERROR, CliError
from sensorguard.service.logs import span


def rate_words(rate: float) -> str:
    """A replay's pace as a person writes it: ``1,000 rows/s`` (``--rate 1000`` read "1e+03 rows/s": a
    walk), ``2.5 rows/s``, ``0.1 rows/s``."""
    return f"{rate:,.0f} rows/s" if rate >= 100 else f"{rate:.3g} rows/s"


def replay_file(args: argparse.Namespace) -> int:
    """``sensorguard replay``: publish a file's raw rows as live readings, paced."""
    import signal
    import threading

    import numpy as np

    from sensorguard.service.replay import replay, schedule
    from sensorguard.service.signals import on_signals
    from sensorguard.training.series_cleaning import cleaning_note

    if args.rate is not None and args.speed is not None:
        raise CliError("give --rate or --speed, not both")
    if args.broker is None and not os.environ.get("SENSORGUARD_BROKER"):
        raise CliError("give --broker (the broker serve reads), or set SENSORGUARD_BROKER")
    settings = client_settings(args, "replay", "topic_prefix")  # (it publishes where serve reads)
    channels, bundle = None, None
    if args.model:  # (a bad bundle is one line: main reports its BundleError)
        from sensorguard.service.bundle_loading import load_bundle

        if args.channels:
            raise CliError("give --channels or --model, not both")
        bundle = load_bundle(args.model)
        channels = list(bundle.channels)
    # for its channels and raw rows: the daemon does the cleaning; the model's machine column as score
    # takes it (forgotten, a file of three pumps went out as one asset and two thirds were refused)
    data = _load(args, [args.data], channels, trained=bundle)
    for note in data.notes:  # (the rows go out raw: what the cleaning did is what the daemon will do)
        said = ("sent raw; the daemon will clean them as: " if cleaning_note(note) else  # (replay scores nothing:
                "sent raw; the daemon will find these too: " if "sensor faults opened" in note else "")  # a review)
        print(f"note: {said}{note}", file=sys.stderr)
    times, values = data.source_times, data.source_values
    order = np.argsort(times, kind="stable")
    order = order[np.isfinite(times[order])]
    if data.source_assets is not None:  # each row on its own asset's topic, --asset a prefix
        assets = [f"{args.asset}/{a}" if args.asset else str(a) for a in data.source_assets[order]]
        who = f"{len(set(assets))} assets"
    elif args.asset:
        assets, who = args.asset, f"asset {args.asset}"
    else:
        raise CliError(f"{args.data} has no asset column: give --asset")
    due = schedule(times[order], args.rate, args.speed)
    if bundle is not None and bundle.regular and bundle.sample_period and (
            off := _off_rate(times[order], assets, bundle.sample_period)):
        print(f"note: {off}", file=sys.stderr)
    if args.timestamps != "original" and (ahead := _refused_ahead(times[order], due, assets, settings.max_future_s)):
        print(f"note: {ahead}", file=sys.stderr)
    stop, signalled = threading.Event(), []
    previous = signal.getsignal(signal.SIGTERM)  # put back after: `main` also runs in-process (tests)
    on_signals({signal.SIGTERM: lambda: (signalled.append(1), stop.set())})
    span = rate_words((len(order) - 1) / due[-1]) if len(due) and due[-1] > 0 else "once"  # (n rows: n-1 steps)
    print(f"replaying {len(order)} rows x {len(data.channels)} channels ({', '.join(data.channels)}) of {args.data} "
          f"as {who} to {settings.redacted()['broker']} at {span}", flush=True)
    began = time.time()  # (replay shifts the stamps to start at about this time)
    try:
        result = replay(settings, assets, times[order], values[order], list(data.channels), due,
                        original_ts=args.timestamps == "original", batch=args.batch, stop=stop)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:  # (None: not set from Python, so it cannot be put back)
            signal.signal(signal.SIGTERM, previous)
    print(f"published {result.rows} readings in {result.seconds:.1f}s"
          + ("" if result.confirmed else " (not all confirmed by the broker)"))
    if args.timestamps != "original" and result.rows and (note := _left_ahead(times[order][:result.rows], began, who)):
        print(f"note: {note}", file=sys.stderr)
    if result.refused:
        raise CliError(f"the broker refused {result.refused} message(s) ({result.refusal}): check its access "
                       f"rules for {settings.topic_prefix}/#")
    if signalled:  # stopped part-way: a job runner must not read it as done (Ctrl-C gives 130 too)
        print(f"stopped by SIGTERM after {result.rows} of {len(order)} rows", file=sys.stderr)
        return 143
    return 0 if result.confirmed else EXIT_ERROR


def _left_ahead(times, began: float, who: str) -> str | None:
    """Faster than real time the last stamps are ahead of the clock, and a second replay to the
    same asset before the clock gets there is refused reading by reading as ``out_of_order`` while
    it prints "published" (a docs walk): said when over a minute ahead, with the way out."""
    ahead = float(times[-1] - times[0]) + began - time.time()
    if ahead <= 60.0:
        return None
    return (f"the last readings sent are stamped {span(ahead)} ahead of this machine's clock: serve refuses a "
            f"replay to {who} again before then as out_of_order (its readings are not after those), until "
            "it has called the asset silent; replay under another --asset to go on at once")


def _off_rate(times, assets, period: float) -> str | None:
    """The stamps keep the file's spacing, and the daemon holds an asset to the model's sample
    period by them: a file sampled over 1.75x slower is refused reading by reading (``slow_rate``),
    and the replay reported success (found in a README walk); a faster one is thinned."""
    import pandas as pd

    from sensorguard.service.cleaning import FAST_RATE, SLOW_RATE, infer_policy

    frame = pd.DataFrame({"asset": [assets] * len(times) if isinstance(assets, str) else assets, "t": times})
    step = infer_policy([t.to_numpy() for _, t in frame.groupby("asset", sort=False)["t"]]).sample_period
    if step is None:  # (one row, or no spacing: nothing to judge)
        return None
    said = f"the file's rows are {step:g} s apart and the model's sample period is {period:g} s"
    if step > SLOW_RATE * period:
        return (f"{said}: the daemon refuses readings over {SLOW_RATE:g}x slower than that (slow_rate), so it "
                "would take none of these; train a model on data at this rate")
    if step < FAST_RATE * period:
        return f"{said}: the daemon keeps one reading a period (resampled), about 1 in {period / step:.0f}"
    return None


def _refused_ahead(times, due, assets, max_future_s: float) -> str | None:
    """Faster than real time the stamps run ahead of the clock; a row after a gap longer than the
    daemon's ``max_future_s`` that is also that far ahead of it is refused as ``future_ts``, and the
    asset's rows after it too (found by review): said before the replay starts, with the way out."""
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({"asset": assets if not isinstance(assets, str) else assets, "t": times,
                          "lead": (times - times[0]) - due})
    # an asset's first row: the daemon has none of it to step from (found by review)
    gap = frame.groupby("asset", sort=False)["t"].diff().fillna(np.inf).to_numpy()
    risky = np.flatnonzero((gap > max_future_s) & (frame["lead"].to_numpy() > max_future_s))
    if not len(risky):
        return None
    first = risky[0]
    when = (f"{frame['asset'].iloc[first]} starts" if np.isinf(gap[first])
            else f"{frame['asset'].iloc[first]} resumes after a gap of {gap[first] / 3600:.3g} h")
    return (f"at this pace the stamps run {frame['lead'].iloc[first] / 3600:.3g} h ahead of the clock when "
            f"{when}: a daemon with "
            f"max_future_s {max_future_s:g} refuses that row and the asset's rows after it (future_ts); "
            "replay in real time, or with --timestamps original")


def client_settings(args: argparse.Namespace, tool: str, prefix: str = "output_prefix"):
    """A short-lived client's settings (``replay``, a command, ``alerts``): its broker flags and
    ``prefix`` (``topic_prefix`` for replay) over the environment and defaults, as serve's, and a
    client id of its own."""
    from sensorguard.service.config import load_settings

    flags = {name: getattr(args, name) for name in ("broker", "mqtt_version", "username", "password_file", "tls_ca",
                                                     "tls_cert", "tls_key", "tls_insecure", prefix)}
    # (a pid alone collides between containers, where it is 1: the broker drops the other session; two
    # replays knocked each other off the broker)
    flags["client_id"] = args.client_id or f"sensorguard-{tool}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return load_settings(flags, os.environ, require_model=False)


def send(args: argparse.Namespace) -> int:
    """``sensorguard maintenance|ack|shelve``: publish one command to the daemon serving the asset
    and print its answer."""
    import time

    from sensorguard.service.command_client import send_command
    from sensorguard.service.command_messages import EXPIRY_GRACE_S

    settings = client_settings(args, "command")
    # a daemon that gets it after we stopped waiting refuses it (it was reported as not answered)
    body: dict = {"expires": time.time() + args.timeout}
    if by := args.by or os.environ.get("USER"):  # (an empty "by" was sent, and audited as null: a walk)
        body["by"] = by
    if args.verb == "maintenance" and args.action == "end" and args.until is not None:  # (ignored unsaid: a walk)
        raise CliError("--until goes with maintenance start (how long it lasts); end takes none")
    if args.verb == "maintenance":
        body.update(asset=args.asset, action=args.action, reason=args.reason or "",
                    **({"for_s": args.until, "until": time.time() + args.until} if args.until is not None else {}))
    elif args.verb == "shelve":
        body.update(asset=args.asset, for_s=args.for_s, reason=args.reason or "")
    else:
        body.update(alert_id=args.alert_id, false_alarm=args.false_alarm, note=args.note or "")
    reply = send_command(settings, args.verb, body, args.timeout)
    if reply is None:
        # (sent again every RESEND_S meanwhile, so a partition moving between cluster workers, which
        # carry out none that comes in those seconds, is waited out; the same send is carried out once)
        # (a user the broker lets send commands but not read their answers: carried out, said "no answer"; a walk)
        raise CliError(f"no answer within {args.timeout:g} s: no daemon serves that asset on this broker, the broker "
                       "refused the command (its ACL), or it lets this user send but not read "
                       f"{settings.output_prefix}/responses/#; a daemon that has it waiting, or gets it within "
                       f"{EXPIRY_GRACE_S:g} s more, still carries it out: check the asset's state before sending "
                       "it again")
    if reply.get("retry") and reply.get("unanswered"):  # (a cluster's hand-over, said as "no answer": a walk)
        raise CliError(f"not carried out yet in {args.timeout:g} s: {reply.get('instance')} answered \""
                       f"{reply.get('message')}\", and {reply['unanswered']} of the copies sent had no answer, "
                       "which a daemon may still carry out: check the asset's state (sensorguard alerts) before "
                       "sending it again; a cluster's hand-over can take 10 s (--timeout 20)")
    if reply.get("retry"):  # every copy refused for now (busy, the asset's partition moving): none carried out
        raise CliError(f"not carried out: {reply.get('instance')} answered every copy sent in {args.timeout:g} s "
                       f"with \"{reply.get('message')}\"; send it again (or with a longer --timeout)")
    print(f"{'accepted' if reply.get('accepted') else 'rejected'} by {reply.get('instance')}: {reply.get('message')}")
    if reply.get("accepted") and reply.get("saved") is False:  # (a daemon before the field sends none)
        # (not "send it again": a `maintenance end` or an unshelve sent again is rejected, and a disk that
        # recovers needs nothing, the daemon's next save, each 30 s, writes it; found by review)
        store = reply.get("store") or ("state_bucket" if "state bucket" in str(reply.get("message")) else "")
        if store == "state_bucket":  # cluster mode: NATS, not a disk (no "store": a daemon of before it)
            raise CliError(f"{reply.get('instance')} applied the command but could not write it to the cluster's "
                           "state bucket yet (NATS electing a leader? its log says why): it tries again every half "
                           "second; if that worker stops before it works, the change is lost: check the asset's "
                           "state (sensorguard alerts) and send it again")
        raise CliError(f"{reply.get('instance')} applied the command but could not save it in its state_dir "
                       "(check its disk and log): it is saved once the daemon logs \"writing controls.json ... works "
                       "again\"; if the daemon restarts before that, the change is lost and must be sent again")
    return 0 if reply.get("accepted") else EXIT_ERROR
