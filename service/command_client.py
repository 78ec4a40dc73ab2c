"""The sending side of a command: publish one and wait for the daemon's answer.

What ``sensorguard maintenance|shelve|ack`` do through :func:`send_command`; the daemon's side
(check, carry out, answer, audit) is :mod:`sensorguard.service.command_handling`.
"""

from __future__ import annotations

import threading

import orjson

from sensorguard.service import mqtt
from sensorguard.service.command_messages import EXPIRY_GRACE_S, new_request_id
from sensorguard.service.config import Settings


def send_command(settings: Settings, verb: str, body: dict, timeout_s: float = 10.0) -> dict | None:
    """Publish one command and wait for its answer (``sensorguard maintenance|ack|shelve``): the
    reply dict, or None when no daemon answered within ``timeout_s`` (none serves the asset, or
    the broker refused: its ACL)."""
    request_id = body.get("request_id") or new_request_id()
    reply_to = f"{settings.output_prefix}/responses/{request_id}"
    body = {**body, "request_id": request_id, "reply_to": reply_to}
    got: dict = {}
    answered = threading.Event()

    def on_message(client, userdata, message) -> None:
        try:
            reply = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            return
        if isinstance(reply, dict):  # (anything else on the reply topic is not the daemon's answer)
            got.update(reply)
            answered.set()

    refused: list[str] = []

    def on_publish(client, userdata, mid, reason_code, properties) -> None:  # MQTT 5: the broker's answer
        if reason_code is not None and getattr(reason_code, "is_failure", False):
            refused.append(mqtt.reason_text(reason_code))
            answered.set()  # (no daemon will answer: the command never reached one)

    with mqtt.listening(settings, reply_to, on_message, timeout_s) as client:
        if client is None:
            raise ConnectionError(f"could not connect to {settings.redacted()['broker']}")
        client.on_publish = on_publish
        info = mqtt.publish_json(client, f"{settings.output_prefix}/commands/{verb}", body, qos=1,
                                 properties=mqtt.expiry(settings, timeout_s + EXPIRY_GRACE_S))
        info.wait_for_publish(timeout_s)
        done = answered.wait(timeout_s)
        if refused:  # known at once: it waited the whole --timeout, then said "no answer"
            raise PermissionError(f"the broker refused the command ({refused[0]}): check its access rules for "
                                  f"{settings.output_prefix}/commands/#")
        return dict(got) if done else None
