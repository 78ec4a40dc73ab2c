"""Every offline verb end to end, and every bad input as one clear line with a non-zero exit."""

import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from sensorguard.arguments import build_parser
from sensorguard.cli import main
from sensorguard.service.bundle import save_bundle
from tests.conftest import plant_frame


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    assert main(["simulate", "--out", str(root / "normal.csv"), "--rows", "4000", "--channels", "3"]) == 0
    assert main(["simulate", "--out", str(root / "faults.csv"), "--rows", "3000", "--channels", "3",
                 "--seed", "2", "--anomalies"]) == 0
    code = main(["train", str(root / "normal.csv"), "--out", str(root / "model"), "--max-epochs", "8", "--quiet"])
    assert code == 0
    return root


def test_simulate_writes_labels(files):
    faults = pd.read_csv(files / "faults.csv")
    assert list(faults.columns) == ["timestamp", "temp_in", "temp_out", "pressure", "anomaly"]
    assert faults["anomaly"].sum() > 0
    assert "anomaly" not in pd.read_csv(files / "normal.csv") or pd.read_csv(files / "normal.csv")["anomaly"].sum() == 0


def test_train_prints_summary(tmp_path, capsys):
    plant_frame(rows=600).to_csv(tmp_path / "n.csv", index=False)
    assert main(["train", str(tmp_path / "n.csv"), "--registry", str(tmp_path / "reg"), "--name", "pump",
                 "--max-epochs", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "v0001" in out and "rows per split" in out and "threshold" in out and "false alerts" in out
    assert (tmp_path / "reg" / "pump" / "CURRENT").read_text().strip() == "v0001"
    assert "pump/v0001 (now CURRENT)\n" in out  # (it did not say so: a docs walk)


def test_train_refuses_an_out_that_is_not_a_bundle_before_it_trains(tmp_path, capsys, monkeypatch):
    """``--out data.csv`` trained for minutes, then said the file is no bundle (found by a README walk)."""
    import sensorguard.training.train as train

    plant_frame(rows=600).to_csv(tmp_path / "n.csv", index=False)
    monkeypatch.setattr(train, "train_bundle", lambda *a, **k: pytest.fail("trained before checking --out"))
    assert main(["train", str(tmp_path / "n.csv"), "--out", str(tmp_path / "n.csv"), "--quiet"]) == 1
    assert "exists and is not a bundle directory" in capsys.readouterr().err
    assert len(pd.read_csv(tmp_path / "n.csv")) == 600


def test_train_drift_records_the_rule_and_calibrate_keeps_or_drops_it(tmp_path, capsys):
    """calibrate keeps the model's drift rule and promise unless told otherwise (they were dropped
    for the defaults: a recalibration turned drift off)."""
    from sensorguard.service.bundle_loading import load_bundle

    plant_frame(rows=600).to_csv(tmp_path / "n.csv", index=False)
    plant_frame(rows=3000, seed=5).to_csv(tmp_path / "held.csv", index=False)  # (300 rows: too few for a line)
    model = tmp_path / "m"
    assert main(["train", str(tmp_path / "n.csv"), "--out", str(model), "--max-epochs", "2", "--quiet", "--drift",
                 "--false-alerts-per-day", "3"]) == 0
    rule = load_bundle(model).drift_rule
    assert rule is not None and rule.baseline < 0 and rule.cap == 1.5  # normal scores sit below the line
    capsys.readouterr()
    assert main(["calibrate", str(model), str(tmp_path / "held.csv")]) == 0
    assert "kept the model's own --false-alerts-per-day 3 --drift" in capsys.readouterr().out
    assert load_bundle(model).drift_rule is not None and load_bundle(model).promise["false_alerts_per_day"] == 3
    assert main(["calibrate", str(model), str(tmp_path / "held.csv"), "--no-drift", "--false-alerts-per-day", "2"]) == 0
    assert load_bundle(model).promise == {"drift": False, "false_alerts_per_day": 2.0}
    assert main(["calibrate", str(model), str(tmp_path / "held.csv"), "--drift"]) == 0
    assert load_bundle(model).promise == {"drift": True, "false_alerts_per_day": 2.0}
    # the advanced window rate is kept too, with its method
    assert main(["calibrate", str(model), str(tmp_path / "held.csv"), "--false-alarm-rate", "0.02",
                 "--threshold-method", "quantile", "--no-drift"]) == 0
    capsys.readouterr()
    assert main(["calibrate", str(model), str(tmp_path / "held.csv")]) == 0
    assert "kept the model's own --false-alarm-rate 0.02 --threshold-method quantile" in capsys.readouterr().out
    assert load_bundle(model).promise == {"drift": False, "false_alarm_rate": 0.02, "threshold_method": "quantile"}
    # held-out "normal" rows a label column marks as faults: they set the line, and calibrate said
    # nothing (a line 25x higher; found in a README walk), then only a note while it wrote the line
    # in place (24x higher, every fault missed: a walk). Refused; --label-column leaves them out
    held = plant_frame(rows=300, seed=5)
    held["anomaly"] = (np.arange(300) >= 250).astype(int)
    held.to_csv(tmp_path / "marked.csv", index=False)
    line = load_bundle(model).threshold_
    assert main(["calibrate", str(model), str(tmp_path / "marked.csv")]) == 1
    said = ("not recalibrated: anomaly marks 50 rows as anomalous (a label-like column): give --label-column "
            "anomaly to leave them out, or --force to take them as normal")
    err = capsys.readouterr().err  # (and no note above it that they were taken as normal: nothing was; a walk)
    assert said in err and "taken as normal" not in err and load_bundle(model).threshold_ == line
    assert main(["calibrate", str(model), str(tmp_path / "marked.csv"), "--label-column", "anomaly"]) == 0
    assert "marks" not in capsys.readouterr().err
    assert main(["calibrate", str(model), str(tmp_path / "marked.csv"), "--force"]) == 0
    assert "note: anomaly marks 50 rows: they were taken as normal data" in capsys.readouterr().err


def test_score_and_evaluate_are_the_python_functions_of_training_offline(files, tmp_path, capsys, monkeypatch):
    """The verbs only parse and print: the same numbers come from training.offline in Python."""

    from sensorguard.service.bundle_loading import load_bundle
    from sensorguard.training.data import load_frame
    from sensorguard.training.offline import score_data, score_table
    from sensorguard.training.verdict import evaluate_scores

    out = tmp_path / "scores.csv"
    assert main(["score", str(files / "model"), str(files / "faults.csv"), "--out", str(out)]) == 0
    bundle = load_bundle(files / "model")
    scored = score_data(bundle, load_frame([files / "faults.csv"], exclude=["anomaly"]))
    expected = score_table(bundle, scored)
    written = pd.read_csv(out)
    assert list(written.columns) == list(expected.columns)
    np.testing.assert_allclose(written["score"], expected["score"], rtol=1e-5)  # CSV keeps 6 digits
    assert (written["alert"] == expected["alert"]).all() and written["alert"].sum() > 0
    capsys.readouterr()
    # --out -: the table on standard output, the summary on standard error (a file named "-" was written,
    # and --out /dev/stdout had the summary in the CSV: a walk)
    monkeypatch.chdir(tmp_path)
    assert main(["score", str(files / "model"), str(files / "faults.csv"), "--out", "-"]) == 0
    piped = capsys.readouterr()
    assert pd.read_csv(io.StringIO(piped.out)).shape == written.shape and not (tmp_path / "-").exists()
    assert piped.err.startswith("scored ") and "-> standard output" in piped.err
    assert main(["evaluate", str(files / "model"), str(files / "faults.csv"), "--label-column", "anomaly",
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    labeled = score_data(bundle, load_frame([files / "faults.csv"], label_column="anomaly"))
    result = evaluate_scores(bundle, labeled, labeled.data.labels["anomaly"])
    assert printed["alert"]["f1"] == pytest.approx(result["alert"]["f1"])
    assert printed["rows"] == result["rows"] > 0
    assert result["f1_best"]["threshold"] == pytest.approx(result["f1_best"]["score"] * bundle.threshold_)
    from dataclasses import replace

    from sensorguard.service.drift import DriftRule

    drifting = replace(bundle, calibration={**bundle.calibration, "drift": DriftRule(baseline=-1.0).to_dict()})
    widened = evaluate_scores(drifting, score_data(drifting, labeled.data), labeled.data.labels["anomaly"])
    assert widened["f1_best"]["threshold"] is None  # each row's line differs: no one raw threshold to name


def test_score_one_row_per_input_row(files, tmp_path):
    out = tmp_path / "scores.csv"
    assert main(["score", str(files / "model"), str(files / "faults.csv"), "--out", str(out)]) == 0
    scores = pd.read_csv(out)
    source = pd.read_csv(files / "faults.csv")
    assert len(scores) == len(source)
    assert list(scores.columns[:5]) == ["timestamp", "score", "anomaly", "alert", "alert_id"]
    assert [c for c in scores.columns[5:]] == ["level", "error_temp_in", "error_temp_out", "error_pressure",
                                               "sensor_faults"]
    assert ((scores["alert"] == 1) == scores["alert_id"].notna()).all()  # (one machine: @<epoch ms of the raise>)
    assert scores["alert_id"].dropna().str.fullmatch(r"@\d{13}").all() and scores["alert_id"].notna().any()
    window = json.loads((files / "model" / "bundle.json").read_text())["window"]
    assert scores["score"].iloc[: window - 1].isna().all() and scores["score"].iloc[window - 1 :].notna().all()
    assert ((scores["score"] >= 1).astype(int) == scores["anomaly"]).all()
    # the level term is the score's other part: never above it where both are (no drift rule here)
    both = scores["score"].notna() & scores["level"].notna()
    assert both.any() and (scores["level"][both] <= scores["score"][both] + 1e-12).all()
    assert (scores["level"][both] == scores["score"][both]).any()  # and it decides some rows of this fault file
    assert scores["alert"].sum() > 0 and scores["anomaly"].sum() > scores["alert"].sum() * 0.1


def test_evaluate_reports_both_columns(files, capsys):
    assert main(["evaluate", str(files / "model"), str(files / "faults.csv"), "--label-column", "anomaly",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for kind in ("anomaly", "alert"):
        for key in ("precision", "recall", "f1", "false_alarm_rate", "missed_alarm_rate", "event_recall",
                    "mean_detection_delay_s"):
            assert key in result[kind]
    assert result["anomaly"]["event_recall"] > 0.5
    # windows ending just after a fault still hold faulty rows: point-wise FPs of up to one window per event
    assert result["anomaly"]["false_alarm_rate"] < 0.12
    assert main(["evaluate", str(files / "model"), str(files / "faults.csv"), "--label-column", "anomaly"]) == 0
    said = capsys.readouterr()
    text = said.out
    assert "false-alarm rate" in text and "the promise was calibrated for" not in said.err
    # other raise rules than the promise's: said (17 raised read as "above" the promise: a walk)
    assert main(["evaluate", str(files / "model"), str(files / "faults.csv"), "--label-column", "anomaly",
                 "--raise-after", "1"]) == 0
    assert "calibrated for alerts raised after 3 windows in a row; with --raise-after 1" in capsys.readouterr().err
    # the delay in a unit a reader uses, not 5400.000 seconds (a walk)
    from sensorguard.training.verdict import delay_words

    (delay,) = [line for line in text.splitlines() if line.startswith("mean delay")]
    assert delay_words(result["alert"]["mean_detection_delay_s"]) in delay
    assert [delay_words(s) for s in (42.0, 750.0, 12240.0, 5400.0, 2.5 * 86400, 89.0, 119.96, 7197.0, 172680.0)] == [
        "42 s", "12.5 min", "3.4 h", "90 min", "2.5 days", "89 s", "2 min", "2 h", "2 days"]
    # normal data alone: recall and the like are undefined, not 0.000 (a detector that missed everything)
    clean = pd.read_csv(files / "faults.csv").assign(anomaly=0)
    clean.to_csv(files / "clean.csv", index=False)
    assert main(["evaluate", str(files / "model"), str(files / "clean.csv"), "--label-column", "anomaly"]) == 0
    table = {line[:20].strip(): line[20:].split() for line in capsys.readouterr().out.splitlines()[2:9]}
    for key in ("recall", "F1", "missed-alarm rate", "event recall"):
        assert table[key] == ["-", "-"], (key, table)
    assert all(cell != "-" for cell in table["false-alarm rate"])


def test_evaluate_counts_the_false_alerts_beside_the_promise(files, tmp_path, capsys):
    """evaluate reported rows only: whether the promise (false alerts per asset per day) held had to
    be counted by hand from score's alert column (a walk). Its count is that hand count."""
    clean = pd.read_csv(files / "faults.csv")
    clean["temp_in"] += np.where(np.arange(len(clean)) % 400 < 40, 8.0, 0.0)  # excursions on rows labelled normal
    clean.to_csv(tmp_path / "f.csv", index=False)
    assert main(["score", str(files / "model"), str(tmp_path / "f.csv"), "--out", str(tmp_path / "s.csv")]) == 0
    scored = pd.read_csv(tmp_path / "s.csv")
    on = scored["alert"].fillna(0).to_numpy() > 0
    starts = on & ~np.r_[False, on[:-1]]
    by_hand = int((starts & (clean["anomaly"].to_numpy() == 0)).sum())
    assert by_hand >= 3  # the excursions alert
    capsys.readouterr()
    assert main(["evaluate", str(files / "model"), str(tmp_path / "f.csv"), "--label-column", "anomaly",
                 "--json"]) == 0
    check = json.loads(capsys.readouterr().out)["false_alerts"]
    normal_rows = int((clean["anomaly"] == 0).sum()) - 31  # less the rows before the first full window
    period = pd.to_datetime(clean["timestamp"]).diff().median().total_seconds()
    assert check["raised"] == by_hand and check["normal_days"] == pytest.approx(normal_rows * period / 86400, rel=0.01)
    assert check["per_day"] == pytest.approx(by_hand / check["normal_days"])
    assert check["promised_per_day"] == 1.0 and len(check["promised_ci95"]) == 2
    assert main(["evaluate", str(files / "model"), str(tmp_path / "f.csv"), "--label-column", "anomaly"]) == 0
    out = capsys.readouterr().out
    assert f"false alerts        {by_hand} raised on normal rows in " in out
    assert "per asset per day (95% CI " in out and "; promised 1 (95% CI" in out and out.count(": above it\n") == 1


def test_train_says_when_its_out_replaced_another_bundle(tmp_path, capsys):
    """``train small.csv --out model_de`` replaced another 6-channel model there, unsaid (a walk)."""
    plant_frame(rows=400).to_csv(tmp_path / "n.csv", index=False)
    argv = ["train", str(tmp_path / "n.csv"), "--out", str(tmp_path / "m"), "--max-epochs", "1", "--quiet"]
    assert main(argv) == 0 and "replaced" not in capsys.readouterr().out
    assert main(argv) == 0 and "(it replaced the bundle there; --registry keeps versions)" in capsys.readouterr().out


def test_calibrate_changes_threshold(files, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(files / "model", model)
    meta = json.loads((model / "bundle.json").read_text())
    before = meta["threshold"]
    assert main(["calibrate", str(model), str(files / "normal.csv"), "--threshold-method", "quantile",
                 "--false-alarm-rate", "0.2"]) == 0
    after = json.loads((model / "bundle.json").read_text())
    assert after["threshold"] < before and after["calibration"]["method"] == "quantile"
    said = capsys.readouterr().out
    assert "->" in said  # and the level term's lines, which move with the calibration's factor (a walk: unsaid)
    was, now = meta["level"]["calibrated"], after["level"]["calibrated"]
    assert f"level term's lines x {was:.4g} -> x {now:.4g}" in said


def test_calibrate_refuses_data_in_other_units_unless_forced(files, tmp_path, capsys):
    """One channel in kW where the model learned W: the line went from 0.0044 to 4.5 with exit 0,
    and the model missed every fault it had caught (a walk). Refused in one line naming it."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(files / "model", model)
    before = json.loads((model / "bundle.json").read_text())["threshold"]
    frame = pd.read_csv(files / "normal.csv")
    frame["pressure"] = frame["pressure"] / 1000  # other units, inside its sensor limits
    frame.to_csv(tmp_path / "kilo.csv", index=False)
    assert main(["calibrate", str(model), str(tmp_path / "kilo.csv")]) == 1
    said = capsys.readouterr().err
    assert "not recalibrated: the median window of these data scores" in said and "--force" in said
    assert json.loads((model / "bundle.json").read_text())["threshold"] == before  # untouched
    assert main(["calibrate", str(model), str(tmp_path / "kilo.csv"), "--force"]) == 0
    assert json.loads((model / "bundle.json").read_text())["threshold"] != before
    # a sensor out of range for half the rows is a sensor fault (held, and its windows scored without
    # it, as calibrate scores them), not data in other units
    stuck = pd.read_csv(files / "normal.csv")
    stuck.loc[: len(stuck) // 2, "temp_in"] = 500.0
    stuck.to_csv(tmp_path / "stuck.csv", index=False)
    assert main(["calibrate", str(model), str(tmp_path / "stuck.csv")]) == 0, capsys.readouterr().err


def test_calibrate_refuses_a_line_too_few_rows_would_raise_far_unless_forced(files, tmp_path, capsys):
    """The README's recalibration on 10,000 rows that counted as 11 independent samples raised the line
    7.7x, and the model caught a third fewer fault rows, in silence (a walk). Refused, saying why."""
    model = tmp_path / "model"
    shutil.copytree(files / "model", model)
    before = json.loads((model / "bundle.json").read_text())["threshold"]
    assert main(["simulate", "--out", str(tmp_path / "short.csv"), "--rows", "1500", "--channels", "3",
                 "--seed", "3"]) == 0
    capsys.readouterr()
    assert main(["calibrate", str(model), str(tmp_path / "short.csv")]) == 1
    said = capsys.readouterr().err
    assert "not recalibrated: these" in said and "independent samples" in said and "--force" in said, said
    assert json.loads((model / "bundle.json").read_text())["threshold"] == before  # untouched
    assert main(["calibrate", str(model), str(tmp_path / "short.csv"), "--force"]) == 0
    assert json.loads((model / "bundle.json").read_text())["threshold"] > 2 * before
    # forced, the rise is still said, with what would cause it (a walk: a fault under a label column of a
    # name not known, 'Störung', taken as normal raised the line 47x, unsaid)
    said = capsys.readouterr().err
    assert "warning: the new line is" in said and "x the current one" in said and "--label-column" in said, said
    # given --label-column, it is not advised again
    shutil.copytree(files / "model", tmp_path / "labelled", dirs_exist_ok=True)
    assert main(["calibrate", str(tmp_path / "labelled"), str(tmp_path / "short.csv"), "--force",
                 "--label-column", "anomaly"]) == 0
    said = capsys.readouterr().err
    assert "warning: the new line is" in said and "give --label-column" not in said, said


def test_report_writes_pngs(files, tmp_path, capsys):
    assert main(["report", str(files / "model"), str(files / "faults.csv"), "--out", str(tmp_path / "r"),
                 "--label-column", "anomaly"]) == 0
    pngs = sorted(p.name for p in (tmp_path / "r").glob("*.png"))
    assert pngs == ["calibration.png", "reconstructions.png", "scores.png"]
    assert "marks" not in capsys.readouterr().err
    # without the flag the labels were not drawn, and nothing said the file had them (a report walk)
    assert main(["report", str(files / "model"), str(files / "faults.csv"), "--out", str(tmp_path / "r")]) == 0
    marked = int((pd.read_csv(files / "faults.csv")["anomaly"] > 0).sum())
    assert (f"note: anomaly marks {marked} rows as anomalous: evaluate and report take them as labels with "
            "--label-column anomaly") in capsys.readouterr().err


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "sensorguard", *args], capture_output=True, text=True, timeout=120)


def test_bad_inputs_are_one_line_without_traceback(files, tmp_path):
    (tmp_path / "text.csv").write_text("timestamp,name\n2026-01-01T00:00:00Z,a\n2026-01-01T00:00:01Z,b\n")
    plant_frame(rows=20).to_csv(tmp_path / "short.csv", index=False)
    other = plant_frame(rows=200)
    other.columns = ["timestamp", "x", "y", "z"]
    other.to_csv(tmp_path / "other.csv", index=False)
    (tmp_path / "dates.csv").write_text("timestamp,a\nnot-a-date,1\nnever,2\n")
    (tmp_path / "header.csv").write_text("timestamp,a,b\n")
    (tmp_path / "folder").mkdir()
    model = str(files / "model")
    cases = [
        (["train", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "m")], "file not found"),
        (["train", str(tmp_path / "text.csv"), "--out", str(tmp_path / "m")], "no numeric"),
        (["train", str(tmp_path / "short.csv"), "--out", str(tmp_path / "m")], "too little data"),
        (["train", str(tmp_path / "dates.csv"), "--out", str(tmp_path / "m")], "unparseable timestamps"),
        (["score", model, str(tmp_path / "other.csv"), "--out", str(tmp_path / "s.csv")], "channels not found"),
        (["score", model, str(tmp_path / "short.csv"), "--out", str(tmp_path / "s.csv")], "channels not found"),
        (["score", str(tmp_path), str(files / "faults.csv"), "--out", str(tmp_path / "s.csv")], "bundle.json"),
        (["train", str(files / "normal.csv"), "--registry", str(tmp_path), "--name", "../x"], "invalid model name"),
        (["train", str(files / "normal.csv")], "--out"),
        (["train", str(tmp_path / "header.csv"), "--out", str(tmp_path / "m")], "no data rows"),  # a warning too
        (["train", str(tmp_path / "folder"), "--out", str(tmp_path / "m")], "is a directory"),
        (["models", "list", "--registry", str(tmp_path / "none"), "--name", "x"], "no versions"),
    ]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:  # each process spends seconds importing torch: two at a time
        results = list(pool.map(lambda case: run_cli(*case[0]), cases))
    for (args, message), result in zip(cases, results, strict=True):
        assert result.returncode == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr
        lines = [ln for ln in result.stderr.splitlines() if ln.strip() and "Seed set" not in ln]
        assert len(lines) == 1 and message in lines[0], (args, result.stderr)
        assert not result.stdout.strip() or args[0] != "models", result.stdout  # no table header before it


def test_fewer_rows_than_one_window(files, tmp_path):
    frame = pd.read_csv(files / "faults.csv").iloc[:10]
    frame.to_csv(tmp_path / "ten.csv", index=False)
    result = run_cli("score", str(files / "model"), str(tmp_path / "ten.csv"), "--out", str(tmp_path / "s.csv"))
    assert result.returncode == 1 and "fewer than one window" in result.stderr


def test_bad_arguments_are_usage_errors():
    result = run_cli("train", "x.csv", "--out", "m", "--false-alarm-rate", "1.5")
    assert result.returncode == 2 and "(0, 1)" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("train", "x.csv", "--out", "m", "--window", "-3")
    assert result.returncode == 2 and "positive integer" in result.stderr


@pytest.mark.parametrize("flag, text, ok", [
    ("--rows", "7", True), ("--rows", "0", False), ("--rows", "2.5", False),
    ("--duration", "0.5", True), ("--duration", "nan", False), ("--duration", "inf", False),
    ("--duration", "0", False), ("--false-alarm-rate", "0.01", True), ("--false-alarm-rate", "1", False),
    ("--clear-level", "1", True), ("--clear-level", "1.5", False), ("--stale-after", "0", False),
    # accepted before and did nothing (nan, negative: denoising off; "noise": NaN in bundle.json, not JSON)
    ("--noise", "0.05", True), ("--noise", "nan", False), ("--noise", "-1", False),
    ("--seed", "7", True), ("--seed", "-1", False),  # numpy's message named no flag
    ("--channels", "a,b", True), ("--channels", "a,a", False),  # trained, and then nothing could load it
])
def test_number_arguments_accept_their_range_only(flag, text, ok, capsys):
    verb = {"--rows": ["simulate", "--out", "x.csv"], "--duration": ["demo"],
            "--false-alarm-rate": ["train", "x.csv", "--out", "m"], "--clear-level": ["score", "b", "f", "--out", "o"],
            "--stale-after": ["evaluate", "b", "f", "--label-column", "y"], "--noise": ["train", "x.csv", "--out", "m"],
            "--seed": ["train", "x.csv", "--out", "m"], "--channels": ["train", "x.csv", "--out", "m"]}[flag]
    parser = build_parser()
    if ok:
        assert parser.parse_args([*verb, flag, text]).verb == verb[0]
    else:
        with pytest.raises(SystemExit):
            parser.parse_args([*verb, flag, text])
        assert "expected" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["report", "m", "--out", ""], ["score", "m", "f.csv", "--out", ""], ["simulate", "--out", ""],
    ["train", "", "--out", "m"], ["demo", "--workdir", ""], ["models", "list", "--registry", "", "--name", "x"],
])
def test_an_empty_path_is_refused_naming_its_argument(argv, tmp_path, monkeypatch, capsys):
    """An empty path is the working folder to pathlib: ``report --out ''`` wrote its plots there and
    ``score --out ''`` said ".: is a directory" (a walk)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "got an empty one" in err and "argument " in err
    assert not list(tmp_path.iterdir())


def test_an_optional_positional_after_the_options_is_taken(capsys):
    """A walk: ``models show --registry R --name N v0001`` said "unrecognized arguments: v0001"
    (argparse takes a verb's positionals in one run, before the options); ``calibrate B --force
    DATA`` dropped its data the same way. What is left after the options fills such a positional."""
    parser = build_parser()
    args = parser.parse_args(["models", "show", "--registry", "r", "--name", "n", "v0001"])
    assert (args.action, args.version) == ("show", "v0001")
    assert parser.parse_args(["calibrate", "b", "--force", "x.csv", "y.csv"]).data == ["x.csv", "y.csv"]
    assert parser.parse_args(["report", "b", "--out", "o", "x.csv"]).data == "x.csv"
    for extra in (["v0001", "v0002"], ["--bogus"]):  # more than it takes, or an unknown flag: refused as before
        with pytest.raises(SystemExit):
            parser.parse_args(["models", "show", "--registry", "r", "--name", "n", *extra])
        assert "unrecognized arguments: " + " ".join(extra) in capsys.readouterr().err
    with pytest.raises(SystemExit):  # said by the verb, pointing at its own help (a walk: at the verbs' list)
        parser.parse_args(["score", "m", "a.csv", "b.csv", "--out", "o.csv"])
    assert capsys.readouterr().err == ("sensorguard score: error: unrecognized arguments: b.csv "
                                       "(see sensorguard score --help)\n")


def test_bundle_saved_by_library_scores_via_cli(tiny_bundle, tmp_path):
    save_bundle(tiny_bundle, tmp_path / "b")
    frame = plant_frame(rows=100)
    frame.columns = ["timestamp", "a", "b", "c"]
    frame.to_csv(tmp_path / "d.csv", index=False)
    assert main(["score", str(tmp_path / "b"), str(tmp_path / "d.csv"), "--out", str(tmp_path / "s.csv")]) == 0
    assert np.isfinite(pd.read_csv(tmp_path / "s.csv")["score"].iloc[15:]).all()


@pytest.mark.parametrize("argv", [["models", "prune", "--registry", "r", "--name", "n", "--keep", "0"],
                                  ["train"], ["bogus"], ["score", "b", "f", "--out", "o", "--raise-after", "x"]])
def test_a_bad_argument_is_one_line(argv, capsys):
    """argparse printed its usage block above the error: five lines for one mistake (found by review)."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "error:" in err and "--help" in err


def test_a_subclass_of_a_user_error_is_one_line_not_an_internal_error():
    """pandas' OutOfBoundsDatetime (a ValueError: one garbage stamp) and train --drift's
    NoDriftBaseline were matched by exact class name and reported as internal errors."""
    from pandas.errors import OutOfBoundsDatetime

    from sensorguard.cli_errors import is_user_error

    assert is_user_error(OutOfBoundsDatetime("Out of bounds nanosecond timestamp"))
    assert not is_user_error(KeyError("a bug"))


def test_a_file_where_a_folder_belongs_is_said_so(tmp_path, capsys):
    """A walk: ``demo --workdir`` naming a file said "File exists", ``train --registry`` naming one
    "Not a directory"; a folder made twice (EEXIST of a folder) keeps the OS's words."""
    import errno

    from sensorguard.cli_errors import _one_line

    afile = tmp_path / "n.csv"
    afile.write_text("")
    assert main(["demo", "--workdir", str(afile), "--duration", "1"]) == 1
    assert f"{afile}: is a file, not a directory: give a folder path" in capsys.readouterr().err
    assert _one_line(NotADirectoryError(errno.ENOTDIR, "Not a directory", f"{afile}/pump")) == (
        f"{afile}/pump: a part of this path is a file, not a directory: give a folder path")
    assert _one_line(FileExistsError(errno.EEXIST, "File exists", str(tmp_path))) == f"{tmp_path}: File exists"


def test_options_that_conflict_or_would_do_nothing_are_one_line(files, tmp_path, capsys):
    """Each was accepted and silently dropped, or overwrote data (found by review)."""
    import torch

    normal, model = str(files / "normal.csv"), str(files / "model")
    columns = list(pd.read_csv(normal).columns)
    cases = [
        (["score", model, normal, "--out", normal], "is the input file"),  # the readings were replaced
        (["calibrate", model, normal, "--since", "7d"], "--since goes with --recorded"),
        (["train", normal, "--out", str(tmp_path / "m"), "--false-alarm-rate", "0.01", "--false-alerts-per-day", "2"],
         "not both"),
        (["train", normal, "--out", str(tmp_path / "m"), "--threshold-method", "quantile"],
         "--threshold-method goes with --false-alarm-rate"),
        (["train", normal, "--out", str(tmp_path / "m"), "--name", "pump"], "--name goes with --registry"),
        (["train", normal, "--out", str(tmp_path / "m"), "--strategy", "ddp"], "--devices 2 or more"),
        (["train", normal, "--out", str(tmp_path / "m"), "--device", "toaster"], "not a torch device"),
        (["train", normal, "--out", str(tmp_path / "m"), "--channels", "temp_in,pressure", "--exclude", "pressure"],
         "both --channels and --exclude"),
        (["train", normal, "--out", str(tmp_path / "m"), "--window", "15", "--max-epochs", "1", "--quiet"],
         "must be even"),  # it named 2**depth, an option nobody can set
    ]
    if not torch.cuda.is_available():
        cases.append((["train", normal, "--out", str(tmp_path / "m"), "--device", "cuda"], "no CUDA GPU"))
    for argv, message in cases:
        assert main(argv) == 1, argv
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and "Seed set" not in ln]
        assert len(err) == 1 and message in err[0] and "internal error" not in err[0], (argv, err)
    assert list(pd.read_csv(normal).columns) == columns  # still the readings
    assert not (tmp_path / "m").exists()


def test_columns_without_numbers_are_named_and_parquet_with_integer_names_loads(tmp_path):
    from sensorguard.training.data import load_frame

    frame = plant_frame(rows=300)
    frame["blank"] = np.nan
    frame["words"] = "off"
    frame.to_csv(tmp_path / "d.csv", index=False)
    data = load_frame([tmp_path / "d.csv"])
    assert "blank" not in data.channels and "words" not in data.channels
    assert any("blank (0 % numbers)" in n and "words (0 % numbers)" in n for n in data.notes), data.notes
    stamps = pd.DatetimeIndex(pd.to_datetime(plant_frame(rows=300)["timestamp"]), name="timestamp")
    values = plant_frame(rows=300).iloc[:, 1:].to_numpy()  # a frame built from an array: columns 0, 1, 2
    pd.DataFrame(values, index=stamps).to_parquet(tmp_path / "a.parquet")
    assert load_frame([tmp_path / "a.parquet"]).channels == ("0", "1", "2")


def test_a_channel_given_as_the_time_column_and_since_matching_nothing_are_said(files, tmp_path, capsys):
    """score --time-column temp_in said "5 usable rows, fewer than one window"; retrain --since
    that kept no row said "0 rows ... give at least 320", of data just given (found by review)."""
    from sensorguard.training.retrain import parse_since
    from sensorguard.training.tables import DataError

    assert main(["score", str(files / "model"), str(files / "faults.csv"), "--out", str(tmp_path / "s.csv"),
                 "--time-column", "temp_in"]) == 1
    assert "temp_in is the time column and also a channel" in capsys.readouterr().err
    from sensorguard.service.bundle_loading import load_bundle
    from sensorguard.service.registry import publish

    publish(load_bundle(files / "model"), tmp_path / "reg", "pump")  # (retrain needs a model to retrain)
    assert main(["retrain", "--registry", str(tmp_path / "reg"), "--name", "pump", "--data", str(files / "normal.csv"),
                 "--since", "2d"]) == 1
    assert "none of the 4000 rows is that recent" in capsys.readouterr().err
    for text in ("nan", "inf"):
        with pytest.raises(DataError, match="--since"):
            parse_since(text)


def test_a_compressed_csv_loads(tmp_path):
    """The delimiter was guessed from the compressed bytes: "no timestamp column found" (review)."""
    from sensorguard.training.data import load_frame

    frame = plant_frame(rows=300)
    frame.to_csv(tmp_path / "d.csv.gz", index=False)
    frame.to_csv(tmp_path / "d.csv", index=False)
    assert load_frame([tmp_path / "d.csv.gz"]).channels == load_frame([tmp_path / "d.csv"]).channels


def test_simulate_starts_where_it_is_told(tmp_path, capsys):
    """Found by a walk through the README: every simulated file began on 2026-01-01, so data made to
    calibrate a model on unseen rows overlapped its training span and calibrate warned about it."""
    assert main(["simulate", "--out", str(tmp_path / "later.csv"), "--rows", "3", "--start", "2026-02-01"]) == 0
    stamps = pd.read_csv(tmp_path / "later.csv")["timestamp"]
    assert list(pd.to_datetime(stamps)) == list(pd.date_range("2026-02-01", periods=3, freq="s", tz="UTC"))
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "--out", str(tmp_path / "x.csv"), "--start", "soon"])
    assert exit_info.value.code == 2 and "expected a date or time" in capsys.readouterr().err


def test_simulate_to_standard_output(tmp_path, monkeypatch, capsys):
    """`--out -` wrote a file named "-" (a walk); `score --out -` already meant standard output."""
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", "--out", "-", "--rows", "4", "--channels", "2"]) == 0
    said = capsys.readouterr()
    assert pd.read_csv(io.StringIO(said.out)).shape == (4, 4) and "to standard output" in said.err
    assert not (tmp_path / "-").exists()


def test_a_shelving_past_the_daemons_limit_is_refused_naming_the_flag(capsys):
    """The daemon refused it as "for_s must be from 0 to 604800 seconds": a field the user never typed."""
    with pytest.raises(SystemExit) as stop:
        main(["shelve", "pump-1", "--for", "30d", "--broker", "mqtt://127.0.0.1:1"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "argument --for: at most 7d: a shelved alert must come back by itself (ISA-18.2), got '30d'" in err


@pytest.mark.parametrize(("argv", "says"), [
    (["maintenance", "start", "pump-1", "--until", "0"], "--until: expected a duration over 0"),
    (["maintenance", "start", "pump-1", "--until", "1000000d"], "--until: a maintenance must end before the year 2200"),
    (["shelve", "pump-1", "--for", "1e400"], "--for: expected a finite duration, got '1e400'"),
])
def test_a_duration_the_daemon_would_refuse_is_refused_here_naming_the_flag(argv, says, capsys):
    """``--until 0`` and ``--until 1000000d`` passed, and the daemon answered "until must be a future
    time in epoch seconds, before 2200", a field never typed; ``--for 1e400`` said "at least 0" (a walk)."""
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--broker", "mqtt://127.0.0.1:1"])
    assert stop.value.code == 2 and says in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["shelve", "pump-1", "--for", "-1h"],
                                  ["maintenance", "start", "pump-1", "--until", "-30m"]])
def test_a_negative_duration_is_named_not_taken_for_an_option(argv, capsys):
    """argparse read ``-1h`` as the next option and answered "expected one argument"."""
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--broker", "mqtt://127.0.0.1:1"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "expected a duration of at least 0, got '-" in err and "expected one argument" not in err


def test_the_output_format_follows_the_suffix_and_an_unknown_one_is_said(tmp_path, capsys):
    """``--out scores.txt`` was a CSV in silence, ``--out scores.xlsx`` a CSV that Excel refused."""
    frames = []
    for name, sep in (("a.csv", ","), ("a.tsv", "\t"), ("a.csv.gz", ",")):
        assert main(["simulate", "--out", str(tmp_path / name), "--rows", "5", "--channels", "2"]) == 0
        frames.append(pd.read_csv(tmp_path / name, sep=sep))
    assert frames[0].shape[0] == 5 and all(f.equals(frames[0]) for f in frames)
    assert "note" not in capsys.readouterr().err
    assert main(["simulate", "--out", str(tmp_path / "a.txt"), "--rows", "5", "--channels", "2"]) == 0
    assert pd.read_csv(tmp_path / "a.txt").equals(frames[0])
    assert "a.txt: written as CSV (a .csv, .tsv or .parquet suffix chooses the format)" in capsys.readouterr().err
    assert main(["simulate", "--out", str(tmp_path / "a.xlsx"), "--rows", "5", "--channels", "2"]) == 1
    err = capsys.readouterr().err
    assert "cannot write .xlsx files; give a .csv, .tsv or .parquet path" in err and "Traceback" not in err
    assert not (tmp_path / "a.xlsx").exists()
    # a directory: one line, without first saying it would be written as CSV (found in a walk)
    assert main(["simulate", "--out", str(tmp_path), "--rows", "5", "--channels", "2"]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path}: is a directory; give a file path" in err and "written as CSV" not in err, err
    # a name ending in a slash is a directory that does not exist yet: it wrote a file so named (a walk)
    assert main(["simulate", "--out", f"{tmp_path}/noext/", "--rows", "5", "--channels", "2"]) == 1
    assert "noext/: names a directory; give a file path" in capsys.readouterr().err
    assert not (tmp_path / "noext").exists()
    (tmp_path / "afile").write_text("")  # a file where its directory should be: pandas' own words (a walk)
    assert main(["simulate", "--out", str(tmp_path / "afile" / "x.csv"), "--rows", "5", "--channels", "2"]) == 1
    assert f"{tmp_path / 'afile'} is a file, not a directory" in capsys.readouterr().err


def test_a_reader_that_stops_early_ends_the_command_quietly(files):
    """``evaluate --json | head -c 10`` said "error: Broken pipe" and exited 1."""
    command = [sys.executable, "-m", "sensorguard", "evaluate", str(files / "model"), str(files / "faults.csv"),
               "--label-column", "anomaly", "--json"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # gone before it writes a byte
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == ""


def test_a_broken_pipe_that_is_not_standard_output_is_an_error(monkeypatch, capsys):
    """Only a closed stdout is the quiet case; a FIFO or a socket that broke must still be said (a review)."""
    import sensorguard.cli as cli

    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setitem(cli.COMMANDS, "simulate", broken)
    assert main(["simulate", "--out", "x.csv"]) == 1
    assert "sensorguard simulate: error: Broken pipe" in capsys.readouterr().err


def test_sizes_past_this_machines_memory_and_bad_ports_are_one_line_before_any_work(tmp_path, capsys):
    """``simulate --rows 1e11`` and ``demo --duration 1e9`` said "internal error: Unable to allocate
    ... GiB" (the demo after training); ``demo --metrics-port 70000`` served on a random port;
    ``simulate --rows 10 --anomalies`` wrote no fault and said only "0 rows"; ``demo --train-rows 5``
    said it trained on 5 rows (a README walk)."""
    from sensorguard.demo import history_rows

    assert main(["simulate", "--out", str(tmp_path / "s.csv"), "--rows", "100000000000"]) == 1
    err = capsys.readouterr().err
    assert "100,000,000,000 rows would need about" in err and "write fewer --rows" in err
    assert not (tmp_path / "s.csv").exists()
    assert main(["demo", "--duration", "1e9", "--workdir", str(tmp_path / "d")]) == 1
    assert "give a shorter --duration" in capsys.readouterr().err and not (tmp_path / "d").exists()
    assert main(["demo", "--train-rows", "100000000000", "--workdir", str(tmp_path / "d")]) == 1
    assert "give fewer --train-rows" in capsys.readouterr().err and not (tmp_path / "d").exists()
    with pytest.raises(SystemExit):
        main(["demo", "--metrics-port", "70000"])
    assert "expected a port from 0 to 65535" in capsys.readouterr().err
    assert main(["simulate", "--out", str(tmp_path / "t.csv"), "--rows", "10", "--anomalies"]) == 0
    assert "10 rows leave no room for an injected fault" in capsys.readouterr().err
    assert history_rows(5) == 1500 and history_rows(6000) == 6000


def test_too_few_rows_to_score_says_where_the_rest_went(files, tmp_path, capsys):
    """A README walk: a file sampled ten times slower than the model said only "3 usable rows,
    fewer than one window": that its readings were refused as too slow was never printed."""
    slow = pd.read_csv(files / "faults.csv").iloc[::10].iloc[:200]
    slow.to_csv(tmp_path / "slow.csv", index=False)
    for verb in (["score", "--out", str(tmp_path / "s.csv")], ["evaluate", "--label-column", "anomaly"]):
        assert main([verb[0], str(files / "model"), str(tmp_path / "slow.csv"), *verb[1:]]) == 1
        err = capsys.readouterr().err
        assert "fewer than one window" in err and "refused (too slow)" in err, err
        # the likely cause leads (a walk read the row count first, the rate last), and no registry verb is
        # offered for a model outside one
        assert "slow.csv: sampled every 10 s, the model every 1 s" in err, err
        assert "retrain --force" not in err, err


def test_evaluate_says_how_many_label_cells_were_empty(files, tmp_path, capsys):
    """A README walk blanked 200 label cells inside a fault: they were read as normal, the scores
    there became false alarms, and nothing said so."""
    frame = pd.read_csv(files / "faults.csv")
    faulty = np.flatnonzero(frame["anomaly"].to_numpy() > 0)[:20]
    frame["anomaly"] = frame["anomaly"].astype(object)
    frame.loc[faulty, "anomaly"] = ""
    frame.to_csv(tmp_path / "blank.csv", index=False)
    assert main(["evaluate", str(files / "model"), str(tmp_path / "blank.csv"), "--label-column", "anomaly"]) == 0
    assert "20 rows have an empty anomaly cell: they count as normal (0)" in capsys.readouterr().err
    assert main(["evaluate", str(files / "model"), str(files / "faults.csv"), "--label-column", "anomaly"]) == 0
    assert "empty anomaly cell" not in capsys.readouterr().err


def test_calibrate_and_report_say_what_the_cleaning_did(files, tmp_path, capsys):
    """A README walk: calibrate on data too slow for the model blamed sensor faults ("0 windows ...
    without a sensor fault"), report printed none of the cleaning's notes, and a promise of 1 read
    "1 false alerts"."""
    slow = pd.read_csv(files / "normal.csv").iloc[::10].iloc[:300]
    slow.to_csv(tmp_path / "slow.csv", index=False)
    model = tmp_path / "m"
    shutil.copytree(files / "model", model)
    assert main(["calibrate", str(model), str(tmp_path / "slow.csv")]) == 1
    err = capsys.readouterr().err
    assert "need at least 10" in err and "refused (too slow)" in err and "sensor fault" not in err, err
    # too few rows and nothing cleaned away: the line says how many rows it takes (it sent the user to
    # "the notes above", and there were none: found in a walk)
    pd.read_csv(files / "normal.csv").iloc[:20].to_csv(tmp_path / "short.csv", index=False)
    assert main(["calibrate", str(model), str(tmp_path / "short.csv")]) == 1
    err = capsys.readouterr().err
    window = json.loads((model / "bundle.json").read_text())["window"]
    assert f"so at least {window + 9} rows in a row without a gap" in err and "Traceback" not in err, err
    faults = pd.read_csv(files / "faults.csv")
    pd.concat([faults, faults.iloc[100:110]]).to_csv(tmp_path / "dup.csv", index=False)  # 10 stamps twice
    assert main(["report", str(model), str(tmp_path / "dup.csv"), "--out", str(tmp_path / "r")]) == 0
    assert "note: 10 duplicate timestamps" in capsys.readouterr().err
    pd.read_csv(files / "normal.csv").iloc[-1500:].to_csv(tmp_path / "held.csv", index=False)
    assert main(["calibrate", str(model), str(tmp_path / "held.csv"), "--false-alerts-per-day", "1",
                 "--force"]) == 0  # (25 minutes of rows: too few to hold the line near the old one unforced)
    assert "1 false alert per asset per day promised" in capsys.readouterr().out


def test_evaluate_names_each_asset_in_full(files, tmp_path, capsys):
    """Names were cut to 18 characters: site-north/compressor-01 and -02 read as two rows of one
    machine (a walk)."""
    one = pd.read_csv(files / "faults.csv")
    both = pd.concat([one.assign(asset="site-north/compressor-01"), one.assign(asset="site-north/compressor-02")])
    both.to_csv(tmp_path / "two.csv", index=False)
    assert main(["evaluate", str(files / "model"), str(tmp_path / "two.csv"), "--label-column", "anomaly"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("  site-north/")]
    assert [r[0] for r in rows] == ["site-north/compressor-01", "site-north/compressor-02"]
    assert all(len(r) == 6 for r in rows)  # rows, F1, false-alarm, events, false alerts


def test_maintenance_end_with_until_is_one_line(capsys):
    """``maintenance end --until 2h`` ignored --until without a word (a walk)."""
    assert main(["maintenance", "end", "pump-1", "--until", "2h", "--broker", "mqtt://127.0.0.1:1"]) == 1
    assert "--until goes with maintenance start" in capsys.readouterr().err


def test_a_command_takes_the_broker_as_serve_does(monkeypatch, capsys):
    """--broker was required: the docs' `sensorguard shelve ASSET --for 2h` failed on usage and a
    SENSORGUARD_BROKER set for serve was not taken (a walk)."""
    monkeypatch.setenv("SENSORGUARD_BROKER", "mqtt://127.0.0.1:1")  # nothing listens there
    assert main(["shelve", "pump-1", "--for", "2h", "--timeout", "1"]) == 1
    err = capsys.readouterr().err
    assert "required" not in err and "127.0.0.1:1" in err


def test_train_refusals_say_what_the_file_and_the_cleaning_took(tmp_path, capsys):
    """Found by a walk: the reason was worked out, then lost. A file whose only channel is constant
    said 'no numeric sensor columns found (columns: timestamp, temp)'; rows that all repeat one
    stamp said 'too little data: 1 usable rows' with no word of the 1,499 duplicates dropped."""
    frame = plant_frame(rows=300, channels=1)
    frame.assign(c0=50.0).to_csv(tmp_path / "flat.csv", index=False)
    assert main(["train", str(tmp_path / "flat.csv"), "--out", str(tmp_path / "m")]) == 1
    assert "no numeric sensor columns found (constant columns left out: c0" in capsys.readouterr().err
    frame.assign(timestamp=frame.timestamp[0]).to_csv(tmp_path / "one_stamp.csv", index=False)
    assert main(["train", str(tmp_path / "one_stamp.csv"), "--out", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "too little data: 1 usable rows" in err and "the cleaning: 299 duplicate timestamps" in err, err
