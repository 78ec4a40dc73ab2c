"""The recorder keeps only readings far from alerts, writes crash-safe files and survives a full disk."""

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sensorguard.service.recorder import PENDING_ROW_OVERHEAD, Recorder

CHANNELS = ("a", "b")


def feed(rec, asset, start, stop):
    for ts in range(start, stop):
        rec.add(asset, float(ts), np.array([ts, -ts], float))


def alert_times(directory) -> list[float]:
    """The reading times (seconds) in every part of every alert file under ``directory/alerts``."""
    frames = [pd.read_parquet(f) for f in sorted((directory / "alerts").glob("*.parquet"))]
    return sorted(int(t) for f in frames for t in f["ts"])


def read_all(directory):
    files = sorted(directory.glob("*/*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame()


def test_readings_near_alerts_are_not_recorded(tmp_path):
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0)
    feed(rec, "p1", 0, 100)
    feed(rec, "p2", 0, 100)
    rec.alert_raised("p1", 100.0)  # p1's readings from 90 on are in the guard band
    assert rec.holding("p1") and not rec.holding("p2")
    feed(rec, "p1", 100, 150)  # alerting: nothing recorded
    rec.alert_cleared("p1", 150.0)
    assert not rec.holding("p1")
    feed(rec, "p1", 150, 200)  # 150..159 still in the guard band after the clear
    feed(rec, "p2", 100, 200)
    rec.flush(now_ts=1000.0)
    frame = read_all(tmp_path)
    p1 = sorted(frame[frame.asset == "p1"].ts)
    assert p1 == list(range(0, 90)) + list(range(160, 200))
    assert sorted(frame[frame.asset == "p2"].ts) == list(range(0, 200))
    assert list(frame.columns) == ["ts", "asset", "a", "b"]
    assert (frame["b"] == -frame["ts"]).all()


def test_guard_band_holds_recent_readings_back(tmp_path):
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0)
    feed(rec, "p1", 0, 20)
    rec.flush(now_ts=20.0)
    assert sorted(read_all(tmp_path).ts) == list(range(0, 10))


def test_stale_temp_files_are_removed_and_ignored(tmp_path):
    day = tmp_path / "20260101"
    day.mkdir()
    (day / "part-1.parquet.tmp").write_bytes(b"half written")
    Recorder(tmp_path, CHANNELS)
    assert not list(tmp_path.glob("**/*.tmp"))


def test_size_bound_drops_oldest_files(tmp_path):
    rec = Recorder(tmp_path, CHANNELS, guard_s=0, flush_interval_s=0, max_bytes=6000)
    for i in range(6):
        feed(rec, "p1", i * 200, (i + 1) * 200)
        rec.flush(now_ts=1e9)
        time.sleep(0.01)
    files = list(tmp_path.glob("*/*.parquet"))
    assert sum(f.stat().st_size for f in files) <= 6000
    assert read_all(tmp_path).ts.max() == 1199  # the newest survive


def test_age_bound(tmp_path):
    rec = Recorder(tmp_path, CHANNELS, guard_s=0, flush_interval_s=0, max_age_s=3600)
    feed(rec, "p1", 0, 10)
    old = rec.flush(now_ts=1e9)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    feed(rec, "p1", 10, 20)
    rec.flush(now_ts=1e9)
    assert sorted(read_all(tmp_path).ts) == list(range(10, 20))


def test_a_changed_worker_count_hands_the_old_layouts_recordings_to_a_recorder_that_trims_them(tmp_path):
    """serve --workers 2 recorded into w0/ and w1/; after going to one worker nothing trimmed them
    and every retrain read them (found by review). Adopted, the age bound removes the old one."""
    from sensorguard.service.record_layout import adopt_orphans

    for k in (0, 1):
        rec = Recorder(tmp_path / f"w{k}", CHANNELS, guard_s=0, flush_interval_s=0)
        feed(rec, f"p{k}", 0, 10)
        written = rec.flush(now_ts=1e9)
        if k == 1:  # w1's file is 90 days old
            os.utime(written, (time.time() - 90 * 86400, time.time() - 90 * 86400))
    (tmp_path / "w0" / "alerts").mkdir()
    (tmp_path / "w0" / "alerts" / "p0@1.parquet").write_bytes((tmp_path / "w0").glob("*/*.parquet").__next__()
                                                              .read_bytes())
    assert adopt_orphans(tmp_path, [tmp_path]) == 3
    assert not (tmp_path / "w0").exists() and not (tmp_path / "w1").exists()
    assert (tmp_path / "alerts" / "p0@1.parquet").exists()  # an acknowledgement finds it by name
    rec = Recorder(tmp_path, CHANNELS, guard_s=0, flush_interval_s=0, max_age_s=30 * 86400)
    feed(rec, "p2", 100, 110)
    rec.flush(now_ts=1e9)
    assert set(read_all(tmp_path).asset) == {"p0", "p2"}  # p1's 90-day-old readings were trimmed
    assert adopt_orphans(tmp_path, [tmp_path / "w0", tmp_path / "w1"]) == 3  # and back to two workers
    assert len(list((tmp_path / "w0").glob("*/*.parquet"))) == 3


