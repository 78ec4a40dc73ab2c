"""Untrusted MQTT messages -> samples, or reasons to reject them. Nothing here ever raises.

Every message the daemon receives passes through :func:`parse_message` on the network thread, so
it is written for speed (orjson, type checks with ``type(x) is``, a C fast path for timestamps)
and for hostility: any bytes give a :class:`Parsed`, never an exception into the loop.

A message is one sample ``{"ts": ..., "values": {"ch": 1.5, ...}}`` or a batch
``{"samples": [<sample>, ...]}``; other keys are ignored (room for senders to add fields).
``ts`` is epoch seconds (int or float) or an RFC 3339 / ISO 8601 string. A string without a zone
(``2024-05-01T12:00:00``) is read as UTC: gateways that drop the zone almost always mean UTC, and
guessing the daemon's local zone would shift data by hours depending on where it runs.

Reject reasons (the ``reason`` label of ``sensorguard_messages_rejected_total``). Whole-message
reasons drop the message with one reject; per-sample reasons drop that sample and keep the rest.

- ``too_large``: the payload is longer than ``max_bytes`` (checked before parsing). Whole message.
- ``invalid_json``: not UTF-8 JSON, or nested deeper than ``MAX_DEPTH`` levels. Whole message.
- ``not_object``: the payload is not a JSON object; or (per sample) a batch element is not one.
- ``bad_asset``: the topic is not ``<prefix>/<asset>/readings`` with a valid asset. Whole message.
- ``bad_samples``: ``samples`` is not a list, or is empty. Whole message.
- ``too_many_samples``: more than ``max_samples`` samples in one message. Whole message.
- ``bad_ts``: ``ts`` missing, not a number or string, unparseable, or outside 2000..2200. Per sample.
- ``bad_values``: ``values`` missing, not an object, empty, or holding a non-number (bools and
  strings are not numbers; ``null`` is a missing value) under a name the model does not ignore
  (its ``ignored_columns``, whose values are dropped). Per sample.
- ``non_finite``: ``ts`` is NaN or +-Infinity. Per sample. A *value* that is NaN, +-Infinity,
  ``null`` or of magnitude ``NO_DATA`` (1e30) or more (a historian's no-data marker, 3.4e38) is a
  missing value of that channel (NaN), as in ``score``'s files: the reading is kept
  and the channel forward-filled as offline (:mod:`sensorguard.service.cleaning`).
- ``parse_error``: an unexpected failure inside this parser (a bug): the message is counted and
  dropped instead of crashing the daemon. Whole message.

Reasons from :mod:`service.windows` (need per-asset state, so they are not the parser's job):

- ``unknown_channel``: a value for a channel the model does not know (the training file's other
  columns, the bundle's ``ignored_columns``, are dropped instead).
- ``missing_channel``: a channel absent or NaN with nothing (or nothing recent enough) to
  forward-fill: the reading is dropped and the asset's window restarts after it.
- ``out_of_order``: older than the newest reading the asset's buffer has seen (taken, or refused
  for its rate: ``resampled``, ``slow_rate``), and not one of its last ``SEEN_TIMES`` (1,024) stamps.
- ``future_ts``: stamped more than ``max_future_s`` ahead of the daemon's clock and of the asset's
  newest reading taken (a jump; an accelerated replay, ahead step by step, is kept; readings
  refused for their rate do not step it; :mod:`service.ingest`). Taken, it would make every true
  reading after it ``out_of_order`` until the asset went silent. One nearer (taken) is undone by the
  readings after it: ``STEP_BACK_AFTER`` (5) in a row, in order, behind a newest stamp over a minute
  ahead of the clock, each itself at most a minute ahead, rewind the asset (its window restarts at
  the fifth; ``window_restarts``, a log line ``clock stepped back`` naming the assets): the sender's
  clock stepped back (:meth:`~sensorguard.service.asset_buffer.AssetBuffer.steps_back`). A sender
  whose clock runs over a minute fast is never rewound: its true readings stay ``out_of_order``
  until the glitch's stamp is passed (check its clock).
- ``duplicate_ts``: the stamp of one of the asset's last ``SEEN_TIMES`` (1,024) readings (a redelivery);
  a redelivered reading older than those counts as ``out_of_order`` (either way it is not taken twice).
- ``too_many_assets``: a new asset beyond ``max_assets``.
- ``resampled``: the asset publishes faster than the model's sample period; the readings between
  grid steps are dropped (:meth:`~sensorguard.service.cleaning.Cleaner.admit`).
- ``slow_rate``: the asset publishes over 1.75 times slower than the model's sample period (or past
  its restart gap, at ``fill_limit`` 0); its
  readings are refused until it is back at the rate (fix the sender, or retrain --force on data at its rate).
- ``not_ours``: a topic outside this instance's partitions, delivered by a subscription its
  resumed session still held from before the partitions changed: acknowledged, not scored (its
  new owner scores it).
- ``retained``: a reading the broker kept (published with retain) and sent because the daemon
  (re)subscribed: a stale last value, acknowledged, not taken (taken, a dead sensor's last
  reading brought its asset back from silence at every reconnect). MQTT 5 subscriptions ask the
  broker not to send them at all (:mod:`service.mqtt`).

>>> raw = b'{"ts": 1700000000, "values": {"t": 1}}'
>>> p = parse_message("sensors/site-a/pump-7/readings", raw, "sensors")
>>> p.asset, p.samples, p.rejects
('site-a/pump-7', [Sample(ts=1700000000.0, values={'t': 1.0})], [])
>>> raw = b'{"samples": [{"ts": "2023-11-14T22:13:20Z"}, []]}'
>>> parse_message("sensors/pump-7/readings", raw, "sensors").rejects
['bad_values', 'not_object']
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

REJECT_REASONS: tuple[str, ...] = (
    "too_large",
    "invalid_json",
    "not_object",
    "bad_asset",
    "bad_samples",
    "too_many_samples",
    "bad_ts",
    "bad_values",
    "non_finite",
    "parse_error",
    "unknown_channel",
    "missing_channel",
    "out_of_order",
    "future_ts",
    "duplicate_ts",
    "too_many_assets",
    "resampled",
    "slow_rate",
    "not_ours",  # a topic outside this instance's partitions (a stale subscription of its session)
    "retained",  # a retained reading, sent by the broker on (re)subscribing: a stale last value
)

TS_MIN = 946684800.0  # 2000-01-01T00:00:00Z: earlier is a device clock that was never set
TS_MAX = 7258118400.0  # 2200-01-01T00:00:00Z: later is garbage (or milliseconds sent as seconds)
MAX_ASSET_CHARS = 200
MAX_DEPTH = 1024  # JSON nesting refused beyond this (a reading is 4 deep); orjson's own limit since 3.9.15
MAX_ASSET_LEVELS = 8
NAN = float("nan")
NO_DATA = 1e30  # a value this large is a marker, not a measurement (historians write 3.4e38): missing

# One level: 1..64 of [A-Za-z0-9._-], and not "." or ".." (those would read as paths in files and URLs).
_LEVEL = r"(?!\.\.?(?:/|$))[A-Za-z0-9._-]{1,64}"
_ASSET_RE = re.compile(rf"{_LEVEL}(?:/{_LEVEL}){{0,{MAX_ASSET_LEVELS - 1}}}")
_SUFFIX = "/readings"
# what a ``bad_asset`` log line says (it said no reason, every other reason does: a walk)
ASSET_RULE = (f"an asset id is 1 to {MAX_ASSET_LEVELS} levels of 1-64 letters, digits, '.', '_' or '-' (not '.' "
              f"or '..'), at most {MAX_ASSET_CHARS} characters, between the topic prefix and /readings")


class Sample(NamedTuple):
    """One accepted reading: ``ts`` in epoch seconds, ``values`` channel -> float."""

    ts: float
    values: dict[str, float]


@dataclass(frozen=True, slots=True)
class Parsed:
    """What one message gave: its asset (None if the topic was bad), good samples, reject reasons."""

    asset: str | None
    samples: list[Sample]
    rejects: list[str]


def asset_from_topic(topic: str, prefix: str) -> str | None:
    """The asset of ``<prefix>/<asset>/readings``, or None if the topic is not one of ours.

    The asset may span levels (``site-a/line-2/pump-7``) so a daemon can own a partition with a
    filter like ``sensors/site-a/#``. Levels are restricted because the asset id ends up in
    topics, metric labels and file names: no wildcards, no ``.``/``..``, bounded length.
    """
    prefix = prefix.strip("/")
    head = prefix + "/" if prefix else ""
    if not (topic.startswith(head) and topic.endswith(_SUFFIX)):
        return None
    asset = topic[len(head) : len(topic) - len(_SUFFIX)]
    return asset if valid_asset(asset) else None


def valid_asset(asset: str) -> bool:
    """Whether ``asset`` is an asset id (:data:`ASSET_RULE`)."""
    return len(asset) <= MAX_ASSET_CHARS and _ASSET_RE.fullmatch(asset) is not None


def parse_message(
    topic: str, payload: bytes, prefix: str, max_bytes: int = 65536, max_samples: int = 1000,
    ignored: frozenset[str] = frozenset(),
) -> Parsed:
    """Parse one MQTT message into samples and reject reasons; never raises (see module docs).
    ``ignored``: value names dropped whatever they hold (the bundle's ``ignored_columns``: a
    training file's text column, a run state "RUN", made the whole reading ``bad_values``)."""
    asset = None
    try:
        asset = asset_from_topic(topic, prefix)
        if asset is None:
            return Parsed(None, [], ["bad_asset"])
        return _parse_body(asset, payload, max_bytes, max_samples, ignored)
    except Exception:  # noqa: BLE001 - the loop must survive any input; a bug is counted, not fatal
        return Parsed(asset, [], ["parse_error"])


def _parse_body(asset: str, payload: bytes, max_bytes: int, max_samples: int,
                ignored: frozenset[str] = frozenset()) -> Parsed:
    if len(payload) > max_bytes:
        return Parsed(asset, [], ["too_large"])
    doc = _loads(payload)
    if doc is _INVALID:
        return Parsed(asset, [], ["invalid_json"])
    if type(doc) is not dict:
        return Parsed(asset, [], ["not_object"])
    if "samples" not in doc:
        sample, reason = _sample(doc, ignored)
        return Parsed(asset, [sample], []) if reason is None else Parsed(asset, [], [reason])
    items = doc["samples"]
    if type(items) is not list or not items:
        return Parsed(asset, [], ["bad_samples"])
    if len(items) > max_samples:
        return Parsed(asset, [], ["too_many_samples"])
    samples: list[Sample] = []
    rejects: list[str] = []
    for item in items:
        if type(item) is not dict:
            rejects.append("not_object")
            continue
        sample, reason = _sample(item, ignored)
        if reason is None:
            samples.append(sample)
        else:
            rejects.append(reason)
    return Parsed(asset, samples, rejects)


_INVALID = object()


def _orjson_limits_depth() -> bool:
    """orjson before 3.9.15 recurses without limit (CVE-2024-27454): deep input overflows the C stack."""
    try:
        return tuple(int(part) for part in orjson.__version__.split(".")[:3]) >= (3, 9, 15)
    except ValueError:
        return False


_ORJSON_SAFE = _orjson_limits_depth()


def _loads(payload: bytes) -> Any:
    """orjson, falling back to the stdlib for NaN/Infinity (which orjson refuses) and deep nesting.

    Senders such as Python's ``json.dumps`` write ``NaN`` for a broken sensor; reading it lets
    that one sample count as ``non_finite`` instead of the whole batch as ``invalid_json``.

    An orjson without a recursion limit would crash the whole process (a segmentation fault, not
    an exception) on ``[[[[...]]]]`` some tens of thousands deep, so with such a version a payload
    that could nest deeper than ``MAX_DEPTH`` (more opening brackets than that) goes to the stdlib
    parser, whose recursion limit raises instead. Readings have a few brackets per sample, so only
    batches of hundreds of samples take that slower path, and only with an old orjson.
    """
    if not _ORJSON_SAFE and len(payload) > MAX_DEPTH and payload.count(b"[") + payload.count(b"{") > MAX_DEPTH:
        return _stdlib_loads(payload)
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as err:
        if not (b"NaN" in payload or b"Infinity" in payload or "infinity" in str(err)):
            return _INVALID
    return _stdlib_loads(payload)


def _stdlib_loads(payload: bytes) -> Any:
    """The stdlib parser on UTF-8 only (as orjson); deeper than the recursion limit is invalid."""
    try:
        return json.loads(bytes(payload).decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return _INVALID


def _sample(obj: dict, ignored: frozenset[str] = frozenset()) -> tuple[Sample, None] | tuple[None, str]:
    ts = parse_ts(obj.get("ts"))
    if ts is None:
        return None, "bad_ts"
    if ts != ts:  # NaN marks a non-finite number given as ts
        return None, "non_finite"
    values = obj.get("values")
    if type(values) is not dict or not values:
        return None, "bad_values"
    convert = False
    for v in values.values():
        t = type(v)
        if t is float:
            if not -NO_DATA < v < NO_DATA:  # NaN, +-inf and no-data markers (NaN compares False)
                convert = True
        elif t is int or v is None:
            convert = True
        else:  # no number: the whole reading is bad, unless the name is one the model ignores
            return _without_ignored(ts, values, ignored)
    if convert:
        values = {k: _value(v) for k, v in values.items()}
    return Sample(ts, values), None


def _without_ignored(ts: float, values: dict, ignored: frozenset[str]) -> tuple[Sample, None] | tuple[None, str]:
    """A reading holding a value that is no number: ``bad_values``, unless every such value is under
    an ignored name (the bundle's ``ignored_columns``: a training file's text column, a run state
    "RUN"), which is dropped with the other ignored names. Off the hot path: a review measured the
    lookup per value at 5-8 % of a 100-sample message's parse."""
    kept = {k: v for k, v in values.items() if k not in ignored}
    if len(kept) == len(values) or not kept or any(type(v) not in (float, int) and v is not None
                                                   for v in kept.values()):
        return None, "bad_values"
    return Sample(ts, {k: _value(v) for k, v in kept.items()}), None


def _value(v: float | int | None) -> float:
    """A channel's value as a float; NaN (missing) for null, NaN, +-Infinity and a no-data marker
    (``NO_DATA`` or larger, ints included)."""
    if v is None or not -NO_DATA < v < NO_DATA:
        return NAN
    return float(v)


def parse_ts(value: object) -> float | None:
    """Epoch seconds from a number or an ISO 8601 string; None if unusable, NaN if non-finite.

    >>> parse_ts("2023-11-14T22:13:20Z"), parse_ts("2023-11-14T23:13:20+01:00"), parse_ts(1700000000)
    (1700000000.0, 1700000000.0, 1700000000.0)
    >>> parse_ts("2023-11-14T22:13:20"), parse_ts(True), parse_ts(12)
    (1700000000.0, None, None)
    """
    t = type(value)
    if t is float or t is int:
        if t is float and value - value != 0.0:  # type: ignore[operator]
            return math.nan
        return float(value) if TS_MIN <= value < TS_MAX else None  # type: ignore[operator,arg-type]
    if t is not str or not 10 < len(value) < 64:  # type: ignore[arg-type]
        return None
    text: str = value  # type: ignore[assignment]
    if text[10] not in "Tt ":  # a time is required: a bare date is too coarse to be a reading
        return None
    if text[-1] == "z" or text[10] == "t":  # RFC 3339 allows lower case; fromisoformat does not
        text = text.upper()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    ts = moment.timestamp()
    return ts if TS_MIN <= ts < TS_MAX else None
