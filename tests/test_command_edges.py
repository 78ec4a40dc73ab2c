"""Edges of the operator commands that no test pinned (found by mutating service/commands.py,
service/command_messages.py and service/outbox.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

from sensorguard.service.command_messages import (
    EXPIRY_BACKSTOP_S,
    EXPIRY_GRACE_S,
    MAX_COMMAND_BYTES,
    MAX_SHELVE_S,
    MAX_TEXT,
    Command,
    broker_expiry,
    expiry_refusal,
    parse_command,
    safe_topic,
)
from sensorguard.service.commands import AlarmControls
from sensorguard.service.outbox import UNSENT_PER_ASSET, Outbox, published
from sensorguard.service.payload import TS_MAX
from sensorguard.service.publisher import Publisher

NOW = 1_700_000_000.0


def padded(doc: dict, size: int) -> bytes:
    """``doc`` as JSON of exactly ``size`` bytes (a "pad" field, which commands ignore)."""
    bare = json.dumps({**doc, "pad": ""}).encode()
    return json.dumps({**doc, "pad": "x" * (size - len(bare))}).encode()


def test_a_command_of_exactly_the_size_limit_is_read():
    """MAX_COMMAND_BYTES is inclusive: a 4,096-byte command (a long reason, a dashboard's extra
    fields) is carried out; one byte more is refused as too large."""
    doc = {"asset": "p", "for_s": 60}
    assert len(padded(doc, MAX_COMMAND_BYTES)) == MAX_COMMAND_BYTES
    assert isinstance(parse_command("shelve", padded(doc, MAX_COMMAND_BYTES), now=NOW), Command)
    assert parse_command("shelve", padded(doc, MAX_COMMAND_BYTES + 1), now=NOW).startswith("larger than")


def test_a_text_field_of_exactly_500_characters_is_accepted():
    """MAX_TEXT is inclusive: a reason of 500 characters is kept as given; 501 is refused."""
    reason = "r" * MAX_TEXT
    c = parse_command("shelve", json.dumps({"asset": "p", "for_s": 60, "reason": reason}).encode(), now=NOW)
    assert isinstance(c, Command) and c.reason == reason
    too_long = json.dumps({"asset": "p", "for_s": 60, "reason": reason + "r"}).encode()
    assert parse_command("shelve", too_long, now=NOW).startswith("text fields must be strings")


def test_expires_true_is_no_time():
    """``"expires": true`` is a malformed field, said so; a bool is no epoch time (read as 1 it would
    be refused as "expired 1.7e9 s ago: send it again", and the resend would fail the same way)."""
    said = parse_command("shelve", b'{"asset": "p", "for_s": 60, "expires": true}', now=NOW)
    assert said == "expires must be a time in epoch seconds, before 2200"


def test_expires_at_2200_exactly_is_refused():
    """``expires`` must be before 2200 (TS_MAX exclusive, as for readings): milliseconds sent as
    seconds are refused as malformed, not taken as a send that never expires."""
    body = json.dumps({"asset": "p", "for_s": 60, "expires": TS_MAX}).encode()
    assert parse_command("shelve", body, now=NOW) == "expires must be a time in epoch seconds, before 2200"
    body = json.dumps({"asset": "p", "for_s": 60, "expires": TS_MAX - 1}).encode()
    assert isinstance(parse_command("shelve", body, now=NOW), Command)


def test_a_request_id_may_have_64_characters_not_65():
    """A request id is at most 64 letters, digits, '-' or '_' (it names the reply topic and the
    send kept against copies); 64 is accepted, 65 refused."""
    ok = json.dumps({"asset": "p", "for_s": 60, "request_id": "a" * 64}).encode()
    assert parse_command("shelve", ok, now=NOW).request_id == "a" * 64
    bad = json.dumps({"asset": "p", "for_s": 60, "request_id": "a" * 65}).encode()
    assert parse_command("shelve", bad, now=NOW).startswith("request_id must be")


def test_shelve_for_0_unshelves_and_for_the_maximum_is_allowed():
    """``shelve`` takes ``for_s`` from 0 (unshelve: until now) to MAX_SHELVE_S (7 days), both ends
    included: ``sensorguard shelve --for 0`` must not be refused, nor a shelving of exactly a week."""
    zero = parse_command("shelve", b'{"asset": "p", "for_s": 0}', now=NOW)
    assert isinstance(zero, Command) and zero.until == NOW
    week = parse_command("shelve", json.dumps({"asset": "p", "for_s": MAX_SHELVE_S}).encode(), now=NOW)
    assert isinstance(week, Command) and week.until == NOW + MAX_SHELVE_S
    over = json.dumps({"asset": "p", "for_s": MAX_SHELVE_S + 1}).encode()
    assert parse_command("shelve", over, now=NOW).startswith("for_s must be from 0")


def test_maintenance_for_s_ending_at_2200_is_refused_as_a_bad_for_s():
    """A ``for_s`` that ends exactly at 2200 is refused, and the reason names ``for_s`` (the field
    the operator gave), not an ``until`` they never sent."""
    body = json.dumps({"asset": "p", "action": "start", "for_s": TS_MAX - NOW}).encode()
    assert parse_command("maintenance", body, now=NOW) == "for_s must be a number of seconds > 0, ending before 2200"
    body = json.dumps({"asset": "p", "action": "start", "for_s": TS_MAX - NOW - 1}).encode()
    assert parse_command("maintenance", body, now=NOW).until == TS_MAX - 1


def test_a_maintenance_until_must_be_strictly_future_and_before_2200():
    """A maintenance ``until`` is a future time before 2200: until == now (over as it starts) and
    until == 2200 (milliseconds, or garbage) are refused; a second ahead and a second before 2200 are
    carried out."""
    def until(t: float):
        return parse_command("maintenance", json.dumps({"asset": "p", "action": "start", "until": t}).encode(), now=NOW)

    refused = "until must be a future time in epoch seconds, before 2200"
    assert until(NOW) == refused and until(TS_MAX) == refused
    assert until(NOW + 1).until == NOW + 1 and until(TS_MAX - 1).until == TS_MAX - 1


def test_expiry_boundaries_are_inclusive():
    """A command is refused only *after* its deadline: at the MQTT message expiry itself, at
    ``expires`` + EXPIRY_GRACE_S, and (with a message expiry) at ``expires`` + EXPIRY_BACKSTOP_S it is
    still in time; a moment later it is refused. Operators sending at the last second are served."""
    assert expiry_refusal(None, 1030.0, broker=1030.0) is None
    assert expiry_refusal(None, 1030.5, broker=1030.0) is not None
    assert expiry_refusal(1000.0, 1000.0 + EXPIRY_GRACE_S) is None
    assert expiry_refusal(1000.0, 1000.0 + EXPIRY_GRACE_S + 0.5) is not None
    assert expiry_refusal(1000.0, 1000.0 + EXPIRY_BACKSTOP_S, broker=2000.0) is None
    assert expiry_refusal(1000.0, 1000.0 + EXPIRY_BACKSTOP_S + 0.5, broker=2000.0) is not None


def test_a_message_never_stamped_on_arrival_has_no_broker_expiry():
    """paho's ``timestamp`` is 0 until it stamps an arrival: such a message (built by hand, or a
    library that does not stamp) has no known arrival, so no broker deadline is made up from it (it
    would read as arrived at monotonic 0, hours or days ago: every command refused as expired)."""
    unstamped = SimpleNamespace(properties=SimpleNamespace(MessageExpiryInterval=40), timestamp=0.0)
    assert broker_expiry(unstamped, now=NOW, clock=lambda: 5000.0) is None
    stamped = SimpleNamespace(properties=SimpleNamespace(MessageExpiryInterval=40), timestamp=4990.0)
    assert broker_expiry(stamped, now=NOW, clock=lambda: 5000.0) == NOW + 30


def test_a_reply_topic_may_hold_spaces_but_no_control_character():
    """``reply_to`` is refused for a wildcard or a control character (DEL included: it is one, and
    brokers and log lines mangle it), not for a space, which MQTT topics allow."""
    assert safe_topic("sensorguard/responses/panel 2")
    assert not safe_topic("sensorguard/responses/panel\x7f")
    assert not safe_topic("sensorguard/responses/panel\x1f")
    body = json.dumps({"asset": "p", "for_s": 60, "reply_to": "sensorguard/responses/a\x7fb"}).encode()
    assert parse_command("shelve", body, now=NOW) == "reply_to must be a topic, not a filter"


def test_a_hold_is_over_at_its_until_on_the_clock_and_by_the_readings_time_before_it_is_swept():
    """A shelving until T holds at wall time T - 0.5 and no longer at T (expired() removes it at T,
    and counts() agrees). Before the once-a-second sweep removes it, a late reading is judged by its
    own time as for an ended hold: from ``since`` (inclusive) to T (exclusive), widened by ``after``
    (the recorder's guard band)."""
    controls = AlarmControls()
    assert controls.apply(Command("shelve", "p1", until=200.0), now=100.0)[0]
    assert controls.suppressed("p1", 199.5) == "shelved" and controls.suppressed("p1", 200.0) is None
    assert controls.counts(199.5)["shelved"] == 1 and controls.counts(200.0)["shelved"] == 0
    later = 250.0  # the hold is over but still listed (not swept yet)
    assert [controls.suppressed("p1", later, ts) for ts in (99.5, 100.0, 199.5, 200.0)] == [
        None, "shelved", "shelved", None]
    assert controls.suppressed("p1", later, 230.0, after=60.0) == "shelved"
    assert controls.suppressed("p1", later, 260.0, after=60.0) is None


def test_the_last_four_ended_holds_per_asset_are_kept_and_max_controls_assets():
    """Ended holds judge late readings; the last PAST_PER_HOLD (4) per asset and kind are kept (the
    fifth-last forgotten), of at most ``max_controls`` assets and kinds (the oldest forgotten first,
    not one more, not one fewer)."""
    from sensorguard.service.commands import PAST_PER_HOLD

    controls = AlarmControls()
    for k in range(PAST_PER_HOLD + 1):
        start = 1000.0 * (k + 1)
        assert controls.apply(Command("maintenance", "p1", action="start"), now=start)[0]
        assert controls.apply(Command("maintenance", "p1", action="end"), now=start + 10)[0]
    late = 1e6
    assert controls.suppressed("p1", late, 1005.0) is None  # the oldest of five: forgotten
    assert all(controls.suppressed("p1", late, 1000.0 * (k + 1) + 5) == "maintenance" for k in range(1, 5))

    capped = AlarmControls(max_controls=2)
    for asset in ("a1", "a2"):
        assert capped.apply(Command("shelve", asset, until=200.0), now=100.0)[0]
        assert capped.apply(Command("shelve", asset, until=100.0), now=150.0)[0]  # for_s 0: unshelved
    assert capped.suppressed("a1", late, 120.0) == "shelved" and capped.suppressed("a2", late, 120.0) == "shelved"
    assert capped.apply(Command("shelve", "a3", until=200.0), now=100.0)[0]
    assert capped.apply(Command("shelve", "a3", until=100.0), now=150.0)[0]
    assert capped.suppressed("a1", late, 120.0) is None and capped.suppressed("a3", late, 120.0) == "shelved"
    assert capped.suppressed("a2", late, 120.0) == "shelved"  # (not one more forgotten)


def test_a_send_is_still_known_at_the_last_second_of_its_keeping():
    """A send carried out is kept SEND_KEPT_S past its ``expires`` *inclusive*: a revived session's
    copy delivered at that very second is still answered "carried out already", not carried out
    again."""
    from sensorguard.service.controls_file import SEND_KEPT_S

    controls = AlarmControls()
    send = Command("maintenance", "p1", action="start", request_id="r1", expires=1000.0)
    assert controls.apply(send, now=990.0)[0] and controls.carried_out(send)
    controls.expired(1000.0 + SEND_KEPT_S)
    assert controls.carried_out(send)
    controls.expired(1000.0 + SEND_KEPT_S + 61.0)  # (looked at once a minute)
    assert not controls.carried_out(send)



def test_a_command_without_a_send_is_never_taken_for_a_copy():
    """Only a command with both a request id and ``expires`` is one send that can be refused as a
    copy; one without (a dashboard's fixed request id, or none) is carried out each time, even if a
    hand-edited or older controls.json names an empty send for its asset."""
    controls = AlarmControls()
    controls.adopt("p1", {"sends": {"": 9e9}}, save=False)
    assert not controls.carried_out(Command("maintenance", "p1", action="start"))
    assert not controls.carried_out(Command("maintenance", "p1", action="start", request_id="fixed"))


def test_the_last_sends_kept_per_asset_are_all_remembered():
    """SENDS_KEPT sends per asset are kept against copies: the newest SENDS_KEPT are all refused as
    copies when delivered again; only the one before them is forgotten."""
    from sensorguard.service.controls_file import SENDS_KEPT

    controls = AlarmControls()
    sends = [Command("shelve", "p1", until=5000.0, request_id=f"r{k}", expires=4000.0) for k in range(SENDS_KEPT + 1)]
    for send in sends:
        assert controls.apply(send, now=1000.0)[0]
    assert not controls.carried_out(sends[0])
    assert all(controls.carried_out(send) for send in sends[1:])


def test_ending_a_hold_whose_time_was_already_up_keeps_its_true_end():
    """A hold ended by a command after its ``until`` had passed (before the sweep removed it) ended
    at its ``until``, not when the command came: late readings from between the two are judged as
    not held (they raise their alerts and are recorded), as they would be had the sweep come first."""
    controls = AlarmControls()
    assert controls.apply(Command("shelve", "p1", until=200.0), now=100.0)[0]
    assert controls.apply(Command("shelve", "p1", until=250.0), now=250.0)[:2] == (True, "p1: unshelved")
    assert controls.suppressed("p1", 1000.0, ts=150.0) == "shelved"
    assert controls.suppressed("p1", 1000.0, ts=220.0) is None


def test_an_assets_sends_alone_move_with_it_to_its_next_owner():
    """Cluster mode: an asset whose only trace here is sends carried out (no hold, alert or ended
    hold) still exports them, so its next owner refuses a revived session's copy instead of carrying
    it out a second time."""
    send = Command("maintenance", "p1", action="start", request_id="r1", expires=9e9)
    old = AlarmControls()
    old.adopt("p1", {"sends": {send.send: 9e9}}, save=False)
    doc = old.export("p1")
    assert doc is not None and send.send in doc["sends"]
    new = AlarmControls()
    new.adopt("p1", json.loads(json.dumps(doc)), save=False)
    assert new.carried_out(send)


def test_a_controls_file_with_an_unknown_kind_is_unreadable_not_loaded(tmp_path):
    """controls.json naming a hold of an unknown kind (hand-edited, another version) is refused as
    a whole and set aside, not loaded: an unknown kind broke counts() (the metrics) at every scrape."""
    hold = {"asset": "p1", "kind": "paused", "since": 1.0, "until": None}
    (tmp_path / "controls.json").write_text(json.dumps({"controls": [hold], "alerts": {}}))
    controls = AlarmControls(str(tmp_path))
    assert controls.unreadable and controls.assets() == set()
    assert controls.counts(2.0) == {"maintenance": 0, "shelved": 0}


def test_an_old_controls_file_with_too_many_sends_keeps_the_newest_assets(tmp_path):
    """Reading a controls.json holding sends of more than SENDS_ASSETS assets keeps the assets
    commanded last (the file keeps them in that order), as the running daemon does: the oldest are
    forgotten, not the newest, whose copies are the likeliest to be delivered again."""
    from sensorguard.service.commands import SENDS_ASSETS

    commands = [Command("shelve", f"a{k}", until=1.0, request_id=f"r{k}", expires=9e9) for k in range(SENDS_ASSETS + 1)]
    sends = {c.asset: {c.send: 9e9} for c in commands}
    (tmp_path / "controls.json").write_text(json.dumps({"controls": [], "alerts": {}, "sends": sends}))
    controls = AlarmControls(str(tmp_path))
    oldest, newest = commands[0], commands[-1]
    assert controls.carried_out(newest) and not controls.carried_out(oldest)



def test_a_controls_file_with_an_ended_hold_of_an_unknown_kind_is_unreadable(tmp_path):
    """An ended hold of an unknown kind in controls.json is refused like a hold: loaded, it was
    exported with the asset, and its next owner's adopt() refused the whole asset's controls."""
    doc = {"controls": [], "alerts": {}, "past": [["p1", "paused", 1.0, 2.0]]}
    (tmp_path / "controls.json").write_text(json.dumps(doc))
    controls = AlarmControls(str(tmp_path))
    assert controls.unreadable and controls.export("p1") is None


# --- the outbox: closes and retained states the full outgoing queue dropped ---------------------

class FakePublisher:
    """What Outbox reads of a Publisher: ``full()``, ``dropped(info)`` (None or a QUEUE_SIZE rc) and ``client``."""

    def __init__(self) -> None:
        self.client: object | None = object()
        self.is_full = False

    def full(self) -> bool:
        return self.is_full

    @staticmethod
    def dropped(info) -> bool:
        return Publisher.dropped(info)


SENT = SimpleNamespace(rc=0)  # a publish handle that was queued


def test_published_falls_back_to_the_handles_own_flag():
    """A handle queued while disconnected raises on is_published(): whether the broker confirmed it
    is then read from the handle itself, False until it was (an unconfirmed raise taken as
    published made its alert count as announced)."""
    def raising():
        raise RuntimeError("not connected")

    assert published(SimpleNamespace(is_published=raising, _published=False)) is False
    assert published(SimpleNamespace(is_published=raising, _published=True)) is True
    assert published(None) is True


def test_an_assets_first_16_dropped_closes_are_kept_in_order():
    """At most UNSENT_PER_ASSET closes per asset are kept, the oldest (their raises went out first);
    they are sent again in order, and then the asset holds none."""
    box, sent = Outbox(FakePublisher(), cap=10), []
    for k in range(UNSENT_PER_ASSET + 1):
        box.keep_close("p1", f"clear{k}", [])
    box.resend_closes(lambda asset, event, extra: sent.append(event) or SENT)
    assert sent == [f"clear{k}" for k in range(UNSENT_PER_ASSET)]
    assert not box.holds_close("p1")  # all out: a later clear need not wait


def test_a_close_dropped_again_is_kept_and_sent_at_the_next_tick():
    """A close whose resend the full queue drops again stays first in line (a pager must get it),
    and the asset's later closes wait behind it."""
    box, sent = Outbox(FakePublisher(), cap=10), []
    box.keep_close("p1", "clear1", [])
    box.keep_close("p1", "clear2", [])
    box.resend_closes(lambda asset, event, extra: sent.append(event) or None)  # dropped again
    assert sent == ["clear1"] and box.holds_close("p1")
    box.resend_closes(lambda asset, event, extra: sent.append(event) or SENT)
    assert sent == ["clear1", "clear1", "clear2"] and not box.holds_close("p1")


def test_the_outbox_keeps_closes_and_states_of_cap_assets_the_oldest_forgotten():
    """Each of closes and retained states is kept for ``cap`` assets; beyond, the oldest asset's is
    forgotten (not the newest's, and not one more)."""
    box = Outbox(FakePublisher(), cap=2)
    for asset in ("a1", "a2"):
        box.keep_close(asset, "clear", [])
        box.state_sent(asset, None)  # dropped
    assert box.holds_close("a1") and box.holds_close("a2")
    box.keep_close("a3", "clear", [])
    box.state_sent("a3", None)
    assert not box.holds_close("a1") and box.holds_close("a2") and box.holds_close("a3")
    again: list[str] = []
    box.resend_states(again.append)
    assert again == ["a2", "a3"]


def test_retained_states_wait_while_the_queue_is_full_and_none_are_kept_without_a_client():
    """A dropped retained state is sent again only once the queue has room (each try while full would
    count another drop); with no MQTT client (nothing published) no state is kept to send again."""
    publisher = FakePublisher()
    box, again = Outbox(publisher, cap=10), []
    box.state_sent("p1", None)
    publisher.is_full = True
    box.resend_states(again.append)
    assert again == []
    publisher.is_full = False
    box.resend_states(again.append)
    assert again == ["p1"]
    publisher.client = None
    box.state_sent("p2", None)  # (state() returns None without a client: not a drop)
    box.resend_states(again.append)
    assert again == ["p1"]


def test_a_request_id_ending_in_a_newline_is_refused():
    """``$`` also matches before a final newline: ``"abc\\n"`` passed as a request id, and the answer
    went to ``<prefix>/responses/abc\\n``, a topic with a control character (found by a mutation audit)."""
    payload = json.dumps({"asset": "p", "for_s": 60, "request_id": "abc\n"}).encode()
    assert "request_id" in parse_command("shelve", payload, now=0.0)
