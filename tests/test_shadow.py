"""The shadow model: scored beside CURRENT on the same windows, never announced, and promoted by
``models promote --gate live`` only when it did no worse live and passed the retrain gate."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest

from sensorguard.cli import main
from sensorguard.service.registry import current_version, publish, shadow_version
from sensorguard.service.shadow import live_gate, write_report
from tests.conftest import epoch, plant_frame
from tests.mosquitto import Collector, Publisher, client_id, scrape, start_daemon, wait_for
from tests.test_daemon_integration import CHANNELS, expected_windows
from tests.test_false_alarms import cleaning_cycles, square_fault
from tests.test_hot_swap import model_infos, value

NAME = "press"
GATE = {"passed": True, "compared_with": "v0001", "reason": "at least as good on held-out data"}


def models(registry, *args: str) -> int:
    return main(["models", *args, "--registry", str(registry), "--name", NAME])


def shadow_infos(url: str) -> dict[str, float]:
    return {dict(k[1])["version"]: v for k, v in scrape(url).items() if k[0] == "sensorguard_shadow_info"}


def live(registry) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((registry / NAME / "live").glob("*.json"))]


@pytest.mark.integration
def test_a_shadow_is_scored_beside_current_never_announced_and_promoted_only_when_better_live(
    mosquitto, trained, tmp_path, capsys
):
    bundle = trained[0]
    registry = tmp_path / "registry"
    publish(bundle, registry, NAME)  # v0001, CURRENT
    # both passed the retrain gate against v0001; live they differ: one also alerts on noise
    # bursts (its line 0.4 times as high), one only on the fault (the cleaning cycles peak far below its line;
    # its level term is T^2 alone: Q sees the cycles' channel leave the others, as CURRENT does)
    publish(replace(bundle, threshold_=bundle.threshold_ * 0.4, metrics=GATE), registry, NAME, make_current=False)
    publish(replace(bundle, threshold_=bundle.threshold_ * 100, metrics=GATE, level=replace(bundle.level, q_limit=0.0)),
            registry, NAME, make_current=False)
    assert models(registry, "shadow", "v0002") == 0 and shadow_version(registry, NAME) == "v0002"

    flags = {"registry": str(registry), "name": NAME, "broker": mosquitto.url, "metrics_port": 0,
             "client_id": client_id("sg-shadow"), "reload_poll_s": 0.1, "shadow_report_s": 0.2}
    daemon, url = start_daemon(flags, ready_timeout=15)
    events = Collector(mosquitto, "sensorguard/alerts/#")
    pub = Publisher(mosquitto)
    rows, asset = 2000, "site/press-1"
    frame = square_fault(cleaning_cycles(plant_frame(rows=rows, channels=3, seed=7), starts=(1000, 1500)))
    n = expected_windows(rows, bundle.window, bundle.hop)
    try:
        assert shadow_infos(url) == {"v0002": 1.0}
        pub.samples(asset, epoch(frame), frame[CHANNELS].to_numpy(), CHANNELS, batch=20)
        wait_for(lambda: value(url, "sensorguard_windows_scored_total") == n, 30, f"{n} windows scored")
        wait_for(lambda: [r["windows"] for r in live(registry)] == [n], 10, "the live counts in the registry")
        (report,) = live(registry)
        assert (report["shadow"], report["current"]) == ("v0002", "v0001")
        current_alerts = value(url, "sensorguard_alerts_total", asset=asset)
        assert report["current_alerts"] == current_alerts == 3  # the fault and two cleaning cycles
        assert report["shadow_alerts"] == value(url, "sensorguard_shadow_alerts_total", asset=asset) > 3
        assert value(url, "sensorguard_shadow_score_count") == n
        # the raises travel through the broker: wait for the current model's three, then a moment
        # more for any the shadow might wrongly announce (only the current model's are published)
        wait_for(lambda: sum(e["state"] == "raised" for e in events.on(f"sensorguard/alerts/{asset}")) >= 3, 20,
                 "the current model's raises")
        time.sleep(0.5)
        raised = [e for e in events.on(f"sensorguard/alerts/{asset}") if e["state"] == "raised"]
        assert len(raised) == 3

        assert models(registry, "promote", "--gate", "live", "--span", "0s") == 1
        assert "not promoted: more alerts live than CURRENT" in capsys.readouterr().out
        assert models(registry, "promote", "--gate", "live") == 1  # 24 h asked by default
        assert "must run at least 24 h" in capsys.readouterr().out
        assert current_version(registry, NAME) == "v0001"

        assert models(registry, "shadow", "v0003") == 0
        wait_for(lambda: shadow_infos(url) == {"v0003": 1.0}, 10, "the daemon shadowing v0003")
        later = frame.assign(timestamp=frame.timestamp + (frame.timestamp.iloc[-1] - frame.timestamp.iloc[0]) +
                             (frame.timestamp.iloc[1] - frame.timestamp.iloc[0]))
        pub.samples(asset, epoch(later), later[CHANNELS].to_numpy(), CHANNELS, batch=20)
        total = expected_windows(2 * rows, bundle.window, bundle.hop)  # the same buffer goes on
        wait_for(lambda: value(url, "sensorguard_windows_scored_total") == total, 30, "the second day scored")
        wait_for(lambda: [(r["shadow"], r["windows"]) for r in live(registry)] == [("v0003", total - n)], 10,
                 "v0003 counted on every window since it started")
        (report,) = live(registry)
        assert report["shadow_alerts"] < report["current_alerts"]

        assert models(registry, "promote", "--gate", "live", "--span", "0s") == 0
        assert "promoted: CURRENT v0001 -> v0003" in capsys.readouterr().out
        assert current_version(registry, NAME) == "v0003" and shadow_version(registry, NAME) is None
        wait_for(lambda: model_infos(url) == {"v0003": 1.0} and shadow_infos(url) == {}, 10,
                 "the daemon serving v0003 with no shadow")
    finally:
        pub.close()
        events.close()
        daemon.stop()


def test_the_live_gate_needs_the_retrain_gate_against_this_current(trained, tmp_path):
    bundle = trained[0]
    registry = tmp_path / "registry"
    publish(bundle, registry, NAME)
    publish(replace(bundle, metrics={}), registry, NAME, make_current=False)  # made by train: no gate result
    publish(replace(bundle, metrics={**GATE, "compared_with": "v0009"}), registry, NAME, make_current=False)
    now = time.time()
    for shadow in ("v0002", "v0003"):
        write_report(registry, NAME, {"instance": f"sg/{shadow}", "shadow": shadow, "current": "v0001",
                                      "since": now - 7200, "updated": now, "windows": 100, "shadow_alerts": 0,
                                      "current_alerts": 5})
    assert models(registry, "shadow", "v0002") == 0
    promoted, said = live_gate(registry, NAME, 3600)
    assert not promoted and "retrain gate did not pass it" in said
    assert models(registry, "shadow", "v0003") == 0
    promoted, said = live_gate(registry, NAME, 3600)
    assert not promoted and "compared it with v0009, CURRENT is v0001" in said
    assert current_version(registry, NAME) == "v0001"
    assert models(registry, "shadow", "v0001") == 1  # CURRENT cannot be its own shadow
    assert models(registry, "shadow") == 1 and models(registry, "shadow", "--clear") == 0
    assert shadow_version(registry, NAME) is None


def test_the_reports_of_earlier_runs_go_when_shadow_or_current_changes(trained, tmp_path):
    """A walk: v0002 shadowed beside v0001 under --workers 2 (reports plant-w0, plant-w1), promoted,
    rolled back, the daemon restarted with one worker, then v0002 shadowed again: the gate summed
    the earlier run's two reports, still fresh, with this one ("3 instances", their alerts). Every
    daemon restarts its count when SHADOW or CURRENT changes, so the reports go with the change;
    the same version shadowed again, or CURRENT promoted to itself, changes nothing."""
    bundle = trained[0]
    registry = tmp_path / "registry"
    publish(bundle, registry, NAME)
    publish(replace(bundle, metrics={**GATE, "compared_with": "v0001"}), registry, NAME, make_current=False)
    now = time.time()

    def report(instance: str, alerts: int) -> None:
        write_report(registry, NAME, {"instance": instance, "shadow": "v0002", "current": "v0001",
                                      "since": now - 600, "updated": now, "windows": 100, "shadow_alerts": alerts,
                                      "current_alerts": 1, "every": 60})

    assert models(registry, "shadow", "v0002") == 0
    report("plant-w0", 9)
    report("plant-w1", 9)
    assert models(registry, "promote", "v0002") == 0
    assert not list((registry / NAME / "live").glob("*.json"))  # CURRENT changed: gone with it
    report("plant-w0", 9)  # (a report written after the promote, as a daemon still running writes one)
    assert models(registry, "rollback") == 0
    assert not list((registry / NAME / "live").glob("*.json"))  # (an audit: the shadow below cleared them too)
    assert models(registry, "shadow", "v0002") == 0
    report("plant", 0)
    assert models(registry, "shadow", "v0002") == 0 and models(registry, "promote", "v0001") == 0  # no change
    promoted, said = live_gate(registry, NAME, 30)
    assert "100 windows on 1 instance(s)" in said and promoted, said
    assert current_version(registry, NAME) == "v0002" and not list((registry / NAME / "live").glob("*.json"))


def test_a_report_that_cannot_be_deleted_leaves_the_change_standing(trained, tmp_path, monkeypatch, caplog):
    """The daemon's account wrote the reports; the operator's may not delete them: the rollback
    stands, and a line says what the gate will sum."""
    from pathlib import Path

    bundle = trained[0]
    registry = tmp_path / "registry"
    publish(bundle, registry, NAME)
    publish(bundle, registry, NAME)
    write_report(registry, NAME, {"instance": "plant", "shadow": "v0003", "current": "v0002", "since": 0.0,
                                  "updated": 1.0, "windows": 1, "shadow_alerts": 0, "current_alerts": 0})

    def refused(self, missing_ok=False):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "unlink", refused)
    assert models(registry, "rollback") == 0 and current_version(registry, NAME) == "v0001"
    assert "could not be deleted ([Errno 13] Permission denied" in caplog.text


def test_retrain_shadow_runs_a_passing_candidate_beside_current(trained, tmp_path, capsys):
    from tests.test_retrain import shifted_plant

    registry = tmp_path / "registry"
    publish(trained[0], registry, NAME)
    shifted_plant(4000, seed=6, gain=1.3, offset=0.5).to_csv(tmp_path / "new.csv", index=False)
    assert main(["retrain", "--registry", str(registry), "--name", NAME, "--data", str(tmp_path / "new.csv"),
                 "--max-epochs", "10", "--quiet", "--shadow"]) == 0
    assert "shadowing CURRENT v0001" in capsys.readouterr().out
    assert current_version(registry, NAME) == "v0001" and shadow_version(registry, NAME) == "v0002"
    meta = json.loads((registry / NAME / "v0002" / "bundle.json").read_text())["metrics"]
    assert meta["passed"] is True and meta["compared_with"] == "v0001" and meta["promoted"] is False


def test_an_alert_up_when_the_shadow_starts_counts_for_neither_model(tiny_bundle):
    from sensorguard.service.alerts import AlertRules, AlertState
    from sensorguard.service.scorer import Scorer
    from sensorguard.service.shadow import Shadow

    shadow = Shadow(tiny_bundle, Scorer(tiny_bundle), current="v0001")
    rules = AlertRules()
    up = AlertState("alerting", alert_id="p@1")
    for i in range(10):  # CURRENT's alert p@1 was up before the shadow started; the shadow raises its own
        shadow.step("p", float(i), 5.0, up, rules)
    assert (shadow.alerts, shadow.current_alerts) == (0, 0)
    for i in range(10, 20):  # both clear
        shadow.step("p", float(i), 0.1, AlertState("normal", alert_id="p@1"), rules)
    for i in range(20, 30):  # the next episode is counted for both
        shadow.step("p", float(i), 5.0, AlertState("alerting", alert_id="p@20"), rules)
    assert (shadow.alerts, shadow.current_alerts) == (1, 1)


def test_the_shadow_score_histogram_holds_the_scores_as_judged(tiny_bundle):
    """A walk: ``sensorguard_shadow_score`` ("1.0 is its alert line") took the shadow's raw score,
    while its alerts were judged on the score against the widened line (its drift rule; its level
    term). Here the served asset's drift widens the shadow's line 1.5 times: 0.9 judged as 0.6."""
    import math
    from dataclasses import replace

    import numpy as np
    from prometheus_client import CollectorRegistry

    from sensorguard.service.alerts import AlertRules, AlertState
    from sensorguard.service.asset_buffer import DueWindow
    from sensorguard.service.batch_scoring import score_batch
    from sensorguard.service.drift import DriftState
    from sensorguard.service.metrics import Metrics
    from sensorguard.service.scorer import Scorer
    from sensorguard.service.shadow import Shadow
    from tests.test_daemon import make

    rule = {"baseline": -1.0, "halflife": 64.0, "warmup": 8, "cap": 1.5}
    drifting = replace(tiny_bundle, calibration={**tiny_bundle.calibration, "drift": rule})
    shadow = Shadow(drifting, Scorer(drifting), current="v0001")
    shadow.step("p", 0.0, 0.9, AlertState(), AlertRules(), DriftState(offset=math.log(1.5), updates=100))
    assert math.isclose(shadow.judged, 0.6)
    daemon, _ = make(tiny_bundle)
    daemon.metrics = Metrics(CollectorRegistry())
    daemon.models.shadow = shadow
    shadow.scorer.score_windows = lambda windows, excluded: replace(  # the raw score 0.9, as above
        daemon.models.scorer.score_windows(windows, excluded), score=np.full(len(windows), 0.9))
    window = np.zeros((len(tiny_bundle.channels), tiny_bundle.window))
    score_batch([DueWindow("p", 1.0, window, 0.0)], daemon.models, daemon.alerts, daemon.metrics, None,
                lambda: daemon.rules, [])
    assert math.isclose(daemon.metrics.shadow_score._sum.get(), 0.6)  # as judged, not 0.9


def test_the_shadow_steps_on_alert_hop_windows_only_while_its_own_alert_is_up(tiny_bundle):
    """The served model's alert is up, so the daemon judges a window off the hop grid; the shadow,
    not alerting, skips it (it judges every hop, as it would serve), and steps on it once its own
    alert is up. Its window count stays the hop grid's, as windows_scored_total."""
    from dataclasses import replace

    from sensorguard.service.alerts import AlertRules, AlertState
    from sensorguard.service.scorer import Scorer
    from sensorguard.service.shadow import Shadow

    candidate = replace(tiny_bundle, alert_hop=1)  # (hop 2)
    shadow = Shadow(candidate, Scorer(candidate), current="v0001")
    rules, up = AlertRules(raise_after=1), AlertState("alerting", alert_id="p@1")
    assert shadow.step("p", 0.0, 5.0, up, rules, coarse=False) is False
    assert (shadow.windows, "p" in shadow._states) == (0, False)
    shadow.step("p", 1.0, 5.0, up, rules)  # the shadow raises its own
    assert shadow._states["p"].status == "alerting" and shadow.windows == 1
    for i in (2.0, 3.0):  # two alert-hop windows under half its line clear it
        shadow.step("p", i, 0.1, up, rules, coarse=False)
    assert shadow._states["p"].status == "normal" and shadow.windows == 1


