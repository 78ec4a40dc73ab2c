"""The ``sensorguard`` command: one sub-command per verb.

Heavy imports (Lightning, pandas, matplotlib) happen inside the verbs that need them, so
``sensorguard serve`` starts fast and never loads the training stack. Every error a user can cause
(bad file, bad argument, incompatible bundle) ends as one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sensorguard import __version__
from sensorguard.service.logs import first_line

EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A problem to report as one line, without a traceback."""


def _csv_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    return items


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {value}")
    return value


# --- simulate ------------------------------------------------------------------------------------


def cmd_simulate(args: argparse.Namespace) -> int:
    from sensorguard.training.simulate import simulate

    frame = simulate(rows=args.rows, channels=args.channels, seed=args.seed, anomalies=args.anomalies)
    _write_table(frame, args.out)
    labeled = int(frame["anomaly"].sum()) if "anomaly" in frame else 0
    print(f"wrote {len(frame)} rows x {args.channels} channels to {args.out} ({labeled} rows labeled anomalous)")
    return 0


# --- train / calibrate ---------------------------------------------------------------------------


def _load(args: argparse.Namespace, paths: Sequence[str], channels=None, label_column: str | None = None):
    from sensorguard.training.data import load_frame

    return load_frame(
        paths,
        time_column=getattr(args, "time_column", None),
        channels=channels if channels is not None else getattr(args, "channels", None),
        exclude=getattr(args, "exclude", None) or (),
        label_column=label_column,
        fill_limit=getattr(args, "fill_limit", 5),
    )


def cmd_train(args: argparse.Namespace) -> int:
    from sensorguard.service.bundle import save_bundle
    from sensorguard.service.registry import publish, validate_name
    from sensorguard.training.data import drop_labeled
    from sensorguard.training.train import TrainOptions, train_bundle

    if bool(args.out) == bool(args.registry):
        raise CliError("give either --out BUNDLE_DIR or --registry ROOT --name NAME")
    if args.registry and not args.name:
        raise CliError("--registry needs --name")
    if args.name:
        validate_name(args.name)
    data = _load(args, args.data, label_column=args.label_column)
    if args.label_column:
        data = drop_labeled(data, args.label_column)
    options = TrainOptions(
        window=args.window,
        latent=args.latent,
        hidden=args.hidden,
        hop=args.hop,
        max_epochs=args.max_epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        noise=args.noise,
        threshold_method=args.threshold_method,
        false_alerts_per_day=args.false_alerts_per_day,
        false_alarm_rate=args.false_alarm_rate,
        drift=args.drift,
        seed=args.seed,
        progress=not args.quiet,
        device=args.device,
    )
    bundle, summary = train_bundle(data, options)
    if args.out:
        where = save_bundle(bundle, args.out)
    else:
        version = publish(bundle, args.registry, args.name)
        where = Path(args.registry) / args.name / version
    print("\n".join(["", f"trained bundle -> {where}", *summary.lines()]))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from sensorguard.service.bundle import load_bundle, save_bundle
    from sensorguard.training.data import drop_labeled
    from sensorguard.training.train import calibrate_bundle

    bundle = load_bundle(args.bundle)
    data = _load(args, args.data, channels=list(bundle.channels), label_column=args.label_column)
    if args.label_column:
        data = drop_labeled(data, args.label_column)
    old = bundle.threshold_
    bundle = calibrate_bundle(bundle, data, args.threshold_method, args.false_alarm_rate,
                              false_alerts_per_day=args.false_alerts_per_day, drift=args.drift)
    save_bundle(bundle, args.bundle)
    rec = bundle.calibration
    per_day = rec.get("expected_false_alarms_per_day")
    promise = rec.get("alerts")
    if promise:
        lo, hi = promise["promised_ci95"]
        said = (f"{promise['promised_per_day']:g} false alerts per asset per day promised (95% CI {lo:.3g}-{hi:.3g}), "
                f"{promise['observed_alerts']} observed in {promise['calibration_days'] * 24:.3g} h")
    else:
        said = f"~{per_day if per_day is not None else 'n/a'} window exceedances/day expected"
    print(f"threshold {old:.4g} -> {bundle.threshold_:.4g} ({rec['method']}, {rec['windows']} windows, {said})")
    return 0