def test_the_caps_hold_when_only_alerts_are_written(tmp_path):
    """Alert files were written without trimming: a fleet that only alerts kept every file past the
    size and age caps (found by review)."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=0, flush_interval_s=3600, max_bytes=1)
    for k in range(5):
        feed(rec, "p1", 200 * k, 200 * k + 50)
        rec.alert_raised("p1", 200.0 * k)
        rec.alert_cleared("p1", 200.0 * k + 50, f"p1@{k}", 5.0)
        assert rec.flush(now_ts=200.0 * k + 60) is None  # no normal file is due: only the alert's
    assert len(list(tmp_path.glob("*/*.parquet"))) <= 1  # the newest may stay; the rest are trimmed


def test_full_disk_is_counted_not_fatal(tiny_disk):
    rec = Recorder(tiny_disk, CHANNELS, guard_s=0, flush_interval_s=0)
    rng = np.random.default_rng(0)
    for ts in range(20000):  # incompressible values: far more than 64 KiB of Parquet
        rec.add("p1", float(ts), rng.normal(size=2))
    assert rec.flush(now_ts=1e9) is None
    assert rec.write_failures == 1
    assert not list(tiny_disk.glob("**/*.tmp")) and not list(tiny_disk.glob("*/*.parquet"))
    feed(rec, "p1", 30000, 30010)  # small writes still work once space allows
    assert rec.flush(now_ts=1e9) is not None and rec.rows_written == 10


def test_each_asset_is_committed_on_its_own_clock(tmp_path):
    """One asset whose clock runs ahead used to commit the others' readings before they were judged."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0)
    feed(rec, "ahead", 900, 1000)
    feed(rec, "behind", 0, 100)
    rec.judged("ahead", 999.0)
    rec.judged("behind", 50.0)  # its windows are scored up to ts 50 only
    rec.flush(force=True)
    got = read_all(tmp_path)
    assert got[got.asset == "behind"].ts.max() < 40  # not up to 989, as the newest clock would allow
    assert got[got.asset == "ahead"].ts.max() == 988
    rec.alert_raised("behind", 60.0)  # a fault among readings 50-59: none of them was recorded
    assert not ((got.asset == "behind") & (got.ts >= 50)).any()


def test_held_readings_are_bounded_overall_and_drops_counted(tmp_path):
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0,
                   max_pending_bytes=10 * (16 + PENDING_ROW_OVERHEAD))
    assert rec.pending_cap == 10
    rec.alert_raised("p1", 0.0)  # alerting: everything it sends is held
    feed(rec, "p1", 1, 13)
    feed(rec, "p2", 1, 4)  # p2 holds nothing yet: its new readings go
    assert rec.dropped == 5 and len(rec.held()) == 10
    assert rec.held("p1")[0] == 3.0 and rec.held("p2") == []  # p1 lost its oldest


def test_the_daemons_guard_band_follows_the_bundles_sample_period(tiny_bundle, tmp_path, caplog):
    """Its start-up line says the band in force: it said record_guard_s (300 s) where 440 s applied (a walk)."""
    import logging
    from dataclasses import replace

    from tests.test_daemon import make

    slow = replace(tiny_bundle, sample_period=20.0)  # window 16 + 3 x hop 2 = 22 samples = 440 s
    daemon, _ = make(slow, record_dir=str(tmp_path / "rec"), record_guard_s=300)
    assert daemon.recorder.guard_s == 440.0
    with caplog.at_level(logging.INFO, logger="sensorguard.service.daemon"):
        daemon.announce()
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("recording readings")]
    assert "(guard 440 s, longer than record_guard_s 300 s" in line
    fast, _ = make(tiny_bundle, record_dir=str(tmp_path / "rec2"), record_guard_s=300)
    assert fast.recorder.guard_s == 300.0
    fast.models.on_swap(slow)  # a hot swap to a slower model: its band, not the first model's (review)
    assert fast.recorder.guard_s == 440.0


def test_the_guard_band_covers_the_samples_an_alert_needs_to_rise():
    from sensorguard.service.recorder import guard_seconds

    assert guard_seconds(300.0, window=32, hop=4, raise_after=3, sample_period=1.0) == 300.0
    assert guard_seconds(300.0, window=32, hop=4, raise_after=3, sample_period=10.0) == 440.0
    assert guard_seconds(300.0, window=32, hop=4, raise_after=3, sample_period=None) == 300.0


