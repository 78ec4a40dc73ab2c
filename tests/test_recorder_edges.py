"""Edges of the recorder that no test pinned (found by mutating service/recorder.py): which guard
bands are saved, where the bounds on held readings lie and what each drop counts."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from sensorguard.service.record_files import GUARD_FILE
from sensorguard.service.recorder import Recorder

CHANNELS = ("a", "b")


def feed(rec: Recorder, asset: str, start: int, stop: int) -> None:
    for ts in range(start, stop):
        rec.add(asset, float(ts), np.array([ts, -ts], float))


def strict(path: Path) -> dict:
    """The file read as strict JSON (Infinity is no JSON: other readers refuse it)."""

    def refuse(name: str) -> float:
        raise ValueError(f"not JSON: {name}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def test_an_alert_up_is_no_guard_band_in_the_saved_file(tmp_path: Path):
    """Only finite bands (after a clear) are saved: an alert up is restored with its state, and its
    endless band written as ``Infinity`` made the file no JSON for any other reader."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0)
    feed(rec, "up", 0, 20)
    feed(rec, "cleared", 0, 20)
    rec.alert_raised("up", 20.0, "up@20")
    rec.alert_raised("cleared", 20.0, "cleared@20")
    rec.alert_cleared("cleared", 30.0, "cleared@20")
    rec.flush(now_ts=0.0)
    assert strict(tmp_path / GUARD_FILE) == {"cleared": 40.0}


def test_a_band_is_kept_until_its_assets_scored_windows_are_past_its_end(tmp_path: Path):
    """A band goes once it ended *before* the asset's newest scored window; one ending exactly
    there still holds back a late reading inside it (dropped one flush early, the fault's tail
    offered late was recorded as normal data)."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0)
    rec.alert_raised("p", 0.0, "p@0")
    rec.alert_cleared("p", 10.0, "p@0")  # the band ends at 20
    rec.judged("p", 20.0)
    rec.flush()
    assert rec.band_of("p") == 20.0
    rec.add("p", 19.5, [1.0, 2.0])  # late, inside the band
    assert rec.held("p") == []
    rec.judged("p", 20.5)
    rec.flush()
    assert rec.band_of("p") is None


def test_a_silent_assets_band_ends_by_the_most_advanced_assets_clock(tmp_path: Path):
    """A band of an asset not scored here since goes once the newest scored window of *any* asset is
    ``SILENT_GUARD_S`` (a day) past it; by the slowest asset's clock, one asset lagging kept every
    silent asset's band, in memory and in the saved file, for good."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0)
    rec.band("silent", 1000.0)
    rec.judged("slow", 500.0)
    rec.judged("fast", 1000.0 + 86400.0)
    rec.flush()
    assert rec.band_of("silent") == 1000.0  # a day past its end, not more
    rec.judged("fast", 1000.0 + 86400.0 + 1.0)
    rec.flush()
    assert rec.band_of("silent") is None and not (tmp_path / GUARD_FILE).exists()


def test_a_reading_dropped_at_the_cap_frees_its_place(tmp_path: Path):
    """At the cap on held readings the asset's oldest one goes for the new one: the count of held
    readings stays true, so once they are committed the cap has room again (miscounted, every later
    reading was dropped though nothing was held)."""
    row = 8 * len(CHANNELS) + 200  # what one held reading counts (PENDING_ROW_OVERHEAD)
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=3600, max_pending_bytes=3 * row)
    assert rec.pending_cap == 3
    feed(rec, "p", 0, 5)
    assert rec.held("p") == [2.0, 3.0, 4.0] and rec.dropped == 2
    rec.commit(now_ts=100.0)
    assert rec.held() == []
    feed(rec, "p", 100, 103)
    assert rec.held("p") == [100.0, 101.0, 102.0] and rec.dropped == 2


