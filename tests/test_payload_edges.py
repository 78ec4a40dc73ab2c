"""Edges of the reading parser that the table tests left unpinned (found by mutating service/payload.py)."""

from __future__ import annotations

import json
import math
import time

import orjson

from sensorguard.service.payload import MAX_ASSET_CHARS, MAX_DEPTH, NO_DATA, TS_MAX, TS_MIN, parse_message, parse_ts

TOPIC = "sensors/pump-7/readings"
TS = 1700000000.0  # 2023-11-14T22:13:20Z


def parse(body: object, topic: str = TOPIC, **kw):
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return parse_message(topic, raw, "sensors", **kw)


def test_an_asset_id_of_exactly_the_maximum_length_is_accepted():
    """MAX_ASSET_CHARS is inclusive: an asset id of 200 characters is valid, 201 is not. A site
    whose longest ids sit at the documented limit must not have every reading refused as bad_asset."""
    asset = "/".join(["x" * 64, "y" * 64, "z" * 64, "w" * 5])
    assert len(asset) == MAX_ASSET_CHARS
    p = parse({"ts": TS, "values": {"a": 1}}, topic=f"sensors/{asset}/readings")
    assert p.asset == asset and p.rejects == []
    longer = asset + "w"
    assert parse({"ts": TS, "values": {"a": 1}}, topic=f"sensors/{longer}/readings").rejects == ["bad_asset"]


def test_a_value_of_exactly_the_no_data_magnitude_is_a_missing_value():
    """A value of magnitude NO_DATA (1e30) *or more* is a historian's no-data marker: it is read as
    missing (NaN), either sign, not kept as a huge measurement that wrecks the score."""
    for marker in (NO_DATA, -NO_DATA):
        p = parse({"ts": TS, "values": {"a": marker, "b": 1.5}})
        assert p.rejects == [] and math.isnan(p.samples[0].values["a"]), marker
        assert p.samples[0].values["b"] == 1.5
    just_under = math.nextafter(NO_DATA, 0.0)
    assert parse({"ts": TS, "values": {"a": just_under}}).samples[0].values == {"a": just_under}
    assert parse({"ts": TS, "values": {"a": -just_under}}).samples[0].values == {"a": -just_under}


def test_a_reading_whose_only_values_are_ignored_names_is_bad_values():
    """A reading that holds nothing but ignored columns (a run state "RUN") carries no measurement:
    it is ``bad_values``, as an empty ``values`` is, not an accepted reading with no channels."""
    p = parse({"ts": TS, "values": {"state": "RUN"}}, ignored=frozenset({"state"}))
    assert p.samples == [] and p.rejects == ["bad_values"]


def test_ignored_text_does_not_cost_the_readings_nulls_and_integers():
    """With a text value under an ignored name, the other values are read as usual: an integer is a
    number and a null is a missing value (NaN); neither makes the reading ``bad_values``."""
    p = parse({"ts": TS, "values": {"state": "RUN", "a": 3, "b": None}}, ignored=frozenset({"state"}))
    assert p.rejects == []
    values = p.samples[0].values
    assert set(values) == {"a", "b"} and values["a"] == 3.0 and type(values["a"]) is float
    assert math.isnan(values["b"])


def test_a_numeric_ts_at_2200_is_refused():
    """TS_MAX (2200-01-01) is exclusive for a number as for a string: milliseconds sent as seconds
    and garbage clocks are ``bad_ts``; the last representable instant before it is taken."""
    assert parse_ts(TS_MAX) is None and parse_ts(int(TS_MAX)) is None
    assert parse({"ts": TS_MAX, "values": {"a": 1}}).rejects == ["bad_ts"]
    assert parse_ts(TS_MAX - 0.5) == TS_MAX - 0.5


def test_a_ts_string_of_64_characters_or_more_is_refused_63_is_read():
    """The length bound on a ``ts`` string (fewer than 64 characters) keeps a hostile sender from
    handing the date parser long strings; a long but valid stamp just under it is still read."""
    base, zone = "2023-11-14T22:13:20.", "+00:00"
    ok = base + "0" * (63 - len(base) - len(zone)) + zone
    too_long = base + "0" * (64 - len(base) - len(zone)) + zone
    assert len(ok) == 63 and len(too_long) == 64
    assert parse_ts(ok) == TS
    assert parse_ts(too_long) is None


def test_lower_case_t_and_z_of_rfc3339_are_read():
    """RFC 3339 allows a lower-case ``t`` separator and ``z`` zone, each on its own; Python's
    fromisoformat does not, so a gateway writing either had every reading refused as bad_ts."""
    assert parse_ts("2023-11-14T22:13:20z") == TS
    assert parse_ts("2023-11-14t22:13:20Z") == TS
    assert parse_ts("2023-11-14t22:13:20+01:00") == TS - 3600
    assert parse_ts("2023-11-14t22:13:20z") == TS


def test_a_batchs_verdict_does_not_depend_on_how_many_brackets_it_holds():
    """The JSON a message is read as is the same whatever its size: a batch holding something the
    fast parser refuses (a lone surrogate escape) is ``invalid_json`` whether it has 3 samples or
    enough to cross MAX_DEPTH brackets (the old-orjson fallback must not kick in on a safe orjson)."""
    def batch(n: int) -> bytes:
        samples = [{"ts": TS + i, "values": {"a": 1}} for i in range(n)]
        samples[0]["note"] = "\ud800"
        return json.dumps({"samples": samples}).encode()  # ascii: the surrogate as a \\ud800 escape

    small, large = batch(3), batch(MAX_DEPTH)
    assert large.count(b"{") > MAX_DEPTH and len(large) > MAX_DEPTH
    assert parse(small).rejects == ["invalid_json"]
    assert parse(large, max_samples=MAX_DEPTH, max_bytes=10**6).rejects == ["invalid_json"]


def test_a_string_ts_at_2000_exactly_is_read():
    """TS_MIN (2000-01-01T00:00:00Z) is inclusive for a string as for a number: only earlier is a
    device clock that was never set."""
    assert parse_ts("2000-01-01T00:00:00Z") == TS_MIN
    assert parse_ts("1999-12-31T23:59:59Z") is None


def test_a_ts_string_without_a_zone_is_utc_whatever_the_daemons_zone(monkeypatch):
    """A stamp without a zone is read as UTC (module docs), not in the daemon host's local zone:
    guessing the local zone shifts every reading by hours depending on where the daemon runs."""
    monkeypatch.setenv("TZ", "IST-5:30")  # UTC+05:30 as a POSIX rule: no tzdata needed
    time.tzset()
    try:
        assert time.timezone == -19800  # (the host took the zone: else the test could not fail)
        assert parse_ts("2023-11-14T22:13:20") == TS
        assert parse({"ts": "2023-11-14 22:13:20", "values": {"a": 1}}).samples[0].ts == TS
    finally:
        monkeypatch.undo()
        time.tzset()
