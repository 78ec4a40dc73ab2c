"""One asset's entry in the daemon's saved state, to and from JSON values, checked field by field.

``assets.json`` (:mod:`~sensorguard.service.state`) and cluster mode's state bucket
(:func:`encode_asset`, :func:`decode_asset`) hold the same entry: the alert state, the drift
baseline, whether an alert up was announced, and beside them the end time of the last judged
window, the open sensor faults and the top channels. Reading one back checks each known field's
type and range, since the file may come from a hand edit or from another version: a bad value
costs its own asset (:class:`StateError`, or a field left out), never the others'.

>>> alert, drift, window_ts, announced, judged_ts, channels, silence = decode_asset(
...     encode_asset(AlertState("alerting", above=3, alert_id="17"), DriftState(0.25, 40), window_ts=60.0))
>>> alert.alert_id, drift.updates, window_ts, announced, judged_ts
('17', 40, 60.0, True, None)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, fields, replace

from sensorguard.service.alerts import AlertState
from sensorguard.service.drift import DriftState
from sensorguard.service.json_values import is_number

_STATUSES = ("normal", "pending", "alerting", "stale")
_ALERT_FIELDS = frozenset(f.name for f in fields(AlertState))
_DRIFT_FIELDS = frozenset(f.name for f in fields(DriftState))
# an asset's fields in assets.json
_ENTRY_FIELDS = frozenset({"alert", "drift", "unannounced", "judged_ts", "sensor_faults", "channels", "silent",
                            "returned_ts", "past_limits"})
_CHANNEL_KINDS = ("stuck", "out_of_range", "missing")  # sensor faults kept across a restart (silent: its own rule)


class StateError(Exception):
    """A state file that cannot be used; the message says why in one line."""


def unknown_fields(entry: dict) -> list[str]:
    """The fields of a readable entry this version does not know (``alert.`` or ``drift.`` inside those)."""
    extra = sorted(set(entry) - _ENTRY_FIELDS)
    for part, known in (("alert", _ALERT_FIELDS), ("drift", _DRIFT_FIELDS)):
        if isinstance(entry.get(part), dict):
            extra += sorted(f"{part}.{name}" for name in set(entry[part]) - known)
    return extra


def judged_of(assets: Mapping[str, dict]) -> dict[str, float]:
    """Per asset, the end time of its last judged window (entries without a finite one left out)."""
    return {asset: ts for asset, entry in assets.items() if (ts := finite_time(entry.get("judged_ts"))) is not None}


def faults_of(assets: Mapping[str, dict]) -> dict[str, list[dict]]:
    """Per asset, its open sensor faults that read as such (``kind``, ``channel``, a finite ``since``)."""
    out = {}
    for asset, entry in assets.items():
        listed = entry.get("sensor_faults")
        faults = [f for f in listed if _fault(f)] if isinstance(listed, list) else []
        if faults:
            out[asset] = [{**f, "since": float(f["since"]), "value": _float_or_nan(f.get("value"))} for f in faults]
    return out


def past_of(assets: Mapping[str, dict]) -> dict[str, dict[str, float]]:
    """Per asset, the last plausible value of each channel that walked past its sensor limits
    (``past_limits``: ``{channel: value}``, :meth:`~sensorguard.service.sensors.SensorWatch.past_limits`);
    pairs that do not read as a name and a finite number left out."""
    out = {}
    for asset, entry in assets.items():
        listed = entry.get("past_limits")
        past = ({c: float(v) for c, v in listed.items() if isinstance(c, str) and _finite_share(v)}
                if isinstance(listed, dict) else {})
        if past:
            out[asset] = past
    return out


def channels_of(assets: Mapping[str, dict]) -> dict[str, list[dict]]:
    """Per asset, the top channels of its last window, when every one reads as ``{"name", "share"}``."""
    out = {}
    for asset, entry in assets.items():
        listed = entry.get("channels")
        if isinstance(listed, list) and listed and all(
                isinstance(c, dict) and isinstance(c.get("name"), str) and _finite_share(c.get("share"))
                for c in listed):
            out[asset] = [{"name": c["name"], "share": float(c["share"])} for c in listed]
    return out


def silences_of(assets: Mapping[str, dict]) -> dict[str, tuple[float, float]]:
    """Per asset silent when saved, the reading time it went silent after and its last score (NaN
    when it had none); entries without a finite ``silent.since`` left out."""
    out = {}
    for asset, entry in assets.items():
        silent = entry.get("silent")
        if isinstance(silent, dict) and (since := finite_time(silent.get("since"))) is not None:
            out[asset] = (since, _float_or_nan(silent.get("last_score")))
    return out


def silence_entry(silence: tuple[float, float] | None) -> dict:
    """``{"silent": {"since", "last_score"}}`` for a silent asset's entry (``assets.json`` and the
    state bucket alike; :func:`silences_of` reads it back), empty for none."""
    if silence is None or finite_time(silence[0]) is None:
        return {}
    return {"silent": {"since": silence[0], "last_score": json_float(silence[1])}}


def returns_of(assets: Mapping[str, dict]) -> dict[str, float]:
    """Per asset back from a silence with no window judged since, the reading time it came back
    (``returned_ts``): its retained state said so, and a restart it stays quiet through must tell
    it silent again. Without the mark its entry read as an older file's silent one, awaited unsaid."""
    return {asset: ts for asset, entry in assets.items() if (ts := finite_time(entry.get("returned_ts"))) is not None}


def _finite_share(value: object) -> bool:
    """(10**400 is a JSON number Python reads as an int that float() cannot hold: OverflowError)"""
    return is_number(value) and -1e300 < value < 1e300


