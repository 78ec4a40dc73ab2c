"""What the daemon does with a command message: check it, carry it out, answer, audit.

Runs on a thread of its own (:meth:`CommandHandler.submit` queues a message, at most
``COMMANDS_QUEUED``; beyond, it is refused as busy, answered and counted): with ``state_dir`` each
command rewrites and syncs ``controls.json``, and a flood of them on paho's network thread stopped
the readings for minutes, the broker's keep-alive with them (a walk). The message is parsed
(:func:`~sensorguard.service.commands.parse_command`), skipped when its asset is outside this
instance's partitions (the instance that serves the asset answers), applied to the
:class:`~sensorguard.service.commands.AlarmControls`, answered on its reply topic, audited on
``<output_prefix>/events`` and in ``<state_dir>/audit.jsonl``, and acknowledged to the broker
last (QoS 1: a crash before that gets the command again). Maintenance holds the asset's readings
back from the recorder until it ends.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict, deque
from typing import Any

import orjson

from sensorguard.service import mqtt
from sensorguard.service.audit_log import audit, audit_entry
from sensorguard.service.command_messages import (
    MAX_TEXT,
    REQUEST_ID,
    VERBS,
    Command,
    alert_asset,
    broker_expiry,
    expiry_refusal,
    parse_command,
    safe_topic,
)
from sensorguard.service.commands import AlarmControls
from sensorguard.service.config import Settings
from sensorguard.service.instances import serves_asset
from sensorguard.service.logs import RateLimiter
from sensorguard.service.metrics import Metrics
from sensorguard.service.payload import valid_asset
from sensorguard.service.publisher import Publisher
from sensorguard.service.state_writes import CONTROLS

log = logging.getLogger(__name__)

NO_ASSET = "-"  # cluster mode: the worker serving this id's partition answers a refused command naming no asset
ANSWERED_KEPT = 4096  # accepted commands whose answer is kept, so a redelivery is answered, not re-applied
# commands waiting for the command thread; beyond, refused as busy (answered, counted). Each waits
# unacknowledged, in the broker's window of messages in flight to this client (readings share it:
# Mosquitto's default is 20, deploy/mosquitto's 1,000), so a flood holds at most this many of it
COMMANDS_QUEUED = 100


# (request_id, reply_to, accepted, message, saved, retry): what _reply sends, kept for a redelivery
Answer = tuple[str, str, bool, str, bool | None, bool]


class CommandHandler:
    """Handles ``<output_prefix>/commands/<verb>`` messages for one daemon.

    on_change: called with ``(asset, command)`` after a command was accepted, so the daemon can
    hold or release the asset's recording, publish its state and file an acknowledged alert's
    readings; a text it returns is added to the reply. owns: whether this instance serves an
    asset (default: its partitions' topic filters match the asset's readings topic); taking_over:
    whether its partition is being taken over here (cluster mode: the command is refused with a
    retry hint instead of going unanswered).
    """

    def __init__(self, settings: Settings, controls: AlarmControls, publisher: Publisher, metrics: Metrics,
                 on_change: Any = None, owns: Any = None, taking_over: Any = None) -> None:
        self.settings = settings
        if owns is not None:  # cluster mode: the worker whose partition holds the asset now
            self.owns = owns
        self._clustered = owns is not None
        # serve --workers: one worker answers a command naming no asset (each answered and counted it: a walk)
        self.answers_unnamed = True
        self.taking_over = taking_over or (lambda asset: False)  # cluster mode: its partition is being taken over here
        self.controls = controls
        self.publisher = publisher
        self.metrics = metrics
        self.on_change = on_change or (lambda asset, command: None)
        self.prefix = f"{settings.output_prefix}/commands/"
        self.responses = f"{settings.output_prefix}/responses/"
        self._limiter = RateLimiter(10.0)
        # (session, packet id, topic, payload digest) of a command judged -> (request id, reply_to, accepted,
        # answer, saved): QoS 1 delivers a command again (DUP set) when its ack was lost (a reconnect);
        # applied again, a shelving or a maintenance with a duration restarted from the redelivery's time
        # and the audit logged it twice (found by review). Only a redelivery of that very delivery (its
        # session's packet id, the same bytes) is answered from here: one matched on its bytes alone
        # (a start sent again after an end, dropped from the queue at a reconnect) was never carried out
        self._answered: OrderedDict[tuple[int, int, str, bytes], Answer] = (
            OrderedDict())
        # (client, message, session) for the command thread (submit); session: the count of new broker
        # sessions when it came, as its packet id belongs to that session (a resumed one keeps them)
        self._queue: deque[tuple[Any, Any, int, str]] = deque()  # ... and its send (Command.send)
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._sessions = 0
        self._paused = False  # disconnected: what is carried out now could not be acknowledged

    def submit(self, client: Any, message: Any) -> None:
        """Queue a command message for the command thread (started with the first), from the network
        thread: only one this instance answers (a flood for another's assets filled its queue and
        its own were refused as busy: a walk); with ``COMMANDS_QUEUED`` waiting it is refused as busy
        instead. After :meth:`stop` it is left unacknowledged: the broker's session keeps it. A copy
        of a send already waiting here is dropped (the waiting one answers): the CLI sends a command
        again every 2 s until it is answered, and each copy took a place in the queue (a review)."""
        if not self._answers(message):  # the instance serving its asset answers (and counts) it
            _ack(client, message)
            return
        parsed = parse_command(message.topic[len(self.prefix):], message.payload, time.time(), check_expiry=False)
        send = parsed.send if isinstance(parsed, Command) else ""  # (a copy is known by it before its turn)
        with self._ready:
            if self._stopping:
                return
            waiting = bool(send) and any(queued[3] == send for queued in self._queue)
            if not waiting and len(self._queue) < COMMANDS_QUEUED:
                self._queue.append((client, message, self._sessions, send))
                if self._thread is None:
                    self._thread = threading.Thread(target=self._work, name="sensorguard-commands", daemon=True)
                    self._thread.start()
                self._ready.notify()
                return
        if waiting:
            self.metrics.commands.labels(self._verb(message), "duplicate").inc()
            _ack(client, message)
            return
        try:  # (the network thread: a refusal is cheap, nothing is written)
            self._refuse_busy(client, message)
        finally:
            _ack(client, message)

    def connected(self, resumed: bool) -> None:
        """A (re)connect (the network thread, before any message of the new connection): the commands
        still waiting came on the old one. A resumed session delivers them again (carried out from the
        queue as well, a thousand were carried out twice: a walk), so they go; a new session does
        not, so they are carried out, but not acknowledged: their packet ids were the old session's
        (the one in hand is acknowledged in a resumed session, whose packet ids stand)."""
        with self._ready:
            self._sessions += not resumed
            left = len(self._queue)
            if resumed:
                self._queue.clear()
            self._paused = False
            self._ready.notify()
        if left and resumed:
            log.info("%d command(s) waiting at the reconnect are left to the broker, which delivers them again",
                     left)

    def disconnected(self) -> None:
        """The connection dropped: nothing more is carried out until :meth:`connected` says what the
        waiting commands are to the new one (carried out meanwhile, their acknowledgements were lost
        and the resumed session delivered them again: 897 of 1,000 carried out twice, a walk)."""
        with self._ready:
            self._paused = True

    def _refuse_busy(self, client: Any, message: Any) -> None:
        if not self._answers(message):
            return
        self.metrics.commands.labels(self._verb(message), "retry").inc()
        if (count := self._limiter.hit("busy")) is not None:
            log.warning("%d command(s) refused: %d are waiting to be carried out (send them again later)", count,
                        COMMANDS_QUEUED)
        self._reply(client, _field(message.payload, "request_id"), _field(message.payload, "reply_to"), False,
                    f"busy: {COMMANDS_QUEUED} commands are waiting to be carried out; send it again later", retry=True)

    def _work(self) -> None:
        while True:
            with self._ready:
                while (not self._queue or self._paused) and not self._stopping:
                    self._ready.wait()
                if self._stopping:
                    return
                client, message, session, _ = self._queue.popleft()
            self._carry_out(client, message, queued=True)
            # (held: connected() cannot count a new session between the check and the ack; an ack made after
            # paho sent its CONNECT and before the CONNACK still goes out, and a broker ignores an unknown id)
            with self._ready:
                if session == self._sessions:  # (else an old session's packet id)
                    _ack(client, message)

    def stop(self, timeout: float = 5.0) -> None:
        """Carry out no more commands (the one in hand is finished, within ``timeout``); those still
        queued are not acknowledged, so the broker delivers them again to the next run."""
        with self._ready:
            self._stopping = True
            left = len(self._queue)
            self._queue.clear()
            self._ready.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        if left:
            log.info("%d command(s) not carried out before stopping: the broker delivers them again", left)

    def filter(self) -> str:
        return self.prefix + "+"

    def owns(self, asset: str) -> bool:
        """Whether this instance serves ``asset`` (one of its partitions matches its readings topic)."""
        return serves_asset(self.settings, asset)

    def _answers(self, message: Any) -> bool:
        """Whether this instance carries out, or refuses, a command: the one serving the asset it
        names (:func:`_asset_named`), and in cluster mode, for one naming none, the worker serving
        ``NO_ASSET``'s partition, under ``serve --workers`` the first worker (:attr:`answers_unnamed`).
        An unknown verb was answered, and counted, by every worker of a cluster (a walk); the others
        acknowledge it and leave it (:meth:`submit`)."""
        asset = _asset_named(message)
        if valid_asset(asset):  # (its new owner, while taking it over, answers too: a review)
            return self.owns(asset) or self.taking_over(asset)
        return self.owns(NO_ASSET) if self._clustered else self.answers_unnamed

    def handle(self, client: Any, message: Any) -> None:
        """One command message, carried out here and acknowledged: never raises (a bad command is
        answered, counted and logged)."""
        try:
            self._carry_out(client, message)
        finally:
            _ack(client, message)

    def _carry_out(self, client: Any, message: Any, queued: bool = False) -> None:
        try:
            self._handle(client, message, queued)
        except Exception:  # noqa: BLE001 - a bug here must not stop the command thread
            log.exception("handling a command on %s failed", getattr(message, "topic", "?"))
            self.metrics.commands.labels("?", "error").inc()

    def _verb(self, message: Any) -> str:
        """The verb a command's topic names, as counted: ``?`` for one not known."""
        verb = message.topic[len(self.prefix):]
        return verb if verb in VERBS else "?"

    def _handle(self, client: Any, message: Any, queued: bool = False) -> None:
        verb = message.topic[len(self.prefix):]
        known = self._verb(message)
        if getattr(message, "retain", False):  # it would be carried out again at every reconnect
            self.metrics.commands.labels(known, "ignored").inc()
            if self._limiter.hit("retained") is not None:
                log.warning("retained command on %s ignored: publish commands without retain", message.topic)
            return
        key = (self._sessions, getattr(message, "mid", 0), message.topic,
               hashlib.blake2b(bytes(message.payload), digest_size=16).digest())
        # a redelivery carries MQTT's DUP flag: the same bytes sent again by a client (a dashboard's
        # fixed request id: start, end, start) are a new command (found by review)
        if getattr(message, "dup", False) and (answered := self._answered.get(key)) is not None:
            self.metrics.commands.labels(known, "duplicate").inc()
            log.info("command %s %s received again (a redelivery): answered as before, not carried out again",
                     verb, answered[0] or "(no request id)", extra={"event": "command"})
            self._reply(client, *answered)
            return
        now = time.time()
        parsed = parse_command(verb, message.payload, now, check_expiry=False)  # (expiry: after carried_out)
        if isinstance(parsed, Command) and parsed.reply_to and not parsed.reply_to.startswith(self.responses):
            parsed = f"reply_to must be a topic under {self.responses}"
        if isinstance(parsed, str):
            if not self._answers(message):
                return  # another instance answers it (and counts it): one reply, one count
            self.metrics.commands.labels(known, "rejected").inc()
            if self._limiter.hit("rejected") is not None:
                log.warning("command on %s rejected: %s", message.topic, parsed)
            self._reply(client, _field(message.payload, "request_id"), _field(message.payload, "reply_to"), False,
                        parsed)
            return
        if not self.owns(parsed.asset):
            if self.taking_over(parsed.asset):  # nobody serves it for these seconds: say so, not nothing
                self.metrics.commands.labels(parsed.verb, "retry").inc()
                answer = (parsed.request_id, parsed.reply_to, False, f"{parsed.asset} is being taken over by "
                          f"{self.settings.instance_name}: try again in a few seconds", None, True)
                self._remember(key, answer)  # (its copy, judged again once taken over, was carried out: a review)
                self._reply(client, *answer)
            elif queued:  # ours when it came, handed on while it waited: its new owner never got it (a walk)
                self.metrics.commands.labels(parsed.verb, "retry").inc()
                self._reply(client, parsed.request_id, parsed.reply_to, False,
                            f"{parsed.asset} was handed to another instance while this command waited here: "
                            "send it again", retry=True)
            return  # the instance serving the asset answers
        if self.controls.carried_out(parsed):  # by another run: a session revived by a layout change kept it
            self.metrics.commands.labels(parsed.verb, "duplicate").inc()
            log.info("command %s %s was carried out already (another run took it): not again", parsed.verb,
                     parsed.request_id, extra={"asset": parsed.asset, "event": "command"})
            self._reply(client, parsed.request_id, parsed.reply_to, True,
                        f"carried out already (request {parsed.request_id}): not again")
            return
        # after carried_out: a revived session's copy of a send carried out long ago was refused as
        # expired, "send it again", which a maintenance start or end must not be (a walk)
        if (expired := expiry_refusal(parsed.expires, now, broker_expiry(message, now))) is not None:
            self.metrics.commands.labels(parsed.verb, "rejected").inc()
            if self._limiter.hit("rejected") is not None:
                log.warning("command on %s rejected: %s", message.topic, expired)
            self._reply(client, parsed.request_id, parsed.reply_to, False, expired)
            return
        entry = audit_entry(parsed, now, self.settings.instance_name)  # before applying: nothing half done
        # saved: whether controls.json holds the change, worked out once, from this command's own
        # save: the text and the answer's "saved" (also a redelivery's, from _answered) say the same
        accepted, text, saved = self.controls.apply(parsed, now)
        self.metrics.commands.labels(parsed.verb, "accepted" if accepted else "rejected").inc()
        log.info("command %s: %s (%s)", parsed.verb, text, "accepted" if accepted else "rejected",
                 extra={"asset": parsed.asset, "event": "command"})
        if accepted and parsed.verb == "ack":
            known = self.controls.acked(parsed.alert_id) or {}
            if known.get("acked_at") == now:  # the first: a repeat, a retry or a changed verdict is no new answer
                self.metrics.acknowledged.labels("true" if parsed.false_alarm else "false").inc()
                if isinstance(known.get("raised_at"), int | float):
                    self.metrics.ack_seconds.observe(max(0.0, now - known["raised_at"]))
        if accepted and not saved:  # in force, but a restart would lose it: said, not only logged
            where = ("the cluster's state bucket" if self.settings.cluster else
                     f"{self.settings.state_dir}/{CONTROLS}")
            text = (f"{text}; applied but NOT SAVED: writing {where} failed (the daemon's log says why), so a "
                    "restart loses it unless a later write works")
        if accepted:
            audit(self.settings.state_dir, entry, self.controls.writes)
            self.publisher.daemon_event(entry)
            if said := self.on_change(parsed.asset, parsed):
                text = f"{text}; {said}"
        # (without a request id too: its ack lost in the instant before a drop was seen, the copy the resumed
        # session delivered again was carried out again: a walk)
        answer = (parsed.request_id, parsed.reply_to, accepted, text, saved if accepted else None, False)
        self._remember(key, answer)
        self._reply(client, *answer)

    def _remember(self, key: tuple[int, int, str, bytes], answer: Answer) -> None:
        """Keep a judged command's answer for its redelivery (the last ``ANSWERED_KEPT``)."""
        self._answered[key] = answer
        while len(self._answered) > ANSWERED_KEPT:
            self._answered.popitem(last=False)

    def _reply(self, client: Any, request_id: str, reply_to: str, accepted: bool, text: str,
               saved: bool | None = None, retry: bool = False) -> None:
        """Answer on ``reply_to`` (under the responses prefix) or ``responses/<request_id>``; a
        failure to answer is logged and changes nothing already done. ``saved``: whether the change
        this answer is about is in ``controls.json`` (None: no field, the answer changed nothing).
        The caller's, never read again here: read at reply time, a redelivery's cached text said
        "NOT SAVED" beside a fresh ``saved: true``, and "carried out already" got ``saved: false``
        when controls.json failed for another command (found by review). ``retry``: refused for
        now only (a partition being taken over or handed on, a full queue): ``sensorguard``'s
        commands send the same send again (:func:`~sensorguard.service.command_client.send_command`)."""
        if reply_to and not (reply_to.startswith(self.responses) and safe_topic(reply_to)):
            reply_to = ""
        if not REQUEST_ID.fullmatch(request_id):
            request_id = ""
        if not (reply_to or request_id):
            return
        body: dict[str, Any] = {"request_id": request_id, "accepted": accepted, "message": text,
                                "instance": self.settings.instance_name}
        if saved is not None:  # (added after the others: a client that knows only those reads the message)
            body["saved"] = saved  # False: in force, not in controls.json (lost at a restart)
            body["store"] = "state_bucket" if self.settings.cluster else "state_dir"  # where: the CLI's advice
        if retry:
            body["retry"] = True
        try:
            mqtt.publish_json(client, reply_to or self.responses + request_id, body, qos=1)
        except (ValueError, RuntimeError) as exc:
            log.warning("answering a command failed: %s", exc)


def _ack(client: Any, message: Any) -> None:
    """Acknowledge a QoS 1 or 2 message to the broker (QoS 0 has nothing to acknowledge)."""
    if getattr(message, "qos", 0) > 0:
        client.ack(message.mid, message.qos)


def _asset_named(message: Any) -> str:
    """The asset a command names, as :func:`parse_command` reads it: an ``ack``'s in its ``alert_id``
    (``<asset>@<ms>``), the others' ``asset``. Read from ``asset`` alone, every instance queued an
    ack, and those not serving its asset refused it as handed on ("send it again") beside the real
    answer: half the acks counted rejected (a walk)."""
    if str(getattr(message, "topic", "")).endswith("/ack"):
        return alert_asset(_field(message.payload, "alert_id"))
    return _field(message.payload, "asset")


def _field(payload: bytes, key: str) -> str:
    """A text field of a payload that was rejected (for the reply; checked again there), '' when
    there is none."""
    try:
        value = orjson.loads(payload).get(key, "")
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    return value if isinstance(value, str) and len(value) <= MAX_TEXT else ""  # (200: a long asset's ack id
    # was read as none, and every instance refused it: a review)
