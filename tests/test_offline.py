"""Offline scoring of files that hold several machines: each scored, alerted and evaluated as if alone."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pandas as pd
import pytest

from sensorguard.cli import main
from sensorguard.service.bundle import save_bundle
from tests.conftest import plant_frame


def machine(seed: int, offset: float, rows: int = 120) -> pd.DataFrame:
    frame = plant_frame(rows=rows, seed=seed)
    frame.columns = ["timestamp", "a", "b", "c"]
    frame[["a", "b", "c"]] += offset
    frame["anomaly"] = 0
    frame.loc[60:80, "anomaly"] = 1
    return frame


def scored(bundle_dir, frame: pd.DataFrame, path) -> pd.DataFrame:
    frame.to_csv(path, index=False)
    out = path.with_suffix(".scores.csv")
    assert main(["score", str(bundle_dir), str(path), "--out", str(out), "--raise-after", "1"]) == 0
    return pd.read_csv(out)


def test_each_machine_of_a_file_scores_and_alerts_as_if_alone(tiny_bundle, tmp_path):
    bundle_dir = save_bundle(tiny_bundle, tmp_path / "b")
    a, b = machine(1, 0.0), machine(2, 5.0)  # B sits far from the training data: its scores are huge
    b["timestamp"] += pd.Timedelta("500ms")  # interleaved in time with A
    both = pd.concat([a.assign(asset="pump-a"), b.assign(asset="pump-b")]).sort_values("timestamp")
    together = scored(bundle_dir, both, tmp_path / "both.csv")
    assert list(together.columns[:2]) == ["asset", "timestamp"] and len(together) == len(both)
    for name, alone_frame in (("pump-a", a), ("pump-b", b)):
        alone = scored(bundle_dir, alone_frame, tmp_path / f"{name}.csv")
        mine = together[together.asset == name].reset_index(drop=True)
        np.testing.assert_allclose(mine.score, alone.score, rtol=1e-9, equal_nan=True)
        assert (mine.alert == alone.alert).all()


def test_score_names_a_machine_of_the_file_with_no_row_scored(tiny_bundle, tmp_path, capsys):
    """A machine with fewer rows than a window got no score and no word (a walk)."""
    bundle_dir = save_bundle(tiny_bundle, tmp_path / "b")
    both = pd.concat([machine(1, 0.0).assign(asset="pump-a"), machine(2, 0.0, rows=10).assign(asset="pump-b")])
    capsys.readouterr()
    together = scored(bundle_dir, both, tmp_path / "both.csv")
    assert together[together.asset == "pump-b"].score.isna().all()
    out = capsys.readouterr().out
    assert f"note: pump-b: none of its rows scored (fewer than a window of {tiny_bundle.window} samples" in out
    assert "pump-a: none" not in out
    # a file none of whose rows could be scored fails: a script read "scored 0 of 864 rows", exit 0, as
    # a run that worked (a walk); the table is written all the same
    short = pd.concat([machine(k, 0.0, rows=10).assign(asset=f"pump-{k}") for k in (1, 2)])
    short.to_csv(tmp_path / "short.csv", index=False)
    assert main(["score", str(bundle_dir), str(tmp_path / "short.csv"), "--out", str(tmp_path / "s.csv")]) == 1
    assert "error: no row was scored" in capsys.readouterr().err and len(pd.read_csv(tmp_path / "s.csv")) == 20
    short.assign(fault=0).to_csv(tmp_path / "short.csv", index=False)
    assert main(["evaluate", str(bundle_dir), str(tmp_path / "short.csv"), "--label-column", "fault"]) == 1
    assert "error: no row was judged" in capsys.readouterr().err


def test_evaluate_reports_each_machine_and_the_pool(tiny_bundle, tmp_path, capsys):
    bundle_dir = save_bundle(tiny_bundle, tmp_path / "b")
    both = pd.concat([machine(1, 0.0).assign(asset="pump-a"), machine(2, 5.0).assign(asset="pump-b")])
    both.to_csv(tmp_path / "both.csv", index=False)
    capsys.readouterr()
    assert main(["evaluate", str(bundle_dir), str(tmp_path / "both.csv"), "--label-column", "anomaly", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    per = result["assets"]
    assert set(per) == {"pump-a", "pump-b"}
    for kind in ("anomaly", "alert"):
        for key in ("tp", "fp", "tn", "fn", "events"):
            assert result[kind][key] == per["pump-a"][kind][key] + per["pump-b"][kind][key]
    assert result["alert"]["events"] == 2  # one labeled run per machine, never joined across them
    # a machine with no labelled fault: its F1 is undefined, not 0.000 (most of a fleet)
    both.loc[both.asset == "pump-b", "anomaly"] = 0
    both.to_csv(tmp_path / "both.csv", index=False)
    assert main(["evaluate", str(bundle_dir), str(tmp_path / "both.csv"), "--label-column", "anomaly"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if "pump-" in line}
    assert rows["pump-b"][2] == "-" and rows["pump-a"][2] != "-"


def test_report_plots_each_machine_of_a_file(tiny_bundle, tmp_path, capsys):
    bundle_dir = save_bundle(tiny_bundle, tmp_path / "b")
    both = pd.concat([machine(1, 0.0).assign(asset="site-a/pump-a"), machine(2, 5.0).assign(asset="pump-b")])
    both.to_csv(tmp_path / "both.csv", index=False)
    assert main(["report", str(bundle_dir), str(tmp_path / "both.csv"), "--out", str(tmp_path / "r"),
                 "--label-column", "anomaly"]) == 0
    names = sorted(p.name for p in (tmp_path / "r").glob("*.png"))
    hashed = f"site-a_pump-a-{hashlib.sha1(b'site-a/pump-a').hexdigest()[:6]}"  # "/" is no file name part
    assert names == ["calibration.png", "reconstructions_pump-b.png", f"reconstructions_{hashed}.png",
                     "scores_pump-b.png", f"scores_{hashed}.png"]


def test_a_repeated_timestamp_gets_no_score_of_its_own(tiny_bundle, tmp_path):
    """The daemon refuses a repeat (duplicate_ts); score gave it the kept row's score, and counted
    it as scored (found by review)."""
    bundle_dir = save_bundle(tiny_bundle, tmp_path / "b")
    frame = machine(1, 0.0)
    repeats = frame.iloc[[70, 90, 100]]
    out = scored(bundle_dir, pd.concat([frame, repeats]), tmp_path / "dup.csv")
    assert len(out) == len(frame) + 3
    assert out.score.iloc[-3:].isna().all()
    assert out.score.iloc[[70, 90, 100]].notna().all()  # the first of each keeps its score
    # the daemon's state does not change at a refused reading: its alert is the first's (it was 0,
    # so an alert up read 1, 0, 1 and counted twice; found by review)
    assert out.alert.iloc[-3:].tolist() == out.alert.iloc[[70, 90, 100]].tolist()
    assert out.alert.iloc[[70, 90, 100]].eq(1).any()  # (the untrained bundle alerts: the check can fail)


def test_a_reading_the_daemon_refuses_for_its_rate_gets_no_score(tiny_bundle, tmp_path):
    """A publisher slowing to one reading in 2 s: the daemon refuses some (slow_rate), and the grid
    row at such a reading's time is filled from its neighbours; score reported that filled row's
    score (and value) as the refused reading's (found by review)."""
    from dataclasses import replace

    from sensorguard.service.cleaning import admit_rows

    bundle_dir = save_bundle(replace(tiny_bundle, sample_period=1.0), tmp_path / "b")
    frame = machine(1, 0.0)
    seconds = np.r_[np.arange(60), np.arange(61, 89, 2), np.arange(89, 89 + len(frame) - 74)]
    frame["timestamp"] = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(seconds, unit="s")
    refused = ~admit_rows(seconds.astype(float), replace(tiny_bundle, sample_period=1.0).cleaning)[0]
    assert refused.sum() >= 1
    out = scored(bundle_dir, frame, tmp_path / "slow.csv")
    assert out.score[refused].isna().all()
    kept_index = pd.Series(np.where(refused, np.nan, np.arange(len(refused)))).ffill().to_numpy()
    before = kept_index[refused].astype(int)  # the last reading kept before each refused one
    assert out.alert[refused].tolist() == out.alert.iloc[before].tolist()
    assert out.score.iloc[98:].notna().all()