def test_a_shadow_whose_bundle_judges_every_hop_skips_alert_hop_windows_while_its_alert_is_up(tiny_bundle):
    """A shadow of a bundle with its alert hop off (before format 4, or --alert-hop 0) serves
    judging every hop: it stepped on the daemon's alert-hop windows and cleared sooner than it
    would serve, so its counts were not its own."""
    from sensorguard.service.alerts import AlertRules, AlertState
    from sensorguard.service.scorer import Scorer
    from sensorguard.service.shadow import Shadow

    assert tiny_bundle.alert_hop == 0
    shadow = Shadow(tiny_bundle, Scorer(tiny_bundle), current="v0001")
    rules, up = AlertRules(raise_after=1, alert_steps=2), AlertState("alerting", alert_id="p@1")  # the daemon's
    shadow.step("p", 1.0, 5.0, up, rules)  # the shadow raises its own
    assert shadow._states["p"].status == "alerting" and not shadow.alerting("p")  # (no alert-hop window kept for it)
    for i in (2.0, 3.0):  # the daemon's alert-hop windows under half the line: not the shadow's
        assert shadow.step("p", i, 0.1, up, rules, coarse=False) is False
    assert shadow._states["p"].status == "alerting"
    for i in (5.0, 7.0):  # two windows of its own hop under half its line clear it
        shadow.step("p", i, 0.1, up, rules)
    assert shadow._states["p"].status == "normal" and shadow.windows == 3
    shadow.step("q", 1.0, 5.0, up, rules)  # its count to clear_after is of its own hops too (an audit:
    for k in range(1, 5):  # the clear-at-once above ignores the count, which could take the daemon's cadence)
        shadow.step("q", 1.0 + 2 * k, 0.7, up, rules)
    assert shadow._states["q"].status == "alerting"
    shadow.step("q", 11.0, 0.7, up, rules)
    assert shadow._states["q"].status == "normal"  # the fifth (clear_after) hop under the clear level


