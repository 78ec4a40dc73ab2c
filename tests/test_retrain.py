"""Retraining: candidates are compared on held-out data, promoted only when at least as good."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from sensorguard.cli import main
from sensorguard.service.registry import current_version, list_versions, publish
from tests.conftest import plant_frame


def shifted_plant(rows, seed, gain=1.0, offset=0.0):
    frame = plant_frame(rows=rows, channels=3, seed=seed)
    for c in ("c0", "c1", "c2"):
        frame[c] = frame[c] * gain + offset
    return frame


@pytest.fixture
def registry(tmp_path, trained):
    bundle, _, _ = trained
    publish(bundle, tmp_path / "reg", "pump")
    return tmp_path / "reg"


def test_worse_candidate_is_not_promoted(registry, tmp_path, capsys):
    shifted_plant(4000, seed=5).to_csv(tmp_path / "new.csv", index=False)
    code = main(["retrain", "--registry", str(registry), "--name", "pump", "--data", str(tmp_path / "new.csv"),
                 "--max-epochs", "1", "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "not promoted" in out and "higher error" in out
    assert list_versions(registry, "pump") == ["v0001", "v0002"]
    assert current_version(registry, "pump") == "v0001"
    meta = json.loads((registry / "pump" / "v0002" / "bundle.json").read_text())
    assert meta["metrics"]["promoted"] is False
    # --force promotes anyway and says so
    assert main(["retrain", "--registry", str(registry), "--name", "pump", "--data", str(tmp_path / "new.csv"),
                 "--max-epochs", "1", "--quiet", "--force"]) == 0
    assert "forced" in capsys.readouterr().out and current_version(registry, "pump") == "v0003"
    # promoted by hand, the candidate the gate refused is said to be one (a walk: nothing said it)
    assert main(["models", "promote", "v0002", "--registry", str(registry), "--name", "pump"]) == 0
    out = capsys.readouterr().out
    assert "CURRENT v0003 -> v0002" in out and "note: v0002 did not pass its retrain's gate (" in out
    assert main(["models", "promote", "v0001", "--registry", str(registry), "--name", "pump"]) == 0
    assert "note" not in capsys.readouterr().out
    # and shadowed (a docs walk: nothing said it, and promote --gate live then refused it)
    assert main(["models", "shadow", "v0002", "--registry", str(registry), "--name", "pump"]) == 0
    out = capsys.readouterr().out
    assert "note: v0002 did not pass its retrain's gate (" in out and "--gate live will not promote it" in out


def test_a_retrain_keeps_the_current_models_drift_rule_and_promise(tmp_path, trained, capsys):
    """Found by review: retrain took the defaults, so the weekly timer's retrain turned a model's drift
    rule off (and its promise back to 1 a day) at the next swap."""
    from sensorguard.service.bundle_loading import load_bundle
    from sensorguard.service.drift import DriftRule

    bundle, _, _ = trained
    calibration = {**bundle.calibration, "drift": DriftRule(baseline=-1.0).to_dict(), "method": "alerts",
                   "alerts": {**bundle.calibration.get("alerts", {}), "target_per_day": 4.0}}
    from dataclasses import replace

    ignoring = replace(bundle.with_threshold(bundle.threshold_, calibration), ignored_columns=("flush_on",))
    publish(ignoring, tmp_path / "reg", "pump")
    frame = shifted_plant(4000, seed=5)
    frame["line_id"] = 7.0  # not a channel: the live feed may send it, as the first file's flush_on
    frame.to_csv(tmp_path / "new.csv", index=False)
    args = ["retrain", "--registry", str(tmp_path / "reg"), "--name", "pump", "--data", str(tmp_path / "new.csv"),
            "--max-epochs", "1", "--quiet"]
    assert main(args) == 0
    assert "kept the model's own --false-alerts-per-day 4 --drift" in capsys.readouterr().out
    assert load_bundle(tmp_path / "reg" / "pump" / "v0002").promise == {"drift": True, "false_alerts_per_day": 4.0}
    # the columns the live feed sends beside the channels: the current model's, and this file's
    assert load_bundle(tmp_path / "reg" / "pump" / "v0002").ignored_columns == ("flush_on", "line_id")
    assert main([*args, "--no-drift"]) == 0
    assert load_bundle(tmp_path / "reg" / "pump" / "v0003").promise == {"drift": False, "false_alerts_per_day": 4.0}


def test_a_retrain_keeps_the_current_models_training_settings_and_fill_limit(tmp_path, trained, capsys):
    """Found by review: a retrain without --warm-start trained a --hidden 8 --noise 0.1 model at the
    defaults, and put its fill limit back to 5 (gaps of 6-20 samples then restarted windows live)."""
    from dataclasses import replace

    from sensorguard.service.bundle_loading import load_bundle

    bundle, _, _ = trained
    options = {**bundle.training["options"], "hidden": 8, "noise": 0.1, "patience": 2}
    publish(replace(bundle, fill_limit=20, training={**bundle.training, "options": options}), tmp_path / "reg", "pump")
    shifted_plant(4000, seed=5).to_csv(tmp_path / "new.csv", index=False)
    assert main(["retrain", "--registry", str(tmp_path / "reg"), "--name", "pump", "--data",
                 str(tmp_path / "new.csv"), "--max-epochs", "1", "--quiet", "--force"]) == 0
    out = capsys.readouterr().out
    assert "kept the model's own" in out and "--hidden 8" in out and "--noise 0.1" in out and "--fill-limit 20" in out
    assert "--max-epochs" not in out  # the flag given here is the user's, not the model's (a README walk)
    candidate = load_bundle(tmp_path / "reg" / "pump" / "v0002")
    assert (candidate.config.hidden, candidate.fill_limit) == (8, 20)
    assert candidate.training["options"]["noise"] == 0.1 and candidate.training["options"]["patience"] == 2
    assert candidate.training["options"]["max_epochs"] == 1


def test_a_retrain_says_which_settings_an_older_model_did_not_record(tmp_path, trained, capsys):
    """A model trained before a setting existed (``conv_weight_decay``: session 31) was retrained
    with today's default for it without a word, unlike the settings it kept."""
    from dataclasses import replace

    bundle, _, _ = trained
    options = {k: v for k, v in bundle.training["options"].items() if k != "conv_weight_decay"}
    publish(replace(bundle, training={**bundle.training, "options": options}), tmp_path / "reg", "pump")
    shifted_plant(4000, seed=5).to_csv(tmp_path / "new.csv", index=False)
    assert main(["retrain", "--registry", str(tmp_path / "reg"), "--name", "pump", "--data",
                 str(tmp_path / "new.csv"), "--max-epochs", "1", "--quiet", "--force"]) == 0
    out = capsys.readouterr().out
    assert "did not record (an older sensorguard): conv_weight_decay 0.05" in out
    from sensorguard.training.retrain import KEPT_OPTIONS, unrecorded_options

    assert unrecorded_options(replace(bundle, training={})) == list(KEPT_OPTIONS)  # options not recorded at all


