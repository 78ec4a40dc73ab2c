"""Which model each cluster member serves: a worker joins only a cluster whose members read its channels.

Every worker writes its model's mark in its ``member.<worker>`` key
(:mod:`~sensorguard.service.ownership`): the version and a fingerprint of the channel list. Before it
first joins, a worker reads the other members' marks. One whose model reads other channels takes no
partition: the readings of the assets it would own are refused as ``unknown_channel`` and, acknowledged
in the stream, lost (a cluster walk: a 6-channel model joined an 8-channel cluster silently and took two
partitions). It waits, saying so once a minute, until the members agree (a hot swap cannot change a
model's channels: the other workers restart on it), and joins then. A worker serving its registry's
``CURRENT`` joins all the same, with a warning, when every member of other channels follows the same
model name and sees that very version as its registry's ``CURRENT`` while serving another: they are
behind, it is a rollout's new model (kept out, every worker restarted on it waited until the last old
one restarted, the partitions crowding onto the old ones meanwhile). A worker of another model line
(``--name`` mistyped) or of a registry copy not promoted waits (reviews: a bare "I am CURRENT" let both
in). With a registry copy per host, promote it on every host before restarting any worker. Another
version with the same channels joins with a warning: an asset's line then depends on which worker owns
it, which a registry swap in progress also shows for a moment. Members that write no mark (an older
sensorguard) are not compared.

Two workers of other channels that start together may each find no mark before writing their own:
once its key is listed (and at new members listed within ``SETTLE_S`` of joining), each looks again
at the members that started before it (``started`` in the key), and the later one leaves and waits
as if it had come later. A worker back from standing down checks the members again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

MEMBER = "member."  # the prefix of the members' keys in the owners' bucket


def channel_mark(channels: tuple[str, ...], version: str, name: str | None = None,
                 sees: str | None = None) -> dict[str, Any]:
    """What a member's key says of its model: its version, its channel count and their fingerprint (of
    the names sorted: readings are taken by name, so a model of the same channels in another order
    reads the same readings), and, following a registry, the model name and the version its
    ``CURRENT`` names now (``sees``)."""
    digest = hashlib.sha256(json.dumps(sorted(channels)).encode()).hexdigest()[:16]
    return {"model": version, "channels": digest, "n_channels": len(channels),
            **({"name": name, "sees": sees} if name is not None else {})}


def model_mark(bundle: Any, settings: Any) -> dict[str, Any]:
    """:func:`channel_mark` of the bundle served, with the registry it follows (``registry`` and
    ``name`` set; a bundle served by path follows none)."""
    from sensorguard.service.registry import current_version

    if not (settings.registry and settings.name):
        return channel_mark(bundle.channels, bundle.version)
    try:
        sees = current_version(settings.registry, settings.name)
    except Exception:  # noqa: BLE001 - an unreadable registry: no CURRENT seen
        sees = None
    return channel_mark(bundle.channels, bundle.version, settings.name, sees)


def model_words(mark: dict[str, Any]) -> str:
    """A member's model as its lines name it: ``plant v0003`` when it follows a registry (``--name``),
    else the version alone (two registries' ``v0001`` said side by side read as one model: a walk)."""
    version = mark.get("model") or "no version"
    return f"{mark['name']} {version}" if isinstance(mark.get("name"), str) and mark["name"] else str(version)


def rollout(mark: dict[str, Any]) -> bool:
    """Whether a member serves the version its registry's ``CURRENT`` names."""
    return mark.get("name") is not None and mark.get("sees") == mark.get("model")


async def other_models(kv: Any, worker: str, mark: dict[str, Any], keys: Callable[[], Awaitable[list[str]]],
                       timeout_s: float, before: tuple[float, str] | None = None) -> tuple[list[str], list[str], bool]:
    """``(members whose model reads other channels, members serving another version of the same
    channels, whether all of the former are behind ``mark``: the same model name, its version their
    ``CURRENT``)``, each member as ``"<member> (<version>, <n> channels)"``, from the members' keys now.
    ``before``: ``(started, worker)``, only the members that started earlier (by that order; one
    whose key has no ``started``, an older sensorguard, counts as earlier)."""
    from nats.js.errors import KeyDeletedError, KeyNotFoundError

    names = sorted(key[len(MEMBER):] for key in await asyncio.wait_for(keys(), timeout_s) if key.startswith(MEMBER))
    channels, versions, behind = [], [], True
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
        started = theirs.get("started")
        if before is not None and isinstance(started, int | float) and (started, name) > before:
            continue
        said = f"{name} ({model_words(theirs)}, {theirs.get('n_channels', '?')} channels)"
        if theirs["channels"] != mark["channels"]:
            channels.append(said)
            same_line = mark.get("name") is not None and theirs.get("name") == mark["name"]
            # behind: serving an older version than the CURRENT it sees, ours. One serving the very version
            # it sees is no older copy of ours but another model of the same number (a second registry's
            # 'plant v0001' of 7 channels joined one of 8, and told it to restart to no effect: a walk)
            behind = (behind and same_line and theirs.get("sees") == mark["model"]
                      and theirs.get("model") != theirs.get("sees"))
        elif theirs.get("model") != mark["model"]:
            versions.append(said)
    return channels, versions, behind
