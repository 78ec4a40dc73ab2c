"""What a second mutation pass over service/registry.py and service/registry_listing.py found no
test pinning: the lock's exclusivity, how HISTORY is bounded, ordered and repaired, how publish
numbers and cleans up, what prune sweeps, and what ``models list`` and ``show`` read of odd metadata."""

from __future__ import annotations

import fcntl
import json
import math
import os
import time
from pathlib import Path

import pytest

from sensorguard.service import registry
from sensorguard.service.bundle import Bundle, BundleError
from sensorguard.service.registry import (
    LOCK_FILE,
    current_history,
    current_version,
    list_versions,
    location,
    pointer_lock,
    promote,
    prune,
    publish,
    read_meta,
    resolve_current,
    rollback,
    set_current,
    set_shadow,
    versions_or_error,
)
from sensorguard.service.registry_listing import describe, version_infos

NAME = "pump"


def rewrite_meta(root: Path, version: str, **fields: object) -> None:
    """Set ``fields`` in a version's ``bundle.json`` (as a hand edit or an older writer leaves it)."""
    path = root / NAME / version / "bundle.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def test_the_pointer_lock_shuts_out_shared_holders_too(tmp_path: Path, tiny_bundle: Bundle):
    """The pointer lock is exclusive: a shared flock taken meanwhile fails. Taken shared, two writers
    (a retrain and a ``models promote``) both held it and each rewrote HISTORY over the other."""
    publish(tiny_bundle, tmp_path, NAME)
    fd = os.open(tmp_path / NAME / LOCK_FILE, os.O_RDONLY)
    try:
        with pointer_lock(tmp_path, NAME), pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_history_keeps_the_newest_lines(tmp_path: Path, tiny_bundle: Bundle, monkeypatch: pytest.MonkeyPatch):
    """HISTORY is bounded to its newest ``HISTORY_KEPT`` lines: the oldest go, never the recent ones
    rollback returns to (nor does it grow without end with a weekly retrain)."""
    monkeypatch.setattr(registry, "HISTORY_KEPT", 3)
    for _ in range(5):
        publish(tiny_bundle, tmp_path, NAME)
    assert (tmp_path / NAME / "HISTORY").read_text() == "v0003\nv0004\nv0005\n"
    assert rollback(tmp_path, NAME) == ("v0005", "v0004")


def test_a_failed_current_write_leaves_history_as_it_was(tmp_path: Path, tiny_bundle: Bundle,
                                                         monkeypatch: pytest.MonkeyPatch):
    """CURRENT is written before HISTORY: a write of CURRENT that fails (a full disk) leaves no
    HISTORY line for a version never current, which a rollback would then have gone "back" to."""
    publish(tiny_bundle, tmp_path, NAME)
    publish(tiny_bundle, tmp_path, NAME, make_current=False)
    real = registry.write_durably

    def full_disk(path: Path, text: str) -> None:
        if path.name == "CURRENT":
            raise OSError(28, "No space left on device")
        real(path, text)

    monkeypatch.setattr(registry, "write_durably", full_disk)
    with pytest.raises(OSError, match="No space"):
        set_current(tmp_path, NAME, "v0002")
    assert current_version(tmp_path, NAME) == "v0001"
    assert (tmp_path / NAME / "HISTORY").read_text() == "v0001\n"


def test_a_current_missing_from_history_is_added_back_on_read(tmp_path: Path, tiny_bundle: Bundle):
    """A crash between the CURRENT and the HISTORY writes leaves HISTORY one behind: the history read
    ends with CURRENT all the same, so the next change keeps it and a rollback returns to it."""
    publish(tiny_bundle, tmp_path, NAME)
    publish(tiny_bundle, tmp_path, NAME, make_current=False)
    publish(tiny_bundle, tmp_path, NAME, make_current=False)
    (tmp_path / NAME / "CURRENT").write_text("v0002\n")  # (HISTORY still says v0001 only)
    assert current_history(tmp_path, NAME) == ["v0001", "v0002"]
    set_current(tmp_path, NAME, "v0003")
    assert rollback(tmp_path, NAME) == ("v0003", "v0002")


def test_history_lines_that_name_no_version_are_left_out(tmp_path: Path, tiny_bundle: Bundle):
    """A HISTORY edited by hand (a comment, a blank line, a typo) is read for its versions only."""
    publish(tiny_bundle, tmp_path, NAME)
    (tmp_path / NAME / "HISTORY").write_text("# by hand\n\nv01\nv0001\n")
    assert current_history(tmp_path, NAME) == ["v0001"]


