"""Live equals offline on messy streams: dropouts, NaN runs, jitter, duplicates and late readings.

A generated stream goes to the daemon (its ingest and scoring worker; one case through a real
Mosquitto) and, as a file of the readings the daemon accepted, through the offline scoring that
``sensorguard score`` runs. Both clean with the bundle's policy (``service/cleaning.py``), so the
window end times, the scores and the alert states must agree. Late readings (older than the
asset's newest) are the one deliberate difference: live drops and counts them (a reorder buffer
would delay every alert), so the file holds what the daemon accepted.
"""

from __future__ import annotations

import json
import math
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from sensorguard.service.alerts import AlertRules, AlertState
from sensorguard.training.data import series_from_frame
from sensorguard.training.offline import score_data
from tests.test_daemon import make

RULES = {"raise_after": 2, "clear_after": 2}
T0 = 1_767_225_600.0


def messy_stream(channels: list[str], rows: int, seed: int) -> list[tuple[float, dict]]:
    """Readings of one asset in arrival order, about one a second, with every kind of mess."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    base = np.stack([np.sin(2 * np.pi * t / (40 + 9 * j)) + 0.1 * rng.standard_normal(rows)
                     for j in range(len(channels))], axis=1)
    base[rows // 2: rows // 2 + 20, 0] += 6.0  # a fault, so alerts rise and clear
    keep = np.ones(rows, bool)
    for _ in range(rng.integers(1, 5)):  # short dropouts, filled on the grid
        start = rng.integers(20, rows - 10)
        keep[start: start + rng.integers(1, 5)] = False
    if rng.random() < 0.5:  # a long outage: the window restarts
        start = rng.integers(20, rows - 20)
        keep[start: start + 12] = False
    values = base.copy()
    for _ in range(rng.integers(1, 5)):  # NaN runs in one channel, some longer than the fill limit
        j, start = rng.integers(len(channels)), rng.integers(0, rows - 10)
        values[start: start + rng.integers(1, 9), j] = np.nan
    if rng.random() < 0.5:  # a sensor stuck for a while
        start = rng.integers(20, rows - 30)
        values[start: start + 20, 1] = values[start, 1]
    if rng.random() < 0.5:  # an implausible spike
        start = rng.integers(20, rows - 10)
        values[start: start + 3, -1] = 1e6
    times = T0 + t + rng.uniform(-0.08, 0.08, rows)  # clock jitter
    stream = []
    for i in np.flatnonzero(keep):
        doc = {}
        for j, name in enumerate(channels):
            v = values[i, j]
            if not math.isnan(v):
                doc[name] = float(v)
            elif rng.random() < 0.5:
                doc[name] = None if rng.random() < 0.5 else math.nan  # sent as null or NaN, or left out
        stream.append((float(times[i]), doc))
        if rng.random() < 0.04:
            stream.append((float(times[i]), doc))  # a QoS 1 redelivery
    for _ in range(rng.integers(0, 4)):  # a reading overtaken by the next one
        k = int(rng.integers(1, len(stream) - 1))
        stream[k], stream[k + 1] = stream[k + 1], stream[k]
    return stream


def accepted(stream: list[tuple[float, dict]]) -> list[tuple[float, dict]]:
    """What the daemon keeps of the order: late and repeated readings dropped."""
    out, newest = [], -math.inf
    for ts, doc in stream:
        if ts > newest:
            out.append((ts, doc))
            newest = ts
    return out


def offline_windows(bundle, readings: list[tuple[float, dict]]) -> list[tuple[float, float, int]]:
    frame = pd.DataFrame([{"timestamp": ts, **{c: doc.get(c) for c in bundle.channels}} for ts, doc in readings])
    frame[list(bundle.channels)] = frame[list(bundle.channels)].astype(float)
    data = series_from_frame(frame, "stream", policy=bundle.cleaning, sensors=bundle.sensors)
    scored = score_data(bundle, data, AlertRules(**RULES))
    mask = scored.judged & np.isfinite(scored.scores.score)
    return [(float(data.times[i]), float(scored.scores.score[i]), int(scored.alert[i])) for i in np.flatnonzero(mask)]


def live_windows(bundle, stream: list[tuple[float, dict]], before=None, every: int = 1,
                 **settings) -> list[tuple[float, float, int]]:
    """The daemon's windows of ``stream``; ``before(daemon, ts)`` runs before each reading; the
    scorer takes the windows of ``every`` readings at once (an asset's later windows wait in the
    batch while its earlier ones may raise or clear its alert)."""
    _, seen = served(bundle, stream, before, every, **settings)
    return [(w.ts, w.score, int(w.status == "alerting")) for w in seen]


def served(bundle, stream: list[tuple[float, dict]], before=None, every: int = 1, **settings) -> tuple:
    """:func:`live_windows`' daemon and the windows its listener saw, as they came."""
    daemon, client = make(bundle, **RULES, **settings)
    seen = []
    daemon.add_listener(seen.append)
    for mid, (ts, doc) in enumerate(stream, 1):
        if before is not None:
            before(daemon, ts)
        send(daemon, client, mid, ts, doc, score=mid % every == 0 or mid == len(stream))
    return daemon, seen


