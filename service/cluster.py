"""Cluster mode's layout on NATS JetStream: the streams and buckets, and the subjects that name assets.

Sensors keep publishing MQTT, to the NATS server's MQTT listener: ``sensors/site-a/pump-7/readings``
arrives as the NATS subject ``sensors.site-a.pump-7.readings`` (NATS maps an MQTT ``/`` to ``.``
and an MQTT ``.`` to ``//``, so ``pump.7`` is the token ``pump//7``; :func:`asset_of` maps it back).

``sensorguard cluster init`` creates (or brings up to date, printing what it did) three streams and
two buckets:

- ``SENSORGUARD_IN`` captures ``<prefix>.>``: where the server stores every QoS 1 reading it
  accepted over MQTT. Nothing reads it but the server, which copies each reading into the two
  streams below within milliseconds, so it keeps ``IN_MAX_AGE_S`` (15 minutes) only: long enough
  for a stream leader to move, short enough not to hold a second copy of the plant's history.
- ``SENSORGUARD_READINGS`` sources it through one subject transform per asset depth (1 to
  ``MAX_ASSET_LEVELS`` levels under the prefix), each partitioning over all of the asset's tokens:
  ``<prefix>.<a1>..<ak>.readings -> sensorguard.readings.<partition>.<a1>..<ak>``. An asset is in
  exactly one partition, whatever its depth. Work-queue retention: a reading is deleted once the
  owner of its partition acknowledged it, so the stream holds what is not scored yet (the backlog
  of an outage), capped by ``readings_max_age_s`` (7 days) and ``readings_max_bytes``.
- ``SENSORGUARD_WINDOWS`` sources the same readings into ``sensorguard.window.<partition>.<asset>``
  keeping the last ``keep`` readings of each asset (``max_msgs_per_subject``), for at most
  ``Layout.windows_max_age_s``: a worker that takes a partition over rebuilds its assets' windows
  and last timestamps from it before scoring.
- Key-value bucket ``sensorguard_owners``: one key per partition, the lease of the worker that owns
  it (entries expire ``LEASE_S`` after their last renewal). ``sensorguard_state``: the per-asset
  state that moves with an asset (alert, drift, open channel faults, maintenance, shelving).

The partition count is fixed at init and recorded in the readings stream's metadata: changing it
would move assets between partitions (and so between owners) mid-stream, so ``init`` refuses it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from sensorguard.service.logs import span
from sensorguard.service.nats_connect import ClusterError, connect, no_jetstream
from sensorguard.service.payload import MAX_ASSET_LEVELS

IN_STREAM = "SENSORGUARD_IN"
READINGS_STREAM = "SENSORGUARD_READINGS"
WINDOWS_STREAM = "SENSORGUARD_WINDOWS"
OWNERS_BUCKET = "sensorguard_owners"
STATE_BUCKET = "sensorguard_state"
READINGS_ROOT = "sensorguard.readings"  # + .<partition>.<asset tokens>
WINDOWS_ROOT = "sensorguard.window"
IN_MAX_AGE_S = 900.0
REQUEST_S = 10.0  # a JetStream API request's timeout (a subject listing can be long)
LEASE_S = 3.0
META = "sensorguard_"  # stream metadata keys: sensorguard_partitions, sensorguard_keep, sensorguard_prefix
FORMING_S = 30.0  # how long init waits for a new cluster to elect its JetStream leader

log = logging.getLogger(__name__)


MAX_AGE_LIMIT_S = 100 * 365 * 86400.0  # NATS keeps an age in int64 nanoseconds: about 292 years at most
SHORT_AGE_S = 60.0  # unscored readings kept less than this expire before a restarted worker takes them
WINDOWS_SPAN_S = 86400.0  # the window stream keeps readings at least this long past the readings stream's age


@dataclass(frozen=True)
class Layout:
    """What ``cluster init`` sets up; the defaults are the documented ones."""

    topic_prefix: str = "sensors"
    partitions: int = 16
    keep: int = 1024  # readings per asset in the window stream: at least the served bundle's window
    replicas: int = 1
    readings_max_age_s: float = 7 * 86400.0
    readings_max_bytes: int = -1  # -1: no cap beyond the age (the server's own storage limit)
    servers: tuple[str, ...] = field(default=("nats://127.0.0.1:4222",))

    def check(self) -> None:
        problems = []
        if not 1 <= self.partitions <= 1024:
            problems.append(f"partitions must be 1 to 1024, not {self.partitions}")
        if self.keep < 2:
            problems.append(f"keep must be at least 2 readings per asset, not {self.keep}")
        if self.replicas not in (1, 3, 5):
            problems.append(f"replicas must be 1, 3 or 5 (a Raft group needs a majority), not {self.replicas}")
        if not self.topic_prefix.strip("/") or any(c in self.topic_prefix for c in "#+ *>"):
            problems.append(f"topic prefix {self.topic_prefix!r} must be MQTT levels without wildcards")
        if not 0.1 <= self.readings_max_age_s <= MAX_AGE_LIMIT_S:  # (0 is "no limit" to NATS, under 100 ms
            problems.append(f"max-age must be from 100 ms to 100 years, not "  # it refuses, and 1e12 s
                            f"{self.readings_max_age_s:g} s")  # overflowed its int64 nanoseconds: each after a
            # stream had changed)
        if problems:
            raise ClusterError("; ".join(problems))

    def short_age(self) -> str | None:
        """A warning when unscored readings are kept for less than a hand-over takes: accepted
        without a word, ``--max-age 1s`` let readings waiting for a new owner expire first (a walk)."""
        if self.readings_max_age_s >= SHORT_AGE_S:
            return None
        return (f"--max-age {self.readings_max_age_s:g} s: readings waiting for a worker expire unscored before one "
                f"takes them (a takeover takes 3-10 s, a restart longer); the default keeps them 7 days")

    @property
    def windows_max_age_s(self) -> float:
        """How long the window stream keeps a reading: twice the readings stream's age, and at least a
        day more. A takeover primes an asset from the readings before its first one still waiting to be
        scored (at most ``readings_max_age_s`` old), a window's span earlier; an asset silent longer
        is not primed at all (its state, silence and baseline, is taken over from the state bucket).
        Kept for good, the last ``keep`` readings of every asset id ever published (machines retired,
        a gateway's made-up ids: refused by the workers, stored all the same) grew the stream without
        bound, and every takeover listed them all."""
        return min(MAX_AGE_LIMIT_S, self.readings_max_age_s + max(self.readings_max_age_s, WINDOWS_SPAN_S))

    @property
    def prefix_subject(self) -> str:
        return topic_to_subject(self.topic_prefix.strip("/"))


def topic_to_subject(topic: str) -> str:
    """The NATS subject of an MQTT topic, as NATS's MQTT listener maps it."""
    return ".".join(level.replace(".", "//") for level in topic.split("/"))


def subject_to_topic(subject: str) -> str:
    """The MQTT topic of a NATS subject: :func:`topic_to_subject` undone."""
    return "/".join(token.replace("//", ".") for token in subject.split("."))


def stray_subjects(topic_prefix: str) -> list[str]:
    """The subjects under the prefix that ``SENSORGUARD_IN`` stores but no partition takes: no
    asset (``sensors/readings``), or more than ``MAX_ASSET_LEVELS`` levels. They expired unseen,
    where serve without a cluster counts them ``bad_asset`` (a walk); one worker of the cluster
    counts each so (``ClusterSource._stray``, a queue group)."""
    prefix = topic_to_subject(topic_prefix.strip("/"))
    return [f"{prefix}.readings", ".".join([prefix, *["*"] * (MAX_ASSET_LEVELS + 1), ">"])]


def asset_of(subject: str) -> tuple[int, str]:
    """``(partition, asset id)`` of a subject in the readings or window stream."""
    root, _, rest = subject.partition(".")  # "sensorguard"
    _, _, rest = rest.partition(".")  # "readings" / "window"
    partition, _, tokens = rest.partition(".")
    if root != "sensorguard" or not partition.isdigit() or not tokens:
        raise ValueError(f"not a sensorguard cluster subject: {subject!r}")
    return int(partition), "/".join(token.replace("//", ".") for token in tokens.split("."))


def origin_seq(headers: dict | None) -> int:
    """The input stream's sequence of a message a stream copied from it (its ``Nats-Stream-Source``
    header: ``<stream> <sequence> ...``); 0 when it has none."""
    parts = ((headers or {}).get("Nats-Stream-Source") or "").split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def partition_of(asset: str, partitions: int) -> int:
    """The partition NATS puts ``asset`` in: its ``partition()`` subject transform hashes the
    asset's subject tokens, concatenated, with 32-bit FNV-1a (checked against a real server in
    tests/test_cluster.py), so a worker knows which assets are its own before any reading came."""
    h = 0x811C9DC5
    for byte in "".join(level.replace(".", "//") for level in asset.split("/")).encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h % partitions


CONTROLS_KEYS = "=controls.>"  # the state bucket's keys of alarm controls (``=`` starts no asset's key)


def controls_key(asset: str) -> str:
    """The key of the asset's maintenance, shelving and acknowledgeable alerts in the state bucket."""
    return CONTROLS_KEYS[:-1] + state_key(asset)


def key_asset(key: str) -> str:
    """The asset of a :func:`state_key` or :func:`controls_key`."""
    return key.removeprefix(CONTROLS_KEYS[:-1]).replace("=2E", ".")


def state_key(asset: str) -> str:
    """The asset's key in the state bucket: its id with ``.`` written ``=2E`` (a key's ``.``
    separates tokens, which must not be empty; ``=`` never occurs in an asset id)."""
    return asset.replace(".", "=2E")


def transforms(layout: Layout, root: str) -> list[tuple[str, str]]:
    """One ``(source, destination)`` subject transform per asset depth, partitioning over every
    token of the asset id (so each asset lands in one partition, whatever its depth)."""
    out = []
    for depth in range(1, MAX_ASSET_LEVELS + 1):
        tokens = range(1, depth + 1)
        src = ".".join([layout.prefix_subject, *["*"] * depth, "readings"])
        part = f"{{{{partition({layout.partitions},{','.join(map(str, tokens))})}}}}"
        dest = ".".join([root, part, *[f"{{{{wildcard({i})}}}}" for i in tokens]])
        out.append((src, dest))
    return out


def stream_configs(layout: Layout) -> list[Any]:
    """The three streams' ``StreamConfig``s (nats-py)."""
    from nats.js.api import RetentionPolicy, StorageType, StreamConfig, StreamSource, SubjectTransform

    meta = {f"{META}partitions": str(layout.partitions), f"{META}keep": str(layout.keep),
            f"{META}prefix": layout.topic_prefix.strip("/")}

    def source(root: str) -> list[Any]:
        moves = [SubjectTransform(src=src, dest=dest) for src, dest in transforms(layout, root)]
        return [StreamSource(name=IN_STREAM, subject_transforms=moves)]

    common = {"storage": StorageType.FILE, "num_replicas": layout.replicas}
    return [
        StreamConfig(name=IN_STREAM, subjects=[f"{layout.prefix_subject}.>"], max_age=IN_MAX_AGE_S,
                     retention=RetentionPolicy.LIMITS,
                     description="sensorguard: readings as they arrive over MQTT; copied into the two others",
                     metadata=meta, **common),
        StreamConfig(name=READINGS_STREAM, sources=source(READINGS_ROOT), retention=RetentionPolicy.WORK_QUEUE,
                     max_age=layout.readings_max_age_s, max_bytes=layout.readings_max_bytes,
                     description="sensorguard: readings not yet scored, by partition", metadata=meta, **common),
        StreamConfig(name=WINDOWS_STREAM, sources=source(WINDOWS_ROOT), max_msgs_per_subject=layout.keep,
                     max_age=layout.windows_max_age_s, retention=RetentionPolicy.LIMITS,
                     description="sensorguard: the last readings of every asset, to rebuild windows",
                     metadata=meta, **common),
    ]


def bucket_configs(layout: Layout) -> list[Any]:
    from nats.js.api import KeyValueConfig, StorageType

    return [
        KeyValueConfig(bucket=OWNERS_BUCKET, ttl=LEASE_S, history=1, replicas=layout.replicas,
                       storage=StorageType.FILE, description="sensorguard: partition leases"),
        KeyValueConfig(bucket=STATE_BUCKET, history=1, replicas=layout.replicas, storage=StorageType.FILE,
                       description="sensorguard: per-asset state that moves with an asset"),
    ]


# Fields compared to decide whether an existing stream needs an update (what init sets).
_COMPARED = ("subjects", "retention", "max_age", "max_bytes", "max_msgs_per_subject", "num_replicas", "metadata")


def _ages(*ages: float | None) -> list[str]:
    """Age limits in words ("none" for no limit), with their seconds where the words alone read the
    same ("7 days -> 7 days" for 604800 -> 604860: 3 significant digits)."""
    words = [span(v) if v else "none" for v in ages]
    if len(set(words)) == 1 < len(set(ages)):
        words = [f"{w} ({v:g} s)" if v else w for w, v in zip(words, ages, strict=True)]
    return words


def _differences(want: Any, have: Any) -> list[str]:
    out = []
    for name in _COMPARED:
        a, b = getattr(want, name), getattr(have, name)
        if name == "metadata":  # the server adds its own keys (_nats.*)
            b = b or {}
            out += [f"{k} {b.get(k)} -> {v}" for k, v in (a or {}).items() if b.get(k) != v]
            continue
        if name == "max_age" and a is not None and b is not None and abs(a - b) < 1e-3:
            continue
        if (a or None) != (b or None) and not (name == "max_bytes" and a in (-1, None) and b in (-1, None)):
            if name == "max_age":  # in words: "max_age 0.0 -> 90000.0" read as raw seconds (a walk)
                a, b = _ages(a, b)
            out.append(f"{name} {b} -> {a}")
    want_moves = [(t.src, t.dest) for s in want.sources or [] for t in s.subject_transforms or []]
    have_moves = [(t.src, t.dest) for s in have.sources or [] for t in s.subject_transforms or []]
    if want_moves != have_moves:
        out.append("subject transforms")
    return out


async def _ensure_stream(js: Any, config: Any) -> str:
    from nats.js.errors import NotFoundError

    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        await js.add_stream(config)
        return f"created stream {config.name}"
    have = (info.config.metadata or {}).get(f"{META}partitions")
    want = (config.metadata or {}).get(f"{META}partitions")
    if have is not None and have != want:
        raise ClusterError(
            f"stream {config.name} has {have} partitions, not {want}: changing the count moves assets "
            f"between partitions and owners; keep --partitions {have} (or delete the streams to start over)"
        )
    have, want = ((c.metadata or {}).get(f"{META}prefix") for c in (info.config, config))
    if have is not None and have != want:  # (readings under the old one vanished, workers stayed ready: a walk)
        raise ClusterError(
            f"stream {config.name} takes readings under topic prefix {have!r}, not {want!r}: the workers serving "
            f"the cluster read {have!r}; keep --topic-prefix {have} (or stop every worker, delete the streams, "
            "and init again)"
        )
    changes = _differences(config, info.config)
    if not changes:
        return f"stream {config.name} is up to date"
    await js.update_stream(config)
    return f"updated stream {config.name}: {', '.join(changes)}"


async def joined_layout(js: Any, topic_prefix: str, window: int) -> int:
    """A worker joining: the partition count ``cluster init`` recorded, after checking the streams
    are for ``topic_prefix`` (:class:`ClusterError`) and keep at least a ``window`` (a warning)."""
    meta = (await js.stream_info(READINGS_STREAM)).config.metadata or {}
    partitions = int(meta.get(f"{META}partitions", 0))
    prefix = meta.get(f"{META}prefix")
    if not partitions or prefix != topic_prefix.strip("/"):
        raise ClusterError(f"the cluster's streams are for topic prefix {prefix!r}, not {topic_prefix!r}: "
                           "run sensorguard cluster init")
    keep = int(meta.get(f"{META}keep", 0))
    if keep < window:
        log.warning("the window stream keeps %d readings per asset, fewer than the model's window %d: a partition "
                    "taken over starts with part of a window (cluster init --keep)", keep, window)
    from nats.js.errors import NotFoundError

    try:  # (an init before the age limit, or one of those run again after this version's: an upgrade walk)
        if not (await js.stream_info(WINDOWS_STREAM)).config.max_age:
            log.warning("the window stream keeps every asset's last readings for good (set up by a cluster init "
                        "before the age limit): run this version's sensorguard cluster init again to bound it")
    except NotFoundError:
        pass
    return partitions


async def _ensure_bucket(js: Any, config: Any) -> str:
    """Create the bucket, or bring its replicas and TTL (what init sets) up to date: a bucket is the
    stream ``KV_<bucket>``, updated in place (its keys stay)."""
    from dataclasses import replace

    from nats.js.errors import NotFoundError

    try:
        info = await js.stream_info(f"KV_{config.bucket}")
    except NotFoundError:
        await js.create_key_value(config)
        return f"created bucket {config.bucket}"
    have = info.config
    changes = []
    if have.num_replicas != config.replicas:
        changes.append(f"replicas {have.num_replicas} -> {config.replicas}")
    if abs((have.max_age or 0.0) - (config.ttl or 0.0)) > 1e-3:
        old, new = _ages(have.max_age, config.ttl)
        changes.append(f"ttl {old} -> {new}")
    if not changes:
        return f"bucket {config.bucket} is up to date"
    window = have.duplicate_window or 120.0  # may not exceed a TTL (the server refuses it): as nats-py creates it
    await js.update_stream(replace(have, num_replicas=config.replicas, max_age=config.ttl or 0.0,
                                   duplicate_window=min(window, config.ttl) if config.ttl else window))
    return f"updated bucket {config.bucket}: {', '.join(changes)}"


async def init(layout: Layout) -> list[str]:
    """Create or update the streams and buckets; one line per thing, saying what was done."""
    layout.check()
    nc = await connect(layout.servers)
    try:
        js = nc.jetstream()
        steps = [*((_ensure_stream, c) for c in stream_configs(layout)),
                 *((_ensure_bucket, c) for c in bucket_configs(layout))]
        return [await _retrying(step, js, config) for step, config in steps]
    finally:
        await nc.close()


async def _retrying(step: Any, js: Any, config: Any) -> str:
    """``step(js, config)``, tried again while the cluster is still forming (no JetStream leader
    yet: "temporarily unavailable", timeouts) for up to ``FORMING_S``; other refusals as one line."""
    deadline = asyncio.get_running_loop().time() + FORMING_S
    while True:
        try:
            return await step(js, config)
        except ClusterError:
            raise
        except Exception as exc:  # noqa: BLE001 - the server's refusal, as one line
            text = str(exc) or type(exc).__name__
            forming = "temporarily unavailable" in text.lower() or isinstance(exc, asyncio.TimeoutError) \
                or "timeout" in type(exc).__name__.lower()
            if forming and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.5)
                continue
            hint = " (fewer servers than --replicas?)" if "insufficient resources" in text.lower() else ""
            if jetstream := no_jetstream(exc):  # (nats-py's own words for it are code=None ... noise: a walk)
                raise ClusterError(f"the server refused{jetstream}") from None
            said = getattr(exc, "description", None) or text  # the server's words, not nats-py's repr
            raise ClusterError(f"the server refused: {said}{hint}") from None


def run_init(layout: Layout) -> list[str]:
    """:func:`init` for the CLI (no event loop of its own)."""
    return asyncio.run(init(layout))
