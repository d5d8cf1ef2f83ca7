"""ASC-Net's networks, as paper 000 section 3 describes them.

Main module M: one encoder and two mirrored decoders with skip connections, the fence cut C_f
(output I_fc, judged by the discriminator) and the wild cut C_w (output I_wc), each ending in a
sigmoid; the reconstructor R, a 1x1 convolution with sigmoid on the concatenation [I_fc, I_wc],
gives I_ro. Discriminator D: the encoder's architecture, then a dense layer with tanh.

Encoder: four blocks of two 3x3 convolutions, each followed by batch normalisation (ReLU
activations), then 2x2 max pooling and dropout 0.3; 32, 64, 128, 256 maps; a transition of two
3x3 convolutions with 512 maps and batch normalisation. Decoders mirror it with 2D transposed
convolutions in place of the poolings, with as many maps as the mirrored encoder block.

The convolution blocks are dynamic-network-architectures' StackedConvBlocks (nnU-Net's), set to the
paper's layers; pooling, transposed convolutions, skip concatenation and the heads are plain torch.

Where the paper is silent (a documented choice each):
* transposed convolutions are 2x2 with stride 2, the exact inverse of the 2x2 pooling;
* the decoders apply the same dropout after each skip concatenation, mirroring the encoder;
* convolutions keep their bias (the Keras default the authors used);
* D includes the transition layer (it "mimics the architecture of E") and no skip outputs.
"""
from __future__ import annotations

import torch
from dynamic_network_architectures.building_blocks.simple_conv_blocks import StackedConvBlocks
from torch import nn

from autouad.methods.legacy_keys import CONV_NORM_RELU_X2, rename_legacy_keys


def conv_block(in_channels: int, out_channels: int) -> StackedConvBlocks:
    """Two 3x3 convolutions (with bias), each followed by batch normalisation and ReLU: nnU-Net's
    building block (dynamic-network-architectures) configured to the paper's."""
    return StackedConvBlocks(2, nn.Conv2d, in_channels, out_channels, 3, 1, conv_bias=True, norm_op=nn.BatchNorm2d,
                             norm_op_kwargs={}, nonlin=nn.ReLU, nonlin_kwargs={"inplace": True})


def upgrade_block_keys(state_dict: dict, prefix: str, *args) -> None:
    """A load_state_dict pre-hook: weights saved when a block was an nn.Sequential of conv, BN, ReLU,
    conv, BN, ReLU load into the StackedConvBlocks ones."""
    rename_legacy_keys(state_dict, prefix, r"((?:blocks\.\d+|transition)\.)(\d)\.(\w+)", CONV_NORM_RELU_X2)


class ASCEncoder(nn.Module):
    def __init__(self, in_channels: int = 1, features=(32, 64, 128, 256), transition: int = 512,
                 dropout: float = 0.3):
        super().__init__()
        self.blocks = nn.ModuleList()
        channels = in_channels
        for f in features:
            self.blocks.append(conv_block(channels, f))
            channels = f
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(dropout)
        self.transition = conv_block(channels, transition)
        self._register_load_state_dict_pre_hook(upgrade_block_keys)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for block in self.blocks:
            x = block(x)
            skips.append(x)
            x = self.dropout(self.pool(x))
        return self.transition(x), skips


class ASCDecoder(nn.Module):
    def __init__(self, out_channels: int = 1, features=(32, 64, 128, 256), transition: int = 512,
                 dropout: float = 0.3):
        super().__init__()
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        channels = transition
        for f in reversed(features):
            self.ups.append(nn.ConvTranspose2d(channels, f, 2, stride=2))
            self.blocks.append(conv_block(2 * f, f))
            channels = f
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Conv2d(channels, out_channels, 1)
        self._register_load_state_dict_pre_hook(upgrade_block_keys)

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for up, block, skip in zip(self.ups, self.blocks, reversed(skips)):
            x = block(self.dropout(torch.cat([up(x), skip], dim=1)))
        return torch.sigmoid(self.head(x))


def default_orientation(state_dict: dict, prefix: str, *args) -> None:
    """Weights saved before M carried its orientation were never inverted, and those saved before
    its polarity gate were never gated."""
    state_dict.setdefault(prefix + "inverted", torch.zeros(()))
    state_dict.setdefault(prefix + "polarity_gate", torch.zeros(3))


