"""The command messages people send to answer alerts: their format, parsing and checks.

A command is a JSON object on ``<output_prefix>/commands/<verb>`` (``sensorguard maintenance``,
``shelve`` and ``ack`` publish them; any MQTT client may, where the broker's ACL allows it)::

    maintenance  {"asset", "action": "start" | "end", "for_s": <seconds>?, "until": <epoch s>?, "reason"?}
    shelve       {"asset", "for_s": <seconds, 0 unshelves>, "reason"?}
    ack          {"alert_id", "false_alarm": <bool>?, "note"?}

each with optional ``"request_id"`` (letters, digits, ``-``, ``_``), ``"reply_to"`` (a topic under
``<output_prefix>/responses/``, the default being ``<output_prefix>/responses/<request_id>``: the
daemon never publishes a reply elsewhere, so a command cannot make it write alerts or states) and
``"by"`` (who) and ``"expires"`` (epoch seconds; with a request id it makes the command one send,
never carried out twice: :attr:`Command.send`; an MQTT 5 message expiry on the PUBLISH, when there
is one, decides instead whether it came too late, ``expires`` bounding it by minutes only:
:func:`expiry_refusal`). The instance serving
the asset (its partitions) answers ``{"request_id", "accepted", "message", "instance"}`` on the
reply topic (one carried out also ``"saved"``: false when its write of ``controls.json`` failed)
and, when accepted, audits the command on ``<output_prefix>/events`` and in
``<state_dir>/audit.jsonl``; other instances stay silent (a command too malformed to name its
asset is answered by every instance that reads it). A bad command is rejected with a reason,
counted and logged; it never stops the daemon. A retained command is ignored (it would be
carried out again at every reconnect).

>>> c = parse_command("shelve", b'{"asset": "pump-7", "for_s": 3600}', now=0.0)
>>> c.verb, c.asset, c.until
('shelve', 'pump-7', 3600.0)
>>> parse_command("shelve", b'{"asset": "pump-7", "for_s": 1e9}', now=0.0)
'for_s must be from 0 to 604800 seconds'
"""

from __future__ import annotations

import math
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from sensorguard.service.payload import MAX_ASSET_CHARS, MAX_ASSET_LEVELS, TS_MAX, asset_from_topic

VERBS = ("maintenance", "shelve", "ack")
REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{0,64}")  # (fullmatch: "$" let "abc\n" through, a mutation audit)
MAX_COMMAND_BYTES = 4096
MAX_SHELVE_S = 7 * 86400.0  # a shelved alert must come back by itself
MAX_TEXT = 500  # characters of a reason or note
ASSET_IDS = (f"1 to {MAX_ASSET_LEVELS} levels of 1-64 letters, digits, '.', '_' or '-' (not '.' or '..') joined by "
             f"'/', at most {MAX_ASSET_CHARS} characters")
EXPIRY_GRACE_S = 30.0  # clock difference between the sender and the daemon tolerated on "expires"
EXPIRY_BACKSTOP_S = 300.0  # ... with an MQTT message expiry, which decides: "expires" bounds the wait here only


@dataclass(frozen=True)
class Command:
    verb: str
    asset: str
    action: str = ""  # maintenance: start | end
    until: float | None = None  # maintenance (None: until ended), shelve: when it ends
    alert_id: str = ""
    false_alarm: bool = False
    reason: str = ""
    note: str = ""
    by: str = ""
    request_id: str = ""
    reply_to: str = ""
    expires: float | None = None  # when the sender stops waiting (the CLI's commands carry it)

    @property
    def send(self) -> str:
        """This send's identity, ``request_id@expires`` ("" without both): a session revived by a
        layout change delivers a command another run carried out already, without MQTT's DUP flag.
        Both are needed: a dashboard's fixed request id without ``expires`` may be sent again."""
        return f"{self.request_id}@{self.expires!r}" if self.request_id and self.expires is not None else ""


