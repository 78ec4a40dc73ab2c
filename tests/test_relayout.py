"""Saved per-asset state follows its asset when ``serve --workers N`` or the partitions change:
an alert up, a drift baseline, a maintenance and an acknowledgeable alert, read by the worker that
serves the asset now (before, they stayed in the old worker's folder: the alert was raised again
under a new id, the maintenance stopped holding)."""

from __future__ import annotations

import doctest
import os
from pathlib import Path

from sensorguard.service import relayout as relayout_module
from sensorguard.service.alerts import AlertState
from sensorguard.service.command_messages import Command
from sensorguard.service.commands import AlarmControls
from sensorguard.service.config import load_settings
from sensorguard.service.drift import DriftState
from sensorguard.service.relayout import relayout_states
from sensorguard.service.state import judged_times, load_states, restore_states, save_states
from sensorguard.service.worker_plans import worker_settings


def _plans(root: Path, n: int, partitions=("a/#", "b/#", "c/#")):
    s = load_settings({"model": None, "broker": "mqtt://h", "partition": list(partitions), "state_dir": str(root)},
                      {}, require_model=False)
    return [s] if n == 1 else worker_settings(s, n)


def _alert(asset: str) -> AlertState:
    return AlertState("alerting", above=3, peak=2.0, alert_id=f"{asset}@1")


def _maintain(folder: Path, asset: str, now: float = 1000.0) -> None:
    controls = AlarmControls(str(folder))
    ok, _, _ = controls.apply(Command("maintenance", asset, action="start", until=None), now)
    assert ok
    controls.raised(f"{asset}@1", asset, now)
    controls.save()


def test_doctests() -> None:
    assert doctest.testmod(relayout_module).failed == 0


def test_two_workers_to_three_and_back_to_one_keeps_every_asset_with_its_worker(tmp_path):
    two = _plans(tmp_path, 2)  # w0: a/#, c/#; w1: b/#
    save_states(two[0].state_dir, {"a/p": _alert("a/p"), "c/p": AlertState()}, {"c/p": DriftState(0.3, 50)},
                judged={"a/p": 1234.5, "c/p": 1200.0})
    save_states(two[1].state_dir, {"b/p": _alert("b/p")}, {}, unannounced={"b/p"})
    _maintain(Path(two[0].state_dir), "c/p")

    three = _plans(tmp_path, 3)  # w0: a/#, w1: b/#, w2: c/#
    assert relayout_states(str(tmp_path), three) == 1
    assert set(restore_states(three[0].state_dir, 100)) == {"a/p"}
    assert set(restore_states(three[1].state_dir, 100)) == {"b/p"}
    alert, drift, announced = restore_states(three[2].state_dir, 100)["c/p"]
    assert drift == DriftState(0.3, 50) and announced
    w2 = AlarmControls(three[2].state_dir)
    assert w2.suppressed("c/p", now=2000.0) == "maintenance" and w2.acked("c/p@1") is not None
    assert AlarmControls(three[0].state_dir).assets() == set()
    # each asset's last judged window moves with it (readings up to it are not judged again)
    assert judged_times(three[0].state_dir) == {"a/p": 1234.5} and judged_times(three[2].state_dir) == {"c/p": 1200.0}
    assert relayout_states(str(tmp_path), three) == 0  # in place: nothing moves

    one = _plans(tmp_path, 1)
    assert relayout_states(str(tmp_path), one) == 3
    restored = restore_states(str(tmp_path), 100)
    assert set(restored) == {"a/p", "b/p", "c/p"}
    assert restored["a/p"][0].alert_id == "a/p@1" and restored["b/p"][2] is False  # still unannounced
    assert AlarmControls(str(tmp_path)).suppressed("c/p", now=2000.0) == "maintenance"
    assert judged_times(str(tmp_path)) == {"a/p": 1234.5, "c/p": 1200.0}
    assert not any((tmp_path / f"w{k}").exists() for k in range(3))  # emptied worker folders removed


def test_an_asset_no_partition_serves_stays_and_of_two_copies_its_owners_is_kept(tmp_path):
    """Two copies: a start stopped half-way (the owner's written first), or an older version's
    worker that kept re-saving a stale copy. The owner's copy wins even when the other file was
    written later (found by review: the newer file's stale copy replaced a live alert)."""
    old = _plans(tmp_path, 2)
    save_states(old[1].state_dir, {"b/p": _alert("b/p"), "z/p": _alert("z/p"), "y/p": _alert("y/p")}, {})
    save_states(tmp_path / "w0", {"b/p": AlertState("alerting", above=9, peak=5.0, alert_id="b/p@2"),
                                  "y/p": AlertState(alert_id="y/p@2")}, {})
    os.utime(tmp_path / "w0" / "assets.json", (10**9, 10**9))
    os.utime(tmp_path / "w1" / "assets.json", (10**9 + 10, 10**9 + 10))  # written after w0's

    plans = _plans(tmp_path, 2, partitions=("b/#", "a/#"))  # b/# is w0's now; nobody serves z/# or y/#
    relayout_states(str(tmp_path), plans)
    assert load_states(tmp_path / "w0")[0]["b/p"].alert_id == "b/p@2"  # its owner's, not the newer file's
    assert set(load_states(tmp_path / "w1")[0]) == {"z/p", "y/p"}  # no owner: the newer file's copy
    assert load_states(tmp_path / "w1")[0]["y/p"].alert_id == "y/p@1"


