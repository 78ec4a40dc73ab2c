"""The verbs of the model registry: ``retrain`` (a new version from new normal data) and ``models``
(list, show, promote, roll back, shadow, prune).

Split from :mod:`sensorguard.cli` so each module stays readable; :data:`sensorguard.cli.COMMANDS`
maps every verb. Errors are :class:`~sensorguard.cli_errors.CliError` lines like every verb's
(what retrain shares with train is imported inside it: :mod:`sensorguard.cli` imports this module).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from sensorguard.cli_errors import CliError

SPAN_S = 86400.0  # models promote --gate live: the shadow's time beside CURRENT, by default
KEEP = 10  # models prune: versions of the history and newest versions kept, by default

# --- retrain -----------------------------------------------------------------------------------


def cmd_retrain(args: argparse.Namespace) -> int:
    from sensorguard.cli import _threshold_options
    from sensorguard.service.logs import some
    from sensorguard.training.recorded_alerts import known_faults, unanswered_alerts
    from sensorguard.training.retrain import new_normal_data, own_options, retrain, unrecorded_options
    from sensorguard.training.retrain_gate import judgeable
    from sensorguard.training.train import TrainOptions

    if not args.data and not args.recorded:
        raise CliError("give new normal data with --data FILE... and/or --recorded DIR")
    if args.force and args.shadow:  # (it neither promoted nor shadowed, and said "forced": a walk)
        raise CliError("--force promotes a candidate the gate refuses; --shadow runs one that passes beside "
                       "CURRENT: give one of them")
    if (missing := _no_model(args.registry, args.name)) is not None:
        raise CliError(missing)
    current = _current_or_none(args.registry, args.name)
    fill_limit = args.fill_limit if args.fill_limit is not None else current.fill_limit if current else 5
    data = new_normal_data(args.registry, args.name, args.data or [], args.recorded, args.since,
                           label_column=args.label_column, time_column=getattr(args, "time_column", None),
                           exclude=getattr(args, "exclude", None) or (), fill_limit=fill_limit,
                           asset_column=getattr(args, "asset_column", None))
    for note in data.notes:  # what the cleaning did, as train and calibrate say (retrain was silent: a walk)
        print(f"note: {note}", file=sys.stderr)
    own = own_options(current)  # the model's own training settings, kept as its promise is
    defaults = TrainOptions()
    # what came from the model; a flag given here is the user's, not the model's (a README walk)
    kept = [f"--{k.replace('_', '-')} {v}" for k, v in own.items()
            if v != getattr(defaults, k) and not (k == "max_epochs" and args.max_epochs is not None)]
    if args.max_epochs is not None:
        own["max_epochs"] = args.max_epochs
    if current is not None and fill_limit != 5 and args.fill_limit is None:
        kept.append(f"--fill-limit {fill_limit}")
    if kept:
        print(f"kept the model's own {' '.join(kept)}")
    if unknown := [f"{k} {getattr(defaults, k)}" for k in unrecorded_options(current) if k not in own]:
        print(f"today's defaults for what the model's training did not record (an older sensorguard): "
              f"{', '.join(unknown)}")
    options = TrainOptions(**own, **_threshold_options(args, current.promise if current is not None else None))
    faults = known_faults(args.recorded, data.channels) if args.recorded else []
    whole = {name for name, _ in judgeable(faults, current.window)} if current is not None else None
    if whole is not None and (short := [name for name, _ in faults if name not in whole]):
        print(f"note: {len(short)} known fault(s) hold fewer readings than the model's window ({current.window}), so "
              f"neither model can be checked on them; left out of 'faults caught': {some(short, 3)} (an alert "
              "raised within the guard band after an earlier clear is recorded from its raise on only)")
    unanswered = unanswered_alerts(args.recorded, data.channels) if args.recorded else []
    result = retrain(args.registry, args.name, data, options, warm_start=args.warm_start, force=args.force,
                     faults=faults, shadow=args.shadow, unanswered=unanswered)
    print("\n" + result.table())
    version_dir = Path(args.registry) / args.name / result.version
    if (line := _promise_line(version_dir)) is not None:
        print(line)
    if args.warm_start:  # (the verdict says why for rows the model saw; the network's fit is said here)
        from sensorguard.service.registry import read_meta

        training = read_meta(version_dir).get("training")
        notes = training.get("notes") if isinstance(training, dict) else None
        for note in notes if isinstance(notes, list) else ():
            if str(note).startswith("warm start not used") and str(note) not in result.reason:
                print(f"note: {note}")
    return 0


def _no_model(registry: str, name: str) -> str | None:
    """Why ``retrain`` has nothing to retrain: a mistyped ``--registry`` or ``--name`` made a new
    model and said "promoted (no current model)", exit 0, while the served one was never retrained
    (found in a walk). A first model comes from ``train --registry``."""
    from sensorguard.service.registry import list_versions

    if list_versions(registry, name):
        return None
    root = Path(registry)
    names = sorted(p.name for p in root.iterdir() if (p / "CURRENT").is_file()) if root.is_dir() else []
    there = f"it holds {', '.join(names)}" if names else ("it holds no model" if root.is_dir() else "it does not exist")
    return (f"no model {name!r} in registry {registry} ({there}): retrain improves a model; train a first one with "
            f"sensorguard train DATA --registry {registry} --name {name}")


def _promise_line(version_dir: Path) -> str | None:
    """The candidate's line and what it promises, read back from its ``bundle.json`` (retrain printed
    only the comparison: a README walk could not tell what ``--false-alerts-per-day 2`` had set).
    Anything odd there leaves the promise out: the retrain itself has already succeeded."""
    from sensorguard.service.registry import read_meta

    meta = read_meta(version_dir)
    threshold = meta.get("threshold")
    if not isinstance(threshold, int | float):
        return None
    line = f"candidate threshold {threshold:.4g}"
    try:
        alerts = meta["calibration"]["alerts"]
        n, (lo, hi) = float(alerts["promised_per_day"]), map(float, alerts["promised_ci95"])
    except (KeyError, TypeError, ValueError):  # a window-rate model (--false-alarm-rate) has no promise block
        return line
    note = alerts.get("promise_note")
    return f"{line}: {promise_words(n, lo, hi, note if isinstance(note, str) else None)}"


def promise_words(per_day: float, lo: float, hi: float, note: str | None = None) -> str:
    """A promise as calibrate and retrain print it ("1 false alert ... promised (95% CI ...)"), with
    the calibration's note on it (a capped or loose line: ``training.promise``), as train says it."""
    return (f"{per_day:g} false alert{'' if per_day == 1 else 's'} per asset per day promised "
            f"(95% CI {lo:.3g}-{hi:.3g}{f'; {note}' if note else ''})")


