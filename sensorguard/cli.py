"""The ``sensorguard`` command: one sub-command per verb (arguments in :mod:`sensorguard.arguments`).

Heavy imports (Lightning, pandas, matplotlib) happen inside the verbs that need them, so
``sensorguard serve`` starts fast and never loads the training stack. Every error a user can cause
(bad file, bad argument, incompatible bundle) ends as one line on stderr and a non-zero exit
(:mod:`sensorguard.cli_errors`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sensorguard.argtypes import attach_negative_durations
from sensorguard.arguments import build_parser, promise_options
from sensorguard.cli_calibrate import cmd_calibrate
from sensorguard.cli_errors import CliError, failed, stdout_gone
from sensorguard.cli_live import cmd_alerts, cmd_cluster, cmd_command, cmd_demo, cmd_replay, cmd_serve
from sensorguard.cli_models import cmd_models, cmd_retrain, period_change, swap_problem
from sensorguard.writing import write_table

# --- simulate ------------------------------------------------------------------------------------


def cmd_simulate(args: argparse.Namespace) -> int:
    from sensorguard.argtypes import too_big
    from sensorguard.training.simulate import simulate

    if said := too_big(args.rows, args.channels, f"{args.rows:,} rows"):
        raise CliError(f"{said}: write fewer --rows (several files, each with its own --start)")
    frame = simulate(rows=args.rows, channels=args.channels, seed=args.seed, anomalies=args.anomalies,
                     start=args.start)
    piped = args.out == "-"  # CSV on standard output and the summary on standard error, as `score`: a file
    if piped:  # named "-" was written (a walk)
        frame.to_csv(sys.stdout, index=False, float_format="%.6g")
    else:
        write_table(frame, args.out)
    labeled = int(frame["anomaly"].sum()) if "anomaly" in frame else 0
    print(f"wrote {len(frame)} rows x {args.channels} channels to {'standard output' if piped else args.out} "
          f"({labeled} rows labeled anomalous)", file=sys.stderr if piped else sys.stdout)
    if args.anomalies and not labeled:  # (10 rows: no room for a fault, and it said only "0 rows")
        print(f"note: {len(frame)} rows leave no room for an injected fault: give more --rows", file=sys.stderr)
    return 0


# --- train / calibrate ---------------------------------------------------------------------------


def _load(args: argparse.Namespace, paths: Sequence[str], channels=None, label_column: str | None = None,
          bundle=None, normal: bool = False, trained=None):
    """Load and clean ``paths``; with a bundle by its cleaning policy (``--fill-limit`` overrides);
    ``normal``: the rows are taken as normal data (label-like columns' marked rows are noted);
    ``trained``: a bundle read for its machine column and sensor limits only (``replay`` sends raw rows,
    uncleaned)."""
    from dataclasses import replace

    from sensorguard.service.bundle_checks import silence_after
    from sensorguard.training.data import load_frame, trained_asset_column

    fill_limit = getattr(args, "fill_limit", None)
    policy = None if bundle is None else _policy(args, bundle)
    model = bundle if bundle is not None else trained
    # replay: the trained model's sensor limits as they are, so a channel the file lacks is read (and sent)
    # as missing, as score reads it and the daemon takes such readings (refused, "channels not found": a walk)
    sensors = None if trained is None else trained.sensors
    # the training file's other columns (bundle.json's ignored_columns) are no channel renamed: a
    # history export beside them that lacks a sensor was refused, "channels not found" (a walk)
    others = () if normal or model is None else tuple(c for c in model.ignored_columns if c not in (channels or ()))
    if bundle is not None and bundle.sensors is not None:  # a silence starts its watch afresh
        sensors = replace(bundle.sensors, fill_limit=policy.fill_limit,
                          silence_s=silence_after(getattr(args, "stale_after", None), policy))
    return load_frame(
        paths,
        time_column=getattr(args, "time_column", None),
        asset_column=getattr(args, "asset_column", None),
        channels=channels if channels is not None else getattr(args, "channels", None),
        exclude=(*(getattr(args, "exclude", None) or ()), *others),
        label_column=label_column,
        fill_limit=5 if fill_limit is None else fill_limit,
        policy=policy,
        sensors=sensors,
        normal=normal,
        trained_asset_column=trained_asset_column(bundle if bundle is not None else trained),
    )


def _policy(args: argparse.Namespace, bundle):
    """The bundle's cleaning policy, ``--fill-limit`` overriding its fill limit."""
    from dataclasses import replace

    fill_limit = getattr(args, "fill_limit", None)
    return bundle.cleaning if fill_limit is None else replace(bundle.cleaning, fill_limit=fill_limit)


def _threshold_options(args: argparse.Namespace, own: dict | None = None) -> dict:
    """The TrainOptions that train and retrain share: the promise (``own``: the model's, kept where
    the arguments say nothing), seed, progress."""
    return {**_promise(args, own or {}), "seed": args.seed, "progress": not args.quiet}


def _trained(data, options):
    """``train_bundle``, its "too little data" naming what the cleaning took: rows that all repeat
    one stamp failed with '1 usable rows' and no word of the 1499 duplicates dropped (a walk)."""
    from sensorguard.training.data import DataError
    from sensorguard.training.series_cleaning import cleaning_note
    from sensorguard.training.train import train_bundle

    try:
        return train_bundle(data, options)
    except DataError as exc:
        dropped = [n for n in data.notes if cleaning_note(n)]
        if not dropped or not str(exc).startswith("too little data"):
            raise
        raise DataError(f"{exc}; the cleaning: {'; '.join(dropped)}") from None


def _check_device(device: str | None) -> None:
    """``--device`` as torch names it, and present here (torch's own errors read as internal ones)."""
    if device is None:
        return
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise CliError(f"--device {device}: not a torch device (cpu, cuda, cuda:1, mps)") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise CliError(f"--device {device}: no CUDA GPU here (leave --device out to use the CPU)")


def _promise(args: argparse.Namespace, own: dict) -> dict:
    if args.false_alarm_rate is not None and args.false_alerts_per_day is not None:
        raise CliError("give --false-alerts-per-day or the advanced --false-alarm-rate, not both")
    if args.threshold_method is not None and args.false_alarm_rate is None and "false_alarm_rate" not in own:
        raise CliError("--threshold-method goes with --false-alarm-rate (the default line follows "
                       "--false-alerts-per-day)")
    options, kept = promise_options(args, own)
    if kept:
        print(f"kept the model's own {' '.join(kept)}")
    return options


def cmd_train(args: argparse.Namespace) -> int:
    """Arguments and data are checked before Lightning is imported (seconds): a bad input is
    one line at once, not after the import."""
    from sensorguard.training.data import drop_labeled

    if bool(args.out) == bool(args.registry):
        raise CliError("give either --out BUNDLE_DIR or --registry ROOT --name NAME")
    if args.registry and not args.name:
        raise CliError("--registry needs --name")
    if args.out and args.name:
        raise CliError("--name goes with --registry (a bundle written with --out takes its directory's name)")
    if args.strategy and args.devices < 2:
        raise CliError(f"--strategy {args.strategy} goes with --devices 2 or more")
    _check_device(args.device)
    if args.out:
        from sensorguard.service.bundle import check_target

        check_target(args.out)
    if args.name:
        from sensorguard.service.registry import validate_name

        validate_name(args.name)
    data = _load(args, args.data, label_column=args.label_column, normal=True)  # (--channels: marks said too)
    if args.label_column:
        data = drop_labeled(data, args.label_column)
    from sensorguard.service.bundle import save_bundle
    from sensorguard.service.registry import publish
    from sensorguard.training.train import TrainOptions

    options = TrainOptions(
        window=args.window,
        latent=args.latent,
        hidden=args.hidden,
        hop=args.hop,
        alert_hop=args.alert_hop,
        max_epochs=args.max_epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        noise=args.noise,
        level=args.level,
        **_threshold_options(args),
        device=args.device,
        devices=args.devices,
        strategy=args.strategy,
    )
    bundle, summary = _trained(data, options)
    if int(os.environ.get("LOCAL_RANK", "0")) or int(os.environ.get("NODE_RANK", "0")):
        return 0  # a process --strategy ddp launched: the first one writes the bundle and prints
    replaced = args.out and (Path(args.out) / "bundle.json").is_file()  # (another model, overwritten unsaid: a walk)
    if args.out:
        where = save_bundle(bundle, args.out)
    else:
        from dataclasses import replace

        from sensorguard.service.registry import readable_current

        before = readable_current(args.registry, args.name) if (Path(args.registry) / args.name).is_dir() else None
        version = publish(bundle, args.registry, args.name)
        where = Path(args.registry) / args.name / version
        if (problem := swap_problem(Path(args.registry), args.name, before, version)) is not None:
            summary = replace(summary, notes=(*summary.notes, f"now CURRENT: {problem} (a planned change: restart "
                                              "them; else `models rollback`)"))
            before = f"{before}; running daemons refuse it: see the last note"  # (said at the end alone, it went
            # unseen below ten lines of summary, and the next restart served the other channels: a walk)
        elif (problem := period_change(Path(args.registry), args.name, before, version)) is not None:
            summary = replace(summary, notes=(*summary.notes, f"now CURRENT: {problem}"))
    said = (" (it replaced the bundle there; --registry keeps versions)" if replaced
            else "" if args.out else f" (now CURRENT{f', was {before}' if before else ''})")  # (unsaid: a docs walk)
    print("\n".join(["", f"trained bundle -> {where}{said}", *summary.lines()]))
    return 0


# --- score / evaluate ----------------------------------------------------------------------------


def _score_rows(args: argparse.Namespace, bundle, label_column: str | None = None):
    """Load ``args.data`` as the bundle's channels and score it (``training.offline.score_data``)."""
    from sensorguard.training.offline import score_data

    data = _load(args, [args.data], channels=list(bundle.channels), label_column=label_column, bundle=bundle)
    rules = _alert_rules(args, bundle)
    return score_data(bundle, data, rules, name=str(args.data))


def _alert_rules(args: argparse.Namespace, bundle):
    """The alert rules of score, evaluate and report (``--raise-after``, ``--clear-after``, ``--clear-level``,
    ``--clear-at``, ``--stale-after``, and the bundle's one-window raise); a ``--stale-after`` shorter
    than the gap the bundle's cleaning fills is said (at 10-minute data every step ended the alert
    state: no alert, F1 0, and nothing said)."""
    from sensorguard.service.alerts import AlertRules
    from sensorguard.service.bundle_checks import silence_after, stale_warning

    policy = _policy(args, bundle)
    stale_after = silence_after(args.stale_after, policy)
    if (note := stale_warning(policy, stale_after, "--stale-after")) is not None:
        print(f"warning: {note}", file=sys.stderr)
    return AlertRules(raise_after=args.raise_after, clear_after=args.clear_after, clear_level=args.clear_level,
                      stale_after=stale_after, raise_at=bundle.raise_at, clear_at=args.clear_at)


def cmd_score(args: argparse.Namespace) -> int:
    from sensorguard.service.bundle_loading import load_bundle
    from sensorguard.training.machines import shown_name
    from sensorguard.training.offline import score_table

    if Path(args.out).resolve() == Path(args.data).resolve():  # the readings would be replaced by their scores
        raise CliError(f"--out {args.out} is the input file: give another file for the scores")
    bundle = load_bundle(args.bundle)
    scored = _score_rows(args, bundle)
    out = score_table(bundle, scored)
    piped = args.out == "-"  # the table on standard output, what is said about it on standard error: a file
    if piped:  # named "-" was written, and "--out /dev/stdout" had the summary in the CSV (a walk)
        out.to_csv(sys.stdout, index=False)
    else:
        write_table(out, args.out)
    said = sys.stderr if piped else sys.stdout
    n_scored = int(out["score"].notna().sum())
    print(f"scored {n_scored} of {len(out)} rows -> {'standard output' if piped else args.out} "
          f"({int(out['anomaly'].sum())} anomalous rows, {int(out['alert'].sum())} rows in alert)", file=said)
    for note in scored.data.notes:  # what the cleaning did: filled cells, refused readings, markers
        print(f"note: {note}", file=said)
    if "asset" in out.columns and n_scored:  # a machine with no row scored was not said (a walk)
        counts = out.groupby("asset", sort=False)["score"].count()
        for asset in counts.index[(counts.to_numpy() == 0) & (counts.index != "")]:  # ("": no machine, said)
            print(f"note: {shown_name(asset)}: none of its rows scored (fewer than a window of {bundle.window} "
                  "samples on the grid after cleaning, or every reading refused)", file=said)
    if not n_scored and len(out):  # a script took "scored 0 of 864 rows", exit 0, as a run that worked (a walk)
        print(f"error: no row was scored: fewer than a window of {bundle.window} samples on the model's grid "
              "after cleaning, or every reading refused (the notes say which)", file=sys.stderr)
        return 1
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from sensorguard.service.bundle_loading import load_bundle
    from sensorguard.training.verdict import evaluate_scores, format_evaluation

    bundle = load_bundle(args.bundle)
    scored = _score_rows(args, bundle, label_column=args.label_column)
    result = evaluate_scores(bundle, scored, scored.data.labels[args.label_column])
    for note in scored.data.notes:  # what the cleaning did, labelled rows it removed included (stderr: --json)
        print(f"note: {note}", file=sys.stderr)
    calibrated = ((bundle.calibration or {}).get("alerts") or {}).get("raise_after")
    if calibrated is not None and calibrated != args.raise_after:  # (17 raised "above" the promise: a walk)
        print(f"note: the promise was calibrated for alerts raised after {calibrated} windows in a row; with "
              f"--raise-after {args.raise_after} more or fewer are raised, so the false-alert check compares "
              "unlike rules", file=sys.stderr)
    print(json.dumps(result, indent=2, default=_json_default) if args.json else format_evaluation(result))
    if not result["rows"]:  # (as score: nothing judged is no evaluation, whatever the table says)
        print(f"error: no row was judged: fewer than a window of {bundle.window} samples on the model's grid "
              "after cleaning, or every reading refused (the notes say which)", file=sys.stderr)
        return 1
    return 0


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


# --- report --------------------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    from sensorguard.service.bundle_loading import load_bundle
    from sensorguard.training.report import report_data

    bundle = load_bundle(args.bundle)
    data = None
    if args.data:
        data = _load(args, [args.data], channels=list(bundle.channels), label_column=args.label_column,
                     bundle=bundle)
    unplotted: list[str] = []
    for path in report_data(bundle, Path(args.out), data, _alert_rules(args, bundle), args.label_column, unplotted):
        print(path)
    for note in [*(data.notes if data is not None else ()), *unplotted]:  # what the cleaning did, as score says
        print(f"note: {note}", file=sys.stderr)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "maintenance": cmd_command, "ack": cmd_command, "shelve": cmd_command, "alerts": cmd_alerts,
    "simulate": cmd_simulate, "train": cmd_train, "calibrate": cmd_calibrate, "score": cmd_score,
    "evaluate": cmd_evaluate, "report": cmd_report, "retrain": cmd_retrain, "models": cmd_models,
    "serve": cmd_serve, "replay": cmd_replay, "demo": cmd_demo, "cluster": cmd_cluster,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(attach_negative_durations(sys.argv[1:] if argv is None else argv))
    try:
        code = int(COMMANDS[args.verb](args) or 0)
        sys.stdout.flush()  # (a closed pipe shows here, not as a stray error at the interpreter's exit)
        return code
    except BrokenPipeError as exc:  # `... | head`: the reader has what it wanted; quiet, as Unix tools are
        if not stdout_gone():  # another pipe or socket broke (a FIFO output, a broker's): said as any error
            return failed(args, exc)
        with contextlib.suppress(OSError, ValueError):  # (ValueError: a test's capture has no descriptor)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush goes nowhere
        return 141  # 128 + SIGPIPE, what a shell reports for a tool the pipe stopped
    except KeyboardInterrupt:
        print("sensorguard: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        return failed(args, exc)


if __name__ == "__main__":
    sys.exit(main())
