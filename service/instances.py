"""Daemons side by side on one broker: each an instance with its own status and its partitions.

An instance (``serve --instance``, default the client id) keeps its status retained on
``<output_prefix>/status/<instance>`` as JSON, with a Last Will saying ``offline``::

    {"state": "online", "instance": "site-a", "client_id": "sensorguard-host-1",
     "partitions": ["site-a/#"], "topic_prefix": "sensors", "cluster": false, "version": "0.1.0",
     "host": "host-1", "pid": 4242}

Its partitions (``serve --partition``, repeatable, default ``#``) are MQTT topic filters under
``topic_prefix``: it subscribes to ``<topic_prefix>/<filter>`` for each, in one persistent session.

Before connecting for readings, ``serve`` reads the retained statuses of the instances already
online under the same ``output_prefix`` (:func:`check_instances`) and refuses to start, with one
line, when another instance

- reads a different ``topic_prefix``: asset ids are relative to the prefix, so ``pump-7`` of
  both would share ``<output_prefix>/state/pump-7`` (give each prefix its own ``output_prefix``);
- or has a partition that overlaps one of its own (some topic matches both filters): an asset's
  readings would be scored twice and its alerts raised twice;
- or is a cluster-mode worker where this one is not, or the other way round: a cluster's
  partitions cover every asset of its prefix (its workers list none, since theirs move).

A status online under this instance's own name from a process of this host that no longer runs
(its offline was lost) is no conflict (:func:`gone_here`); a worker's status from before the
``cluster`` field is a cluster worker's when it lists no partitions (:func:`in_cluster`).

An instance's own filters must not overlap each other either (:func:`filter_problems`), and two
daemons (client ids) must not share an instance name. Nor may two daemons share a client id: the
broker gives the session to the newer connection and drops the older, which reconnects and drops
the newer, every second. An online status of this client id from another process still running on
this host (its ``host`` and ``pid``) is such a daemon (:func:`running_here`); on other hosts the
connection notices it (:mod:`sensorguard.service.connection`). A run whose partitions changed unsubscribes,
in its resumed persistent session, the filters its previous run (same client id, by its retained
status) served and it no longer does (:func:`stale_filters`); readings the broker had already
queued for them arrive once more. A run that finds another instance, offline now, served its
partitions after it last stopped is warned that its session's backlog is judged again
(:func:`served_meanwhile`).

>>> filters_overlap("site-a/#", "+/pump-7/readings"), filters_overlap("site-a/#", "site-b/#")
(True, False)
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import orjson
from paho.mqtt.client import topic_matches_sub

from sensorguard import __version__

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 5.0  # to reach the broker for the check; past it, serve starts with a warning
RETAINED_SETTLE_S = 0.5  # retained statuses arrive right after the subscription is granted


@dataclass(frozen=True)
class InstanceCheck:
    """What :func:`check_instances` found: why this instance must not start (``conflicts``), and
    the reading filters its own earlier run subscribed to in this session and no longer serves
    (``stale_filters``: the resumed session keeps them until they are unsubscribed)."""

    conflicts: list[str]
    stale_filters: tuple[str, ...] = ()


def status_payload(name: str, client_id: str, partitions: tuple[str, ...], topic_prefix: str, online: bool,
                   cluster: bool = False) -> bytes:
    """The retained status of instance ``name`` (also its Last Will, offline); ``host`` and ``pid``
    let a second daemon started with the same settings on this host see the first; ``cluster``:
    a cluster-mode worker, whose partitions move between workers and are not listed; ``since``:
    when it was written (a Last Will: when its daemon connected), for :func:`served_meanwhile`."""
    return orjson.dumps({"state": "online" if online else "offline", "instance": name, "client_id": client_id,
                         "partitions": list(partitions), "topic_prefix": topic_prefix, "cluster": cluster,
                         "version": __version__, "host": socket.gethostname(), "pid": os.getpid(),
                         "since": round(time.time(), 3)})


def in_cluster(status: dict) -> bool:
    """Whether ``status`` is a cluster-mode worker's: its ``cluster`` field, or, from a version
    before it, no partitions listed (a plain instance lists at least ``#``): read as plain, every
    worker of an older version refused an upgraded one beside it (found by review)."""
    flag = status.get("cluster")
    return flag if isinstance(flag, bool) else status.get("partitions") == []


def gone_here(status: dict) -> bool:
    """Whether ``status`` says online for a process of this host that no longer runs: its offline
    was lost (a session flapping as it stopped), and it blocked a restart under its instance name
    for good (a walk). This process's own pid is not gone (daemons side by side in one process)."""
    theirs = status.get("pid")
    return (status.get("host") == socket.gethostname() and type(theirs) is int and 0 < theirs != os.getpid()
            and running_here(status) is None)


def running_here(status: dict, host: str | None = None, pid: int | None = None) -> int | None:
    """The pid of the process behind ``status`` when it is another process alive on this host
    (``host``, ``pid``: this process's, by default), else None. Its own earlier run that died
    without the broker noticing yet has a dead pid (or this pid, in a container: always 1)."""
    theirs = status.get("pid")
    if status.get("host") != (host or socket.gethostname()) or type(theirs) is not int or theirs <= 0:
        return None
    if theirs == (pid or os.getpid()):
        return None
    try:
        os.kill(theirs, 0)
    except PermissionError:  # alive, another user's
        return theirs
    except OSError:
        return None
    return theirs


def serves_asset(settings: Any, asset: str) -> bool:
    """Whether an instance of ``settings`` serves ``asset``: one of its partitions matches the asset's
    readings topic (cluster mode: none is static, so no)."""
    topic = f"{settings.topic_prefix}/{asset}/readings"
    return any(topic_matches_sub(f, topic) for f in settings.readings_filters())


def filters_overlap(a: str, b: str) -> bool:
    """Whether some topic matches both MQTT topic filters ``a`` and ``b``."""
    left, right = a.split("/"), b.split("/")
    for x, y in zip(left, right, strict=False):
        if x == "#" or y == "#":
            return True
        if x != y and x != "+" and y != "+":
            return False
    if len(left) == len(right):
        return True
    longer = left if len(left) > len(right) else right
    return longer[min(len(left), len(right))] == "#"  # "a/#" also matches "a" itself


def filter_problems(filters: tuple[str, ...]) -> list[str]:
    """What is wrong with an instance's partition filters (empty: nothing)."""
    problems = []
    for f in filters:
        levels = f.split("/")
        if not f or any(("+" in lvl and lvl != "+") or ("#" in lvl and lvl != "#") for lvl in levels) \
                or "#" in levels[:-1]:
            problems.append(f"{f!r} is not an MQTT topic filter ('+' a whole level, '#' only the last)")
        elif levels[-1] not in ("#", "readings"):  # `pump-77` subscribed <prefix>/pump-77: nothing ever came (a walk)
            problems.append(f"{f!r} matches no readings topic (<asset>/readings under topic_prefix): end it with "
                            f"'/#' ({f}/#: that asset and those under it) or '/readings'")
    for i, a in enumerate(filters):
        for b in filters[i + 1:]:
            if filters_overlap(a, b):
                problems.append(f"{a!r} and {b!r} overlap: a reading matching both would be scored twice")
    return problems


def conflicts(name: str, partitions: tuple[str, ...], topic_prefix: str, others: dict[str, dict],
              client_id: str | None = None, cluster: bool = False) -> list[str]:
    """Why instance ``name`` (of ``client_id``; ``cluster``: a cluster-mode worker) must not start
    beside the ``others`` (instance -> retained status). Its own earlier status (same name and
    client id) is no conflict, nor one under its name from a process of this host that no longer
    runs (only there: a hostname is not unique enough to wave other checks through)."""
    out = []
    for other, status in sorted(others.items()):
        if status.get("state") != "online":
            continue
        theirs = status.get("client_id")
        if client_id is not None and theirs == client_id and (pid := running_here(status)) is not None:
            out.append(f"a daemon with client id {client_id!r} (instance {other!r}) is already running on this "
                       f"host (pid {pid}): the broker would hand the session from one to the other every "
                       "second; give each daemon its own client_id and instance (--client-id, --instance)")
            continue  # (whatever its instance name: one config file, two --instance values)
        if other == name:
            if client_id is not None and isinstance(theirs, str) and theirs != client_id and not gone_here(status):
                out.append(f"an instance named {name!r} is already online (client id {theirs!r}): give each "
                           "daemon its own instance name")
            continue
        theirs = status.get("topic_prefix")
        if isinstance(theirs, str) and theirs != topic_prefix:
            out.append(f"instance {other!r} reads topic prefix {theirs!r} and publishes under the same output "
                       f"prefix: asset ids of {topic_prefix!r} would share its state topics; give this instance "
                       "its own output_prefix")
            continue
        if in_cluster(status) != cluster:  # a cluster's partitions cover every asset of the prefix
            out.append(f"instance {other!r} serves topic prefix {topic_prefix!r} "
                       f"{'in' if not cluster else 'outside'} cluster mode: every asset would be scored twice "
                       f"and its alerts raised twice; {'start this one with --cluster' if not cluster else 'stop it'}"
                       " or give it its own topic_prefix and output_prefix")
            continue
        for mine in partitions:
            for filt in status.get("partitions") or ():
                if isinstance(filt, str) and filters_overlap(mine, filt):
                    out.append(f"partition {mine!r} overlaps {filt!r} of the running instance {other!r}")
    return out


def stale_filters(client_id: str, filters: tuple[str, ...], statuses: dict[str, dict]) -> tuple[str, ...]:
    """Reading filters an earlier run with this ``client_id`` (so this persistent session) served,
    by its retained status, that ``filters`` no longer hold."""
    old = set()
    for status in statuses.values():
        prefix, parts = status.get("topic_prefix"), status.get("partitions")
        if status.get("client_id") == client_id and isinstance(prefix, str) and isinstance(parts, list):
            old |= {f"{prefix}/{p}" for p in parts if isinstance(p, str)}
    return tuple(sorted(old - set(filters)))


def served_meanwhile(name: str, client_id: str, partitions: tuple[str, ...], topic_prefix: str,
                     statuses: dict[str, dict]) -> list[str]:
    """Warnings for the instances that served readings of this one's partitions after it last stopped:
    offline now, their status written after this instance's own (``since``). Its persistent session
    kept every reading sent meanwhile, and the broker delivers them at the start: each was judged
    again here, and an alert the other instance raised (and an operator answered there) was raised
    again under this one's state (a walk: a daemon back under its old client id after a second
    instance had served its topics raised 4 alerts again). Nothing here can tell which of them the
    other judged, so it is said, with how to start without them; a status from before ``since``
    is not judged. Only the filters its last run served (its status's ``partitions``: what its
    session queued) and this one serves hold such a backlog: ``serve --workers`` dealing the
    partitions out anew handed a worker one its session never had, and its neighbour, stopped a few
    ms later at the same shutdown, was said at every such restart."""
    mine = statuses.get(name, {})
    stopped = mine.get("since")
    if mine.get("client_id") != client_id or not isinstance(stopped, (int, float)):
        return []
    queued = [f for f in mine.get("partitions") or () if isinstance(f, str)]
    out = []
    for other, status in sorted(statuses.items()):
        since = status.get("since")
        if (other == name or status.get("state") != "offline" or not isinstance(since, (int, float))
                or since <= stopped or status.get("topic_prefix") != topic_prefix or in_cluster(status)):
            continue
        theirs = [f for f in status.get("partitions") or () if isinstance(f, str)
                  and any(filters_overlap(m, f) for m in partitions) and any(filters_overlap(q, f) for q in queued)]
        if theirs:
            out.append(f"instance {other!r} served {', '.join(map(repr, theirs))} after this instance last stopped: "
                       f"the readings its session ({client_id!r}) kept meanwhile are judged here again, and alerts "
                       f"raised there on them are raised again; to start without them, end the session first "
                       f"(mosquitto_sub -i {client_id} -t x -E, with the broker's address and login) or give a new "
                       "--client-id")
    return out


def read_statuses(settings: Any, timeout_s: float = CHECK_TIMEOUT_S) -> dict[str, dict] | None:
    """The retained statuses under ``<output_prefix>/status/+`` (instance -> status), read with a
    short-lived client (a clean session: it takes no reading); None when the broker could not be
    reached within ``timeout_s`` (warned)."""
    from sensorguard.service import mqtt

    statuses: dict[str, dict] = {}
    prefix = settings.status_topic().rpartition("/")[0] + "/"

    def on_message(client, userdata, message) -> None:
        try:
            body = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            return  # not an instance status (an old plain "online" is not under status/+)
        if isinstance(body, dict) and message.topic.startswith(prefix):
            statuses[message.topic[len(prefix):]] = body

    try:
        with mqtt.listening(settings, prefix + "+", on_message, timeout_s, f"{settings.client_id}-check") as client:
            if client is None:
                log.warning("could not read the other instances' statuses within %.0f s: starting without the "
                            "overlap check", timeout_s)
                return None
            time.sleep(RETAINED_SETTLE_S)  # the retained statuses follow the granted subscription
    except mqtt.Refused as exc:  # (not "no other instance": none could be seen)
        log.warning("could not read the other instances' statuses: %s; starting without the overlap check", exc)
        return None
    return statuses


def check_instances(settings: Any, timeout_s: float = CHECK_TIMEOUT_S,
                    statuses: dict[str, dict] | None = None) -> InstanceCheck:
    """The conflicts of this instance with the running ones, and its stale filters, from
    ``statuses`` (read now when not given).

    An unreachable broker is no conflict: the daemon itself keeps retrying, so it starts, warned.
    """
    if statuses is None:
        statuses = read_statuses(settings, timeout_s)
        if statuses is None:
            return InstanceCheck([])
    return InstanceCheck(
        conflicts(settings.instance_name, settings.static_partitions(), settings.topic_prefix, statuses,
                  settings.client_id, bool(settings.cluster_servers())),
        stale_filters(settings.client_id, settings.readings_filters(), statuses))
