"""Weights saved before the networks were built from dynamic-network-architectures' blocks still
load and compute the same function. tests/data/legacy_layouts.npz holds small networks of each
changed family as the earlier code (commit d5bd272) saved them: their state-dict keys, shapes and
fp16-exact values, an input and the earlier code's output for it."""
from pathlib import Path

import numpy as np
import pytest
import torch

from autouad.methods.ascnet.network import ASCDiscriminator, ASCNetMain
from autouad.methods.twophase.draem_network import DiscriminativeSubNetwork, ReconstructiveSubNetwork
from autouad.methods.twophase.network import RestorationUNet

FIXTURE = Path(__file__).parent / "data" / "legacy_layouts.npz"
NETWORKS = {"draem_reconstructive": lambda: ReconstructiveSubNetwork(1, 1, 1),
            "draem_discriminative": lambda: DiscriminativeSubNetwork(2, 1, 1),
            "twophase_restoration": lambda: RestorationUNet(1, 1, (4, 8, 8)),
            "ascnet_main": lambda: ASCNetMain(1, (2, 4, 4, 4), 4),
            "ascnet_discriminator": lambda: ASCDiscriminator((32, 32), 1, (2, 4, 4, 4), 4)}


def legacy_state_dict(saved, name: str) -> dict:
    keys = saved[f"{name}.keys"]
    encoded = saved[f"{name}.shapes"]
    ndims, dims = encoded[:len(keys)], list(encoded[len(keys):])
    values = saved[f"{name}.values"].astype(np.float32)
    out, start = {}, 0
    for key, ndim in zip(keys, ndims):
        shape = tuple(int(dims.pop(0)) for _ in range(ndim))
        size = int(np.prod(shape)) if shape else 1
        tensor = torch.from_numpy(values[start:start + size].reshape(shape).copy())
        out[str(key)] = tensor.long() if key.endswith("num_batches_tracked") else tensor
        start += size
    return out


@pytest.mark.parametrize("name", list(NETWORKS))
def test_weights_of_the_earlier_layout_load_and_predict_the_same(name):
    saved = np.load(FIXTURE)
    old = legacy_state_dict(saved, name)
    network = NETWORKS[name]()
    assert set(old) != set(network.state_dict()), "the fixture should hold the earlier key names"
    network.load_state_dict(old)  # strict: every key renamed, none left over
    network.eval()
    x = torch.from_numpy(saved["input"])
    with torch.no_grad():
        y = network(torch.cat([x, x.flip(-1)], 1) if name == "draem_discriminative" else x)
    y = y[2] if isinstance(y, tuple) else y
    np.testing.assert_allclose(y.numpy(), saved[f"{name}.output"], rtol=1e-5, atol=1e-6)