def test_an_alerts_readings_are_filed_by_its_acknowledgement_and_only_false_alarms_are_learned(tmp_path):
    from sensorguard.training.recorded_alerts import known_faults
    from sensorguard.training.retrain import load_recorded

    verdicts: dict[str, bool] = {}
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0, verdict=verdicts.get)
    for asset, alert_id in (("line/p1", "line/p1@100000"), ("p2", "p2@100000"), ("p3", "p3@100000")):
        feed(rec, asset, 0, 150)
        rec.alert_raised(asset, 100.0)
        rec.alert_cleared(asset, 150.0, alert_id, 7.5)  # 90..149: the alert's own readings
        feed(rec, asset, 160, 200)
    verdicts["p3@100000"] = True  # acknowledged while still up: its clear files it as a false alarm
    rec.flush(now_ts=1000.0)
    assert sorted(p.name for p in (tmp_path / "alerts").iterdir()) == ["line%2Fp1@100000.parquet", "p2@100000.parquet"]
    assert [p.name for p in (tmp_path / "false_alarms").iterdir()] == ["p3@100000.parquet"]
    verdicts["line/p1@100000"], verdicts["p2@100000"] = True, False
    assert "learned as normal" in rec.acknowledged("line/p1@100000")
    assert "known fault" in rec.acknowledged("p2@100000")
    rec.alert_raised("p9", 300.0, "p9@1")
    verdicts["p9@1"] = True  # no file (still up, or not flushed yet): its clear files it by the verdict
    assert "learned as normal" in rec.acknowledged("p9@1") and not (tmp_path / "false_alarms" / "p9@1.parquet").exists()
    rec.forget("p9")
    verdicts["p8@1"] = True  # nothing recorded of it at all: said, not promised
    assert rec.acknowledged("p8@1").startswith("none of its readings is recorded here")
    verdicts["p3@100000"] = False  # a second acknowledgement changes its mind: the file follows
    rec.acknowledged("p3@100000")
    assert not any((tmp_path / "alerts").iterdir())

    learned = load_recorded(tmp_path)  # the normal readings and the one false alarm; no fault
    by_asset = {a: sorted(learned.times[learned.assets == a]) for a in set(learned.assets)}
    # the store's own files, read folder by folder, are no rows out of time order (each retrain said so: a walk)
    assert not [n for n in learned.notes if "not in time order" in n], learned.notes
    assert by_asset["line/p1"] == list(range(0, 150)) + list(range(160, 200))
    assert by_asset["p2"] == by_asset["p3"] == list(range(0, 90)) + list(range(160, 200))
    faults = known_faults(tmp_path, CHANNELS)
    assert [(name, sorted(data.times)) for name, data in faults] == [
        ("p2@100000", list(range(90, 150))), ("p3@100000", list(range(90, 150)))]


def test_an_alert_rising_in_a_maintenance_commits_nothing_it_held(tmp_path):
    """Found by review: a maintenance start holds the asset's readings (and the guard band before
    it); a real alert rising during it committed every held reading older than its own guard band,
    the maintenance's readings and the band before it included, as normal training data."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0)
    feed(rec, "p1", 0, 120)
    rec.alert_raised("p1", 120.0)  # the maintenance starts: 110.. held
    feed(rec, "p1", 120, 200)
    rec.alert_raised("p1", 190.0)  # an alert rises in it
    rec.alert_cleared("p1", 300.0)
    feed(rec, "p1", 300, 400)
    rec.flush(now_ts=1000.0)
    kept = sorted(read_all(tmp_path).ts)
    assert kept == list(range(0, 110)) + list(range(310, 400))


def test_an_alert_file_an_acknowledgement_filed_first_is_no_write_failure(tmp_path):
    """Found by review: an acknowledgement landing between an alert's write and its filing moved the
    file first; filing it again raised FileNotFoundError, counted and logged as a failed write."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0)
    rec.verdict = lambda alert_id: True  # acknowledged as a false alarm
    gone = tmp_path / "alerts" / "p1@1.parquet"  # already moved by the acknowledgement
    assert rec._file(gone, "p1@1") == "false_alarms"


def test_an_alert_up_through_a_restart_keeps_its_readings_in_parts_filed_together(tmp_path):
    """A shutdown dropped the readings held for an alert still up, and its acknowledgement after
    the restart still said they were kept (found by review): they are written as the alert's first
    part, its readings after the restart as the next, and an acknowledgement files both."""
    from sensorguard.training.recorded_alerts import known_faults

    verdicts: dict[str, bool] = {}
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0, verdict=verdicts.get)
    feed(rec, "p1", 0, 100)
    rec.alert_raised("p1", 100.0, "p1@100000")
    feed(rec, "p1", 100, 150)
    rec.judged("p1", 140.0)  # 141..149 not scored yet at the stop: they may belong after its clear (a review)
    rec.flush(now_ts=150.0, force=True)  # shutdown with the alert up
    assert [p.name for p in (tmp_path / "alerts").iterdir()] == ["p1@100000.parquet"]
    assert alert_times(tmp_path) == list(range(90, 141))

    after = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0, verdict=verdicts.get)
    after.alert_raised("p1", -np.inf, "p1@100000")  # restored still up
    feed(after, "p1", 150, 200)
    after.alert_cleared("p1", 180.0, "p1@100000", 3.0)
    after.flush(now_ts=1000.0)
    assert sorted(p.name for p in (tmp_path / "alerts").iterdir()) == ["p1@100000+1.parquet", "p1@100000.parquet"]
    verdicts["p1@100000"] = False
    assert "known fault" in after.acknowledged("p1@100000")
    assert not (tmp_path / "alerts").exists() or not any((tmp_path / "alerts").iterdir())
    [(name, fault)] = known_faults(tmp_path, CHANNELS)  # one fault, both parts
    assert name == "p1@100000" and sorted(fault.times) == [*range(90, 141), *range(150, 181)]  # to its clear


