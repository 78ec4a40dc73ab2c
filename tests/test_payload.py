"""The payload parser: a table per reject reason, and properties over arbitrary input."""

from __future__ import annotations

import doctest
import json
import math

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sensorguard.service import payload
from sensorguard.service.payload import REJECT_REASONS, Parsed, Sample, asset_from_topic, parse_message, parse_ts

TOPIC = "sensors/pump-7/readings"
TS = 1700000000.0  # 2023-11-14T22:13:20Z


def parse(body: object, topic: str = TOPIC, **kw: int) -> Parsed:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return parse_message(topic, raw, "sensors", **kw)


def test_doctests() -> None:
    assert doctest.testmod(payload).failed == 0


@pytest.mark.parametrize(
    ("topic", "prefix", "asset"),
    [
        ("sensors/pump-7/readings", "sensors", "pump-7"),
        ("sensors/site-a/line-2/pump-7/readings", "sensors", "site-a/line-2/pump-7"),
        ("plant/sensors/p.1_x/readings", "plant/sensors", "p.1_x"),
        ("sensors/pump-7/readings", "sensors/", "pump-7"),
        ("pump-7/readings", "", "pump-7"),
        ("sensors/a..b/readings", "sensors", "a..b"),
        ("sensors/" + "/".join("abcdefgh") + "/readings", "sensors", "/".join("abcdefgh")),
        ("sensors/" + "x" * 64 + "/readings", "sensors", "x" * 64),
        ("sensors/readings", "sensors", None),
        ("sensors//readings", "sensors", None),
        ("sensors/a//b/readings", "sensors", None),
        ("sensors/pump-7/values", "sensors", None),
        ("other/pump-7/readings", "sensors", None),
        ("sensorsX/pump-7/readings", "sensors", None),
        ("sensors/pump+7/readings", "sensors", None),
        ("sensors/#/readings", "sensors", None),
        ("sensors/+/readings", "sensors", None),
        ("sensors/./readings", "sensors", None),
        ("sensors/a/../readings", "sensors", None),
        ("sensors/pump 7/readings", "sensors", None),
        ("sensors/pümp/readings", "sensors", None),
        ("sensors/" + "x" * 65 + "/readings", "sensors", None),
        ("sensors/" + "/".join("abcdefghi") + "/readings", "sensors", None),
        ("sensors/" + "/".join(["x" * 60] * 4) + "/readings", "sensors", None),  # 243 chars
        ("sensors/pump-7/readings/", "sensors", None),
        ("sensors/pump-7/\n/readings", "sensors", None),
    ],
)
def test_asset_from_topic(topic: str, prefix: str, asset: str | None) -> None:
    assert asset_from_topic(topic, prefix) == asset


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (TS, TS),
        (1700000000, TS),
        (1700000000.25, TS + 0.25),
        ("2023-11-14T22:13:20Z", TS),
        ("2023-11-14T22:13:20.250Z", TS + 0.25),
        ("2023-11-14T22:13:20.123456789Z", TS + 0.123456),
        ("2023-11-14t22:13:20z", TS),
        ("2023-11-14 22:13:20Z", TS),
        ("2023-11-14T23:13:20+01:00", TS),
        ("2023-11-14T17:13:20-05:00", TS),
        ("2023-11-14T22:13:20", TS),  # naive: UTC by contract
        ("2023-11-14T22:13Z", TS - 20),
        ("2023-11-14", None),
        ("2023-11-14T25:00:00Z", None),
        ("2023-11-14T22:13:60Z", None),
        ("yesterday at noon", None),
        ("", None),
        ("1700000000", None),
        (True, None),
        (None, None),
        ([TS], None),
        (1.7e12, None),  # milliseconds sent as seconds
        (0, None),
        (-5.0, None),
        ("1999-12-31T23:59:59Z", None),
        ("2200-01-01T00:00:00Z", None),
    ],
)
def test_parse_ts(value: object, expected: float | None) -> None:
    got = parse_ts(value)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, abs=1e-6)


def test_parse_ts_non_finite_is_nan() -> None:
    assert math.isnan(parse_ts(math.inf))
    assert math.isnan(parse_ts(math.nan))


def test_one_sample_accepted() -> None:
    p = parse({"ts": "2023-11-14T22:13:20Z", "values": {"a": 1.5, "b": 2}, "extra": "ignored"})
    assert p == Parsed("pump-7", [Sample(TS, {"a": 1.5, "b": 2.0})], [])
    assert all(type(v) is float for v in p.samples[0].values.values())


