"""The LightningModule: a thin training wrapper around ``service.model.ConvAutoencoder``.

The network itself is a plain ``nn.Module`` in ``service`` so serving never needs Lightning; this
system only adds the loss, optional denoising and the optimizer. Drop it into any ``Trainer``.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn

from sensorguard.service.model import ConvAutoencoder, ModelConfig


class AutoencoderSystem(pl.LightningModule):
    """Trains the autoencoder to reconstruct normal windows (MSE in standardized units).

    noise: std of Gaussian noise added to inputs during training (denoising autoencoder); the
    target stays the clean window, which makes the model less eager to copy noise.
    conv_weight_decay: AdamW's decay on the conv path (the linear path, PCA's, keeps
    ``weight_decay``): smaller weights extrapolate less wildly to a load the training rows never
    showed (measured in docs/benchmarks.md, session 31).
    """

    def __init__(
        self,
        channels: int,
        window: int,
        latent: int,
        hidden: int = 32,
        depth: int = 2,
        lr: float = 2e-3,
        weight_decay: float = 1e-5,
        noise: float = 0.0,
        linear: int = 0,
        conv_weight_decay: float = 1e-5,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.config = ModelConfig(channels=channels, window=window, latent=latent, hidden=hidden, depth=depth,
                                  linear=linear)
        self.net = ConvAutoencoder(self.config)
        self.loss = nn.MSELoss()
        # the outcome of a fit, kept with the weights: a multi-process strategy (ddp_spawn) returns
        # the module's state to the calling process, never the callbacks' (fit._KeepBest)
        self.register_buffer("best_loss", torch.tensor(float("inf"), dtype=torch.float64))
        self.register_buffer("best_epoch", torch.tensor(0))
        self.register_buffer("epochs_run", torch.tensor(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _common_step(self, batch: torch.Tensor, stage: str) -> torch.Tensor:
        inputs = batch
        if stage == "train" and self.hparams.noise > 0:
            inputs = batch + self.hparams.noise * torch.randn_like(batch)
        loss = self.loss(self.net(inputs), batch)
        # sync_dist: with several processes every rank sees the same validation loss (a no-op in one)
        self.log(f"{stage}_loss", loss, prog_bar=True, on_epoch=True, on_step=False, batch_size=len(batch),
                 sync_dist=True)
        return loss

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "train")

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "val")

    def configure_optimizers(self):
        linear = [p for n, p in self.net.named_parameters() if n.startswith(("project.", "unproject."))]
        conv = [p for n, p in self.net.named_parameters() if not n.startswith(("project.", "unproject."))]
        groups = [{"params": conv, "weight_decay": self.hparams.conv_weight_decay},
                  {"params": linear, "weight_decay": self.hparams.weight_decay}]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=self.hparams.lr)