def test_the_backlog_bound_of_one_asset_holds_only_while_its_alert_is_up(tmp_path: Path):
    """``alert_backlog`` bounds an alert's held readings; an asset without an alert holds its guard
    band's readings whatever their number (bounded by ``max_pending_bytes`` alone), none dropped."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=3600, alert_backlog=3)
    feed(rec, "p", 0, 6)
    assert rec.held("p") == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0] and rec.dropped == 0
    rec.alert_raised("p", 6.0, "p@6")  # the alert's: its newest 3 kept
    assert rec.held("p") == [3.0, 4.0, 5.0] and rec.dropped == 3
    feed(rec, "p", 6, 8)
    assert rec.held("p") == [5.0, 6.0, 7.0] and rec.dropped == 5


def test_a_clock_stepping_back_drops_the_held_readings_stamped_after_it(tmp_path: Path):
    """``rewound``: the readings held with stamps after the new time go (a glitching clock's), those
    at or before it stay, though the oldest held one is before it (checked against the oldest, a
    glitch was never dropped while older readings were held); its judged time goes back too."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=3600)
    feed(rec, "p", 0, 10)
    rec.judged("p", 9.0)
    rec.rewound("p", 5.0)
    assert rec.held("p") == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    rec.commit(now_ts=None)  # judged back at 5: nothing is 10 s before it
    assert rec.held("p") == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    rec.judged("p", 13.5)
    rec.commit()
    assert rec.held("p") == [4.0, 5.0]


def test_readings_dropped_by_a_clock_stepping_back_free_their_place_under_the_cap(tmp_path: Path):
    """The readings a rewind drops leave the count of held readings: miscounted, the cap on held
    readings was reached early and true readings were dropped though few were held."""
    row = 8 * len(CHANNELS) + 200
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=3600, max_pending_bytes=10 * row)
    feed(rec, "p", 0, 10)
    rec.rewound("p", 4.0)
    feed(rec, "p", 5, 10)  # the true readings after the glitch
    assert rec.held("p") == [float(ts) for ts in range(10)] and rec.dropped == 0


def test_a_clock_stepping_back_takes_the_judged_time_back_with_it(tmp_path: Path):
    """A glitch's window scored minutes ahead moved the asset's judged time there; the rewind takes
    it back, or the readings held then were committed before their guard band had passed (an
    alert rising in it could no longer keep them out)."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=3600)
    feed(rec, "p", 0, 6)
    rec.judged("p", 100.0)  # the glitch
    rec.rewound("p", 5.0)
    rec.commit()
    assert rec.held("p") == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_the_judged_time_never_goes_back_for_an_older_window(tmp_path: Path):
    """Windows may be scored out of order (a backlog): an older one does not move the asset's
    judged time back, so readings already past the guard band are committed."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=3600)
    feed(rec, "p", 0, 15)
    rec.judged("p", 20.0)
    rec.judged("p", 10.0)
    rec.commit()
    assert rec.held("p") == [10.0, 11.0, 12.0, 13.0, 14.0]


def test_a_cleared_alert_files_nothing_more_at_a_shutdown(tmp_path: Path):
    """Once an alert cleared, a shutdown files none of the asset's later readings under it: they are
    normal data after its band (kept as the alert's, an acknowledgement taught or hid them)."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=3600)
    feed(rec, "p", 0, 10)
    rec.alert_raised("p", 5.0, "p@5")
    rec.alert_cleared("p", 9.0, "p@5")
    rec.flush()
    filed = sorted(p.name for p in (tmp_path / "alerts").glob("*.parquet"))
    feed(rec, "p", 20, 30)
    rec.judged("p", 29.0)
    rec.flush(force=True)
    assert sorted(p.name for p in (tmp_path / "alerts").glob("*.parquet")) == filed
    assert not rec.holding("p")


def test_bands_taken_on_from_other_workers_are_bounded_the_earliest_ending_going(tmp_path: Path, monkeypatch):
    """Bands handed over (``band``) count against ``MAX_GUARDS`` as a clear's do: past it the band
    that ends first goes (unbounded, a cluster's hand-overs grew memory and GUARD_FILE for good)."""
    from sensorguard.service import recorder

    monkeypatch.setattr(recorder, "MAX_GUARDS", 2)
    rec = Recorder(tmp_path, CHANNELS, guard_s=10)
    for asset, until in (("a", 300.0), ("b", 100.0), ("c", 200.0)):
        rec.band(asset, until)
    assert rec.bands() == {"a": 300.0, "c": 200.0}


def test_a_shutdown_files_no_held_reading_stamped_ahead_of_this_machines_clock(tmp_path: Path, caplog):
    """An alert up at a shutdown has its held readings filed up to its newest scored window, and
    never past this machine's clock (and its slack): a glitch stamped days ahead, scored, is no
    reading of the alert."""
    import time

    import pandas as pd

    now = time.time()
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=3600)
    rec.alert_raised("p", now - 100.0, "p@up")
    for ts in (now - 3.0, now - 2.0, now + 10 * 86400.0):
        rec.add("p", ts, [1.0, 2.0])
    rec.judged("p", now + 10 * 86400.0)
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.recorder"):
        rec.flush(force=True)
    frames = [pd.read_parquet(f) for f in (tmp_path / "alerts").glob("*.parquet")]
    assert sorted(t for f in frames for t in f["ts"]) == [now - 3.0, now - 2.0]
    # said, not dropped unseen (a walk replaying faster than real time lost an alert's readings)
    assert "1 reading of alert p@up scored but stamped over 60 s ahead of this machine's clock not filed" in caplog.text