def _current_or_none(registry: str, name: str):
    """The model's CURRENT bundle; None without one (a first model) or when it cannot be loaded
    (``retrain`` itself refuses that CURRENT with its reason)."""
    from sensorguard.service.bundle import BundleError
    from sensorguard.service.registry import current_version, load_current

    try:
        return load_current(registry, name) if current_version(registry, name) is not None else None
    except (BundleError, OSError, ValueError):
        return None


def cmd_models(args: argparse.Namespace) -> int:
    from sensorguard.service.registry import (
        SHADOW_FILE,
        current_version,
        promote,
        prune,
        rollback,
        set_shadow,
        shadow_version,
        validate_name,
    )
    from sensorguard.service.registry_listing import describe, version_infos
    from sensorguard.service.shadow import live_gate

    if misplaced := _misplaced(args):
        raise CliError(misplaced)
    root, name = Path(args.registry), validate_name(args.name)
    if args.action == "list":
        infos = version_infos(root, name)  # before the header: a missing registry is one line, nothing else
        shadow = _pointer_or_none(shadow_version, root, name)
        # "retrain gate": the candidate's verdict when retrain made it ("promoted" read as "is current")
        print(f"{'':2}{'version':9}{'created':27}{'data from':27}{'data to':27}{'rows':>9}{'threshold':>12}"
              f"{'channels':>10}{'window':>8}{'every':>8}  retrain gate")
        served = next((v for v in infos if v.current), None)
        for v in infos:
            verdict = gate_verdict(v.passed, v.promoted, v.current)
            if v.created == "unreadable":  # (it read "None None ? nan": a walk)
                mark = "*" if v.current else "s" if v.version == shadow else ""
                print(f"{mark:2}{v.version:9}bundle.json cannot be read (models show {v.version} says why)"
                      + ("; daemons cannot load it" if mark else ""))
                continue
            every = "-" if v.sample_period is None else f"{v.sample_period:g} s"
            print(
                f"{'*' if v.current else 's' if v.version == shadow else '':2}{v.version:9}{v.created:27}"
                f"{_stamp(v.data_from):27}{_stamp(v.data_to):27}{v.rows:>9}{v.threshold:>12.4g}"
                f"{len(v.channels):>10}{v.window or '?':>8}{every:>8}  {verdict}"
                + ("" if v.weights else f"\n{'':11}model.pt is missing or cut short: no daemon can load "
                   f"{v.version} (copy it again from where it was trained)")
                + _unfit(v, served)
            )
        current = _pointer_or_none(current_version, root, name)
        if current is not None and current not in {v.version for v in infos}:
            print(f"warning: CURRENT names {current}, which the registry does not hold: a daemon (re)starting finds "
                  "no model (running ones keep theirs); models promote VERSION sets it right")
        print("(* CURRENT" + (", s SHADOW)" if shadow else ")"))
        return 0
    if args.action == "show":
        print(json.dumps(describe(root, name, args.version), indent=2))
        return 0
    if args.action == "prune":
        removed = prune(root, name, KEEP if args.keep is None else args.keep)
        print(f"{name}: deleted {len(removed)} versions" + (f" ({', '.join(removed)})" if removed else ""))
        return 0
    if args.action == "shadow":
        if args.clear == bool(args.version):  # (both given said "needs a VERSION, or --clear": a walk)
            raise CliError("shadow takes a VERSION to shadow, or --clear to stop shadowing, not both"
                           if args.clear else "shadow needs a VERSION, or --clear to stop shadowing")
        if args.clear and not (root / name / SHADOW_FILE).exists():  # (said "cleared": a walk; a garbled one goes)
            print(f"{name}: no SHADOW to clear")
            return 0
        if not args.clear and (problem := _unshadowable(root, name, args.version)) is not None:
            raise CliError(problem)
        set_shadow(root, name, None if args.clear else args.version)
        print(f"{name}: SHADOW " + ("cleared" if args.clear else f"{args.version}, scored beside CURRENT "
                                    f"{current_version(root, name)} by daemons following the registry"))
        if not args.clear and (refused := _gate_refusal(root, name, args.version)) is not None:
            print(f"{refused}: promote --gate live will not promote it")  # (shadowed unsaid: a docs walk)
        return 0
    if args.action == "promote" and args.gate == "live":
        if args.version:
            raise CliError("promote --gate live promotes the SHADOW version: give no VERSION")
        promoted, said = live_gate(root, name, SPAN_S if args.span is None else args.span)
        print(said)
        return 0 if promoted else 1
    if args.action == "promote" and not args.version:
        raise CliError("promote needs a VERSION (or --gate live to promote the shadow)")
    if args.action == "promote" and not args.force and (problem := _unservable(root, name, args.version)):
        raise CliError(f"refusing to promote {args.version}: {problem}; --force promotes it (a planned change: "
                       "restart the daemons after it)")
    shadowed = _pointer_or_none(shadow_version, root, name)
    old, new = promote(root, name, args.version) if args.action == "promote" else rollback(root, name)
    problem = swap_problem(root, name, old, new) if args.action == "rollback" else None
    if (problem := problem or period_change(root, name, old, new)) is not None:
        print(f"note: {problem}")
    if old == new and args.action == "promote":  # (it said "CURRENT v0002 -> v0002": a walk)
        print(f"{name}: {new} is CURRENT already; " + ("its shadow ended" if shadowed == new else "nothing changed"))
        return 0
    print(f"{name}: CURRENT {old or '(none)'} -> {new}")
    if (refused := _gate_refusal(root, name, new)) is not None:
        print(refused)
    return 0


