"""Recorder behaviour no test pinned, found by a mutation audit of service/recorder.py,
service/alert_files.py and service/record_files.py: the count behind the cap on held readings,
a shutdown's flush, file names, acknowledgements racing a write, write failures and damaged
guard-band files."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sensorguard.service import alert_files
from sensorguard.service.record_files import GUARD_FILE, read_guard_bands
from sensorguard.service.recorder import PENDING_ROW_OVERHEAD, Recorder

CHANNELS = ("a", "b")
ROW = 8 * len(CHANNELS) + PENDING_ROW_OVERHEAD  # what one held reading counts against max_pending_bytes


def feed(rec: Recorder, asset: str, start: int, stop: int) -> None:
    for ts in range(start, stop):
        rec.add(asset, float(ts), np.array([ts, -ts], float))


def times(paths: list[Path]) -> list[int]:
    """The reading times in ``paths``, sorted."""
    return sorted(int(t) for path in paths for t in pd.read_parquet(path)["ts"])


def assert_the_cap_counts_what_is_held(rec: Recorder) -> None:
    """A fresh asset fills exactly the room the cap has left: counted too high, readings were
    dropped though the cap had room; too low, more were held than ``max_pending_bytes`` allows."""
    dropped, room = rec.dropped, rec.pending_cap - len(rec.held())
    for k in range(room):
        rec.add("probe", 1e6 + k, [0.0, 0.0])
    assert rec.dropped == dropped and len(rec.held("probe")) == room
    rec.add("probe", 2e6, [0.0, 0.0])
    assert rec.dropped == dropped + 1


def test_readings_an_alerts_backlog_drops_free_their_place_under_the_cap(tmp_path: Path):
    """Readings over an alert's ``alert_backlog`` (as they arrive, or at its raise) leave the count
    of held readings: kept in it, a long alert filled the cap and every other asset's readings went."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=3600, alert_backlog=2,
                   max_pending_bytes=10 * ROW)
    feed(rec, "p", 0, 6)
    rec.alert_raised("p", 6.0, "p@6")  # 4 of its 6 held readings dropped at the raise
    feed(rec, "p", 6, 12)  # and one for each new one
    assert rec.held("p") == [10.0, 11.0] and rec.dropped == 10
    assert_the_cap_counts_what_is_held(rec)


def test_readings_a_clear_takes_free_their_place_under_the_cap(tmp_path: Path):
    """A clear takes the alert's held readings (to its file, or dropped in the band after it): they
    leave the count, or every clear shrank the room left for the guard bands' readings for good."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=3600, max_pending_bytes=10 * ROW)
    rec.alert_raised("p", 0.0, "p@0")
    feed(rec, "p", 0, 8)
    rec.alert_cleared("p", 3.0, "p@0")
    assert rec.held() == []
    assert_the_cap_counts_what_is_held(rec)


def test_readings_kept_when_an_asset_comes_back_still_count_under_the_cap(tmp_path: Path):
    """``forget(asset, after)`` keeps the readings after ``after`` held: they stay in the count (taken
    out with the rest, the recorder held more than ``max_pending_bytes``)."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=3600, max_pending_bytes=10 * ROW)
    feed(rec, "p", 0, 8)
    rec.forget("p", after=3.0)
    assert rec.held("p") == [4.0, 5.0, 6.0, 7.0]
    assert_the_cap_counts_what_is_held(rec)


def test_readings_written_as_a_part_free_their_place_under_the_cap(tmp_path: Path, monkeypatch):
    """The readings of an alert up written as a part (every ``ALERT_PART_S``) leave the count: kept
    in it, a long alert's parts filled the cap and every asset's readings went."""
    clock = [1000.0]
    monkeypatch.setattr(alert_files.time, "monotonic", lambda: clock[0])
    now = time.time()
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=3600, max_pending_bytes=10 * ROW)
    rec.alert_raised("p", now - 100, "p@1")
    rec.flush()  # its part clock starts
    for k in range(8):
        rec.add("p", now - 50 + k, [1.0, 2.0])
    rec.judged("p", now)
    clock[0] += alert_files.ALERT_PART_S
    rec.flush()
    assert rec.held() == [] and len(list((tmp_path / "alerts").glob("*.parquet"))) == 1
    assert_the_cap_counts_what_is_held(rec)