# --- score / evaluate ----------------------------------------------------------------------------


def _score_rows(args: argparse.Namespace, bundle, label_column: str | None = None):
    """Load ``args.data`` as the bundle's channels and score it (``training.offline.score_data``)."""
    from sensorguard.service.alerts import AlertRules
    from sensorguard.training.offline import score_data

    data = _load(args, [args.data], channels=list(bundle.channels), label_column=label_column)
    rules = AlertRules(raise_after=args.raise_after, clear_after=args.clear_after, clear_level=args.clear_level)
    return score_data(bundle, data, rules, name=str(args.data))


def cmd_score(args: argparse.Namespace) -> int:
    from sensorguard.service.bundle import load_bundle
    from sensorguard.training.offline import score_table

    bundle = load_bundle(args.bundle)
    out = score_table(bundle, _score_rows(args, bundle))
    _write_table(out, args.out)
    n_scored = int(out["score"].notna().sum())
    print(
        f"scored {n_scored} of {len(out)} rows -> {args.out} "
        f"({int(out['anomaly'].sum())} anomalous rows, {int(out['alert'].sum())} rows in alert)"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from sensorguard.service.bundle import load_bundle
    from sensorguard.training.offline import evaluate_scores, format_evaluation

    bundle = load_bundle(args.bundle)
    scored = _score_rows(args, bundle, label_column=args.label_column)
    result = evaluate_scores(bundle, scored, scored.data.labels[args.label_column])
    print(json.dumps(result, indent=2, default=_json_default) if args.json else format_evaluation(result))
    return 0


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


# --- report --------------------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    import pandas as pd

    from sensorguard.service.bundle import load_bundle
    from sensorguard.training.report import write_report

    bundle = load_bundle(args.bundle)
    frame = segments = None
    if args.data:
        label = args.label_column
        data = _load(args, [args.data], channels=list(bundle.channels), label_column=label)
        frame = pd.DataFrame(data.values, columns=list(bundle.channels))
        frame.insert(0, "timestamp", pd.to_datetime(data.times, unit="s", utc=True))
        if label:
            frame["anomaly"] = data.labels[label]
        segments = data.segments
    paths = write_report(bundle, Path(args.out), frame=frame, segments=segments)
    for path in paths:
        print(path)
    return 0


# --- retrain / models ----------------------------------------------------------------------------


def cmd_retrain(args: argparse.Namespace) -> int:
    from sensorguard.training.retrain import new_normal_data, retrain
    from sensorguard.training.train import TrainOptions

    if not args.data and not args.recorded:
        raise CliError("give new normal data with --data FILE... and/or --recorded DIR")
    data = new_normal_data(args.registry, args.name, args.data or [], args.recorded, args.since,
                           label_column=args.label_column, time_column=getattr(args, "time_column", None),
                           exclude=getattr(args, "exclude", None) or (), fill_limit=getattr(args, "fill_limit", 5))
    options = TrainOptions(
        max_epochs=args.max_epochs,
        threshold_method=args.threshold_method,
        false_alerts_per_day=args.false_alerts_per_day,
        false_alarm_rate=args.false_alarm_rate,
        drift=args.drift,
        seed=args.seed,
        progress=not args.quiet,
    )
    result = retrain(args.registry, args.name, data, options, warm_start=args.warm_start, force=args.force)
    print("\n" + result.table())
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from sensorguard.service.registry import describe, promote, rollback, validate_name, version_infos

    root, name = Path(args.registry), validate_name(args.name)
    if args.action == "list":
        print(f"{'':2}{'version':9}{'created':27}{'data from':27}{'data to':27}{'rows':>9}{'threshold':>12}  promoted")
        for v in version_infos(root, name):
            print(
                f"{'*' if v.current else '':2}{v.version:9}{v.created:27}{str(v.data_from)[:25]:27}"
                f"{str(v.data_to)[:25]:27}{v.rows:>9}{v.threshold:>12.4g}  {'-' if v.promoted is None else v.promoted}"
            )
        return 0
    if args.action == "show":
        print(json.dumps(describe(root, name, args.version), indent=2))
        return 0
    if args.action == "promote" and not args.version:
        raise CliError("promote needs a VERSION")
    old, new = promote(root, name, args.version) if args.action == "promote" else rollback(root, name)
    print(f"{name}: CURRENT {old} -> {new}")
    return 0


# --- serve -------------------------------------------------------------------------------------

def _serve_settings(args: argparse.Namespace, require_model: bool = True):
    from sensorguard.service.config import load_settings
    from sensorguard.service.flags import flag_names

    flags = {name: getattr(args, name, None) for name in flag_names()}
    return load_settings(flags, os.environ, args.config, require_model=require_model)


def cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    settings = _serve_settings(args)
    if args.print_config:
        print(json.dumps(settings.redacted(), indent=2, default=str))
        return 0
    from sensorguard.service.daemon import Daemon
    from sensorguard.service.hotswap import load_model
    from sensorguard.service.logs import configure_logging

    configure_logging(settings.log_json, settings.log_level)
    import torch

    # One scoring thread by default: the daemon shares its cores with paho's network thread and often
    # the broker, and torch's OpenMP workers spin at barriers; measured 12x the scoring rate under load.
    torch.set_num_threads(settings.scoring_threads)
    daemon = Daemon(settings, load_model(settings))
    stop = threading.Event()

    def on_signal(signum, frame):  # noqa: ARG001 - the signal module's signature
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    # SIGHUP (systemctl reload): look for a new model now; the watcher thread does the work
    signal.signal(signal.SIGHUP, lambda signum, frame: daemon.request_reload())
    daemon.run_forever(stop)
    return 0


# --- replay ------------------------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    import signal
    import threading

    from sensorguard.service.config import load_settings
    from sensorguard.service.replay import period_s, replay

    if args.rate is not None and args.speed is not None:
        raise CliError("give --rate or --speed, not both")
    flags = {"broker": args.broker, "mqtt_version": args.mqtt_version, "topic_prefix": args.topic_prefix,
             "username": args.username, "password_file": args.password_file, "tls_ca": args.tls_ca,
             "tls_cert": args.tls_cert, "tls_key": args.tls_key, "tls_insecure": args.tls_insecure,
             "client_id": args.client_id or f"sensorguard-replay-{os.getpid()}"}
    settings = load_settings(flags, os.environ, require_model=False)
    data = _load(args, [args.data])
    period = period_s(data.times, args.rate, args.speed)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"replaying {len(data.times)} rows x {len(data.channels)} channels of {args.data} as asset {args.asset} "
          f"to {settings.redacted()['broker']} at {1 / period:.3g} rows/s", flush=True)
    try:
        result = replay(settings, args.asset, data.times, data.values, list(data.channels), period,
                        original_ts=args.timestamps == "original", batch=args.batch, stop=stop)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(f"published {result.rows} readings in {result.seconds:.1f}s"
          + ("" if result.confirmed else " (not all confirmed by the broker)"))
    return 0 if result.confirmed else EXIT_ERROR


