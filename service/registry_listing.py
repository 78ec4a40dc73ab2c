"""What ``models list`` and ``models show`` read of a registry (:mod:`~sensorguard.service.registry`):
each version's line, whether its weights are whole, its ``bundle.json`` shown. Read only: nothing
here changes a registry, so it is apart from the pointers and their locks."""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from sensorguard.service.bundle import WEIGHTS_FILE, BundleError
from sensorguard.service.registry import read_meta, readable_current, versions_or_error


@dataclass(frozen=True)
class VersionInfo:
    """One line of ``models list``: what a version was trained on and whether it is current."""

    version: str
    current: bool
    created: str
    data_from: str | None
    data_to: str | None
    rows: int | str
    threshold: float
    promoted: bool | None  # what retrain did with it (None: published by hand, no gate ran)
    passed: bool | None = None  # the retrain gate's verdict (None: not recorded)
    weights: bool = True  # model.pt is there and whole (see :func:`weights_whole`)
    channels: tuple[str, ...] = ()  # what a running daemon needs of a version it swaps to (hotswap.incompatible)
    window: int | None = None
    sample_period: float | None = None  # seconds (None: irregular, or not recorded)


def version_infos(root: str | os.PathLike, name: str) -> list[VersionInfo]:
    """Every version of ``name``, oldest first (an unreadable ``bundle.json`` shows as such)."""
    current = readable_current(root, name)
    infos = []
    for version in versions_or_error(root, name):
        meta = read_meta(Path(root) / name / version)
        training = _mapping(meta.get("training"))  # (a field null or odd in one version: listed as "?")
        span = training.get("time_range")
        span = span if isinstance(span, list) and len(span) == 2 else [None, None]
        threshold, rows = meta.get("threshold"), training.get("rows", "?")
        infos.append(VersionInfo(
            version, version == current, str(meta.get("created", "?")), span[0], span[1],
            rows if isinstance(rows, int | str) else "?",
            float(threshold) if isinstance(threshold, int | float) else float("nan"),
            (metrics := _mapping(meta.get("metrics"))).get("promoted"), metrics.get("passed"),
            weights_whole(Path(root) / name / version),
            tuple(str(c) for c in channels) if isinstance(channels := meta.get("channels"), list) else (),
            window if isinstance(window := meta.get("window"), int) else None,
            float(period) if isinstance(period := meta.get("sample_period"), int | float) else None,
        ))
    return infos


def weights_whole(path: Path) -> bool:
    """Whether ``model.pt`` is there and ends as a file ``torch.save`` wrote (a zip archive with its
    central directory), read without loading it: a copy cut short (a full disk, an interrupted
    ``rsync``) listed as fine and only ``promote`` or a daemon refused it (a walk)."""
    try:
        return zipfile.is_zipfile(path / WEIGHTS_FILE)
    except OSError:
        return False


def _mapping(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def describe(root: str | os.PathLike, name: str, version: str | None = None) -> dict:
    """``models show``: a version's ``bundle.json`` (default: the current one) and whether it is current."""
    versions = versions_or_error(root, name)
    current = readable_current(root, name)
    version = version or current
    if version is None:
        raise BundleError(f"model {name!r} has no current version: name one (models list shows them)")
    if version not in versions:
        raise BundleError(f"model {name!r} has no version {version!r}")
    try:  # (read_meta's "unreadable", exit 0, hid why: a walk followed the troubleshooting table here)
        meta = json.loads((Path(root) / name / version / "bundle.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{version}/bundle.json cannot be read: {str(exc).splitlines()[0][:200]}") from None
    if not isinstance(meta, dict):
        raise BundleError(f"{version}/bundle.json is not a JSON object")
    _mapping(meta.get("calibration")).pop("errors_sample", None)
    return {"version": version, "current": version == current, **meta}
