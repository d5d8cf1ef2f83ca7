"""Weights saved before a network's blocks came from dynamic-network-architectures load into the
new blocks: the same tensors in the same order under new names, so earlier checkpoints, their
optimizer states and exported models stay valid. Each network registers a load_state_dict pre-hook
that calls ``rename_legacy_keys`` with its old layout."""
from __future__ import annotations

import re

# An nn.Sequential of conv, BN, ReLU, conv, BN, ReLU (ASC-Net's and DRAEM's blocks before) -> the
# StackedConvBlocks of two ConvDropoutNormReLU: index -> the new names of the same tensor
CONV_NORM_RELU_X2 = {"0": ("convs.0.conv", "convs.0.all_modules.0"), "1": ("convs.0.norm", "convs.0.all_modules.1"),
                     "3": ("convs.1.conv", "convs.1.all_modules.0"), "4": ("convs.1.norm", "convs.1.all_modules.1")}


def rename_legacy_keys(state_dict: dict, prefix: str, pattern: str, layout: dict[str, tuple[str, ...]]) -> None:
    """Rename, in place, every key ``prefix + pattern`` whose ``pattern`` groups are (block path
    ending in a dot, old index, parameter name) and whose index ``layout`` knows, to
    ``prefix + block + new_name + "." + parameter`` for each of the layout's new names."""
    for key in list(state_dict):
        m = re.match(rf"^{re.escape(prefix)}{pattern}$", key)
        if m and m.group(2) in layout:
            value = state_dict.pop(key)
            for name in layout[m.group(2)]:
                state_dict[f"{prefix}{m.group(1)}{name}.{m.group(3)}"] = value