def send(daemon, client, mid: int, ts: float, doc: dict, score: bool = True) -> None:
    """One reading of ``pump-1`` into the daemon's ingest; with ``score``, every window due scored."""
    payload = json.dumps({"ts": ts, "values": doc}).encode()  # NaN as the NaN token, None as null
    daemon.ingest.handle(client, SimpleNamespace(topic="sensors/pump-1/readings", payload=payload, mid=mid, qos=1))
    while score and (batch := daemon.ingest.next_batch(0.0)[0]):
        daemon.score_batch(batch)


def offline_with_silence(bundle, stream: list[tuple[float, dict]], stale: float) -> list[tuple[float, float, int]]:
    """``score``'s windows of ``stream`` with the silence set to ``stale`` seconds."""
    frame = pd.DataFrame([{"timestamp": ts, **doc} for ts, doc in stream])
    data = series_from_frame(frame, "stream", policy=bundle.cleaning)
    scored = score_data(bundle, data, AlertRules(**RULES, stale_after=stale))
    mask = scored.judged & np.isfinite(scored.scores.score)
    return [(float(data.times[i]), float(scored.scores.score[i]), int(scored.alert[i])) for i in np.flatnonzero(mask)]


def assert_same(live, offline) -> None:
    assert [round(ts, 6) for ts, _, _ in live] == [round(ts, 6) for ts, _, _ in offline]
    np.testing.assert_allclose([s for _, s, _ in live], [s for _, s, _ in offline], rtol=1e-5, atol=1e-6)
    assert [a for _, _, a in live] == [a for _, _, a in offline]


def test_a_short_dropout_gives_the_same_windows_live_and_offline(tiny_bundle):
    """The issue's case: one 3-sample dropout used to give 33 offline windows and 31 live ones."""
    stream = [(T0 + i, {"a": math.sin(i / 5), "b": math.cos(i / 7), "c": 0.01 * i}) for i in range(80)
              if not 40 <= i < 43]
    frame = pd.DataFrame([{"timestamp": ts, **doc} for ts, doc in stream])
    data = series_from_frame(frame, "stream")  # the file's own period: the bundle's, 1 s
    scored = score_data(tiny_bundle, data, AlertRules(**RULES))
    mask = scored.judged
    live = live_windows(tiny_bundle, stream)
    assert [round(w[0], 6) for w in live] == [round(float(t), 6) for t in data.times[mask]]
    np.testing.assert_allclose([w[1] for w in live], scored.scores.score[mask], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(16))
def test_live_equals_offline_on_a_messy_stream(tiny_bundle, seed):
    stream = messy_stream(list(tiny_bundle.channels), 140, seed)
    live = live_windows(tiny_bundle, stream)
    offline = offline_windows(tiny_bundle, accepted(stream))
    assert len(offline) > 10 and any(a for _, _, a in offline)  # windows and alerts to compare
    assert_same(live, offline)


@pytest.mark.parametrize("seed", range(8))
def test_live_equals_offline_with_the_alert_hop(tiny_bundle, seed):
    """While an asset's alert is up the daemon judges a window every ``alert_hop`` samples, and
    ``score`` the same ones, one reading at a time or many windows to a batch."""
    from dataclasses import replace

    bundle = replace(tiny_bundle, alert_hop=1)  # (hop 2)
    stream = messy_stream(list(bundle.channels), 140, seed)
    offline = offline_windows(bundle, accepted(stream))
    on_the_hop = offline_windows(tiny_bundle, accepted(stream))
    assert any(a for _, _, a in offline) and len(offline) > len(on_the_hop)  # windows off the hop were judged
    assert_same(live_windows(bundle, stream), offline)
    assert_same(live_windows(bundle, stream, every=15), offline)


@pytest.mark.parametrize("seed", range(8))
def test_live_equals_offline_with_sensor_faults_held_and_left_out(tiny_bundle, seed):
    from dataclasses import replace

    from sensorguard.service.sensors import ChannelLimits, SensorRules

    limits = tuple(ChannelLimits(-50.0, 50.0, 10) for _ in tiny_bundle.channels)
    bundle = replace(tiny_bundle, sensors=SensorRules(tiny_bundle.channels, limits, tiny_bundle.fill_limit))
    stream = messy_stream(list(bundle.channels), 140, seed)
    first, last = bundle.channels[0], bundle.channels[-1]
    for k in range(60, 63):  # in every seed an implausible spike and a stuck channel, whatever the draw
        stream[k][1][last] = 1e6
    for k in range(90, 104):
        stream[k][1][first] = 0.25
    daemon, seen = served(bundle, stream)
    opened = {event.kind for _, event in daemon.ingest.sensor_events() if event.fault}
    assert {"out_of_range", "stuck"} <= opened, opened  # both sides held and left channels out (else vacuous: a review)
    assert_same([(w.ts, w.score, int(w.status == "alerting")) for w in seen], offline_windows(bundle, accepted(stream)))