def test_a_shutdown_writes_the_committed_readings_before_the_flush_interval(tmp_path: Path):
    """``flush(force=True)`` (the daemon's stop) writes what is committed whatever the interval and
    ``flush_rows``: waiting for them, a stop lost up to a minute of normal readings."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=3600, flush_rows=1000)
    feed(rec, "p", 0, 20)
    assert rec.flush(now_ts=20.0) is None  # not due yet
    written = rec.flush(now_ts=20.0, force=True)
    assert written is not None and times([written]) == list(range(0, 10)) and rec.rows_written == 10


def test_two_files_written_in_the_same_millisecond_are_both_kept(tmp_path: Path, monkeypatch):
    """A file's name holds the time in ms and the process id, and a counter: two files written
    within a millisecond (a periodic flush right before the stop's) overwrote each other without it."""
    from sensorguard.service import recorder

    monkeypatch.setattr(recorder.time, "time", lambda: 1_767_225_600.0)
    rec = Recorder(tmp_path, CHANNELS, guard_s=0, flush_interval_s=0)
    feed(rec, "p", 0, 5)
    first = rec.flush(now_ts=100.0)
    feed(rec, "p", 5, 10)
    second = rec.flush(now_ts=100.0)
    assert first is not None and second is not None and first != second
    assert times(sorted(tmp_path.glob("*/*.parquet"))) == list(range(10))


def test_flush_safely_counts_a_bug_in_writing_and_never_raises(tmp_path: Path, monkeypatch, caplog):
    """An error other than a full disk in writing (a bug) is logged and counted as a write failure:
    the daemon's counter is the only sign recording stopped working, and scoring goes on."""
    from sensorguard.service import recorder

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(recorder, "write_readings", broken)
    rec = Recorder(tmp_path, CHANNELS, guard_s=0, flush_interval_s=0)
    feed(rec, "p", 0, 3)
    rec.judged("p", 10.0)
    with caplog.at_level(logging.ERROR, logger="sensorguard.service.recorder"):
        assert rec.flush_safely() == 1
    assert rec.write_failures == 1 and "writing readings failed" in caplog.text


def test_an_asset_back_after_its_alert_was_handed_over_files_nothing_under_it_at_a_shutdown(tmp_path: Path):
    """An asset handed over with its alert up takes the alert with it: back here, its readings are
    normal data, and a shutdown files none of them under the old alert (kept as up here, they went
    into that alert's file and its acknowledgement taught or hid them)."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=3600)
    rec.alert_raised("p", 0.0, "p@0")
    rec.forget("p")  # handed over (nothing held: nothing filed)
    feed(rec, "p", 100, 111)
    rec.judged("p", 112.0)
    written = rec.flush(force=True)
    assert not list(tmp_path.glob("alerts/*.parquet"))
    assert written is not None and times([written]) == [100, 101]


def test_the_line_on_readings_ahead_counts_only_the_scored_ones(tmp_path: Path, caplog):
    """At a shutdown the held readings of an alert up past its newest scored window are dropped (they
    may belong after its clear); only the scored ones stamped ahead of this machine's clock are
    said as "scored but stamped ahead" (counting every one, the line blamed the clock for them)."""
    now = time.time()
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=3600)
    rec.alert_raised("p", now - 100.0, "p@up")
    for ts in (now - 2.0, now + 86400.0, now + 2 * 86400.0):
        rec.add("p", ts, [1.0, 2.0])
    rec.judged("p", now + 86400.0)  # the last one not scored yet
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.recorder"):
        rec.flush(force=True)
    assert "1 reading of alert p@up scored but stamped" in caplog.text


def test_a_new_alert_of_the_asset_before_the_next_flush_starts_its_own_parts(tmp_path: Path, monkeypatch):
    """An alert cleared and the asset's next one raised between two flushes (a backlog scored in one
    batch): the new alert's parts start their own clock and ``alert_backlog`` (sharing the old
    one's, its first part held only what the old alert's parts had left of the backlog)."""
    clock = [1000.0]
    monkeypatch.setattr(alert_files.time, "monotonic", lambda: clock[0])
    now = time.time()
    rec = Recorder(tmp_path, CHANNELS, guard_s=1, flush_interval_s=3600, alert_backlog=10)
    rec.alert_raised("p", now - 1000, "p@1")
    rec.flush()  # its part clock starts
    for k in range(8):
        rec.add("p", now - 900 + k, [1.0, 2.0])
    rec.judged("p", now - 800)
    clock[0] += alert_files.ALERT_PART_S
    rec.flush()  # p@1's first part: 8 of the backlog of 10
    rec.alert_cleared("p", now - 800, "p@1")
    rec.alert_raised("p", now - 500, "p@2")  # before the next flush
    for k in range(8):
        rec.add("p", now - 400 + k, [1.0, 2.0])
    rec.judged("p", now - 300)
    clock[0] += 1
    rec.flush()  # p@2's clock starts here, not at p@1's
    assert not (tmp_path / "alerts" / "p@2.parquet").exists()
    clock[0] += alert_files.ALERT_PART_S
    rec.flush()
    assert len(times([tmp_path / "alerts" / "p@2.parquet"])) == 8  # its own backlog


def test_an_alert_up_writes_a_part_every_alert_part_s_not_every_flush(tmp_path: Path, monkeypatch):
    """After a part the clock starts again: an alert up writes a part every ``ALERT_PART_S``, not a
    file at every flush (once a second in the daemon) after its first."""
    clock = [1000.0]
    monkeypatch.setattr(alert_files.time, "monotonic", lambda: clock[0])
    now = time.time()
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=3600)
    rec.alert_raised("p", now - 1000, "p@1")
    rec.flush()
    for part in range(2):
        for k in range(5):
            rec.add("p", now - 900 + 10 * part + k, [1.0, 2.0])
        rec.judged("p", now - 800 + part)
        clock[0] += alert_files.ALERT_PART_S if part == 0 else 1.0
        rec.flush()
    assert [p.name for p in (tmp_path / "alerts").iterdir()] == ["p@1.parquet"]
    assert len(rec.held("p")) == 5


def test_an_acknowledgement_whose_file_cannot_be_moved_says_so(tmp_path: Path):
    """A full or read-only disk refusing to move an alert's file: the acknowledgement stands and its
    reply says the readings could not be filed (raised, the command's reply never went out)."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0, verdict=lambda alert_id: True)
    feed(rec, "p", 0, 20)
    rec.alert_raised("p", 20.0)
    rec.alert_cleared("p", 20.0, "p@1")
    rec.verdict = lambda alert_id: None
    rec.flush(now_ts=100.0)
    (tmp_path / "false_alarms").write_text("in the way")  # no folder can be made there
    rec.verdict = lambda alert_id: True
    assert rec.acknowledged("p@1").startswith("its readings could not be filed")
    assert (tmp_path / "alerts" / "p@1.parquet").exists()


def test_an_acknowledgement_while_its_file_is_written_files_it(tmp_path: Path, monkeypatch):
    """An acknowledgement arriving while the alert's file is being written (off the lock) is told its
    readings are kept, and the file lands in the folder it names (answered "none of its readings is
    recorded here", the operator was told wrong)."""
    verdicts: dict[str, bool] = {}
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0, verdict=verdicts.get)
    replies = []
    real = alert_files.write_readings

    def acknowledged_meanwhile(*args, **kwargs):
        verdicts["p@1"] = True
        replies.append(rec.acknowledged("p@1"))
        return real(*args, **kwargs)

    monkeypatch.setattr(alert_files, "write_readings", acknowledged_meanwhile)
    feed(rec, "p", 0, 20)
    rec.alert_raised("p", 20.0)
    rec.alert_cleared("p", 20.0, "p@1")
    rec.flush(now_ts=100.0)
    assert replies == ["its readings are learned as normal at the next retrain"]
    assert (tmp_path / "false_alarms" / "p@1.parquet").exists()


