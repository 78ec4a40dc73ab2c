"""The ``sensorguard`` command line's arguments: one sub-parser per verb, nothing run here.

:func:`build_parser` only declares; :mod:`sensorguard.cli` dispatches on ``args.verb``. The serve
and replay flags are derived from the settings' one declaration (:mod:`sensorguard.service.flags`).
"""

from __future__ import annotations

import argparse

from sensorguard import __version__
from sensorguard.argtypes import (
    csv_list,
    duration,
    level,
    non_negative_float,
    non_negative_int,
    number,
    path_text,
    port,
    positive_float,
    positive_int,
    rate,
    seed,
    server_list,
    share,
    utc_time,
)
from sensorguard.arguments_clients import REPLAY_SETTINGS, add_client_verbs


def _add_data_options(p: argparse.ArgumentParser, channels: bool = True) -> None:
    p.add_argument("--time-column", help="timestamp column (default: detected by name or content)")
    p.add_argument("--asset-column", help="column naming each row's machine, each cleaned and scored as its own "
                   "series (default: a column named asset)")
    if channels:
        p.add_argument("--channels", type=csv_list, help="channels to use, in order (default: numeric columns)")
        p.add_argument("--exclude", type=csv_list, default=[], help="columns never used as channels")
    p.add_argument("--fill-limit", type=non_negative_int, default=None,
                   help="forward-fill missing values and gaps up to N samples (default: the bundle's; train: 5)")


def _add_threshold_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threshold-method",
        choices=("quantile", "pot", "mean_std"),
        default=None,
        help="with --false-alarm-rate: how window errors become the threshold (default pot: tail fit)",
    )
    p.add_argument(
        "--false-alerts-per-day",
        type=positive_float,
        default=None,
        help="false alerts per asset per day the threshold is set for (default 1; calibrate and retrain: "
        "the model's own)",
    )
    p.add_argument(
        "--false-alarm-rate",
        type=rate,
        default=None,
        help="advanced: target a fraction of normal windows above the threshold (with --threshold-method) "
        "instead of --false-alerts-per-day",
    )
    p.add_argument(
        "--drift",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="calibrate a drift rule: each asset's alert line widens, at most 1.5x, as its normal score "
        "level drifts (guarded; docs/design.md). train: on by default when one machine's data hold more than "
        "5,000 rows, off otherwise (there it cost detection); calibrate and retrain keep the model's own "
        "unless given --drift or --no-drift",
    )


def promise_options(args: argparse.Namespace, own: dict) -> tuple[dict, list[str]]:
    """The promise's ``TrainOptions`` (``false_alerts_per_day``, ``false_alarm_rate``,
    ``threshold_method``, ``drift``) and the flags taken from ``own`` rather than the arguments.

    own: the model's own settings (``Bundle.promise``) for ``calibrate`` and ``retrain``, which keep
    what they are not told to change: a weekly retrain once turned a model's drift rule off and
    reset its promise to the default. ``{}`` for ``train``: the defaults.
    """
    line_given = args.false_alerts_per_day is not None or args.false_alarm_rate is not None
    line = {} if line_given else own  # the model's target for its line, kept unless another is given
    options = {
        "false_alerts_per_day": args.false_alerts_per_day or line.get("false_alerts_per_day", 1.0),
        "false_alarm_rate": args.false_alarm_rate if line_given else line.get("false_alarm_rate"),
        "threshold_method": args.threshold_method or line.get("threshold_method", "pot"),
        "drift": args.drift if args.drift is not None else own.get("drift"),  # train: None, chosen by size
    }
    kept = []  # what came from the model and is not what train would use
    if line.get("false_alerts_per_day", 1.0) != 1.0:
        kept.append(f"--false-alerts-per-day {options['false_alerts_per_day']:g}")
    if "false_alarm_rate" in line:
        kept.append(f"--false-alarm-rate {options['false_alarm_rate']:g} "
                    f"--threshold-method {options['threshold_method']}")
    if args.drift is None and own.get("drift"):
        kept.append("--drift")
    return options, kept