def test_publish_after_prune_takes_the_number_after_the_newest(tmp_path: Path, tiny_bundle: Bundle):
    """The next version is one past the highest number, not past the count: once prune deleted old
    versions the count pointed at a number still taken and publish failed."""
    for _ in range(3):
        publish(tiny_bundle, tmp_path, NAME)
    assert prune(tmp_path, NAME, 1) == ["v0001"]
    assert publish(tiny_bundle, tmp_path, NAME) == "v0004"


def test_a_publish_that_fails_says_why_and_leaves_no_temp_folder(tmp_path: Path, tiny_bundle: Bundle,
                                                                 monkeypatch: pytest.MonkeyPatch):
    """A rename that fails for another reason than a number taken (a full disk) is that error, at
    once, not a hundred tries and "no free version number"; and its temp folder is removed."""
    publish(tiny_bundle, tmp_path, NAME)

    def full_disk(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(registry.os, "rename", full_disk)
    with pytest.raises(OSError, match="No space"):
        publish(tiny_bundle, tmp_path, NAME)
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / NAME).iterdir()) == [".lock", "CURRENT", "HISTORY", "v0001"]


def test_the_registry_folder_is_synced_after_a_publish_and_a_prune(tmp_path: Path, tiny_bundle: Bundle,
                                                                   monkeypatch: pytest.MonkeyPatch):
    """A version renamed into place or deleted is a change of the model's folder: the folder is
    fsynced, or a power cut can bring a published version back as nothing (or a pruned one back)."""
    for _ in range(3):
        publish(tiny_bundle, tmp_path, NAME)
    synced: list[Path] = []
    monkeypatch.setattr(registry, "fsync_path", synced.append)
    publish(tiny_bundle, tmp_path, NAME, make_current=False)
    assert synced == [tmp_path / NAME]
    synced.clear()
    assert prune(tmp_path, NAME, 1) == ["v0001"]
    assert synced == [tmp_path / NAME]


def test_prune_removes_old_saves_left_behind_too(tmp_path: Path, tiny_bundle: Bundle):
    """A killed save leaves ``.<folder>.old``: prune removes one older than an hour, as it does
    ``.incoming.*``, and leaves a recent one (a save may be running)."""
    publish(tiny_bundle, tmp_path, NAME)
    old, fresh = tmp_path / NAME / ".v0001.old", tmp_path / NAME / ".v0002.old"
    old.mkdir(), fresh.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert prune(tmp_path, NAME, 1) == []
    assert not old.exists() and fresh.exists()


def test_a_version_folder_outside_a_registry_has_no_location(tmp_path: Path, tiny_bundle: Bundle):
    """``location`` tells a registry version (``calibrate`` then publishes a new version) from a
    bundle folder that merely is called ``v0001``: without ``CURRENT`` beside it, it is none."""
    publish(tiny_bundle, tmp_path, NAME)
    assert location(tmp_path / NAME / "v0001") == (tmp_path.resolve(), NAME, "v0001")
    (tmp_path / "loose" / "v0001").mkdir(parents=True)
    assert location(tmp_path / "loose" / "v0001") is None


def test_a_model_the_registry_does_not_hold(tmp_path: Path):
    """An unknown name: no versions (not a FileNotFoundError), a clear error where versions are
    needed, and no current version to resolve (not a path ending in "None")."""
    assert list_versions(tmp_path, NAME) == []
    with pytest.raises(BundleError, match="no versions of model 'pump'"):
        versions_or_error(tmp_path, NAME)
    with pytest.raises(BundleError, match="no current version of model 'pump'"):
        resolve_current(tmp_path, NAME)


def test_an_absent_version_is_named_as_absent(tmp_path: Path, tiny_bundle: Bundle):
    """promote, shadow and show of a version the registry does not hold say so, not that its
    files could not be read."""
    publish(tiny_bundle, tmp_path, NAME)
    for call in (lambda: promote(tmp_path, NAME, "v0009"), lambda: set_shadow(tmp_path, NAME, "v0009"),
                 lambda: describe(tmp_path, NAME, "v0009")):
        with pytest.raises(BundleError, match="has no version 'v0009'"):
            call()


