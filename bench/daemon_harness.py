"""What the daemon benchmarks share: the bundle, the readings, and the processes around a daemon.

``bench/daemon.py``, ``bench/drain.py`` and ``bench/cluster.py`` measure; this module holds the parts
they run on the same way: an untrained bundle shaped as ``train_bundle`` builds it (see
``bench/daemon.py`` for why untrained is enough), normal-looking readings with optional spikes, a
Mosquitto on a free loopback port and ``sensorguard serve`` as a process with its metrics (the
publishers and subscribers around it are in ``bench/daemon_clients.py``). Nothing here prints a result.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sensorguard.service.localhost import find_mosquitto, free_port  # noqa: E402

CHANNELS = tuple(f"ch{i}" for i in range(8))
WINDOW, HOP = 32, 4
ALERT_HOP = 2  # train's default for hop 4: an alert up is judged every 2 samples
TS0 = 1_700_000_000.0
SPIKE = 1000.0


# --- the bundle ----------------------------------------------------------------------------------


def make_bundle_dir(directory: Path, level: bool = True) -> Path:
    """Save an untrained 8-channel bundle shaped as ``train_bundle`` would build it (with its level
    term, as ``train`` fits it by default; ``level`` False: without); return its path. Its focus is
    the whole window (0), as this bench always scored, so the term runs over 32 rows where a trained
    bundle's runs over the hop's 4: the cost measured is an upper bound."""
    from dataclasses import replace

    import torch

    from sensorguard.service.bundle import Bundle, save_bundle
    from sensorguard.service.model import ConvAutoencoder, ModelConfig, default_depth, default_latent
    from sensorguard.service.scorer import Scorer
    from sensorguard.training.level_fit import fit_level

    config = ModelConfig(channels=len(CHANNELS), window=WINDOW, latent=default_latent(len(CHANNELS), WINDOW),
                         hidden=32, depth=default_depth(WINDOW))
    torch.manual_seed(0)
    net = ConvAutoencoder(config)
    bundle = Bundle(channels=CHANNELS, config=config, hop=HOP, center_=np.zeros(len(CHANNELS)),
                    scale_=np.ones(len(CHANNELS)), threshold_=1.0, state_dict=net.state_dict(),
                    sample_period=None, name="bench", version="untrained",  # stamps are not on a grid: see above
                    alert_hop=ALERT_HOP)
    rows = normal_rows(4096)
    windows = np.stack([rows[i : i + WINDOW].T for i in range(0, len(rows) - WINDOW, 7)])
    errors = Scorer(bundle, device="cpu").score_windows(windows).error
    bundle = bundle.with_threshold(float(errors.max()) * 20, {"method": "bench: 20 x max normal error"})
    if level:  # (its line as far above normal rows as the error's: the same alerts, the term's cost added)
        bundle = replace(bundle, level=replace(fit_level(rows, CHANNELS), calibrated=20.0))
    path = save_bundle(bundle, directory / "bundle")
    return Path(path)


def normal_rows(n: int, seed: int = 0) -> np.ndarray:
    """``n`` normal-looking rows: slow sines plus noise, rounded to 3 decimals as a device would send."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    phase = np.arange(len(CHANNELS))[None, :]
    return np.round(np.sin(t / 50.0 + phase) + 0.05 * rng.standard_normal((n, len(CHANNELS))), 3)


ROWS = normal_rows(1024)
ROW_DICTS = [dict(zip(CHANNELS, map(float, row), strict=True)) for row in ROWS]
SPIKE_DICT = dict.fromkeys(CHANNELS, SPIKE)


def sample(k: int, ts: float, spike_every: int = 0) -> dict:
    """Sample number ``k`` of an asset (a spike every ``spike_every`` samples when > 0)."""
    values = SPIKE_DICT if spike_every and k % spike_every == spike_every // 2 else ROW_DICTS[k % len(ROW_DICTS)]
    return {"ts": ts, "values": values}


def asset_names(n: int) -> list[str]:
    return [f"site-{i % 10}/pump-{i:04d}" for i in range(n)]


# --- processes: broker, daemon, subscribers --------------------------------------------------------


def mosquitto_binary() -> str:
    path = find_mosquitto()
    if path is None:
        sys.exit("mosquitto not found (apt-get install mosquitto mosquitto-clients)")
    return path


