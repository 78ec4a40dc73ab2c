"""Writes to ``state_dir`` that the next start depends on: saved soon after the broker confirms a
raise, failures counted and said (in a command's answer and serve's exit status), recovery logged once.

A write is made to fail for real: the file's path is a directory (tests run as root here, and a
read-only mode does not stop root).
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sensorguard.service.asset_buffer import DueWindow
from sensorguard.service.state import STATE_FILE, load_states
from sensorguard.service.state_writes import ASSETS, AUDIT, CONTROLS, EXIT_UNSAVED, STATE_FILES
from tests.mosquitto import clean_env, client_id, free_port, http_status, metric, start_daemon, wait_for
from tests.test_daemon import T0, value
from tests.test_state import RULE, daemon_with, raised, unconfirmed

ROOT = Path(__file__).resolve().parents[1]
FAILURES = "sensorguard_state_write_failures_total"


@pytest.fixture
def bundle(tiny_bundle):
    return tiny_bundle.with_threshold(1.0, {"method": "alerts", "drift": RULE.to_dict()})


def test_a_raise_confirmed_after_it_was_saved_as_unannounced_is_saved_at_the_next_tick(bundle, tmp_path,
                                                                                        monkeypatch):
    """Found by a walk: the file written right after a raise (before the broker's confirmation)
    marks it unannounced, and nothing saved again when the confirmation came: a ``kill -9`` up to
    30 s later made the restart publish ``raised`` again under the same id, log it and count it.
    The confirmation now asks for a save at the next tick."""
    first, client = daemon_with(bundle, tmp_path)
    confirmed = unconfirmed(client)
    saves = []
    save = first.alerts.save
    monkeypatch.setattr(first.alerts, "save", lambda: saves.append(time.monotonic()) or save())  # the real one
    for i in range(3):
        first.alerts.apply("pump-1", T0 + i, 5.0, [])
    assert len(raised(client)) == 1
    now = time.monotonic()
    first.housekeeping(now)  # the raise's own save
    assert load_states(tmp_path)[2] == {"pump-1"} and len(saves) == 1
    for tick in range(1, 4):
        first.housekeeping(now + tick)
    assert len(saves) == 1  # no confirmation yet: no save each tick meanwhile
    confirmed["yes"] = True  # the broker's PUBACK
    first.housekeeping(now + 4)  # the next tick, long before SAVE_INTERVAL_S
    assert load_states(tmp_path)[2] == set() and len(saves) == 2
    first.housekeeping(now + 5)
    assert len(saves) == 2  # saved once for it

    second, client2 = daemon_with(bundle, tmp_path)  # as after a kill -9 now
    second.alerts.apply("pump-1", T0 + 10, 5.0, [])
    assert second.snapshot()["pump-1"].status == "alerting" and raised(client2) == []
    assert value(second, "sensorguard_alerts_total", asset="pump-1") in (None, 0.0)


def test_a_raise_reaches_the_broker_only_once_the_state_file_holds_it(bundle, tmp_path, monkeypatch):
    """A walk: ``kill -9`` within a second of a raise (before the next tick's save) restarted from a
    file without it, and the fault was raised again under a new id, the first never cleared. A
    batch's raises now go out after a save that holds them up and unannounced (a restart tells them
    again under the same id), and so does the retained state that names it; a raise and its clear
    in one batch go out in that order."""
    from dataclasses import replace

    daemon, client = daemon_with(bundle, tmp_path)
    on_disk: list[tuple[str, dict]] = []
    named: list[bool] = []  # per retained state naming an alert id: whether the file held it then
    publish = client.publish

    def watched(topic, payload, qos=0, retain=False, properties=None):
        message = json.loads(payload)
        if topic.startswith("sensorguard/alerts/"):
            alerts, _, unannounced = load_states(tmp_path)
            on_disk.append((message["state"], {"saved": alerts.get(message["asset"]), "unannounced": unannounced}))
        elif topic.startswith("sensorguard/state/") and message.get("alert_id"):  # a retained state naming it
            saved = load_states(tmp_path)[0].get(message["asset"]) if (tmp_path / STATE_FILE).exists() else None
            named.append(saved is not None and saved.alert_id == message["alert_id"])
        return publish(topic, payload, qos, retain)

    client.publish = watched
    served = daemon.models.scorer.score_windows
    scores = iter([5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 0.1, 0.1])  # pump-1: three batches; pump-2: a raise and its clear
    monkeypatch.setattr(daemon.models.scorer, "score_windows", lambda windows, excluded: replace(
        served(windows, excluded), score=np.array([next(scores) for _ in range(len(windows))])))
    window = np.zeros((len(bundle.channels), bundle.window))
    for i in range(3):
        daemon.score_batch([DueWindow("pump-1", T0 + 2 * i, window, 0.0)])
    up = daemon.snapshot()["pump-1"]
    assert up.status == "alerting" and len(raised(client)) == 1
    assert [state for state, _ in on_disk] == ["raised"]
    assert on_disk[0][1]["saved"] == up and on_disk[0][1]["unannounced"] == {"pump-1"}
    daemon.score_batch([DueWindow("pump-2", T0 + 2 * i, window, 0.0) for i in range(5)])
    told = [(e["asset"], e["state"]) for e in (json.loads(p) for t, p, _ in client.published
                                                if t.startswith("sensorguard/alerts/")) if e["asset"] == "pump-2"]
    assert told == [("pump-2", "raised"), ("pump-2", "cleared")]
    assert on_disk[1][1]["saved"].status == "alerting" and "pump-2" in on_disk[1][1]["unannounced"]
    assert value(daemon, "sensorguard_alerts_total", asset="pump-2") == 1.0
    assert named and all(named), named  # (a state named the id before the file held it: a review)


def test_a_save_that_fails_before_a_raise_does_not_hold_the_raise_back(bundle, tmp_path, monkeypatch):
    """A review: a save failing with anything but an OSError left the raise held for good, and every
    later window of its asset failed. The raise goes out all the same, and the asset is judged on."""
    from dataclasses import replace

    daemon, client = daemon_with(bundle, tmp_path)
    monkeypatch.setattr(daemon.alerts, "save", lambda: (_ for _ in ()).throw(ValueError("a bug")))
    served = daemon.models.scorer.score_windows
    monkeypatch.setattr(daemon.models.scorer, "score_windows", lambda windows, excluded: replace(
        served(windows, excluded), score=np.full(len(windows), 5.0)))
    window = np.zeros((len(bundle.channels), bundle.window))
    for i in range(4):
        daemon.score_batch([DueWindow("pump-1", T0 + 2 * i, window, 0.0)])
    assert len(raised(client)) == 1 and daemon.snapshot()["pump-1"].status == "alerting"
    assert not daemon.alerts._held_back


def test_the_raises_of_one_batch_cost_one_save(bundle, tmp_path, monkeypatch):
    """A review: a held asset's next window in the batch saved again, so a backlog drained asset by
    asset cost a full save (two fsyncs) per raise. Only a held asset's next event does now."""
    from dataclasses import replace

    daemon, client = daemon_with(bundle, tmp_path)
    saves = []
    save = daemon.alerts.save
    monkeypatch.setattr(daemon.alerts, "save", lambda: saves.append(1) or save())
    served = daemon.models.scorer.score_windows
    monkeypatch.setattr(daemon.models.scorer, "score_windows", lambda windows, excluded: replace(
        served(windows, excluded), score=np.full(len(windows), 5.0)))
    window = np.zeros((len(bundle.channels), bundle.window))
    daemon.score_batch([DueWindow(asset, T0 + 2 * i, window, 0.0) for asset in ("pump-1", "pump-2", "pump-3")
                        for i in range(6)])
    assert len(raised(client)) == 3 and len(saves) == 1
    assert daemon.alerts.save_soon is False  # (the broker's confirmation asks for the next one)


def test_a_raise_told_when_its_hold_ends_is_saved_before_it_goes_out(bundle, tmp_path):
    """A review: an alert that rose while its asset was shelved, told when the shelving ended, went
    out before the file held it (a shelving shorter than the 30 s between saves): a ``kill -9`` then
    raised the fault again under a new id."""
    from sensorguard.service.command_messages import Command

    daemon, client = daemon_with(bundle, tmp_path)
    daemon.controls.apply(Command("shelve", "pump-1", until=time.time() + 3600), now=time.time())
    for i in range(3):
        daemon.alerts.apply("pump-1", T0 + i, 5.0, [])  # rose while shelved: not announced
    assert raised(client) == [] and not (tmp_path / STATE_FILE).exists()
    on_disk = []
    publish = client.publish

    def watched(topic, payload, qos=0, retain=False, properties=None):
        if topic == "sensorguard/alerts/pump-1":
            on_disk.append(load_states(tmp_path)[0].get("pump-1") if (tmp_path / STATE_FILE).exists() else None)
        return publish(topic, payload, qos, retain)

    client.publish = watched
    daemon.controls.apply(Command("shelve", "pump-1", until=time.time()), now=time.time())  # unshelved
    daemon.alerts.request_control_change("pump-1", None)
    daemon.alerts.apply_control_changes()
    assert len(raised(client)) == 1
    assert on_disk and on_disk[0] is not None and on_disk[0].alert_id == daemon.snapshot()["pump-1"].alert_id


def test_raises_owed_at_the_end_of_many_holds_cost_one_save(bundle, tmp_path, monkeypatch):
    """A review: a bulk shelving's end told each raise that rose meanwhile after a full save of its
    own (thousands of assets, hundreds of raises: seconds of the scoring thread). One save holds them
    all."""
    from sensorguard.service.command_messages import Command

    daemon, client = daemon_with(bundle, tmp_path)
    assets = [f"pump-{k}" for k in range(5)]
    for asset in assets:
        daemon.controls.apply(Command("shelve", asset, until=time.time() + 3600), now=time.time())
        for i in range(3):
            daemon.alerts.apply(asset, T0 + i, 5.0, [])  # rose while shelved: owed
    saves = []
    save = daemon.alerts.save
    monkeypatch.setattr(daemon.alerts, "save", lambda: saves.append(1) or save())
    for asset in assets:
        daemon.controls.apply(Command("shelve", asset, until=time.time()), now=time.time())
        daemon.alerts.request_control_change(asset, None)
    daemon.alerts.apply_control_changes()
    assert len(raised(client)) == 5 and len(saves) == 1


def test_a_raise_saved_as_unannounced_is_told_with_its_clear_when_the_fault_ended_across_the_restart(
        bundle, tmp_path):
    """A walk: a raise went out, the file marked it unannounced (no confirmation yet), ``kill -9``; the
    fault ended before the restarted daemon's first window, whose clear was suppressed ("its raise
    was not announced"): the id subscribers had seen was never cleared. The restored raise is told
    at its first window, whatever that window says, so its clear follows under the same id."""
    first, client = daemon_with(bundle, tmp_path)
    unconfirmed(client)
    for i, score in enumerate([5.0, 5.0, 5.0, 0.1]):  # raised, then the fault ends: one window under half
        first.alerts.apply("pump-1", T0 + i, score, [])
    alert_id = first.snapshot()["pump-1"].alert_id
    assert len(raised(client)) == 1 and first.alerts.save() and load_states(tmp_path)[2] == {"pump-1"}
    second, client2 = daemon_with(bundle, tmp_path)  # as after a kill -9 now
    second.alerts.apply("pump-1", T0 + 10, 0.1, [])  # the second in a row: cleared at this first window
    told = [(e["state"], e["alert_id"]) for e in (json.loads(p) for t, p, _ in client2.published
                                                  if t == "sensorguard/alerts/pump-1")]
    assert told == [("raised", alert_id), ("cleared", alert_id)]


def test_failed_writes_are_counted_by_file_and_their_recovery_logged_once(bundle, tmp_path, caplog):
    """A full disk or a read-only state dir was only logged, a line per try: now counted in
    ``state_write_failures_total{file}``, and one line says when writing works again."""
    daemon, client = daemon_with(bundle, tmp_path)
    assert {value(daemon, FAILURES, file=name) for name in STATE_FILES} == {0.0}  # from the start
    for name in STATE_FILES:
        (tmp_path / name).mkdir()  # the file cannot be replaced, nor appended to
    daemon.alerts.apply("pump-1", T0, 0.5, [])
    assert daemon.alerts.save() is False
    assert daemon.alerts.save() is False
    daemon.commands.handle(client, SimpleNamespace(topic="sensorguard/commands/shelve", payload=json.dumps(
        {"asset": "pump-1", "for_s": 600, "request_id": "r1"}).encode(), qos=1, mid=1, retain=False))
    counts = {name: value(daemon, FAILURES, file=name) for name in STATE_FILES}
    assert counts == {ASSETS: 2.0, CONTROLS: 3.0, AUDIT: 1.0}
    for name in STATE_FILES:
        (tmp_path / name).rmdir()
    with caplog.at_level(logging.INFO):
        assert daemon.alerts.save() is True
        assert daemon.alerts.save() is True
        daemon.commands.handle(client, SimpleNamespace(topic="sensorguard/commands/shelve", payload=json.dumps(
            {"asset": "pump-2", "for_s": 600, "request_id": "r2"}).encode(), qos=1, mid=2, retain=False))
        daemon.alerts.save()
    again = [r.getMessage() for r in caplog.records if "works again" in r.getMessage()]
    assert sorted(again) == sorted([f"writing {ASSETS} in {tmp_path} works again (after 2 failed writes)",
                                    f"writing {CONTROLS} in {tmp_path} works again (after 3 failed writes)",
                                    f"writing {AUDIT} in {tmp_path} works again (after 1 failed write)"])
    assert load_states(tmp_path)[0].keys() == {"pump-1"}


def test_a_command_that_could_not_be_saved_is_answered_as_not_saved(bundle, tmp_path):
    """A walk's ``maintenance start disk-4 --until 1h`` against a read-only state dir printed
    "accepted by ..." and exited 0, while the daemon logged the failed save: the hold was lost at
    the next restart. The answer keeps its fields and adds ``saved``."""
    daemon, client = daemon_with(bundle, tmp_path)

    def send(request_id: str) -> dict:
        daemon.commands.handle(client, SimpleNamespace(topic="sensorguard/commands/maintenance", payload=json.dumps(
            {"asset": "disk-4", "action": "start", "until": time.time() + 3600, "request_id": request_id}).encode(),
            qos=1, mid=1, retain=False))
        return [json.loads(p) for t, p, _ in client.published if t == f"sensorguard/responses/{request_id}"][-1]

    (tmp_path / CONTROLS).mkdir()
    answer = send("r1")
    assert answer["accepted"] is True and answer["saved"] is False
    assert {"request_id", "accepted", "message", "instance"} <= set(answer)
    assert "applied but NOT SAVED" in answer["message"] and "restart loses it" in answer["message"]
    assert daemon.controls.suppressed("disk-4", time.time()) == "maintenance"  # in force all the same
    (tmp_path / CONTROLS).rmdir()
    answer = send("r2")
    assert answer["accepted"] is True and answer["saved"] is True and "SAVED" not in answer["message"]


def test_an_answers_saved_is_the_one_its_text_was_written_with(bundle, tmp_path):
    """Found by review: the reply read ``saved`` afresh when it was sent, so a redelivery replayed
    the cached "NOT SAVED" text beside ``saved: true`` once the disk was back, and "carried out
    already" (which saves nothing) said ``saved: false`` while controls.json failed."""
    daemon, client = daemon_with(bundle, tmp_path)
    start = {"asset": "disk-4", "action": "start", "until": time.time() + 3600, "request_id": "r1",
             "expires": time.time() + 60}

    def send(dup: bool) -> dict:
        daemon.commands.handle(client, SimpleNamespace(topic="sensorguard/commands/maintenance",
                                                       payload=json.dumps(start).encode(), qos=1, mid=1, retain=False,
                                                       dup=dup))
        return [json.loads(p) for t, p, _ in client.published if t == "sensorguard/responses/r1"][-1]

    (tmp_path / CONTROLS).mkdir()
    first = send(dup=False)
    assert first["accepted"] and first["saved"] is False and "NOT SAVED" in first["message"]
    (tmp_path / CONTROLS).rmdir()
    assert daemon.controls.save()  # the disk is back: the next save wrote it
    assert send(dup=True) == first  # a redelivery: its first answer, all of it
    unwritable(tmp_path / CONTROLS)
    assert not daemon.controls.save()  # failing again, for the next commands
    again = send(dup=False)  # the same send from another session: not carried out again
    assert again["accepted"] and "carried out already" in again["message"] and "saved" not in again


def test_a_scoring_worker_hung_at_stop_is_an_error_with_a_state_dir(bundle, tmp_path, caplog, monkeypatch):
    """Its state is not saved at stop, and serve exits ``EXIT_UNSAVED``: the docs say the daemon logs
    an error then, and this path logged a warning (found by review)."""
    from sensorguard.service import daemon as daemon_module

    monkeypatch.setattr(daemon_module, "STOP_BUDGET_S", 0.1)
    release = threading.Event()
    hung = threading.Thread(target=release.wait, daemon=True)
    hung.start()
    daemon, _ = daemon_with(bundle, tmp_path)
    daemon._threads = [hung]  # the scoring worker, stuck
    try:
        with caplog.at_level(logging.INFO):
            daemon.stop()
    finally:
        release.set()
    assert daemon.unsaved_at_stop
    assert [r.levelno for r in caplog.records if "did not finish" in r.getMessage()] == [logging.ERROR]


def test_the_cli_says_when_a_change_not_saved_is_saved_and_when_to_send_it_again(monkeypatch, capsys):
    """Found by review: its advice always ended "then send the command again": wrong after a NOT SAVED
    ``maintenance end`` or unshelve (sent again, it is rejected: nothing is held any more), and not
    needed when the disk recovers before a restart (the next save, each 30 s, writes it)."""
    from sensorguard.cli import main
    from sensorguard.service import command_client

    monkeypatch.setattr(command_client, "send_command", lambda *args, **kwargs: {
        "accepted": True, "saved": False, "instance": "d1", "message": "disk-4 is out of maintenance; applied but "
        "NOT SAVED"})
    assert main(["maintenance", "end", "disk-4", "--broker", "mqtt://127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert 'it is saved once the daemon logs "writing controls.json ... works again"' in err, err
    assert "if the daemon restarts before that, the change is lost and must be sent again" in err, err


def test_a_change_the_cluster_could_not_write_is_answered_as_not_saved_in_the_state_bucket(bundle, tmp_path,
                                                                                           monkeypatch, capsys):
    """Cluster mode writes a command's change to the state bucket before answering: when that fails
    (NATS electing a leader) the answer is "NOT SAVED" naming the bucket, not a state_dir it has not,
    and the CLI says what to check."""
    from dataclasses import replace

    from sensorguard.cli import main
    from sensorguard.service import command_client
    from sensorguard.service.command_handling import CommandHandler

    daemon, client = daemon_with(bundle, None)
    daemon.controls.persist = lambda asset, changed: False
    handler = CommandHandler(replace(daemon.settings, cluster=("nats://127.0.0.1:4222",)), daemon.controls,
                             daemon.publisher, daemon.metrics, owns=lambda asset: True)
    handler.handle(client, SimpleNamespace(topic="sensorguard/commands/shelve", payload=json.dumps(
        {"asset": "p1", "for_s": 600, "request_id": "r1"}).encode(), qos=1, mid=1, retain=False))
    (answer,) = [json.loads(p) for t, p, _ in client.published if t == "sensorguard/responses/r1"]
    assert answer["accepted"] and answer["saved"] is False and "the cluster's state bucket" in answer["message"]
    assert answer["store"] == "state_bucket"
    assert daemon.controls.suppressed("p1", time.time()) == "shelved"  # in force all the same
    monkeypatch.setattr(command_client, "send_command", lambda *args, **kwargs: answer)
    assert main(["shelve", "p1", "--for", "10m", "--broker", "mqtt://127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert "could not write it to the cluster's state bucket" in err and "state_dir" not in err, err


def test_the_final_save_failing_at_stop_is_an_error_not_a_clean_stop(bundle, tmp_path, caplog):
    daemon, _ = daemon_with(bundle, tmp_path)
    daemon.alerts.apply("pump-1", T0, 0.5, [])
    (tmp_path / STATE_FILE).mkdir()
    with caplog.at_level(logging.INFO):
        daemon.stop()
    assert daemon.unsaved_at_stop
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(m.startswith(f"the final save to {tmp_path} failed") for m in errors), errors
    fine, _ = daemon_with(bundle, tmp_path / "other")
    fine.stop()
    assert not fine.unsaved_at_stop


def unwritable(path: Path) -> None:
    """Make ``path``, a file a running daemon writes, a directory: from now on it cannot be written.
    Its periodic save may write the file again between an unlink and the mkdir (FileExistsError):
    tried again until the mkdir wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        path.unlink(missing_ok=True)
        try:
            path.mkdir()
            return
        except FileExistsError:  # the daemon's save came in between
            continue
    raise AssertionError(f"{path} kept coming back")


def cli(mosquitto, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sensorguard", *args, "--broker", mosquitto.url, "--timeout", "10"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, env=clean_env())


@pytest.mark.integration
def test_the_cli_says_a_command_was_not_saved_and_exits_1(mosquitto, trained_dir, tmp_path):
    state = tmp_path / "state"
    flags = {"model": str(trained_dir), "broker": mosquitto.url, "metrics_port": 0,
             "client_id": client_id("sg-unsaved"), "state_dir": str(state)}
    daemon, url = start_daemon(flags)
    try:
        unwritable(state / CONTROLS)
        out = cli(mosquitto, "maintenance", "start", "disk-4", "--until", "1h")
        assert out.returncode == 1, out
        assert out.stdout.startswith("accepted by") and "NOT SAVED" in out.stdout, out
        assert "could not save it" in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert metric(url, FAILURES, file=CONTROLS) >= 1
        (state / CONTROLS).rmdir()
        out = cli(mosquitto, "maintenance", "end", "disk-4")
        assert out.returncode == 0 and "NOT SAVED" not in out.stdout, out
    finally:
        daemon.stop()


@pytest.mark.integration
def test_serve_exits_with_its_own_status_when_the_final_save_fails(mosquitto, trained_dir, tmp_path):
    """It logged "stopped" and exited 0: systemd showed a clean stop of a daemon whose last state was
    lost. The unit does not restart on this status (``RestartPreventExitStatus``)."""
    state, port = tmp_path / "state", free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sensorguard", "serve", "--model", str(trained_dir), "--broker", mosquitto.url,
             "--metrics-port", str(port), "--client-id", client_id("sg-final"), "--state-dir", str(state),
             "--workers", "1"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=clean_env())
    try:
        wait_for(lambda: http_status(f"http://127.0.0.1:{port}/readyz") == 200, 60, "serve /readyz", proc=proc,
                 log=log)
        unwritable(state / STATE_FILE)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == EXIT_UNSAVED, log.read_text()[-3000:]
        assert "the final save to" in log.read_text() and "stopped without its final save" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_an_audit_line_the_disk_cut_short_is_taken_back_so_the_next_one_stays_whole(tiny_disk):
    """A full disk in the middle of an ``audit.jsonl`` line (a page's end free, no page more) left its
    first part there, and the next command's line, written once space was back, was glued to it: a
    line no reader parses, a command saved and lost (a walk on a full tmpfs). Now the cut line is taken
    back: the file holds whole lines only."""
    from sensorguard.service.audit_log import audit, audit_entry
    from sensorguard.service.command_messages import Command

    mount = tiny_disk
    (mount / AUDIT).write_text("{}\n" * 1300, encoding="utf-8")  # 3,900 bytes: 196 left on its page
    try:
        with open(mount / "filler", "wb") as fh:
            fh.write(b"\0" * (1 << 20))
    except OSError:
        pass  # full now
    entry = audit_entry(Command("shelve", "pump-7", until=120.0, reason="valve swap " * 5), 60.0, "site-a")
    audit(str(mount), entry)  # (longer than the 196 bytes: cut short by the disk)
    (mount / "filler").unlink()
    audit(str(mount), audit_entry(Command("shelve", "pump-8", until=120.0), 60.0, "site-a"))
    lines = (mount / AUDIT).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line).get("asset") for line in lines[1300:]] == ["pump-8"] and len(lines) == 1301


def test_a_spell_of_failed_saves_is_said_once_then_every_repeat_s(bundle, tmp_path, caplog, monkeypatch):
    """``state_dir`` full or read-only: each failed save is counted, but logged as a warning once
    for the spell (then every ``REPEAT_S``, or at another cause), not once per try (a walk: two
    warnings every 30 s for as long as the disk was full); a new spell after a write worked is said
    again."""
    from sensorguard.service import state_writes

    clock = [1000.0]
    monkeypatch.setattr(state_writes.time, "monotonic", lambda: clock[0])
    daemon, _ = daemon_with(bundle, tmp_path)
    for name in (ASSETS, CONTROLS):
        (tmp_path / name).mkdir()  # the file cannot be replaced
    daemon.alerts.apply("pump-1", T0, 0.5, [])

    def warned() -> int:
        return sum(r.levelno == logging.WARNING and "failed" in r.getMessage() for r in caplog.records)

    with caplog.at_level(logging.DEBUG):
        for _ in range(10):  # five minutes of saves every 30 s
            assert daemon.alerts.save() is False
            clock[0] += 30.0
        assert warned() == 2  # assets.json and controls.json, once each
        assert value(daemon, FAILURES, file=ASSETS) == value(daemon, FAILURES, file=CONTROLS) == 10.0
        clock[0] += state_writes.REPEAT_S
        daemon.alerts.save()
        assert warned() == 4  # a reminder while it still fails
        for name in (ASSETS, CONTROLS):
            (tmp_path / name).rmdir()
        assert daemon.alerts.save() is True
        for name in (ASSETS, CONTROLS):
            (tmp_path / name).unlink()
            (tmp_path / name).mkdir()
        daemon.alerts.save()
        assert warned() == 6  # a new spell