def test_an_alert_up_has_its_judged_readings_written_as_parts_so_a_kill_loses_few(tmp_path, monkeypatch):
    """A walk: held until its clear (or a clean stop), every reading of an alert up was lost to a
    ``kill -9``, and its acknowledgement as a false alarm taught the retrain only what came after the
    restart. Every ALERT_PART_S the readings up to its newest scored window go out as a part; those
    after it stay held (they may belong after the clear)."""
    from sensorguard.service import alert_files as recorder_module

    clock = [1000.0]
    monkeypatch.setattr(recorder_module.time, "monotonic", lambda: clock[0])
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0)
    feed(rec, "p1", 0, 100)
    rec.alert_raised("p1", 100.0, "p1@100000")
    feed(rec, "p1", 100, 150)
    rec.judged("p1", 140.0)
    rec.flush()  # the first flush with it up starts its clock
    assert not (tmp_path / "alerts").exists()
    clock[0] += recorder_module.ALERT_PART_S - 1
    rec.flush()
    assert not (tmp_path / "alerts").exists()
    clock[0] += 1
    rec.flush()
    assert [p.name for p in (tmp_path / "alerts").iterdir()] == ["p1@100000.parquet"]
    assert alert_times(tmp_path) == list(range(90, 141))
    assert rec.held("p1") == list(range(141, 150))  # after its newest scored window: still held
    del rec  # killed: nothing more written
    after = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0)
    after.alert_raised("p1", -np.inf, "p1@100000")  # restored still up
    feed(after, "p1", 160, 200)
    after.alert_cleared("p1", 180.0, "p1@100000", 3.0)
    after.flush(now_ts=1000.0)
    assert sorted(p.name for p in (tmp_path / "alerts").iterdir()) == ["p1@100000+1.parquet", "p1@100000.parquet"]
    assert alert_times(tmp_path) == [*range(90, 141), *range(160, 181)]  # to its clear


def test_an_alerts_parts_list_no_folder_after_the_first_keep_its_backlog_and_leave_stamps_ahead_held(
        tmp_path, monkeypatch):
    """From a review of the parts: each part after the first listed every folder of the store (the
    stall a storm of clears once caused, back every 10 minutes); parts took every judged reading, so
    ``alert_backlog`` no longer bounded what one alert wrote; and a reading stamped ahead of this
    machine's clock, which a rewind takes back as never true, went into a part."""
    from sensorguard.service import alert_files

    clock, listed = [1000.0], []
    monkeypatch.setattr(alert_files.time, "monotonic", lambda: clock[0])
    real = alert_files.alert_parts
    monkeypatch.setattr(alert_files, "alert_parts", lambda d, a: listed.append(a) or real(d, a))
    now = time.time()
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0, alert_backlog=120)
    rec.alert_raised("p1", now - 1000, "p1@1")
    rec.flush()  # its clock starts
    for part in range(3):
        for ts in range(100):
            rec.add("p1", now - 1000 + 100 * part + ts, np.array([ts, -ts], float))
        rec.judged("p1", now - 1000 + 100 * part + 99)
        clock[0] += alert_files.ALERT_PART_S
        rec.flush()
    assert listed == []  # the first part's number was known: nothing listed
    # parts capped at the backlog (its first readings), the held ones apart (its last)
    assert len(alert_times(tmp_path)) == 120 and len(rec.held("p1")) == 120
    ahead = now + 3600.0
    rec.add("p1", ahead, np.array([0.0, 0.0]))
    rec.judged("p1", ahead)  # a window ended on it
    clock[0] += alert_files.ALERT_PART_S
    rec.alert_backlog = 10_000
    rec.flush()
    assert rec.held("p1") == [ahead]  # left for a rewind to take back
    assert len(alert_times(tmp_path)) == 120 + 119  # (the held ones, less the oldest the reading ahead pushed out)


def test_recording_goes_on_after_the_store_was_removed_by_hand(tmp_path):
    import shutil

    store = tmp_path / "recorded"
    rec = Recorder(store, CHANNELS, guard_s=10, flush_interval_s=0)
    feed(rec, "p1", 0, 50)
    assert rec.flush(now_ts=50.0) is not None
    shutil.rmtree(store)  # "start fresh"
    feed(rec, "p1", 50, 100)
    assert rec.flush(now_ts=100.0) is not None and rec.write_failures == 0
    assert sorted(read_all(store).ts) == list(range(40, 90))


def test_a_held_reading_costs_what_the_cap_counts(tmp_path):
    """The daemon hands over a list per reading; held as one, a row cost 2.5x what the cap counted."""
    import tracemalloc

    rec = Recorder(tmp_path, tuple(f"c{j}" for j in range(10)), guard_s=1e9)
    tracemalloc.start()
    for i in range(20_000):
        rec.add("p1", float(i), [float(i + j) for j in range(10)])
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert used / 20_000 <= 1.1 * (8 * 10 + PENDING_ROW_OVERHEAD)


def test_the_guard_band_after_a_clear_holds_over_a_restart(tmp_path):
    """The band after a clear lived in memory: restarted a minute after the clear, the daemon
    recorded the rest of the fault's tail as normal data (found by review)."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=100, flush_interval_s=0)
    feed(rec, "p1", 0, 10)
    rec.alert_raised("p1", 10.0, "p1@10000")
    feed(rec, "p1", 10, 50)
    rec.alert_cleared("p1", 50.0, "p1@10000")  # the band runs to 150
    rec.flush(now_ts=60.0, force=True)
    after = Recorder(tmp_path, CHANNELS, guard_s=100, flush_interval_s=0)
    feed(after, "p1", 60, 300)
    after.flush(now_ts=1000.0, force=True)
    normal = read_all(tmp_path)
    normal = normal[normal.ts >= 60]
    assert normal.ts.min() == 150  # nothing of the band after the clear


def test_a_silent_assets_guard_band_outlives_it(tmp_path):
    """Found by review: an asset that went silent after its alert (a machine tripping on its fault)
    was forgotten with its guard band, and its restart readings inside the band were recorded as
    normal data."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=440, flush_interval_s=0)
    rec.alert_raised("p", 1000.0, "p@1000000")
    rec.alert_cleared("p", 2000.0, "p@1000000")  # the band runs to 2440
    rec.forget("p")  # silent (the daemon files the alert and forgets the asset)
    feed(rec, "p", 2350, 2500)
    rec.flush(now_ts=10_000.0)
    assert sorted(read_all(tmp_path).ts) == list(range(2440, 2500))