class ASCNetMain(nn.Module):
    """M: x -> (I_fc, I_wc, I_ro), all in [0, 1] and of x's size.

    ``inverted`` (a buffer, 0 or 1; not part of the paper's network) records whether the trained
    fold's anomaly map is 1 - I_ro instead of I_ro: decided once at the end of training from the
    training data (autouad.methods.ascnet.trainer, "Orientation"), saved with the weights so that
    every copy of the model predicts alike. ``oriented`` applies it; ``forward`` is the paper's.

    ``polarity_gate`` (a buffer: on (0 or 1), input level, map level; off until set; not part of the
    paper's network either) is set with the orientation from R_d's medians of the input and of the
    oriented map (trainer docstring, "Polarity gate"); ``gated`` applies it."""

    def __init__(self, in_channels: int = 1, features=(32, 64, 128, 256), transition: int = 512,
                 dropout: float = 0.3):
        super().__init__()
        self.encoder = ASCEncoder(in_channels, features, transition, dropout)
        self.fence_cut = ASCDecoder(in_channels, features, transition, dropout)
        self.wild_cut = ASCDecoder(in_channels, features, transition, dropout)
        self.reconstructor = nn.Conv2d(2 * in_channels, in_channels, 1)
        self.register_buffer("inverted", torch.zeros(()))
        self.register_buffer("polarity_gate", torch.zeros(3))
        self._register_load_state_dict_pre_hook(default_orientation)

    def oriented(self, i_ro: torch.Tensor) -> torch.Tensor:
        """I_ro, or 1 - I_ro where the fold's anomalies fell into its dark cluster."""
        return i_ro + self.inverted.to(i_ro.dtype) * (1 - 2 * i_ro)

    def gated(self, anomaly_map: torch.Tensor, inputs: torch.Tensor, anomalies_above: bool) -> torch.Tensor:
        """The oriented map where ``inputs`` (the map's channel of the input) lie on the anomalous side
        of the gate's input level; elsewhere at most its map level (at least, where the anomalies are
        the map's low end), so that such pixels join the normal tissue's values instead of
        outranking the lesions. Unchanged while the gate is off. Tensor operations only, as
        ``oriented``: no reading of the buffer on the host for every batch."""
        on, input_level, map_level = self.polarity_gate.unbind()
        level = map_level.to(anomaly_map.dtype)
        if anomalies_above:
            return torch.where((on > 0) & (inputs <= input_level), torch.minimum(anomaly_map, level), anomaly_map)
        return torch.where((on > 0) & (inputs >= input_level), torch.maximum(anomaly_map, level), anomaly_map)

    def set_polarity_gate(self, input_level: float | None, map_level: float | None = None) -> None:
        """Turn the gate on at these levels, or off (``input_level`` None)."""
        if input_level is None:
            self.polarity_gate.zero_()
        else:
            self.polarity_gate.copy_(torch.tensor([1.0, input_level, map_level]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bottom, skips = self.encoder(x)
        i_fc = self.fence_cut(bottom, skips)
        i_wc = self.wild_cut(bottom, skips)
        i_ro = torch.sigmoid(self.reconstructor(torch.cat([i_fc, i_wc], dim=1)))
        return i_fc, i_wc, i_ro


class ASCDiscriminator(nn.Module):
    """D: the encoder's layers, flattened into one dense unit with tanh (+1 reference, -1 I_fc)."""

    def __init__(self, slice_size: tuple[int, int], in_channels: int = 1, features=(32, 64, 128, 256),
                 transition: int = 512, dropout: float = 0.3):
        super().__init__()
        h, w = slice_size
        factor = 2 ** len(features)
        if h % factor or w % factor:
            raise ValueError(f"slice size {h}x{w} must be divisible by {factor} (four 2x2 poolings)")
        self.encoder = ASCEncoder(in_channels, features, transition, dropout)
        self.dense = nn.Linear(transition * (h // factor) * (w // factor), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bottom, _ = self.encoder(x)
        return torch.tanh(self.dense(bottom.flatten(1))).squeeze(1)
