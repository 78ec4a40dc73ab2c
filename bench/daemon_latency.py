"""The latency half of ``bench/daemon.py``: a daemon fed at a paced rate, timed two ways.

Split from ``bench/daemon.py`` (its docstring says what the two latencies measure and why) so each
module stays readable: :func:`measure_latency` runs one paced run against a fresh broker and
daemon (``bench/daemon_harness.py``) with the paced publisher and the state probe of
``bench/daemon_clients.py``, and returns the numbers ``bench/daemon.py`` prints.
"""

from __future__ import annotations

import multiprocessing as mp
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from daemon_clients import StateProbe, paced_publisher, start_processes
from daemon_harness import Broker, DaemonProcess, asset_names, bucket_delta, histogram_quantile


def measure_latency(assets: int, spm: int, rate: float, seconds: float, spike_every: int, bundle_dir: Path,
                    workdir: Path, inflight: int = 0, warmup: float = 2.0, torch_threads: int = 0) -> dict:
    """Paced ``rate`` readings/s for ``seconds``: the histogram (receive-to-score) and publish-to-score probes."""
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    broker = Broker(run_dir, inflight)
    daemon = probe = None
    try:
        daemon = DaemonProcess(broker, bundle_dir, run_dir, assets, torch_threads=torch_threads)
        probe = StateProbe(broker.port)
        published = mp.get_context("fork").Value("q", 0)
        procs, go, results, _ = start_processes(
            paced_publisher, [(broker.port, asset_names(assets), rate, seconds, spm, spike_every, published)])
        cpu0 = daemon.watch.cpu()
        go.set()
        started = time.time()
        while time.time() < started + warmup:
            time.sleep(0.1)
        before = daemon.scrape()["buckets"]
        elapsed, sent, late = results.get(timeout=seconds + 120)
        ended = time.time()
        deadline = ended + 60
        while time.time() < deadline:
            m = daemon.scrape()
            if m["readings"] + m["rejected"] >= sent:
                break
            time.sleep(0.1)
        drained = time.time()
        time.sleep(0.5)
        m = daemon.scrape()
        cores = (daemon.watch.cpu() - cpu0) / (drained - started)
        buckets = bucket_delta(m["buckets"], before)
        lat = probe.latencies(since=started + warmup)
        for proc in procs:
            proc.join(timeout=10)
        return {
            "assets": assets, "spm": spm, "rate": rate, "achieved": sent / elapsed, "late_s": late,
            "sent": sent, "accepted": m["readings"], "rejected": m["rejected"], "drain_s": drained - ended,
            "hist_p50": histogram_quantile(0.5, buckets), "hist_p99": histogram_quantile(0.99, buckets),
            "windows": buckets.get(float("inf"), 0.0),
            "probes": len(lat), "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
            "max": float(lat.max()) if len(lat) else float("nan"), "rss_mb": daemon.watch.peak / 2**20,
            "cpu_cores": cores,
        }
    finally:
        if probe is not None:
            probe.close()
        if daemon is not None:
            daemon.stop()
        broker.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