def test_guard_bands_survive_a_crash(tmp_path):
    """Found by review: the bands were saved only by a clean stop (flush(force=True)); after a
    crash the fault's tail after a clear was recorded as normal data."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0)
    rec.alert_raised("p1", 100.0, "p1@100000")
    rec.alert_cleared("p1", 150.0, "p1@100000")
    rec.flush()  # a routine flush, then the process dies (no forced flush)
    again = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0)
    feed(again, "p1", 150, 200)
    again.flush(now_ts=1000.0)
    assert sorted(read_all(tmp_path).ts) == list(range(160, 200))


def test_acknowledged_alerts_have_no_age_limit_and_go_last_by_size(tmp_path):
    """Found by review: known faults and false alarms were deleted by age like any recording (30
    days by default), so the retrain gate's known faults were gone without a word; the docs told
    operators to size record_max_mb to keep months of them. Now only the size limit takes them,
    after every normal and unanswered file."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=0, flush_interval_s=0, max_age_s=3600)
    feed(rec, "p1", 0, 10)
    normal = rec.flush(now_ts=1e9)
    (tmp_path / "faults").mkdir()
    (tmp_path / "false_alarms").mkdir()
    fault = tmp_path / "faults" / "p1@1.parquet"
    false = tmp_path / "false_alarms" / "p1@2.parquet"
    for path in (fault, false):
        path.write_bytes(normal.read_bytes())
    for path in (normal, fault, false):
        os.utime(path, (time.time() - 90 * 86400, time.time() - 90 * 86400))
    feed(rec, "p1", 10, 20)
    rec.flush(now_ts=1e9)
    assert not normal.exists() and fault.exists() and false.exists()  # 90 days old: only the normal one went
    size = fault.stat().st_size
    rec.max_bytes = 4 * size + size // 2  # the acknowledged files fit in their half, and two normal files
    for start in (20, 30, 40, 50):
        feed(rec, "p1", start, start + 10)
        rec.flush(now_ts=1e9)  # the oldest normal files go first
    normal_files = sorted(tmp_path.glob("19*/*.parquet"))  # (day folders of 1970: the readings are stamped 0-60 s)
    assert fault.exists() and false.exists() and [pd.read_parquet(f).ts.min() for f in normal_files] == [40, 50]


