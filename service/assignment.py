"""Which member owns which partition in cluster mode: rendezvous hashing with exact shares.

Every worker computes the same answer from the same member list (``service/ownership.py`` reads the
members and holds the leases), and a member joining or leaving moves few partitions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def assign(partitions: int, members: Iterable[str]) -> dict[int, str]:
    """Partition -> member: rendezvous hashing with exact shares.

    Each member may hold ``partitions // n`` partitions, the first ``partitions % n`` (by name)
    one more; each partition, in order, goes to the member of highest weight that still has room.
    Every worker computes the same answer from the same member list.
    """
    ordered = sorted(set(members))
    if not ordered:
        return {}
    share, extra = divmod(partitions, len(ordered))
    room = {m: share + (i < extra) for i, m in enumerate(ordered)}
    out = {}
    for k in range(partitions):
        member = max((m for m in ordered if room[m]), key=lambda m: _weight(k, m))
        out[k] = member
        room[member] -= 1
    return out


def _weight(partition: int, member: str) -> bytes:
    return hashlib.blake2b(f"{partition}:{member}".encode(), digest_size=8).digest()