def _unfit(version, served) -> str:
    """``models list``'s line under a version a daemon serving CURRENT refuses to swap to (other channels or
    window), naming them: the list showed neither, so a rollback's fit could not be told (a walk)."""
    if served is None or version is served or not version.channels or not served.channels:
        return ""
    from sensorguard.service.logs import some

    added = [c for c in version.channels if c not in served.channels]
    left = [c for c in served.channels if c not in version.channels]
    other = [*([f"with {some(added)}"] if added else []), *([f"without {some(left)}"] if left else []),
             *(["its channels in another order"] if version.channels != served.channels and not added + left
               else []),
             *([f"window {version.window}, not {served.window}"] if version.window != served.window else [])]
    if not other:
        return ""
    return f"\n{'':11}{'; '.join(other)} beside CURRENT: daemons serving CURRENT refuse it until they restart"


def _gate_refusal(root: Path, name: str, version: str) -> str | None:
    """A note when ``version`` is a candidate its retrain's gate refused: promoted by hand, it was
    made current without a word that the gate had judged it worse (found in a walk)."""
    from sensorguard.service.bundle import BundleError
    from sensorguard.service.bundle_loading import load_bundle

    try:
        metrics = load_bundle(root / name / version).metrics
    except BundleError:
        return None
    if metrics.get("passed") is not False:
        return None
    return f"note: {version} did not pass its retrain's gate ({metrics.get('reason') or 'no reason recorded'})"