def test_batch_keeps_good_samples_and_order() -> None:
    samples = [{"ts": TS + i, "values": {"a": float(i)}} for i in range(5)]
    samples[2] = {"ts": "garbage", "values": {"a": 1.0}}
    p = parse({"samples": samples})
    assert [s.ts for s in p.samples] == [TS, TS + 1, TS + 3, TS + 4]
    assert p.rejects == ["bad_ts"]


WHOLE = [
    ("too_large", b'{"ts": 1700000000, "values": {"a": 1.0}}' + b" " * 100, {"max_bytes": 64}),
    ("invalid_json", b'{"ts": 1700000000, "values": {"a": 1.0}', {}),
    ("invalid_json", b"\xff\xfe", {}),
    ("invalid_json", b"", {}),
    ("invalid_json", b'{"ts": 1700000000, "values": {"a": 1.0}} trailing', {}),
    ("invalid_json", b'{"ts": 1700000000, "values": {"a": NaN', {}),
    ("not_object", b"[1, 2]", {}),
    ("not_object", b'"text"', {}),
    ("not_object", b"1.5", {}),
    ("not_object", b"null", {}),
    ("bad_samples", b'{"samples": {"ts": 1700000000}}', {}),
    ("bad_samples", b'{"samples": []}', {}),
    ("bad_samples", b'{"samples": null}', {}),
    (
        "too_many_samples",
        orjson.dumps({"samples": [{"ts": TS + i, "values": {"a": 1}} for i in range(4)]}),
        {"max_samples": 3},
    ),
]


@pytest.mark.parametrize(("reason", "raw", "limits"), WHOLE)
def test_whole_message_rejects(reason: str, raw: bytes, limits: dict) -> None:
    p = parse(raw, **limits)
    assert p == Parsed("pump-7", [], [reason])


def test_bad_asset_rejects_before_reading_the_payload() -> None:
    assert parse(b"not even json", topic="sensors/a+b/readings") == Parsed(None, [], ["bad_asset"])


def test_limits_are_inclusive() -> None:
    raw = orjson.dumps({"samples": [{"ts": TS + i, "values": {"a": 1}} for i in range(3)]})
    assert len(parse(raw, max_samples=3, max_bytes=len(raw)).samples) == 3


PER_SAMPLE = [
    ("bad_ts", {"values": {"a": 1.0}}),
    ("bad_ts", {"ts": None, "values": {"a": 1.0}}),
    ("bad_ts", {"ts": True, "values": {"a": 1.0}}),
    ("bad_ts", {"ts": "14/11/2023", "values": {"a": 1.0}}),
    ("bad_ts", {"ts": {"s": 1}, "values": {"a": 1.0}}),
    ("bad_ts", {"ts": 1.7e12, "values": {"a": 1.0}}),
    ("bad_values", {"ts": TS}),
    ("bad_values", {"ts": TS, "values": {}}),
    ("bad_values", {"ts": TS, "values": [1.0, 2.0]}),
    ("bad_values", {"ts": TS, "values": 1.0}),
    ("bad_values", {"ts": TS, "values": {"a": "1.0"}}),
    ("bad_values", {"ts": TS, "values": {"a": True}}),
    ("bad_values", {"ts": TS, "values": {"a": 1.0, "b": [2.0]}}),
    ("not_object", [TS, {"a": 1.0}]),
    ("not_object", None),
]


@pytest.mark.parametrize(("reason", "sample"), PER_SAMPLE)
def test_per_sample_rejects(reason: str, sample: object) -> None:
    good = {"ts": TS + 10, "values": {"a": 1.0}}
    p = parse({"samples": [sample, good]})
    assert p.rejects == [reason]
    assert p.samples == [Sample(TS + 10, {"a": 1.0})]
    if isinstance(sample, dict):  # the same sample alone: one reject, no samples
        assert parse(sample) == Parsed("pump-7", [], [reason])


def test_a_non_finite_ts_rejects_the_sample() -> None:
    assert parse(b'{"ts": NaN, "values": {"a": 1.0}}') == Parsed("pump-7", [], ["non_finite"])


