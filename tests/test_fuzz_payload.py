"""Hostile input for the payload parser: fuzzing at volume, deep nesting, huge payloads, topic tricks.

The parser runs on paho's network thread for every message anyone can publish, so "never raises"
is not enough: it must never crash the process (a C-level stack overflow is not an exception) and
every sample it keeps must be usable. ``tests/fuzz_payload.py`` is the same property for atheris
(coverage-guided, run by hand: ``python tests/fuzz_payload.py -runs=200000``).
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensorguard.service.payload import (
    MAX_ASSET_CHARS,
    MAX_ASSET_LEVELS,
    MAX_DEPTH,
    REJECT_REASONS,
    TS_MAX,
    TS_MIN,
    Parsed,
    asset_from_topic,
    parse_message,
)

ROOT = Path(__file__).resolve().parents[1]
TOPIC = "sensors/pump-7/readings"


def check_invariants(parsed: Parsed, topic: str) -> None:
    """What the daemon relies on, whatever the input."""
    assert isinstance(parsed, Parsed)
    assert set(parsed.rejects) <= set(REJECT_REASONS)
    assert "parse_error" not in parsed.rejects  # parse_error means a parser bug
    if parsed.asset is None:
        assert parsed.rejects == ["bad_asset"] and parsed.samples == []
        return
    assert parsed.asset == asset_from_topic(topic, "sensors")
    assert_safe_asset(parsed.asset)
    for sample in parsed.samples:
        assert type(sample.ts) is float and TS_MIN <= sample.ts < TS_MAX
        assert sample.values and all(type(k) is str for k in sample.values)
        assert all(type(v) is float and (math.isfinite(v) or math.isnan(v)) for v in sample.values.values())


SAFE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def assert_safe_asset(asset: str) -> None:
    """An asset id the parser produced is safe as a label, a topic level and a file path."""
    assert len(asset) <= MAX_ASSET_CHARS, asset
    levels = asset.split("/")
    assert 1 <= len(levels) <= MAX_ASSET_LEVELS, asset
    for level in levels:
        assert 1 <= len(level) <= 64 and level not in (".", ".."), asset
        assert set(level) <= SAFE_CHARS, asset


# JSON-ish documents biased towards the shapes the parser branches on.
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30), st.sampled_from(["2023-11-14T22:13:20Z", "2023-11-14 22:13:20+01:00", "NaN"]),
    st.integers(min_value=int(TS_MIN) - 5, max_value=int(TS_MAX) + 5),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.sampled_from(["ts", "values", "samples", "c0", "x", ""]) | st.text(max_size=5), inner,
                        max_size=5),
    ),
    max_leaves=8,
)
topics = st.one_of(
    st.just(TOPIC),
    st.builds(lambda a: f"sensors/{a}/readings", st.text(max_size=80)),
    st.text(max_size=120),
)


def encode(doc: object) -> bytes:
    try:
        return orjson.dumps(doc)
    except (TypeError, orjson.JSONEncodeError):  # NaN/inf are encoded as null by orjson; big ints fail
        import json

        return json.dumps(doc).encode()


@settings(max_examples=5000, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
@given(doc=documents, topic=topics, raw=st.binary(max_size=200), mode=st.sampled_from(["json", "bytes", "splice"]))
def test_fuzz_never_raises_and_keeps_only_usable_samples(doc, topic, raw, mode):
    body = encode(doc)
    if mode == "bytes":
        body = raw
    elif mode == "splice":  # valid JSON with garbage cut in: truncations, stray bytes, bad UTF-8
        cut = len(raw) % (len(body) + 1)
        body = body[:cut] + raw + body[cut:]
    parsed = parse_message(topic, body, "sensors", max_bytes=4096, max_samples=50)
    check_invariants(parsed, topic)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(samples=st.lists(st.fixed_dictionaries({"ts": scalars, "values": st.dictionaries(st.text(max_size=4), scalars,
                                                                                         max_size=4)}),
                        min_size=1, max_size=60))
def test_every_sample_is_accepted_or_rejected_exactly_once(samples):
    parsed = parse_message(TOPIC, encode({"samples": samples}), "sensors", max_samples=100)
    check_invariants(parsed, TOPIC)
    assert len(parsed.samples) + len(parsed.rejects) == len(samples)


DEEP_BODIES = ("arrays", "objects", "in_samples", "in_values", "unclosed", "with_nan", "strings_hide_closers")
DEEP = textwrap.dedent(
    """
    import sys, threading
    from sensorguard.service.payload import parse_message
    n = 100_000
    bodies = {
        "arrays": b"[" * n + b"]" * n,
        "objects": b'{"a":' * n + b"1" + b"}" * n,
        "in_samples": b'{"samples":[' + b"[" * n + b"]" * n + b"]}",
        "in_values": b'{"ts":1700000000,"values":' + b'{"a":' * n + b"1" + b"}" * n + b"}",
        "unclosed": b"[" * n,
        "with_nan": b"[NaN," + b"[" * n + b"]" * n + b"]",
        "strings_hide_closers": b'["]]]]",' * n + b"1" + b"]" * n,
    }
    out = {}
    def run():  # paho calls the parser on its own thread: test there, not only on the main thread
        for name, body in bodies.items():
            out[name] = parse_message("sensors/a/readings", body, "sensors", max_bytes=len(body)).rejects
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    print(out)
    """
)


def test_deeply_nested_json_is_rejected_not_a_crash():
    """100k nested arrays/objects: invalid_json. In a child process, so a segfault fails the test, not pytest.

    orjson before 3.9.15 has no recursion limit (CVE-2024-27454) and dies with SIGSEGV on this.
    """
    out = subprocess.run([sys.executable, "-c", DEEP], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"parser crashed the process (rc {out.returncode}): {out.stderr[-2000:]}"
    import ast

    rejects = ast.literal_eval(out.stdout.strip())
    assert rejects == {name: ["invalid_json"] for name in DEEP_BODIES}, (rejects, out.stderr[-2000:])


def test_nesting_just_within_the_limit_is_still_parsed():
    shallow = b"[" * (MAX_DEPTH - 2) + b"]" * (MAX_DEPTH - 2)
    assert parse_message(TOPIC, shallow, "sensors", max_bytes=10**6).rejects == ["not_object"]
    # a legitimate batch with far more brackets than MAX_DEPTH (but 4 deep) is not affected
    batch = {"samples": [{"ts": 1_700_000_000 + i, "values": {"c0": 1.0}} for i in range(1000)]}
    parsed = parse_message(TOPIC, orjson.dumps(batch), "sensors", max_bytes=10**6, max_samples=1000)
    assert len(parsed.samples) == 1000 and parsed.rejects == []
    with_nan = orjson.dumps(batch).replace(b'"ts":1700000000,', b'"ts":NaN,', 1)
    parsed = parse_message(TOPIC, with_nan, "sensors", max_bytes=10**6, max_samples=1000)
    assert len(parsed.samples) == 999 and parsed.rejects == ["non_finite"]


@pytest.mark.parametrize("size", [65_537, 1_000_000, 16 * 1024 * 1024])
def test_oversized_payloads_are_rejected_before_parsing(size):
    head = b'{"ts": 1700000000, "values": {"c0": '
    body = head + b"1" * (size - len(head) - 2) + b"}}"
    assert len(body) == size
    assert parse_message(TOPIC, body, "sensors").rejects == ["too_large"]  # default max_bytes 65536
    assert parse_message(TOPIC, body[:65_536], "sensors").rejects in (["invalid_json"], ["non_finite"])


@pytest.mark.parametrize(
    "topic",
    [
        "sensors/+/readings", "sensors/#", "sensors/#/readings", "sensors/a/+/readings", "sensors/../readings",
        "sensors/./readings", "sensors/a/../../etc/readings", "sensors/..", "sensors//readings",
        "sensors/a//readings", "/sensors/a/readings", "sensors/a/readings/", "sensors/readings", "",
        "sensors/" + "a" * 10_000 + "/readings", "sensors/" + "/".join(["a"] * 500) + "/readings",
        "sensors/pümpe/readings", "sensors/泵/readings", "sensors/\u202epump/readings", "sensors/a\x00b/readings",
        "sensors/\x00/readings", "sensors/a\nb/readings", "sensors/a b/readings", "sensors/$SYS/readings",
        "sensors/a%2F..%2Fb/readings", "sensors\\a\\readings", "sensors/a\\..\\b/readings",
    ],
)
def test_topic_tricks_are_bad_asset(topic):
    body = b'{"ts": 1700000000, "values": {"c0": 1}}'
    assert parse_message(topic, body, "sensors").rejects == ["bad_asset"]


@pytest.mark.parametrize(
    ("name", "kept"),
    [
        ("pump-7", True), ("site-a/line-2/pump-7", True), ("a..b", True), ("x" * 64, True), ("...a", True),
        ("..", False), (".", False), ("a/../b", False), ("a/./b", False), ("../a", False), ("a/..", False),
        ("a//b", False), ("/a", False), ("a/", False), ("x" * 65, False), ("/".join("abcdefghi"), False),
        ("a b", False), ("a+b", False), ("a#", False), ("pümpe", False), ("a\\..\\b", False),
    ],
)
def test_asset_ids_are_safe_as_labels_topics_and_file_names(name, kept):
    parsed = parse_message(f"sensors/{name}/readings", b'{"ts": 1700000000, "values": {"c0": 1}}', "sensors")
    if not kept:
        assert parsed.asset is None and parsed.rejects == ["bad_asset"], parsed
        return
    assert parsed.asset == name and parsed.rejects == []
    assert_safe_asset(parsed.asset)