def test_a_shadow_starts_from_the_daemons_drift_baseline_of_the_asset(tiny_bundle):
    """A promotion keeps the daemon's baseline, so the shadow is judged as it would serve: an asset
    that drifted to 1.3x the bare line is quiet under both models (it was counted against the shadow)."""
    import math

    from sensorguard.service.alerts import AlertRules, AlertState
    from sensorguard.service.drift import DriftRule, DriftState, widening
    from sensorguard.service.scorer import Scorer
    from sensorguard.service.shadow import Shadow

    rule = DriftRule(baseline=math.log(0.3), halflife=64, warmup=8, cap=1.5)
    bundle = replace(tiny_bundle, calibration={**tiny_bundle.calibration, "drift": rule.to_dict()})
    served = DriftState(offset=math.log(1.4), updates=500)  # what the daemon learned: the line is 1.4x
    assert widening(served, rule) == pytest.approx(1.4)
    for given, alerts in ((served, 0), (None, 1)):
        shadow = Shadow(bundle, Scorer(bundle), current="v0001")
        for i in range(20):
            shadow.step("p", float(i), 1.3, AlertState(), AlertRules(), given)
        assert shadow.alerts == alerts


def test_an_unreadable_shadow_is_one_readable_line_and_never_stops_the_daemon(trained, tmp_path, capsys):
    from sensorguard.service.config import Settings
    from sensorguard.service.daemon import Daemon

    registry = tmp_path / "registry"
    publish(trained[0], registry, NAME)
    publish(trained[0], registry, NAME, make_current=False)
    (registry / NAME / "SHADOW").mkdir()  # not a pointer at all
    daemon = Daemon(Settings(registry=str(registry), name=NAME, metrics_port=0), trained[0])
    assert daemon.models.shadow is None
    assert models(registry, "promote", "--gate", "live") == 1
    assert "SHADOW: cannot be read" in capsys.readouterr().err
    (registry / NAME / "SHADOW").rmdir()
    assert models(registry, "shadow", "v0002") == 0
    (registry / NAME / "v0002" / "bundle.json").write_text("[1, 2]")  # damaged after it was shadowed
    assert models(registry, "promote", "--gate", "live") == 1
    assert "retrain gate did not pass it" in capsys.readouterr().out


