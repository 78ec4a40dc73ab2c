"""The model a worker of ``serve --workers N`` serves when it is restarted after a crash, and the
copies of their models the workers keep for it.

A restarted worker must serve what its siblings serve (:func:`worker_model`),
and the files it would load that from may be gone or changed since they loaded them: a bundle
directory moved away or replaced while a worker was down, or the served registry version's
``bundle.json`` broken by a hand edit that the running workers refused. Both left the restarted
worker crash-looping with a traceback, its partitions unscored, or serving another model than its
siblings (a walk). So each worker writes the bundle it serves, as it holds it in memory, to its
own folder under a directory the parent owns (``w<k>``, with ``served.json`` naming its name and
version), at its start and after each swap; a restarted worker looks there first. Each worker
writes only its own folder, so no two write the same files.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from sensorguard.service.bundle import Bundle, BundleError, save_bundle
from sensorguard.service.bundle_loading import load_bundle
from sensorguard.service.config import Settings
from sensorguard.service.durable import write_durably
from sensorguard.service.folder_locks import locked
from sensorguard.service.hotswap import incompatible, load_model
from sensorguard.service.logs import first_line

log = logging.getLogger(__name__)

SERVED = "served.json"  # beside a copy: {"name", "version"} of the bundle as its worker serves it


COPIES_PREFIX = "sensorguard-served-"
OWNER = ".owner"  # in a copies folder: locked by its parent as long as it runs


def make_copies_dir(tmp: str | None = None) -> tuple[str, int]:
    """The parent's folder for its workers' copies (removed at stop) and the descriptor of its
    ``OWNER`` lock, held until then; first, the folders whose lock is free are removed: their parent
    died without stopping (a walk: each ``kill -9`` of the parent left a copy of the served model).
    A lock, not a pid: a container's PID 1 restarts as PID 1, and one ``/tmp`` may be shared by
    processes of other pid namespaces (a review). The folder gets its name once locked."""
    root = Path(tmp or tempfile.gettempdir())
    for old in root.glob(f"{COPIES_PREFIX}*"):
        if old.is_dir() and _abandoned(old):
            shutil.rmtree(old, ignore_errors=True)
            if not old.exists():
                log.info("removed %s: the model copies of a serve --workers parent gone without stopping", old)
    making = Path(tempfile.mkdtemp(prefix="sensorguard-making-", dir=root))
    fd = -1
    try:
        fd = os.open(making / OWNER, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        folder = root / f"{COPIES_PREFIX}{os.getpid()}-{making.name.rpartition('-')[2]}"
        making.rename(folder)
    except OSError:  # (a filesystem without locks: nothing left behind, the error said)
        if fd >= 0:
            os.close(fd)
        shutil.rmtree(making, ignore_errors=True)
        raise
    return str(folder), fd


def _abandoned(folder: Path) -> bool:
    """Whether a copies folder's lock is free (its parent is gone); one without a lock file is an
    older version's, left alone."""
    return locked(folder / OWNER) is False


def keep_served(copies: str | None, worker: int, bundle: Bundle) -> None:
    """Write ``bundle`` as worker ``worker`` serves it to ``copies/w<worker>`` (nothing without
    ``copies``). A failure is logged, never raised: the worker serves on, and a restart of it
    falls back to the files the model came from."""
    if not copies:
        return
    folder = Path(copies) / f"w{worker}"
    try:
        (folder / SERVED).unlink(missing_ok=True)  # (a copy half replaced is never taken for the old one)
        save_bundle(bundle, folder)
        write_durably(folder / SERVED, json.dumps({"name": bundle.name, "version": bundle.version}))
    except Exception as exc:  # noqa: BLE001 - torch.save says RuntimeError for a full disk: serving goes on
        log.warning("keeping a copy of the served model %s for a restarted worker failed: %s", bundle.version,
                    first_line(exc))


def served_copy(copies: str | None, version: str) -> Bundle | None:
    """The bundle of ``version`` as a running worker serves it (None: no worker kept one that loads)."""
    for served in sorted(Path(copies).glob(f"w*/{SERVED}")) if copies else ():
        try:
            said = json.loads(served.read_text(encoding="utf-8"))
            if said.get("version") != version:
                continue
            bundle = load_bundle(served.parent)
            if json.loads(served.read_text(encoding="utf-8")) != said:  # the sibling swapped meanwhile
                continue
            return replace(bundle, name=str(said.get("name") or ""), version=version)
        except (OSError, ValueError, AttributeError, BundleError) as exc:  # a sibling replacing its copy now
            log.debug("served copy %s not read: %s", served.parent, exc)
    return None


def worker_model(settings: Settings, fleet: str | None, copies: str | None = None) -> tuple[Bundle, bool]:
    """The model a (re)started worker serves, and whether it is a sibling's copy of a bundle
    directory's model other than what the directory holds now (a reload must then load it:
    :meth:`ModelHolder.serving_a_copy`).

    On the first start (``fleet`` None) what ``settings`` names. On a restart, the version the
    other workers serve (``fleet``): a bundle directory's model only changes at a reload (SIGHUP),
    for all of them at once; with a registry its ``CURRENT`` when they can swap it in (they will at
    their next poll), else theirs: they refused it and wait for a restart of the service. A worker
    restarted after a crash took such a ``CURRENT`` and served one partition with another model, or
    died of it at every restart (both found by review). Theirs comes from the copy a sibling keeps
    (:func:`served_copy`), as it serves it, else from its registry folder: a bundle directory
    moved away or replaced, or the served version's ``bundle.json`` broken by a hand edit, left the
    restarted worker crash-looping or serving another model (a walk)."""
    registry = bool(settings.registry and settings.name)
    try:
        bundle: Bundle | None = load_model(settings)
    except (BundleError, OSError) as exc:
        if not fleet:
            raise
        bundle, problem, failed = None, f"it does not load ({first_line(exc)})", exc
    if not fleet or (bundle is not None and fleet == bundle.version):
        return bundle, False  # type: ignore[return-value]  # (None only when fleet is set)
    theirs = served_copy(copies, fleet)
    if theirs is None and registry:
        try:
            folder = Path(settings.registry) / settings.name / fleet
            theirs = replace(load_bundle(folder), name=settings.name, version=fleet)
        except (BundleError, OSError) as exc:
            if bundle is None:  # neither loads: CURRENT's error is the one to fix
                raise failed from exc
            log.error("the other workers' model %s %s cannot be read (%s): serving CURRENT %s", settings.name, fleet,
                      first_line(exc), bundle.version)
            return bundle, False
    if theirs is None:  # a bundle directory, no copy kept: what it holds now
        if bundle is None:
            raise failed
        log.warning("the other workers serve %s, which no copy holds: serving %s from %s", fleet, bundle.version,
                    settings.model)
        return bundle, False
    if bundle is not None and registry and (problem := incompatible(theirs, bundle)) is None:
        return bundle, False
    if registry:
        log.error("model %s CURRENT not served: %s; serving %s as the other workers do until the service restarts",
                  settings.name, problem, fleet, extra={"event": "model_reload_failed",
                                                       "version": None if bundle is None else bundle.version})
    else:
        log.warning("%s: %s; serving %s as the other workers do, until a reload (SIGHUP) or a restart of the "
                    "service", settings.model, f"it holds {bundle.version}" if bundle is not None else problem, fleet)
    return theirs, not registry  # (a registry's version folder is what it serves, as the others)