class Broker:
    """Mosquitto on a free loopback port: persistence off, queues large, inflight as asked (0 = no limit)."""

    def __init__(self, workdir: Path, inflight: int = 0) -> None:
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"user {getpass.getuser()}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_queued_messages 1000000\n"
            "max_queued_bytes 0\n"
            f"max_inflight_messages {inflight}\n"
            "log_dest stderr\nlog_type error\nlog_type warning\n"
        )
        self.log = (workdir / "mosquitto.log").open("a")
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start: {(workdir / 'mosquitto.log').read_text()[-1000:]}")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


def stop_process(proc: subprocess.Popen, timeout: float = 20) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return proc.returncode


class Watch:
    """Samples one process's RSS (and keeps its peak) every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._interval = interval
        self.cpu0 = self.cpu()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def cpu(self) -> float:
        try:
            times = self.proc.cpu_times()
            return times.user + times.system
        except psutil.Error:
            return float("nan")

    def threads(self) -> list[float]:
        """CPU seconds of each thread, busiest first."""
        try:
            return sorted((t.user_time + t.system_time for t in self.proc.threads()), reverse=True)
        except psutil.Error:
            return []

    def rss(self) -> int:
        try:
            return self.proc.memory_info().rss
        except psutil.Error:
            return 0

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            rss = self.rss()
            self.samples.append((time.time(), rss))
            self.peak = max(self.peak, rss)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class DaemonProcess:
    """``sensorguard serve`` as a subprocess against ``broker``; :meth:`scrape` reads its /metrics."""

    def __init__(self, broker: Broker, bundle_dir: Path, workdir: Path, max_assets: int = 1000,
                 extra: tuple[str, ...] = (), client_id: str | None = None, wait_ready: bool = True,
                 torch_threads: int = 0) -> None:
        self.metrics_port = free_port()
        env = dict(os.environ)
        if torch_threads:
            env["OMP_NUM_THREADS"] = str(torch_threads)  # torch's intra-op threads, read at import
        exe = shutil.which("sensorguard")
        cmd = [exe] if exe else [sys.executable, "-m", "sensorguard"]
        cmd += ["serve", "--model", str(bundle_dir), "--broker", broker.url, "--metrics-port", str(self.metrics_port),
                "--client-id", client_id or f"bench-daemon-{time.monotonic_ns()}",
                "--max-assets", str(max(1000, max_assets)), "--log-level", "WARNING", *extra]
        self.log_path = workdir / "daemon.log"
        self.log = self.log_path.open("a")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        self.url = f"http://127.0.0.1:{self.metrics_port}"
        if not wait_ready:
            self.watch = Watch(self.proc.pid)
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError("daemon not ready after 60 s")
        time.sleep(0.5)  # readyz turns on when SUBSCRIBE is sent; give the SUBACK a moment
        self.watch = Watch(self.proc.pid)

    def scrape(self) -> dict[str, object]:
        """readings, rejected (sum over reasons), windows, and the latency histogram's buckets."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            text = response.read().decode()
        out: dict[str, object] = {"readings": 0.0, "rejected": 0.0, "windows": 0.0, "buckets": {}}
        buckets: dict[float, float] = out["buckets"]  # type: ignore[assignment]
        for line in text.splitlines():
            if not line.startswith("sensorguard_"):
                continue
            name, _, value = line.rpartition(" ")
            if name == "sensorguard_readings_total":
                out["readings"] = float(value)
            elif name.startswith("sensorguard_messages_rejected_total{"):
                out["rejected"] = out["rejected"] + float(value)  # type: ignore[operator]
            elif name == "sensorguard_windows_scored_total":
                out["windows"] = float(value)
            elif name.startswith("sensorguard_reading_to_score_seconds_bucket{"):
                le = name.split('le="', 1)[1].split('"', 1)[0]
                buckets[float(le)] = float(value)
        return out

    def stop(self) -> int | None:
        self.watch.stop()
        code = stop_process(self.proc, timeout=60)
        self.log.close()
        return code


def histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """Prometheus' ``histogram_quantile`` on cumulative ``{le: count}`` (linear inside a bucket)."""
    items = sorted(buckets.items())
    if not items or items[-1][1] <= 0:
        return float("nan")
    rank = q * items[-1][1]
    low, below = 0.0, 0.0
    for le, count in items:
        if count >= rank:
            if le == float("inf"):
                return low  # as Prometheus: the highest finite bound
            return low + (le - low) * ((rank - below) / (count - below) if count > below else 1.0)
        low, below = le, count
    return low


def bucket_delta(now: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    return {le: count - before.get(le, 0.0) for le, count in now.items()}


def load() -> str:
    """The machine's load average, printed beside every benchmark's numbers (they are noisy)."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
