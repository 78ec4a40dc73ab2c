"""A rejected reading's log detail: what in the message was at fault, short, and never an error."""

from __future__ import annotations

import json

import pytest

from sensorguard.service.reject_detail import MAX_CHARS, explain

CHANNELS = [f"ch{i}" for i in range(8)]
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def msg(doc) -> bytes:
    return json.dumps(doc).encode()


@pytest.mark.parametrize("reason, payload, expected", [
    ("bad_ts", msg({"values": {"ch0": 1}}), "no ts"),
    ("bad_ts", msg({"samples": [{"ts": T0, "values": {"ch0": 1}}, {"ts": "2026-13-01T00:00:00Z", "values": {}}]}),
     "ts '2026-13-01T00:00:00Z' is not epoch seconds (2000..2200) or an ISO 8601 time"),
    ("bad_values", msg({"ts": T0}), "no values object"),
    ("bad_values", msg({"ts": T0, "values": [1, 2]}), "values [1, 2] is not an object of numbers"),
    ("bad_values", msg({"ts": T0, "values": {"ch0": 1, "ch1": True}}), "'ch1' is True, not a number"),
    ("unknown_channel", msg({"ts": T0, "values": {"x": 1, "y": 2, "z": 3, "w": 4}}),
     "'x', 'y', 'z' and 1 more are not one of the model's 8 channels ('ch0', 'ch1', 'ch2' and 5 more)"),
    ("missing_channel", msg({"ts": T0, "values": {"ch0": 1, "ch1": None, "ch2": 3.4e38}}),
     "no value for 'ch1', 'ch2', 'ch3' and 4 more, and none recent enough to carry forward"),
    # in a batch, the stamp that drew the reason (it named the first one: most often the one taken)
    ("duplicate_ts", msg({"samples": [{"ts": T0, "values": {}}, {"ts": T0 + 1, "values": {}}, {"ts": T0 + 1}]}),
     "ts 2026-01-01T00:00:01.000Z, one of 3 in the message"),
    ("out_of_order", msg({"samples": [{"ts": T0, "values": {}}, {"ts": T0 - 10, "values": {}}]}),
     "ts 2025-12-31T23:59:50.000Z, one of 2 in the message"),
    ("future_ts", msg({"samples": [{"ts": T0, "values": {}}, {"ts": T0 + 3e9, "values": {}}]}), "ts 2121-"),
    ("too_large", b"x" * 70_000, "70,000 bytes"),
    ("not_object", b"[1, 2, 3]", "the message starts b'[1, 2, 3]'"),
    ("bad_asset", msg({"ts": T0, "values": {"ch0": 1}}), ""),  # the topic says it all
])
def test_each_reason_names_what_was_at_fault(reason, payload, expected):
    said = explain(reason, payload, CHANNELS)
    assert said.startswith(expected) if expected else said == ""


def test_out_of_order_names_the_assets_newest_reading():
    said = explain("out_of_order", msg({"ts": T0 - 10, "values": {}}), CHANNELS, newest=T0 + 2)
    assert said == "ts 2025-12-31T23:59:50.000Z; the asset's newest reading 2026-01-01T00:00:02.000Z"


@pytest.mark.parametrize("payload", [b"", b"\xff\xfe", b"{not json", b'{"samples": 5}', b"null",
                                     b'{"ts": ' + b"[" * 5000 + b"]" * 5000 + b"}"])
def test_garbage_gives_nothing_and_never_raises(payload):
    for reason in ("bad_ts", "bad_values", "unknown_channel", "missing_channel", "out_of_order", "future_ts"):
        assert explain(reason, payload, CHANNELS, newest=T0) == ""


def test_a_detail_is_a_phrase_not_a_dump():
    long_names = {f"channel-with-a-very-long-name-{i:03d}-" + "x" * 80: 1.0 for i in range(50)}
    said = explain("unknown_channel", msg({"ts": T0, "values": long_names}), CHANNELS)
    assert len(said) == MAX_CHARS and said.startswith("'channel-with-a-very-long-name-000-")
    assert len(explain("bad_ts", msg({"ts": "y" * 10_000, "values": {}}), CHANNELS)) < 100
