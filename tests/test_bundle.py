import json
import math
import pickle
import struct
import zipfile

import numpy as np
import pytest
import torch

from sensorguard.service.bundle import BundleError, save_bundle
from sensorguard.service.bundle_loading import load_bundle
from sensorguard.service.registry import (
    LOCK_FILE,
    current_version,
    list_versions,
    load_current,
    publish,
    resolve_current,
    set_current,
    validate_name,
)


def test_round_trip(tmp_path, tiny_bundle):
    path = save_bundle(tiny_bundle, tmp_path / "b")
    loaded = load_bundle(path)
    assert loaded.channels == tiny_bundle.channels
    assert loaded.config == tiny_bundle.config
    assert loaded.threshold_ == tiny_bundle.threshold_
    np.testing.assert_array_equal(loaded.scale_, tiny_bundle.scale_)
    assert all(torch.equal(loaded.state_dict[k], v) for k, v in tiny_bundle.state_dict.items())
    meta = json.loads((path / "bundle.json").read_text())
    for key in ("format_version", "sensorguard_version", "channels", "window", "hop", "sample_period",
                "scaler", "architecture", "threshold", "calibration", "training", "created"):
        assert key in meta


def test_ignored_columns_round_trip_and_old_bundles_ignore_none(tmp_path, tiny_bundle):
    from dataclasses import replace

    path = save_bundle(replace(tiny_bundle, ignored_columns=("flush_on", "anomaly")), tmp_path / "b")
    assert load_bundle(path).ignored_columns == ("flush_on", "anomaly")
    meta = json.loads((path / "bundle.json").read_text())
    del meta["ignored_columns"]  # as a bundle written before them
    (path / "bundle.json").write_text(json.dumps(meta))
    assert load_bundle(path).ignored_columns == ()


def test_alert_hop_round_trips_and_old_bundles_judge_every_hop(tmp_path, tiny_bundle):
    from dataclasses import replace

    for alert_hop, step in ((2, 2), (0, 4)):
        path = save_bundle(replace(tiny_bundle, hop=4, alert_hop=alert_hop), tmp_path / f"b{alert_hop}")
        loaded = load_bundle(path)
        assert (loaded.alert_hop, loaded.alert_step) == (alert_hop, step)
    meta = json.loads((path / "bundle.json").read_text())
    del meta["alert_hop"]  # as a bundle written before format 4
    meta["format_version"] = 3
    (path / "bundle.json").write_text(json.dumps(meta))
    assert load_bundle(path).alert_step == 4


def test_channel_weights_round_trip_and_weigh_the_score(tmp_path, tiny_bundle):
    from dataclasses import replace

    from sensorguard.service.scorer import Scorer

    weights = np.array([0.5, 2.0, 0.5])
    weighted = replace(tiny_bundle, channel_weights_=weights)
    loaded = load_bundle(save_bundle(weighted, tmp_path / "b"))
    np.testing.assert_array_equal(loaded.channel_weights_, weights)
    assert load_bundle(save_bundle(tiny_bundle, tmp_path / "plain")).channel_weights_ is None
    windows = np.random.default_rng(0).normal(size=(5, 3, tiny_bundle.window))
    plain = Scorer(tiny_bundle).score_windows(windows)
    scores = Scorer(loaded).score_windows(windows)
    np.testing.assert_allclose(scores.channel_error, plain.channel_error * weights, rtol=1e-9)
    np.testing.assert_allclose(scores.error, (plain.channel_error * weights).mean(axis=1), rtol=1e-9)


