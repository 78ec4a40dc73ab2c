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
import math
import os
from collections.abc import Collection, Mapping
from dataclasses import asdict, fields, replace
from pathlib import Path

from sensorguard.service.alerts import AlertState
from sensorguard.service.drift import DriftState
from sensorguard.service.durable import write_durably
from sensorguard.service.json_values import is_number
from sensorguard.service.logs import first_line, some
from sensorguard.service.payload import valid_asset
from sensorguard.service.set_aside import keep_copy, move_aside
from sensorguard.service.state_writes import ASSETS as STATE_FILE  # one name: the file, and its failures' label

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SAVE_INTERVAL_S = 30.0
_STATUSES = ("normal", "pending", "alerting", "stale")
_ALERT_FIELDS = frozenset(f.name for f in fields(AlertState))
_DRIFT_FIELDS = frozenset(f.name for f in fields(DriftState))
# an asset's fields in assets.json
_ENTRY_FIELDS = frozenset({"alert", "drift", "unannounced", "judged_ts", "sensor_faults", "channels"})
_CHANNEL_KINDS = ("stuck", "out_of_range", "missing")  # sensor faults kept across a restart (silent: its own rule)


class StateError(Exception):
    """A state file that cannot be used; the message says why in one line."""


def save_states(directory: str | os.PathLike, alerts: dict[str, AlertState], drift: dict[str, DriftState],
                unannounced: Collection[str] = (), judged: Mapping[str, float] | None = None,
                faults: Mapping[str, list[dict]] | None = None, channels: Mapping[str, list[dict]] | None = None
                ) -> Path:
    """Write every asset's alert state and drift baseline to ``<directory>/assets.json`` atomically;
    ``unannounced``: the assets whose alert up was never announced (it rose while held); ``judged``:
    the end time of each asset's last judged window (:func:`judged_times`); ``faults``: its open
    sensor faults (:func:`saved_faults`); ``channels``: the top channels of its last window
    (:func:`saved_channels`)."""
    target = Path(directory) / STATE_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    judged, faults, channels = judged or {}, faults or {}, channels or {}
    assets = {asset: {**_entry(alerts.get(asset, AlertState()), drift.get(asset), asset not in unannounced),
                      **({"judged_ts": judged[asset]} if _finite_time(judged.get(asset)) is not None else {}),
                      **({"sensor_faults": [{**f, "value": _json_float(f["value"])} for f in faults[asset]]}
                         if faults.get(asset) else {}),
                      **({"channels": channels[asset]} if channels.get(asset) else {})}
              for asset in sorted(set(alerts) | set(drift))}
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
            alert = _alert_state(entry["alert"])
            baseline = _drift_state(entry["drift"]) if "drift" in entry else None
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
        if extra := _unknown_fields(entry):
            unknown[asset] = extra
    if (skipped or unknown) and _copied_aside(path, text, skipped, unknown):
        judged = {a: ts for a in alerts if (ts := _finite_time(doc["assets"][a].get("judged_ts"))) is not None}
        with contextlib.suppress(OSError):  # (not rewritten: the daemon's next save replaces it, or says why not)
            age = path.stat()
            entries = {a: e for a, e in doc["assets"].items() if isinstance(e, dict)}  # (read above: not again)
            save_states(directory, alerts, drift, unannounced, judged, _faults(entries), _channels(entries))
            os.utime(path, ns=(age.st_atime_ns, age.st_mtime_ns))  # no newer than it was: relayout weighs copies by age
    return alerts, drift, unannounced


def _unknown_fields(entry: dict) -> list[str]:
    """The fields of a readable entry this version does not know (``alert.`` or ``drift.`` inside those)."""
    extra = sorted(set(entry) - _ENTRY_FIELDS)
    for part, known in (("alert", _ALERT_FIELDS), ("drift", _DRIFT_FIELDS)):
        if isinstance(entry.get(part), dict):
            extra += sorted(f"{part}.{name}" for name in set(entry[part]) - known)
    return extra


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
    return _judged(_saved(directory))


def saved_faults(directory: str | os.PathLike | None) -> dict[str, list[dict]]:
    """Per asset, the sensor faults open when the previous run saved (``[{"kind", "channel", "since",
    "value"}]``; empty without a file, entries that do not read as such left out). Without them a
    restart forgot every open fault: no ``sensor_ok`` ever followed its ``sensor_fault``, or a second
    ``sensor_fault`` came with none between (found in a walk)."""
    return _faults(_saved(directory))