def test_a_bundle_json_that_is_no_object_is_read_as_unreadable(tmp_path: Path, tiny_bundle: Bundle):
    """``bundle.json`` holding JSON that is no object (a list) lists as unreadable, and ``models
    show`` says so, rather than failing with a TypeError."""
    publish(tiny_bundle, tmp_path, NAME)
    (tmp_path / NAME / "v0001" / "bundle.json").write_text("[1]")
    assert read_meta(tmp_path / NAME / "v0001") == {"created": "unreadable"}
    assert version_infos(tmp_path, NAME)[0].created == "unreadable"
    with pytest.raises(BundleError, match="is not a JSON object"):
        describe(tmp_path, NAME, "v0001")


def test_show_of_a_version_not_current_says_so(tmp_path: Path, tiny_bundle: Bundle):
    """``models show VERSION`` marks whether that version is the current one."""
    publish(tiny_bundle, tmp_path, NAME)
    publish(tiny_bundle, tmp_path, NAME, make_current=False)
    assert describe(tmp_path, NAME, "v0002")["current"] is False
    assert describe(tmp_path, NAME)["version"] == "v0001" and describe(tmp_path, NAME)["current"] is True


def test_the_listing_reads_each_field_of_bundle_json(tmp_path: Path, tiny_bundle: Bundle):
    """Each column of ``models list`` comes from its own field: the data span from
    ``training.time_range``, the gate's verdict (``passed``) apart from what retrain did
    (``promoted``), and the channels, window and period a daemon's hot swap compares."""
    publish(tiny_bundle, tmp_path, NAME)
    rewrite_meta(tmp_path, "v0001", created="2026-01-01T00:00:00Z", window=16, sample_period=2,
                 training={"time_range": ["2025-12-01", "2025-12-31"], "rows": 4000},
                 metrics={"promoted": False, "passed": True})
    (info,) = version_infos(tmp_path, NAME)
    assert (info.version, info.current, info.created, info.data_from, info.data_to, info.rows) == (
        "v0001", True, "2026-01-01T00:00:00Z", "2025-12-01", "2025-12-31", 4000)
    assert (info.threshold, info.promoted, info.passed, info.weights) == (0.5, False, True, True)
    assert (info.channels, info.window, info.sample_period) == (("a", "b", "c"), 16, 2.0)


def test_the_listing_shows_odd_fields_as_unknown(tmp_path: Path, tiny_bundle: Bundle):
    """A version whose fields are missing, null or of the wrong shape lists with "?" and blanks
    rather than failing the listing of the whole registry or showing them garbled."""
    publish(tiny_bundle, tmp_path, NAME)
    meta = json.loads((tmp_path / NAME / "v0001" / "bundle.json").read_text())
    del meta["created"]
    meta.update(threshold="high", window="16", sample_period="1s", channels="abc",
                training={"time_range": ["2025-12-01"], "rows": None}, time_range=["x", "y"])
    (tmp_path / NAME / "v0001" / "bundle.json").write_text(json.dumps(meta))
    (info,) = version_infos(tmp_path, NAME)
    assert (info.created, info.data_from, info.data_to, info.rows) == ("?", None, None, "?")
    assert math.isnan(info.threshold)
    assert (info.channels, info.window, info.sample_period) == ((), None, None)


def test_clearing_the_shadow_drops_its_live_counts(tmp_path: Path, tiny_bundle: Bundle):
    """SHADOW cleared is SHADOW changed: the live reports of the run that ended go with it, as they
    do when SHADOW or CURRENT moves."""
    publish(tiny_bundle, tmp_path, NAME)
    publish(tiny_bundle, tmp_path, NAME, make_current=False)
    set_shadow(tmp_path, NAME, "v0002")
    (tmp_path / NAME / "live").mkdir()
    (tmp_path / NAME / "live" / "plant.json").write_text("{}")
    set_shadow(tmp_path, NAME, None)
    assert not (tmp_path / NAME / "SHADOW").exists()
    assert not list((tmp_path / NAME / "live").glob("*.json"))


def test_prune_keeps_what_rollback_returns_to_past_a_version_deleted_by_hand(tmp_path: Path, tiny_bundle: Bundle):
    """A version of the history deleted by hand is no version rollback returns to (it skips it), so
    it does not count toward ``keep``: ``--keep 1`` kept the deleted one's name and deleted the
    version a rollback would then have gone back to."""
    import shutil

    for _ in range(3):
        publish(tiny_bundle, tmp_path, NAME)
    shutil.rmtree(tmp_path / NAME / "v0002")
    assert prune(tmp_path, NAME, 1) == []
    assert rollback(tmp_path, NAME) == ("v0003", "v0001")