def test_acknowledged_alerts_keep_at_most_half_the_budget_so_normal_data_is_still_recorded(tmp_path, caplog):
    """Found by review: taken last by size, acknowledged alerts that filled ``record_max_mb`` had
    every new normal file deleted as it was written, without a word, so a retrain found no recent
    normal data. They keep half the budget; beyond it their oldest go, and the log says so."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=0, flush_interval_s=0)
    feed(rec, "p1", 0, 10)
    normal = rec.flush(now_ts=1e9)
    size = normal.stat().st_size
    (tmp_path / "faults").mkdir()
    (tmp_path / "false_alarms").mkdir()
    labelled = [tmp_path / ("faults" if k % 2 else "false_alarms") / f"p1@{k}.parquet" for k in range(4)]
    for k, path in enumerate(labelled):
        path.write_bytes(normal.read_bytes())
        os.utime(path, (time.time() - 1000 + k, time.time() - 1000 + k))
    rec.max_bytes = 4 * size  # four acknowledged files would fill it
    feed(rec, "p1", 10, 20)
    newest = rec.flush(now_ts=1e9)
    assert newest.exists()  # the new normal data is kept
    assert [p.exists() for p in labelled] == [False, False, True, True]  # the two oldest acknowledged went
    assert "the 2 oldest acknowledged alert file(s) deleted" in caplog.text


def test_the_false_alarms_learned_are_counted_as_alerts_not_files(tmp_path, capsys):
    """Found by review: an alert up through a restart is two files (its parts), and a file whose
    rows --since left out was counted too: "learning 3 alert(s)" for one alert learned."""
    from sensorguard.training.retrain import load_recorded

    rec = Recorder(tmp_path, CHANNELS, guard_s=0, flush_interval_s=0)
    feed(rec, "p1", 0, 50)
    rec.flush(now_ts=1000.0)
    (tmp_path / "false_alarms").mkdir()
    part = pd.DataFrame({"ts": np.arange(100.0, 110.0), "asset": "p1", "a": 1.0, "b": 2.0})
    part.to_parquet(tmp_path / "false_alarms" / "p1@100000.parquet")
    part.assign(ts=part.ts + 10).to_parquet(tmp_path / "false_alarms" / "p1@100000+1.parquet")  # its second part
    part.assign(ts=part.ts - 100).to_parquet(tmp_path / "false_alarms" / "p1@1000.parquet")  # before --since
    load_recorded(tmp_path, since=50.0, channels=CHANNELS)
    assert "learning 1 alert(s) acknowledged as false alarms" in capsys.readouterr().out


def test_a_new_worker_layout_moves_each_alerts_readings_and_guard_band_to_the_worker_serving_its_asset(tmp_path):
    """Found by review: after the worker count changed every orphaned file went to w0, so the
    acknowledgement of an alert whose asset w1 now serves (it searches w1's folders) answered
    "none of its readings is recorded here" and the false alarm was never learned; a name taken
    there was renamed past what the acknowledgement looks for; the guard bands stayed behind."""
    import json

    from sensorguard.service.config import load_settings
    from sensorguard.service.record_files import GUARD_FILE
    from sensorguard.service.record_layout import adopt_orphans
    from sensorguard.service.relayout import asset_owner
    from sensorguard.service.worker_plans import worker_settings

    frame = pd.DataFrame({"ts": np.arange(10.0), "asset": "b/p", "a": 1.0, "b": 2.0})
    for folder, name in (("alerts", "a%2Fp@1"), ("alerts", "b%2Fp@2"), ("faults", "b%2Fp@3")):
        (tmp_path / folder).mkdir(exist_ok=True)  # one daemon recorded these
        frame.to_parquet(tmp_path / folder / f"{name}.parquet")
    (tmp_path / GUARD_FILE).write_text(json.dumps({"a/p": 100.0, "b/p": 200.0}))
    (tmp_path / "w1" / "alerts").mkdir(parents=True)
    frame.to_parquet(tmp_path / "w1" / "alerts" / "b%2Fp@2.parquet")  # the same alert's part, already there
    settings = load_settings({"model": None, "broker": "mqtt://h", "partition": ["a/#", "b/#"],
                              "record_dir": str(tmp_path)}, {}, require_model=False)
    plans = worker_settings(settings, 2)  # "a/#" is w0's, "b/#" w1's
    folders = [Path(plan.record_dir) for plan in plans]
    assert adopt_orphans(tmp_path, folders, asset_owner(plans, folders)) == 3
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("**/*.parquet")) == [
        "w0/alerts/a%2Fp@1.parquet", "w1/alerts/b%2Fp@2+1.parquet", "w1/alerts/b%2Fp@2.parquet",
        "w1/faults/b%2Fp@3.parquet"]
    assert not (tmp_path / GUARD_FILE).exists()
    assert json.loads((tmp_path / "w0" / GUARD_FILE).read_text()) == {"a/p": 100.0}
    assert json.loads((tmp_path / "w1" / GUARD_FILE).read_text()) == {"b/p": 200.0}
    rec = Recorder(tmp_path / "w1", CHANNELS, guard_s=0, verdict={"b/p@2": True}.get)
    assert "learned as normal" in rec.acknowledged("b/p@2")
    assert sorted(p.name for p in (tmp_path / "w1" / "false_alarms").iterdir()) == [
        "b%2Fp@2+1.parquet", "b%2Fp@2.parquet"]  # both parts filed


def test_guard_bands_end_once_readings_are_past_them(tmp_path):
    """Found by review: a band after a clear was kept for good (in memory and in guard_bands.json),
    one per asset that ever cleared an alert. It goes once its asset's scored windows are past it,
    or, for an asset gone silent, once any asset's are a day past it."""
    import json

    from sensorguard.service.record_files import GUARD_FILE
    from sensorguard.service.recorder import SILENT_GUARD_S

    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=3600)
    for asset in ("p1", "p2"):
        rec.alert_raised(asset, 100.0, f"{asset}@100000")
        rec.alert_cleared(asset, 150.0, f"{asset}@100000")  # bands to 160
    rec.forget("p2")  # silent
    rec.judged("p1", 155.0)
    rec.flush()
    assert json.loads((tmp_path / GUARD_FILE).read_text()) == {"p1": 160.0, "p2": 160.0}
    rec.judged("p1", 170.0)
    rec.flush()  # p1's band is over; silent p2's is kept (another asset's clock may run fast)
    assert json.loads((tmp_path / GUARD_FILE).read_text()) == {"p2": 160.0}
    rec.judged("p1", 160.0 + SILENT_GUARD_S + 1)
    rec.flush()
    assert not (tmp_path / GUARD_FILE).exists()
    (tmp_path / GUARD_FILE).write_text("{}")  # nothing changed since: the file is left alone
    rec.flush()
    assert (tmp_path / GUARD_FILE).exists()
    feed(rec, "p2", 158, 162)  # the band is gone (a day of readings past it)
    assert rec.held("p2") == [158.0, 159.0, 160.0, 161.0]


