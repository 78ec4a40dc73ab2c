"""Which model each cluster member serves: a worker joins only a cluster whose members read its channels.

Every worker writes its model's mark in its ``member.<worker>`` key (:mod:`~sensorguard.service.ownership`):
the version and a fingerprint of the channel list. Before it first joins, a worker reads the other
members' marks. One whose model reads other channels takes no partition: the readings of the assets it
would own are refused as ``unknown_channel`` and, acknowledged in the stream, lost (a cluster walk: a
6-channel model joined an 8-channel cluster silently and took two partitions). It waits, saying so once
a minute, until the members agree (a hot swap cannot change a model's channels: the other workers
restart on it), and joins then. A worker serving its registry's ``CURRENT`` joins all the same, with a
warning, when none of the members of other channels serves theirs: it is a rollout's new model, and
kept out, every worker restarted on it waited until the last old one restarted, the partitions
crowding onto the old ones meanwhile. (Every follower of a registry serves its ``CURRENT``: one of
another model line, ``--name`` mistyped or a registry copy not updated, meets members that are
``CURRENT`` too and waits, a review.) Another version with the same channels joins with a warning: an
asset's line then depends on which worker owns it, which a registry swap in progress also shows for a
moment. Members that write no mark (an older sensorguard) are not compared.

Two workers with different models that start within the same second both see no mark and both join:
the check is for the common mistake, a worker started later with another model, not a lock.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

MEMBER = "member."  # the prefix of the members' keys in the owners' bucket


def channel_mark(channels: tuple[str, ...], version: str, current: bool = False) -> dict[str, Any]:
    """What a member's key says of its model: its version, its channel count and their fingerprint (of
    the names sorted: readings are taken by name, so a model of the same channels in another order
    reads the same readings), and whether it is the registry's ``CURRENT`` (a rollout's new model)."""
    digest = hashlib.sha256(json.dumps(sorted(channels)).encode()).hexdigest()[:16]
    return {"model": version, "channels": digest, "n_channels": len(channels), **({"current": True} if current else {})}


def model_mark(bundle: Any, settings: Any) -> dict[str, Any]:
    """:func:`channel_mark` of the bundle served: ``CURRENT`` when it is the version the registry it
    follows names now (``registry`` and ``name`` set; a bundle served by path is not)."""
    from sensorguard.service.registry import current_version

    current = False
    if settings.registry and settings.name:
        try:
            current = current_version(settings.registry, settings.name) == bundle.version
        except Exception:  # noqa: BLE001 - an unreadable registry: not known to be CURRENT
            current = False
    return channel_mark(bundle.channels, bundle.version, current)


async def other_models(kv: Any, worker: str, mark: dict[str, Any], keys: Callable[[], Awaitable[list[str]]],
                       timeout_s: float) -> tuple[list[str], list[str], bool]:
    """``(members whose model reads other channels, members serving another version of the same
    channels, whether one of the former serves its registry's CURRENT)``, each member as
    ``"<member> (<version>, <n> channels)"``, from the members' keys now."""
    from nats.js.errors import KeyDeletedError, KeyNotFoundError

    names = sorted(key[len(MEMBER):] for key in await asyncio.wait_for(keys(), timeout_s) if key.startswith(MEMBER))
    channels, versions, current = [], [], False
    for name in names:
        if name == worker:
            continue
        try:
            entry = await asyncio.wait_for(kv.get(f"{MEMBER}{name}"), timeout_s)
            theirs = json.loads(entry.value or b"{}")
        except (KeyNotFoundError, KeyDeletedError, ValueError):  # left since the listing, or not ours to read
            continue
        if not isinstance(theirs, dict) or "channels" not in theirs:  # an older worker: no mark to compare
            continue
        said = f"{name} ({theirs.get('model') or 'no version'}, {theirs.get('n_channels', '?')} channels)"
        if theirs["channels"] != mark["channels"]:
            channels.append(said)
            current = current or theirs.get("current") is True
        elif theirs.get("model") != mark["model"]:
            versions.append(said)
    return channels, versions, current