@pytest.mark.parametrize(
    "raw",
    [
        b'{"ts": 1700000000, "values": {"a": NaN, "b": 2}}',
        b'{"ts": 1700000000, "values": {"a": Infinity, "b": 2.0}}',
        b'{"ts": 1700000000, "values": {"a": -Infinity, "b": 2.0}}',
        b'{"ts": 1700000000, "values": {"a": 1e999, "b": 2.0}}',
        b'{"ts": 1700000000, "values": {"a": null, "b": 2.0}}',
        b'{"ts": 1700000000, "values": {"a": ' + b"9" * 400 + b', "b": 2.0}}',
    ],
)
def test_a_value_that_is_not_a_finite_number_is_a_missing_value_not_a_lost_reading(raw: bytes) -> None:
    (sample,) = parse(raw).samples
    assert math.isnan(sample.values["a"]) and sample.values["b"] == 2.0 and type(sample.values["b"]) is float


def test_a_batch_with_a_missing_value_keeps_every_sample() -> None:
    raw = json.dumps(
        {"samples": [{"ts": TS, "values": {"a": math.nan}}, {"ts": TS + 1, "values": {"a": 2.0}}]}
    )
    p = parse(raw.encode())
    assert p.rejects == [] and len(p.samples) == 2 and math.isnan(p.samples[0].values["a"])


def test_every_reason_used_by_the_parser_is_listed() -> None:
    used = {r for r, *_ in WHOLE} | {r for r, _ in PER_SAMPLE} | {"bad_asset", "non_finite", "parse_error"}
    assert used <= set(REJECT_REASONS)
    assert len(set(REJECT_REASONS)) == len(REJECT_REASONS)
    for reason in REJECT_REASONS:  # every reason is documented for operators
        assert f"``{reason}``" in payload.__doc__


def test_unexpected_payload_type_is_counted_not_raised() -> None:
    assert parse_message(TOPIC, None, "sensors").rejects == ["parse_error"]  # type: ignore[arg-type]


def _check(p: Parsed, n_items: int | None = None) -> None:
    assert isinstance(p, Parsed)
    assert set(p.rejects) <= set(REJECT_REASONS)
    assert "parse_error" not in p.rejects, "parse_error means the parser itself failed (a bug)"
    assert p.samples or p.rejects, "a message gives samples, rejects, or both; never nothing"
    for s in p.samples:
        assert math.isfinite(s.ts) and payload.TS_MIN <= s.ts < payload.TS_MAX
        # null, NaN and +-Infinity arrive as NaN: a missing value that cleaning fills (never infinite)
        assert s.values and all(type(v) is float and not math.isinf(v) for v in s.values.values())
    if n_items is not None:
        assert len(p.samples) + len(p.rejects) == n_items


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.text(max_size=40))
def test_arbitrary_bytes_never_raise(raw: bytes, topic: str) -> None:
    _check(parse_message(topic, raw, "sensors"))
    _check(parse_message(TOPIC, raw, "sensors"))


JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
TS_VALUES = st.one_of(
    st.floats(),
    st.integers(),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.text(max_size=30),
    JSON,
)
SAMPLE = (
    st.fixed_dictionaries(
        {"ts": TS_VALUES, "values": st.dictionaries(st.text(max_size=8), JSON, max_size=4) | JSON}
    )
    | JSON
)


@settings(max_examples=300, deadline=None)
@given(st.lists(SAMPLE, min_size=1, max_size=6))
@example([{"ts": "2000-01-01T00:00:00+00:00", "values": {"": None}}])  # a null value: NaN, kept (found by CI)
def test_arbitrary_json_never_raises_and_accounts_for_every_sample(samples: list) -> None:
    raw = json.dumps({"samples": samples}).encode()  # the stdlib writes NaN/Infinity too
    _check(parse_message(TOPIC, raw, "sensors"), n_items=len(samples))
    first = samples[0]
    one = None if isinstance(first, dict) and "samples" in first else 1
    _check(parse_message(TOPIC, json.dumps(first).encode(), "sensors"), n_items=one)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(payload.TS_MIN, payload.TS_MAX - 1), min_size=1, max_size=5),
    st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.floats(-payload.NO_DATA, payload.NO_DATA, exclude_min=True, exclude_max=True),  # beyond: missing
        min_size=1,
        max_size=5,
    ),
)
def test_valid_samples_round_trip(times: list[float], values: dict[str, float]) -> None:
    raw = orjson.dumps({"samples": [{"ts": t, "values": values} for t in times]})
    p = parse_message(TOPIC, raw, "sensors")
    assert p.rejects == [] and [s.ts for s in p.samples] == times
    assert all(s.values == values for s in p.samples)