def store_with_faults(tmp_path, count: int) -> tuple[Recorder, Path, list[Path]]:
    """A store holding one normal file and ``count`` known faults of its size."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=0, flush_interval_s=0)
    feed(rec, "p1", 0, 10)
    normal = rec.flush(now_ts=1e9)
    (tmp_path / "faults").mkdir()
    faults = [tmp_path / "faults" / f"p1@{k}.parquet" for k in range(count)]
    for path in faults:
        path.write_bytes(normal.read_bytes())
    return rec, normal, faults


def test_acknowledged_alerts_are_kept_whole_while_the_store_has_room(tmp_path, caplog):
    """Found by review: the half share was enforced even under budget, so a store sized for its
    known faults lost the oldest ones at the first flush after an upgrade."""
    rec, normal, faults = store_with_faults(tmp_path, 3)
    size = normal.stat().st_size
    rec.max_bytes = int(5.5 * size)  # three acknowledged files (more than half) and the normal ones fit
    feed(rec, "p1", 10, 20)
    rec.flush(now_ts=1e9)
    assert all(p.exists() for p in faults) and normal.exists()
    assert "acknowledged alert file(s) deleted" not in caplog.text


def test_files_past_the_age_limit_go_before_the_acknowledged_share_is_judged(tmp_path):
    """Found by review: normal files about to go for their age still counted toward the size, so
    the store looked over budget and acknowledged alerts were deleted for nothing."""
    from sensorguard.service.record_files import trim_store

    _, normal, faults = store_with_faults(tmp_path, 3)
    size = normal.stat().st_size
    old = time.time() - 90 * 86400
    os.utime(normal, (old, old))  # past the age limit
    trim_store(tmp_path, int(3.5 * size), max_age_s=30 * 86400.0)
    assert not normal.exists() and all(p.exists() for p in faults)


def test_writing_a_fresh_alerts_readings_lists_no_folder_of_the_store(tmp_path, monkeypatch):
    """Found by a walk: each alert written listed every folder of the store six times looking for
    earlier parts (14 ms an alert at 18,000 files), and a storm of 500 clears stalled the scoring
    worker for 20 s. A fresh alert is found to have none by three lookups; a part after a restart
    is still numbered on."""
    from sensorguard.service import alert_files as module

    listed = []
    real = module.alert_parts
    monkeypatch.setattr(module, "alert_parts", lambda d, a: listed.append(a) or real(d, a))
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0)
    for k in range(3):
        feed(rec, f"p{k}", 0, 60)
        rec.alert_raised(f"p{k}", 20.0, f"p{k}@20000")
        rec.alert_cleared(f"p{k}", 40.0, f"p{k}@20000", 2.0)
    rec.flush(now_ts=1000.0)
    assert sorted(p.name for p in (tmp_path / "alerts").iterdir()) == [f"p{k}@20000.parquet" for k in range(3)]
    assert listed == []
    again = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0)
    again.alert_raised("p0", -np.inf, "p0@20000")  # the same alert's next part (a restart)
    feed(again, "p0", 60, 80)
    again.alert_cleared("p0", 70.0, "p0@20000", 2.0)
    again.flush(now_ts=2000.0)
    assert (tmp_path / "alerts" / "p0@20000+1.parquet").exists() and listed == ["p0@20000"]


def test_readings_taken_before_a_clear_was_judged_are_filed_up_to_the_clear_only(tmp_path):
    """A walk: after a backlog (a restart, a broker outage, a fast replay) the readings of the band
    after a clear had come before the clear was judged, and were filed as the alert's own: its
    acknowledgement as a false alarm taught the fault's tail as normal. They are dropped, as the
    band's readings are live; the ones after the band are normal data."""
    verdicts = {"p1@100000": True}
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0, verdict=verdicts.get)
    feed(rec, "p1", 0, 100)
    rec.alert_raised("p1", 100.0)
    feed(rec, "p1", 100, 200)  # the backlog: all taken before the clear at 150 is judged
    rec.alert_cleared("p1", 150.0, "p1@100000", 3.0)
    rec.flush(now_ts=1000.0)
    assert sorted(int(t) for t in pd.read_parquet(tmp_path / "false_alarms" / "p1@100000.parquet")["ts"]) == list(
        range(90, 151))
    normal = pd.concat(pd.read_parquet(f) for f in tmp_path.glob("*/*.parquet") if f.parent.name != "false_alarms")
    assert sorted(normal[normal.asset == "p1"].ts) == list(range(0, 90)) + list(range(160, 200))


def test_an_alert_handed_over_while_up_keeps_the_readings_its_old_owner_held(tmp_path):
    """Found in a cluster walk: a partition handed over (a worker joining) while an alert of one of
    its assets was up dropped every reading the old owner held for it, from the guard band before
    the raise to the move, and the new owner (which records only what it takes) filed the alert
    with the readings after the move alone: its onset, what a false-alarm acknowledgement should
    teach, was never recorded anywhere."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0)
    feed(rec, "p1", 0, 100)
    rec.judged("p1", 80.0)
    rec.alert_raised("p1", 60.0, "p1@60000")  # 0..49 committed as normal; 50.. held for the alert
    feed(rec, "p1", 100, 120)
    rec.judged("p1", 110.0)
    rec.forget("p1")  # handed over to another worker, the alert still up
    rec.flush(now_ts=1000.0, force=True)
    assert alert_times(tmp_path) == list(range(50, 111))  # up to its newest scored window, as at a shutdown
    assert sorted(read_all(tmp_path).ts) == list(range(0, 50)) + list(range(50, 111))


def test_a_start_leaves_another_serves_record_dir_below_its_own_alone(tmp_path):
    """Found in a cluster walk: a node started with the parent of the other nodes' record dirs
    (``--record-dir rec`` beside ``rec/sg-1`` of a running node) moved that node's recordings, its
    alert files and its guard bands into its own folder while it ran: the running node's later
    acknowledgements found none of its alerts' readings."""
    import json

    from sensorguard.service.folder_locks import LOCK_FILE, held_folders
    from sensorguard.service.record_files import GUARD_FILE
    from sensorguard.service.record_layout import adopt_orphans

    other = tmp_path / "sg-1"
    rec = Recorder(other, CHANNELS, guard_s=10, flush_interval_s=0)
    feed(rec, "p1", 0, 100)
    rec.alert_raised("p1", 60.0)
    rec.alert_cleared("p1", 80.0, "p1@60000", 3.0)
    rec.flush(now_ts=1000.0, force=True)
    before = sorted(p.relative_to(tmp_path).as_posix() for p in other.glob("**/*") if p.is_file())
    assert "sg-1/alerts/p1@60000.parquet" in before and f"sg-1/{GUARD_FILE}" in before
    with held_folders({"record_dir": str(other)}, "sg-1"):  # the other node runs
        assert (other / LOCK_FILE).exists()
        assert adopt_orphans(tmp_path, [tmp_path]) == 0
    after = sorted(p.relative_to(tmp_path).as_posix() for p in other.glob("**/*")
                   if p.is_file() and p.name != LOCK_FILE)
    assert after == before
    assert not (tmp_path / "alerts").exists() and not (tmp_path / GUARD_FILE).exists()
    assert json.loads((other / GUARD_FILE).read_text())