def test_an_asset_back_while_its_silence_ends_files_nothing_and_keeps_its_new_readings(tmp_path: Path):
    """``forget(asset, after)``: the asset came back while its silence was being ended: its readings
    after ``after`` stay held, and nothing is filed under its alert (filed, they went into the
    alert's file and stayed held too: twice)."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=3600)
    rec.alert_raised("p", 0.0, "p@0")
    feed(rec, "p", 0, 10)
    rec.judged("p", 9.0)
    rec.forget("p", after=5.0)
    assert rec.held("p") == [6.0, 7.0, 8.0, 9.0]
    rec.flush()
    assert not list(tmp_path.glob("alerts/*.parquet"))


def test_an_asset_forgotten_with_its_alert_up_is_not_held_when_it_comes_back(tmp_path: Path):
    """An asset handed over with its alert up takes the alert with it: back here later, its
    readings are recorded again (left "holding", none was committed until an alert cleared here)."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=3600)
    rec.alert_raised("p", 0.0, "p@0")
    rec.forget("p")
    assert not rec.holding("p") and rec.band_of("p") is None
    feed(rec, "p", 100, 105)
    rec.commit(now_ts=200.0)
    assert rec.held("p") == []


def test_an_asset_forgotten_leaves_its_judged_time_behind(tmp_path: Path):
    """``forget`` drops the asset's judged time with its held readings: back here, its readings wait
    for its own new scored windows (judged by the old time, they were committed at once, their
    guard band unchecked)."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=3600)
    rec.judged("p", 100.0)
    rec.forget("p")
    feed(rec, "p", 50, 55)
    rec.commit()
    assert rec.held("p") == [50.0, 51.0, 52.0, 53.0, 54.0]


def test_a_file_is_written_once_flush_rows_readings_are_committed(tmp_path: Path):
    """``flush_rows`` committed readings are enough for a file, before ``flush_interval_s``."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=3600, flush_rows=5)
    feed(rec, "p", 0, 4)
    assert rec.flush(now_ts=100.0) is None
    feed(rec, "p", 4, 5)
    assert rec.flush(now_ts=100.0) is not None and rec.rows_written == 5


def test_flush_safely_reports_the_failures_since_its_last_call(tmp_path: Path, monkeypatch):
    """``flush_safely`` returns the write failures *since the last call*: the daemon adds them to
    its counter (the running total, added each time, counted every failure again and again)."""
    from sensorguard.service import recorder

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(recorder, "write_readings", full)
    rec = Recorder(tmp_path, CHANNELS, guard_s=0, flush_interval_s=0)
    feed(rec, "p", 0, 3)
    rec.judged("p", 10.0)
    assert rec.flush_safely() == 1
    feed(rec, "p", 3, 6)
    assert rec.flush_safely() == 1
    assert rec.flush_safely() == 0 and rec.write_failures == 2


