"""The networks of the constrained adversarial auto-encoder and its baselines (paper 002).

The paper says only "We implement a ResNet structure for the encoder and decoder" and that the
slices are down-sampled to 32x32 (section 4). Everything below is our documented choice.

Residual blocks are pre-activation ResNet blocks (He et al., "Identity mappings in deep residual
networks", 2016): BN -> ReLU -> 3x3 conv -> BN -> ReLU -> 3x3 conv, added to a shortcut that is the
identity, or a 1x1 convolution when the block changes the number of maps or the resolution.
A down block strides its first 3x3 conv and its 1x1 shortcut by 2; an up block upsamples (nearest,
2x) in both paths, as the WGAN-GP ResNets do: before its first 3x3 conv, and after its 1x1 shortcut
conv (which commutes with nearest upsampling). Convolutions carry no bias, since a batch
normalisation follows each of them (directly or after the residual sum), except the output conv.

Encoder (``features`` = 32, 64, 128, 256; slice H x W, each divisible by 8):

    3x3 conv C -> 32                                   32 maps  H   x W
    down block 32 -> 64                                64 maps  H/2 x W/2
    down block 64 -> 128                              128 maps  H/4 x W/4
    down block 128 -> 256                             256 maps  H/8 x W/8
    BN -> ReLU -> flatten -> Linear(256 * H/8 * W/8, out_features)

``out_features`` is the latent size (128) for the AAEs, and twice that for the VAE (mu, log var).

Decoder, the mirror image:

    Linear(latent, 256 * H/8 * W/8) -> reshape         256 maps  H/8 x W/8
    up block 256 -> 128, 128 -> 64, 64 -> 32            32 maps  H   x W
    BN -> ReLU -> 3x3 conv 32 -> C (with bias, no activation: the inputs are z-scored)

Why torch layers and not dynamic-network-architectures' blocks (which ASC-Net, DRAEM and the
two-phase net use): its residual blocks (BasicBlockD, BottleneckD) are post-activation, conv-norm-
nonlin-conv-norm, add, nonlin, with an average-pooling shortcut when they stride, and its decoders
upsample by transposed convolution; the pre-activation blocks and nearest-upsampling up blocks
above are a different function that those blocks cannot be configured to compute.

Latent critic (WGAN-GP, paper eq. 5): an MLP latent -> 512 -> 512 -> 1 with LeakyReLU(0.2) and no
normalisation, since batch normalisation would make the gradient penalty, which is per sample,
depend on the other samples of the batch (Gulrajani et al. 2017, section 4).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

DEFAULT_FEATURES = (32, 64, 128, 256)
DEFAULT_LATENT = 128
CRITIC_HIDDEN = 512


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)


class ResidualBlock(nn.Module):
    """A pre-activation residual block that keeps, halves ("down") or doubles ("up") the resolution."""

    def __init__(self, in_channels: int, out_channels: int, resample: str | None = None):
        super().__init__()
        if resample not in (None, "down", "up"):
            raise ValueError(f"resample must be None, 'down' or 'up', not {resample!r}")
        stride = 2 if resample == "down" else 1
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest") if resample == "up" else nn.Identity()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.activation = nn.ReLU()
        if resample is None and in_channels == out_channels:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A 1x1 conv commutes with nearest upsampling; convolving first is 4x cheaper.
        skip = self.upsample(self.shortcut(x))
        h = self.conv1(self.upsample(self.activation(self.norm1(x))))
        h = self.conv2(self.activation(self.norm2(h)))
        return skip + h


def bottom_size(slice_size: tuple[int, int], levels: int) -> tuple[int, int]:
    """The feature map size after ``levels`` halvings; the slice must divide evenly."""
    h, w = (int(s) for s in slice_size)
    factor = 2 ** levels
    if h % factor or w % factor:
        raise ValueError(f"slice size {h}x{w}: both sides must be divisible by {factor} ({levels} halvings)")
    return h // factor, w // factor


class ResNetEncoder(nn.Module):
    """(B, C, H, W) slices -> (B, out_features)."""

    def __init__(self, in_channels: int, slice_size: tuple[int, int], out_features: int,
                 features: tuple[int, ...] = DEFAULT_FEATURES):
        super().__init__()
        self.bottom = bottom_size(slice_size, len(features) - 1)
        self.stem = conv3x3(in_channels, features[0])
        self.blocks = nn.Sequential(*(ResidualBlock(a, b, "down") for a, b in zip(features[:-1], features[1:])))
        self.head = nn.Sequential(nn.BatchNorm2d(features[-1]), nn.ReLU(), nn.Flatten(),
                                  nn.Linear(features[-1] * self.bottom[0] * self.bottom[1], out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class ResNetDecoder(nn.Module):
    """(B, latent) codes -> (B, C, H, W) reconstructions."""

    def __init__(self, out_channels: int, slice_size: tuple[int, int], latent_dim: int,
                 features: tuple[int, ...] = DEFAULT_FEATURES):
        super().__init__()
        self.bottom = bottom_size(slice_size, len(features) - 1)
        self.bottom_channels = features[-1]
        self.project = nn.Linear(latent_dim, features[-1] * self.bottom[0] * self.bottom[1])
        reversed_features = features[::-1]
        self.blocks = nn.Sequential(*(ResidualBlock(a, b, "up")
                                      for a, b in zip(reversed_features[:-1], reversed_features[1:])))
        self.head = nn.Sequential(nn.BatchNorm2d(features[0]), nn.ReLU(), conv3x3(features[0], out_channels, bias=True))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(z.shape[0], self.bottom_channels, *self.bottom)
        return self.head(self.blocks(h))


class LatentCritic(nn.Module):
    """WGAN-GP critic on latent codes: (B, latent) -> (B,) unbounded scores."""

    def __init__(self, latent_dim: int, hidden: int = CRITIC_HIDDEN):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(latent_dim, hidden), nn.LeakyReLU(0.2),
                                    nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
                                    nn.Linear(hidden, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z).squeeze(1)


@contextmanager
def frozen_running_statistics(module: nn.Module):
    """Batch normalisation in training mode (normalising by the batch's statistics) that leaves the
    running statistics, and the count of batches seen, as they were before the block.

    Inside the block every buffer is swapped for a copy, which the layers update and which is dropped
    afterwards. The original buffers are never written to, so the block may end before the backward
    pass of what it computed (writing the old values back would break that pass).
    """
    originals = []
    for layer in module.modules():
        for name, buffer in list(layer.named_buffers(recurse=False)):
            originals.append((layer, name, buffer))
            setattr(layer, name, buffer.clone())
    try:
        yield module
    finally:
        for layer, name, buffer in originals:
            setattr(layer, name, buffer)