def _add_alert_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--raise-after", type=positive_int, default=3, help="windows >= 1.0 in a row to raise (default 3)")
    p.add_argument("--clear-after", type=positive_int, default=5, help="hops below --clear-level to clear (5)")
    p.add_argument("--clear-level", type=level, default=1.0, help="score below which windows count to clear (1.0)")
    p.add_argument("--clear-at", type=share, default=0.5,
                   help="two windows in a row below this score (and --clear-level) clear at once; 0: never (0.5)")
    p.add_argument("--stale-after", type=positive_float, default=None, metavar="SECONDS",
                   help="a gap in a machine's readings longer than this ends its alert, as serve's stale_after_s "
                        "does (default as serve's: 300, or the gap the bundle fills when longer)")


def _add_serve_options(p: argparse.ArgumentParser) -> None:
    """Flags of `serve`: one per setting (service.config.Settings declares them), all default None
    so unset flags never override the file or environment."""
    from sensorguard.service.flags import add_setting_flags

    p.add_argument("--config", type=path_text, help="TOML settings file")
    add_setting_flags(p)


class _Parser(argparse.ArgumentParser):
    """A bad argument is one line (and where to look), not the usage block above it."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        """As argparse's, but words left after a verb's options fill its optional positional when
        still empty: argparse takes a verb's positionals in one run, so ``models show --registry R
        --name N v0001`` refused the version (a walk), as ``calibrate B --quiet DATA`` its data."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra and not any(word.startswith("-") for word in extra):
            slot = _empty_positional(self, parsed)
            if slot is not None and (slot.nargs == "*" or len(extra) == 1):
                if slot.type is not None:  # (path_text: an empty word is refused here too)
                    try:
                        extra = [slot.type(word) for word in extra]
                    except argparse.ArgumentTypeError as exc:
                        _verb_parser(self, parsed).error(f"argument {slot.dest}: {exc}")
                setattr(parsed, slot.dest, extra if slot.nargs == "*" else extra[0])
                extra = []
        if extra:  # said by the verb's parser, so the line points at its help, not the verbs' list (a walk)
            _verb_parser(self, parsed).error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed


def _verb_parser(parser: _Parser, parsed: argparse.Namespace) -> _Parser:
    """The chosen verb's parser (its errors point at its help), else the verbs' own."""
    verbs = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    verb = None if verbs is None else verbs.choices.get(getattr(parsed, "verb", None))
    return verb if isinstance(verb, _Parser) else parser


def _empty_positional(parser: argparse.ArgumentParser, parsed: argparse.Namespace) -> argparse.Action | None:
    """The chosen verb's optional positional (``?`` or ``*``, a path or no type) that parsing left
    empty, if any."""
    verbs = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    verb = None if verbs is None else verbs.choices.get(getattr(parsed, "verb", None))
    for action in verb._actions if verb is not None else ():
        if (not action.option_strings and action.nargs in ("?", "*") and action.type in (None, path_text)
                and getattr(parsed, action.dest, None) in (None, [])):
            return action
    return None


