"""The published convolutional autoencoder of the hidden bench's leaderboard, re-built as a reference.

The issue quotes a convolutional autoencoder at F1 0.78 / 13.6 % false alarms / 28.0 % missed on
its hidden test bench. The bench matching its description (SKAB, a pump loop with eight sensors)
publishes that detector's recipe; this module re-implements it in torch, as published:

- StandardScaler fit on the recording's first 400 rows; windows of 60 rows, every row;
- Conv1d 32 and 16 filters (kernel 7, stride 2, ReLU, dropout 0.2 after the first), mirrored by
  ConvTranspose1d, then a last ConvTranspose1d to **one** output channel. The mean squared error
  against the eight input channels broadcasts that one channel over all of them, so the network
  learns one value per time step (the cross-channel mean) and the residual measures how far the
  standardized channels sit from each other: a distance from the training level, not a learned
  reconstruction of the plant (the ``mean`` variant below, no network at all, scores about the same);
- Adam at 1e-3, batch 32, up to 100 epochs, early stopping on the last 10 % of the windows (patience 5);
- window residual: the sum over channels of the mean absolute error over its 60 rows; limit
  (UCL): 4/3 of the 99.9th percentile of the training windows' residuals (in-sample);
- a row is anomalous when the 59 windows around it all exceed the UCL. As published, those are
  the windows *starting* 59 to 1 rows before it, so they end up to 58 rows after it: the decision
  uses the future and breaks this project's rule that a row's alarm uses that row and earlier
  ones. ``published`` keeps it as a reference only; ``causal`` asks the same of the 59 windows
  ending at the row and the 58 before; ``one window`` alarms when the window ending at the row
  exceeds the UCL.

As published, the file is scored whole (train and test rows together; the counts here use the
test rows only), so its first test rows have windows reaching back into the training rows.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler
from torch import nn

from bench.detection_data import Case
from bench.detection_tables import OPERATOR, Counts, counts, operator_row, print_table

STEPS = 60  # the recipe's window
UCL_QUANTILE = 0.999
UCL_FACTOR = 4 / 3
RULES = ("published (non-causal)", "causal", "one window")


def sequences(values: np.ndarray) -> np.ndarray:
    """Every window of ``STEPS`` rows, one per row: ``(windows, STEPS, channels)``."""
    view = np.lib.stride_tricks.sliding_window_view(values, STEPS, axis=0)  # (W, C, STEPS)
    return np.ascontiguousarray(view.transpose(0, 2, 1), dtype=np.float32)


class PublishedConvAE(nn.Module):
    """The recipe's layers (Keras ``padding="same"`` with stride 2 is padding 3 here)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(channels, 32, 7, 2, 3), nn.ReLU(), nn.Dropout(0.2),
            nn.Conv1d(32, 16, 7, 2, 3), nn.ReLU(),
            nn.ConvTranspose1d(16, 16, 7, 2, 3, output_padding=1), nn.ReLU(), nn.Dropout(0.2),
            nn.ConvTranspose1d(16, 32, 7, 2, 3, output_padding=1), nn.ReLU(),
            nn.ConvTranspose1d(32, 1, 7, 1, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, STEPS, C) -> (B, STEPS, 1)
        return self.net(x.transpose(1, 2)).transpose(1, 2)


def fit_published(windows: np.ndarray, seed: int) -> PublishedConvAE:
    torch.manual_seed(seed)
    model = PublishedConvAE(windows.shape[2])
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    held = max(1, int(len(windows) * 0.1))
    train, val = torch.from_numpy(windows[:-held]), torch.from_numpy(windows[-held:])
    best, waited = np.inf, 0
    for _ in range(100):
        model.train()
        order = torch.randperm(len(train))
        for start in range(0, len(train), 32):
            batch = train[order[start:start + 32]]
            opt.zero_grad()
            ((batch - model(batch)) ** 2).mean().backward()  # broadcasts the one output channel
            opt.step()
        model.eval()
        with torch.no_grad():
            loss = float(((val - model(val)) ** 2).mean())
        best, waited = (loss, 0) if loss < best else (best, waited + 1)
        if waited >= 5:
            break
    return model.eval()


def residuals(model: PublishedConvAE | None, windows: np.ndarray) -> np.ndarray:
    """Per window, the sum over channels of the mean absolute error; ``None``: the cross-channel mean."""
    if model is None:
        rebuilt = windows.mean(axis=2, keepdims=True)
    else:
        with torch.no_grad():
            rebuilt = model(torch.from_numpy(windows)).numpy()
    return np.abs(windows - rebuilt).mean(axis=1).sum(axis=1)


def decisions(over: np.ndarray, rows: int) -> dict[str, np.ndarray]:
    """Per row of the whole file, each rule's alarm from the windows over the UCL (window ``i``
    holds rows ``i .. i + STEPS - 1``)."""
    run = STEPS - 1
    full = np.convolve(over.astype(int), np.ones(run, dtype=int), mode="valid") == run  # windows i..i+58 all over
    published, causal, one = (np.zeros(rows, dtype=bool) for _ in range(3))
    for row in range(STEPS - 1, len(over) - STEPS + 1):  # the notebook's loop: windows row-59 .. row-1
        published[row] = full[row - run]
    ends = np.arange(len(over)) + STEPS - 1  # the row each window ends at
    causal_rows = ends[run - 1:]  # the 59 windows ending at the row and the 58 before
    causal[causal_rows] = full
    one[ends] = over
    return dict(zip(RULES, (published, causal, one), strict=True))


def run_published(case: Case, seed: int = 0) -> dict[str, dict[str, Counts]]:
    """Each variant's counts on ``case``'s test rows: the network (``conv_ae``) and the network-free
    cross-channel mean it learns (``mean``), under each rule."""
    train = np.nan_to_num(case.train.values)
    whole = np.vstack([train, np.nan_to_num(case.test.values)])
    scaler = StandardScaler().fit(train)
    train_w, whole_w = sequences(scaler.transform(train)), sequences(scaler.transform(whole))
    out = {}
    for name, model in (("conv_ae", fit_published(train_w, seed)), ("mean", None)):
        ucl = UCL_FACTOR * float(np.quantile(residuals(model, train_w), UCL_QUANTILE))
        rules = decisions(residuals(model, whole_w) > ucl, len(whole))
        out[name] = {rule: counts(pred[len(train):], case.labels, case.test.sample_period, None)
                     for rule, pred in rules.items()}
    return out


def published_section(cases: list[Case], seed: int = 0) -> None:
    """The recipe on the same recordings as the other detectors, pooled over them."""
    pooled: dict[tuple[str, str], Counts] = {}
    for case in cases:
        for name, by_rule in run_published(case, seed).items():
            for rule, c in by_rule.items():
                pooled[(name, rule)] = pooled[(name, rule)] + c if (name, rule) in pooled else c
    print("\nthe published convolutional autoencoder's recipe (bench/detection_convae.py; its own UCL and "
          "59-window rule, train and test scored whole; 'published' uses 58 rows of the future: reference only)")
    print_table([operator_row(n, r, c) for (n, r), c in pooled.items()], OPERATOR[:-2])