def saved_channels(directory: str | os.PathLike | None) -> dict[str, list[dict]]:
    """Per asset, the top channels of the last window the previous run judged (``[{"name",
    "share"}]``; entries that do not read as such left out). Without them a restored alert's
    retained state said ``"channels": []`` until its next window (found in a walk)."""
    return _channels(_saved(directory))


def saved_extras(directory: str | os.PathLike | None
                 ) -> tuple[dict[str, float], dict[str, list[dict]], dict[str, list[dict]]]:
    """:func:`judged_times`, :func:`saved_faults` and :func:`saved_channels` from one reading of
    the file (a start read it once for each)."""
    assets = _saved(directory)
    return _judged(assets), _faults(assets), _channels(assets)


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


def _judged(assets: Mapping[str, dict]) -> dict[str, float]:
    return {asset: ts for asset, entry in assets.items() if (ts := _finite_time(entry.get("judged_ts"))) is not None}


def _faults(assets: Mapping[str, dict]) -> dict[str, list[dict]]:
    out = {}
    for asset, entry in assets.items():
        listed = entry.get("sensor_faults")
        faults = [f for f in listed if _fault(f)] if isinstance(listed, list) else []
        if faults:
            out[asset] = [{**f, "since": float(f["since"]), "value": _float_or_nan(f.get("value"))} for f in faults]
    return out


def _channels(assets: Mapping[str, dict]) -> dict[str, list[dict]]:
    out = {}
    for asset, entry in assets.items():
        listed = entry.get("channels")
        if isinstance(listed, list) and listed and all(
                isinstance(c, dict) and isinstance(c.get("name"), str) and _finite_share(c.get("share"))
                for c in listed):
            out[asset] = [{"name": c["name"], "share": float(c["share"])} for c in listed]
    return out


def _finite_share(value: object) -> bool:
    """(10**400 is a JSON number Python reads as an int that float() cannot hold: OverflowError)"""
    return is_number(value) and -1e300 < value < 1e300


def _fault(f: object) -> bool:
    return (isinstance(f, dict) and f.get("kind") in _CHANNEL_KINDS and isinstance(f.get("channel"), str)
            and _finite_time(f.get("since")) is not None)


def _float_or_nan(value: object) -> float:
    """A saved value as a float; NaN for anything else (JSON's integers have no bound: 10**400
    raised at every start, a review)."""
    return float(value) if type(value) in (int, float) and abs(value) < 1e300 else math.nan  # type: ignore[arg-type]


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _finite_time(value: object) -> float | None:
    try:
        return _window_time(value)
    except ValueError:
        return None


def restore_states(directory: str | None, max_assets: int
                   ) -> dict[str, tuple[AlertState, DriftState | None, bool]]:
    """Per asset, the alert state, drift baseline and whether an alert up was announced, as the
    previous run saved them (empty without ``directory``).

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
    kept = sorted(alerts, key=lambda asset: (alerts[asset].status != "alerting", alerts[asset] == AlertState()))
    kept = kept[:max_assets]
    if len(alerts) > len(kept):
        log.warning("%s holds %d assets, more than max_assets %d: kept the alerts up first, forgot %d",
                    Path(directory) / STATE_FILE, len(alerts), max_assets, len(alerts) - len(kept))
    restored = {asset: (alerts[asset], drift.get(asset), asset not in unannounced) for asset in kept}
    if restored:
        log.info("restored the state of %d assets from %s", len(restored), directory)
    return restored


def encode_asset(alert: AlertState, drift: DriftState | None, window_ts: float | None = None,
                 announced: bool = True, judged_ts: float | None = None, channels: list[dict] | None = None) -> bytes:
    """One asset's state as ``assets.json`` holds it, plus the end time of its last scored window on
    the hop grid (the cadence a new owner continues) and of a later alert-hop window the state
    already holds (the new owner judges only the windows after it), for cluster mode's state bucket
    (an owner of an older version ignores ``judged_ts``), and the top channels of its last window
    (``[{"name", "share"}]``, as :func:`save_states` keeps them)."""
    entry = {**_entry(alert, drift, announced), **({"window_ts": window_ts} if window_ts is not None else {}),
             **({"judged_ts": judged_ts} if judged_ts is not None else {}),
             **({"channels": channels} if channels and alert.status != "normal" else {})}  # (an alert's, as
    # assets.json keeps them: every normal asset's, synced every 30 s, only grew the bucket; a review)
    return json.dumps(entry, separators=(",", ":")).encode()


def _entry(alert: AlertState, drift: DriftState | None, announced: bool) -> dict:
    """One asset as ``assets.json`` and the state bucket hold it; the mark only on an alert up
    whose raise never went out."""
    return {"alert": _finite(asdict(alert)), **({"drift": _drift_entry(drift)} if drift is not None else {}),
            **({"unannounced": True} if not announced and alert.status == "alerting" else {})}


def decode_asset(data: bytes) -> tuple[AlertState, DriftState | None, float | None, bool, float | None, list[dict]]:
    """:func:`encode_asset` back (channels that do not read as such: none); StateError for anything else."""
    try:
        entry = json.loads(data)
        drift = entry.get("drift")
        window_ts, judged_ts = _window_time(entry.get("window_ts")), _window_time(entry.get("judged_ts"))
        return (_alert_state(entry["alert"]), None if drift is None else _drift_state(drift), window_ts,
                entry.get("unannounced") is not True, None if window_ts is None else judged_ts,
                _channels({"": entry}).get("", []))
    except (AttributeError, KeyError, TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise StateError(f"invalid asset state ({exc})") from None  # (JSONDecodeError: a ValueError)


def _window_time(value: object) -> float | None:
    """A window's end time from the state bucket: None, or a finite number (an infinite one made
    the new owner queue none of the asset's windows, silently)."""
    if value is None:
        return None
    number = math.nan
    if is_number(value):
        number = float(value) if abs(value) < 1e300 else math.inf  # (an int past a float's range)
    if not math.isfinite(number):
        raise ValueError(f"window times must be finite numbers, got {str(value)[:40]}")
    return number