# --- demo --------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """The live loop on a simulated plant: train, broker, daemon, streamed faults, alerts."""
    import tempfile

    from sensorguard.demo import DemoOptions, run_demo
    from sensorguard.service.logs import configure_logging

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
    return run_demo(options)


# --- shared helpers ------------------------------------------------------------------------------


def _write_table(frame, path: str | Path) -> None:
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise CliError(f"{path}: directory {path.parent} does not exist")
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False, float_format="%.6g")
    except OSError as exc:
        raise CliError(f"{path}: cannot write ({exc.strerror or exc})") from None


def _add_data_options(p: argparse.ArgumentParser, channels: bool = True) -> None:
    p.add_argument("--time-column", help="timestamp column (default: detected by name or content)")
    if channels:
        p.add_argument("--channels", type=_csv_list, help="channels to use, in order (default: numeric columns)")
        p.add_argument("--exclude", type=_csv_list, default=[], help="columns never used as channels")
    p.add_argument("--fill-limit", type=_positive_int, default=5, help="forward-fill gaps up to N samples (default 5)")


def _add_threshold_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threshold-method",
        choices=("quantile", "pot", "mean_std"),
        default="pot",
        help="with --false-alarm-rate: how window errors become the threshold (default pot: tail fit)",
    )
    p.add_argument(
        "--false-alerts-per-day",
        type=_positive_float,
        default=1.0,
        help="false alerts per asset per day the threshold is set for (default 1)",
    )
    p.add_argument(
        "--false-alarm-rate",
        type=_rate,
        default=None,
        help="advanced: target a fraction of normal windows above the threshold (with --threshold-method) "
        "instead of --false-alerts-per-day",
    )
    p.add_argument(
        "--drift",
        action="store_true",
        help="calibrate a drift rule: each asset's alert line widens, at most 1.5x, as its normal score "
        "level drifts (guarded; off by default: it cost detection on Tennessee Eastman; docs/design.md)",
    )