def test_a_file_without_one_of_the_models_channels_scores_as_a_feed_without_it(tiny_bundle, tmp_path, capsys):
    """A sensor added to a machine: its older recordings lack the channel. The daemon takes readings
    without it (a missing fault, the model fills it in) while ``score`` refused the file with
    "channels not found" (a walk). Offline it is read as missing in every row: the same windows."""
    from dataclasses import replace

    from sensorguard.cli import main
    from sensorguard.service.bundle import save_bundle
    from sensorguard.service.sensors import ChannelLimits, SensorRules

    limits = tuple(ChannelLimits(-50.0, 50.0, 10) for _ in tiny_bundle.channels)
    bundle = replace(tiny_bundle, sensors=SensorRules(tiny_bundle.channels, limits, tiny_bundle.fill_limit))
    gone = bundle.channels[-1]
    stream = [(ts, {c: v for c, v in doc.items() if c != gone})
              for ts, doc in messy_stream(list(bundle.channels), 140, 0)]
    _, seen = served(bundle, stream)
    frame = pd.DataFrame([{"timestamp": ts, **{c: doc.get(c) for c in bundle.channels if c != gone}}
                          for ts, doc in accepted(stream)])
    data = series_from_frame(frame, "old.csv", channels=bundle.channels, policy=bundle.cleaning,
                             sensors=bundle.sensors)
    assert any(f"'{gone}' not in old.csv: read as missing in every row" in note for note in data.notes)
    scored = score_data(bundle, data, AlertRules(**RULES))
    mask = scored.judged & np.isfinite(scored.scores.score)
    offline = [(float(data.times[i]), float(scored.scores.score[i]), int(scored.alert[i]))
               for i in np.flatnonzero(mask)]
    assert len(offline) > 50
    assert_same([(w.ts, w.score, int(w.status == "alerting")) for w in seen], offline)
    frame.assign(timestamp=pd.to_datetime(frame.timestamp, unit="s", utc=True)).to_csv(tmp_path / "old.csv",
                                                                                      index=False)
    assert main(["score", str(save_bundle(bundle, tmp_path / "b")), str(tmp_path / "old.csv"),
                 "--out", str(tmp_path / "s.csv")]) == 0
    assert pd.read_csv(tmp_path / "s.csv").score.notna().sum() > 50
    # still refused: a file with a column of its own that may be the channel misspelled or renamed (a
    # review), one of fewer than half the model's channels (another machine's)
    capsys.readouterr()
    for other in (frame.assign(C=1.0), frame[["timestamp", bundle.channels[0]]]):
        other.to_csv(tmp_path / "other.csv", index=False)
        assert main(["score", str(tmp_path / "b"), str(tmp_path / "other.csv"), "--out", str(tmp_path / "s.csv")]) == 1
        assert "channels not found" in capsys.readouterr().err


