"""How many workers ``serve --workers`` runs, and what each is told (:mod:`sensorguard.service.workers`
runs them): its session, instance, share of the partitions and folders.

>>> from sensorguard.service.config import Settings
>>> plans = worker_settings(Settings(client_id="sg", partition=("a/#", "b/#"), state_dir="/var/lib/sg"), 2)
>>> [(p.client_id, p.partition, p.state_dir) for p in plans]
[('sg-w0', ('a/#',), '/var/lib/sg/w0'), ('sg-w1', ('b/#',), '/var/lib/sg/w1')]
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from sensorguard.service.config import Settings


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity: a container's cpuset), not the machine's:
    ``os.cpu_count`` gave a 2-CPU pod on a 64-core node 64 workers' worth."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # (not on every platform)
        return max(1, os.cpu_count() or 1)


def worker_count(settings: Settings, cores: int | None = None) -> int:
    """``workers``, or one per core up to the number of partitions (more workers than partitions
    are refused with the settings: :func:`~sensorguard.service.settings_checks.validate`). In
    cluster mode the workers share the cluster's partitions by leases: one per core."""
    cores = cores or usable_cores()
    if settings.cluster:
        return settings.workers or max(1, cores)
    if settings.workers is None:
        return max(1, min(cores, len(settings.partition)))
    return settings.workers


def worker_settings(settings: Settings, n: int) -> list[Settings]:
    """Each worker's settings: its session, instance, share of the partitions and folders."""
    out = []
    for k in range(n):
        out.append(replace(
            settings, workers=1, client_id=f"{settings.client_id}-w{k}", instance=f"{settings.instance_name}-w{k}",
            partition=settings.partition if settings.cluster else settings.partition[k::n],  # cluster: by leases
            metrics_host="127.0.0.1", metrics_port=0,
            state_dir=None if settings.state_dir is None else str(Path(settings.state_dir) / f"w{k}"),
            record_dir=None if settings.record_dir is None else str(Path(settings.record_dir) / f"w{k}"),
            record_max_mb=settings.record_max_mb / n))
    return out
