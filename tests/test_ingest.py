"""Ingest without a broker: a topic and bytes in, buffered samples, rejects and counts out."""

import json
import logging
import time

from prometheus_client import CollectorRegistry

from sensorguard.service.config import load_settings
from sensorguard.service.ingest import Ingest
from sensorguard.service.metrics import Metrics
from sensorguard.service.windows import Buffers

T0 = 1_767_225_600.0


def ingest(**overrides) -> Ingest:
    settings = load_settings({"model": None, "metrics_port": 0, **overrides}, {}, require_model=False)
    buffers = Buffers(("a", "b"), 4, 2, max_assets=settings.max_assets)
    metrics = Metrics(CollectorRegistry(), settings.max_assets)
    return Ingest(settings, buffers, metrics, None)


def reading(ts: float, **values) -> bytes:
    return json.dumps({"ts": ts, "values": values or {"a": 1.0, "b": 2.0}}).encode()


def test_samples_are_buffered_until_a_window_is_due():
    taker = ingest()
    for i in range(3):
        assert taker.take("sensors/pump-1/readings", reading(T0 + i)) == ([], 1, "pump-1")
    assert taker.buffers.pending() == 0  # 3 samples of a 4-sample window: nothing due yet
    taker.take("sensors/pump-1/readings", reading(T0 + 3))
    assert taker.buffers.pending() == 1


def test_bad_messages_come_back_as_reasons_and_nothing_is_buffered():
    taker = ingest(max_assets=1)
    assert taker.take("sensors/pump-1/readings", b"{not json")[0] == ["invalid_json"]
    assert taker.take("sensors/pump-1/readings", reading(T0, a=1.0))[:2] == (["missing_channel"], 0)
    assert taker.take("sensors/pump-1/readings", reading(T0 + 1)) == ([], 1, "pump-1")
    assert taker.take("sensors/pump-2/readings", reading(T0)) == (["too_many_assets"], 0, "pump-2")
    assert len(taker.buffers) == 1


def test_an_asset_none_of_whose_readings_was_taken_holds_no_slot_and_ends_unsaid():
    """Found by a walk: made-up assets whose every reading was rejected (``missing_channel``) held
    all ``max_assets`` slots, shut a real asset out as ``too_many_assets`` until they went quiet,
    then each got a ``silent`` fault and a retained ``stale`` state. And ``sensorguard_assets``
    read 0 while assets filled their first windows (set only when a batch was taken)."""
    taker = ingest(max_assets=2)
    for k in range(3):
        assert taker.take(f"sensors/junk-{k}/readings", reading(T0, a=None))[:2] == (["missing_channel"], 0)
    assert len(taker.buffers) == 2  # the newest junk took the oldest's slot
    assert taker.take("sensors/pump-1/readings", reading(T0)) == ([], 1, "pump-1")
    assert taker.take("sensors/pump-2/readings", reading(T0)) == ([], 1, "pump-2")
    assert taker.take("sensors/pump-3/readings", reading(T0)) == (["too_many_assets"], 0, "pump-3")
    assert taker.metrics.assets._value.get() == 2
    taker.take("sensors/junk-9/readings", reading(T0, a=None))  # refused too: no slot is untaken now
    assert taker.buffers.assets() == ["pump-1", "pump-2"]
    full = ingest(max_assets=2)
    full.take("sensors/pump-1/readings", reading(T0))
    full.take("sensors/pump-2/readings", reading(T0, a=None))  # untaken so far
    assert full.take("sensors/bogus/readings", reading(T0, z=1.0))[0] == ["unknown_channel"]
    assert full.buffers.assets() == ["pump-1", "pump-2"]  # a refused reading evicts nothing (found by review)
    quiet = ingest(max_assets=2)
    quiet.take("sensors/junk/readings", reading(T0, a=None))
    quiet.take("sensors/pump-1/readings", reading(T0))
    assert quiet.forget_silent(time.monotonic() + 1) == ({"pump-1": T0}, [], {})  # junk goes too, unnamed
    assert len(quiet.buffers) == 0 and quiet.metrics.assets._value.get() == 0


def test_readings_outside_the_instances_partitions_are_acknowledged_not_scored():
    """Found by review: a session resumed after the partitions changed could keep an old
    subscription (its retained status, needed to undo it, could not be read at start): those
    readings were scored here and by their new owner, every alert raised twice."""
    taker = ingest(partition=["line-1/#"])
    assert taker.take("sensors/line-1/pump/readings", reading(T0)) == ([], 1, "line-1/pump")
    assert taker.take("sensors/line-2/pump/readings", reading(T0)) == (["not_ours"], 0, None)
    taker.accepting = True
    assert taker.accept("sensors/line-2/pump/readings", reading(T0 + 1))  # acknowledged: its owner has it
    assert taker.buffers.assets() == ["line-1/pump"]
    assert taker.metrics.rejected.labels("not_ours")._value.get() == 1
    everything = ingest()  # the default partition, "#": every asset is ours
    assert everything.take("sensors/line-2/pump/readings", reading(T0)) == ([], 1, "line-2/pump")


