"""Per-asset state that outlives the process: each asset's alert state and drift baseline.

With ``state_dir`` set, the daemon writes ``<state_dir>/assets.json`` every ``SAVE_INTERVAL_S``
and when it stops, and reads it when it starts, so a restart neither re-raises an alert that was
already up (same ``alert_id``) nor resets what the drift rule learned about each asset. An alert
that rose while its asset was held (shelved, in maintenance) and was never announced is marked
``"unannounced"`` beside its state, so the next run announces it once nothing holds it. The file
is written atomically (temp file, fsync, rename): a crash leaves the old file or the new one,
never half of one; at worst the last interval's updates are lost. A file that cannot be read is
moved aside (``assets.json.bad``) with one log line and the daemon starts fresh: losing alert
state must never stop scoring. One asset's entry that cannot be read (a field of the wrong type)
costs that asset alone, and fields this version does not know (a newer version's, after a
rollback) are ignored: the other assets keep their state. Either is said in one log line, and the
file as it was is copied to ``assets.json.bad`` first, so nothing is lost unseen; the copies of
earlier incidents move to ``assets.json.bad.1`` to ``.bad.4`` (the oldest is dropped).

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> _ = save_states(d, {"pump-7": AlertState("alerting", above=3, peak=2.5, alert_id="17")},
...                 {"pump-7": DriftState(0.25, 40)})
>>> alerts, drift, unannounced = load_states(d)
>>> alerts["pump-7"].status, alerts["pump-7"].alert_id, drift["pump-7"].updates, unannounced
('alerting', '17', 40, set())
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from sensorguard.service.alerts import AlertState
from sensorguard.service.drift import DriftState
from sensorguard.service.durable import write_durably
from sensorguard.service.logs import counted, first_line, some
from sensorguard.service.payload import valid_asset
from sensorguard.service.set_aside import keep_copy, move_aside
from sensorguard.service.state_entry import (
    StateError,
    alert_state,
    channels_of,
    drift_state,
    entry_of,
    faults_of,
    finite_time,
    json_float,
    judged_of,
    past_of,
    returns_of,
    silence_entry,
    silences_of,
    unknown_fields,
)
from sensorguard.service.state_writes import ASSETS as STATE_FILE  # one name: the file, and its failures' label

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SAVE_INTERVAL_S = 30.0


def save_states(directory: str | os.PathLike, alerts: dict[str, AlertState], drift: dict[str, DriftState],
                unannounced: Collection[str] = (), judged: Mapping[str, float] | None = None,
                faults: Mapping[str, list[dict]] | None = None, channels: Mapping[str, list[dict]] | None = None,
                silent: Mapping[str, tuple[float, float]] | None = None,
                returned: Mapping[str, float] | None = None, past: Mapping[str, dict[str, float]] | None = None
                ) -> Path:
    """Write every asset's alert state and drift baseline to ``<directory>/assets.json`` atomically;
    ``unannounced``: the assets whose alert up was never announced (it rose while held); ``judged``:
    the end time of each asset's last judged window (:func:`judged_times`); ``faults``: its open
    sensor faults (:func:`saved_faults`); ``channels``: the top channels of its last window
    (:func:`saved_channels`); ``silent``: the silent assets awaited, the reading time each went
    silent after and its last score (:func:`saved_extras`; without it a restart forgot them: the
    first reading back told no ``sensor_ok``, a walk); ``returned``: the assets back from a silence
    with no window judged since, the reading time each came back (a silent one's mark wins); ``past``:
    per asset, the last plausible value of each channel that walked past its sensor limits
    (``SavedExtras.past``)."""
    target = Path(directory) / STATE_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    judged, faults, channels, silent, past = judged or {}, faults or {}, channels or {}, silent or {}, past or {}
    returned = {a: ts for a, ts in (returned or {}).items() if finite_time(ts) is not None and a not in silent}
    assets = {asset: {**entry_of(alerts.get(asset, AlertState()), drift.get(asset), asset not in unannounced),
                      **({"judged_ts": judged[asset]} if finite_time(judged.get(asset)) is not None else {}),
                      **({"sensor_faults": [{**f, "value": json_float(f["value"])} for f in faults[asset]]}
                         if faults.get(asset) else {}),
                      **({"channels": channels[asset]} if channels.get(asset) else {}),
                      **silence_entry(silent.get(asset)),
                      **({"returned_ts": returned[asset]} if asset in returned else {}),
                      **({"past_limits": past[asset]} if past.get(asset) else {})}
              for asset in sorted(set(alerts) | set(drift) | set(silent) | set(returned))}
    body = json.dumps({"format_version": FORMAT_VERSION, "assets": assets}, separators=(",", ":"))
    write_durably(target, body)
    return target


def load_states(directory: str | os.PathLike) -> tuple[dict[str, AlertState], dict[str, DriftState], set[str]]:
    """Alert states, drift baselines and unannounced alerts saved in ``directory`` (empty when there
    is no file yet; a file from before the mark counts every alert up as announced).

    Raises StateError for a file that is not a state file this build can read. An asset's entry
    that cannot be read is skipped and fields this version does not know are ignored, with one
    log line: the file as it was is copied to ``assets.json.bad``, and the file rewritten without
    them, so the next reader (the daemon after :func:`~sensorguard.service.relayout.relayout_states`)
    finds it clean and the line is not said twice. One bad entry once discarded the whole file:
    after a rollback from a version that added a field, every asset lost its state.
    """
    path = Path(directory) / STATE_FILE
    if not path.exists():
        return {}, {}, set()
    try:
        text = path.read_text(encoding="utf-8")
        doc = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        # (RecursionError: JSON nested too deep; it escaped, and each start crashed: a restart loop)
        raise StateError(f"{path}: unreadable ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format_version") != FORMAT_VERSION or not isinstance(
        doc.get("assets"), dict
    ):
        raise StateError(f"{path}: not a sensorguard state file of format {FORMAT_VERSION}")
    alerts: dict[str, AlertState] = {}
    drift: dict[str, DriftState] = {}
    unannounced: set[str] = set()
    skipped: dict[str, str] = {}  # asset -> why its entry was not taken
    unknown: dict[str, list[str]] = {}  # asset -> the fields of its entry this version does not know
    for asset, entry in doc["assets"].items():
        if not valid_asset(asset):  # (a hand edit's site-a/+/#: its every state publish failed, a walk)
            skipped[asset] = "not an asset id"
            continue
        try:
            alert = alert_state(entry["alert"])
            baseline = drift_state(entry["drift"]) if "drift" in entry else None
        except KeyError as exc:
            skipped[asset] = f"no {exc}"
            continue
        except (TypeError, ValueError, OverflowError, AttributeError) as exc:  # JSON's integers have no bound
            skipped[asset] = str(exc) or type(exc).__name__
            continue
        alerts[asset] = alert
        if baseline is not None:
            drift[asset] = baseline
        if entry.get("unannounced") is True:
            unannounced.add(asset)
        if extra := unknown_fields(entry):
            unknown[asset] = extra
    if (skipped or unknown) and _copied_aside(path, text, skipped, unknown):
        judged = {a: ts for a in alerts if (ts := finite_time(doc["assets"][a].get("judged_ts"))) is not None}
        with contextlib.suppress(OSError):  # (not rewritten: the daemon's next save replaces it, or says why not)
            age = path.stat()
            entries = {a: e for a, e in doc["assets"].items() if isinstance(e, dict)}  # (read above: not again)
            save_states(directory, alerts, drift, unannounced, judged, faults_of(entries), channels_of(entries),
                        {a: s for a, s in silences_of(entries).items() if a in alerts},  # (not a skipped one's)
                        {a: ts for a, ts in returns_of(entries).items() if a in alerts}, past_of(entries))
            os.utime(path, ns=(age.st_atime_ns, age.st_mtime_ns))  # no newer than it was: relayout weighs copies by age
    return alerts, drift, unannounced



def _copied_aside(path: Path, text: str, skipped: dict[str, str], unknown: dict[str, list[str]]) -> bool:
    """One log line for the entries skipped and the fields ignored, once the file as it was
    (``text``) is copied to ``assets.json.bad``; whether it was (else the line says why not)."""
    said = []
    if skipped:
        first = next(iter(skipped.values()))
        said.append(f"skipped {len(skipped)} invalid asset {_entries(len(skipped))} "
                    f"({some(list(skipped))}; the first: {first[:120]}), those assets start fresh")
    if unknown:
        fields_seen = sorted({name for names in unknown.values() for name in names})
        said.append(f"ignored fields this version does not know ({some(fields_seen, quote=False)}) "
                    f"in {len(unknown)} {_entries(len(unknown))}")
    aside = path.with_name(path.name + ".bad")
    try:
        keep_copy(aside, text)
    except OSError as err:
        log.warning("%s: %s; could not keep a copy of the file as it was in %s (%s)", path, "; ".join(said), aside,
                    err.strerror or err)
        return False
    log.warning("%s: %s; the file as it was is kept in %s", path, "; ".join(said), aside)
    return True


def _entries(count: int) -> str:
    """``entry`` or ``entries``, after the ``count`` of them a log line names."""
    return "entry" if count == 1 else "entries"


def judged_times(directory: str | os.PathLike | None) -> dict[str, float]:
    """Per asset, the end time of the last window the previous run judged, as ``assets.json`` holds
    it (empty without a file, or for one that cannot be read: :func:`restore_states` has set it aside).

    The daemon refuses an asset's readings up to that time until a newer one comes, as it would
    have without the restart: a client session that queued readings while another layout served
    them (``--workers`` changed and changed back) delivered them again, and judged a second time
    they re-announced alerts minutes old and cleared an alert that was still up (found in a walk).
    """
    return judged_of(_saved(directory))


def saved_faults(directory: str | os.PathLike | None) -> dict[str, list[dict]]:
    """Per asset, the sensor faults open when the previous run saved (``[{"kind", "channel", "since",
    "value"}]``; empty without a file, entries that do not read as such left out). Without them a
    restart forgot every open fault: no ``sensor_ok`` ever followed its ``sensor_fault``, or a second
    ``sensor_fault`` came with none between (found in a walk)."""
    return faults_of(_saved(directory))


def saved_channels(directory: str | os.PathLike | None) -> dict[str, list[dict]]:
    """Per asset, the top channels of the last window the previous run judged (``[{"name",
    "share"}]``; entries that do not read as such left out). Without them a restored alert's
    retained state said ``"channels": []`` until its next window (found in a walk)."""
    return channels_of(_saved(directory))


@dataclass(frozen=True)
class SavedExtras:
    """What ``assets.json`` holds beside the states, from one reading of the file (a start read it
    once for each): :func:`judged_times`, :func:`saved_faults`, :func:`saved_channels`, the silent
    assets (the reading time each went silent after, its last score) and the assets back from a
    silence with no window judged since (the reading time each came back), and per asset the last
    plausible value of each channel that walked past its sensor limits (``{channel: value}``)."""

    judged: dict[str, float]
    faults: dict[str, list[dict]]
    channels: dict[str, list[dict]]
    silences: dict[str, tuple[float, float]]
    returned: dict[str, float]
    past: dict[str, dict[str, float]]


def saved_extras(directory: str | os.PathLike | None) -> SavedExtras:
    """:class:`SavedExtras` of the file in ``directory`` (empty without one, or for one that cannot be read)."""
    assets = _saved(directory)
    return SavedExtras(judged_of(assets), faults_of(assets), channels_of(assets), silences_of(assets),
                       returns_of(assets), past_of(assets))


def _saved(directory: str | os.PathLike | None) -> dict[str, dict]:
    """The entries of ``assets.json`` (empty without a file, or for one that cannot be read:
    :func:`restore_states` has set it aside)."""
    if not directory:
        return {}
    try:
        assets = json.loads((Path(directory) / STATE_FILE).read_text(encoding="utf-8"))["assets"]
        return {asset: entry for asset, entry in assets.items() if isinstance(entry, dict)}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return {}



def restore_states(directory: str | None, max_assets: int, awaited: Collection[str] = ()
                   ) -> dict[str, tuple[AlertState, DriftState | None, bool]]:
    """Per asset, the alert state, drift baseline and whether an alert up was announced, as the
    previous run saved them (empty without ``directory``). ``awaited``: the silent assets whose
    entries will be taken as silences (this instance's, outside cluster mode), which hold no place
    under ``max_assets``.

    Never raises for a bad file: it is set aside with one log line and the daemon starts fresh.
    """
    if not directory:
        return {}
    try:
        alerts, drift, unannounced = load_states(directory)
    except StateError as exc:
        log.warning("%s; %s, starting without saved asset state", first_line(exc), move_aside(directory)[1])
        return {}
    # over the cap (max_assets lowered since the save): alerts up first, since their raise went out
    # and subscribers wait for its clear; then the assets live at the save; last the silent ones kept
    # for their drift baseline alone (a bare state: a first version let those push live ones out);
    # each group in the file's (name) order
    # (the silent ones hold no slot: awaited, their number capped apart, SILENT_KEPT; counted here, each
    # restart at capacity forgot one and warned: a review)
    silent = set(awaited)
    held = [asset for asset in alerts if asset not in silent]
    kept = sorted(held, key=lambda asset: (alerts[asset].status != "alerting", alerts[asset] == AlertState()))
    kept = kept[:max_assets] + [asset for asset in alerts if asset in silent]
    if len(held) > max_assets:
        log.warning("%s holds %d assets, more than max_assets %d: kept the alerts up first, forgot %d",
                    Path(directory) / STATE_FILE, len(held), max_assets, len(held) - max_assets)
    restored = {asset: (alerts[asset], drift.get(asset), asset not in unannounced) for asset in kept}
    if restored:
        log.info("restored the state of %s from %s", counted(len(restored), "asset"), directory)
    return restored
