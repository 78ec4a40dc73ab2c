"""Edges of the command handler that no test pinned (found by mutating service/command_handling.py):
who answers a command, what its answer says, and what is acknowledged."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

from sensorguard.service import command_handling
from sensorguard.service.command_handling import NO_ASSET, CommandHandler, _field
from sensorguard.service.command_messages import MAX_TEXT
from tests.test_daemon import make, value


def command(verb: str, body: dict, mid: int = 1, qos: int = 1, dup: bool = False) -> SimpleNamespace:
    return SimpleNamespace(topic=f"sensorguard/commands/{verb}", payload=json.dumps(body).encode(), qos=qos,
                           mid=mid, retain=False, dup=dup)


def answers(client, request_id: str) -> list[dict]:
    return [json.loads(p) for t, p, _ in client.published if t == f"sensorguard/responses/{request_id}"]


def test_in_a_cluster_only_the_worker_serving_no_assets_partition_answers_a_command_naming_none(tiny_bundle):
    """Cluster mode: a command naming no asset (an unknown verb, a missing asset) is answered by the
    worker whose partition holds ``NO_ASSET``, not by every worker (one refusal, one count)."""
    daemon, client = make(tiny_bundle)
    others = CommandHandler(daemon.settings, daemon.controls, daemon.publisher, daemon.metrics,
                            owns=lambda asset: False)
    others.handle(client, command("frobnicate", {"request_id": "r1"}))
    assert answers(client, "r1") == [] and client.acks  # left to its worker, acknowledged here
    serving = CommandHandler(daemon.settings, daemon.controls, daemon.publisher, daemon.metrics,
                             owns=lambda asset: asset == NO_ASSET)
    serving.handle(client, command("frobnicate", {"request_id": "r2"}))
    [answer] = answers(client, "r2")
    assert answer["accepted"] is False


def test_a_single_daemon_answers_a_command_naming_no_asset(tiny_bundle):
    """Not clustered, the daemon is the one that answers a command naming no asset (an unknown verb,
    a shelve without its asset): refused with the reason, counted once, acknowledged."""
    daemon, client = make(tiny_bundle)
    daemon.commands.handle(client, command("frobnicate", {"request_id": "r1"}, mid=5))
    daemon.commands.handle(client, command("shelve", {"for_s": 60, "request_id": "r2"}, mid=6))
    [unknown], [unnamed] = answers(client, "r1"), answers(client, "r2")
    assert unknown["accepted"] is False and unnamed["accepted"] is False and "asset" in unnamed["message"]
    assert value(daemon, "sensorguard_commands_total", command="?", result="rejected") == 1
    assert value(daemon, "sensorguard_commands_total", command="shelve", result="rejected") == 1
    assert [mid for mid, _, _ in client.acks] == [5, 6]


def test_after_stop_commands_are_left_to_the_broker_not_refused_as_busy(tiny_bundle, monkeypatch):
    """Stopped, the handler takes no command: each is left unacknowledged (the broker delivers it
    to the next run), none is queued where it would fill the queue and be refused as busy."""
    monkeypatch.setattr(command_handling, "COMMANDS_QUEUED", 1)
    daemon, client = make(tiny_bundle)
    daemon.commands.stop()
    for k in range(3):
        daemon.commands.submit(client, command("shelve", {"asset": f"p{k}", "for_s": 60, "request_id": f"r{k}"},
                                               mid=10 + k))
    assert client.acks == [] and [t for t, _, _ in client.published if "responses" in t] == []


def test_a_command_whose_payload_is_no_json_object_is_refused_not_a_crash(tiny_bundle):
    """A JSON array or number as a command's payload has no fields to read (for the reply, or the
    asset that says who answers): refused and counted rejected, not an error met in handling it."""
    daemon, client = make(tiny_bundle)
    for mid, payload in ((1, b"[1, 2]"), (2, b"7")):
        message = SimpleNamespace(topic="sensorguard/commands/shelve", payload=payload, qos=1, mid=mid, retain=False)
        daemon.commands.handle(client, message)
    assert value(daemon, "sensorguard_commands_total", command="shelve", result="rejected") == 2
    assert value(daemon, "sensorguard_commands_total", command="?", result="error") is None
    assert [mid for mid, _, _ in client.acks] == [1, 2]


def test_commands_waiting_through_a_disconnect_are_carried_out_once_connected_again(tiny_bundle):
    """Disconnected, the command thread carries nothing out (an ack could not go out); connected
    again in a new session, what waited is carried out (not acknowledged: the old session's ids)."""
    daemon, client = make(tiny_bundle)
    handler = daemon.commands
    handler.disconnected()
    handler.submit(client, command("shelve", {"asset": "p1", "for_s": 600, "request_id": "r1"}, mid=3))
    time.sleep(0.3)
    assert answers(client, "r1") == [] and daemon.controls.suppressed("p1", time.time()) is None
    handler.connected(resumed=False)
    deadline = time.monotonic() + 10
    while not answers(client, "r1"):
        assert time.monotonic() < deadline, "the command that waited was never carried out"
        time.sleep(0.02)
    handler.stop()
    assert answers(client, "r1")[0]["accepted"] and daemon.controls.suppressed("p1", time.time()) == "shelved"
    assert client.acks == []


def test_a_payloads_text_field_is_read_up_to_max_text_characters():
    """The reply's fields of a refused command, and an ack's asset, are read up to ``MAX_TEXT``
    characters (a long asset's ack id was read as none): longer, or not text, reads as none."""
    def payload(value) -> bytes:
        return json.dumps({"alert_id": value}).encode()

    assert _field(payload("a" * MAX_TEXT), "alert_id") == "a" * MAX_TEXT
    assert _field(payload("a" * (MAX_TEXT + 1)), "alert_id") == ""
    assert _field(payload(5), "alert_id") == "" and _field(b"{", "alert_id") == "" and _field(b"[]", "x") == ""


def test_answers_go_out_at_qos_1_and_only_qos_1_commands_are_acknowledged(tiny_bundle):
    """An answer is sent at QoS 1 (paho keeps it through a reconnect; at QoS 0 the CLI waited for one
    that was gone); a QoS 0 command has no packet id to acknowledge."""
    daemon, client = make(tiny_bundle)
    sent = []
    publish = client.publish

    def recording(topic, payload, qos=0, retain=False, properties=None):
        sent.append((topic, qos))
        return publish(topic, payload, qos=qos, retain=retain, properties=properties)

    client.publish = recording
    daemon.commands.handle(client, command("shelve", {"asset": "p1", "for_s": 60, "request_id": "r1"}, qos=0))
    assert ("sensorguard/responses/r1", 1) in sent and client.acks == []
    daemon.commands.handle(client, command("shelve", {"asset": "p2", "for_s": 60, "request_id": "r2"}, mid=9))
    assert [(mid, qos) for mid, qos, _ in client.acks] == [(9, 1)]


def test_a_failure_while_carrying_out_a_command_is_counted_and_the_command_acknowledged(tiny_bundle, monkeypatch):
    """A bug met while carrying out a command must not stop the command thread nor leave the message
    unacknowledged (redelivered, it would fail again at every reconnect): counted as an error."""
    daemon, client = make(tiny_bundle)

    def broken(command, now):
        raise RuntimeError("a bug")

    monkeypatch.setattr(daemon.controls, "apply", broken)
    daemon.commands.handle(client, command("shelve", {"asset": "p1", "for_s": 60, "request_id": "r1"}, mid=4))
    assert value(daemon, "sensorguard_commands_total", command="?", result="error") == 1
    assert [mid for mid, _, _ in client.acks] == [4] and answers(client, "r1") == []


def test_a_redelivery_is_known_by_its_topic_and_bytes_too(tiny_bundle):
    """A redelivered copy is one of that very delivery: the same packet id (reused once acknowledged)
    on another verb's topic, or with other bytes, is a new command, carried out."""
    daemon, client = make(tiny_bundle)
    body = {"asset": "p1", "for_s": 600, "action": "start", "request_id": "r1"}
    daemon.commands.handle(client, command("shelve", body, mid=1))
    daemon.commands.handle(client, command("maintenance", body, mid=1, dup=True))
    assert daemon.controls.suppressed("p1", time.time()) == "maintenance"
    assert value(daemon, "sensorguard_commands_total", command="maintenance", result="accepted") == 1
    daemon.commands.handle(client, command("shelve", {**body, "asset": "p2"}, mid=1, dup=True))
    assert daemon.controls.suppressed("p2", time.time()) == "shelved"


def test_a_command_past_its_mqtt_message_expiry_is_refused_when_its_turn_comes(tiny_bundle):
    """MQTT 5's message expiry, counted from the arrival here, is read when the command is carried out:
    one that waited (in the queue, behind a slow write) past it is refused, not carried out late."""
    daemon, client = make(tiny_bundle)
    late = command("shelve", {"asset": "p1", "for_s": 60, "request_id": "r1"})
    late.properties, late.timestamp = SimpleNamespace(MessageExpiryInterval=5), time.monotonic() - 60.0
    daemon.commands.handle(client, late)
    [answer] = answers(client, "r1")
    assert answer["accepted"] is False and daemon.controls.suppressed("p1", time.time()) is None
    fresh = command("shelve", {"asset": "p2", "for_s": 60, "request_id": "r2"}, mid=2)
    fresh.properties, fresh.timestamp = SimpleNamespace(MessageExpiryInterval=30), time.monotonic() - 1.0
    daemon.commands.handle(client, fresh)
    assert answers(client, "r2")[0]["accepted"] is True


def test_a_refusals_reply_to_is_used_only_when_it_is_a_safe_topic_under_the_responses_prefix(tiny_bundle):
    """A refused command's ``reply_to`` is read raw from its payload: a wildcard there (or a topic
    outside the responses) is not published on; the answer goes to ``responses/<request_id>``."""
    daemon, client = make(tiny_bundle)
    for k, reply_to in enumerate(("sensorguard/responses/#", "sensorguard/responses/a+b", "sensorguard/state/p1")):
        daemon.commands.handle(client, command("shelve", {"asset": "p1", "request_id": f"r{k}", "reply_to": reply_to},
                                               mid=k + 1))
    assert [t for t, _, _ in client.published] == [f"sensorguard/responses/r{k}" for k in range(3)]


def test_the_answers_kept_for_a_redelivery_are_the_newest(tiny_bundle, monkeypatch):
    """``ANSWERED_KEPT`` answers are kept for a redelivery, the newest: past it the oldest goes (its
    copy is carried out as a new command), the others' copies are answered as before."""
    monkeypatch.setattr(command_handling, "ANSWERED_KEPT", 2)
    daemon, client = make(tiny_bundle)
    for mid in (1, 2, 3):
        daemon.commands.handle(client, command("shelve", {"asset": f"p{mid}", "for_s": 60}, mid=mid))
    for mid in (3, 2):
        daemon.commands.handle(client, command("shelve", {"asset": f"p{mid}", "for_s": 60}, mid=mid, dup=True))
    assert value(daemon, "sensorguard_commands_total", command="shelve", result="duplicate") == 2
    daemon.commands.handle(client, command("shelve", {"asset": "p1", "for_s": 60}, mid=1, dup=True))
    assert value(daemon, "sensorguard_commands_total", command="shelve", result="accepted") == 4


def test_a_command_the_controls_refuse_is_counted_rejected_and_its_answer_says_nothing_saved(tiny_bundle):
    """An ``ack`` of an alert this daemon does not know is refused by the controls: counted
    rejected (not accepted), and its answer has no ``saved`` (nothing changed to save)."""
    daemon, client = make(tiny_bundle)
    daemon.commands.handle(client, command("ack", {"alert_id": "p1@1", "request_id": "r1"}))
    [answer] = answers(client, "r1")
    assert answer["accepted"] is False and "saved" not in answer and "store" not in answer
    assert value(daemon, "sensorguard_commands_total", command="ack", result="rejected") == 1
    assert not value(daemon, "sensorguard_commands_total", command="ack", result="accepted")


def test_what_the_daemon_did_on_an_accepted_change_is_added_to_its_answer(tiny_bundle):
    """``on_change`` runs after an accepted command and what it returns (the readings of an
    acknowledged alert filed, a hold's recording) is said in the answer, after the controls' text."""
    daemon, client = make(tiny_bundle)
    changed = []

    def on_change(asset, parsed):
        changed.append((asset, parsed.verb))
        return "12 readings filed"

    handler = CommandHandler(daemon.settings, daemon.controls, daemon.publisher, daemon.metrics, on_change)
    handler.handle(client, command("shelve", {"asset": "p1", "for_s": 60, "request_id": "r1"}))
    handler.handle(client, command("ack", {"alert_id": "p1@1", "request_id": "r2"}, mid=2))  # refused: not run
    assert answers(client, "r1")[0]["message"].endswith("; 12 readings filed") and changed == [("p1", "shelve")]
    assert "readings filed" not in answers(client, "r2")[0]["message"]


def test_a_copy_in_a_new_broker_session_is_not_taken_for_one_of_the_old_sessions(tiny_bundle):
    """Packet ids belong to a session: in a new one (not resumed) the same id, topic and bytes with
    DUP set is that session's own delivery, carried out, not answered from the old session's."""
    daemon, client = make(tiny_bundle)
    body = {"asset": "p1", "action": "start"}
    daemon.commands.handle(client, command("maintenance", body, mid=1))
    daemon.commands.handle(client, command("maintenance", {**body, "action": "end"}, mid=2))
    daemon.commands.connected(resumed=False)
    daemon.commands.handle(client, command("maintenance", body, mid=1, dup=True))
    assert daemon.controls.suppressed("p1", time.time()) == "maintenance"
    assert value(daemon, "sensorguard_commands_total", command="maintenance", result="accepted") == 3
