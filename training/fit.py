"""One fit of the network on one block of normal rows: scaler, PCA start, Lightning, best weights.

``train_bundle`` calls it once with a validation block (early stopping); the cross-fitted
calibration calls it once per fold for a fixed number of epochs. Both start from the same place:
the scaler fit on the block's rows, the linear path at their principal components and the conv
path at zero output, so epoch 0 is the PCA detector and training can only keep or improve on it.

Training runs on one CPU thread: float32 sums come out differently with the number of torch
threads, and over a few dozen epochs those last bits changed where early stopping stopped (one file
gave 40 epochs with the default threads, 21 with one). One thread gives the same epochs and weights
whatever the caller's thread count, and costs little for a network this small (100k x 8 rows: 1.2 s
an epoch, against 1.0 s on two threads and 2.4 s in float64, the other way to get there). It also
keeps OpenMP's spinning threads from fighting other processes on a busy 2-core machine, where two
training threads once took 455 s for a 15 s job. The caller's thread count is restored afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import signal
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping

from sensorguard.service.model import ModelConfig
from sensorguard.service.scorer import pick_device
from sensorguard.training.data import SensorData
from sensorguard.training.linear import PcaStart, pca_start
from sensorguard.training.scaling import ScalerFit, fit_scaler
from sensorguard.training.splits import WindowDataset, eval_loader, train_loader, window_starts
from sensorguard.training.system import AutoencoderSystem

EVAL_BATCH = 1024  # validation windows per batch: 4096 fall out of the caches and took twice as long (~0.2 s an epoch)


@dataclass(frozen=True)
class Fit:
    """A fitted network (float32 state for the bundle) with its scaler and PCA start."""

    config: ModelConfig
    scaler: ScalerFit
    start: PcaStart
    state: dict[str, torch.Tensor]
    best_val_loss: float
    best_epoch: int
    epochs: int
    val_windows: np.ndarray | None
    warm: bool = False  # started from the given ``init_state`` (False: it did not fit; the PCA start)
    processes: int = 1  # processes (or GPUs) that trained it together (Lightning's world size)


class _KeepBest(Callback):
    """Remember the weights of the best validation epoch (early stopping stops later than that)."""

    def __init__(self) -> None:
        self.best = float("inf")
        self.epoch = 0
        self.state: dict | None = None

    def seed(self, net: torch.nn.Module, windows: torch.Tensor) -> None:
        """Count the starting weights as epoch 0, so training can only improve on them."""
        net.eval()
        with torch.no_grad():
            self.best = float(((net(windows) - windows) ** 2).mean()) if len(windows) else float("inf")
        self.state = copy.deepcopy(net.state_dict())
        net.train()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loss = trainer.callback_metrics.get("val_loss")
        if loss is not None and not trainer.sanity_checking and float(loss) < self.best:
            self.best = float(loss)
            self.epoch = trainer.current_epoch + 1
            self.state = copy.deepcopy(pl_module.net.state_dict())

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Leave the best weights and the outcome in the module: with several processes only the
        module's state comes back to the caller (every rank holds the same, as DDP keeps them equal)."""
        if self.state is not None:
            pl_module.net.load_state_dict(self.state)
        pl_module.best_loss.fill_(self.best)
        pl_module.best_epoch.fill_(self.epoch)
        pl_module.epochs_run.fill_(trainer.current_epoch)


def fit_network(
    train: SensorData,
    validation: SensorData | None,
    config: ModelConfig,
    options: Any,
    epochs: int | None = None,
    init_state: dict | None = None,
    rank: int | None = None,
    shared_scale: np.ndarray | None = None,
) -> Fit:
    """Fit on ``train``; with ``validation``, stop early and keep the best epoch, else run ``epochs``.

    options: a ``TrainOptions`` (batch size, learning rate, noise, patience, seed, device).
    init_state: warm-start weights; used when they fit this architecture, else the PCA start.
    rank: the linear path's rank; None chooses it from these rows (``pca_start``).
    shared_scale: per channel, a scale to use instead of these rows' (NaN: these rows'), so every
    fit of one ``train`` measures a spiky channel alike (``scaling.spiky_scale``).
    """
    pl.seed_everything(options.seed, workers=True, verbose=False)
    scaler = fit_scaler(train.values).pinned(shared_scale)
    start = pca_start(scaler_apply(scaler, train.values), rank)
    config = ModelConfig(**{**config.to_dict(), "linear": start.rank})
    device = pick_device(options.device)
    system = AutoencoderSystem(
        channels=config.channels, window=config.window, latent=config.latent, hidden=config.hidden,
        depth=config.depth, lr=options.lr, noise=options.noise, linear=config.linear,
        conv_weight_decay=options.conv_weight_decay,
    )
    warm = init_state is not None and _fits(system.net, init_state)
    if warm:
        system.net.load_state_dict(init_state)
    elif config.linear:
        system.net.init_linear(torch.as_tensor(start.components, dtype=torch.float32),
                               torch.as_tensor(start.mean, dtype=torch.float32))
    else:  # one channel: start by predicting the center, the naive detector
        system.net.zero_conv_output()

    def dataset(part: SensorData, stride: int = 1) -> WindowDataset:
        return WindowDataset(scaler_apply(scaler, part.values), part.segments, config.window, stride)

    with _one_thread(device):
        fit = _run(system, dataset, train, validation, config, options, epochs, device, scaler, start)
    return replace(fit, warm=warm)


@contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _run(
    system: AutoencoderSystem,
    dataset: Callable[..., WindowDataset],
    train: SensorData,
    validation: SensorData | None,
    config: ModelConfig,
    options: Any,
    epochs: int | None,
    device: torch.device,
    scaler: ScalerFit,
    start: PcaStart,
) -> Fit:
    # with several processes (DDP) each takes its share of the same global batches (GlobalBatches)
    loader = train_loader(dataset(train), options.batch_size, options.max_windows_per_epoch, options.seed)
    keep_best = _KeepBest()
    val_windows = None
    epochs_run, processes = 0, 1
    if validation is not None:
        n_val = len(window_starts(validation.segments, config.window))
        val_set = dataset(validation, stride=max(1, n_val // 4096))
        windows = val_set.__getitems__(list(range(len(val_set))))
        keep_best.seed(system.net, windows)
        val_windows = windows.numpy()
        callbacks = [EarlyStopping("val_loss", patience=options.patience, min_delta=1e-4), keep_best]
        with tempfile.TemporaryDirectory(prefix="sensorguard-fit-") as root:
            trainer = _trainer(options, callbacks, options.max_epochs, device, root)
            _interruptible(trainer.fit, system, loader, eval_loader(val_set, EVAL_BATCH))
            processes = trainer.world_size
        best, best_epoch, epochs_run = float(system.best_loss), int(system.best_epoch), int(system.epochs_run)
    else:
        if epochs:
            with tempfile.TemporaryDirectory(prefix="sensorguard-fit-") as root:
                trainer = _trainer(options, [], epochs, device, root)
                _interruptible(trainer.fit, system, loader)
                processes = trainer.world_size
        best, best_epoch, epochs_run = keep_best.best, epochs or 0, epochs or 0
    state = {k: v.detach().cpu().clone() for k, v in system.net.state_dict().items()}
    return Fit(config, scaler, start, state, best, best_epoch, epochs_run, val_windows, processes=processes)


def _interruptible(fit: Callable[..., Any], *args: Any) -> None:
    """``trainer.fit(*args)``, a Ctrl-C raised as ``KeyboardInterrupt``. Lightning answers one with
    ``sys.exit(1)`` and leaves SIGINT ignored: ``train`` and the demo then ended with status 1 and
    no word, where the CLI says "interrupted" with 130 and the demo "interrupted: stopping" (a walk)."""
    handler = signal.getsignal(signal.SIGINT)
    try:
        fit(*args)
    except SystemExit as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise
    finally:
        if signal.getsignal(signal.SIGINT) != handler and handler is not None:
            with contextlib.suppress(ValueError):  # (only the main thread sets handlers; only it was interrupted)
                signal.signal(signal.SIGINT, handler)  # a later Ctrl-C must stop the command again


def scaler_apply(scaler: ScalerFit, values: np.ndarray) -> np.ndarray:
    return (np.asarray(values, dtype=np.float64) - scaler.center_) / scaler.scale_


def _fits(net: torch.nn.Module, state: dict) -> bool:
    """Whether a warm-start state has this network's layers (older bundles lack the linear path)."""
    own = net.state_dict()
    return own.keys() == state.keys() and all(own[k].shape == state[k].shape for k in own)


def default_strategy(device: torch.device) -> str:
    """DDP without relaunching the command: forked processes on CPU (nothing to pickle, no shared
    memory needed: spawning failed on a container's small /dev/shm), spawned ones on GPUs (CUDA
    cannot be forked)."""
    return "ddp_spawn" if device.type == "cuda" else "ddp_fork"


def _trainer(options: Any, callbacks: list[Callback], max_epochs: int, device: torch.device,
             root: str) -> pl.Trainer:
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*num_workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")
    devices = getattr(options, "devices", 1)
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=devices,
        strategy=(getattr(options, "strategy", None) or default_strategy(device)) if devices > 1 else "auto",
        default_root_dir=root,  # a multi-process fit passes its weights back through a file here
        use_distributed_sampler=False,  # GlobalBatches shares each batch out: the same steps as one process
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=options.progress,
        deterministic=True,
        num_sanity_val_steps=0,
    )