def _alert_state(raw: dict) -> AlertState:
    """A saved alert state; ValueError or TypeError for one with a known field of the wrong type.
    Fields this version does not know are ignored (a newer version's: an older one rolled back to
    refused the entry, and the whole file with it)."""
    if not isinstance(raw, dict):
        raise ValueError(f"an alert state must be an object, got {str(raw)[:40]!r}")
    if raw.get("status", "normal") not in _STATUSES:
        raise ValueError(f"status must be one of {', '.join(_STATUSES)}")
    state = AlertState(**{k: v for k, v in raw.items() if k in _ALERT_FIELDS})
    if not all(_count(x) for x in (state.above, state.below)):
        raise ValueError(f"counts must be whole numbers >= 0, got above={state.above!r}, below={state.below!r}")
    scores = (state.peak, state.last_score)
    if not all(isinstance(x, int | float) for x in scores) or not isinstance(state.alert_id, str):
        raise ValueError("scores must be numbers, alert_id a string")
    return replace(state, peak=_infinite(state.peak), last_score=_infinite(state.last_score))


def _drift_entry(drift: DriftState) -> dict:
    """A drift baseline as saved: its level (``service.level``) only when one was learned."""
    entry = asdict(drift)
    if not drift.level:
        del entry["level"], entry["level_key"]
    return entry


def _drift_state(raw: dict) -> DriftState:
    """A saved drift baseline; ValueError for anything :func:`~sensorguard.service.drift.drift_step`
    cannot step (a NaN offset, a negative count divides by zero there)."""
    offset, updates = float(raw["offset"]), raw["updates"]
    if not math.isfinite(offset):
        raise ValueError(f"drift offset must be finite, got {offset}")
    if not _count(updates):
        raise ValueError(f"drift updates must be a whole number >= 0, got {updates!r}")
    level = raw.get("level") or ()
    if not isinstance(level, list | tuple) or not all(is_number(x) and math.isfinite(x) for x in level):
        raise ValueError(f"drift level must be a list of finite numbers, got {str(level)[:40]}")
    key = raw.get("level_key", 0)
    if not _count(key):
        raise ValueError(f"drift level_key must be a whole number >= 0, got {str(key)[:40]}")
    return DriftState(offset, int(updates), tuple(float(x) for x in level), int(key))


def _count(x: object) -> bool:
    """A whole number >= 0 that fits the state (JSON's 1e400 or Infinity would not: OverflowError)."""
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 1 << 62


_LARGEST = 1.7976931348623157e308


def _finite(record: dict) -> dict:
    """JSON has no infinity: a non-finite score (a sensor's +inf) is saved as the largest float."""
    return {k: (math.copysign(_LARGEST, v) if isinstance(v, float) and math.isinf(v) else v)
            for k, v in record.items()}


def _infinite(x: float) -> float:
    """:func:`_finite` back: the largest float was an infinite score (published as null, not 1.8e308)."""
    return math.copysign(math.inf, x) if abs(x) >= _LARGEST else x
