"""HealthyGAN's generator and PatchGAN discriminator (paper 003, appendix B, tables 2 and 3).

Generator (table 3; StarGAN's generator, which the paper adopts "with slight modification"):

    7x7 conv C -> 64, IN, ReLU                                  64 maps  H   x W
    4x4 conv stride 2, 64 -> 128, IN, ReLU                     128 maps  H/2 x W/2
    4x4 conv stride 2, 128 -> 256, IN, ReLU                    256 maps  H/4 x W/4
    6 residual blocks at 256 maps                              256 maps  H/4 x W/4
    4x4 transposed conv stride 2, 256 -> 128, IN, ReLU         128 maps  H/2 x W/2
    4x4 transposed conv stride 2, 128 -> 64, IN, ReLU           64 maps  H   x W
    7x7 conv 64 -> C + 1, tanh                                 C + 1     H   x W

The output splits as in the paper's table 3, where 3-channel images give 4 output channels: the
first C channels are the intermediate healthy image B_int (in [-1, 1]), the last one is the mask,
shared by all channels, mapped from tanh's [-1, 1] to M = (tanh + 1) / 2 in [0, 1].

Choices where the paper's table is silent or loose, each as in the authors' public code (StarGAN):

* A residual block is conv3x3-IN-ReLU-conv3x3-IN added to its input (the table lists one row per
  block with one conv; StarGAN's block, which the paper adopts, has two).
* Convolutions followed by instance normalisation carry no bias (the normalisation removes it);
  instance normalisation has a learned affine transform.
* Instance normalisation uses each image's own statistics in training and at inference. StarGAN's
  code keeps running statistics (``track_running_stats=True``), which makes evaluation mode
  normalise with training averages; the paper says "instance norm", which is what this is.
* The output layer is a 7x7 convolution with padding 3 (table 3 writes ConvTranspose2d, which at
  stride 1 and padding 3 is a convolution with a flipped kernel: the same function family; the
  authors' code uses Conv2d). No bias, as in the authors' code.

Why torch layers and not dynamic-network-architectures' blocks: StarGAN's residual block has no
activation after the sum, while DNA's BasicBlockD applies one (and uses its single ``nonlin`` for
both places); its decoders have no transposed conv + instance-norm + ReLU unit; and the PatchGAN
discriminator is a plain stack of strided convolutions. Expressing table 3 with those blocks would
change the network, so it is written with torch layers.

PatchGAN discriminator (table 2): 4x4 stride-2 convolutions (padding 1, with bias) with 64, 128,
..., 2048 maps, each followed by LeakyReLU(0.01), then a 3x3 stride-1 convolution to one map: a grid
of patch scores, (B, 1, H/64, W/64) for six layers. No normalisation (WGAN-GP's gradient penalty is
per sample, Gulrajani et al. 2017, section 4). The output conv has no bias, as in the authors'
code (a constant added to every score cancels in the WGAN losses and the gradient penalty anyway).

Small slices: the paper uses six stride-2 layers at 128x128 (a 2x2 patch grid) and at 256x256 (4x4).
Six halvings of a smaller slice would leave less than the 2x2 grid of the paper's smallest setting
(at 32x32 nothing at all), so ``discriminator_layers`` uses ``min(6, floor(log2(min(H, W))) - 1)``
layers: six at 128 and 256 (the paper's count), five at 64x64, four at 32x32; each layer still
doubles the maps from 64, so the widest has 64 * 2^(layers - 1).
"""
from __future__ import annotations

import math

import torch
from torch import nn

GENERATOR_FEATURES = 64
RESIDUAL_BLOCKS = 6
DISCRIMINATOR_FEATURES = 64
DISCRIMINATOR_LAYERS = 6
LEAKY_SLOPE = 0.01


def discriminator_layers(slice_size: tuple[int, int], paper_layers: int = DISCRIMINATOR_LAYERS) -> int:
    """Stride-2 layers for a slice: the paper's six, fewer where six would leave less than a 2x2
    patch grid (the grid of the paper's 128x128 setting)."""
    smallest = min(int(s) for s in slice_size)
    if smallest < 4:
        raise ValueError(f"slices of {tuple(slice_size)} are too small for a PatchGAN discriminator")
    return max(1, min(paper_layers, int(math.floor(math.log2(smallest))) - 1))


def instance_norm(channels: int) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)


class ResidualBlock(nn.Module):
    """x + IN(conv3x3(ReLU(IN(conv3x3(x))))), at a constant number of maps."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), instance_norm(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), instance_norm(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class HealthyGenerator(nn.Module):
    """(B, C, H, W) images in [-1, 1] -> the intermediate image B_int (B, C, H, W) in [-1, 1] and the
    mask M (B, 1, H, W) in [0, 1]. H and W must be divisible by 4 (two halvings and two doublings)."""

    def __init__(self, channels: int, features: int = GENERATOR_FEATURES, residual_blocks: int = RESIDUAL_BLOCKS):
        super().__init__()
        self.channels = channels
        f = features

        def down(c_in, c_out, kernel, stride, padding):
            return [nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False), instance_norm(c_out), nn.ReLU()]

        def up(c_in, c_out):
            return [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), instance_norm(c_out), nn.ReLU()]

        self.encoder = nn.Sequential(*down(channels, f, 7, 1, 3), *down(f, 2 * f, 4, 2, 1),
                                     *down(2 * f, 4 * f, 4, 2, 1))
        self.bottleneck = nn.Sequential(*[ResidualBlock(4 * f) for _ in range(residual_blocks)])
        self.decoder = nn.Sequential(*up(4 * f, 2 * f), *up(2 * f, f))
        self.output = nn.Conv2d(f, channels + 1, 7, 1, 3, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[-2] % 4 or x.shape[-1] % 4:
            raise ValueError(f"slice size {tuple(x.shape[-2:])} is not divisible by 4")
        out = torch.tanh(self.output(self.decoder(self.bottleneck(self.encoder(x)))))
        intermediate, mask = out[:, :self.channels], out[:, self.channels:]
        return intermediate, (mask + 1.0) / 2.0


class PatchDiscriminator(nn.Module):
    """(B, C, H, W) images in [-1, 1] -> (B, 1, H / 2^L, W / 2^L) patch scores (L stride-2 layers)."""

    def __init__(self, channels: int, slice_size: tuple[int, int], features: int = DISCRIMINATOR_FEATURES,
                 paper_layers: int = DISCRIMINATOR_LAYERS):
        super().__init__()
        self.num_layers = discriminator_layers(slice_size, paper_layers)
        layers, c_in = [], channels
        for i in range(self.num_layers):
            c_out = features * 2 ** i
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.LeakyReLU(LEAKY_SLOPE)]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.output = nn.Conv2d(c_in, 1, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.body(x))