def test_an_acknowledgement_between_a_clear_and_its_write_files_it(tmp_path: Path):
    """A cleared alert's readings wait for the next flush: an acknowledgement meanwhile is told they
    are kept, and the flush files them where it says."""
    verdicts = {"p@1": False}
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0, verdict=verdicts.get)
    feed(rec, "p", 0, 20)
    rec.alert_raised("p", 20.0)
    rec.alert_cleared("p", 20.0, "p@1")
    assert "known fault" in rec.acknowledged("p@1")
    rec.flush(now_ts=100.0)
    assert (tmp_path / "faults" / "p@1.parquet").exists()


def test_an_alert_whose_file_is_gone_is_said_not_recorded_after_its_write(tmp_path: Path):
    """Once an alert's file was written it is no longer "being written": an acknowledgement after its
    file was trimmed away says nothing of it is recorded, not that it is kept."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0, verdict=lambda alert_id: True)
    feed(rec, "p", 0, 20)
    rec.alert_raised("p", 20.0)
    rec.alert_cleared("p", 20.0, "p@1")
    rec.flush(now_ts=100.0)
    (tmp_path / "false_alarms" / "p@1.parquet").unlink()  # trimmed by the size bound
    assert rec.acknowledged("p@1").startswith("none of its readings is recorded here")


def test_a_failed_alert_write_is_counted_and_the_rest_is_written(tmp_path: Path, monkeypatch, caplog):
    """A disk refusing one alert's file counts a write failure, logs it, and the other alerts' files
    and the normal readings are still written (raised, they were lost with it)."""
    real = alert_files.write_readings

    def refuse_p1(rows, channels, stem, meta=None):
        if meta and meta["alert_id"] == "p1@1":
            raise OSError(28, "No space left on device")
        return real(rows, channels, stem, meta)

    monkeypatch.setattr(alert_files, "write_readings", refuse_p1)
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0)
    for asset in ("p1", "p2"):
        feed(rec, asset, 0, 40)
        rec.alert_raised(asset, 30.0)
        rec.alert_cleared(asset, 30.0, f"{asset}@1")
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.recorder"):
        written = rec.flush(now_ts=100.0)
    assert rec.write_failures == 1 and "could not write the readings of alert p1@1" in caplog.text
    assert [p.name for p in (tmp_path / "alerts").iterdir()] == ["p2@1.parquet"]
    assert written is not None and rec.rows_written == 40  # the two assets' readings before the bands


def test_a_part_after_a_restart_never_replaces_the_acknowledged_first_one(tmp_path: Path):
    """An alert up through a restart, acknowledged in between: its first part was moved to
    ``false_alarms/``, and its next part is numbered on from there (looked up in ``alerts/`` alone, it
    took the first part's name and, filed by the same verdict, replaced it: the onset lost)."""
    verdicts: dict[str, bool] = {}
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0, verdict=verdicts.get)
    rec.alert_raised("p", 0.0, "p@1")
    feed(rec, "p", 0, 10)
    rec.judged("p", 9.0)
    rec.flush(force=True)  # the stop: the first part
    after = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0, verdict=verdicts.get)
    after.alert_raised("p", -np.inf, "p@1")  # restored still up
    verdicts["p@1"] = True
    assert "learned as normal" in after.acknowledged("p@1")
    feed(after, "p", 10, 20)
    after.alert_cleared("p", 19.0, "p@1")
    after.flush(now_ts=100.0)
    parts = sorted((tmp_path / "false_alarms").iterdir())
    assert [p.name for p in parts] == ["p@1+1.parquet", "p@1.parquet"] and times(parts) == list(range(20))


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"p": "soon", "q": 50.0, "r": Infinity}'])
def test_a_damaged_guard_band_file_never_stops_a_start(tmp_path: Path, text: str):
    """``guard_bands.json`` damaged (a full disk, a hand edit): the recorder starts with the bands it
    can read, and takes no endless one (it would hold the asset's readings for good)."""
    (tmp_path / GUARD_FILE).write_text(text, encoding="utf-8")
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0)
    assert rec.bands() == ({"q": 50.0} if "q" in text else {})
    feed(rec, "r", 0, 3)
    assert not rec.holding("r")  # (an endless band is an alert up: nothing committed until a clear)
    rec.commit(now_ts=100.0)
    assert rec.held("r") == rec.held("p") == []