def parse_command(verb: str, payload: bytes, now: float, check_expiry: bool = True) -> Command | str:
    """A command, or why it is rejected (one line). ``check_expiry=False``: an expired one is returned
    too, for the caller to ask :func:`expiry_refusal` once it knows whether it was carried out."""
    if verb not in VERBS:
        return f"unknown command {verb!r} (one of {', '.join(VERBS)})"
    if len(payload) > MAX_COMMAND_BYTES:
        return f"larger than {MAX_COMMAND_BYTES} bytes"
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return "not JSON"
    if not isinstance(body, dict):
        return "not a JSON object"
    text = {k: body.get(k, "") for k in ("reason", "note", "by", "request_id", "reply_to", "asset", "alert_id",
                                         "action")}
    if not all(isinstance(v, str) and len(v) <= MAX_TEXT for v in text.values()):
        return "text fields must be strings of at most 500 characters"
    common: dict[str, Any] = {k: text[k] for k in ("reason", "note", "by", "request_id", "reply_to")}
    # the sender stops waiting then: a command queued past it (the daemon was down) was reported as
    # failed, so carrying it out later surprises everyone
    expires = common["expires"] = body.get("expires")
    if expires is not None:
        if (isinstance(expires, bool) or not isinstance(expires, int | float) or not math.isfinite(expires)
                or expires >= TS_MAX):  # (milliseconds never expired)
            return "expires must be a time in epoch seconds, before 2200"
        if check_expiry and (why := expiry_refusal(expires, now)) is not None:
            return why
    if not REQUEST_ID.fullmatch(text["request_id"]):
        return "request_id must be at most 64 letters, digits, '-' or '_'"
    if text["reply_to"] and not safe_topic(text["reply_to"]):
        return "reply_to must be a topic, not a filter"
    if verb == "ack":
        alert_id, false_alarm = text["alert_id"], body.get("false_alarm", False)
        asset = alert_asset(alert_id)
        # (one message for both read as if false_alarm were wrong; "p1@abc" said "unknown or too old": walks)
        if not asset or alert_ms(alert_id) is None:
            return f"alert_id {alert_id!r} is not an alert id (<asset>@<ms>, as the alert event names it)"
        if not isinstance(false_alarm, bool):
            return "false_alarm must be true or false"
        return Command("ack", asset, alert_id=alert_id, false_alarm=false_alarm, **common)
    asset = text["asset"]
    if asset_from_topic(f"x/{asset}/readings", "x") != asset:
        return f"invalid asset id {asset!r}: {ASSET_IDS}"  # (it said no more: a walk)
    if verb == "shelve":
        seconds = body.get("for_s")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= MAX_SHELVE_S:
            return f"for_s must be from 0 to {MAX_SHELVE_S:.0f} seconds"
        return Command("shelve", asset, until=now + float(seconds), **common)
    action, until, seconds = text["action"], body.get("until"), body.get("for_s")
    if action not in ("start", "end"):
        return "maintenance needs action start or end"
    # for_s, the CLI's: how long, by the daemon's clock (an operator's PC running behind sent an end in its own
    # clock's time, minutes off: a walk). It sends until too, for a daemon of a version before for_s, which
    # would otherwise hold the asset until ended: for_s decides here (an end's is not read)
    if seconds is not None and action == "start":
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds < TS_MAX - now:
            return "for_s must be a number of seconds > 0, ending before 2200"
        until = now + float(seconds)
    if until is not None and (isinstance(until, bool) or not isinstance(until, int | float)
                              or not math.isfinite(until) or not now < until < TS_MAX):
        return "until must be a future time in epoch seconds, before 2200"  # milliseconds sent as seconds
    return Command("maintenance", asset, action=action, until=None if until is None else float(until), **common)


def alert_asset(alert_id: str) -> str:
    """The asset an ``alert_id`` (``<asset>@<ms>``) names; '' when it names none."""
    return alert_id.rpartition("@")[0]


def alert_ms(alert_id: str) -> int | None:
    """The raise time (ms) an ``alert_id`` ends with; None when its part after the last '@' is not
    ASCII digits."""
    ms = alert_id.rpartition("@")[2]
    return int(ms) if ms.isascii() and ms.isdigit() else None


def expiry_refusal(expires: float | None, now: float, broker: float | None = None) -> str | None:
    """Why a command sent until ``expires`` (the sender's clock) is refused at ``now`` (None: it is
    not expired). ``broker``: when the broker's copy expires on this host's clock (MQTT 5's message
    expiry, :func:`broker_expiry`), which then decides, with no grace; the sender's clock bounds it
    only by ``EXPIRY_BACKSTOP_S``. An operator's PC 60 s behind the daemon's host had every command
    refused as expired, and again when sent again (a walk)."""
    if broker is not None:
        if now > broker:
            return (f"expired {now - broker:.0f} s ago (its MQTT message expiry passed while it waited here): send "
                    "it again")
        # the broker's count stops at delivery: one held unread here (a full ingest stops reading) came
        # "in time" minutes late (a review); the sender's own expiry still bounds that, by a wide margin
        if expires is None or now <= expires + EXPIRY_BACKSTOP_S:
            return None
        return (f"expired {now - expires:.0f} s ago by this daemon's clock (it waited here unread, or the sender's "
                f"clock is over {EXPIRY_BACKSTOP_S / 60:.0f} minutes behind this host's): send it again")
    if expires is None or now <= expires + EXPIRY_GRACE_S:
        return None
    return (f"expired {now - expires:.0f} s ago by this daemon's clock (the daemon was not there when it was sent, "
            "and the sender gave up; or the sender's clock is behind this host's: set both right, or send with "
            "an MQTT 5 message expiry, as sensorguard's commands do): send it again")


def broker_expiry(message: Any, now: float, clock: Any = None) -> float | None:
    """When the broker's copy of a received ``message`` expires, at wall time ``now`` on this host's
    clock: MQTT 5's message expiry interval, counted by the broker and passed on as what is left at
    delivery (paho stamps the arrival with ``time.monotonic``, ``clock`` here). None without one."""
    interval = getattr(getattr(message, "properties", None), "MessageExpiryInterval", None)
    arrived = getattr(message, "timestamp", None)
    if not isinstance(interval, int) or not isinstance(arrived, float) or arrived <= 0:
        return None
    return now - ((clock or time.monotonic)() - arrived) + interval


def safe_topic(topic: str) -> bool:
    """A topic the daemon may publish on: no wildcard, no control character, not empty."""
    return bool(topic) and not any(c in topic for c in "+#") and all(c >= " " and c != "\x7f" for c in topic)


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]
