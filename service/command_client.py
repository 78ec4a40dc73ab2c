"""The sending side of a command: publish one and wait for the daemon's answer.

What ``sensorguard maintenance|shelve|ack`` do through :func:`send_command`; the daemon's side
(check, carry out, answer, audit) is :mod:`sensorguard.service.command_handling`.
"""

from __future__ import annotations

import queue
import time

import orjson
import paho.mqtt.client as paho

from sensorguard.service import mqtt
from sensorguard.service.command_messages import EXPIRY_GRACE_S, new_request_id
from sensorguard.service.config import Settings

RESEND_S = 2.0  # no answer by then: sent again (the same send: carried out once, service.commands.carried_out)
RETRY_PAUSE_S = 0.5  # an answer "try again" (a partition moving, a full queue): sent again after this
ANSWER_TIME_S = 0.5  # no copy goes out later than this before the timeout: its answer would come too late


def send_command(settings: Settings, verb: str, body: dict, timeout_s: float = 10.0) -> dict | None:
    """Publish one command and wait for its answer (``sensorguard maintenance|ack|shelve``): the
    reply dict, or None when no daemon answered within ``timeout_s`` (none serves the asset, or
    the broker refused: its ACL).

    Until ``timeout_s`` the same send (its ``request_id`` and ``expires``) goes out again every
    ``RESEND_S`` without an answer, and after an answer that says ``retry`` (the asset's
    partition being taken over, a full command queue): a daemon carries a send out once, and in
    cluster mode one that came while the asset moved between workers was carried out by none of
    them and left the operator to send it again. When time runs out, the last answer "try again"
    is returned, with ``"unanswered"``: how many copies had no answer (queued behind a slow one,
    lost in a broker outage, come between two owners), which may still be carried out, so not
    "rejected": sent again, it was carried out twice (a review). None: no answer at all."""
    request_id = body.get("request_id") or new_request_id()
    reply_to = f"{settings.output_prefix}/responses/{request_id}"
    body = {**body, "request_id": request_id, "reply_to": reply_to}
    replies: queue.SimpleQueue[dict | str] = queue.SimpleQueue()  # an answer, or why the broker refused it

    def on_message(client, userdata, message) -> None:
        try:
            reply = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            return
        if isinstance(reply, dict):  # (anything else on the reply topic is not the daemon's answer)
            replies.put(reply)

    def on_publish(client, userdata, mid, reason_code, properties) -> None:  # MQTT 5: the broker's answer
        if reason_code is not None and getattr(reason_code, "is_failure", False):
            replies.put(mqtt.reason_text(reason_code))  # (no daemon will answer: it never reached one)

    deadline = time.monotonic() + timeout_s
    with mqtt.listening(settings, reply_to, on_message, timeout_s) as client:
        if client is None:
            raise ConnectionError(f"could not connect to {settings.redacted()['broker']}")
        client.on_publish = on_publish
        last: dict | None = None
        sent = refused_for_now = 0
        while (left := deadline - time.monotonic()) > 0:
            try:  # (the broker gone meanwhile: paho raises; the client reconnects and subscribes again)
                if not sent or left > ANSWER_TIME_S:
                    info = mqtt.publish_json(client, f"{settings.output_prefix}/commands/{verb}", body, qos=1,
                                             properties=mqtt.expiry(settings, left + EXPIRY_GRACE_S))
                    # (one queued while the broker is away goes out at the reconnect: it may be carried out, so
                    # counted, or "not carried out" was said of it; a review)
                    sent += info.rc in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN)
                    info.wait_for_publish(left)
            except (RuntimeError, ValueError):
                pass
            resend_at = min(deadline, time.monotonic() + RESEND_S)
            while (wait := resend_at - time.monotonic()) > 0:
                try:
                    reply = replies.get(timeout=wait)
                except queue.Empty:
                    break
                if isinstance(reply, str):  # known at once: it waited the whole --timeout, then said "no answer"
                    raise PermissionError(f"the broker refused the command ({reply}): check its access rules for "
                                          f"{settings.output_prefix}/commands/#")
                if not reply.get("retry"):  # (a daemon before the field sends none: its answer is final)
                    return reply
                last, refused_for_now = reply, refused_for_now + 1  # "try again": sent again after a pause
                resend_at = min(resend_at, time.monotonic() + RETRY_PAUSE_S)
        if last is not None and refused_for_now < sent:  # refused for now, and a copy still unanswered
            last["unanswered"] = sent - refused_for_now
        return last
