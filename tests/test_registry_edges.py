"""Edges of the registry that no test pinned (found by mutating service/registry.py): what names a
version, how publishers racing for a number settle, and what HISTORY, prune and rollback keep."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from sensorguard.service import registry
from sensorguard.service.bundle import BundleError
from sensorguard.service.registry import (
    current_version,
    list_versions,
    publish,
    readable_current,
)

NAME = "pump"


def test_a_version_is_v_and_at_least_four_digits(tmp_path: Path, tiny_bundle):
    """``v0001``... name versions: a folder ``v001`` is no version (not listed) and a CURRENT naming
    one is refused, as a garbled pointer is, rather than served."""
    publish(tiny_bundle, tmp_path, NAME)
    (tmp_path / NAME / "v001").mkdir()
    assert list_versions(tmp_path, NAME) == ["v0001"]
    (tmp_path / NAME / "CURRENT").write_text("v001\n")
    with pytest.raises(BundleError, match="does not name a version"):
        current_version(tmp_path, NAME)


def test_a_publisher_that_lost_the_race_for_a_number_takes_the_next(tmp_path: Path, tiny_bundle, monkeypatch):
    """Two publishers (a retrain, a ``calibrate``) read the same next number; the one whose rename
    fails because the other took it tries the number after, rather than failing."""
    publish(tiny_bundle, tmp_path, NAME)
    real, raced = os.rename, []

    def rename(src, dst):
        if Path(dst).name == "v0002" and not raced:  # the other publisher got there first
            raced.append(dst)
            shutil.copytree(src, dst)  # (its bundle lands at v0002)
            raise OSError(39, "Directory not empty")
        return real(src, dst)

    monkeypatch.setattr(registry.os, "rename", rename)
    assert publish(tiny_bundle, tmp_path, NAME) == "v0003"
    assert list_versions(tmp_path, NAME) == ["v0001", "v0002", "v0003"]


def test_versions_are_ordered_by_number_past_v9999(tmp_path: Path, tiny_bundle):
    """Versions sort by their number, not as text: ``v10000`` is newer than ``v9999`` (as text it
    sorted first, so ``prune`` kept the wrong newest and the listing put the newest first)."""
    publish(tiny_bundle, tmp_path, NAME)
    for version in ("v9999", "v10000"):
        (tmp_path / NAME / version).mkdir()
    assert list_versions(tmp_path, NAME) == ["v0001", "v9999", "v10000"]


def test_an_io_error_reading_current_is_transient_and_never_taken_as_no_version(tmp_path: Path, tiny_bundle,
                                                                                monkeypatch):
    """A pointer that cannot be read for an I/O error is a *transient* BundleError (the daemon tries
    again; ``models`` verbs stop): :func:`readable_current` raises it rather than taking the model
    as having no current version (a promote or rollback would then rewrite HISTORY from nothing);
    a folder where CURRENT belongs is no passing error: taken as none."""
    publish(tiny_bundle, tmp_path, NAME)
    real = Path.read_text

    def flaky(self, *args, **kwargs):
        if self.name == "CURRENT":
            raise OSError(5, "Input/output error")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", flaky)
    with pytest.raises(BundleError) as failed:
        current_version(tmp_path, NAME)
    assert failed.value.transient
    with pytest.raises(BundleError):
        readable_current(tmp_path, NAME)
    monkeypatch.undo()
    (tmp_path / NAME / "CURRENT").unlink()
    (tmp_path / NAME / "CURRENT").mkdir()
    with pytest.raises(BundleError) as failed:
        current_version(tmp_path, NAME)
    assert not failed.value.transient
    assert readable_current(tmp_path, NAME) is None


def test_the_pointer_lock_excludes_a_second_holder(tmp_path: Path, tiny_bundle):
    """``pointer_lock`` holds an exclusive flock on ``<name>/.lock`` while CURRENT and HISTORY are
    read and rewritten: a second writer (another open of the file, as another process makes) cannot
    take it meanwhile, and can once it is released."""
    import fcntl

    from sensorguard.service.registry import LOCK_FILE, pointer_lock

    publish(tiny_bundle, tmp_path, NAME)

    def try_lock() -> bool:
        fd = os.open(tmp_path / NAME / LOCK_FILE, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    with pointer_lock(tmp_path, NAME):
        assert not try_lock()
    assert try_lock()


def test_current_is_set_only_to_a_version_folder(tmp_path: Path, tiny_bundle):
    """``set_current`` takes a version's name only: a folder that is no version (``live``, where the
    shadow's reports go) is refused, not written into CURRENT for every daemon to refuse."""
    from sensorguard.service.registry import LIVE_DIR, set_current

    publish(tiny_bundle, tmp_path, NAME)
    (tmp_path / NAME / LIVE_DIR).mkdir()
    with pytest.raises(BundleError, match="has no version 'live'"):
        set_current(tmp_path, NAME, LIVE_DIR)
    assert current_version(tmp_path, NAME) == "v0001"


def test_setting_current_to_itself_adds_no_history_line(tmp_path: Path, tiny_bundle):
    """HISTORY lists the versions that were CURRENT, a line each time it *changed*: CURRENT set again
    to the version it names adds none (a retrain's or a promote's repeat filled the 1000 lines kept
    with one version, and pushed out the ones rollback returns to)."""
    from sensorguard.service.registry import current_history, set_current

    publish(tiny_bundle, tmp_path, NAME)
    publish(tiny_bundle, tmp_path, NAME)
    set_current(tmp_path, NAME, "v0002")
    assert current_history(tmp_path, NAME) == ["v0001", "v0002"]
    assert (tmp_path / NAME / "HISTORY").read_text() == "v0001\nv0002\n"


def test_prune_refuses_to_keep_fewer_than_one(tmp_path: Path, tiny_bundle):
    """``prune`` called with ``keep`` 0 (from code: the CLI refuses it first) is refused: ``[-0:]``
    is the whole list, so it silently kept every version."""
    from sensorguard.service.registry import prune

    publish(tiny_bundle, tmp_path, NAME)
    with pytest.raises(BundleError, match="at least 1"):
        prune(tmp_path, NAME, 0)


def test_prune_keeps_keep_distinct_versions_rollback_returns_to(tmp_path: Path, tiny_bundle):
    """A version current twice is one version rollback returns to: ``keep`` counts distinct ones
    (a history going back and forth spent the count on repeats and deleted one still needed)."""
    from sensorguard.service.registry import prune, set_current

    for _ in range(7):
        publish(tiny_bundle, tmp_path, NAME, make_current=False)
    for version in ("v0001", "v0003", "v0002", "v0003", "v0002", "v0007"):
        set_current(tmp_path, NAME, version)
    assert prune(tmp_path, NAME, 3) == ["v0004"]  # kept: v0002, v0003, v0001 before it; v0005-v0007 newest


def test_promoting_the_shadow_by_hand_ends_the_shadow(tmp_path: Path, tiny_bundle):
    """``models promote`` of the version SHADOW names makes it current and ends the shadow: the
    daemons would compare it with itself."""
    from sensorguard.service.registry import promote, set_shadow, shadow_version

    publish(tiny_bundle, tmp_path, NAME)
    publish(tiny_bundle, tmp_path, NAME, make_current=False)
    set_shadow(tmp_path, NAME, "v0002")
    assert promote(tmp_path, NAME, "v0002") == ("v0001", "v0002")
    assert current_version(tmp_path, NAME) == "v0002" and shadow_version(tmp_path, NAME) is None