def test_recorded_readings_are_cleaned_with_the_given_fill_limit(tmp_path):
    """The weekly timer's --recorded path ignored the fill limit (always 5)."""
    from sensorguard.training.retrain import load_recorded

    frame = plant_frame(rows=200, channels=3, seed=2)
    frame.insert(0, "ts", frame.pop("timestamp").astype("int64") / 1e9)
    frame.insert(1, "asset", "p")
    frame = frame.drop(index=range(100, 110))  # 10 readings missing
    (tmp_path / "rec").mkdir()
    frame.to_parquet(tmp_path / "rec" / "part.parquet", index=False)
    assert len(np.unique(load_recorded(tmp_path / "rec").segments)) == 2
    assert len(np.unique(load_recorded(tmp_path / "rec", fill_limit=20).segments)) == 1


def test_candidate_for_a_changed_process_is_promoted(registry, tmp_path, capsys):
    shifted_plant(4000, seed=6, gain=1.3, offset=0.5).to_csv(tmp_path / "new.csv", index=False)
    assert main(["retrain", "--registry", str(registry), "--name", "pump", "--data", str(tmp_path / "new.csv"),
                 "--max-epochs", "10", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "v0002: promoted" in out, out
    assert current_version(registry, "pump") == "v0002"
    # what the candidate's line promises (retrain printed only the comparison: a README walk)
    assert "candidate threshold " in out and "false alert per asset per day promised (95% CI" in out, out


def test_retrain_from_recorded_data_skips_damaged_files(registry, tmp_path, capsys):
    recorded = tmp_path / "rec"
    recorded.mkdir()
    for i, asset in enumerate(["site/pump-1", "site/pump-2"]):
        frame = shifted_plant(2500, seed=20 + i)
        frame.insert(0, "ts", (frame.pop("timestamp") - pd.Timestamp(0, tz="UTC")).dt.total_seconds())
        frame.insert(1, "asset", asset)
        frame.iloc[:1200].to_parquet(recorded / f"{i}-a.parquet", index=False)
        frame.iloc[1200:].to_parquet(recorded / f"{i}-b.parquet", index=False)
    (recorded / "broken.parquet").write_bytes(b"PAR1 not really")
    assert main(["retrain", "--registry", str(registry), "--name", "pump", "--recorded", str(recorded),
                 "--max-epochs", "3", "--quiet", "--force"]) == 0
    out = capsys.readouterr().out
    assert "skipping unreadable recording" in out and "broken.parquet" in out
    meta = json.loads((registry / "pump" / "v0002" / "bundle.json").read_text())
    assert meta["training"]["rows"] == pytest.approx(0.9 * 5000, abs=2)


def test_models_list_show_promote_rollback(registry, trained, capsys):
    bundle, _, _ = trained
    publish(bundle.with_threshold(bundle.threshold_ * 2, bundle.calibration), registry, "pump")
    assert main(["models", "list", "--registry", str(registry), "--name", "pump"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("* v0002") and lines[1].startswith("  v0001")
    assert lines[0].endswith("retrain gate") and lines[2].endswith("  -")  # published by hand: no gate ran
    capsys.readouterr()
    # a VERSION or an option the action does not take: one line, nothing done (rollback v0001 went
    # back to the version before CURRENT, whatever it named)
    for argv, said in ((["rollback", "v0001"], "takes no VERSION; to make v0001 current: models promote v0001"),
                       (["prune", "v0001"], "prune takes no VERSION (got v0001)"),
                       (["list", "--keep", "3", "--gate", "live"], "--gate and --keep do not apply to models list"),
                       (["promote", "v0001", "--clear"], "--clear does not apply to models promote")):
        assert main(["models", *argv, "--registry", str(registry), "--name", "pump"]) == 1
        assert said in capsys.readouterr().err
        assert current_version(registry, "pump") == "v0002"
    assert main(["models", "rollback", "--registry", str(registry), "--name", "pump"]) == 0
    assert current_version(registry, "pump") == "v0001"
    assert main(["models", "promote", "v0002", "--registry", str(registry), "--name", "pump"]) == 0
    assert current_version(registry, "pump") == "v0002"
    capsys.readouterr()
    assert main(["models", "show", "--registry", str(registry), "--name", "pump"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == "v0002" and shown["current"] and "errors_sample" not in shown["calibration"]


def test_models_list_and_show_survive_a_version_with_null_fields(registry, trained, capsys):
    """A bundle.json with "training": null (which load_bundle serves) broke models list and show
    for the whole registry with an internal error (found by review)."""
    bundle, _, _ = trained
    publish(bundle, registry, "pump", make_current=False)
    meta_path = registry / "pump" / "v0002" / "bundle.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "training": None, "calibration": None, "metrics": None}))
    assert main(["models", "list", "--registry", str(registry), "--name", "pump"]) == 0
    assert "v0002" in capsys.readouterr().out
    assert main(["models", "show", "v0002", "--registry", str(registry), "--name", "pump"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "v0002"
    publish(bundle, registry, "other", make_current=False)
    assert main(["models", "show", "--registry", str(registry), "--name", "other"]) == 1
    assert "has no current version" in capsys.readouterr().err
    assert main(["models", "promote", "v0001", "--registry", str(registry), "--name", "other"]) == 0
    assert "other: CURRENT (none) -> v0001" in capsys.readouterr().out  # it said "None"
    # again: it said "CURRENT v0001 -> v0001" and rewrote CURRENT, which daemons watch (a walk)
    stamp = (registry / "other" / "CURRENT").stat().st_mtime_ns
    assert main(["models", "promote", "v0001", "--registry", str(registry), "--name", "other"]) == 0
    assert capsys.readouterr().out == "other: v0001 is CURRENT already; nothing changed\n"
    assert (registry / "other" / "CURRENT").stat().st_mtime_ns == stamp
    assert main(["models", "shadow", "v0001", "--clear", "--registry", str(registry), "--name", "other"]) != 0
    assert "a VERSION to shadow, or --clear to stop shadowing, not both" in capsys.readouterr().err  # (it said
    # "needs a VERSION, or --clear" to one who gave both: a walk)


def test_prune_keeps_current_shadow_history_and_the_newest(registry, trained, capsys):
    """Every weekly retrain publishes a version, rejected ones too: the registry only grew (found
    by review). prune keeps what rollback, the shadow and recent candidates need."""
    import os
    import time

    from sensorguard.service.registry import set_shadow

    bundle, _, _ = trained
    for current in (True, True, False, False):  # v0002, v0003 current in turn; v0004, v0005 candidates
        publish(bundle, registry, "pump", make_current=current)
    set_shadow(registry, "pump", "v0004")
    old, fresh = registry / "pump" / ".incoming.old", registry / "pump" / ".incoming.fresh"
    old.mkdir(), fresh.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    args = ["models", "prune", "--registry", str(registry), "--name", "pump"]
    assert main([*args, "--keep", "2"]) == 0  # v0001 and v0002 are the two rollback returns to
    assert list_versions(registry, "pump") == ["v0001", "v0002", "v0003", "v0004", "v0005"]
    assert main([*args, "--keep", "1"]) == 0
    assert "deleted 1 versions (v0001)" in capsys.readouterr().out
    # CURRENT, the one before it (it was deleted too: the history's last entry is CURRENT), SHADOW, the newest
    assert list_versions(registry, "pump") == ["v0002", "v0003", "v0004", "v0005"]
    assert not old.exists() and fresh.exists()  # a publish may still be writing the fresh one
    assert main(["models", "rollback", "--registry", str(registry), "--name", "pump"]) == 0
    assert current_version(registry, "pump") == "v0002"
    with pytest.raises(SystemExit):  # argparse: one usage line
        main([*args, "--keep", "0"])


def test_promote_refuses_corrupt_bundle(registry, trained, capsys):
    bundle, _, _ = trained
    publish(bundle, registry, "pump", make_current=False)
    (registry / "pump" / "v0002" / "model.pt").write_bytes(b"junk")
    assert main(["models", "promote", "v0002", "--registry", str(registry), "--name", "pump"]) == 1
    assert "refusing" in capsys.readouterr().err
    assert current_version(registry, "pump") == "v0001"


def test_since_filters_and_bad_since(registry, tmp_path, capsys):
    frame = shifted_plant(4000, seed=8)
    frame.to_csv(tmp_path / "new.csv", index=False)
    assert main(["retrain", "--registry", str(registry), "--name", "pump", "--data", str(tmp_path / "new.csv"),
                 "--since", "yesterday-ish"]) == 1
    assert "--since" in capsys.readouterr().err
    cut = frame["timestamp"].iloc[2000].isoformat()
    assert main(["retrain", "--registry", str(registry), "--name", "pump", "--data", str(tmp_path / "new.csv"),
                 "--since", cut, "--max-epochs", "1", "--quiet", "--force"]) == 0
    meta = json.loads((registry / "pump" / "v0002" / "bundle.json").read_text())
    assert meta["training"]["rows"] == pytest.approx(0.9 * 2000, abs=2)
    assert np.isfinite(meta["threshold"])


def test_rollback_returns_to_the_previous_current_not_to_a_rejected_candidate(registry, trained, capsys):
    """v0002 was a candidate the gate rejected (never current); v0003 was promoted. Rolling back from
    v0003 used to pick the newest older version, v0002: it must be v0001, the model served before."""
    bundle, _, _ = trained
    publish(bundle, registry, "pump", make_current=False)  # v0002: rejected, never current
    publish(bundle, registry, "pump")  # v0003: promoted
    assert main(["models", "rollback", "--registry", str(registry), "--name", "pump"]) == 0
    assert current_version(registry, "pump") == "v0001"
    assert main(["models", "rollback", "--registry", str(registry), "--name", "pump"]) == 1
    assert "nothing to roll back to" in capsys.readouterr().err
    assert current_version(registry, "pump") == "v0001"
    # back from a version of other channels: the note names CURRENT as what the registry named, not as
    # what daemons serve (one that refused it still served v0001, and the note said "a daemon serving v0004")
    publish(replace(bundle, channels=("x", "y", "z")[: len(bundle.channels)], level=None, sensors=None), registry,
            "pump")  # v0004
    capsys.readouterr()
    assert main(["models", "rollback", "--registry", str(registry), "--name", "pump"]) == 0
    said = capsys.readouterr()
    assert "differ from v0004's" in said.out + said.err and "(v0004: CURRENT until now)" in said.out + said.err
    assert "a daemon that took v0004 refuses it" in said.out + said.err and "running model" not in said.out + said.err
    (registry / "pump" / "HISTORY").unlink()  # a registry from before the history: its CURRENT starts it
    assert main(["models", "promote", "v0003", "--registry", str(registry), "--name", "pump"]) == 0
    assert main(["models", "rollback", "--registry", str(registry), "--name", "pump"]) == 0
    assert current_version(registry, "pump") == "v0001"


def test_calibrating_a_registry_version_makes_a_new_version(registry, tmp_path, capsys):
    """A recalibration rewrote the version in place, and a daemon serving it never saw the change
    (CURRENT did not move): it becomes a new version, current when the calibrated one was."""
    meta_path = registry / "pump" / "v0001" / "bundle.json"
    meta = json.loads(meta_path.read_text())
    meta["created"] = "2026-01-01T00:00:00+00:00"
    meta["metrics"] = {**(meta.get("metrics") or {}), "promoted": True, "reason": "as good"}  # a retrain's verdict
    meta_path.write_text(json.dumps(meta))
    before = meta_path.read_text()
    plant_frame(rows=3000, channels=3, seed=21).to_csv(tmp_path / "normal.csv", index=False)
    assert main(["calibrate", str(registry / "pump" / "v0001"), str(tmp_path / "normal.csv")]) == 0
    assert "v0001 recalibrated as v0002 (now CURRENT)" in capsys.readouterr().out
    assert (registry / "pump" / "v0001" / "bundle.json").read_text() == before
    assert current_version(registry, "pump") == "v0002" and list_versions(registry, "pump") == ["v0001", "v0002"]
    made = json.loads((registry / "pump" / "v0002" / "bundle.json").read_text())
    assert made["created"] > "2026-01-01T00:00:00+00:00"  # made now, not when v0001 trained
    assert "promoted" not in made["metrics"] and "reason" not in made["metrics"]  # the gate judged v0001's line
    assert main(["calibrate", str(registry / "pump" / "v0001"), str(tmp_path / "normal.csv")]) == 0
    assert "as v0003 (not current" in capsys.readouterr().out and current_version(registry, "pump") == "v0002"
    assert main(["models", "rollback", "--registry", str(registry), "--name", "pump"]) == 0
    assert current_version(registry, "pump") == "v0001"


def test_a_current_that_moved_while_training_is_not_overwritten(registry, trained, tmp_path, monkeypatch):
    """A rollback or promote during a retrain was silently undone by the candidate's promotion, which
    had been gated against the model rolled back (found by review)."""
    import sensorguard.training.retrain as retrain_module
    from sensorguard.service.registry import set_current
    from sensorguard.training.data import series_from_frame
    from sensorguard.training.train import TrainOptions

    publish(trained[0], registry, "pump")  # v0002 current; v0001 before it
    real = retrain_module.train_bundle

    def train_and_roll_back(*args, **kwargs):
        out = real(*args, **kwargs)
        set_current(registry, "pump", "v0001")  # an operator rolls back meanwhile
        return out

    monkeypatch.setattr(retrain_module, "train_bundle", train_and_roll_back)
    data = series_from_frame(shifted_plant(3000, seed=6, gain=1.3, offset=0.5), "new")
    result = retrain_module.retrain(registry, "pump", data, TrainOptions(max_epochs=2, progress=False), force=True)
    assert not result.promoted and "CURRENT became v0001" in result.reason
    assert current_version(registry, "pump") == "v0001"  # the rollback stands
    meta = json.loads((registry / "pump" / result.version / "bundle.json").read_text())
    assert meta["metrics"]["promoted"] is False and meta["metrics"]["compared_with"] == "v0002"


def test_a_current_that_moved_while_the_candidate_was_stored_is_not_overwritten(registry, trained, monkeypatch):
    """The check ran before the version was written (torch.save, fsyncs): a rollback landing then
    was overwritten by the promotion (found by review). CURRENT is now compared and set under the
    registry's pointer lock."""
    import sensorguard.training.retrain as retrain_module
    from sensorguard.service.registry import set_current
    from sensorguard.training.data import series_from_frame
    from sensorguard.training.train import TrainOptions

    publish(trained[0], registry, "pump")  # v0002 current; v0001 before it
    real = retrain_module.publish

    def publish_and_roll_back(*args, **kwargs):
        version = real(*args, **kwargs)
        set_current(registry, "pump", "v0001")  # an operator rolls back while it is written
        return version

    monkeypatch.setattr(retrain_module, "publish", publish_and_roll_back)
    data = series_from_frame(shifted_plant(3000, seed=6, gain=1.3, offset=0.5), "new")
    result = retrain_module.retrain(registry, "pump", data, TrainOptions(max_epochs=2, progress=False), force=True)
    assert not result.promoted and "CURRENT became v0001 while it was stored" in result.reason
    assert current_version(registry, "pump") == "v0001"
    meta = json.loads((registry / "pump" / result.version / "bundle.json").read_text())
    assert meta["metrics"]["promoted"] is False and "while it was stored" in meta["metrics"]["reason"]


def test_the_pointer_lock_needs_no_write_access_to_its_file(registry, monkeypatch):
    """A .lock that root created (sudo models rollback) stopped the retrain unit's user: it was opened
    read-write (found by review). flock works on a read-only descriptor."""
    import os

    from sensorguard.service import registry as registry_module

    modes = []
    real = os.open
    monkeypatch.setattr(registry_module.os, "open",
                        lambda path, flags, *a: modes.append(flags) or real(path, flags, *a))
    with registry_module.pointer_lock(registry, "pump"):
        pass
    assert modes and all(flags & os.O_ACCMODE == os.O_RDONLY for flags in modes)


def test_an_unloadable_current_stops_a_retrain_instead_of_counting_as_no_model(registry, tmp_path):
    from sensorguard.service.bundle import BundleError
    from sensorguard.training.data import series_from_frame
    from sensorguard.training.retrain import retrain
    from sensorguard.training.train import TrainOptions

    (registry / "pump" / "v0001" / "model.pt").write_bytes(b"damaged")
    data = series_from_frame(shifted_plant(3000, seed=6), "new")
    with pytest.raises(BundleError, match="model.pt"):
        retrain(registry, "pump", data, TrainOptions(max_epochs=1, progress=False))
    assert list_versions(registry, "pump") == ["v0001"]  # nothing published, nothing promoted


def test_warm_start_is_not_used_on_rows_the_current_model_trained_on(registry, tmp_path, capsys):
    """Found by review: with --warm-start every cross-fitted fold starts from the current weights;
    on data that include the rows they trained on, a fold has seen the rows it is scored on, and the
    line came out too low. Data from after its training rows still warm-start."""
    old = shifted_plant(4000, seed=5)  # the same timestamps as the current model's training rows
    old.to_csv(tmp_path / "old.csv", index=False)
    later = old.assign(timestamp=pd.to_datetime(old["timestamp"]) + pd.Timedelta(days=2))
    later.to_csv(tmp_path / "later.csv", index=False)
    for name, said in (("old.csv", True), ("later.csv", False)):
        assert main(["retrain", "--registry", str(registry), "--name", "pump", "--data", str(tmp_path / name),
                     "--max-epochs", "1", "--quiet", "--warm-start"]) == 0
        assert ("warm start not used: the data begin before the end of the current model's training rows"
                in capsys.readouterr().out) is said


def test_retrain_on_too_few_rows_to_compare_is_one_line(registry, tmp_path, capsys):
    """300 rows left a 30-row holdout without a window: 'not promoted: higher error (nan > nan
    + 5%)', the candidate stored anyway (found by review)."""
    shifted_plant(300, seed=5).to_csv(tmp_path / "few.csv", index=False)
    assert main(["retrain", "--registry", str(registry), "--name", "pump", "--data", str(tmp_path / "few.csv"),
                 "--max-epochs", "1", "--quiet"]) == 1
    assert "hold no 64 readings in a row of one machine" in capsys.readouterr().err
    assert list_versions(registry, "pump") == ["v0001"]


def test_a_channel_flat_in_the_held_out_rows_does_not_decide_the_verdict(trained, tmp_path):
    """The error was normalized by each channel's held-out variance, floored at 1e-12: a setpoint
    flat in the newest rows made its tiny residual an error of 1e8 (found by review)."""
    from sensorguard.training.data import series_from_frame
    from sensorguard.training.retrain_gate import compare, error_variance

    bundle, _, _ = trained
    frame = plant_frame(rows=600, channels=3, seed=5)
    frame.columns = ["timestamp", *bundle.channels]
    frame[bundle.channels[2]] = frame[bundle.channels[2]].iloc[0]  # flat here, moving in training
    data = series_from_frame(frame, "held-out", channels=list(bundle.channels))
    assert compare(bundle, data, error_variance(data, bundle.scale_)).mean_error < 1e3
    assert compare(bundle, data, np.maximum(data.values.var(axis=0), 1e-12)).mean_error > 1e6  # as it was


def test_calibrate_warns_about_rows_inside_the_span_the_model_trained_on(trained, tmp_path, capsys):
    from sensorguard.service.bundle import save_bundle

    bundle, _, root = trained
    seen = pd.read_csv(root / "normal.csv")  # its own training file
    for name, frame, warned in (("seen.csv", seen, True),
                                ("later.csv", seen.assign(timestamp=pd.to_datetime(seen["timestamp"])
                                                          + pd.Timedelta(days=2)), False)):
        frame.to_csv(tmp_path / name, index=False)
        main(["calibrate", str(save_bundle(bundle, tmp_path / f"m-{name}")), str(tmp_path / name)])
        assert ("lie inside the span the model trained on" in capsys.readouterr().err) is warned
    # retrained on these rows and on rows recorded weeks later: the rows between are none it saw (a walk)
    from dataclasses import replace

    from sensorguard.training.series import time_spans

    start, end = (pd.Timestamp(t) for t in bundle.training["time_range"])
    weeks = [str(end + pd.Timedelta(days=30)), str(end + pd.Timedelta(days=31))]
    both = replace(bundle, training={**bundle.training, "time_range": [str(start), weeks[1]],
                                     "time_spans": [[str(start), str(end)], weeks]})
    main(["calibrate", str(save_bundle(both, tmp_path / "m-both")), str(tmp_path / "later.csv")])
    assert "lie inside the span" not in capsys.readouterr().err
    main(["calibrate", str(save_bundle(both, tmp_path / "m-both2")), str(tmp_path / "seen.csv")])
    err = capsys.readouterr().err
    assert "lie inside the span the model trained on" in err and "in 2 stretches):" in err
    assert bundle.training.get("time_spans") is None  # one stretch: not listed
    assert len(time_spans(np.arange(0.0, 3601.0 * 40, 3601.0))) == 20  # 39 gaps over an hour: the 19 largest part


def test_a_model_saved_with_a_hop_past_its_window_still_retrains(trained, tmp_path, capsys):
    """train now refuses such a hop; retrain inherited it and failed on a --hop never given (review)."""
    from dataclasses import replace

    bundle, _, _ = trained
    publish(replace(bundle, hop=bundle.window + 8, focus=bundle.window), tmp_path / "reg", "pump")
    shifted_plant(4000, seed=5).to_csv(tmp_path / "new.csv", index=False)
    assert main(["retrain", "--registry", str(tmp_path / "reg"), "--name", "pump", "--data",
                 str(tmp_path / "new.csv"), "--max-epochs", "1", "--quiet"]) == 0
    assert list_versions(tmp_path / "reg", "pump") == ["v0001", "v0002"]


def test_models_list_shows_whole_data_stamps_and_the_gates_verdict():
    """Found by a walk through the README: a span stamped with microseconds was cut mid-fraction
    and lost its offset, and a column headed "promoted" said False for the current version (it is
    the retrain gate's verdict)."""
    from sensorguard.cli_models import _stamp

    assert _stamp("2026-12-03T06:34:21.619345+00:00") == "2026-12-03T06:34:21+00:00"
    assert _stamp("2026-01-01T00:00:00+00:00") == "2026-01-01T00:00:00+00:00"
    assert _stamp(None) == "None"


def test_the_gate_names_as_many_missed_faults_as_it_counts():
    """It said "misses 4 fault(s) ...:" and listed three (found by a README walk)."""
    from sensorguard.training.retrain_gate import Comparison, decide

    current = Comparison(0.0, 1.0, 100, caught=("a", "b", "c", "d"), known=4)
    ok, why = decide(Comparison(0.0, 1.0, 100, caught=(), known=4), current, 0.01)
    assert not ok and "misses 4 fault(s) the current model catches: a, b, c and 1 more" in why
    ok, why = decide(Comparison(0.0, 1.0, 100, caught=("d",), known=4), current, 0.01)
    assert "misses 3 fault(s) the current model catches: a, b, c" in why and "more" not in why
    assert "it catches" not in why


def test_the_gate_names_the_faults_the_candidate_catches_that_the_current_one_misses():
    """Both models caught 14 of 15, and "misses 1 fault(s) the current model catches" beside the
    table's equal counts read as a contradiction (a walk): each had missed another fault."""
    from sensorguard.training.retrain_gate import Comparison, decide

    current = Comparison(0.0, 1.0, 100, caught=("a", "b"), known=3)
    ok, why = decide(Comparison(0.0, 1.0, 100, caught=("b", "c"), known=3), current, 0.01)
    assert not ok and why == "misses 1 fault(s) the current model catches: a (it catches 1 the current one misses: c)"


def test_file_rows_older_than_since_are_named_when_recordings_come_too(registry, tmp_path):
    """With --recorded, --since dropped every row of --data FILE without a word (without it, that is
    an error): the retrain then learned nothing new and was refused (found by a README walk)."""
    from sensorguard.training.retrain import new_normal_data

    recent = shifted_plant(300, seed=21)
    start = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(hours=1)
    recent["timestamp"] = start + pd.to_timedelta(range(300), unit="s")
    recent.insert(0, "ts", (recent.pop("timestamp") - pd.Timestamp(0, tz="UTC")).dt.total_seconds())
    recent.insert(1, "asset", "site/pump-1")
    (tmp_path / "rec").mkdir()
    recent.to_parquet(tmp_path / "rec" / "a.parquet", index=False)
    shifted_plant(400, seed=22).to_csv(tmp_path / "old.csv", index=False)  # stamped long before 30 days ago
    data = new_normal_data(registry, "pump", [str(tmp_path / "old.csv")], str(tmp_path / "rec"), "30d")
    assert len(data) == 300
    assert "--since 30d: 400 of the 400 rows of the files are older: left out" in data.notes


def test_retrain_notes_rows_a_label_column_marks_in_the_current_models_channels(registry, tmp_path):
    """With a current model its channels are given, and the label-like note of a first training
    was skipped: a file's marked fault rows were learned as normal without a word."""
    from sensorguard.training.retrain import new_normal_data

    frame = plant_frame(rows=300, channels=3, seed=6)
    frame["anomaly"] = (np.arange(300) >= 280).astype(int)
    frame.to_csv(tmp_path / "marked.csv", index=False)
    data = new_normal_data(registry, "pump", [str(tmp_path / "marked.csv")], None, None)
    said = "anomaly marks 20 rows: they were taken as normal data (--label-column anomaly leaves them out)"
    assert said in data.notes
    kept = new_normal_data(registry, "pump", [str(tmp_path / "marked.csv")], None, None, label_column="anomaly")
    assert len(kept) < len(data) and not any("marks" in n for n in kept.notes)


def test_retrain_prints_what_the_cleaning_did_as_train_does(registry, tmp_path, capsys):
    """retrain printed only its comparison: 60 marked rows, 100 repeated stamps and cells of
    ``--`` were learned from, promoted, and said only inside ``bundle.json`` (a walk)."""
    frame = plant_frame(rows=3000, channels=3, seed=6)
    frame["anomaly"] = (np.arange(len(frame)) >= 2900).astype(int)
    frame = frame.astype({frame.columns[1]: object})
    frame.iloc[100:103, 1] = "--"
    frame.to_csv(tmp_path / "messy.csv", index=False)
    assert main(["retrain", "--registry", str(registry), "--name", "pump", "--data", str(tmp_path / "messy.csv"),
                 "--max-epochs", "1", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "note: anomaly marks 100 rows: they were taken as normal data" in err
    assert "note: cells that are not numbers, read as missing" in err


def test_models_list_shows_the_gates_verdict_not_what_retrain_did(registry, trained, capsys):
    """A README walk: a candidate forced past a refusal was listed as "passed", and one that
    passed and went to shadow as "refused": the column read ``metrics.promoted``."""
    from sensorguard.cli_models import gate_verdict

    bundle, _, _ = trained
    publish(bundle, registry, "pump")
    for version, metrics in (("v0001", {"passed": True, "promoted": False}),  # went to shadow
                             ("v0002", {"passed": False, "promoted": True})):  # forced: CURRENT
        path = registry / "pump" / version / "bundle.json"
        meta = json.loads(path.read_text())
        meta["metrics"] = metrics
        path.write_text(json.dumps(meta))
    assert main(["models", "list", "--registry", str(registry), "--name", "pump"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].endswith("  passed, not promoted") and lines[2].endswith("  refused, forced"), lines
    assert [gate_verdict(p, q) for p, q in ((True, True), (False, False), (None, True), (None, None))] == [
        "passed", "refused", "passed", "-"]
    # a shadowed candidate promoted by hand later is CURRENT; a hand-edited value is "?", not a crash
    assert gate_verdict(True, False, current=True) == "passed"
    assert [gate_verdict(None, [1]), gate_verdict("false", True), gate_verdict(True, {})] == ["?", "?", "?"]


def test_retrain_refuses_data_at_another_sample_period(registry, tmp_path, capsys):
    """A README walk retrained a 3-minute model on 6-minute data: the candidate took the data's
    period, was promoted in silence, and the live feed at the old rate was resampled away."""
    from sensorguard.service.registry import load_current

    frame = shifted_plant(4000, seed=5)
    every_other = frame.iloc[::2].reset_index(drop=True)  # twice the model's period
    every_other.to_csv(tmp_path / "slow.csv", index=False)
    args = ["retrain", "--registry", str(registry), "--name", "pump", "--data", str(tmp_path / "slow.csv"),
            "--max-epochs", "1", "--quiet"]
    assert main(args) == 1
    err = capsys.readouterr().err
    period = load_current(registry, "pump").sample_period
    assert f"every {2 * period:g} s, the current model every {period:g} s" in err and "--force" in err, err
    assert list_versions(registry, "pump") == ["v0001"]  # nothing trained, nothing stored
    assert main([*args, "--force"]) == 0  # the user's call: a model at the new period
    assert load_current(registry, "pump").sample_period == pytest.approx(2 * period)


def test_the_period_check_takes_jitter_and_irregular_data(tmp_path):
    """A review: a 1 % tolerance refused jittery data (a median step of 60.7 s for a 60 s model),
    and a NaN period printed "every nan s"."""
    from sensorguard.cli_models import _promise_line
    from sensorguard.training.retrain import _other_period

    assert _other_period(60.0, 60.7) is None and _other_period(60.0, float("nan")) is None
    assert _other_period(None, 60.0) is None
    assert "every 120 s, the current model every 60 s" in _other_period(60.0, 120.0)
    # the candidate's promise line never fails a retrain that worked: odd bundle.json values leave it out
    for calibration, said in (({"alerts": {"promised_per_day": 2, "promised_ci95": [0.5, 4]}},
                               "candidate threshold 0.5: 2 false alerts per asset per day promised (95% CI 0.5-4)"),
                              ({"alerts": {"promised_per_day": 1, "promised_ci95": None}}, "candidate threshold 0.5"),
                              ({}, "candidate threshold 0.5")):
        (tmp_path / "bundle.json").write_text(json.dumps({"threshold": 0.5, "calibration": calibration}))
        assert _promise_line(tmp_path) == said
    (tmp_path / "bundle.json").write_text(json.dumps({"threshold": "x"}))
    assert _promise_line(tmp_path) is None


def test_retrain_of_a_model_the_registry_does_not_hold_is_one_line_and_makes_nothing(registry, tmp_path, capsys):
    """A walk found: a mistyped --registry or --name made a new model, "promoted (no current
    model)", exit 0, and the served model was never retrained (a timer would say so every run)."""
    shifted_plant(3000, seed=6).to_csv(tmp_path / "new.csv", index=False)
    for root, name in ((registry, "pmup"), (tmp_path / "regg", "pump")):
        assert main(["retrain", "--registry", str(root), "--name", name, "--data", str(tmp_path / "new.csv"),
                     "--max-epochs", "1", "--quiet"]) == 1
        err = capsys.readouterr().err
        assert f"no model '{name}' in registry" in err and "sensorguard train" in err and "Traceback" not in err
        assert list_versions(root, name) == []
    assert "it holds pump" in main_err(["retrain", "--registry", str(registry), "--name", "pmup", "--data",
                                        str(tmp_path / "new.csv")], capsys)


def main_err(argv, capsys) -> str:
    assert main(argv) == 1
    return capsys.readouterr().err


def test_the_models_verbs_set_a_garbled_current_right_and_rollback_never_stays_put(registry, trained, tiny_bundle,
                                                                                 capsys):
    """A walk found: rollback said "CURRENT v0004 -> v0004" (exit 0) when the history led back to
    CURRENT past an unloadable version; a CURRENT edited by hand into no version blocked promote,
    rollback, list and show, the verbs that set it right; show said "unreadable", exit 0, without
    why; and shadow accepted a version with other channels that every daemon then refused."""
    bundle, _, _ = trained
    args = ["--registry", str(registry), "--name", "pump"]
    for _ in range(4):
        publish(bundle, registry, "pump", make_current=False)  # v0002-v0005
    for version in ("v0004", "v0005", "v0004"):
        assert main(["models", "promote", version, *args]) == 0
    (registry / "pump" / "v0005" / "bundle.json").write_text("{broken")
    capsys.readouterr()
    assert main(["models", "rollback", *args]) == 0
    assert "CURRENT v0004 -> v0001" in capsys.readouterr().out and current_version(registry, "pump") == "v0001"

    assert "v0005/bundle.json cannot be read" in main_err(["models", "show", "v0005", *args], capsys)

    (registry / "pump" / "CURRENT").write_text("v0004 # by hand\n")
    assert main(["models", "list", *args]) == 0
    assert "names no version" in main_err(["models", "rollback", *args], capsys)  # back from what: refused
    assert main(["models", "promote", "v0003", *args]) == 0
    assert current_version(registry, "pump") == "v0003"

    publish(tiny_bundle, registry, "pump", make_current=False)  # v0006: other channels
    assert "refusing to shadow v0006: channels" in main_err(["models", "shadow", "v0006", *args], capsys)
    assert not (registry / "pump" / "SHADOW").exists()


def test_retrain_says_when_the_warm_start_did_not_fit_the_new_data(registry, tmp_path, capsys):
    """A walk found: `retrain --warm-start` trained from scratch, without a word on the console, when
    the current network did not fit the data (its linear path's rank changed); only bundle.json said."""
    rng = np.random.default_rng(3)
    f1, f2 = rng.standard_normal((2, 3000))
    values = np.c_[f1 + 0.3 * f2, f2 + 0.3 * f1, f1 - f2] + 0.05 * rng.standard_normal((3000, 3))  # two sources
    later = pd.date_range("2026-03-01", periods=3000, freq="1s", tz="UTC")  # after the model's training rows
    frame = pd.DataFrame(values, columns=["c0", "c1", "c2"])
    frame.insert(0, "timestamp", later)
    frame.to_csv(tmp_path / "two.csv", index=False)
    assert main(["retrain", "--registry", str(registry), "--name", "pump", "--data", str(tmp_path / "two.csv"),
                 "--max-epochs", "1", "--quiet", "--warm-start"]) == 0
    assert "note: warm start not used: the current model's network does not fit" in capsys.readouterr().out


def test_the_calibrate_refusal_scores_windows_without_their_faulted_channels(trained):
    """``calibrate`` leaves a channel with a sensor fault open out of its windows; the refusal must
    judge the data the same way, or a dead sensor's wild values read as "other units" (a review)."""
    from dataclasses import replace

    from sensorguard.training.data import series_from_frame
    from sensorguard.training.retrain_gate import UNLIKE_MEDIAN, median_score

    bundle, _, _ = trained
    data = series_from_frame(plant_frame(rows=1500, channels=3, seed=4), "normal")
    assert median_score(bundle, data) < UNLIKE_MEDIAN  # normal data of the same plant
    values = data.values.copy()
    values[:, 0] = 1e6  # a dead sensor's value, its fault open on every row
    faulted = np.zeros(values.shape, dtype=bool)
    faulted[:, 0] = True
    assert median_score(bundle, replace(data, values=values)) >= UNLIKE_MEDIAN  # unmarked: other units
    assert median_score(bundle, replace(data, values=values, faulted=faulted)) < UNLIKE_MEDIAN


def test_the_fault_check_runs_on_a_short_held_out_block_and_its_absence_blocks_a_promotion(
        registry, trained, tmp_path, capsys):
    """Under four windows of held-out rows (320 to 1,280 rows retrained on) the injected faults were
    skipped without a word: a model trained on a fault was promoted (a walk). A shorter probe now
    runs from two windows; under that retrain refuses before it trains, unless forced."""
    window = trained[0].window
    argv = ["retrain", "--registry", str(registry), "--name", "pump", "--max-epochs", "1", "--quiet"]
    shifted_plant(30 * window, seed=1).to_csv(tmp_path / "short.csv", index=False)
    assert main([*argv, "--data", str(tmp_path / "short.csv")]) == 0
    out = capsys.readouterr().out
    caught = [line.split()[-2:] for line in out.splitlines() if line.startswith("faults caught")]
    assert caught and caught[0][0] == "6/6"  # 3 held-out windows: the check ran on a shorter probe
    fault = shifted_plant(30 * window, seed=1)
    fault["c1"] = fault["c1"] + np.where(np.arange(len(fault)) % 60 < 30, 6.0, -6.0)  # a fault, taken as normal
    fault.to_csv(tmp_path / "fault.csv", index=False)
    assert main([*argv, "--data", str(tmp_path / "fault.csv")]) == 0  # the current model alerts on all of it:
    out = capsys.readouterr().out  # a changed process or a fault taken as normal, the candidate held to the offsets
    assert "faults caught" in out and "not checked" not in out
    assert "alerts on every held-out stretch tried" in out  # held to the offsets on its own, and said
    shifted_plant(15 * window, seed=1).to_csv(tmp_path / "shorter.csv", index=False)
    assert main([*argv, "--data", str(tmp_path / "shorter.csv")]) == 1
    assert f"hold no {2 * window} readings in a row of one machine" in capsys.readouterr().err
    assert list_versions(registry, "pump") == ["v0001", "v0002", "v0003"]  # nothing trained
    assert main([*argv, "--data", str(tmp_path / "shorter.csv"), "--force"]) == 0
    assert "not checked" in capsys.readouterr().out and current_version(registry, "pump") == "v0004"


def test_an_offset_counts_as_caught_only_where_the_model_is_quiet_without_it(trained):
    """A current model alerting on every normal window "caught" every injected offset, so each sane
    candidate missed them and was refused for good (a walk)."""
    from dataclasses import replace

    from sensorguard.training.data import series_from_frame
    from sensorguard.training.retrain_gate import caught, injected_faults, missed_faults

    bundle = trained[0]
    holdout = series_from_frame(shifted_plant(8 * bundle.window, seed=3), "held")
    probes = injected_faults(holdout, bundle.window, bundle.scale_)
    assert len(probes.faults) == 6 and len(caught(bundle, [], probes)) >= 4  # the sane model sees the offsets
    noisy = replace(bundle, threshold_=bundle.threshold_ * 1e-6)  # alerts on everything
    assert caught(noisy, [], probes) == ()
    assert missed_faults(bundle, noisy, holdout) == []  # held to the offsets on its own: it catches them
    assert missed_faults(noisy, noisy, holdout) == [  # calibrate --recorded: not skipped without a word
        "every injected offset (neither line is quiet on any stretch of these data)"]
    assert missed_faults(noisy, bundle, holdout) != []  # a noisy candidate misses what the sane model catches
    # a stretch where the current model alerts (the false alarms being learned) is not probed: another is
    w = bundle.window
    frame = shifted_plant(12 * w, seed=3)
    frame.loc[4 * w: 9 * w, "c0"] += 8.0  # the middle, where the probe goes first
    mixed = series_from_frame(frame, "mixed")
    assert injected_faults(mixed, w, bundle.scale_).clean.times[0] >= mixed.times[4 * w]  # no model: the middle
    probes = injected_faults(mixed, w, bundle.scale_, quiet_for=bundle)
    assert probes.quiet and probes.clean.times[-1] < mixed.times[4 * w]  # another place, before the shift
    assert len(caught(bundle, [], probes)) >= 4


def test_promote_refuses_a_version_running_daemons_would_refuse(registry, trained, tmp_path, capsys):
    """models shadow refused a version of other channels, promote and train --registry made it
    CURRENT: every running daemon refused the swap, and after a restart every reading (a walk)."""
    plant_frame(rows=600, channels=4, seed=2).to_csv(tmp_path / "four.csv", index=False)
    assert main(["train", str(tmp_path / "four.csv"), "--out", str(tmp_path / "four"), "--max-epochs", "1",
                 "--quiet"]) == 0
    from sensorguard.service.bundle_loading import load_bundle

    four = load_bundle(tmp_path / "four")
    version = publish(four, registry, "pump", make_current=False)
    capsys.readouterr()
    argv = ["models", "promote", version, "--registry", str(registry), "--name", "pump"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"refusing to promote {version}: {version}'s channels ['c0', 'c1', 'c2', 'c3'] differ" in err
    assert "--force promotes it" in err and current_version(registry, "pump") == "v0001"
    assert main([*argv, "--force"]) == 0 and current_version(registry, "pump") == version
    assert main(["models", "rollback", "--registry", str(registry), "--name", "pump"]) == 0
    assert "note: v0001's channels ['c0', 'c1', 'c2'] differ" in capsys.readouterr().out
    assert main(["models", "list", "--registry", str(registry), "--name", "pump", "--force"]) == 1  # promote only
    capsys.readouterr()
    # the list says which versions a daemon serving CURRENT refuses, and why (it showed no channels: a walk)
    assert main(["models", "list", "--registry", str(registry), "--name", "pump"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert "channels  window   every" in rows[0]
    mine = next(k for k, row in enumerate(rows) if row[2:].startswith(version))
    assert rows[mine + 1].strip() == "with 'c3' beside CURRENT: daemons serving CURRENT refuse it until they restart"
    assert rows[mine].split()[6:10] == ["4", str(four.window), f"{four.sample_period:g}", "s"]
    current = next(row for row in rows if row.startswith("* "))
    assert current.split()[7] == "3" and not rows[rows.index(current) + 1].startswith(" " * 11)
    assert main(["train", str(tmp_path / "four.csv"), "--registry", str(registry), "--name", "pump",
                 "--max-epochs", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "now CURRENT: v0003's channels ['c0', 'c1', 'c2', 'c3'] differ" in out
    # and the first line says so too: at the end alone it went unseen, the next restart served it (a walk)
    assert "pump/v0003 (now CURRENT, was v0001; running daemons refuse it: see the last note)" in out


def test_a_version_sampled_at_another_period_made_current_is_noted(registry, tmp_path, capsys):
    """``train --registry`` made a 2 s model of a 1 s feed CURRENT unsaid: the daemons swapped to it and
    half the live readings were dropped as resampled (a walk). It is noted, as a promote or rollback
    between such versions is; one whose period the daemon's feed still fits (1.25 s for 1 s) is not."""
    plant_frame(rows=600, channels=3, seed=2, period="2s").to_csv(tmp_path / "slow.csv", index=False)
    argv = ["train", str(tmp_path / "slow.csv"), "--registry", str(registry), "--name", "pump",
            "--max-epochs", "1", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "now CURRENT: v0002 was trained on readings every 2 s, v0001 on every 1 s" in out
    assert "pump/v0002 (now CURRENT, was v0001)" in out
    assert "of readings 1 s apart, one every 2 s is taken, the rest dropped as resampled" in out
    assert main(["models", "rollback", "--registry", str(registry), "--name", "pump"]) == 0
    out = capsys.readouterr().out
    assert "note: v0001 was trained on readings every 1 s, v0002 on every 2 s" in out and "slow_rate" in out
    plant_frame(rows=600, channels=3, seed=3, period="1250ms").to_csv(tmp_path / "same.csv", index=False)
    assert main([*argv[:1], str(tmp_path / "same.csv"), *argv[2:]]) == 0
    assert "trained on readings every" not in capsys.readouterr().out


def test_force_and_shadow_together_are_one_line(registry, tmp_path, capsys):
    """``retrain --force --shadow`` neither promoted nor shadowed, and said "forced" (a walk)."""
    shifted_plant(400, seed=5).to_csv(tmp_path / "new.csv", index=False)
    assert main(["retrain", "--registry", str(registry), "--name", "pump", "--data", str(tmp_path / "new.csv"),
                 "--force", "--shadow"]) == 1
    assert "give one of them" in capsys.readouterr().err and list_versions(registry, "pump") == ["v0001"]


def test_models_list_marks_the_shadow_and_says_what_it_cannot_read(registry, trained, capsys):
    """It did not mark SHADOW, listed an unreadable version as "None None ? nan", said nothing of a
    CURRENT naming a version it does not hold, and shadow --clear with no SHADOW said "cleared"
    (a walk)."""
    from sensorguard.service.registry import set_shadow

    bundle, _, _ = trained
    publish(bundle, registry, "pump", make_current=False)
    publish(bundle, registry, "pump", make_current=False)
    set_shadow(registry, "pump", "v0002")
    (registry / "pump" / "v0003" / "bundle.json").write_text("{broken")
    argv = ["--registry", str(registry), "--name", "pump"]
    assert main(["models", "list", *argv]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("* v0001") and lines[2].startswith("s v0002")
    assert lines[3] == "  v0003    bundle.json cannot be read (models show v0003 says why)"
    assert lines[-1] == "(* CURRENT, s SHADOW)"
    (registry / "pump" / "CURRENT").write_text("v0099\n")
    assert main(["models", "list", *argv]) == 0
    assert "warning: CURRENT names v0099, which the registry does not hold" in capsys.readouterr().out
    assert main(["models", "shadow", "--clear", *argv]) == 0 and "SHADOW cleared" in capsys.readouterr().out
    assert main(["models", "shadow", "--clear", *argv]) == 0
    assert capsys.readouterr().out.strip() == "pump: no SHADOW to clear"
    (registry / "pump" / "SHADOW").write_text("garbage!!")  # a garbled one is cleared, not left (a review)
    assert main(["models", "shadow", "--clear", *argv]) == 0 and not (registry / "pump" / "SHADOW").exists()
    (registry / "pump" / "CURRENT").write_text("v0003\n")  # an unreadable CURRENT is marked and said
    assert main(["models", "list", *argv]) == 0
    assert "* v0003    bundle.json cannot be read (models show v0003 says why); daemons cannot load it" in (
        capsys.readouterr().out)
    weights = registry / "pump" / "v0002" / "model.pt"  # cut short: it listed as fine (a walk)
    weights.write_bytes(weights.read_bytes()[:-100])
    assert main(["models", "list", *argv]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[3].strip() == "model.pt is missing or cut short: no daemon can load v0002 (copy it again from " \
        "where it was trained)" and lines[2].startswith("  v0002") and len(lines) == 6