def test_a_shadow_that_fails_is_stopped_and_the_served_models_batch_goes_on(tiny_bundle, monkeypatch):
    """A shadow's scoring failure took the live batch with it, every batch (found by review)."""
    from sensorguard.service.scorer import Scorer
    from sensorguard.service.shadow import Shadow
    from tests.test_daemon import T0, make, message
    from tests.test_daemon import value as metric

    daemon, client = make(tiny_bundle, raise_after=1)
    broken = Shadow(tiny_bundle, Scorer(tiny_bundle), current="v0001")
    monkeypatch.setattr(broken.scorer, "score_windows", lambda *a, **k: 1 / 0)
    daemon.models.shadow = broken
    seen = []
    daemon.add_listener(seen.append)
    for i in range(tiny_bundle.window):
        daemon.ingest.handle(client, message("pump-1", T0 + i))
    batch, _ = daemon.ingest.next_batch(0.0)
    daemon.score_batch(batch)
    assert [w.asset for w in seen] == ["pump-1"]  # the served model's window was judged
    assert daemon.models.shadow is None and metric(daemon, "sensorguard_windows_scored_total") == 1
    stepping = Shadow(tiny_bundle, Scorer(tiny_bundle), current="v0001")
    monkeypatch.setattr(stepping, "step", lambda *a, **k: 1 / 0)
    daemon.models.shadow = stepping
    for i in range(tiny_bundle.window, tiny_bundle.window + tiny_bundle.hop):
        daemon.ingest.handle(client, message("pump-1", T0 + i))
    batch, _ = daemon.ingest.next_batch(0.0)
    daemon.score_batch(batch)
    assert len(seen) == 2 and daemon.models.shadow is None