def test_guard_bands_read_back_are_bounded(tmp_path: Path):
    """At most ``most`` bands are read back (a file grown by hand or by a bug cannot fill memory)."""
    (tmp_path / GUARD_FILE).write_text(json.dumps({f"p{k}": float(k) for k in range(5)}), encoding="utf-8")
    assert read_guard_bands(tmp_path, 2) == {"p0": 0.0, "p1": 1.0}


def test_guard_bands_the_disk_refused_are_written_at_a_later_flush(tmp_path: Path, caplog):
    """A disk refusing ``guard_bands.json`` is logged, recording goes on, and the bands are written at
    the next flush it allows (taken as saved, they were lost to a crash after it)."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0)
    blocker = tmp_path / (GUARD_FILE + ".tmp")
    blocker.mkdir()  # the temporary file cannot be written (a file in it: no empty folder a trim takes)
    (blocker / "x").write_text("x")
    feed(rec, "q", 0, 20)
    rec.alert_raised("p", 0.0, "p@1")
    rec.alert_cleared("p", 10.0, "p@1")
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.recorder"):
        assert rec.flush(now_ts=100.0) is not None
    assert "could not keep the guard bands" in caplog.text and not (tmp_path / GUARD_FILE).exists()
    (blocker / "x").unlink()
    blocker.rmdir()
    rec.flush(now_ts=100.0)
    assert json.loads((tmp_path / GUARD_FILE).read_text(encoding="utf-8")) == {"p": 20.0}


def test_a_store_of_exactly_its_size_bound_loses_no_file(tmp_path: Path):
    """``record_max_mb`` is the most the store holds: a store of exactly that size keeps every file
    (the oldest normal one went one byte early)."""
    from sensorguard.service.record_files import trim_store

    rec = Recorder(tmp_path, CHANNELS, guard_s=0, flush_interval_s=0)
    paths = []
    for k in range(3):
        feed(rec, "p", 10 * k, 10 * k + 10)
        paths.append(rec.flush(now_ts=1e9))
    trim_store(tmp_path, sum(p.stat().st_size for p in paths), max_age_s=86400.0)
    assert all(p.exists() for p in paths)


def test_the_folders_a_trim_empties_are_removed(tmp_path: Path):
    """A day folder whose files all went (by age or size) is removed with them: the store is left
    without a folder a day piling up."""
    import os

    from sensorguard.service.record_files import trim_store

    rec = Recorder(tmp_path, CHANNELS, guard_s=0, flush_interval_s=0)
    feed(rec, "p", 0, 10)
    old = rec.flush(now_ts=1e9)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    trim_store(tmp_path, 1 << 30, max_age_s=3600.0)
    assert not old.exists() and not old.parent.exists()


def test_the_bands_told_are_those_after_clears_never_an_alert_up(tmp_path: Path):
    """``bands`` (what cluster mode compares and passes on) is ``band_of`` of every asset: an alert up
    has no band to tell, its readings are held here."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0)
    rec.alert_raised("up", 0.0, "up@0")
    rec.alert_raised("cleared", 0.0, "cleared@0")
    rec.alert_cleared("cleared", 5.0, "cleared@0")
    assert rec.bands() == {"cleared": 15.0} and rec.band_of("up") is None