def _fault(f: object) -> bool:
    return (isinstance(f, dict) and f.get("kind") in _CHANNEL_KINDS and isinstance(f.get("channel"), str)
            and finite_time(f.get("since")) is not None)


def _float_or_nan(value: object) -> float:
    """A saved value as a float; NaN for anything else (JSON's integers have no bound: 10**400
    raised at every start, a review)."""
    return float(value) if type(value) in (int, float) and abs(value) < 1e300 else math.nan  # type: ignore[arg-type]


def json_float(value: float) -> float | None:
    """A value as JSON can hold it: None for NaN or an infinity."""
    return value if math.isfinite(value) else None


def finite_time(value: object) -> float | None:
    """A saved time as a finite float; None for anything else."""
    try:
        return _window_time(value)
    except ValueError:
        return None


def encode_asset(alert: AlertState, drift: DriftState | None, window_ts: float | None = None,
                 announced: bool = True, judged_ts: float | None = None, channels: list[dict] | None = None,
                 silence: tuple[float, float] | None = None, *, guard_until: float | None = None,
                 past: dict[str, float] | None = None, faults: list[dict] | None = None) -> bytes:
    """One asset's state as ``assets.json`` holds it, plus the end time of its last scored window on
    the hop grid (the cadence a new owner continues) and of a later alert-hop window the state
    already holds (the new owner judges only the windows after it), for cluster mode's state bucket
    (an owner of an older version ignores ``judged_ts``), and the top channels of its last window
    (``[{"name", "share"}]``, as :func:`save_states` keeps them), and a silent asset's silence (the
    reading time it went silent after, its last score: ``"silent"`` as ``assets.json`` holds it);
    ``guard_until``: the end of the recorder's guard band after its last clear (:func:`guard_of`);
    ``past``: its channels walked past their sensor limits, with their last plausible values
    (``past_limits`` as ``assets.json`` holds them; :func:`past_in`); ``faults``: its open channel
    faults (``sensor_faults`` as ``assets.json`` holds them; :func:`faults_in`)."""
    entry = {**entry_of(alert, drift, announced), **({"window_ts": window_ts} if window_ts is not None else {}),
             **({"judged_ts": judged_ts} if judged_ts is not None else {}),
             **silence_entry(silence),
             **({"guard_until": guard_until} if finite_time(guard_until) is not None else {}),
             **({"past_limits": past} if past else {}),
             **({"sensor_faults": [{**f, "value": json_float(f["value"])} for f in faults]} if faults else {}),
             **({"channels": channels} if channels and alert.status != "normal" else {})}  # (an alert's, as
    # assets.json keeps them: every normal asset's, synced every 30 s, only grew the bucket; a review)
    return json.dumps(entry, separators=(",", ":")).encode()


def entry_of(alert: AlertState, drift: DriftState | None, announced: bool) -> dict:
    """One asset as ``assets.json`` and the state bucket hold it; the mark only on an alert up
    whose raise never went out."""
    return {"alert": _finite(asdict(alert)), **({"drift": _drift_entry(drift)} if drift is not None else {}),
            **({"unannounced": True} if not announced and alert.status == "alerting" else {})}


def decode_asset(data: bytes) -> tuple[AlertState, DriftState | None, float | None, bool, float | None, list[dict],
                                      tuple[float, float] | None]:
    """:func:`encode_asset` back (channels that do not read as such: none); StateError for anything else."""
    try:
        entry = json.loads(data)
        drift = entry.get("drift")
        window_ts, judged_ts = _window_time(entry.get("window_ts")), _window_time(entry.get("judged_ts"))
        return (alert_state(entry["alert"]), None if drift is None else drift_state(drift), window_ts,
                entry.get("unannounced") is not True, None if window_ts is None else judged_ts,
                channels_of({"": entry}).get("", []), silences_of({"": entry}).get(""))
    except (AttributeError, KeyError, TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise StateError(f"invalid asset state ({exc})") from None  # (JSONDecodeError: a ValueError)


def guard_of(data: bytes) -> float | None:
    """The reading time the recorder's guard band after the asset's last clear ends at, from its
    entry in the state bucket (None: none, or unreadable). A new owner records none of the asset's
    readings before it: its old owner's band stayed in its own recorder, and a partition moved
    within it had the fault's tail recorded as normal data on the new owner (a cluster walk)."""
    return finite_time(_entry(data).get("guard_until"))


def past_in(data: bytes) -> dict[str, float]:
    """The channels walked past their sensor limits, with their last plausible values, from the
    asset's entry in the state bucket (``{}``: none, or unreadable). A new owner replays only the
    last window's readings: without them, a channel that walked farther than ``jump`` past its limits
    before the replay began was told a sensor fault at its first replayed reading."""
    return past_of({"": _entry(data)}).get("", {})


def faults_in(data: bytes) -> list[dict]:
    """The open channel faults from the asset's entry in the state bucket (``[]``: none, or
    unreadable). A new owner replays only the window stream's last readings: a channel stuck past its
    limits since before them read as one that walked there, its fault was dropped (no ``sensor_ok``,
    none listed), and a subscriber pairing faults with their ends held it open for good (a walk)."""
    return faults_of({"": _entry(data)}).get("", [])


def _entry(data: bytes) -> dict:
    """An asset's entry in the state bucket as a dict (``{}``: unreadable, or no object), for the
    readers of one field above."""
    try:
        entry = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    return entry if isinstance(entry, dict) else {}


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


def alert_state(raw: dict) -> AlertState:
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


def drift_state(raw: dict) -> DriftState:
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