def test_a_stopped_serves_record_dir_below_is_adopted(tmp_path):
    """A review: the check above first left alone any folder with a lock file, held or not; the file
    stays after its serve ends, so instances run side by side and then merged into one serve on
    their parent were never adopted (a warning at every start naming a serve not running)."""
    from sensorguard.service.folder_locks import LOCK_FILE, held_folders
    from sensorguard.service.record_layout import adopt_orphans

    old = tmp_path / "site-a"
    old.mkdir()
    with held_folders({"record_dir": str(old)}, "site-a"):  # site-a ran here once ...
        rec = Recorder(old, CHANNELS, guard_s=10, flush_interval_s=0)
        feed(rec, "p1", 0, 100)
        rec.alert_raised("p1", 60.0)
        rec.alert_cleared("p1", 80.0, "p1@60000", 3.0)
        rec.flush(now_ts=1000.0, force=True)
    assert (old / LOCK_FILE).exists()  # ... and stopped: its lock file stays, held by nobody
    with held_folders({"record_dir": str(tmp_path)}, "plant"):  # one serve now, on the parent
        assert adopt_orphans(tmp_path, [tmp_path]) > 0
    assert (tmp_path / "alerts" / "p1@60000.parquet").exists()


def test_the_band_after_a_clear_is_told_and_taken_on_never_shortened(tmp_path):
    """Cluster mode passes the guard band after an asset's last clear to its next owner
    (``band_of`` / ``band``): an alert up has none to pass (its readings are held), and a band taken
    on never shortens a longer one here."""
    rec = Recorder(tmp_path, CHANNELS, guard_s=10, flush_interval_s=0)
    feed(rec, "p1", 0, 100)
    rec.alert_raised("p1", 60.0)
    assert rec.band_of("p1") is None  # up: held, no band yet
    rec.alert_cleared("p1", 80.0, "p1@60000", 3.0)
    assert rec.band_of("p1") == 90.0  # the clear plus guard_s
    rec.band("p1", 85.0)
    assert rec.band_of("p1") == 90.0
    rec.band("p2", 120.0)
    assert rec.band_of("p2") == 120.0 and rec.band_of("p3") is None


def test_a_running_serves_record_dir_whose_lock_cannot_be_told_is_left_alone(tmp_path, monkeypatch):
    """A review: ``_foreign`` left alone only a folder whose lock is *seen* held. On a
    filesystem where locks fail (ENOLCK: NFS without its lock daemon; held_folders serves unheld,
    "said in one line") a running serve's lock file exists but ``locked`` says None, and a start on
    the parent moves its recordings from under it: the walk _foreign was written for. (Across hosts
    on an NFS mounted ``nolock`` flock is host-local: ``locked`` even says False.) Before the commit
    any lock file kept the folder."""
    import errno
    import fcntl

    from sensorguard.service import folder_locks
    from sensorguard.service.folder_locks import LOCK_FILE, held_folders
    from sensorguard.service.record_layout import adopt_orphans

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(folder_locks.fcntl, "flock", no_locks)
    other = tmp_path / "node-b"
    other.mkdir()
    with held_folders({"record_dir": str(other)}, "node-b"):  # node-b runs (unheld: no locks here)
        rec = Recorder(other, CHANNELS, guard_s=10, flush_interval_s=0)
        feed(rec, "p1", 0, 100)
        rec.alert_raised("p1", 60.0)
        rec.alert_cleared("p1", 80.0, "p1@60000", 3.0)
        rec.flush(now_ts=1000.0, force=True)
        assert (other / LOCK_FILE).exists()
        before = sorted(p.relative_to(tmp_path) for p in other.rglob("*.parquet"))
        adopt_orphans(tmp_path, [tmp_path])  # a serve started on the parent while node-b runs
        assert sorted(p.relative_to(tmp_path) for p in other.rglob("*.parquet")) == before
    monkeypatch.setattr(folder_locks.fcntl, "flock", fcntl.flock)