def test_save_refuses_to_replace_what_is_not_a_bundle(tmp_path, tiny_bundle):
    """``train --out`` pointed at a data folder deleted it (found by review): only a bundle is replaced."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "normal.csv").write_text("ts,a\n")
    (tmp_path / "file").write_text("keep")
    for target in (data, tmp_path / "file"):
        with pytest.raises(BundleError, match="exists and is not a bundle directory"):
            save_bundle(tiny_bundle, target)
    assert (data / "normal.csv").read_text() == "ts,a\n" and (tmp_path / "file").read_text() == "keep"
    assert not list(tmp_path.glob(".*"))  # no temp directory left behind
    (tmp_path / "empty").mkdir()  # `mkdir model && train --out model` is fine
    assert load_bundle(save_bundle(tiny_bundle, tmp_path / "empty")).channels == tiny_bundle.channels


def test_save_replaces_existing_bundle(tmp_path, tiny_bundle):
    save_bundle(tiny_bundle, tmp_path / "b")
    save_bundle(tiny_bundle.with_threshold(2.5, {"method": "quantile"}), tmp_path / "b")
    assert load_bundle(tmp_path / "b").threshold_ == 2.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def _corrupt(path, mutate):
    meta = json.loads((path / "bundle.json").read_text())
    mutate(meta)
    (path / "bundle.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda m: m.update(format_version=99), "format_version"),
        (lambda m: m.update(channels=["a", "b"]), "channels"),
        (lambda m: m.update(channels=["a", "a", "b"]), "unique"),
        (lambda m: m["scaler"].update(scale=[1.0, 0.0, 1.0]), "positive scale"),
        (lambda m: m.update(threshold=-1), "threshold"),
        (lambda m: m.update(hop=0), "hop"),
        (lambda m: m.update(alert_hop=3), "alert_hop"),  # the hop (4) is not a multiple of it
        (lambda m: m.update(alert_hop=8), "alert_hop"),
        (lambda m: m.update(alert_hop=-2), "alert_hop"),
        (lambda m: m.pop("architecture"), "architecture"),
        (lambda m: m["architecture"].update(hidden=16, window=16), "do not match"),  # shapes lie
        (lambda m: m.update(channel_weights=[1.0, 1.0]), "channel_weights"),
        (lambda m: m.update(ignored_columns=["a"]), "ignored_columns"),  # a channel cannot be ignored
        (lambda m: m.update(ignored_columns="flush"), "ignored_columns"),
        (lambda m: m.update(channel_weights=[1.0, 0.0, 2.0]), "channel_weights"),
        (lambda m: m["calibration"].update(drift={"baseline": 0.0, "halflife": 64, "warmup": 8, "cap": 0.5}),
         "drift"),
        (lambda m: m["calibration"].update(drift={"baseline": 0.0}), "drift"),
        (lambda m: m.update(hop=float("inf")), "invalid or missing field"),  # OverflowError escaped (review)
        # a hand edit Python's float() and int() took without a word: a line of 1.0, a hop of 4
        (lambda m: m.update(threshold=True), "threshold must be a number, got true/false"),
        (lambda m: m.update(threshold="0.5"), "threshold must be a number, got a string"),
        (lambda m: m.update(hop=4.7), "hop must be a whole number, got 4.7"),
        (lambda m: m["architecture"].update(hidden=10**6), "do not match"),  # built before: terabytes
        # hostile values that escaped as tracebacks, or loaded and scored everything inf (review)
        (lambda m: m.update(window=2**70) or m["architecture"].update(window=2**70, depth=1), "do not match"),
        (lambda m: m["architecture"].update(depth=2**40), "depth must be at most"),
        (lambda m: m.update(training=5), "training must be an object"),
        (lambda m: m.update(metrics="xy"), "metrics must be an object"),
        (lambda m: m.update(threshold=1e-320), "threshold"),
        (lambda m: m["calibration"].update(drift={"baseline": 0.0, "halflife": 64, "warmup": 8, "cap": math.inf}),
         "drift"),
        (lambda m: m.update(sensors={c: {"low": -1, "high": 1, "stuck_after": 1} for c in m["channels"]}),
         "stuck_after"),
    ],
)
def test_lying_bundle_json_is_refused(tmp_path, tiny_bundle, mutate, message):
    path = save_bundle(tiny_bundle, tmp_path / "b")
    _corrupt(path, mutate)
    with pytest.raises(BundleError, match=message):
        load_bundle(path)


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"format_version": ' + "9" * 5000 + "}"])
def test_a_hostile_bundle_json_is_one_error(tmp_path, tiny_bundle, text):
    path = save_bundle(tiny_bundle, tmp_path / "b")
    (path / "bundle.json").write_text(text)
    with pytest.raises(BundleError, match="unreadable"):
        load_bundle(path)


def test_float64_weights_that_overflow_float32_are_refused(tmp_path, tiny_bundle):
    import torch

    path = save_bundle(tiny_bundle, tmp_path / "b")
    state = torch.load(path / "model.pt", weights_only=True)
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].double().fill_(1e300)  # finite as float64, inf once the model holds it
    torch.save(state, path / "model.pt")
    with pytest.raises(BundleError, match="non-finite"):
        load_bundle(path)


def test_a_damaged_weights_file_is_said_in_whole_sentences(tmp_path, tiny_bundle, monkeypatch):
    """torch's message was cut mid-sentence: "... high likelihood that your checkpoint file is)"."""
    import torch

    said_by_torch = ("PytorchStreamReader failed reading zip archive: failed finding central directory. This is an "
                     "internal miniz error. If you are seeing this error, there is a high likelihood that your "
                     "checkpoint file is corrupted. This can happen if the checkpoint was not saved properly.")

    def damaged(*args, **kwargs):
        raise RuntimeError(said_by_torch)  # as torch 2.13 says it of a model.pt cut in half

    path = save_bundle(tiny_bundle, tmp_path / "b")
    monkeypatch.setattr(torch, "load", damaged)
    with pytest.raises(BundleError) as err:
        load_bundle(path)
    assert str(err.value).endswith("not a plain weights file, or damaged (PytorchStreamReader failed reading zip "
                                   "archive: failed finding central directory. This is an internal miniz error.)")