def _swap_blocker(root: Path, name: str, running: str | None, version: str) -> str | None:
    """Why daemons serving ``running`` refuse ``version`` while they run (other channels or window),
    without the advice; None when they take it, or either cannot be read (said elsewhere)."""
    from sensorguard.service.bundle import BundleError
    from sensorguard.service.bundle_loading import load_bundle
    from sensorguard.service.hotswap import incompatible

    if running is None:
        return None
    try:
        problem = incompatible(load_bundle(root / name / running), load_bundle(root / name / version))
    except BundleError:
        return None
    return None if problem is None else problem.split(" (")[0]


def swap_problem(root: Path, name: str, running: str | None, version: str) -> str | None:
    """Why daemons serving ``running`` cannot swap to ``version`` while they run, and what follows,
    or None (either unreadable: the registry says so on its own)."""
    if (why := _swap_blocker(root, name, running, version)) is None:
        return None
    # (CURRENT is what the registry named, not what every daemon serves: one that refused it still serves
    # an older version, and "a daemon serving v0011" named a model no daemon served: a walk)
    why = why.replace("the running model's", f"{running}'s")
    return (f"{version}'s {why} ({running}: CURRENT until now): a daemon that took {running} refuses it until "
            "it restarts, and one (re)started serves it and refuses readings that do not fit it")


def period_change(root: Path, name: str, running: str | None, version: str) -> str | None:
    """What follows when ``version``, now CURRENT, was sampled at another period than ``running``: the
    daemons take it, and a feed at the old rate is resampled or refused. ``train --registry`` made
    a 2 s model of a 1 s feed CURRENT unsaid, and half the live readings were dropped as
    ``resampled`` from its swap on (a walk); ``retrain`` refuses such data without ``--force``."""
    import math

    from sensorguard.service.bundle import BundleError
    from sensorguard.service.bundle_loading import load_bundle
    from sensorguard.service.cleaning import FAST_RATE, SLOW_RATE

    if running is None or running == version:
        return None
    try:
        old, new = load_bundle(root / name / running), load_bundle(root / name / version)
    except BundleError:
        return None
    was, now = old.sample_period, new.sample_period
    if not (old.regular and new.regular and was and now and math.isfinite(was) and math.isfinite(now)):
        return None
    if was < FAST_RATE * now:  # the daemon's own bounds (Cleaner.admit): closer, jitter drops nothing
        what = f"of readings {was:g} s apart, one every {now:g} s is taken, the rest dropped as resampled"
    elif was > SLOW_RATE * now:
        what = f"readings {was:g} s apart, over {SLOW_RATE * now:g} s, are refused as slow_rate"
    else:
        return None
    return (f"{version} was trained on readings every {now:g} s, {running} on every {was:g} s: daemons swap to "
            f"it, and a feed at {running}'s rate no longer fits it ({what}); train on data at the feed's rate, or "
            "`models rollback`")


