"""The restoration U-Net of the two-phase pseudo-anomaly net (paper 004, section 3.2).

The paper: "U-Net with 3 encoder and decoder blocks"; each block "consists of 2 weight-standardized
convolutions followed by swish activation and group normalization", the block of Kascenas et al.'s
denoising auto-encoder (MIDL 2022). Where the paper is silent we follow the authors' public code
(a U-Net with ``depth=4, wf=6``, padding on, group norm, transposed-convolution upsampling):

* Block: [reflection pad 1 -> 3x3 weight-standardised conv -> SiLU (swish) -> GroupNorm] x 2.
* Encoder: three blocks with 64, 128, 256 maps, each followed by 2x2 average pooling, then a
  bottleneck block with 512 maps.
* Decoder: three blocks; each upsamples with a 2x2 transposed convolution (stride 2) to the maps of
  its level, concatenates the encoder block's output of that level (the skip connection) and runs a
  block: 512 -> 256, 256 -> 128, 128 -> 64 maps.
* Head: a 1x1 convolution to the image's channels, no activation (as the authors').
* GroupNorm groups: the middle divisor of the number of maps (8 for 64, 16 for 128 and 256, 32 for
  512), the rule of Kascenas et al.'s code.
* Weight standardisation (Qiao et al. 2019): each output filter's weights minus their mean, divided
  by their standard deviation (unbiased, + 1e-5), recomputed at every forward pass; the stored
  weights stay free parameters.

The blocks are dynamic-network-architectures' conv-norm-nonlinearity units (nnU-Net's) with a
weight-standardised, reflection-padded convolution and the paper's GroupNorm; pooling, upsampling,
skips and head are plain torch. Slices must have sides divisible by 8 (three halvings). The plans' ``network.restoration_features``
may change the widths (the tests use narrow ones).

The segmentation net is DRAEM's discriminative sub-network (``draem_network.py``): the paper builds
on "the DRAEM-similar architecture" and its ablation (Table 2) changes only the restoration net.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from dynamic_network_architectures.building_blocks.simple_conv_blocks import ConvDropoutNormReLU
from torch import nn

from autouad.methods.legacy_keys import rename_legacy_keys

DEFAULT_RESTORATION_FEATURES = (64, 128, 256, 512)


def group_count(channels: int) -> int:
    """The number of GroupNorm groups for ``channels`` maps: the middle one of its divisors in
    ascending order (the upper middle for an even count of divisors)."""
    divisors = sorted(d for d in range(1, channels + 1) if channels % d == 0)
    return divisors[len(divisors) // 2]


class WeightStandardizedConv2d(nn.Conv2d):
    """A convolution whose filters are standardised to zero mean and unit variance before use."""
    eps = 1e-5

    def standardized_weight(self) -> torch.Tensor:
        weight = self.weight
        centred = weight - weight.mean(dim=(1, 2, 3), keepdim=True)
        std = centred.flatten(1).std(dim=1).view(-1, 1, 1, 1) + self.eps
        return centred / std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # nn.Conv2d's own forward path, so that a padding mode other than zeros is honoured
        return self._conv_forward(x, self.standardized_weight(), self.bias)


class ReflectPaddedWSConv2d(WeightStandardizedConv2d):
    """The paper's block convolution: weight-standardised, reflection-padded (the authors' U-Net pads
    by reflection), made by dynamic-network-architectures with the padding it asks for."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **dict(kwargs, padding_mode="reflect"))


class GroupNormOfChannels(nn.GroupNorm):
    """GroupNorm built from the channel count alone (dynamic-network-architectures passes only that),
    with Kascenas et al.'s group rule (group_count)."""

    def __init__(self, num_channels: int):
        super().__init__(group_count(num_channels), num_channels)


class ConvBlock(nn.Module):
    """[reflection-padded 3x3 weight-standardised conv -> swish -> GroupNorm] x 2, each a
    dynamic-network-architectures ConvDropoutNormReLU (nnU-Net's) set to the paper's layers
    (activation before the norm: ``nonlin_first``), in an nn.Sequential ``convs`` with the keys a
    StackedConvBlocks would have; not StackedConvBlocks itself, which builds its later convolutions
    with scalar sizes that only torch's own conv classes accept."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.convs = nn.Sequential(*[
            ConvDropoutNormReLU(ReflectPaddedWSConv2d, c, out_channels, [3, 3], [1, 1], conv_bias=True,
                                norm_op=GroupNormOfChannels, nonlin=nn.SiLU, nonlin_first=True)
            for c in (in_channels, out_channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


# Before the blocks came from dynamic-network-architectures a block was ``layers``, an nn.Sequential
# of [pad, conv, SiLU, GroupNorm] x 2: index -> the new names of the same tensor
_SEQUENTIAL_LAYOUT = {"1": ("convs.0.conv", "convs.0.all_modules.0"), "3": ("convs.0.norm", "convs.0.all_modules.2"),
                      "5": ("convs.1.conv", "convs.1.all_modules.0"), "7": ("convs.1.norm", "convs.1.all_modules.2")}


def upgrade_block_keys(state_dict: dict, prefix: str, *args) -> None:
    """A load_state_dict pre-hook: weights saved with the earlier ConvBlock (``layers.N``) load into
    today's ``convs`` blocks."""
    rename_legacy_keys(state_dict, prefix, r"((?:encoder|decoder)\.\d+\.)layers\.(\d)\.(\w+)", _SEQUENTIAL_LAYOUT)


class RestorationUNet(nn.Module):
    """(B, C, H, W) images with pseudo anomalies -> (B, C, H, W) restored images."""

    def __init__(self, in_channels: int, out_channels: int,
                 features: tuple[int, ...] = DEFAULT_RESTORATION_FEATURES):
        super().__init__()
        features = tuple(int(f) for f in features)
        if len(features) < 2:
            raise ValueError(f"the U-Net needs at least one level above its bottleneck, got features {features}")
        self.features = features
        self.encoder = nn.ModuleList()
        previous = in_channels
        for f in features:
            self.encoder.append(ConvBlock(previous, f))
            previous = f
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for f in reversed(features[:-1]):
            self.upsample.append(nn.ConvTranspose2d(previous, f, kernel_size=2, stride=2))
            self.decoder.append(ConvBlock(2 * f, f))
            previous = f
        self.head = nn.Conv2d(previous, out_channels, kernel_size=1)
        self._register_load_state_dict_pre_hook(upgrade_block_keys)

    @property
    def divisor(self) -> int:
        return 2 ** (len(self.features) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % self.divisor or x.shape[-1] % self.divisor:
            raise ValueError(f"slice size {tuple(x.shape[-2:])}: both sides must be divisible by {self.divisor}")
        skips = []
        for index, block in enumerate(self.encoder):
            x = block(x)
            if index < len(self.encoder) - 1:
                skips.append(x)
                x = F.avg_pool2d(x, 2)
        for upsample, block, skip in zip(self.upsample, self.decoder, reversed(skips)):
            x = block(torch.cat([upsample(x), skip], dim=1))
        return self.head(x)
