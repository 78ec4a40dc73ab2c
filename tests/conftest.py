"""Shared fixtures: small deterministic data and a quickly trained bundle."""

from __future__ import annotations

import logging
import os
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch

from sensorguard.service.bundle import Bundle
from sensorguard.service.model import ConvAutoencoder, ModelConfig

# One torch thread per test process, and in the daemons and CLIs the tests start (they inherit it): the
# suite runs two test processes on the CI machine's two cores, each with its daemons' threads, and torch's
# default of a thread per core oversubscribed them; the small convolutions of a window spun in OpenMP
# waits (live-vs-offline tests: 73.6 s -> 41.7 s with one thread, measured side by side). A value set
# outside is kept; tests of thread counts set their own.
os.environ.setdefault("OMP_NUM_THREADS", "1")
if os.environ["OMP_NUM_THREADS"].isdigit():
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(autouse=True)
def _no_log_handler_left_behind():
    """``configure_logging`` (``serve``, ``demo``, a worker run in-process) replaces the root logger's
    handlers for the whole process: one left behind by a test kept writing every later test's lines
    (their daemons' threads too) to stderr, the stream of its time or the one of the moment, where a
    later test's check of stderr read them as its own (CI: "--- Logging error ---" tracebacks in a
    CLI's error, a request line in a "not on stderr" check). Each test's are removed at its end."""
    yield
    from sensorguard.service.logs import _Stderr

    root = logging.getLogger()
    for handler in root.handlers[:]:  # (pytest's own handlers are subclasses: left alone)
        if type(handler) is logging.StreamHandler or isinstance(handler, _Stderr):
            root.removeHandler(handler)


def epoch(frame: pd.DataFrame) -> np.ndarray:
    """A frame's ``timestamp`` column as epoch seconds."""
    return (frame["timestamp"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()


def plant_frame(rows: int = 3000, channels: int = 3, seed: int = 0, period: str = "1s") -> pd.DataFrame:
    """A small correlated signal, independent of training.simulate so data tests stand alone."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    load = np.sin(2 * np.pi * t / 200) + 0.3 * np.sin(2 * np.pi * t / 37)
    frame = pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=rows, freq=period, tz="UTC")})
    for i in range(channels):
        frame[f"c{i}"] = (i + 1) * np.roll(load, i) + 10 * i + rng.normal(0, 0.05, rows)
    return frame


@pytest.fixture
def tiny_bundle() -> Bundle:
    """An untrained but valid bundle: 3 channels, window 16."""
    torch.manual_seed(0)
    config = ModelConfig(channels=3, window=16, latent=4, hidden=8, depth=2)
    net = ConvAutoencoder(config)
    return Bundle(
        channels=("a", "b", "c"),
        config=config,
        hop=2,
        center_=np.array([0.0, 1.0, 2.0]),
        scale_=np.array([1.0, 2.0, 0.5]),
        threshold_=0.5,
        state_dict={k: v.clone() for k, v in net.state_dict().items()},
        sample_period=1.0,
    )


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A model trained once per test session on small normal data (fixed seed, ~25 s: cross-fitted calibration)."""
    from sensorguard.training.data import load_frame
    from sensorguard.training.train import TrainOptions, train_bundle

    root = tmp_path_factory.mktemp("trained")
    normal = root / "normal.csv"
    plant_frame(rows=4000, channels=3, seed=1).to_csv(normal, index=False)
    data = load_frame([normal])
    bundle, summary = train_bundle(data, TrainOptions(max_epochs=15, progress=False, seed=0))
    return bundle, summary, root


@pytest.fixture
def mosquitto(tmp_path):
    """A private Mosquitto broker on a free loopback port (skipped without it, failed under CI=true)."""
    from tests.mosquitto import Mosquitto

    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def trained_dir(trained):
    """The session's trained bundle saved as a bundle directory."""
    from sensorguard.service.bundle import save_bundle

    bundle, _, root = trained
    return save_bundle(bundle, root / "bundle")


@pytest.fixture
def tiny_disk(tmp_path):
    """A folder on a 64 KiB tmpfs of its own, for disk-full tests (root mounts it: skipped
    otherwise, failed under CI, where the runner is root); unmounted after (``-l``: a handle a
    failure keeps open)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a small tmpfs for the disk-full test: {done.stderr.decode().strip()}")
        pytest.skip(f"cannot mount a small tmpfs (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)
