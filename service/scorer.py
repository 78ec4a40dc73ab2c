"""The batched scorer: raw windows -> standardize -> reconstruct -> error -> score.

One implementation serves ``sensorguard score``, ``evaluate``, calibration and the live daemon, so
they all give the same numbers for the same readings. Windows are scored in large batches: the
autoencoder is small, so per-call overhead dominates unless many windows share one forward pass.

Definitions (see DESIGN.md): the per-channel error of a window is the mean squared reconstruction
error over its newest ``focus`` samples (the bundle's ``scored_samples``: the samples that arrived
since the previous scored window, so each sample is judged once and an alert ends a hop after the
fault does; all samples for bundles that predate it) in standardized units, times the channel's
weight (the bundle's ``channel_weights_``: one over its typical held-out error, so a channel the
model reconstructs well is not drowned by a noisy one; 1 for bundles that predate them); the
window error is the mean over channels; the score is ``error / threshold`` (1.0 is the alert line, higher is more
anomalous). The rest of the window is context: the model sees it, the score does not count it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from sensorguard.service.bundle import Bundle

_CLIP = 1e6  # standardized values beyond this are sensor garbage; clipping keeps errors finite


@dataclass(frozen=True)
class Scores:
    """Scores of ``n`` windows: ``error`` and ``score`` are ``(n,)``, ``channel_error`` is ``(n, C)``
    (each channel's weighted error: its contribution to ``error``, their mean)."""

    error: np.ndarray
    score: np.ndarray
    channel_error: np.ndarray

    def top_channels(self, i: int, channels: tuple[str, ...], k: int = 3) -> list[dict]:
        """The ``k`` channels contributing most to window ``i``, with their share of its error."""
        return self.all_top_channels(channels, k, rows=[i])[0]

    def all_top_channels(self, channels: tuple[str, ...], k: int = 3,
                         rows: list[int] | None = None) -> list[list[dict]]:
        """:meth:`top_channels` of every window (or of ``rows``), sorted in one call: one ``argsort``
        per window cost the daemon about a sixth of its scoring thread."""
        errors = self.channel_error if rows is None else self.channel_error[rows]
        totals = errors.sum(axis=1).tolist()
        orders = np.argsort(-errors, axis=1, kind="stable")[:, :k].tolist()
        values = errors.tolist()
        return [
            [{"name": channels[j], "share": round(row[j] / total, 4) if total > 0 else 0.0} for j in order]
            for row, total, order in zip(values, totals, orders, strict=True)
        ]


IMPUTE_PASSES = 3  # reconstruction passes that fill a faulted channel in (service.sensors)


def without_channels(scores: Scores, excluded: np.ndarray, threshold: float) -> Scores:
    """``scores`` with the ``excluded`` channels (``(n, C)`` bool: a sensor fault open in the
    window) left out of each window's error: the mean over the others (NaN when none is left: the
    window is not judged, live or offline). Windows without exclusions keep their numbers exactly."""
    excluded = np.asarray(excluded, dtype=bool)
    if not excluded.any():
        return scores
    channel_error = np.where(excluded, 0.0, scores.channel_error)
    kept = (~excluded).sum(axis=1)
    recomputed = np.where(kept > 0, channel_error.sum(axis=1) / np.maximum(kept, 1), np.nan)
    error = np.where(excluded.any(axis=1) & ~np.isnan(scores.error), recomputed, scores.error)
    # a window not judged (none full yet, or every channel faulted) has no channel errors either: 0
    # read as a perfect reconstruction in score's file (found by review)
    channel_error[np.isnan(error)] = np.nan
    return Scores(error=error, score=error / threshold, channel_error=channel_error)


def pick_device(device: str | None = None) -> torch.device:
    """CUDA when present unless told otherwise; the CPU always works."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Scorer:
    """Scores windows of raw readings with one bundle's model, scaler and threshold.

    Scoring never changes the model: it runs under ``torch.inference_mode`` in eval mode.
    """

    def __init__(self, bundle: Bundle, device: str | None = None, batch_size: int = 1024) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.bundle = bundle
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.model = bundle.build_model().to(self.device)
        self.focus = bundle.scored_samples
        weights = bundle.channel_weights_
        self._weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)

    @property
    def channels(self) -> tuple[str, ...]:
        return self.bundle.channels

    @property
    def window(self) -> int:
        return self.bundle.window

    def standardize(self, values: np.ndarray) -> np.ndarray:
        """Raw ``(..., C)`` readings to standardized float32 with the bundle's scaler."""
        out = (np.asarray(values, dtype=np.float64) - self.bundle.center_) / self.bundle.scale_
        return np.clip(out, -_CLIP, _CLIP).astype(np.float32)

    def score_windows(self, windows: np.ndarray, excluded: np.ndarray | None = None) -> Scores:
        """Score raw windows of shape ``(n, C, window)``.

        excluded: ``(n, C)`` bool, channels with a sensor fault open: imputed by the model
        (:meth:`_impute`) and left out of the error (:func:`without_channels`).
        """
        windows = np.asarray(windows)
        expected = (len(self.channels), self.window)
        if windows.ndim != 3 or windows.shape[1:] != expected:
            raise ValueError(f"windows must have shape (n, {expected[0]}, {expected[1]}), got {windows.shape}")
        center, scale = self.bundle.center_[:, None], self.bundle.scale_[:, None]
        std = np.clip((windows.astype(np.float64, copy=False) - center) / scale, -_CLIP, _CLIP)
        masks = None if excluded is None else (np.asarray(excluded, dtype=bool),)
        scores = self._score_standardized((std.astype(np.float32),), masks)
        return scores if excluded is None else without_channels(scores, excluded, self.bundle.threshold_)

    def score_series(self, values: np.ndarray, segments: np.ndarray | None = None,
                     excluded: np.ndarray | None = None) -> Scores:
        """Score every full window of a ``(T, C)`` series; row ``t`` gets the window ending at ``t``.

        ``segments`` labels each row with a segment id (contiguous runs): no window spans two
        segments, so a gap in the data never produces a window stitched across it. Rows without a
        full window get NaN. excluded: ``(T, C)`` bool, channels with a sensor fault open at each
        row; the window ending there imputes and leaves them out, as :meth:`score_windows`.
        """
        values = np.asarray(values)
        if values.ndim != 2 or values.shape[1] != len(self.channels):
            raise ValueError(f"values must have shape (T, {len(self.channels)}), got {values.shape}")
        n_rows, window = len(values), self.window
        std = self.standardize(values)
        bounds = segment_bounds(n_rows, segments)
        pieces, ends = [], []
        for start, stop in bounds:
            if stop - start >= window:
                pieces.append(sliding_window_view(std[start:stop], window, axis=0))
                ends.append(np.arange(start + window - 1, stop))
        error = np.full(n_rows, np.nan)
        channel_error = np.full((n_rows, len(self.channels)), np.nan)
        if pieces:
            masks = None if excluded is None else tuple(np.asarray(excluded, dtype=bool)[e] for e in ends)
            scores = self._score_standardized(tuple(pieces), masks)
            rows = np.concatenate(ends)
            error[rows] = scores.error
            channel_error[rows] = scores.channel_error
        scores = Scores(error=error, score=error / self.bundle.threshold_, channel_error=channel_error)
        return scores if excluded is None else without_channels(scores, excluded, self.bundle.threshold_)

    def reconstruct(self, windows: np.ndarray) -> np.ndarray:
        """Reconstruction of raw ``(n, C, window)`` windows, in raw units (for reports)."""
        x = torch.as_tensor(self.standardize(np.swapaxes(windows, 1, 2)), device=self.device).transpose(1, 2)
        with torch.inference_mode(), full_precision(self.device):
            recon = self.model(x).transpose(1, 2)
        return np.swapaxes(recon.cpu().numpy() * self.bundle.scale_ + self.bundle.center_, 1, 2)

    def _impute(self, x: torch.Tensor, mask: np.ndarray) -> torch.Tensor:
        """Windows ``x`` with the ``mask``ed channels (``(n, C)``) replaced by what the model makes
        of the others: start at the training center (0), then ``IMPUTE_PASSES`` times take the
        reconstruction. A dead sensor's value then neither feeds the model nor drags the other
        channels' reconstructions."""
        m = torch.as_tensor(mask, device=x.device)[:, :, None].expand_as(x)
        x = x.masked_fill(m, 0.0)
        for _ in range(IMPUTE_PASSES):
            x = torch.where(m, self.model(x), x)
        return x

    def _score_standardized(self, pieces: tuple[np.ndarray, ...],
                            masks: tuple[np.ndarray, ...] | None = None) -> Scores:
        channel_errors = []
        with torch.inference_mode(), full_precision(self.device):
            for p, piece in enumerate(pieces):
                for i in range(0, len(piece), self.batch_size):
                    batch = torch.from_numpy(np.ascontiguousarray(piece[i : i + self.batch_size]))
                    x = batch.to(self.device, non_blocking=True)
                    if masks is not None and masks[p][i : i + self.batch_size].any():
                        x = self._impute(x, masks[p][i : i + self.batch_size])
                    per_channel = (self.model(x) - x)[:, :, -self.focus :].square_().mean(dim=2).double().cpu()
                    if self._weights is not None:
                        per_channel *= self._weights
                    channel_errors.append(per_channel.numpy())
        n_ch = len(self.channels)
        channel_error = np.concatenate(channel_errors) if channel_errors else np.empty((0, n_ch))
        error = channel_error.mean(axis=1)
        return Scores(error=error, score=error / self.bundle.threshold_, channel_error=channel_error)



@contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """On CUDA, convolutions in full float32 while scoring: cuDNN's TF32 (torch's default for
    convolutions) rounds to 10 mantissa bits, and ``train``, ``calibrate`` and ``score`` on a GPU
    then set and judged the line on other numbers than the daemon computes on its CPU. Restored after."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before

def segment_bounds(n_rows: int, segments: np.ndarray | None) -> list[tuple[int, int]]:
    """``(start, stop)`` of each contiguous run of equal segment ids (the whole series without ids)."""
    if segments is None or n_rows == 0:
        return [(0, n_rows)]
    segments = np.asarray(segments)
    cuts = np.flatnonzero(segments[1:] != segments[:-1]) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [n_rows]])
    return list(zip(starts.tolist(), stops.tolist(), strict=True))