def test_weights_of_other_bytes_are_said_so_not_with_torchs_number(tmp_path, tiny_bundle):
    """torch reads a file of other bytes as a KeyError of a number: "damaged (174812789)" (a walk)."""
    path = save_bundle(tiny_bundle, tmp_path / "b")
    (path / "model.pt").write_bytes(b"junk" * 100)
    with pytest.raises(BundleError) as err:
        load_bundle(path)
    assert str(err.value).endswith("not a plain weights file, or damaged (not a file torch.save wrote)"), err.value


def test_pickle_payload_in_weights_is_refused(tmp_path, tiny_bundle):
    path = save_bundle(tiny_bundle, tmp_path / "b")
    marker = tmp_path / "pwned"
    marker.unlink(missing_ok=True)

    class Exploit:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    with open(path / "model.pt", "wb") as fh:
        pickle.dump({"weights": Exploit()}, fh)
    with pytest.raises(BundleError, match="not a plain weights file"):
        load_bundle(path)
    assert not marker.exists(), "the pickled payload ran while loading the bundle"


def test_missing_and_garbage_files(tmp_path, tiny_bundle):
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nope")
    path = save_bundle(tiny_bundle, tmp_path / "b")
    (path / "bundle.json").write_text("{not json")
    with pytest.raises(BundleError, match="unreadable"):
        load_bundle(path)
    path = save_bundle(tiny_bundle, tmp_path / "c")
    (path / "model.pt").write_bytes(b"garbage")
    with pytest.raises(BundleError, match="model.pt"):
        load_bundle(path)


def test_a_file_given_as_the_bundle_says_so(tmp_path, tiny_bundle):
    """``score data.csv model/`` (swapped) said "bundle directory not found: data.csv" of a file that
    is there (found by a README walk); the bundle's own bundle.json points at its directory."""
    (tmp_path / "data.csv").write_text("ts,a\n")
    with pytest.raises(BundleError, match="data.csv is a file, not a bundle directory"):
        load_bundle(tmp_path / "data.csv")
    path = save_bundle(tiny_bundle, tmp_path / "b")
    with pytest.raises(BundleError, match=f"give its directory, {path}"):
        load_bundle(path / "bundle.json")


def test_a_folder_in_the_place_of_a_bundles_file_says_so(tmp_path, tiny_bundle):
    """A walk: a folder where bundle.json or model.pt belongs was reported "missing"."""
    for name in ("bundle.json", "model.pt"):
        path = save_bundle(tiny_bundle, tmp_path / name)
        (path / name).unlink()
        (path / name).mkdir()
        with pytest.raises(BundleError, match=f"{name}: a folder, not a file"):
            load_bundle(path)
        (path / name).rmdir()
        with pytest.raises(BundleError, match=f"{name}: missing"):
            load_bundle(path)