def test_a_shadow_forgets_assets_handed_over_and_keeps_running_through_an_unreadable_shadow_pointer(
        tiny_bundle, tmp_path, monkeypatch):
    """Found by review. (1) Cluster mode: an asset handed to another worker kept its shadow
    machines here; back under an alert id raised elsewhere, the current model's alert counted
    again. (2) One failed read of SHADOW (a network file system's hiccup) stopped the shadow and
    restarted its live counts (the 24 h span started over)."""
    from sensorguard.service import hotswap
    from sensorguard.service.alerts import AlertState
    from sensorguard.service.bundle import BundleError
    from tests.test_daemon import T0, make

    root = tmp_path / "registry"
    publish(tiny_bundle, root, NAME)
    publish(tiny_bundle, root, NAME, make_current=False)
    assert models(root, "shadow", "v0002") == 0
    daemon, _ = make(tiny_bundle, registry=str(root), name=NAME)
    daemon.models.check_shadow()
    shadow = daemon.models.shadow
    assert shadow is not None and shadow.bundle.version == "v0002"
    shadow.step("p", 1.0, 5.0, AlertState("alerting", alert_id="p@1"), daemon.rules)
    assert "p" in shadow._states
    daemon.alerts.apply("p", T0, 0.1, [])
    daemon.alerts.hand_over({"p"})
    assert "p" not in shadow._states and "p" not in shadow._current_ids

    shadow.windows = 7  # counts so far
    monkeypatch.setattr(hotswap, "shadow_version", lambda *a: (_ for _ in ()).throw(
        BundleError("SHADOW: cannot be read (I/O error)", transient=True)))
    daemon.models.check_shadow()
    assert daemon.models.shadow is shadow and shadow.windows == 7  # kept, counts and all
    monkeypatch.setattr(hotswap, "shadow_version", lambda *a: (_ for _ in ()).throw(
        BundleError("SHADOW: does not name a version")))
    daemon.models.check_shadow()
    assert daemon.models.shadow is None  # a pointer that is wrong stops it, as before