def test_a_folder_that_cannot_be_written_keeps_the_assets_where_they_were(tmp_path):
    """A failed write must not be followed by the removal from the old folder (the controls' save
    only logged its failure; found by review), nor stop the start."""
    save_states(tmp_path, {"b/p": _alert("b/p")}, {})
    _maintain(tmp_path, "b/p")
    (tmp_path / "w1").write_text("a file where worker 1's folder belongs")
    assert relayout_states(str(tmp_path), _plans(tmp_path, 2)) == 0
    assert "b/p" in load_states(tmp_path)[0]
    assert AlarmControls(str(tmp_path)).suppressed("b/p", now=2000.0) == "maintenance"


def test_an_unreadable_controls_file_is_set_aside_as_its_daemon_would_and_says_the_holds_are_gone(tmp_path, caplog):
    """A walk upgraded a single daemon to --workers 2 over a controls.json cut short: the relayout
    skipped it with "no asset moves into or out of it", it stayed in the root, which no worker
    reads, and its maintenance and shelving were silently not in force. Each file is set aside as
    its daemon would set it aside, with the line that says the holds are lost and where they are
    found again."""
    import logging

    _maintain(tmp_path, "a/p")
    (tmp_path / "audit.jsonl").write_text('{"command": "maintenance", "asset": "a/p"}\n')
    cut = (tmp_path / "controls.json").read_bytes()[:50]
    (tmp_path / "controls.json").write_bytes(cut)
    (tmp_path / "w1").mkdir()
    _maintain(tmp_path / "w1", "b/p")
    (tmp_path / "w1" / "controls.json").write_text("{broken")
    with caplog.at_level(logging.WARNING):
        relayout_states(str(tmp_path), _plans(tmp_path, 2))
    assert (tmp_path / "controls.json.bad").read_bytes() == cut and not (tmp_path / "controls.json").exists()
    assert (tmp_path / "w1" / "controls.json.bad").read_text() == "{broken"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all("starting without maintenance, shelving or acknowledgements" in x for x in lines)
    assert lines[0].endswith(f"re-issue the holds still due from the accepted commands in {tmp_path / 'audit.jsonl'}")


def test_an_unreadable_state_file_is_set_aside_as_its_daemon_would(tmp_path, caplog):
    """... and said as its daemon would say it: the daemon, finding no file after, said nothing (a walk)."""
    import logging

    plans = _plans(tmp_path, 2)
    (tmp_path / "w1").mkdir()
    (tmp_path / "w1" / "assets.json").write_text("{not json")
    save_states(tmp_path, {"b/p": _alert("b/p")}, {})
    with caplog.at_level(logging.WARNING):
        assert relayout_states(str(tmp_path), plans) == 1
    assert "assets.json.bad, starting without its saved asset state" in caplog.text
    assert (tmp_path / "w1" / "assets.json.bad").read_text() == "{not json"  # kept for inspection
    assert set(load_states(tmp_path / "w1")[0]) == {"b/p"} and not (tmp_path / "assets.json").exists()


def test_open_sensor_faults_move_with_their_asset_and_stay_with_the_others(tmp_path):
    """Rewritten without them, every asset of a folder the layout touched lost its open sensor
    faults, moved or not (a review)."""
    from sensorguard.service.state import saved_channels, saved_extras, saved_faults

    fault = [{"kind": "stuck", "channel": "c0", "since": 1.7e9, "value": 2.5}]
    top = [{"name": "c0", "share": 0.7}, {"name": "c1", "share": 0.3}]  # (and the top channels: a walk)
    save_states(tmp_path, {"a/p": _alert("a/p"), "b/p": _alert("b/p")}, {}, judged={"a/p": 1.7e9, "b/p": 1.7e9},
                faults={"a/p": fault, "b/p": fault}, channels={"a/p": top}, past={"b/p": {"c1": 42.0}})
    relayout_states(str(tmp_path), _plans(tmp_path, 2))
    found = {**saved_faults(tmp_path / "w0"), **saved_faults(tmp_path / "w1")}
    assert found == {"a/p": fault, "b/p": fault}
    assert {**saved_channels(tmp_path / "w0"), **saved_channels(tmp_path / "w1")} == {"a/p": top}
    # (and the channels walked past their sensor limits: a worker's restart judges their next step from there)
    assert {**saved_extras(tmp_path / "w0").past, **saved_extras(tmp_path / "w1").past} == {"b/p": {"c1": 42.0}}


def test_a_silent_asset_moves_with_its_silence(tmp_path):
    """A silence is saved beside the asset's state (a restart forgot it: no ``sensor_ok`` came at its
    return, a walk); a layout change moves it with the asset."""
    from sensorguard.service.state import saved_extras

    save_states(tmp_path, {}, {}, silent={"a/p": (1.7e9, 0.4), "b/p": (1.7e9, 0.2)})
    relayout_states(str(tmp_path), _plans(tmp_path, 2))
    silences = {**saved_extras(tmp_path / "w0").silences, **saved_extras(tmp_path / "w1").silences}
    assert silences == {"a/p": (1.7e9, 0.4), "b/p": (1.7e9, 0.2)}
    assert set(load_states(tmp_path / "w0")[0]) | set(load_states(tmp_path / "w1")[0]) == {"a/p", "b/p"}
    # back to one daemon: of two copies the newer silence is kept; one judged after its silence is live
    save_states(tmp_path / "w0", {}, {}, silent={"c/p": (1.7e9 + 30, 0.2), "c/q": (1.7e9 + 10, 0.1)})
    save_states(tmp_path / "w1", {"c/q": AlertState(last_score=0.3)}, {}, judged={"c/q": 1.7e9 + 60},
                silent={"c/p": (1.7e9, 0.1)})  # (read last: the older silence must not win for that)
    relayout_states(str(tmp_path), _plans(tmp_path, 1))
    merged = saved_extras(tmp_path).silences
    assert merged["c/p"] == (1.7e9 + 30, 0.2) and "c/q" not in merged