def build_parser() -> argparse.ArgumentParser:
    from sensorguard.service.flags import add_setting_flags

    parser = _Parser(
        prog="sensorguard",
        description="Anomaly detection for industrial sensor streams: train on normal data, "
        "score by reconstruction error, serve alerts over MQTT with Prometheus metrics.",
    )
    parser.add_argument("--version", action="version", version=f"sensorguard {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = verbs.add_parser("simulate", help="write a synthetic plant signal (optionally with labeled faults)",
                         description="Write a realistic multichannel plant signal to CSV or Parquet.")
    p.add_argument("--out", type=path_text, required=True,
                   help="output file (.csv, .csv.gz, .tsv or .parquet; - writes CSV to standard output)")
    p.add_argument("--rows", type=positive_int, default=20_000, help="rows to write (default 20000)")
    p.add_argument("--channels", type=positive_int, default=8, help="sensor channels (default 8)")
    p.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    p.add_argument("--anomalies", action="store_true", help="inject labeled faults (column 'anomaly')")
    p.add_argument("--start", type=utc_time, default="2026-01-01T00:00:00Z",
                   help="time of the first row (default 2026-01-01T00:00:00Z; later data: a later start)")

    p = verbs.add_parser("train", help="train and calibrate a model bundle on normal data",
                         description="Split by time, train the autoencoder with Lightning, calibrate the "
                         "threshold on held-out data and write a bundle (or a new registry version).")
    p.add_argument("data", type=path_text, nargs="+", help="CSV or Parquet files of normal readings")
    p.add_argument("--out", type=path_text, help="bundle directory to write")
    p.add_argument("--registry", type=path_text, help="registry root: store as a new version of --name")
    p.add_argument("--name", help="model name in the registry")
    _add_data_options(p)
    p.add_argument("--label-column", help="rows with a non-zero label are left out of training")
    p.add_argument("--window", type=positive_int, help="samples per window, even (default 32, less for little data)")
    p.add_argument("--hop", type=positive_int, help="score every N samples when serving (default window/8)")
    p.add_argument("--alert-hop", type=non_negative_int, help="while an alert is up, judge every N samples, a "
                   "divisor of the hop, so it clears soon after its fault (default hop/2 when even; 0: the hop)")
    p.add_argument("--latent", type=positive_int, help="bottleneck size (default from channels x window)")
    p.add_argument("--hidden", type=positive_int, default=32, help="first conv layer width (default 32)")
    p.add_argument("--max-epochs", type=positive_int, default=40, help="upper bound on epochs (default 40)")
    p.add_argument("--patience", type=positive_int, default=4, help="early-stopping patience (default 4)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="training batch size (default 256)")
    p.add_argument("--noise", type=non_negative_float, default=0.0,
                   help="denoising: input noise std (default 0 = off)")
    p.add_argument("--level", action=argparse.BooleanOptionalAction, default=True,
                   help="the level term: each window's score is also Hotelling's T^2 and Q (the residual outside "
                   "the principal directions) of its newest rows about a level each asset's normal operation "
                   "follows, calibrated with the line (default on; "
                   "--no-level: the reconstruction alone; docs/design.md)")
    _add_threshold_options(p)
    p.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    p.add_argument("--device", help="torch device (default: cuda when present, else cpu)")
    p.add_argument("--devices", type=positive_int, default=1,
                   help="processes (CPU, gloo) or GPUs that train together through Lightning's DDP; each takes "
                   "its share of every batch, so the steps are those of one process (default 1)")
    p.add_argument("--strategy", choices=("ddp_fork", "ddp_spawn", "ddp"),
                   help="with --devices > 1: ddp_fork (CPU default), ddp_spawn (GPU default), or ddp, which "
                   "relaunches this command once per extra process (only the first writes the bundle)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = verbs.add_parser("calibrate", help="re-pick a bundle's threshold from held-out normal data")
    p.add_argument("bundle", type=path_text, help="bundle directory (updated in place)")
    p.add_argument("data", type=path_text, nargs="*",
                   help="CSV or Parquet files of normal readings the model never saw")
    p.add_argument("--recorded", type=path_text, help="directory of readings recorded by 'serve --record-dir' (alerts "
                   "acknowledged as false alarms included)")
    p.add_argument("--since", help="only recorded readings from this time on (RFC 3339, epoch seconds, or an age)")
    _add_data_options(p, channels=False)
    p.add_argument("--label-column", help="rows with a non-zero label are left out")
    p.add_argument("--force", action="store_true", help="recalibrate even data whose median window scores at or "
                   "over the current line (other units, another operating point), or whose label-like column "
                   "(anomaly, label, ...) marks rows, without --label-column, or too few to hold the new line "
                   "near the old one (over twice it, for want of data)")
    _add_threshold_options(p)

    p = verbs.add_parser("score", help="score a file: one output row per input row")
    p.add_argument("bundle", type=path_text, help="bundle directory")
    p.add_argument("data", type=path_text, help="CSV or Parquet file of readings")
    p.add_argument("--out", type=path_text, required=True,
                   help="scores file (.csv, .csv.gz, .tsv or .parquet; - writes CSV to standard output)")
    _add_data_options(p, channels=False)
    _add_alert_options(p)

    p = verbs.add_parser("evaluate", help="detection quality on labeled data")
    p.add_argument("bundle", type=path_text, help="bundle directory")
    p.add_argument("data", type=path_text, help="CSV or Parquet file with a label column")
    p.add_argument("--label-column", required=True, help="0/1 anomaly label column")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_data_options(p, channels=False)
    _add_alert_options(p)

    p = verbs.add_parser("report", help="PNG plots: calibration, reconstructions, score timeline")
    p.add_argument("bundle", type=path_text, help="bundle directory")
    p.add_argument("data", type=path_text, nargs="?", help="optional CSV or Parquet file to plot scores for")
    p.add_argument("--out", type=path_text, required=True, help="output directory for PNG files")
    p.add_argument("--label-column", help="label column to shade beside alerts")
    _add_data_options(p, channels=False)
    _add_alert_options(p)

    p = verbs.add_parser("retrain", help="train a candidate on new normal data; promote it if as good",
                         description="Train a candidate on new normal data, calibrate it on the most recent "
                         "held-out block, compare it with the current model on data neither saw, and "
                         "promote it only when it is at least as good (--force promotes anyway).")
    p.add_argument("--registry", type=path_text, required=True, help="registry root")
    p.add_argument("--name", required=True, help="model name")
    p.add_argument("--data", type=path_text, nargs="+", help="CSV or Parquet files of new normal readings")
    p.add_argument("--recorded", type=path_text, help="directory of readings recorded by 'serve --record-dir' (alerts "
                   "acknowledged as false alarms learned as normal; those acknowledged as real: known faults "
                   "the candidate must still catch)")
    p.add_argument("--since", help="only data from this time on (RFC 3339, epoch seconds, or an age: 7d, 12h)")
    p.add_argument("--label-column", help="rows with a non-zero label are left out")
    p.add_argument("--warm-start", action="store_true", help="start from the current model's weights")
    p.add_argument("--force", action="store_true", help="promote even if the candidate is worse")
    p.add_argument("--shadow", action="store_true", help="a candidate that passes is not promoted but shadowed: "
                   "daemons score it beside CURRENT (models promote --gate live promotes it on live evidence)")
    p.add_argument("--max-epochs", type=positive_int, help="upper bound on epochs (default: the model's own, "
                   "else 40; the model's other training settings, its fill limit and its promise are kept too)")
    _add_threshold_options(p)
    p.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_data_options(p, channels=False)

    p = verbs.add_parser("models", help="list, show, promote, shadow, roll back or prune registry versions",
                         description="shadow VERSION: the daemon scores VERSION beside CURRENT without announcing "
                         "its alerts and writes both models' live alert counts to the registry; shadow --clear "
                         "stops it. promote --gate live: promote the shadow only if the retrain gate passed it "
                         "and live it raised no more alerts than CURRENT over at least --span. prune: delete "
                         "the versions that are not CURRENT, SHADOW, among the last --keep of the history or "
                         "the newest --keep.")
    p.add_argument("action", choices=("list", "show", "promote", "shadow", "rollback", "prune"))
    p.add_argument("version", nargs="?", help="version for show (default current), promote and shadow")
    p.add_argument("--registry", type=path_text, required=True, help="registry root")
    p.add_argument("--name", required=True, help="model name")
    p.add_argument("--gate", choices=("live",), help="promote: promote the shadow only if it passes the live gate")
    p.add_argument("--span", type=duration,  # (None: not given, so models can say where it does not apply)
                   help="promote --gate live: how long the shadow must have run beside CURRENT (default 24h)")
    p.add_argument("--clear", action="store_true", help="shadow: stop shadowing")
    p.add_argument("--force", action="store_true", help="promote: a version with other channels or another window "
                   "than CURRENT (running daemons refuse it until they restart)")
    p.add_argument("--keep", type=positive_int, help="prune: versions of the history and newest "
                   "versions kept (default 10)")

    p = verbs.add_parser("serve", help="the daemon: score MQTT readings live, publish alerts, export metrics",
                         description="Subscribe to <topic-prefix>/<asset>/readings, score every asset's windows "
                         "in batches, publish alerts and retained states, serve /metrics, /healthz, /readyz. "
                         "Settings: flags > SENSORGUARD_* environment > --config TOML > defaults.")
    _add_serve_options(p)
    p.add_argument("--print-config", action="store_true", help="print the resulting settings and exit")

    p = verbs.add_parser("replay", help="publish a CSV or Parquet file as live MQTT readings",
                         description="Publish every row of a file, raw and in time order, as a reading on "
                         "<topic-prefix>/<asset>/readings (QoS 1), paced by --rate or --speed; the daemon "
                         "cleans them as score does.")
    p.add_argument("data", type=path_text, help="CSV or Parquet file of readings")
    p.add_argument("--asset", help="asset id (topic levels: site-a/pump-7); with an asset column in the file, "
                   "a prefix to each row's asset")
    p.add_argument("--rate", type=positive_float, help="rows per second")
    p.add_argument("--speed", type=positive_float,
                   help="times the rows' own spacing, gaps included (default 1: real time)")
    p.add_argument("--timestamps", choices=("now", "original"), default="now",
                   help="now (default): the file's spacing, starting at the wall clock; original: the file's own")
    p.add_argument("--batch", type=number(int, "an integer from 1 to 1000", lambda v: 1 <= v <= 1000), default=1,
                   help="samples per message, at most 1000 (serve's max_samples_per_message; default 1)")
    p.add_argument("--model", type=path_text,
                   help="bundle directory: send exactly its channels (serve refuses a reading with "
                   "another channel; one the file lacks goes out as missing, as serve takes it with sensor limits)")
    # (--broker, required, was the one broker setting replay did not take from SENSORGUARD_*: a walk; still no
    # default broker, so a file is not replayed into a plant's broker by accident)
    add_setting_flags(p, REPLAY_SETTINGS, {"client_id": "MQTT client id (default sensorguard-replay-<pid>)",
                                           "broker": "mqtt://HOST:PORT or mqtts://HOST:PORT (or SENSORGUARD_BROKER; "
                                           "no default)",
                                           # (it said readings are read there, serve's wording: a walk)
                                           "topic_prefix": "readings go to <topic_prefix>/<asset>/readings, "
                                           "where serve reads them (default sensors)"})
    _add_data_options(p)

    add_client_verbs(verbs)

    p = verbs.add_parser("cluster", help="set up cluster mode's streams and buckets on NATS JetStream",
                         description="init: create, or bring up to date, the JetStream streams (readings as "
                         "they arrive over MQTT, readings by partition, the last readings of every asset) and "
                         "key-value buckets (partition leases, per-asset state) of cluster mode, and print "
                         "what was done. Safe to run again; the partition count is fixed at the first init.")
    p.add_argument("action", choices=("init",))
    p.add_argument("--cluster", required=True, type=server_list,
                   help="NATS servers, comma separated: nats://HOST:PORT[,nats://HOST:PORT...]")
    p.add_argument("--partitions", type=positive_int, default=16,
                   help="partitions the assets are spread over (default 16; at least the workers you will run)")
    p.add_argument("--replicas", type=int, choices=(1, 3, 5), default=1,
                   help="copies of each stream and bucket (default 1; 3 on a cluster of 3 or more servers)")
    p.add_argument("--keep", type=positive_int, default=1024,
                   help="readings kept per asset to rebuild windows (default 1024; at least the model's window), "
                   "for twice --max-age (at least a day more)")
    p.add_argument("--topic-prefix", default="sensors", help="MQTT prefix of the readings (default sensors)")
    p.add_argument("--max-age", type=duration, default=7 * 86400.0,
                   help="unscored readings are kept at most this long (default 7d)")

    p = verbs.add_parser("demo", help="the live loop on a simulated plant, nothing else to install",
                         description="Train a small model on simulated normal data, start an MQTT broker "
                         "(mosquitto if installed, else embedded amqtt), run the daemon, stream several assets "
                         "with injected faults and show alerts as they rise and clear. Ctrl-C stops it.")
    p.add_argument("--workdir", type=path_text, help="where to keep the demo's files (default: a new temp dir)")
    p.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    p.add_argument("--duration", type=positive_float, default=55.0, help="seconds of streaming (default 55)")
    p.add_argument("--assets", type=positive_int, default=4, help="simulated assets; all but the first get a "
                   "fault (default 4)")
    p.add_argument("--rate", type=positive_float, default=20.0, help="readings per second per asset (default 20)")
    p.add_argument("--train-rows", type=positive_int, default=20_000, help="rows of normal history to train on")
    p.add_argument("--max-epochs", type=positive_int, default=16, help="training epochs at most (default 16)")
    p.add_argument("--broker", choices=("auto", "mosquitto", "amqtt"), default="auto",
                   help="auto: mosquitto when on PATH, else the embedded amqtt (default auto)")
    p.add_argument("--metrics-port", type=port, default=10100, help="metrics port; a free one if taken (10100)")
    p.add_argument("--cluster", action="store_true",
                   help="cluster mode: a local 3-node NATS cluster and two workers, one of which hands its "
                   "partitions over partway (needs pip install 'sensorguard[cluster]')")
    return parser