def test_the_live_gate_does_not_promote_over_a_current_that_moved(tiny_bundle, tmp_path):
    """Found by review: the gate read CURRENT, then promoted without the pointer lock; a retrain
    promoting another version meanwhile was overwritten by a candidate never compared with it."""
    from sensorguard.service.registry import CurrentMoved, promote

    root = tmp_path / "registry"
    for _ in range(3):
        publish(tiny_bundle, root, NAME, make_current=False)
    promote(root, NAME, "v0001")
    promote(root, NAME, "v0003")  # another writer, after the gate compared with v0001
    with pytest.raises(CurrentMoved, match="moved to v0003"):
        promote(root, NAME, "v0002", expect="v0001")
    assert current_version(root, NAME) == "v0003"


def test_the_live_gate_refuses_a_shadow_that_failed_somewhere_and_leaves_out_reports_that_stopped(
        trained, tmp_path):
    """Found by review: a shadow that failed on one worker after 25 h left that worker's last report
    frozen with its 25 h span, and the gate promoted the model on it; a worker count lowered left
    reports whose short frozen span blocked the gate for good. A stopped or refused shadow is now
    reported as such, and a report that stopped coming is left out and named."""
    bundle = trained[0]
    registry = tmp_path / "registry"
    publish(bundle, registry, NAME)
    publish(replace(bundle, metrics=GATE), registry, NAME, make_current=False)
    assert models(registry, "shadow", "v0002") == 0
    now = time.time()
    good = {"shadow": "v0002", "current": "v0001", "since": now - 30 * 3600, "updated": now, "every": 60.0,
            "windows": 100, "shadow_alerts": 0, "current_alerts": 5}
    write_report(registry, NAME, {**good, "instance": "sg-w0"})
    write_report(registry, NAME, {**good, "instance": "sg-w3", "since": now - 4 * 3600, "updated": now - 2 * 3600})
    from sensorguard.service.config import load_settings
    from sensorguard.service.shadow import report_live

    settings = load_settings({"registry": str(registry), "name": NAME, "instance": "sg-w2"}, {},
                             require_model=False)
    report_live(settings, None, ("v0002", "v0001", "scoring failed (ZeroDivisionError: division by zero)"))
    promoted, said = live_gate(registry, NAME, 24 * 3600)
    assert not promoted and "it failed on sg-w2: scoring failed (ZeroDivisionError" in said, said
    assert "left out, no longer reporting: sg-w3 (2 h old)" in said  # (its 2 h span would block the gate)
    (registry / NAME / "live" / "sg-w2.json").unlink()
    promoted, said = live_gate(registry, NAME, 24 * 3600)
    assert promoted and "on 1 instance(s) over 30 h" in said, said
    assert current_version(registry, NAME) == "v0002"