def test_a_reading_refused_by_the_last_runs_floor_says_what_it_was_not_after(caplog):
    """After a restart, `rejected reading: out_of_order: ts ...` named no stamp it was older than
    (the asset had no reading taken yet: the floor restored from the state file refused it), so the
    line did not say why (found in a walk)."""
    taker = ingest()
    taker.accepting = True
    taker.buffers.floors = {"clk-c": T0 + 10}  # as the daemon sets them from assets.json at start
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.ingest"):
        taker.accept("sensors/clk-c/readings", reading(T0 + 5))
        taker.accept("sensors/clk-c/readings", reading(T0 + 10))
    out_of_order, duplicate = (r.getMessage() for r in caplog.records)
    assert out_of_order.startswith("rejected reading: out_of_order: ts 2026-01-01T00:00:05.000Z; not after "
                                   "2026-01-01T00:00:10.000Z, the end of the last window judged before the restart")
    assert duplicate.startswith("rejected reading: duplicate_ts: ts 2026-01-01T00:00:10.000Z; not after ")
    taker.accept("sensors/clk-c/readings", reading(T0 + 11))  # taken: from here its newest reading is named
    assert taker.buffers.floors == {}


def test_a_bad_asset_line_says_what_an_asset_id_may_be(caplog):
    """Every rejected reading's line said what was at fault but bad_asset's (a walk: a 9-level id, a
    space or an accented letter was refused with no word why)."""
    taker = ingest()
    taker.accepting = True
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.ingest"):
        taker.accept("sensors/a/b/c/d/e/f/g/h/i/readings", reading(T0))
    assert caplog.records[0].getMessage().startswith(
        "rejected reading: bad_asset: an asset id is 1 to 8 levels of 1-64 letters, digits, '.', '_' or '-'")
    assert "asset None" not in caplog.records[0].getMessage()  # (none is read from a refused topic: a walk)


def test_the_first_line_of_a_reason_counts_so_far_not_since_a_last_line(caplog, monkeypatch):
    """The first rejection line said "1 like this since the last line" with no line before it (a walk)."""
    import sensorguard.service.ingest as ingest_module

    monkeypatch.setattr(ingest_module, "REJECT_LOG_INTERVAL_S", 0.0)
    taker = ingest()
    taker.accepting = True
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.ingest"):
        taker.accept("sensors/a/b/c/d/e/f/g/h/i/readings", reading(T0))
        taker.accept("sensors/a/b/c/d/e/f/g/h/i/readings", reading(T0))
    first, second = (r.getMessage() for r in caplog.records)
    assert first.endswith("1 like this so far)") and second.endswith("1 like this since the last line)")


def test_an_assets_alert_counter_is_at_zero_from_its_first_reading_taken():
    """Found by a deploy walk: ``sensorguard_alerts_total{asset}`` was made at the asset's first
    window, and a first window at twice the line raises at once (the one-window rule), so a new
    asset that came in faulty had its series born at 1: Prometheus's increase() cannot see a
    series' first value, and SensorguardAlarmFlood, SensorguardAssetAlertRate and the dashboard's
    "Alerts raised" never counted that alert. It is at 0 once a reading of the asset is taken, a
    whole window before a first window can raise."""
    taker = ingest(max_assets=1)
    registry = CollectorRegistry()
    taker.metrics = Metrics(registry, 1)

    def alerts(asset: str) -> float | None:
        return registry.get_sample_value("sensorguard_alerts_total", {"asset": asset})

    assert taker.take("sensors/pump-1/readings", reading(T0, a=None))[:2] == (["missing_channel"], 0)
    assert alerts("pump-1") is None  # nothing taken: no slot, no series
    assert taker.take("sensors/pump-1/readings", reading(T0 + 1)) == ([], 1, "pump-1")
    assert taker.buffers.pending() == 0 and alerts("pump-1") == 0.0  # before any window
    taker.metrics.alert_raised("pump-1")  # its first window raises
    assert alerts("pump-1") == 1.0
    assert taker.take("sensors/pump-2/readings", reading(T0)) == (["too_many_assets"], 0, "pump-2")
    assert alerts("pump-2") is None
