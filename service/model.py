"""The autoencoder network: a plain ``nn.Module`` shared by training and serving.

A strided Conv1d encoder squeezes a ``(channels, window)`` window through a small latent vector
(the bottleneck) and a mirrored ConvTranspose1d decoder rebuilds it. Trained on normal data only,
it reconstructs normal windows well and anomalous ones badly: the reconstruction error is the
anomaly signal.

Beside the convolutional path runs an optional linear one (``linear`` > 0): each sample alone is
projected onto ``linear`` directions and back (a 1x1 convolution pair, rank ``linear``). That is
PCA written as a network: training starts it at the principal components of the training rows and
the conv path at zero output, so the model begins as the classic linear detector and the conv path
only has to learn what PCA misses (temporal shape, non-linear relations). Early stopping keeps the
start when training does not improve on it, so the autoencoder is never worse than its linear
special case on validation data. This module holds no training logic (that lives in ``training.system``) so the
daemon can load it without Lightning.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

MAX_DEPTH = 16  # stride-2 layers: a window of 65,536 samples; more is a broken bundle
KERNEL = 4  # kernel 4, stride 2, padding 1 halves (encoder) and doubles (decoder) a length exactly


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters, stored in ``bundle.json`` so a bundle rebuilds its network.

    channels: number of input channels (sensors).
    window: samples per window; must be divisible by ``2 ** depth``.
    latent: size of the bottleneck vector.
    hidden: channels of the first conv layer; each further layer doubles it.
    depth: number of stride-2 conv layers.
    linear: rank of the per-sample linear path (0: none, as in bundles before it existed).
    """

    channels: int
    window: int
    latent: int = 16
    hidden: int = 32
    depth: int = 2
    linear: int = 0

    def __post_init__(self) -> None:
        for name in ("channels", "window", "latent", "hidden", "depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.depth > MAX_DEPTH:  # (2**depth below: a hostile bundle.json asked for 2**(2**40))
            raise ValueError(f"depth must be at most {MAX_DEPTH}, got {self.depth}")
        if not isinstance(self.linear, int) or not 0 <= self.linear < self.channels:
            raise ValueError(f"linear must be an integer in [0, channels), got {self.linear!r}")
        if self.window % (2**self.depth):
            raise ValueError(
                f"window must be divisible by 2**depth = {2**self.depth}, got window={self.window}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def default_depth(window: int) -> int:
    """Stride-2 layers for a window: down to a length of 4 to 8 samples, at most 3 layers."""
    depth = 0
    while depth < 3 and window % (2 ** (depth + 1)) == 0 and window // 2 ** (depth + 1) >= 4:
        depth += 1
    return max(depth, 1)


def default_latent(channels: int, window: int) -> int:
    """A bottleneck about 16 times narrower than the window, kept between 4 and 32 values."""
    return max(4, min(32, channels * window // 16))


class ConvAutoencoder(nn.Module):
    """Conv1d encoder -> linear bottleneck -> ConvTranspose1d decoder, plus the per-sample linear path.

    Input and output have shape ``(batch, channels, window)`` in standardized units.

    >>> net = ConvAutoencoder(ModelConfig(channels=3, window=32, latent=8))
    >>> net(torch.zeros(5, 3, 32)).shape
    torch.Size([5, 3, 32])
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.hidden * 2**i for i in range(config.depth)]
        encoder: list[nn.Module] = []
        in_ch = config.channels
        for width in widths:
            encoder += [nn.Conv1d(in_ch, width, KERNEL, stride=2, padding=1), nn.ReLU()]
            in_ch = width
        self.encoder = nn.Sequential(*encoder)
        self._inner = (widths[-1], config.window // 2**config.depth)
        flat = widths[-1] * self._inner[1]
        self.to_latent = nn.Linear(flat, config.latent)
        self.from_latent = nn.Sequential(nn.Linear(config.latent, flat), nn.ReLU())
        decoder: list[nn.Module] = []
        for i, width in enumerate(reversed(widths)):
            last = i == len(widths) - 1
            out_ch = config.channels if last else widths[len(widths) - 2 - i]
            decoder.append(nn.ConvTranspose1d(width, out_ch, KERNEL, stride=2, padding=1))
            if not last:
                decoder.append(nn.ReLU())
        self.decoder = nn.Sequential(*decoder)
        if config.linear:
            self.project = nn.Conv1d(config.channels, config.linear, 1)
            self.unproject = nn.Conv1d(config.linear, config.channels, 1)

    def zero_conv_output(self) -> None:
        """Zero the conv path's last layer: the network then outputs the linear path alone (or 0)."""
        with torch.no_grad():
            self.decoder[-1].weight.zero_()
            self.decoder[-1].bias.zero_()

    def init_linear(self, components: torch.Tensor, mean: torch.Tensor) -> None:
        """Start as PCA: ``components`` ``(linear, channels)`` orthonormal rows, ``mean`` ``(channels,)``.

        The conv path's last layer is zeroed, so the network's output is the PCA reconstruction
        ``mean + V^T V (x - mean)`` of each sample (to float rounding) until training moves it.
        """
        if not self.config.linear:
            raise ValueError("this network has no linear path (linear=0)")
        with torch.no_grad():
            self.project.weight.copy_(components[:, :, None])
            self.project.bias.copy_(-(components @ mean))
            self.unproject.weight.copy_(components.T[:, :, None])
            self.unproject.bias.copy_(mean)
        self.zero_conv_output()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.encoder(x).flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.from_latent(z).view(-1, *self._inner))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.decode(self.encode(x))
        if self.config.linear:
            out = out + self.linear_path(x)
        return out

    def linear_path(self, x: torch.Tensor) -> torch.Tensor:
        """``unproject(project(x))`` as one ``(channels, channels)`` matmul: ``U P x + (U b_p + b_u)``.

        The same map, stored as the two 1x1 convolutions training starts from PCA; run as such they
        cost about 3.4 ms per 1024 windows of 8 channels on one CPU thread, a tenth of the whole
        forward, where the folded product costs 0.2 ms (``bench/scoring.py``).
        """
        u, p = self.unproject.weight[:, :, 0], self.project.weight[:, :, 0]
        return torch.matmul(u @ p, x) + (u @ self.project.bias + self.unproject.bias)[:, None]


def flops_per_window(config: ModelConfig) -> int:
    """Multiply-adds x 2 of one forward pass, counted layer by layer (bias and ReLU ignored)."""
    net = ConvAutoencoder(config)
    flops = 0
    length = config.window
    for layer in net.encoder:
        if isinstance(layer, nn.Conv1d):
            length //= 2
            flops += 2 * length * layer.out_channels * layer.in_channels * KERNEL
    flops += 2 * net.to_latent.in_features * net.to_latent.out_features
    flops += 2 * net.from_latent[0].in_features * net.from_latent[0].out_features
    for layer in net.decoder:
        if isinstance(layer, nn.ConvTranspose1d):
            flops += 2 * length * layer.out_channels * layer.in_channels * KERNEL
            length *= 2
    if config.linear:  # run folded: one (channels, channels) matmul per sample (linear_path)
        flops += 2 * config.window * config.channels**2
    return flops