def test_registry_versions_and_current(tmp_path, tiny_bundle):
    assert current_version(tmp_path, "pump") is None
    assert publish(tiny_bundle, tmp_path, "pump") == "v0001"
    assert publish(tiny_bundle.with_threshold(3.0, {}), tmp_path, "pump") == "v0002"
    assert list_versions(tmp_path, "pump") == ["v0001", "v0002"]
    assert current_version(tmp_path, "pump") == "v0002"
    assert load_current(tmp_path, "pump").version == "v0002"
    set_current(tmp_path, "pump", "v0001")
    assert resolve_current(tmp_path, "pump").name == "v0001"
    assert not [p for p in (tmp_path / "pump").iterdir() if p.name.startswith(".") and p.name != LOCK_FILE]
    with pytest.raises(BundleError, match="no version"):
        set_current(tmp_path, "pump", "v0009")


def test_publish_skips_a_stray_file_with_a_version_name(tmp_path, tiny_bundle):
    """A file named like the next version made publish retry forever (found by review)."""
    publish(tiny_bundle, tmp_path, "pump")
    (tmp_path / "pump" / "v0002").write_text("not a bundle")
    assert publish(tiny_bundle, tmp_path, "pump") == "v0003"
    assert list_versions(tmp_path, "pump") == ["v0001", "v0003"]


@pytest.mark.parametrize("name", ["../etc", "a/b", "", ".hidden", "x" * 65, "..", "a b", "/abs", "pump\n"])
def test_path_traversal_in_names_is_refused(tmp_path, tiny_bundle, name):
    with pytest.raises(BundleError, match="invalid model name"):
        validate_name(name)
    with pytest.raises(BundleError):
        publish(tiny_bundle, tmp_path, name)


def test_current_pointing_nowhere(tmp_path, tiny_bundle):
    publish(tiny_bundle, tmp_path, "pump")
    (tmp_path / "pump" / "CURRENT").write_text("../../etc\n")
    with pytest.raises(BundleError, match="does not name a version"):
        resolve_current(tmp_path, "pump")


def test_a_weights_file_far_larger_than_its_network_is_refused_before_reading(tmp_path, tiny_bundle):
    """torch.load reads the whole file, in the serving daemon's hot-swap thread (review)."""
    path = save_bundle(tiny_bundle, tmp_path / "b")
    with open(path / "model.pt", "ab") as fh:
        fh.truncate(64 << 20)  # a sparse 64 MiB file: no disk used
    with pytest.raises(BundleError, match="far more than"):
        load_bundle(path)


def test_a_bundle_and_the_files_written_durably_take_the_umask_not_a_private_mode(tiny_bundle, tmp_path):
    """A walk: a bundle folder came out 0700 and its bundle.json 0600 (mkdtemp, mkstemp), model.pt
    0644: trained by one account, the service's could not read it. They take the umask, as any file
    a tool writes (the units set UMask=0027)."""
    import os
    import stat

    from sensorguard.service.bundle import save_bundle

    folder = save_bundle(tiny_bundle, tmp_path / "b")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (folder, folder / "bundle.json", folder / "model.pt")}
    umask = os.umask(0o022)
    os.umask(umask)
    assert modes == {"b": 0o777 & ~umask, "bundle.json": 0o666 & ~umask, "model.pt": 0o666 & ~umask}, modes


@pytest.fixture
def full_disk(tiny_disk):
    """A folder on a tmpfs with no space left."""
    try:
        with open(tiny_disk / "filler", "wb") as fh:
            fh.write(b"\0" * (1 << 20))
    except OSError:
        pass  # full now
    return tiny_disk


