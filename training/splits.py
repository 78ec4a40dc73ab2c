"""Splitting clean sensor history by time and cutting it into windows for training.

Blocks are contiguous in time (train, then validation, then calibration: never shuffled across),
windows never span a segment boundary (an outage), and the window shrinks to fit when a new
machine has only a few hundred rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

from sensorguard.training.data import DataError, SensorData


@dataclass(frozen=True)
class Splits:
    train: SensorData
    validation: SensorData
    calibration: SensorData


def split_by_time(data: SensorData, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> Splits:
    """Contiguous blocks in time: train, then validation, then calibration (never shuffled).

    Cut points are row-count quantiles of time, so with several machines every block holds the same
    period of each machine, and the calibration block is always the most recent data. Rows of
    false alarms acknowledged (:meth:`SensorData.learned`) are training rows wherever they fall.
    """
    n = len(data)
    ordered = np.sort(data.times)
    a = int(round(n * fractions[0]))
    b = int(round(n * (fractions[0] + fractions[1])))
    t1 = ordered[a] if a < n else np.inf
    t2 = ordered[b] if b < n else np.inf
    learned = data.learned()
    middle, late = (data.times >= t1) & (data.times < t2), data.times >= t2
    for block, share, rows in (("validation", fractions[1], middle), ("calibration", fractions[2], late)):
        if share > 0 and rows.any() and learned[rows].all():  # (it said "too little data": a review)
            raise DataError(f"the rows of alerts acknowledged as false alarms (learned as normal: training rows "
                            f"only) fill the newest {share:.0%} of the data, so no normal rows are left for the "
                            f"{block} block: give normal data from after them too (--recorded keeps recording it)")
    return Splits(data.take((data.times < t1) | learned), data.take(middle & ~learned), data.take(late & ~learned))


def window_starts(segments: np.ndarray, window: int, stride: int = 1) -> np.ndarray:
    """Start rows of every window of ``window`` rows that stays inside one segment."""
    n = len(segments)
    if n < window:
        return np.empty(0, dtype=np.int64)
    same = segments[window - 1 :] == segments[: n - window + 1]
    starts = np.flatnonzero(same)
    return starts[::stride] if stride > 1 else starts


def count_windows(segments: np.ndarray, window: int) -> int:
    return len(window_starts(segments, window))


def choose_window(splits: Splits, requested: int | None, min_windows: int = 32, default: int = 32) -> int:
    """The requested window, or the default halved until every split keeps ``min_windows`` windows.

    This is how a few hundred rows of a new machine still train: the window shrinks to fit.
    """
    window = requested or default
    parts = (splits.train, splits.validation, splits.calibration)
    if requested:
        if window % 2:  # the encoder's first layer halves it (any depth needs an even window)
            even = f"{window - 1} or {window + 1}" if window > 2 else str(window + 1)
            raise DataError(f"--window {window} must be even (the encoder halves it): give {even}")
        short = [len(p) for p in parts if count_windows(p.segments, window) < 1]
        if short:
            raise DataError(f"--window {window} is longer than a data split ({min(short)} rows); use fewer")
        return window
    while window > 8 and min(count_windows(p.segments, window) for p in parts) < min_windows:
        window //= 2
    if min(count_windows(p.segments, window) for p in parts) < min_windows // 2:
        need = math.ceil((window + min_windows // 2 - 1) / 0.2)  # the smallest split, a fifth, holds them
        raise DataError(
            f"too little data: {sum(len(p) for p in parts)} usable rows, need about {need} in one unbroken stretch "
            f"(each split must hold {min_windows // 2}+ windows of {window} rows)"
        )
    return window


class WindowDataset(Dataset):
    """Standardized windows ``(C, window)`` of one split, fetched a whole batch at a time."""

    def __init__(self, standardized: np.ndarray, segments: np.ndarray, window: int, stride: int = 1) -> None:
        self.data = torch.from_numpy(np.ascontiguousarray(standardized, dtype=np.float32))
        self.starts = torch.from_numpy(window_starts(segments, window, stride))
        self.offsets = torch.arange(window)
        self.window = window

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> torch.Tensor:
        start = int(self.starts[index])
        return self.data[start : start + self.window].T

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        rows = self.starts[torch.as_tensor(indices)][:, None] + self.offsets
        return self.data[rows].transpose(1, 2).contiguous()


def _keep_batch(batch: torch.Tensor) -> torch.Tensor:
    return batch


def train_loader(dataset: WindowDataset, batch_size: int, max_windows: int, seed: int) -> DataLoader:
    """Shuffled training batches; an epoch sees at most ``max_windows`` windows (overlap is redundant)."""
    return DataLoader(dataset, batch_sampler=GlobalBatches(dataset, batch_size, max_windows, seed),
                      collate_fn=_keep_batch)


class GlobalBatches(Sampler[list[int]]):
    """Shuffled batches of ``batch_size`` windows, the same on every process of a DDP fit, each
    process taking its share of each batch (``train --devices N``).

    DDP averages the processes' gradients, so N processes then take the same optimizer steps on
    the same global batches as one process: the bundle does not depend on the process count beyond
    float rounding (Lightning's own DistributedSampler would give each process other windows and
    N times fewer, larger-in-total steps). With one process this is exactly a ``RandomSampler``
    batched by ``batch_size``. A last batch smaller than the number of processes is dropped (every
    process must take the same number of steps).
    """

    def __init__(self, dataset: Dataset, batch_size: int, max_windows: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.sampler = RandomSampler(dataset, num_samples=min(len(dataset), max_windows), generator=generator)
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = _rank_and_world()
        batch: list[int] = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                yield _share(batch, rank, world)
                batch = []
        if len(batch) >= world:
            yield _share(batch, rank, world)

    def __len__(self) -> int:
        full, rest = divmod(len(self.sampler), self.batch_size)
        return full + (rest >= max(1, _rank_and_world()[1]) if rest else 0)


def _share(batch: list[int], rank: int, world: int) -> list[int]:
    if world == 1:
        return batch
    return [int(i) for i in np.array_split(np.asarray(batch), world)[rank]]


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def eval_loader(dataset: WindowDataset, batch_size: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=_keep_batch)