def _unservable(root: Path, name: str, version: str) -> str | None:
    """Why ``models promote VERSION`` would leave the daemons serving the old model (CURRENT of
    other channels or window), or None: it printed "CURRENT v0008 -> v0006", every running daemon
    refused the swap, and after a restart every reading was refused as unknown_channel (a walk)."""
    from sensorguard.service.registry import readable_current

    return swap_problem(root, name, readable_current(root, name), version)


def _unshadowable(root: Path, name: str, version: str) -> str | None:
    """Why daemons would refuse to score ``version`` beside CURRENT (other channels or window), or
    None: ``models shadow`` said it would be scored, and every daemon refused it (found in a walk)."""
    from sensorguard.service.registry import current_version

    current = _pointer_or_none(current_version, root, name)
    if (why := _swap_blocker(root, name, current, version)) is None:
        return None  # (an unreadable version: set_shadow refuses it with its reason)
    return f"refusing to shadow {version}: {why} (CURRENT {current}): daemons would refuse it"


def _misplaced(args: argparse.Namespace) -> str | None:
    """A VERSION or an option the action does not take, as one line: ``rollback v0001`` went back
    to the version before CURRENT, not to v0001, and said nothing (found in a README walk)."""
    if args.version and args.action == "rollback":
        return ("rollback returns to the version before CURRENT and takes no VERSION; to make "
                f"{args.version} current: models promote {args.version}")
    if args.version and args.action not in ("show", "promote", "shadow"):
        return f"{args.action} takes no VERSION (got {args.version})"
    given = {"--gate": args.gate is not None and args.action != "promote",
             "--span": args.span is not None and args.gate is None,
             "--clear": args.clear and args.action != "shadow",
             "--keep": args.keep is not None and args.action != "prune",
             "--force": args.force and (args.action != "promote" or args.gate is not None)}
    wrong = [flag for flag, bad in given.items() if bad]
    if not wrong:
        return None
    return f"{' and '.join(wrong)} {'does' if len(wrong) == 1 else 'do'} not apply to models {args.action}"


def gate_verdict(passed: object, promoted: object, current: bool = False) -> str:
    """The retrain gate's verdict on a version and what retrain did with it, for ``models list``.

    The column once read ``promoted`` alone, so a candidate forced past a refusal showed "passed"
    and one that passed but went to shadow showed "refused" (found by a README walk). Versions
    stored before ``passed`` was recorded fall back to ``promoted``; a value that is not a boolean
    (a hand-edited ``bundle.json``) shows as "?". A version promoted by hand later is CURRENT."""
    if not all(v is None or isinstance(v, bool) for v in (passed, promoted)):
        return "?"
    if passed is None:
        return {True: "passed", False: "refused", None: "-"}[promoted]  # type: ignore[index]
    if passed:
        return "passed" if promoted or promoted is None or current else "passed, not promoted"
    return "refused, forced" if promoted else "refused"


def _pointer_or_none(read: Callable[[Path, str], str | None], root: Path, name: str) -> str | None:
    """A pointer's version (CURRENT, SHADOW), None when absent or garbled (the list says the rest)."""
    from sensorguard.service.bundle import BundleError

    try:
        return read(root, name)
    except BundleError:
        return None


def _stamp(value: object) -> str:
    """A data span's end as listed: to the second with its offset (a stamp with microseconds was
    cut mid-fraction, without its offset; found by a walk through the README)."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(value)).isoformat(timespec="seconds")
    except ValueError:
        return str(value)
