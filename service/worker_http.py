"""The ``serve --workers N`` parent's requests to its workers' loopback endpoints.

Each worker serves its own ``/metrics``, ``/healthz`` and ``/readyz`` on a loopback port it tells
the parent (:mod:`~sensorguard.service.workers`); the parent scrapes and merges the metrics, probes
the health of each, and names the reasons of one that is not ready. Kept apart from the
supervisor (its processes, restarts and stop) as the one place that talks HTTP to them, never
through a proxy and never for long (``SCRAPE_TIMEOUT_S``): a scrape of the parent waits on these.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

SCRAPE_TIMEOUT_S = 2.0
T = TypeVar("T")
# loopback: never through http_proxy (urllib's default opener honours it, and no_proxy=localhost
# does not cover 127.0.0.1: behind a proxy every worker looked dead; found by review)
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(port: int, path: str) -> str | None:
    """The body of a 200 answer from a worker's endpoint, or None."""
    try:
        with _DIRECT.open(f"http://127.0.0.1:{port}{path}", timeout=SCRAPE_TIMEOUT_S) as answer:
            return answer.read().decode("utf-8") if answer.status == 200 else None
    except OSError:
        return None


def at_once(call: Callable[[int], T], ports: list[int | None]) -> list[T | None]:
    """``call`` on every port at once (None: no worker there, None back): a scrape or a readiness probe
    of the parent waits for its slowest worker, not for the sum. One after another, two frozen
    workers (SIGSTOP, a swap storm) took 2 s each, and a scrape behind the loop's read up to 20 s:
    past Prometheus's 10 s scrape timeout the whole parent read as down, its healthy workers' assets
    too (a deploy walk)."""
    live = [port for port in ports if port is not None]
    if len(live) < 2:
        return [None if port is None else call(port) for port in ports]
    with ThreadPoolExecutor(max_workers=len(live), thread_name_prefix="worker-http") as pool:
        pending = [None if port is None else pool.submit(call, port) for port in ports]
        return [None if job is None else job.result() for job in pending]


def why_not_ready(port: int) -> str | None:
    """None when a worker's ``/readyz`` answers 200, else its reasons on one line."""
    try:
        with _DIRECT.open(f"http://127.0.0.1:{port}/readyz", timeout=SCRAPE_TIMEOUT_S) as answer:
            return None if answer.status == 200 else f"/readyz answered {answer.status}"
    except urllib.error.HTTPError as exc:
        body = exc.read().decode("utf-8", "replace").splitlines()[1:]
        return "; ".join(line.removeprefix("- ") for line in body) or "not ready"
    except OSError:
        return "its endpoint does not answer"