def test_a_shadow_stopped_or_refused_is_remembered_for_the_report(tiny_bundle, monkeypatch, tmp_path):
    from sensorguard.service.scorer import Scorer
    from sensorguard.service.shadow import Shadow
    from tests.test_daemon import make

    daemon, _ = make(tiny_bundle)
    broken = Shadow(tiny_bundle, Scorer(tiny_bundle), current="v0001")
    daemon.models.shadow = broken
    daemon.models.stop_shadow(broken, "scoring failed (boom)")
    assert daemon.models.shadow_failed == (tiny_bundle.version, "v0001", "scoring failed (boom)")


def test_the_shadow_report_is_written_off_the_scoring_worker(tiny_bundle, monkeypatch):
    """Found by review: housekeeping (the scoring worker) wrote the report itself, so a stalled
    registry share froze scoring. A write that hangs now leaves housekeeping free, and the next
    one is skipped while it hangs."""
    import threading

    import sensorguard.service.daemon_callbacks as daemon_callbacks
    from tests.test_daemon import make

    entered, release, calls = threading.Event(), threading.Event(), []

    def stalled(*args):
        calls.append(args)
        entered.set()
        release.wait(30)

    monkeypatch.setattr(daemon_callbacks, "report_live", stalled)
    daemon, _ = make(tiny_bundle)
    daemon.housekeeping(time.monotonic())  # returns although the write hangs
    assert entered.wait(10) and daemon._reporting.is_alive()
    daemon._next_shadow_report = 0.0
    daemon.housekeeping(time.monotonic())
    assert len(calls) == 1  # one write at a time
    release.set()
    daemon._reporting.join(10)


