"""DRAEM's two sub-networks (Zavrtanik, Kristan & Skocaj, ICCV 2021), as its public code builds them.

Every convolution is 3x3 with zero padding 1 and a bias, followed by batch normalisation and ReLU,
except the output convolution; downsampling is 2x2 max pooling, upsampling bilinear (corners
aligned) followed by a conv-BN-ReLU. ``b`` is the base width. The conv-BN-ReLU units and their pairs
are dynamic-network-architectures' ConvDropoutNormReLU and StackedConvBlocks (nnU-Net's) set to
these layers; its U-Net decoders upsample with transposed convolutions, not DRAEM's bilinear
upsampling and conv, so the pooling, upsampling, skips and heads are plain torch.

Reconstructive sub-network (an auto-encoder, no skip connections; b = 128):

    encoder: double conv C -> b, pool, b -> 2b, pool, 2b -> 4b, pool, 4b -> 8b, pool, 8b -> 8b
    decoder: four times [upsample + conv (k -> k), conv (k -> k), conv (k -> k/2)], with
             k = 8b, 4b, 2b, then b (the last keeps b), and a 3x3 output conv b -> C

Discriminative sub-network (a U-Net; b = 64) on the concatenation [reconstruction, input]:

    encoder: double conv 2C -> b, then 2b, 4b, 8b, 8b, 8b maps, with a max pooling between blocks
    decoder: five times [upsample + conv to the level's width, concatenate the encoder block of that
             level, double conv], widths 8b, 4b, 2b, b, b, and a 3x3 output conv b -> classes

DRAEM's segmentation head has two channels and a softmax; here it has one logit and a sigmoid (the
softmax of two logits depends only on their difference; see ``losses.py``). The two-phase net of
paper 004 uses this discriminative sub-network as its segmentation net. Slices must have sides
divisible by 16 (reconstructive) and 32 (discriminative): the plans' ``slice_size_divisor`` is 32.
"""
from __future__ import annotations

from functools import partial

import torch
from dynamic_network_architectures.building_blocks.simple_conv_blocks import ConvDropoutNormReLU, StackedConvBlocks
from torch import nn

from autouad.methods.legacy_keys import CONV_NORM_RELU_X2, rename_legacy_keys

RECONSTRUCTIVE_BASE_WIDTH = 128
DISCRIMINATIVE_BASE_WIDTH = 64


def upgrade_sequential_keys(state_dict: dict, prefix: str, *args, layout: dict) -> None:
    """A load_state_dict pre-hook of one block that was an nn.Sequential: its ``<index>.<param>``
    keys get the names ``layout`` gives them."""
    rename_legacy_keys(state_dict, prefix, r"()(\d)\.(\w+)", layout)


def conv_bn_relu(in_channels: int, out_channels: int) -> ConvDropoutNormReLU:
    return ConvDropoutNormReLU(nn.Conv2d, in_channels, out_channels, 3, 1, conv_bias=True, norm_op=nn.BatchNorm2d,
                               norm_op_kwargs={}, nonlin=nn.ReLU, nonlin_kwargs={"inplace": True})


def double_conv(in_channels: int, middle_channels: int, out_channels: int) -> StackedConvBlocks:
    block = StackedConvBlocks(2, nn.Conv2d, in_channels, [middle_channels, out_channels], 3, 1, conv_bias=True,
                              norm_op=nn.BatchNorm2d, norm_op_kwargs={}, nonlin=nn.ReLU, nonlin_kwargs={"inplace": True})
    # weights saved when the block was an nn.Sequential of conv, BN, ReLU, conv, BN, ReLU
    block._register_load_state_dict_pre_hook(partial(upgrade_sequential_keys, layout=CONV_NORM_RELU_X2))
    return block


# the upsampling block was nn.Sequential(Upsample, conv, BN, ReLU): index -> the new names
_UPSAMPLE_LAYOUT = {"1": ("1.conv", "1.all_modules.0"), "2": ("1.norm", "1.all_modules.1")}


def upsample_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    block = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                          conv_bn_relu(in_channels, out_channels))
    block._register_load_state_dict_pre_hook(partial(upgrade_sequential_keys, layout=_UPSAMPLE_LAYOUT))
    return block


def check_divisible(x: torch.Tensor, divisor: int) -> None:
    if x.shape[-2] % divisor or x.shape[-1] % divisor:
        raise ValueError(f"slice size {tuple(x.shape[-2:])}: both sides must be divisible by {divisor}")


class ReconstructiveSubNetwork(nn.Module):
    """(B, C, H, W) -> (B, C, H, W) reconstructions, through a bottleneck at 1/16 of the size."""
    divisor = 16

    def __init__(self, in_channels: int, out_channels: int, base_width: int = RECONSTRUCTIVE_BASE_WIDTH):
        super().__init__()
        b = base_width
        widths = (b, 2 * b, 4 * b, 8 * b, 8 * b)
        encoder, previous = [], in_channels
        for index, width in enumerate(widths):
            if index:
                encoder.append(nn.MaxPool2d(2))
            encoder.append(double_conv(previous, width, width))
            previous = width
        self.encoder = nn.Sequential(*encoder)
        decoder = []
        for width, out in ((8 * b, 4 * b), (4 * b, 2 * b), (2 * b, b), (b, b)):
            decoder += [upsample_conv(previous, width), double_conv(width, width, out)]
            previous = out
        self.decoder = nn.Sequential(*decoder)
        self.head = nn.Conv2d(b, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_divisible(x, self.divisor)
        return self.head(self.decoder(self.encoder(x)))


class DiscriminativeSubNetwork(nn.Module):
    """(B, C_in, H, W) -> (B, classes, H, W) logits; a U-Net with five poolings."""
    divisor = 32

    def __init__(self, in_channels: int, out_channels: int = 1, base_width: int = DISCRIMINATIVE_BASE_WIDTH):
        super().__init__()
        b = base_width
        widths = (b, 2 * b, 4 * b, 8 * b, 8 * b, 8 * b)
        self.encoder = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.encoder.append(double_conv(previous, width, width))
            previous = width
        self.pool = nn.MaxPool2d(2)
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        # level widths from the bottom up: the skip at each level is the encoder block of that level
        for width, skip in ((8 * b, widths[4]), (4 * b, widths[3]), (2 * b, widths[2]), (b, widths[1]),
                            (b, widths[0])):
            self.upsample.append(upsample_conv(previous, width))
            self.decoder.append(double_conv(width + skip, width, width))
            previous = width
        self.head = nn.Conv2d(b, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_divisible(x, self.divisor)
        skips = []
        for index, block in enumerate(self.encoder):
            x = block(x if index == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for upsample, block in zip(self.upsample, self.decoder):
            x = block(torch.cat([upsample(x), skips.pop()], dim=1))
        return self.head(x)