def _add_alert_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--raise-after", type=_positive_int, default=3, help="windows >= 1.0 in a row to raise (default 3)")
    p.add_argument("--clear-after", type=_positive_int, default=5, help="windows below --clear-level to clear (5)")
    p.add_argument("--clear-level", type=float, default=1.0, help="score below which windows count to clear (1.0)")


def _add_serve_options(p: argparse.ArgumentParser) -> None:
    """Flags of `serve`: one per setting (service.config.Settings declares them), all default None
    so unset flags never override the file or environment."""
    from sensorguard.service.flags import add_setting_flags

    p.add_argument("--config", help="TOML settings file")
    add_setting_flags(p)


# The broker settings `replay` shares with `serve` (it publishes where serve reads).
REPLAY_SETTINGS = ("broker", "mqtt_version", "client_id", "username", "password_file", "tls_ca", "tls_cert",
                   "tls_key", "tls_insecure", "topic_prefix")


def build_parser() -> argparse.ArgumentParser:
    from sensorguard.service.flags import add_setting_flags

    parser = argparse.ArgumentParser(
        prog="sensorguard",
        description="Anomaly detection for industrial sensor streams: train on normal data, "
        "score by reconstruction error, serve alerts over MQTT with Prometheus metrics.",
    )
    parser.add_argument("--version", action="version", version=f"sensorguard {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = verbs.add_parser("simulate", help="write a synthetic plant signal (optionally with labeled faults)",
                         description="Write a realistic multichannel plant signal to CSV or Parquet.")
    p.add_argument("--out", required=True, help="output file (.csv or .parquet)")
    p.add_argument("--rows", type=_positive_int, default=20_000, help="rows to write (default 20000)")
    p.add_argument("--channels", type=_positive_int, default=8, help="sensor channels (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--anomalies", action="store_true", help="inject labeled faults (column 'anomaly')")
    p.set_defaults(func=cmd_simulate)

    p = verbs.add_parser("train", help="train and calibrate a model bundle on normal data",
                         description="Split by time, train the autoencoder with Lightning, calibrate the "
                         "threshold on held-out data and write a bundle (or a new registry version).")
    p.add_argument("data", nargs="+", help="CSV or Parquet files of normal readings")
    p.add_argument("--out", help="bundle directory to write")
    p.add_argument("--registry", help="registry root: store as a new version of --name")
    p.add_argument("--name", help="model name in the registry")
    _add_data_options(p)
    p.add_argument("--label-column", help="rows with a non-zero label are left out of training")
    p.add_argument("--window", type=_positive_int, help="samples per window (default 32, smaller for little data)")
    p.add_argument("--hop", type=_positive_int, help="score every N samples when serving (default window/8)")
    p.add_argument("--latent", type=_positive_int, help="bottleneck size (default from channels x window)")
    p.add_argument("--hidden", type=_positive_int, default=32, help="first conv layer width (default 32)")
    p.add_argument("--max-epochs", type=_positive_int, default=40, help="upper bound on epochs (default 40)")
    p.add_argument("--patience", type=_positive_int, default=4, help="early-stopping patience (default 4)")
    p.add_argument("--batch-size", type=_positive_int, default=256, help="training batch size (default 256)")
    p.add_argument("--noise", type=float, default=0.0, help="denoising: input noise std (default 0 = off)")
    _add_threshold_options(p)
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", help="torch device (default: cuda when present, else cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = verbs.add_parser("calibrate", help="re-pick a bundle's threshold from held-out normal data")
    p.add_argument("bundle", help="bundle directory (updated in place)")
    p.add_argument("data", nargs="+", help="CSV or Parquet files of normal readings the model never saw")
    _add_data_options(p, channels=False)
    p.add_argument("--label-column", help="rows with a non-zero label are left out")
    _add_threshold_options(p)
    p.set_defaults(func=cmd_calibrate)

    p = verbs.add_parser("score", help="score a file: one output row per input row")
    p.add_argument("bundle", help="bundle directory")
    p.add_argument("data", help="CSV or Parquet file of readings")
    p.add_argument("--out", required=True, help="scores file (.csv or .parquet)")
    _add_data_options(p, channels=False)
    _add_alert_options(p)
    p.set_defaults(func=cmd_score)

    p = verbs.add_parser("evaluate", help="detection quality on labeled data")
    p.add_argument("bundle", help="bundle directory")
    p.add_argument("data", help="CSV or Parquet file with a label column")
    p.add_argument("--label-column", required=True, help="0/1 anomaly label column")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_data_options(p, channels=False)
    _add_alert_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = verbs.add_parser("report", help="PNG plots: calibration, reconstructions, score timeline")
    p.add_argument("bundle", help="bundle directory")
    p.add_argument("data", nargs="?", help="optional CSV or Parquet file to plot scores for")
    p.add_argument("--out", required=True, help="output directory for PNG files")
    p.add_argument("--label-column", help="label column to shade beside alerts")
    _add_data_options(p, channels=False)
    p.set_defaults(func=cmd_report)

    p = verbs.add_parser("retrain", help="train a candidate on new normal data; promote it if as good",
                         description="Train a candidate on new normal data, calibrate it on the most recent "
                         "held-out block, compare it with the current model on data neither saw, and "
                         "promote it only when it is at least as good (--force promotes anyway).")
    p.add_argument("--registry", required=True, help="registry root")
    p.add_argument("--name", required=True, help="model name")
    p.add_argument("--data", nargs="+", help="CSV or Parquet files of new normal readings")
    p.add_argument("--recorded", help="directory of readings recorded by 'serve --record-dir'")
    p.add_argument("--since", help="only data from this time on (RFC 3339, epoch seconds, or an age: 7d, 12h)")
    p.add_argument("--label-column", help="rows with a non-zero label are left out")
    p.add_argument("--warm-start", action="store_true", help="start from the current model's weights")
    p.add_argument("--force", action="store_true", help="promote even if the candidate is worse")
    p.add_argument("--max-epochs", type=_positive_int, default=40, help="upper bound on epochs (default 40)")
    _add_threshold_options(p)
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_data_options(p, channels=False)
    p.set_defaults(func=cmd_retrain)

    p = verbs.add_parser("models", help="list, show, promote or roll back registry versions")
    p.add_argument("action", choices=("list", "show", "promote", "rollback"))
    p.add_argument("version", nargs="?", help="version for show (default current) and promote")
    p.add_argument("--registry", required=True, help="registry root")
    p.add_argument("--name", required=True, help="model name")
    p.set_defaults(func=cmd_models)

    p = verbs.add_parser("serve", help="the daemon: score MQTT readings live, publish alerts, export metrics",
                         description="Subscribe to <topic-prefix>/<asset>/readings, score every asset's windows "
                         "in batches, publish alerts and retained states, serve /metrics, /healthz, /readyz. "
                         "Settings: flags > SENSORGUARD_* environment > --config TOML > defaults.")
    _add_serve_options(p)
    p.add_argument("--print-config", action="store_true", help="print the resulting settings and exit")
    p.set_defaults(func=cmd_serve)

    p = verbs.add_parser("replay", help="publish a CSV or Parquet file as live MQTT readings",
                         description="Publish every row of a file as a reading of one asset on "
                         "<topic-prefix>/<asset>/readings (QoS 1), paced by --rate or --speed.")
    p.add_argument("data", help="CSV or Parquet file of readings")
    p.add_argument("--asset", required=True, help="asset id (topic levels: site-a/pump-7)")
    p.add_argument("--rate", type=_positive_float, help="rows per second")
    p.add_argument("--speed", type=_positive_float, help="times the data's own sample rate (default 1: real time)")
    p.add_argument("--timestamps", choices=("now", "original"), default="now",
                   help="now: the wall clock at sending (replayable again and again); original: the file's")
    p.add_argument("--batch", type=_positive_int, default=1, help="samples per message (default 1)")
    add_setting_flags(p, REPLAY_SETTINGS, {"client_id": "MQTT client id (default sensorguard-replay-<pid>)",
                                           "broker": "mqtt://HOST:PORT or mqtts://HOST:PORT"}, required=("broker",))
    _add_data_options(p)
    p.set_defaults(func=cmd_replay)

    p = verbs.add_parser("demo", help="the live loop on a simulated plant, nothing else to install",
                         description="Train a small model on simulated normal data, start an MQTT broker "
                         "(mosquitto if installed, else embedded amqtt), run the daemon, stream several assets "
                         "with injected faults and show alerts as they rise and clear. Ctrl-C stops it.")
    p.add_argument("--workdir", help="where to keep the demo's files (default: a new temp dir)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--duration", type=_positive_float, default=55.0, help="seconds of streaming (default 55)")
    p.add_argument("--assets", type=_positive_int, default=4, help="simulated assets; all but the first get a "
                   "fault (default 4)")
    p.add_argument("--rate", type=_positive_float, default=20.0, help="readings per second per asset (default 20)")
    p.add_argument("--train-rows", type=_positive_int, default=20_000, help="rows of normal history to train on")
    p.add_argument("--max-epochs", type=_positive_int, default=16, help="training epochs at most (default 16)")
    p.add_argument("--broker", choices=("auto", "mosquitto", "amqtt"), default="auto",
                   help="auto: mosquitto when on PATH, else the embedded amqtt (default auto)")
    p.add_argument("--metrics-port", type=int, default=10100, help="metrics port; a free one if taken (10100)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("sensorguard: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # Users get one line, never a traceback; SENSORGUARD_DEBUG=1 re-raises for bug reports.
        if os.environ.get("SENSORGUARD_DEBUG") == "1":
            raise
        prefix = "" if _is_user_error(exc) else "internal error: "
        print(f"sensorguard {args.verb}: error: {prefix}{_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


def _is_user_error(exc: BaseException) -> bool:
    """Errors a user causes (bad data, bundle, config, argument, file) versus bugs."""
    names = {"CliError", "BundleError", "DataError", "ConfigError", "ValueError"}
    return isinstance(exc, OSError) or type(exc).__name__ in names


def _one_line(exc: BaseException) -> str:
    if type(exc).__name__ == "ConfigError":  # every problem at once, one per line
        return str(exc).strip()
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename or ''}: {exc.strerror}".lstrip(": ")
    return first_line(exc, limit=10_000)


if __name__ == "__main__":
    sys.exit(main())
