"""Which model each cluster member serves: a worker joins only a cluster whose members read its channels.

Every worker writes its model's mark in its ``member.<worker>`` key (:mod:`~sensorguard.service.ownership`):
the version and a fingerprint of the channel list. Before it first joins, a worker reads the other
members' marks. One whose model reads other channels takes no partition: the readings of the assets it
would own are refused as ``unknown_channel`` and, acknowledged in the stream, lost (a cluster walk: a
6-channel model joined an 8-channel cluster silently and took two partitions). It waits, saying so once
a minute, until the members agree (a model swap rolling through the cluster ends it), and joins then.
Another version with the same channels joins with a warning: an asset's line then depends on which
worker owns it, which a registry swap in progress also shows for a moment. Members that write no mark
(an older sensorguard) are not compared. ``serve --workers`` makes the same check of its workers.

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


def model_mark(channels: tuple[str, ...], version: str) -> dict[str, Any]:
    """What a member's key says of its model: its version, its channel count and their fingerprint."""
    digest = hashlib.sha256(json.dumps(list(channels)).encode()).hexdigest()[:16]
    return {"model": version, "channels": digest, "n_channels": len(channels)}


async def other_models(kv: Any, worker: str, mark: dict[str, Any], keys: Callable[[], Awaitable[list[str]]],
                       timeout_s: float) -> tuple[list[str], list[str]]:
    """``(members whose model reads other channels, members serving another version of the same
    channels)``, each ``"<member> (<version>, <n> channels)"``, from the members' keys now."""
    from nats.js.errors import KeyDeletedError, KeyNotFoundError

    names = sorted(key[len(MEMBER):] for key in await asyncio.wait_for(keys(), timeout_s) if key.startswith(MEMBER))
    channels, versions = [], []
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
        elif theirs.get("model") != mark["model"]:
            versions.append(said)
    return channels, versions