def test_evaluate_counts_a_fault_that_falls_where_a_gap_restarted_the_window(tiny_bundle, tmp_path, capsys):
    """Rows with no score of their own after the first full window raised no anomaly: leaving them
    out dropped a fault inside them from the events (neither caught nor missed)."""
    bundle_dir = save_bundle(tiny_bundle, tmp_path / "b")
    frame = machine(1, 0.0)
    frame["anomaly"] = 0
    frame.loc[60:70, "anomaly"] = 1  # the first 11 rows after the gap: the window (16) is not full yet
    frame.loc[60:, "timestamp"] += pd.Timedelta("1h")
    frame.to_csv(tmp_path / "gap.csv", index=False)
    capsys.readouterr()
    assert main(["evaluate", str(bundle_dir), str(tmp_path / "gap.csv"), "--label-column", "anomaly", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    anomaly = result["anomaly"]
    assert anomaly["events"] == 1 and anomaly["events_detected"] == 0
    assert anomaly["tp"] + anomaly["fn"] == 11
    assert result["not_judged"] == {"rows": 15, "anomalous_rows": 0, "removed_rows": 0}  # the first window's
    assert result["rows"] == len(frame) - 15


def test_score_says_what_the_cleaning_did(tiny_bundle, tmp_path, capsys):
    """score printed no notes: cells filled, markers read as missing, readings refused all went
    unsaid (found by review)."""
    bundle_dir = save_bundle(tiny_bundle, tmp_path / "b")
    frame = machine(1, 0.0).drop(columns="anomaly")
    frame.loc[30, "b"] = 3.4028235e38
    frame.to_csv(tmp_path / "marked.csv", index=False)
    assert main(["score", str(bundle_dir), str(tmp_path / "marked.csv"), "--out", str(tmp_path / "o.csv")]) == 0
    out = capsys.readouterr().out
    assert "note: 1 value of magnitude 1e+30 or more (a historian's no-data marker) read as missing" in out


def test_score_fill_limit_also_decides_the_sensor_faults_column(tiny_bundle, tmp_path):
    """``score --fill-limit 10``: a 7-sample dropout is filled and scored, so the watch must not
    call the channel missing either (it used the bundle's limit of 5; found by review)."""
    from dataclasses import replace

    from sensorguard.service.sensors import ChannelLimits, SensorRules

    limits = tuple(ChannelLimits(-50.0, 50.0, None) for _ in tiny_bundle.channels)
    bundle = replace(tiny_bundle, sensors=SensorRules(tiny_bundle.channels, limits, tiny_bundle.fill_limit))
    bundle_dir = save_bundle(bundle, tmp_path / "b")
    frame = machine(1, 0.0).drop(columns="anomaly")
    frame.loc[50:56, "a"] = np.nan  # 7 samples
    frame.to_csv(tmp_path / "d.csv", index=False)
    for limit, missing in ((None, True), ("10", False)):
        out = tmp_path / f"s{limit}.csv"
        extra = [] if limit is None else ["--fill-limit", limit]
        assert main(["score", str(bundle_dir), str(tmp_path / "d.csv"), "--out", str(out), *extra]) == 0
        column = pd.read_csv(out, dtype={"sensor_faults": str})["sensor_faults"].fillna("")
        assert column.str.contains("missing:a").any() == missing


def test_the_silence_that_ends_an_alert_follows_the_bundles_sampling(tiny_bundle, tmp_path, capsys):
    """At 10-minute data each step was a silence longer than the fixed 300 s, so the alert state
    ended at every row: no alert, and nothing said; at 5-minute data every late reading ended one
    (NAB's alert F1 0.22 -> 0.05). Unset, the silence is the gap the bundle fills when longer; a
    --stale-after set shorter than that is warned about (found by review)."""
    from dataclasses import replace

    from sensorguard.service.bundle_checks import default_rules

    slow = replace(tiny_bundle, sample_period=600.0)
    assert default_rules(slow).stale_after == (5 + 1.5) * 600.0 and default_rules(tiny_bundle).stale_after == 300
    bundle_dir = save_bundle(slow, tmp_path / "b")
    frame = machine(1, 50.0)  # far from the training data: every window scores high
    frame["timestamp"] = pd.date_range("2026-01-01", periods=len(frame), freq="600s", tz="UTC")
    frame.drop(columns="anomaly").to_csv(tmp_path / "slow.csv", index=False)
    out = tmp_path / "slow.scores.csv"
    assert main(["score", str(bundle_dir), str(tmp_path / "slow.csv"), "--out", str(out)]) == 0
    assert "stale-after" not in capsys.readouterr().err and pd.read_csv(out)["alert"].sum() > 0
    assert main(["score", str(bundle_dir), str(tmp_path / "slow.csv"), "--out", str(out), "--stale-after",
                 "300"]) == 0
    said = capsys.readouterr().err
    assert "--stale-after 300 is shorter than the" in said and "every alert ends at the next reading" in said
    assert pd.read_csv(out)["alert"].sum() == 0


def test_evaluate_names_labelled_rows_the_cleaning_removed(tiny_bundle, tmp_path, capsys):
    """Found by review: a fault whose rows the cleaning removed (here a stretch where every channel
    is empty, and a repeated stamp) vanished from ``evaluate``'s counts without a word."""
    bundle_dir = save_bundle(tiny_bundle, tmp_path / "b")
    frame = machine(1, 0.0)
    frame.loc[40:49, ["a", "b", "c"]] = np.nan  # longer than the fill limit: dropped
    frame.loc[40:49, "anomaly"] = 1
    repeats = frame.iloc[[70, 20]].copy()
    repeats.loc[repeats.index == 20, "anomaly"] = 1  # its first row says normal: this label is lost
    frame = pd.concat([frame, repeats]).sort_values("timestamp", kind="stable")  # repeats after their first
    frame.to_csv(tmp_path / "lost.csv", index=False)
    capsys.readouterr()
    assert main(["evaluate", str(bundle_dir), str(tmp_path / "lost.csv"), "--label-column", "anomaly"]) == 0
    out = capsys.readouterr()
    # the five rows dropped and the repeat of a normal row (row 70's repeat is judged by its first row)
    assert "note: 6 rows labelled anomalous in 'anomaly' removed by the cleaning" in out.err, out
    assert main(["evaluate", str(bundle_dir), str(tmp_path / "lost.csv"), "--label-column", "anomaly",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] > 0  # the JSON stays parseable: notes go to stderr


@pytest.mark.parametrize("record, expected", [
    ({"raise_after": 3, "raise_at": 2.0}, 2.0),
    ({"raise_after": 3}, math.inf),  # calibrated before the rule: its promise assumed three in a row
    (None, math.inf),
])
def test_score_raises_at_once_where_the_bundle_was_calibrated_to(tiny_bundle, record, expected, tmp_path):
    """``score`` and ``serve`` apply the bundle's own one-window raise (live == offline)."""
    from sensorguard.service.bundle_checks import default_rules

    bundle = tiny_bundle.with_threshold(tiny_bundle.threshold_, {"method": "alerts", "alerts": record})
    assert default_rules(bundle).raise_at == expected
    bundle_dir = save_bundle(bundle, tmp_path / "b")
    machine(1, 50.0).drop(columns="anomaly").to_csv(tmp_path / "m.csv", index=False)  # every window far above
    out = tmp_path / "m.scores.csv"
    # more windows in a row than the file holds: only the one-window raise can alert
    assert main(["score", str(bundle_dir), str(tmp_path / "m.csv"), "--out", str(out), "--raise-after", "1000"]) == 0
    table = pd.read_csv(out)
    assert (table["score"] >= 2.0).sum() > 10
    assert (table["alert"].sum() > 0) == (expected == 2.0)


@pytest.mark.parametrize("alerts", [{"raise_at": 0.5}, {"raise_at": "2"}, {"raise_at": True}, {"raise_at": 10**400},
                                    {"raise_at": math.nan}, ["raise_at", 2]])
def test_a_bundle_with_an_unusable_raise_at_is_refused_in_one_line(tiny_bundle, alerts, tmp_path):
    """Found by review: 10**400 crashed serve and score with an OverflowError, a list with an
    AttributeError, and "2" or 0.5 silently became "never", changing the bundle's promise."""
    from sensorguard.service.bundle import BundleError
    from sensorguard.service.bundle_loading import load_bundle

    bundle = tiny_bundle.with_threshold(tiny_bundle.threshold_, {"method": "alerts", "alerts": alerts})
    bundle_dir = save_bundle(bundle, tmp_path / "b")
    with pytest.raises(BundleError, match="calibration.alerts"):
        load_bundle(bundle_dir)


def test_score_takes_clear_at(tiny_bundle, tmp_path):
    """Found by review: nothing tested the flag (its default is also the rules' default)."""
    from sensorguard.service.bundle_checks import default_rules

    bundle_dir = save_bundle(tiny_bundle.with_threshold(3000.0, {}), tmp_path / "b")  # (untrained: normal ~ 0.3)
    frame = machine(1, 0.0, rows=200)
    frame.loc[60:100, ["a", "b", "c"]] += 50.0  # a strong fault, then normal again
    frame.drop(columns="anomaly").to_csv(tmp_path / "m.csv", index=False)
    alerted = {}
    for clear_at in ("0.5", "0"):
        out = tmp_path / f"m.{clear_at}.csv"
        assert main(["score", str(bundle_dir), str(tmp_path / "m.csv"), "--out", str(out), "--clear-after", "1000",
                     "--clear-at", clear_at]) == 0
        alerted[clear_at] = int(pd.read_csv(out)["alert"].sum())
    assert default_rules(tiny_bundle).clear_at == 0.5
    assert 0 < alerted["0.5"] < alerted["0"]  # 0: the alert never clears within the file


def test_evaluate_counts_the_rows_of_the_file_not_the_rows_the_cleaning_filled_in(tiny_bundle, tmp_path, capsys):
    """A walk: with 4 rows missing inside a labelled fault, evaluate judged 6,000 rows of a
    5,996-row file; the 4 grid rows filled into the gap counted as true positives with the label of
    the row before them. And a file with no normal row printed a false-alarm rate of 0.000."""
    bundle_dir = save_bundle(tiny_bundle, tmp_path / "b")
    frame = machine(1, 0.0).drop(index=[70, 71, 72, 73])  # a short gap inside the fault (rows 60-80)
    frame.to_csv(tmp_path / "gap.csv", index=False)
    out = scored(bundle_dir, frame, tmp_path / "gap.csv")
    capsys.readouterr()
    args = ["evaluate", str(bundle_dir), str(tmp_path / "gap.csv"), "--label-column", "anomaly", "--raise-after", "1"]
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    first = int(np.flatnonzero(out.score.notna().to_numpy())[0])
    labels, alarmed = frame.anomaly.to_numpy()[first:], out.anomaly.to_numpy()[first:]
    assert result["rows"] + result["not_judged"]["rows"] == len(frame)
    assert result["rows"] == len(frame) - first
    assert result["anomaly"]["tp"] == int(((labels == 1) & (alarmed == 1)).sum())
    assert result["anomaly"]["tp"] + result["anomaly"]["fn"] == int(labels.sum())
    twice = pd.concat([frame, frame.iloc[[90]]]).sort_values("timestamp", kind="stable")  # a repeated stamp
    twice.to_csv(tmp_path / "twice.csv", index=False)
    assert main(["evaluate", str(bundle_dir), str(tmp_path / "twice.csv"), "--label-column", "anomaly", "--json"]) == 0
    left = json.loads(capsys.readouterr().out)["not_judged"]
    assert left["removed_rows"] == 1 and left["rows"] + left["removed_rows"] + result["rows"] == len(twice)
    frame.assign(anomaly=1).to_csv(tmp_path / "faulty.csv", index=False)
    assert main(["evaluate", str(bundle_dir), str(tmp_path / "faulty.csv"), "--label-column", "anomaly"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("false-alarm rate"))
    assert row.split()[-2:] == ["-", "-"]


def test_score_writes_each_rows_time_as_the_file_stamped_it(tiny_bundle, tmp_path):
    """Sub-second stamps went through float seconds: 30.037 came back as 30.036999941 in 297 of 300
    rows, so the scores no longer joined the input on its time (a walk)."""
    bundle_dir = save_bundle(tiny_bundle, tmp_path / "b")
    frame = machine(1, 0.0)
    stamps = pd.Timestamp("2026-12-05 10:00:00.037") + pd.to_timedelta(np.arange(len(frame)), unit="s")
    frame["timestamp"] = stamps.strftime("%Y-%m-%d %H:%M:%S.%f").str[:-3]  # milliseconds, as plant logs write them
    out = scored(bundle_dir, frame.drop(columns="anomaly"), tmp_path / "ms.csv")
    written = pd.to_datetime(out["timestamp"], utc=True).dt.tz_localize(None)
    assert (written == stamps).all()


def test_a_machine_column_of_another_name_is_given_with_asset_column(tiny_bundle, tmp_path, capsys):
    """A file whose machine column was named ``Machine`` was scored as one series: two thirds of
    its rows dropped as duplicate stamps, with no hint (a walk). The note names the column, and
    ``--asset-column`` scores each machine on its own, as a column named ``asset`` is."""
    bundle_dir = save_bundle(tiny_bundle, tmp_path / "b")
    frames = [machine(seed, 0.0).drop(columns="anomaly").assign(Machine=f"pump-{seed}") for seed in (1, 2, 3)]
    pd.concat(frames).to_csv(tmp_path / "three.csv", index=False)
    out = tmp_path / "s.csv"
    assert main(["score", str(bundle_dir), str(tmp_path / "three.csv"), "--out", str(out)]) == 0
    assert "column 'Machine' holds 3 distinct values: if it names machines, give --asset-column Machine" in \
        capsys.readouterr().out
    assert main(["score", str(bundle_dir), str(tmp_path / "three.csv"), "--out", str(out),
                 "--asset-column", "Machine"]) == 0
    scores = pd.read_csv(out)
    assert sorted(scores.asset.unique()) == ["pump-1", "pump-2", "pump-3"] and scores.score.notna().sum() > 300
    assert main(["score", str(bundle_dir), str(tmp_path / "three.csv"), "--out", str(out),
                 "--asset-column", "Maschine"]) == 1
    assert "asset column 'Maschine' not found" in capsys.readouterr().err
    # a model trained with --asset-column Machine (bundle.json's training.asset_column) takes it by itself:
    # forgotten, the machines were merged and two thirds of the rows dropped, exit 0 (a walk)
    from dataclasses import replace

    trained = save_bundle(replace(tiny_bundle, training={**(tiny_bundle.training or {}), "asset_column": "Machine"}),
                          tmp_path / "t")
    assert main(["score", str(trained), str(tmp_path / "three.csv"), "--out", str(out)]) == 0
    assert "machines named by column 'Machine', as when the model was trained (--asset-column)" in \
        capsys.readouterr().out
    assert pd.read_csv(out).equals(scores)


@pytest.mark.filterwarnings("error::pandas.errors.PerformanceWarning")
def test_score_of_a_wide_file_writes_its_error_columns_without_a_warning_each(tmp_path, capsys):
    """Found by a walk: 200 channels printed 104 PerformanceWarning blocks over the notes (one
    ``error_<channel>`` column inserted at a time fragments the frame)."""
    import torch

    from sensorguard.service.bundle import Bundle
    from sensorguard.service.model import ConvAutoencoder, ModelConfig

    torch.manual_seed(0)
    names = tuple(f"c{i}" for i in range(150))
    config = ModelConfig(channels=len(names), window=8, latent=4, hidden=8, depth=1)
    bundle = Bundle(channels=names, config=config, hop=2, center_=np.zeros(len(names)), scale_=np.ones(len(names)),
                    threshold_=0.5, state_dict=ConvAutoencoder(config).state_dict(), sample_period=1.0)
    save_bundle(bundle, tmp_path / "wide")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(40, len(names))), columns=list(names))
    frame.insert(0, "timestamp", pd.date_range("2026-01-01", periods=40, freq="1s", tz="UTC"))
    frame.to_csv(tmp_path / "wide.csv", index=False)
    out = tmp_path / "scores.csv"
    assert main(["score", str(tmp_path / "wide"), str(tmp_path / "wide.csv"), "--out", str(out)]) == 0
    written = pd.read_csv(out)
    assert [c for c in written.columns if c.startswith("error_")] == [f"error_{c}" for c in names]
    assert written["error_c0"].notna().sum() == 40 - 8 + 1 and "PerformanceWarning" not in capsys.readouterr().err


def test_a_score_under_the_line_is_never_written_as_the_line(tiny_bundle, tmp_path):
    """``score --out`` writes 6 significant digits: a score of 0.9999996 read ``1`` beside ``anomaly`` 0
    (a walk). Under the line it is written under 1; at the line it stays 1."""
    from sensorguard.training.data import series_from_frame
    from sensorguard.training.offline import score_data, score_table
    from sensorguard.writing import write_table

    scored = score_data(tiny_bundle, series_from_frame(machine(1, 0.0).drop(columns="anomaly"), "m"))
    rows = np.flatnonzero(np.isfinite(scored.scores.score))[:3]
    scored.scores.score[rows] = [0.9999996, 1.0, 0.5]
    if scored.level_term is not None:
        scored.level_term[rows] = [0.9999996, 1.0, 0.5]
    table = score_table(tiny_bundle, scored)
    write_table(table, tmp_path / "s.csv")
    written = pd.read_csv(tmp_path / "s.csv")
    at = table.index[table.score.isin([0.999999, 1.0, 0.5])]
    assert written.score[at].tolist() == [0.999999, 1.0, 0.5]
    assert written.anomaly[at].tolist() == [0, 1, 0]
    if "level" in written:
        assert written.level[at].max() == 1.0 and (written.level[at] < 1).sum() == 2
    # the daemon's alert and state messages round to 6 decimals: the same, live (a review)
    from sensorguard.service.publisher import payload

    sent = [payload("p", "normal", 0.0, x, x, "", [], "m", "v1", 0.1) for x in (0.9999996, 1.0, 1.2345678)]
    assert [(m["score"], m["peak_score"]) for m in sent] == [(0.999999, 0.999999), (1.0, 1.0), (1.234568, 1.234568)]
