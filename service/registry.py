"""The registry: versions of a named model and the ``CURRENT`` pointer, and what ``models`` does.

``<root>/<name>/v0001, v0002, ...`` plus ``<root>/<name>/CURRENT``, a one-line file switched
atomically (temp file, fsync, rename), so a half-written version is never current. A version is
published by renaming a complete temp directory into place, so readers see all of it or nothing.

``<root>/<name>/HISTORY`` lists the versions that were ``CURRENT``, oldest first, one per line
(rewritten atomically like ``CURRENT``). ``models rollback`` goes back to the previous line, so it
returns to the model that was served before, never to a newer candidate that the gate rejected and
that was never current. A registry from before the history starts it with its ``CURRENT``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from sensorguard.service.bundle import Bundle, BundleError, write_files
from sensorguard.service.bundle_loading import load_bundle, transient_error
from sensorguard.service.durable import fsync_path, temp_folder, write_durably
from sensorguard.service.logs import first_line

log = logging.getLogger(__name__)

CURRENT_FILE = "CURRENT"
SHADOW_FILE = "SHADOW"  # a candidate the daemon scores beside CURRENT without announcing (service.shadow)
HISTORY_FILE = "HISTORY"
LIVE_DIR = "live"  # each instance's live counts of SHADOW beside CURRENT (service.shadow), for the live gate
LOCK_FILE = ".lock"  # flock: one writer of CURRENT and HISTORY at a time
HISTORY_KEPT = 1000  # lines of CURRENT history kept (the oldest go)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # (fullmatch: "$" let "pump\n" through)
_VERSION_RE = re.compile(r"v(\d{4,})")
PUBLISH_TRIES = 100  # concurrent publishers taking the next number, at most


def validate_name(name: str) -> str:
    """Model names become directory names: letters, digits, ``.``, ``_``, ``-`` only (no traversal)."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name in {".", ".."}:
        raise BundleError(
            f"invalid model name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def list_versions(root: str | os.PathLike, name: str) -> list[str]:
    """Complete versions of ``name``, oldest first (temp dirs and stray files are ignored)."""
    base = Path(root) / validate_name(name)
    if not base.is_dir():
        return []
    found = [p.name for p in base.iterdir() if p.is_dir() and _VERSION_RE.fullmatch(p.name)]
    return sorted(found, key=lambda v: int(v[1:]))


def current_version(root: str | os.PathLike, name: str) -> str | None:
    """The version named in ``CURRENT``, or None when there is none yet."""
    return _pointer(root, name, CURRENT_FILE)


def _pointer(root: str | os.PathLike, name: str, file: str) -> str | None:
    """The version a pointer file (``CURRENT``, ``SHADOW``) names, or None when it is absent."""
    pointer = Path(root) / validate_name(name) / file
    try:
        version = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # a directory, unreadable, not text
        raise BundleError(f"{pointer}: cannot be read ({exc})", transient=transient_error(exc)) from None
    if not _VERSION_RE.fullmatch(version):
        raise BundleError(f"{pointer}: does not name a version ({version[:40]!r})")
    return version


def readable_current(root: str | os.PathLike, name: str) -> str | None:
    """:func:`current_version`, None for a ``CURRENT`` that names no version (edited by hand, empty),
    logged: ``models promote`` and ``rollback`` are how it is set right, and they refused it too
    (found in a walk); the daemon and ``retrain`` still refuse it (:func:`current_version`)."""
    try:
        return current_version(root, name)
    except BundleError as exc:
        if exc.transient:
            raise
        log.warning("%s: taken as no current version", exc)
        return None


def resolve_current(root: str | os.PathLike, name: str) -> Path:
    """Path of the current bundle of ``name``; a clear error when the registry has none."""
    version = current_version(root, name)
    if version is None:
        raise BundleError(f"no current version of model {name!r} in registry {root}")
    path = Path(root) / name / version
    if not path.is_dir():  # (said "bundle directory not found: .../v0009", naming neither CURRENT nor the fix: a walk)
        raise BundleError(f"CURRENT of model {name!r} names {version}, which registry {root} does not hold: "
                          f"sensorguard models promote VERSION --registry {root} --name {name} sets it right")
    return path


def load_current(root: str | os.PathLike, name: str) -> Bundle:
    path = resolve_current(root, name)
    return replace(load_bundle(path), name=name, version=path.name)


class CurrentMoved(BundleError):
    """CURRENT is not the version the caller expected (another writer moved it meanwhile)."""


_ANY = object()


@contextmanager
def pointer_lock(root: str | os.PathLike, name: str) -> Iterator[None]:
    """Hold the model's pointer lock (``<name>/.lock``, flock): CURRENT and HISTORY are read,
    checked and rewritten by one writer at a time (a retrain, ``models promote`` or ``rollback``),
    so none overwrites what another just did or loses its HISTORY line."""
    base = Path(root) / validate_name(name)
    # read-only: flock needs no write access, so a .lock root created (sudo models rollback) still works
    fd = os.open(base / LOCK_FILE, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # (releases the lock)


def set_current(root: str | os.PathLike, name: str, version: str, history: list[str] | None = None,
                expect: object = _ANY) -> None:
    """Point CURRENT at ``version`` atomically (temp file, fsync, rename) and append it to HISTORY
    (``history``: the history to write instead, ending with ``version``, as a rollback does).
    ``expect``: the version (or None) CURRENT must still be; :class:`CurrentMoved` otherwise.
    Takes the pointer lock; :func:`_set_current` is the same for a caller that holds it."""
    with pointer_lock(root, name):
        if expect is not _ANY and current_version(root, name) != expect:
            raise CurrentMoved(f"CURRENT of {name!r} is {current_version(root, name)}, not {expect}")
        _set_current(root, name, version, history)


def _set_current(root: str | os.PathLike, name: str, version: str, history: list[str] | None = None,
                 current: object = _ANY) -> None:
    """``current``: CURRENT as the caller read it already (else read here), for the history."""
    base = Path(root) / validate_name(name)
    if not _VERSION_RE.fullmatch(version) or not (base / version).is_dir():
        raise BundleError(f"model {name!r} has no version {version!r} in registry {root}")
    read = readable_current(root, name) if current is _ANY else current
    if history is None:
        history = _history(root, name, read)  # type: ignore[arg-type]
        if not history or history[-1] != version:
            history.append(version)
    write_durably(base / CURRENT_FILE, version + "\n")  # first: a crash before HISTORY is repaired on read
    write_durably(base / HISTORY_FILE, "".join(f"{v}\n" for v in history[-HISTORY_KEPT:]))
    fsync_path(base)
    if read != version:
        _forget_live_counts(base)


def _forget_live_counts(base: Path) -> None:
    """``SHADOW`` or ``CURRENT`` changed: every daemon restarts its live count, so the reports of the
    runs before go. Left, one from another worker count (plant-w0, plant-w1) counted as a third
    instance beside the next run of the same pair, its alerts with it, until it went stale (a walk)."""
    try:  # (a report written by the daemon's account may not be this one's to delete: the change stands)
        for report in (base / LIVE_DIR).glob("*.json"):
            report.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("the live counts of the runs before could not be deleted (%s): the live gate sums them until "
                    "they go stale", first_line(exc))


def shadow_version(root: str | os.PathLike, name: str) -> str | None:
    """The version named in ``SHADOW``, or None when no candidate is shadowed."""
    return _pointer(root, name, SHADOW_FILE)


def set_shadow(root: str | os.PathLike, name: str, version: str | None) -> None:
    """Point ``SHADOW`` at ``version`` (after checking it loads), atomically; None removes it."""
    base = Path(root) / validate_name(name)
    if version is None:
        if (base / SHADOW_FILE).exists():
            (base / SHADOW_FILE).unlink(missing_ok=True)
            fsync_path(base)
            _forget_live_counts(base)
        return
    if version not in list_versions(root, name):
        raise BundleError(f"model {name!r} has no version {version!r} in registry {root}")
    try:
        load_bundle(base / version)
    except BundleError as exc:
        raise BundleError(f"refusing to shadow {version}: {exc}") from None
    if version == current_version(root, name):
        raise BundleError(f"{version} is CURRENT already: shadow a candidate")
    if version == shadow_version(root, name):  # unchanged: the running shadow's count goes on
        return
    write_durably(base / SHADOW_FILE, version + "\n")
    fsync_path(base)
    _forget_live_counts(base)


def current_history(root: str | os.PathLike, name: str) -> list[str]:
    """The versions that were CURRENT, oldest first (a registry without HISTORY: its CURRENT)."""
    return _history(root, name, current_version(root, name))


def _history(root: str | os.PathLike, name: str, current: str | None) -> list[str]:
    path = Path(root) / validate_name(name) / HISTORY_FILE
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        history = [v for v in lines if _VERSION_RE.fullmatch(v)]
    except FileNotFoundError:
        history = []
    if current and (not history or history[-1] != current):  # CURRENT set by hand or before the history
        history.append(current)
    return history


def publish(bundle: Bundle, root: str | os.PathLike, name: str, make_current: bool = True) -> str:
    """Store ``bundle`` as the next version of ``name``; return the version (``v0001``...)."""
    base = Path(root) / validate_name(name)
    base.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder(base, ".incoming.")
    try:
        write_files(bundle, tmp)
        for _ in range(PUBLISH_TRIES):
            # every name a version could have counts, a stray file too: renaming onto it fails forever
            taken = [int(p.name[1:]) for p in base.iterdir() if _VERSION_RE.fullmatch(p.name)]
            version = f"v{max(taken, default=0) + 1:04d}"
            try:
                os.rename(tmp, base / version)  # fails if a concurrent publisher took the number
                break
            except OSError:
                if not (base / version).exists():
                    raise
        else:
            raise BundleError(f"{base}: no free version number after {PUBLISH_TRIES} tries")
        fsync_path(base)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if make_current:
        set_current(root, name, version)
    return version


def prune(root: str | os.PathLike, name: str, keep: int) -> list[str]:
    """Delete the versions nothing needs any more; the ones deleted, oldest first.

    Kept: ``CURRENT``, ``SHADOW``, the last ``keep`` versions of HISTORY before ``CURRENT`` (what
    ``rollback`` can return to) and the newest ``keep`` versions (recent candidates, promoted or not). A weekly
    retrain publishes a version each time, rejected candidates too, so without this the registry
    only grows. Temporary folders a killed publish or save left (``.incoming.*``, ``.*.old``)
    older than an hour go too.
    """
    if keep < 1:
        raise BundleError(f"--keep must be at least 1, got {keep}")
    base = Path(root) / validate_name(name)
    versions = versions_or_error(root, name)
    removed = []
    with pointer_lock(root, name):
        current = current_version(root, name)
        needed = {current, shadow_version(root, name)}
        # the history ends with CURRENT itself: the versions rollback returns to are the ones before
        # it (``--keep 1`` kept CURRENT alone and deleted the one rollback needed; found in a README walk);
        # one deleted by hand is skipped, as rollback skips it (it took the count: the one before it went)
        before = [v for v in dict.fromkeys(reversed(current_history(root, name))) if v != current and v in versions]
        needed |= set(before[:keep]) | set(versions[-keep:])
        for version in versions:
            if version not in needed:
                shutil.rmtree(base / version)
                removed.append(version)
    cutoff = time.time() - 3600
    for stale in [*base.glob(".incoming.*"), *base.glob(".*.old")]:
        if stale.is_dir() and stale.stat().st_mtime < cutoff:
            shutil.rmtree(stale, ignore_errors=True)
    if removed:
        fsync_path(base)
    return removed


def promote(root: str | os.PathLike, name: str, version: str, expect: object = _ANY) -> tuple[str | None, str]:
    """Make ``version`` current after checking it loads; ``(old, new)`` current versions.
    ``expect``: the version CURRENT must still be (:class:`CurrentMoved` otherwise)."""
    versions = versions_or_error(root, name)
    if version not in versions:
        raise BundleError(f"model {name!r} has no version {version!r}")
    try:
        load_bundle(Path(root) / name / version)  # never point CURRENT at a bundle that cannot load
    except BundleError as exc:
        raise BundleError(f"refusing to make {version} current: {exc}") from None
    with pointer_lock(root, name):
        old = current_version(root, name) if expect is not _ANY else readable_current(root, name)
        if expect is not _ANY and old != expect:
            raise CurrentMoved(f"not promoted: CURRENT of {name!r} moved to {old} (it was compared with {expect})")
        if old == version:  # current already: nothing written (daemons watching CURRENT would look again)
            if shadow_version(root, name) == version:  # (a rollback onto the shadow: promoting it again ended
                set_shadow(root, name, None)  # the shadow, and still does: a review)
            return old, version
        _set_current(root, name, version, current=old)  # (read once: a garbled CURRENT was logged twice)
    if shadow_version(root, name) == version:  # promoted by hand: it is no longer a shadow
        set_shadow(root, name, None)
    return old, version


def rollback(root: str | os.PathLike, name: str) -> tuple[str | None, str]:
    """Make the version that was CURRENT before the current one current again; ``(old, new)``.

    The current version leaves the history (a second rollback goes one further back); versions
    since deleted or unloadable are skipped."""
    versions = versions_or_error(root, name)
    with pointer_lock(root, name):
        current = readable_current(root, name)
        # a garbled CURRENT: back from what? It "went" to the last version of the history, exit 0
        if current is None and (Path(root) / name / CURRENT_FILE).exists():
            raise BundleError(f"{Path(root) / name / CURRENT_FILE} names no version: make one current with "
                              "models promote VERSION")
        history = _history(root, name, current)
        while history and history[-1] == current:
            history.pop()
        while history:
            candidate = history[-1]
            try:  # (one equal to CURRENT further back: "v0004 -> v0004" said a rollback that did nothing)
                if candidate in versions and candidate != current:
                    load_bundle(Path(root) / name / candidate)
                    _set_current(root, name, candidate, history=history)
                    return current, candidate
            except BundleError:
                pass
            history.pop()
    raise BundleError(f"nothing to roll back to: no version was current before {current} "
                      "(models promote VERSION makes any version current)")


def location(path: str | os.PathLike) -> tuple[Path, str, str] | None:
    """``(root, name, version)`` when ``path`` is a version directory of a registry, else None."""
    path = Path(path).resolve()
    base = path.parent
    if _VERSION_RE.fullmatch(path.name) and (base / CURRENT_FILE).is_file() and _NAME_RE.fullmatch(base.name):
        return base.parent, base.name, path.name
    return None


def read_meta(path: Path) -> dict:
    """A version's ``bundle.json`` as it is, for listing (``{"created": "unreadable"}`` if it is not)."""
    try:
        meta = json.loads((path / "bundle.json").read_text())
    except (OSError, ValueError):
        meta = None
    return meta if isinstance(meta, dict) else {"created": "unreadable"}


def versions_or_error(root: str | os.PathLike, name: str) -> list[str]:
    """The versions of ``name``, oldest first; BundleError when it has none."""
    versions = list_versions(root, name)
    if not versions:
        raise BundleError(f"no versions of model {name!r} in registry {root}")
    return versions
