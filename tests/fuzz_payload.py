"""Coverage-guided fuzzing of the payload parser with atheris (run by hand; the suite never needs it).

    pip install atheris
    python tests/fuzz_payload.py -runs=200000          # or -max_total_time=300

The first input byte picks the topic (good, multi-level, or the rest of the input as a topic), the
rest is the payload. A crash, an exception, or a kept sample that is not a finite float in range
is a finding (atheris writes the input to crash-*). Same invariants as tests/test_fuzz_payload.py.
"""

from __future__ import annotations

import math
import sys

import atheris

with atheris.instrument_imports():
    from sensorguard.service.payload import REJECT_REASONS, TS_MAX, TS_MIN, parse_message

TOPICS = ("sensors/pump-7/readings", "sensors/site-a/line-2/pump-7/readings")


def one_input(data: bytes) -> None:
    if not data:
        return
    pick, body = data[0], data[1:]
    if pick % 3 == 2:
        topic, _, body = body.partition(b"\n")
        topic = topic.decode("utf-8", "replace")
    else:
        topic = TOPICS[pick % 3]
    parsed = parse_message(topic, body, "sensors", max_bytes=65536, max_samples=1000)
    assert set(parsed.rejects) <= set(REJECT_REASONS), parsed.rejects
    assert "parse_error" not in parsed.rejects, (topic, body[:200])
    for sample in parsed.samples:
        assert TS_MIN <= sample.ts < TS_MAX, sample
        assert all(type(v) is float and math.isfinite(v) for v in sample.values.values()), sample


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