def test_a_full_disk_says_so_in_one_line_and_leaves_no_bundle(full_disk, tiny_bundle, capsys):
    """``train --out``, ``retrain`` and the registry on a full disk: ``torch.save`` to a path said
    ``[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0``, an internal error (a walk);
    now an OSError names the file and the cause, and no half-written bundle or version is left."""
    import argparse

    from sensorguard.cli_errors import failed

    with pytest.raises(OSError, match="No space left on device") as caught:
        save_bundle(tiny_bundle, full_disk / "model")
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]
    assert failed(argparse.Namespace(verb="train"), caught.value) == 1
    said = capsys.readouterr().err
    assert "internal error" not in said and "model.pt: No space left on device" in said and said.count("\n") == 1
    with pytest.raises(OSError, match="No space left on device"):
        publish(tiny_bundle, full_disk / "registry", "m")
    assert list_versions(full_disk / "registry", "m") == [] and not (full_disk / "registry" / "m" / "CURRENT").exists()


def test_a_full_disk_under_bundle_json_names_the_file(tmp_path, monkeypatch):
    """A write refused by the disk names no file (Python's ``write`` error): the CLI said
    ``error: No space left on device`` without where; :func:`write_durably` names the file."""
    import errno

    from sensorguard.service import durable

    def full(fd, mode="r", **kwargs):
        class Full:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                os.close(fd)

            def write(self, text):
                raise OSError(errno.ENOSPC, "No space left on device")

        return Full()

    import os

    monkeypatch.setattr(durable.os, "fdopen", full)
    with pytest.raises(OSError, match="No space left on device") as caught:
        durable.write_durably(tmp_path / "bundle.json", "{}")
    assert caught.value.filename == str(tmp_path / "bundle.json") and list(tmp_path.iterdir()) == []


def test_weights_changed_in_place_fail_their_crc_and_are_refused(tmp_path, tiny_bundle):
    """Bytes of ``model.pt`` changed after it was written (a disk's bit rot, a bad copy): torch loads
    the stored tensors without checking the archive's CRC-32, and a walk's daemon swapped such a
    version in and raised every asset at score inf. The CRC is checked: refused, one line."""
    path = save_bundle(tiny_bundle, tmp_path / "b")
    weights = path / "model.pt"
    data = bytearray(weights.read_bytes())
    with zipfile.ZipFile(weights) as archive:  # the bytes of one tensor's entry, in the middle of the file
        info = max(archive.infolist(), key=lambda i: i.file_size)
        name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)  # (the local header's)
        start = info.header_offset + 30 + name_len + extra_len
    for k in range(start, start + min(64, info.file_size)):
        data[k] ^= 0x5A
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.pt: damaged \(.* fails its CRC-32 check"):
        load_bundle(path)


def test_weights_cut_short_are_damaged_not_an_io_error_to_retry(tmp_path, tiny_bundle):
    """A ``model.pt`` cut short: torch says ``[Errno 22] Invalid argument``, which read as an I/O
    error that may pass (``transient``): a daemon retried the version with its files unchanged and
    logged an error at each try, for good (a walk). It is damaged: said so, not transient."""
    path = save_bundle(tiny_bundle, tmp_path / "b")
    weights = path / "model.pt"
    weights.write_bytes(weights.read_bytes()[:6000])  # (torch: EINVAL past the first 4 KiB or so)
    with pytest.raises(BundleError) as err:
        load_bundle(path)
    assert not err.value.transient and "cut short" in str(err.value), (str(err.value), err.value.transient)


def test_weights_saved_without_crc32s_still_load(tmp_path, tiny_bundle):
    """``torch.serialization.set_crc32_options(False)`` (torch >= 2.4) has ``torch.save`` record a
    CRC-32 of 0 for every entry: a valid file, which torch loads. The CRC check read each 0 as a
    mismatch and refused the bundle as damaged."""
    import torch

    if not hasattr(torch.serialization, "set_crc32_options"):
        pytest.skip("this torch always records CRC-32s")
    path = save_bundle(tiny_bundle, tmp_path / "b")
    torch.serialization.set_crc32_options(False)
    try:
        torch.save(tiny_bundle.state_dict, path / "model.pt")
    finally:
        torch.serialization.set_crc32_options(True)
    with zipfile.ZipFile(path / "model.pt") as archive:
        assert {info.CRC for info in archive.infolist()} == {0}
    assert set(load_bundle(path).state_dict) == set(tiny_bundle.state_dict)