def test_an_asset_off_the_models_rate_is_resampled_or_refused_alike_live_and_offline(tiny_bundle):
    """Three times too fast (resampled to the 1 s grid), then one reading every 3 s (refused),
    then back at the model's rate."""
    rng = np.random.default_rng(5)
    times = np.r_[np.arange(0, 60, 1 / 3), 60 + 3 * np.arange(25), 140 + np.arange(60.0)]
    times = T0 + times + rng.uniform(-0.02, 0.02, len(times))
    stream = [(float(t), {"a": math.sin(t / 5), "b": math.cos(t / 7), "c": 0.01 * (t - T0)}) for t in times]
    daemon, seen = served(tiny_bundle, stream)
    live = [(w.ts, w.score, int(w.status == "alerting")) for w in seen]
    assert_same(live, offline_windows(tiny_bundle, stream))
    steps = np.diff([ts for ts, _, _ in live[: len(live) // 3]])
    assert np.allclose(steps, tiny_bundle.hop * 1.0, atol=0.1)  # the fast part's windows stride the model's grid
    from tests.test_daemon import value

    resampled = value(daemon, "sensorguard_messages_rejected_total", reason="resampled")
    slow = value(daemon, "sensorguard_messages_rejected_total", reason="slow_rate")
    assert resampled > 100 and slow > 5



def test_a_silence_during_an_alert_ends_it_alike_live_and_offline(tiny_bundle):
    """A fault, a silence longer than ``stale_after_s`` while its alert is up, the fault still on
    when the asset is back: live the silence ended the alert, so a new one needs ``raise_after``
    windows; ``score`` carried the alert over the gap (found by review)."""
    import time

    stale = 30.0
    times = np.r_[np.arange(0, 60.0), 60 + stale + 10 + np.arange(40.0)]
    stream = [(T0 + t, {"a": math.sin(t / 5) + (8.0 if t >= 35 else 0.0), "b": math.cos(t / 7), "c": 0.01 * t})
              for t in times]

    def silence(daemon, ts):  # the daemon's tick finds the asset silent
        if ts - T0 == 60 + stale + 10:
            daemon.housekeeping(time.monotonic() + stale + 1)

    live = live_windows(tiny_bundle, stream, silence, stale_after_s=stale)
    offline = offline_with_silence(tiny_bundle, stream, stale)
    back = [a for ts, _, a in live if ts > T0 + 60]
    assert any(a for ts, _, a in live if ts <= T0 + 60) and back[0] == 0 and back[-1] == 1  # up, ended, up again
    assert_same(live, offline)


@pytest.mark.integration
def test_live_equals_offline_through_a_real_broker(mosquitto, trained, trained_dir):
    from tests.mosquitto import Publisher, client_id, start_daemon, wait_for

    bundle = trained[0]
    flags = {"model": str(trained_dir), "broker": mosquitto.url, "metrics_port": 0, **RULES,
             "client_id": client_id("sg-parity")}
    daemon, _ = start_daemon(flags)
    try:
        seen = []
        daemon.add_listener(seen.append)
        stream = messy_stream(list(bundle.channels), 300, seed=7)
        offline = offline_windows(bundle, accepted(stream))
        pub = Publisher(mosquitto)
        for ts, doc in stream:
            pub.raw("sensors/messy-1/readings", json.dumps({"ts": ts, "values": doc}))
        wait_for(lambda: len(seen) >= len(offline), 30, f"{len(offline)} windows scored")
        pub.close()
        assert any(a for _, _, a in offline)
        assert_same([(w.ts, w.score, int(w.status == "alerting")) for w in seen], offline)
    finally:
        daemon.stop()


@pytest.mark.integration
def test_replay_of_a_messy_two_machine_file_equals_score(mosquitto, trained, trained_dir, tmp_path):
    """``sensorguard replay`` sends the file's raw rows (gaps, NaNs, repeats, each machine on its own
    topic) and the daemon cleans them as ``score`` cleans the file: the same windows and scores."""
    import subprocess
    import sys
    from pathlib import Path

    from sensorguard.training.data import load_frame
    from sensorguard.training.offline import score_data
    from tests.mosquitto import client_id, start_daemon, wait_for

    bundle = trained[0]
    rows = []
    for k, seed in enumerate((11, 12)):
        for ts, doc in messy_stream(list(bundle.channels), 200, seed):
            rows.append({"timestamp": ts + 0.37 * k, "asset": f"m-{k + 1}", **{c: doc.get(c) for c in bundle.channels}})
    path = tmp_path / "messy.csv"
    pd.DataFrame(rows).to_csv(path, index=False)

    data = load_frame([str(path)], policy=bundle.cleaning, sensors=bundle.sensors)
    scored = score_data(bundle, data, AlertRules(**RULES))
    mask = scored.judged & np.isfinite(scored.scores.score)
    offline = {a: [(float(data.times[i]), float(scored.scores.score[i]), int(scored.alert[i]))
                   for i in np.flatnonzero(mask & (data.assets == a))] for a in ("m-1", "m-2")}
    assert all(len(w) > 20 for w in offline.values())

    flags = {"model": str(trained_dir), "broker": mosquitto.url, "metrics_port": 0, **RULES,
             "client_id": client_id("sg-replay")}
    daemon, _ = start_daemon(flags)
    try:
        seen = []
        daemon.add_listener(seen.append)
        out = subprocess.run([sys.executable, "-m", "sensorguard", "replay", str(path), "--broker", mosquitto.url,
                              "--rate", "2000", "--timestamps", "original"],
                             cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "as 2 assets" in out.stdout
        total = sum(len(w) for w in offline.values())
        wait_for(lambda: len(seen) >= total, 30, f"{total} windows scored")
        for asset, windows in offline.items():
            assert_same([(w.ts, w.score, int(w.status == "alerting")) for w in seen if w.asset == asset], windows)
    finally:
        daemon.stop()


def test_a_sender_slowed_below_the_models_rate_keeps_its_alert_alike_live_and_offline(tiny_bundle):
    """A fault, then the sender slows to one reading in 3 s for longer than ``stale_after_s`` (its
    readings refused as slow_rate), then back at the rate with the fault still on. Live a refused
    reading keeps the asset alive, so the alert stays up; offline the gap between the rows kept
    was taken for a silence and the alert ended (found by review)."""
    stale = 30.0
    times = np.r_[np.arange(0, 60.0), 60 + 3 * np.arange(1, 16), 108 + np.arange(40.0)]
    stream = [(T0 + t, {"a": math.sin(t / 5) + (8.0 if t >= 35 else 0.0), "b": math.cos(t / 7), "c": 0.01 * t})
              for t in times]
    live = live_windows(tiny_bundle, stream, stale_after_s=stale)
    offline = offline_with_silence(tiny_bundle, stream, stale)
    assert any(a for ts, _, a in live if ts <= T0 + 60) and all(a for ts, _, a in live if ts > T0 + 60)
    assert_same(live, offline)


def test_score_ends_an_alert_at_a_silence_on_the_refused_rows_after_it_as_live(tiny_bundle):
    """A fault raises an alert; the sender slows below the model's rate (refused, the alert stays
    up), falls silent for longer than ``stale_after_s`` (live: the alert ends), and comes back still
    slowed. ``score``'s table gave the refused rows after the silence the alert from before it
    (found by review): a row the daemon did not take carries the state only up to a silence."""
    from sensorguard.training.offline import score_table

    stale = 30.0
    times = np.r_[np.arange(0, 60.0), 60 + 3 * np.arange(1, 21), 160 + 3 * np.arange(8), 190 + np.arange(40.0)]
    frame = pd.DataFrame([{"timestamp": T0 + t, "a": math.sin(t / 5) + (8.0 if t >= 35 else 0.0),
                           "b": math.cos(t / 7), "c": 0.01 * t} for t in times])
    data = series_from_frame(frame, "stream", policy=tiny_bundle.cleaning)
    scored = score_data(tiny_bundle, data, AlertRules(**RULES, stale_after=stale))
    table = score_table(tiny_bundle, scored)
    t = table["timestamp"].map(lambda stamp: stamp.timestamp() - T0).to_numpy()
    slowed = (t > 95) & (t < 120)  # (refused from the 11th slow step)
    assert table.loc[slowed, "score"].isna().all() and (table.loc[slowed, "alert"] == 1).all()  # refused, up
    after = (t >= 160) & (t < 190)
    assert table.loc[after, "score"].isna().all()  # refused too
    assert (table.loc[after, "alert"] == 0).all()  # the silence ended the alert


def test_served_at_another_hop_an_alert_up_is_judged_at_that_hop(tiny_bundle):
    """The alert hop divides the bundle's hop; served at another hop (warned at start) it is off,
    and clear_after counts that hop's windows; a swapped-in bundle's alert hop is adopted."""
    from dataclasses import replace

    from sensorguard.service.bundle_checks import bundle_rules

    bundle = replace(tiny_bundle, alert_hop=1)  # (hop 2)
    daemon, _ = make(bundle, **RULES)
    assert daemon.buffers.alert_hop == 1 and bundle_rules(daemon.rules, bundle, daemon.alerts.hop).alert_steps == 2
    daemon._swapped(replace(bundle, alert_hop=0))
    assert daemon.buffers.alert_hop == 0
    daemon, _ = make(bundle, **RULES, hop=4)
    assert daemon.buffers.alert_hop == 0 and bundle_rules(daemon.rules, bundle, daemon.alerts.hop).alert_steps == 1


def test_an_alert_hop_window_queued_before_a_swap_to_a_bundle_that_judges_every_hop_is_not_judged(tiny_bundle):
    """A window queued off the hop grid under the old bundle, scored by one swapped in that judges
    every hop: judged, it counted as a whole hop under the line and the alert cleared early."""
    from dataclasses import replace

    bundle = replace(tiny_bundle, alert_hop=1)  # (hop 2)
    daemon, _ = make(bundle, **RULES)
    for i in range(3):
        daemon.alerts.apply("pump-1", T0 + 2 * i, 5.0, [], bundle)
    up = daemon.snapshot()["pump-1"]
    assert up.status == "alerting"
    every_hop = replace(bundle, alert_hop=0)
    assert daemon.alerts.apply("pump-1", T0 + 5, 0.7, [], every_hop, coarse=False) is None
    assert daemon.snapshot()["pump-1"] == up
    assert daemon.alerts.apply("pump-1", T0 + 7, 0.7, [], bundle, coarse=False) is not None  # (its own: judged)


def test_a_handed_over_alert_carries_the_hop_grids_last_window(tiny_bundle):
    """Cluster mode: the window time an asset's state carries to its new owner anchors the new
    owner's cadence (``Buffers.prime``), so it is the last judged window on the hop grid, not an
    alert-hop window judged after it: anchored there the new owner's grid was out by the alert hop."""
    from dataclasses import replace

    from sensorguard.service.windows import Buffers

    bundle = replace(tiny_bundle, alert_hop=1)  # (hop 2, window 16: the hop grid's windows end on odd rows)
    rows = [(T0 + t, {"a": math.sin(t / 5) + (8.0 if t >= 40 else 0.0), "b": math.cos(t / 7), "c": 0.01 * t})
            for t in range(80)]
    daemon, client = make(bundle, **RULES)
    seen = []
    daemon.add_listener(seen.append)
    for mid, (ts, doc) in enumerate(rows, 1):
        send(daemon, client, mid, ts, doc)
        if seen and seen[-1].status == "alerting" and int(seen[-1].ts - T0) % 2 == 0:
            break  # an alert up, and the last window judged is off the hop grid
    assert int(seen[-1].ts - T0) % 2 == 0 and mid < len(rows)
    state, _, window_ts, _, judged_ts, _, _ = daemon.alerts.hand_over({"pump-1"})["pump-1"]
    assert state.status == "alerting" and window_ts == seen[-1].ts - 1  # the hop grid's window before it
    assert judged_ts == seen[-1].ts  # the alert-hop window the state already holds
    bufs = Buffers(bundle.channels, bundle.window, bundle.hop, alert_hop=1)
    bufs.prime("pump-1", rows[:mid], 0.0, window_ts, judged_ts)
    for ts, doc in rows[mid:]:
        bufs.add("pump-1", ts, doc, 0.0)
    due = bufs.drain()
    assert due and all(int(w.ts - T0) % 2 == 1 for w in due if w.coarse)  # the same hop grid as offline
    assert due[0].ts == judged_ts + 1  # not the window judged before the move a second time


# a fault, then a remnant that keeps the score under the line but over half of it: an alert clears
# on its count of windows under the line, not at once
REMNANT_ROWS = [(T0 + t, {"a": 0.3 * math.sin(t / 5) + (8.0 if 40 <= t < 60 else 0.7 if 60 <= t < 100 else 0.0),
                          "b": 1 + 0.3 * math.cos(t / 7), "c": 2 + 0.1 * math.sin(t / 3)}) for t in range(140)]
REMNANT_RULES = {"raise_after": 2, "clear_after": 3}


def _watched(bundle, **rules):
    """A daemon and the (ts, status, score) of every window it judges."""
    daemon, client = make(bundle, **rules)
    seen: list = []
    daemon.add_listener(lambda w: seen.append((w.ts, w.status, w.score)))
    return daemon, client, seen


def _up_off_grid(daemon, client, seen, rows, hop: int) -> int:
    """Send rows until the alert is up and its last window, under the line, was judged off the hop
    grid (it ends on row ``window - 1 + k * hop``); how many rows went in."""
    for mid, (ts, doc) in enumerate(rows, 1):
        send(daemon, client, mid, ts, doc)
        if seen and seen[-1][1] == "alerting" and seen[-1][2] < 1 and int(seen[-1][0] - T0 - 15) % hop:
            return mid
    raise AssertionError("no hand-over point")


def _take_over(bundle, entry: bytes, rows_taken: list, **rules):
    """A new owner of pump-1 from its state-bucket entry, primed with the readings it finds."""
    from sensorguard.service.state_entry import decode_asset

    alert, drift, window_ts, announced, judged_ts, channels, _ = decode_asset(entry)
    daemon, client, seen = _watched(bundle, **rules)
    daemon.alerts.adopt("pump-1", alert, drift, announced, window_ts, judged_ts, channels)
    daemon.ingest.prime("pump-1", rows_taken, window_ts, judged_ts)
    return daemon, client, seen


def _one_daemon(bundle, rows) -> list:
    one, client, whole = _watched(bundle, **REMNANT_RULES)
    for mid, (ts, doc) in enumerate(rows, 1):
        send(one, client, mid, ts, doc)
    up = [i for i, (_, status, _) in enumerate(whole) if status == "alerting"]
    assert up and whole[up[-1] + 1][1] == "normal" and 0.5 < whole[up[-1] + 1][2] < 1  # cleared on its count
    return whole


def test_an_alert_handed_over_mid_alert_clears_where_one_daemon_clears_it(tiny_bundle):
    """Cluster mode, end to end: an asset moves to a new owner while its alert is up and its last
    judged window is off the hop grid. The two owners' windows and states together are one
    daemon's (found by review: the new owner judged that window again, so the alert's count
    under the line ran one window ahead and it cleared one window early)."""
    from dataclasses import replace

    from sensorguard.service.state_entry import encode_asset

    bundle = replace(tiny_bundle, alert_hop=1)
    whole = _one_daemon(bundle, REMNANT_ROWS)
    old, old_client, before = _watched(bundle, **REMNANT_RULES)
    mid = _up_off_grid(old, old_client, before, REMNANT_ROWS, bundle.hop)
    entry = encode_asset(*old.alerts.hand_over({"pump-1"})["pump-1"])
    new, new_client, after = _take_over(bundle, entry, REMNANT_ROWS[:mid], **REMNANT_RULES)
    for i, (ts, doc) in enumerate(REMNANT_ROWS[mid:], mid + 1):
        send(new, new_client, i, ts, doc)
    assert before + after == whole


def test_a_new_owner_states_the_alerts_top_channels_before_its_first_window(tiny_bundle):
    """Cluster mode did not carry an alert's top channels (a restart does, from assets.json): the new
    owner's retained state said ``"channels": []`` until its first window. Here the asset sends
    nothing after the move: its alert ends as stale naming them (and ends at all: an adoption
    waited for a window of any asset of the partition before its silence could be seen)."""
    from dataclasses import replace

    from sensorguard.service.state_entry import encode_asset

    bundle = replace(tiny_bundle, alert_hop=1)
    old, old_client, before = _watched(bundle, **REMNANT_RULES)
    _up_off_grid(old, old_client, before, REMNANT_ROWS, bundle.hop)
    moved = old.alerts.hand_over({"pump-1"})["pump-1"]
    assert moved[0].status == "alerting" and moved[5] and moved[5][0]["name"] == "a"
    new, new_client, _ = _take_over(bundle, encode_asset(*moved), [], **REMNANT_RULES)
    new.alerts.expire_restored(time.monotonic() + 10**6)
    states = [json.loads(body) for topic, body, _ in new_client.published if topic.endswith("state/pump-1")]
    assert [s["state"] for s in states] == ["stale"] and states[0]["channels"] == moved[5]
    assert "pump-1" not in new.alerts.restored_channels  # said, then forgotten: back, it named them again
    # the bucket entry: an alert's channels only (every normal asset's grew it at each full sync);
    # an entry without them (an older owner's), or with junk in them, reads as none
    from sensorguard.service.state_entry import decode_asset

    assert b"channels" not in encode_asset(AlertState(), None, None, True, None, moved[5])
    assert decode_asset(encode_asset(*moved[:5]))[5] == []
    for junk in ('"x"', '[{"name": "a", "share": 1e999}]', '[{"name": "a", "share": 10' + "0" * 400 + '}]'):
        entry = encode_asset(*moved[:5]).replace(b'{"alert"', b'{"channels":' + junk.encode() + b',"alert"')
        assert decode_asset(entry)[0] == moved[0] and decode_asset(entry)[5] == []


def test_after_a_crash_mid_alert_the_new_owner_judges_on_from_the_synced_state(tiny_bundle):
    """The state bucket holds what the last sync (a status change, or every 30 s) wrote; the
    owner judges on and dies. Its successor judges the windows after the synced ones from that
    state, as one daemon did: an alert-hop window the synced state held is not judged twice."""
    from dataclasses import replace

    from sensorguard.service.state_entry import encode_asset

    bundle = replace(tiny_bundle, alert_hop=1)
    whole = _one_daemon(bundle, REMNANT_ROWS)
    old, old_client, before = _watched(bundle, **REMNANT_RULES)
    mid = _up_off_grid(old, old_client, before, REMNANT_ROWS, bundle.hop)
    synced = old.alerts.changed_states(full=True)["pump-1"]
    assert synced[4] == before[-1][0] > synced[2]  # the alert-hop window the state holds
    for i, (ts, doc) in enumerate(REMNANT_ROWS[mid:mid + 5], mid + 1):
        send(old, old_client, i, ts, doc)  # judged, published, never synced: then the owner dies
    new, new_client, after = _take_over(bundle, encode_asset(*synced), REMNANT_ROWS[:mid + 5], **REMNANT_RULES)
    for i, (ts, doc) in enumerate(REMNANT_ROWS[mid + 5:], mid + 6):
        send(new, new_client, i, ts, doc)
    expected = [w for w in whole if w[0] > synced[4]]
    assert [w[:2] for w in after] == [w[:2] for w in expected]  # (the windows queued at the takeover are
    np.testing.assert_allclose([w[2] for w in after], [w[2] for w in expected], rtol=1e-6)  # one batch)


def test_a_state_passed_on_before_the_new_owners_first_grid_window_keeps_its_cadence(tiny_bundle):
    """Hop 4, alert hop 1: the new owner's first windows are alert-hop ones. A sync (or another
    move) before it judged one on the hop grid passed the state on without an anchor, and a third
    owner started with none (found by review): it passes on the cadence it adopted."""
    from dataclasses import replace

    from sensorguard.service.state_entry import encode_asset

    bundle = replace(tiny_bundle, hop=4, alert_hop=1)
    whole = _one_daemon(bundle, REMNANT_ROWS)
    first, first_client, seen1 = _watched(bundle, **REMNANT_RULES)
    mid = _up_off_grid(first, first_client, seen1, REMNANT_ROWS, bundle.hop)
    entry = encode_asset(*first.alerts.hand_over({"pump-1"})["pump-1"])
    second, second_client, seen2 = _take_over(bundle, entry, REMNANT_ROWS[:mid], **REMNANT_RULES)
    send(second, second_client, mid + 1, *REMNANT_ROWS[mid])
    assert len(seen2) == 1 and int(seen2[0][0] - T0 - 15) % 4  # one window, off the hop grid
    moved = second.alerts.hand_over({"pump-1"})["pump-1"]
    assert moved[2] is not None and moved[4] == seen2[0][0]  # the first owner's anchor, its own judged window
    third, third_client, seen3 = _take_over(bundle, encode_asset(*moved), REMNANT_ROWS[:mid + 1], **REMNANT_RULES)
    for i, (ts, doc) in enumerate(REMNANT_ROWS[mid + 1:], mid + 2):
        send(third, third_client, i, ts, doc)
    assert seen1 + seen2 + seen3 == whole


def _with_level(bundle, limit: float = 3.0, follow: float = 30.0):
    """``bundle`` with a level term that decides windows of :func:`messy_stream` (its sines are about
    1 at most; its fault, 6) and a level that moves within it."""
    from dataclasses import replace

    from sensorguard.service.level import LevelMonitor

    n = len(bundle.channels)
    monitor = LevelMonitor(mean=np.zeros(n), scale=np.ones(n), loadings=np.eye(n), eigen=np.ones(n), limit=limit,
                           follow=follow)
    return replace(bundle, level=monitor)


@pytest.mark.parametrize("seed", range(8))
def test_live_equals_offline_with_the_level_term(tiny_bundle, seed):
    """The level term and its per-asset level, stepped per judged window, with the alert hop and
    sensor faults (no term where a channel of the window has one open): the same windows, scores
    and alerts live and offline, one reading at a time or many windows to a batch."""
    from dataclasses import replace

    from sensorguard.service.sensors import ChannelLimits, SensorRules

    limits = tuple(ChannelLimits(-50.0, 50.0, 10) for _ in tiny_bundle.channels)
    bundle = _with_level(replace(tiny_bundle, alert_hop=1, threshold_=10.0,  # (the untrained model's errors: 1s)
                                 sensors=SensorRules(tiny_bundle.channels, limits, tiny_bundle.fill_limit)))
    stream = messy_stream(list(bundle.channels), 140, seed)
    offline = offline_windows(bundle, accepted(stream))
    daemon, seen = served(bundle, stream)
    live = [(w.ts, w.score, int(w.status == "alerting")) for w in seen]
    assert any(w.score > w.error / bundle.threshold_ * (1 + 1e-9) for w in seen)  # the term decided windows
    assert daemon.alerts.drift_of("pump-1").level  # and the asset's level moved
    assert_same(live, offline)
    assert_same(live_windows(bundle, stream, every=15), offline)
    assert offline != offline_windows(replace(bundle, level=None), accepted(stream))


def test_where_the_level_term_decides_a_window_its_channels_are_the_terms(tiny_bundle):
    """The reconstruction weighs channel a alone (its error leads every window); channel c leaves its
    level: the windows the term decides name c, as the alert they raise does."""
    from dataclasses import replace

    quiet = replace(tiny_bundle, channel_weights_=np.array([1.0, 1e-9, 1e-9]), threshold_=1e12)
    stream = [(T0 + i, {"a": 0.0, "b": 0.0, "c": 8.0 if i >= 40 else 0.0}) for i in range(60)]
    for bundle, leader in ((quiet, "a"), (_with_level(quiet), "c")):
        _, seen = served(bundle, stream)
        late = [w for w in seen if w.ts >= T0 + 42]
        assert late and all(w.channels[0]["name"] == leader for w in late)
    assert any(w.status == "alerting" for w in late)


def test_score_names_each_alert_as_the_daemon_does(tiny_bundle):
    """Found by a walk: design.md says an ``alert_id`` is the same offline and live, and ``score``
    wrote none. Its ``alert_id`` column now names each alert row's alert as the daemon does."""
    from sensorguard.training.offline import score_table

    stream = messy_stream(list(tiny_bundle.channels), 140, 3)
    daemon, _ = served(tiny_bundle, stream)
    live = [json.loads(p)["alert_id"] for t, p, _ in daemon.publisher.client.published
            if t == "sensorguard/alerts/pump-1" and json.loads(p)["state"] == "raised"]
    frame = pd.DataFrame([{"timestamp": ts, "asset": "pump-1", **{c: doc.get(c) for c in tiny_bundle.channels}}
                          for ts, doc in accepted(stream)])
    frame[list(tiny_bundle.channels)] = frame[list(tiny_bundle.channels)].astype(float)
    data = series_from_frame(frame, "stream", policy=tiny_bundle.cleaning, sensors=tiny_bundle.sensors)
    table = score_table(tiny_bundle, score_data(tiny_bundle, data, AlertRules(**RULES)))
    assert live and list(dict.fromkeys(table["alert_id"].dropna())) == live
    assert (table["alert_id"].notna() == (table["alert"] == 1)).all()


def test_two_alerts_split_by_a_silence_keep_their_own_ids_offline():
    """Found by review: ``score``'s ``alert_id`` read raises off 0 -> 1 changes of the alert column,
    and a silence that ends an alert followed by a window that raises at once reads 1, 1: both
    alerts got the first one's id, where the daemon names the second anew."""
    from sensorguard.service.alerts import judge_rows
    from sensorguard.training.offline import alert_ids

    times = np.array([0.0, 1.0, 2.0, 600.0, 601.0]) + T0
    ids = np.full(5, None, dtype=object)
    alert, _, _ = judge_rows(np.full(5, 5.0), np.ones(5, bool), times, AlertRules(raise_after=1, stale_after=300.0),
                             ids=ids)
    assert alert.tolist() == [1, 1, 1, 1, 1] and ids[0] != ids[3] and ids[3] == f"{int(times[3] * 1000)}"
    named = alert_ids(alert, times, None, np.array([f"@{i}" for i in ids], dtype=object))
    assert len(set(named)) == 2