def test_a_file_written_restarts_the_flush_interval(tmp_path: Path):
    """Past ``flush_interval_s`` a file is written with what was committed, and the interval starts
    again from it: the next readings wait for ``flush_rows`` or the next interval (not restarted,
    every flush after the first interval wrote a file of a few rows)."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=3600, flush_rows=1000)
    rec._last_flush -= 3600.0  # as if the last file were an hour old
    feed(rec, "p", 0, 3)
    assert rec.flush(now_ts=100.0) is not None
    feed(rec, "p", 3, 6)
    assert rec.flush(now_ts=100.0) is None and rec.rows_written == 3


def test_readings_lost_with_a_refused_file_are_counted_as_dropped(tmp_path: Path, monkeypatch):
    """A file the disk refuses (full, read-only) loses its readings, normal or an alert's own: each is
    counted in ``dropped`` (``sensorguard_record_dropped_total``), not only the one write failure (a
    walk with ``record_dir`` on a full tmpfs: "could not write 360 readings", the drop counter at 0)."""
    from sensorguard.service import alert_files, recorder

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(recorder, "write_readings", full)
    monkeypatch.setattr(alert_files, "write_readings", full)
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0)
    feed(rec, "p", 0, 40)
    rec.alert_raised("p", 30.0)  # readings 0-19 committed (before the band), 20-29 the alert's own
    rec.alert_cleared("p", 29.0, "p@1")
    assert rec.flush_safely() == 2
    assert rec.dropped == 20 + 10 and rec.rows_written == 0


def test_guard_bands_a_full_disk_refuses_are_counted_and_retried_once_a_flush_interval(tmp_path: Path, monkeypatch,
                                                                                      caplog):
    """``guard_bands.json`` refused (a full ``record_dir``): each refusal counts as a write failure
    (``sensorguard_record_write_failures_total``) and the file is tried again after ``flush_interval_s``,
    not at every flush (a walk: "could not keep the guard bands" logged every second, no counter
    moved); it is written once the disk takes it."""
    from sensorguard.service import recorder

    real, refusing = recorder.write_guard_bands, [True]

    def full(directory, bands):
        if refusing[0]:
            logging.getLogger("sensorguard.service.recorder").warning("recording: could not keep the guard bands")
            return False
        return real(directory, bands)

    monkeypatch.setattr(recorder, "write_guard_bands", full)
    clock = [1000.0]
    monkeypatch.setattr(recorder.time, "monotonic", lambda: clock[0])
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=60)
    rec.alert_raised("p", 0.0, "p@1")
    rec.alert_cleared("p", 10.0, "p@1")
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.recorder"):
        for _ in range(30):  # the daemon's housekeeping: a flush a second
            rec.flush_safely()
            clock[0] += 1.0
    assert caplog.text.count("could not keep the guard bands") == 1 and rec.write_failures == 1
    refusing[0] = False
    clock[0] += 30.0
    rec.flush_safely()
    assert json.loads((tmp_path / GUARD_FILE).read_text(encoding="utf-8")) == {"p": 20.0}


def test_an_acknowledgement_of_an_alert_whose_file_the_disk_refused_says_its_readings_were_lost(tmp_path: Path,
                                                                                             monkeypatch):
    """The disk refused an alert's file: its acknowledgement said "none of its readings is recorded
    here; the answer is kept here, for its parts filed elsewhere (another worker's record dir ...)"
    of a single daemon whose full disk lost them (a walk). It says they were lost."""
    from sensorguard.service import alert_files

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(alert_files, "write_readings", full)
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0, verdict=lambda alert_id: True)
    feed(rec, "p", 0, 40)
    rec.alert_raised("p", 30.0)
    rec.alert_cleared("p", 30.0, "p@1")
    rec.flush_safely()
    said = rec.acknowledged("p@1")
    assert said.startswith("none of its readings is recorded here") and "the disk refused their file" in said
    assert "filed elsewhere" not in said


def test_recording_says_once_that_writing_works_again_after_a_full_disk(tmp_path: Path, caplog):
    """The state files say "writing ... works again" after failures; the record dir said nothing, so
    an operator reading a full disk's warnings could not tell when recording had come back (a walk).
    The first write that works after failures says so, once, with how many failed."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=0, flush_interval_s=0)
    full = tmp_path / "19700101"  # the readings' day (their times are seconds after the epoch)
    full.write_text("a file where the day's folder goes: every write below it fails", encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="sensorguard.service.recorder"):
        for start in (0, 5):
            feed(rec, "p", start, start + 5)
            assert rec.flush(now_ts=1e9) is None
        full.unlink()  # the disk takes writes again
        for start in (10, 15):
            feed(rec, "p", start, start + 5)
            assert rec.flush(now_ts=1e9) is not None
    assert caplog.text.count("works again") == 1 and "works again (after 2 failed writes)" in caplog.text


def test_the_stops_last_flush_keeps_the_guard_bands_even_right_after_a_refusal(tmp_path: Path, monkeypatch):
    """A refused ``guard_bands.json`` waits ``flush_interval_s`` before it is tried again; the stop's
    last flush (``force``) waited too, so a stop within a minute of a refusal, the disk since freed,
    never wrote the bands, and after the restart the fault's tail was recorded as normal data."""
    from sensorguard.service import recorder

    real, refusing = recorder.write_guard_bands, [True]
    monkeypatch.setattr(recorder, "write_guard_bands",
                        lambda directory, bands: False if refusing[0] else real(directory, bands))
    clock = [1000.0]
    monkeypatch.setattr(recorder.time, "monotonic", lambda: clock[0])
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=60)
    rec.alert_raised("p", 0.0, "p@1")
    rec.alert_cleared("p", 10.0, "p@1")
    rec.flush_safely()  # refused
    refusing[0] = False
    clock[0] += 5.0
    rec.flush_safely(force=True)  # the stop
    assert json.loads((tmp_path / GUARD_FILE).read_text(encoding="utf-8")) == {"p": 20.0}