def test_recording_takes_the_settings_in_their_units(tmp_path: Path):
    """``recording``: ``record_max_mb`` in MiB, ``record_max_age_days`` in days, the guard band given
    (the bundle's, :func:`guard_seconds`) over ``record_guard_s``; no ``record_dir``, no recorder."""
    from dataclasses import replace

    from sensorguard.service.config import load_settings
    from sensorguard.service.recorder import recording

    settings = load_settings({"model": None, "broker": "mqtt://h", "record_dir": str(tmp_path), "record_max_mb": 5,
                              "record_max_age_days": 7, "record_guard_s": 60}, {}, require_model=False)
    rec = recording(settings, CHANNELS)
    assert rec is not None and rec.directory == tmp_path
    assert (rec.max_bytes, rec.max_age_s, rec.guard_s) == (5 << 20, 7 * 86400.0, 60.0)
    assert recording(settings, CHANNELS, guard_s=440.0).guard_s == 440.0
    assert recording(replace(settings, record_dir=None), CHANNELS) is None
    assert recording(replace(settings, record_dir=""), CHANNELS) is None  # (not the working directory)


def test_a_folder_named_like_a_partial_write_neither_stops_a_start_nor_is_removed(tmp_path: Path):
    """A start removes the ``.tmp`` files a crash left mid-write; a folder of that name is no such
    file (unlinking it raised, and the daemon did not start)."""
    (tmp_path / "old.tmp").mkdir()
    (tmp_path / "2026-01-01").mkdir()
    (tmp_path / "2026-01-01" / "part.parquet.tmp").write_bytes(b"half")
    Recorder(tmp_path, CHANNELS)
    assert (tmp_path / "old.tmp").is_dir() and not (tmp_path / "2026-01-01" / "part.parquet.tmp").exists()


def test_a_kept_answer_goes_at_the_age_limit_and_a_fresh_one_stays(tmp_path: Path):
    """An answer kept for an alert's parts filed elsewhere (``<id>.answer``, cluster mode) labels
    unanswered parts that go at ``record_max_age_days``: past that age it is deleted too (they were
    never deleted: one empty file more for each alert acknowledged so). An acknowledged alert's
    readings keep having no age limit."""
    import os

    from sensorguard.service.record_files import ANSWER, FALSE_ALARMS, FAULTS, trim_store

    old_time = time.time() - 7200
    old = [tmp_path / folder / f"pump@{k}{ANSWER}" for k, folder in enumerate((FALSE_ALARMS, FAULTS))]
    fresh = tmp_path / FAULTS / f"pump@9{ANSWER}"
    readings = tmp_path / FALSE_ALARMS / "pump@5.parquet"
    for path in (*old, fresh, readings):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"" if path.suffix == ANSWER else b"x" * 10)
    for path in (*old, readings):
        os.utime(path, (old_time, old_time))
    trim_store(tmp_path, 1 << 30, max_age_s=3600.0)
    assert not any(path.exists() for path in old)
    assert fresh.exists() and readings.exists()
