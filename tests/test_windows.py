"""Per-asset ring buffers: cadence equal to hop_mask, rejects, forward fill, gaps, limits."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorguard.service import windows
from sensorguard.service.alerts import hop_mask, step_masks
from sensorguard.service.payload import REJECT_REASONS
from sensorguard.service.windows import Buffers

CH = ("a", "b", "c")
NAN = float("nan")


def row(t: float) -> dict[str, float]:
    return {"a": t, "b": 10 * t, "c": -t}


def feed(bufs: Buffers, asset: str, times, received: float = 0.0) -> list[str | None]:
    return [bufs.add(asset, float(t), row(float(t)), received) for t in times]


def test_doctests() -> None:
    assert doctest.testmod(windows).failed == 0


@pytest.mark.parametrize(("window", "hop", "n"), [(1, 1, 5), (4, 1, 10), (4, 3, 20), (5, 5, 23), (3, 7, 30)])
def test_windows_content_and_cadence_match_hop_mask(window: int, hop: int, n: int) -> None:
    bufs = Buffers(CH, window, hop)
    assert feed(bufs, "p", range(1, n + 1)) == [None] * n
    due = bufs.drain()
    expected_rows = np.flatnonzero(hop_mask(np.zeros(n), window, hop))
    assert [w.ts for w in due] == [float(r + 1) for r in expected_rows]
    for w in due:
        t = np.arange(w.ts - window + 1, w.ts + 1)
        assert w.window.shape == (3, window) and w.window.dtype == np.float64
        np.testing.assert_array_equal(w.window, np.stack([t, 10 * t, -t]))
        assert w.window.flags.c_contiguous and w.asset == "p"


@settings(max_examples=100, deadline=None)
@given(
    window=st.integers(1, 6),
    hop=st.integers(1, 5),
    steps=st.lists(st.sampled_from(["ok", "gap", "dup", "old"]), max_size=40),
)
def test_cadence_with_gaps_matches_hop_mask_per_segment(window: int, hop: int, steps: list[str]) -> None:
    """Whatever the mix of gaps and rejected samples, due windows are hop_mask over accepted rows."""
    bufs = Buffers(CH, window, hop, max_gap_s=5.0)
    t, segment, segments, accepted_ts = 100.0, 0, [], []
    for kind in steps:
        if kind in ("dup", "old") and accepted_ts:
            reason = bufs.add("p", t if kind == "dup" else t - 0.5, row(t), 0.0)
            assert reason == ("duplicate_ts" if kind == "dup" else "out_of_order")
            continue
        t += 10.0 if kind == "gap" else 1.0
        segment += kind == "gap" and bool(accepted_ts)
        assert bufs.add("p", t, row(t), 0.0) is None
        segments.append(segment)
        accepted_ts.append(t)
    mask = hop_mask(np.array(segments), window, hop)
    assert [w.ts for w in bufs.drain()] == [accepted_ts[i] for i in np.flatnonzero(mask)]
    assert bufs.gaps == segment


def test_gap_restarts_the_buffer_and_never_stitches() -> None:
    bufs = Buffers(CH, window=3, hop=1, max_gap_s=2.0)
    feed(bufs, "p", [1, 2, 3, 4])
    assert [w.ts for w in bufs.drain()] == [3.0, 4.0]
    feed(bufs, "p", [6, 7.5])  # a gap of exactly max_gap_s is not a gap
    assert bufs.gaps == 0 and [w.ts for w in bufs.drain()] == [6.0, 7.5]
    feed(bufs, "p", [20, 21, 22])
    assert bufs.gaps == 1
    (w,) = bufs.drain()
    np.testing.assert_array_equal(w.window[0], [20, 21, 22])


def test_assets_are_independent_and_drain_is_in_arrival_order() -> None:
    bufs = Buffers(CH, window=2, hop=1)
    for t in range(1, 4):
        bufs.add("x", float(t), row(t), received=t + 0.5)
        bufs.add("y", float(t) + 100, row(t + 100), received=t + 0.7)
    due = bufs.drain()
    assert [(w.asset, w.ts, w.received) for w in due] == [
        ("x", 2.0, 2.5),
        ("y", 102.0, 2.7),
        ("x", 3.0, 3.5),
        ("y", 103.0, 3.7),
    ]
    assert len(bufs) == 2 and bufs.assets() == ["x", "y"] and "x" in bufs


def test_drain_limit_and_pending() -> None:
    bufs = Buffers(CH, window=1, hop=1)
    feed(bufs, "p", range(1, 6))
    assert bufs.pending() == 5
    assert [w.ts for w in bufs.drain(2)] == [1.0, 2.0]
    assert bufs.pending() == 3
    assert bufs.drain(0) == []
    assert [w.ts for w in bufs.drain(10)] == [3.0, 4.0, 5.0]
    assert bufs.pending() == 0 and bufs.drain() == []


def test_windows_are_copies() -> None:
    bufs = Buffers(CH, window=2, hop=1)
    feed(bufs, "p", [1, 2])
    (first,) = bufs.drain()
    feed(bufs, "p", [3, 4, 5])
    first.window[:] = -1
    assert [w.window[0].tolist() for w in bufs.drain()] == [[2, 3], [3, 4], [4, 5]]


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}, "unknown_channel"),
        ({"a": 1.0, "b": 1.0, "x": 1.0}, "unknown_channel"),
        ({"a": 1.0, "b": 1.0}, "missing_channel"),  # nothing to fill from yet
        ({}, "missing_channel"),
    ],
)
def test_channel_rejects_on_a_new_asset(values: dict, reason: str) -> None:
    bufs = Buffers(CH, window=2, hop=1)
    assert bufs.add("p", 1.0, values, 0.0) == reason
    # an unknown channel takes no asset slot; a dropped incomplete reading does, as offline its
    # values stay the fill source of the channels it had
    assert len(bufs) == (reason == "missing_channel")


def test_order_rejects_leave_the_asset_untouched() -> None:
    bufs = Buffers(CH, window=2, hop=1)
    feed(bufs, "p", [5])
    assert bufs.add("p", 5.0, row(9), 1.0) == "duplicate_ts"
    assert bufs.add("p", 4.0, row(9), 1.0) == "out_of_order"
    assert bufs.last_seen("p") == 0.0
    feed(bufs, "p", [6])
    (w,) = bufs.drain()
    assert w.window[0].tolist() == [5.0, 6.0]


def test_forward_fill_up_to_the_limit_then_the_window_restarts() -> None:
    bufs = Buffers(CH, window=3, hop=1, fill_limit=2)
    feed(bufs, "p", [1])
    assert bufs.add("p", 2.0, {"a": 2.0, "c": -2.0}, 0.0) is None
    assert bufs.add("p", 3.0, {"a": 3.0, "b": NAN, "c": -3.0}, 0.0) is None  # NaN is a missing value too
    (w,) = bufs.drain()
    np.testing.assert_array_equal(w.window, [[1, 2, 3], [10, 10, 10], [-1, -2, -3]])
    assert bufs.add("p", 4.0, {"a": 4.0, "c": -4.0}, 0.0) == "missing_channel"  # a third fill in a row: dropped
    assert bufs.add("p", 4.0, row(4.0), 0.0) == "duplicate_ts"  # the dropped reading still had its time
    assert bufs.add("p", 5.0, {"a": 5.0, "b": 50.0}, 0.0) is None  # b back; c filled from -4 (its last value)
    assert bufs.gaps == 1 and bufs.drain() == []  # the window restarted after the dropped row
    feed(bufs, "p", [6, 7])
    (w,) = bufs.drain()
    np.testing.assert_array_equal(w.window, [[5, 6, 7], [50, 60, 70], [-4, -6, -7]])


def test_fill_limit_zero_requires_every_channel() -> None:
    bufs = Buffers(CH, window=2, hop=1, fill_limit=0)
    feed(bufs, "p", [1])
    assert bufs.add("p", 2.0, {"a": 1.0, "b": 1.0}, 0.0) == "missing_channel"


def test_no_forward_fill_across_a_gap() -> None:
    bufs = Buffers(CH, window=2, hop=1, max_gap_s=10.0)
    feed(bufs, "p", [1])
    assert bufs.add("p", 100.0, {"a": 1.0, "b": 1.0}, 0.0) == "missing_channel"
    feed(bufs, "p", [101, 102])
    assert [w.ts for w in bufs.drain()] == [102.0]  # the window restarted at 101


def test_max_assets() -> None:
    bufs = Buffers(CH, window=2, hop=1, max_assets=2)
    assert feed(bufs, "a1", [1]) == [None]
    assert feed(bufs, "a2", [1]) == [None]
    assert feed(bufs, "a3", [1]) == ["too_many_assets"]
    assert feed(bufs, "a1", [2]) == [None], "known assets still work"
    bufs.forget("a1")
    assert feed(bufs, "a3", [1]) == [None], "forgetting frees a slot"


def test_forget_and_last_seen_and_idle() -> None:
    bufs = Buffers(CH, window=1, hop=1)
    feed(bufs, "x", [1, 2], received=50.0)
    feed(bufs, "y", [1], received=80.0)
    assert bufs.last_seen("x") == 50.0 and bufs.last_seen("nope") is None
    assert bufs.idle(before=60.0) == ["x"]
    bufs.forget("x")
    bufs.forget("never-seen")
    assert bufs.assets() == ["y"] and [w.asset for w in bufs.drain()] == ["y"]


def test_every_reason_is_a_known_reject_reason() -> None:
    """Provoke each refusal of ``Buffers.add``: what it returns must be a listed (counted, documented) reason."""
    bufs = Buffers(CH, 4, 1, max_assets=2)
    assert bufs.add("p", 10.0, row(10.0), 0.0) is None
    returned = {
        "unknown_channel": bufs.add("p", 11.0, {**row(11.0), "zz": 1.0}, 0.0),
        "missing_channel": bufs.add("q", 11.0, {"a": 1.0}, 0.0),  # a new asset: nothing to forward-fill
        "duplicate_ts": bufs.add("p", 10.0, row(10.0), 0.0),
        "out_of_order": bufs.add("p", 9.0, row(9.0), 0.0),
    }
    assert bufs.add("q", 12.0, row(12.0), 0.0) is None
    returned["too_many_assets"] = bufs.add("r", 11.0, row(11.0), 0.0)
    assert {case: reason for case, reason in returned.items() if reason not in REJECT_REASONS} == {}
    assert all(case == reason for case, reason in returned.items()), returned


@pytest.mark.parametrize(
    "kwargs",
    [
        {"channels": ()},
        {"channels": ("a", "a")},
        {"window": 0},
        {"hop": 0},
        {"max_assets": 0},
        {"fill_limit": -1},
        {"max_gap_s": 0.0},
    ],
)
def test_bad_arguments(kwargs: dict) -> None:
    args = {"channels": CH, "window": 3, "hop": 1} | kwargs
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Buffers(**args)


def test_redelivered_older_samples_are_duplicates_not_disorder() -> None:
    # after a reconnect a QoS 1 broker resends unacknowledged messages behind newer ones
    bufs = Buffers(CH, window=2, hop=1)
    feed(bufs, "p", [1, 2, 3, 4, 5])
    assert bufs.add("p", 3.0, row(9), 1.0) == "duplicate_ts"
    assert bufs.add("p", 3.5, row(9), 1.0) == "out_of_order"
    assert bufs.add("p", 1.0, row(9), 1.0) == "duplicate_ts"


def test_an_asset_whose_readings_are_all_dropped_is_not_heard_from() -> None:
    bufs = Buffers(CH, window=2, hop=1)
    assert bufs.add("p", 1.0, {"a": 1.0}, received=5.0) == "missing_channel"
    assert bufs.add("p", 2.0, {"a": 1.0}, received=20.0) == "missing_channel"
    assert bufs.idle(before=10.0) == ["p"]  # so it goes stale and frees its slot
    assert bufs.add("p", 3.0, row(3.0), received=30.0) is None
    assert bufs.idle(before=10.0) == []


def test_primed_readings_continue_the_window_without_queueing_what_the_previous_owner_scored() -> None:
    """Cluster mode's takeover: the new owner's buffer continues where the old one was, so its next
    window is due on the same cadence and holds the readings the old owner took."""
    primed, fresh = Buffers(CH, 4, 2), Buffers(CH, 4, 2)
    taken, opened = primed.prime("p", [(float(t), row(float(t))) for t in range(1, 6)], 0.0)
    assert taken == 5 and opened == [] and primed.pending() == 0 and primed.last_ts("p") == 5.0
    assert feed(primed, "p", [5]) == ["duplicate_ts"]  # a redelivered reading it was primed with
    feed(primed, "p", [6])
    feed(fresh, "p", [6])
    assert fresh.pending() == 0  # a fresh asset needs a whole window first
    (due,) = primed.drain()
    assert due.ts == 6.0 and due.window[0].tolist() == [3.0, 4.0, 5.0, 6.0]
    same = Buffers(CH, 4, 2)
    feed(same, "p", range(1, 7))
    assert [w.ts for w in same.drain()] == [4.0, 6.0]  # the cadence the old owner had: 6 is due


def test_priming_with_the_last_scored_window_keeps_the_old_cadence() -> None:
    """The old owner's windows were due at 4, 6, 8 (window 4, hop 2); it took up to 9 and scored
    the window at 8. Primed from 4 on, the buffer alone would put windows at 11, 13...; told
    the window at 8 was scored, it continues at 10, 12 as the old owner would have."""
    samples = [(float(t), row(float(t))) for t in range(4, 10)]
    alone, told = Buffers(CH, 4, 2), Buffers(CH, 4, 2)
    alone.prime("p", samples, 0.0)
    told.prime("p", samples, 0.0, window_ts=8.0)
    for bufs in (alone, told):
        feed(bufs, "p", [10, 11, 12, 13])
    assert [w.ts for w in alone.drain()] == [11.0, 13.0]
    assert [w.ts for w in told.drain()] == [10.0, 12.0]
    same = Buffers(CH, 4, 2)
    feed(same, "p", range(1, 14))
    assert [w.ts for w in same.drain()][-2:] == [10.0, 12.0]


def one_channel(stamps) -> list[tuple[float, dict[str, float]]]:
    return [(float(ts), {"a": float(i)}) for i, ts in enumerate(stamps)]


def takeover_matches_the_old_owner(stamps, window: int, hop: int, moved_after: int) -> None:
    """The old owner takes the first ``moved_after`` readings and dies; the new owner primes from
    them (``prime_span``) and continues: its windows are the ones the old owner would have had."""
    from sensorguard.service.cleaning import CleaningPolicy
    from sensorguard.service.takeover import prime_span

    policy, readings = CleaningPolicy(1.0, True, 5), one_channel(stamps)
    old, new = Buffers(("a",), window, hop, policy=policy), Buffers(("a",), window, hop, policy=policy)
    scored = []
    for ts, values in readings[:moved_after]:
        old.add("p", ts, values, 0.0)
        scored += old.drain()
    anchor = scored[-1].ts
    new.prime("p", prime_span(readings[:moved_after], anchor, window), 0.0, anchor)
    new.drain()
    for ts, values in readings[moved_after:]:
        old.add("p", ts, values, 0.0)
        new.add("p", ts, values, 0.0)
    expected = [(w.ts, w.window.tolist()) for w in old.drain()]
    assert expected and [(w.ts, w.window.tolist()) for w in new.drain()] == expected


def test_a_takeover_keeps_the_cadence_when_the_last_scored_window_ended_on_a_filled_row() -> None:
    """A reading missing at 149: the old owner's window at 149 (window 3, hop 3) ended on the row
    the cleaner filled there, which no reading's time matches; the new owner's windows came a
    sample late (found by review)."""
    takeover_matches_the_old_owner([t for t in range(300) if t != 149], window=3, hop=3, moved_after=151)
    # a last scored window ending further back than PRIME_WARM readings (window and hop 100, moved 91
    # readings after it): the prime reaches back to it (an audit: with a cut that ignored it, this passed)
    takeover_matches_the_old_owner(list(range(400)), window=100, hop=100, moved_after=190)


def test_a_takeover_replays_enough_readings_for_the_rate_estimate_to_agree() -> None:
    """A few slow steps among the last window's readings: from a cold rate estimate the new owner
    refused a reading that the old owner took, and its windows held a fill there (found by review)."""
    stamps = [*range(0, 100), 100, 103, 106, 107, 110, 113, *range(114, 200)]
    takeover_matches_the_old_owner(stamps, window=4, hop=2, moved_after=105)


def test_an_asset_back_from_a_silence_keeps_its_rate_estimate_as_offline() -> None:
    """A publisher at 0.5 s against a 1 s model, silent 10 minutes (forgotten as stale), then back:
    offline, the estimate spans the silence and the readings are resampled to the model's rate;
    live started afresh and took readings 0.5 s apart into its first windows (found by review)."""
    from sensorguard.service.cleaning import CleaningPolicy

    policy = CleaningPolicy(1.0, True, 5)
    stamps = [0.5 * i for i in range(120)] + [660.0 + 0.5 * i for i in range(60)]
    forgetful, offline = Buffers(("a",), 4, 2, policy=policy), Buffers(("a",), 4, 2, policy=policy)
    for ts, values in one_channel(stamps):
        if ts == 660.0:
            forgetful.drain()
            offline.drain()
            forgetful.forget("p")  # the daemon forgets a stale asset
        assert forgetful.add("p", ts, values, 0.0) == offline.add("p", ts, values, 0.0), ts
    back = [(w.ts, w.window.tolist()) for w in offline.drain()]
    assert back and [(w.ts, w.window.tolist()) for w in forgetful.drain()] == back



def test_an_asset_back_from_a_silence_with_its_clock_set_back_is_not_resampled() -> None:
    """A device reset while silent: its readings came back a day before its last one. The kept
    rate estimate took the negative step and dropped 60 of its first 400 readings as resampled
    (found by review)."""
    from sensorguard.service.cleaning import CleaningPolicy

    bufs = Buffers(("a",), 4, 2, policy=CleaningPolicy(1.0, True, 5))
    for ts, values in one_channel([float(t) for t in range(100_000, 100_200)]):
        assert bufs.add("p", ts, values, 0.0) is None
    bufs.drain()
    bufs.forget("p")
    back = [bufs.add("p", ts, values, 0.0) for ts, values in one_channel([float(t) for t in range(10_000, 10_400)])]
    assert back == [None] * 400

def test_priming_queues_the_windows_the_previous_owner_completed_but_never_scored() -> None:
    """The old owner took readings up to 13 but died having scored the window at 8 last: the
    windows at 10 and 12 (window 4, hop 2) are queued for the new owner, on the old cadence; none
    without an anchor (nothing says what was scored)."""
    samples = [(float(t), row(float(t))) for t in range(4, 14)]
    told, alone = Buffers(CH, 4, 2), Buffers(CH, 4, 2)
    told.prime("p", samples, 0.0, window_ts=8.0)
    alone.prime("p", samples, 0.0)
    assert [w.ts for w in told.drain()] == [10.0, 12.0]
    assert told.drain() == [] and alone.drain() == []
    feed(told, "p", [14])
    assert [w.ts for w in told.drain()] == [14.0]


@pytest.mark.parametrize(("window", "hop", "alert_hop"), [(4, 4, 2), (4, 6, 3), (3, 4, 1), (5, 2, 2)])
def test_alert_hop_windows_are_queued_on_the_alert_hop_grid_and_marked(window: int, hop: int, alert_hop: int) -> None:
    """Every alert_hop samples a window is due; those on step_masks' hop grid are coarse, the rest
    are the ones the daemon judges only while an alert is up; forgetting counts only the former."""
    n = 30
    bufs = Buffers(CH, window, hop, alert_hop=alert_hop)
    feed(bufs, "p", range(1, n + 1))
    mask, alert_mask = step_masks(np.zeros(n), window, hop, alert_hop)
    every = mask if alert_mask is None else alert_mask
    assert (bufs.pending(), bufs.queued()) == (mask.sum(), every.sum())  # backpressure counts the hop grid's
    assert len(bufs.drain(3)) == 3 and bufs.pending() == mask.sum() - sum(mask[every][:3])
    feed(bufs, "q", range(1, n + 1))
    bufs.forget("q")
    assert bufs.pending() == mask.sum() - sum(mask[every][:3])
    bufs = Buffers(CH, window, hop, alert_hop=alert_hop)
    feed(bufs, "p", range(1, n + 1))
    due = bufs.drain()
    assert bufs.pending() == bufs.queued() == 0
    assert [w.ts for w in due] == [float(r + 1) for r in np.flatnonzero(every)]
    assert [w.ts for w in due if w.coarse] == [float(r + 1) for r in np.flatnonzero(mask)]
    feed(bufs, "p", range(n + 1, n + 13))
    assert bufs.forget("p") == int(hop_mask(np.zeros(n + 12), window, hop)[n:].sum())


@pytest.mark.parametrize("alert_hop", [-1, 3, 8])
def test_an_alert_hop_that_does_not_divide_the_hop_is_refused(alert_hop: int) -> None:
    with pytest.raises(ValueError, match="alert_hop"):
        Buffers(CH, 4, 4, alert_hop=alert_hop)
    bufs = Buffers(CH, 4, 4)
    with pytest.raises(ValueError, match="alert_hop"):
        bufs.set_alert_hop(alert_hop)
    assert bufs.alert_hop == 0