def test_a_shadow_judges_with_its_own_bundles_one_window_raise(tiny_bundle):
    """Its line was calibrated with its own rule: the daemon's rules follow the served bundle."""
    from sensorguard.service.alerts import AlertRules, AlertState
    from sensorguard.service.scorer import Scorer
    from sensorguard.service.shadow import Shadow

    candidate = tiny_bundle.with_threshold(1.0, {"method": "alerts", "alerts": {"raise_after": 3, "raise_at": 2.0}})
    normal = AlertState()
    assert Shadow(candidate, Scorer(candidate), current="v0001").step("p", 0.0, 2.5, normal, AlertRules())
    assert not Shadow(tiny_bundle, Scorer(tiny_bundle), current="v0001").step("p", 0.0, 2.5, normal,
                                                                              AlertRules(raise_at=2.0))


def test_the_shadow_gets_alert_hop_windows_while_its_alert_is_up_though_the_served_one_is_not(tiny_bundle):
    """The served model is quiet (its line a million times as high), the shadow alerts on everything:
    the daemon keeps the alert hop's windows for the shadow and steps it on them, never the served
    machine, with clear_after in the daemon's cadence (2 windows a hop)."""
    import json as json_
    from types import SimpleNamespace

    from sensorguard.service.alerts import AlertState
    from sensorguard.service.scorer import Scorer
    from sensorguard.service.shadow import Shadow
    from tests.test_daemon import make

    bundle = replace(tiny_bundle, alert_hop=1, threshold_=tiny_bundle.threshold_ * 1e6)  # (hop 2)
    daemon, client = make(bundle, raise_after=1)
    candidate = replace(tiny_bundle, alert_hop=1, threshold_=tiny_bundle.threshold_ * 1e-6)
    shadow = Shadow(candidate, Scorer(candidate), current="v0001")
    stepped = []
    real = shadow.step

    def spy(asset, ts, score, current, rules, *rest, **named):
        stepped.append((ts, rest[-1], rules.alert_steps, current.status))
        return real(asset, ts, score, current, rules, *rest, **named)

    shadow.step = spy
    daemon.models.shadow = shadow
    for mid, t in enumerate(range(40), 1):
        doc = {"ts": 1_767_225_600.0 + t, "values": {"a": 0.0, "b": 0.0, "c": 0.0}}
        daemon.ingest.handle(client, SimpleNamespace(topic="sensors/p/readings", payload=json_.dumps(doc).encode(),
                                                     mid=mid, qos=1))
        while batch := daemon.ingest.next_batch(0.0)[0]:
            daemon.score_batch(batch)
    assert daemon.alerts.state_of("p") == AlertState(last_score=daemon.alerts.state_of("p").last_score)
    off_grid = [s for s in stepped if not s[1]]
    assert off_grid and all(s[2] == 2 and s[3] == "normal" for s in off_grid)
    assert shadow.alerting("p") and shadow.windows == sum(1 for s in stepped if s[1])
