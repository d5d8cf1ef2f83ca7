"""ASC-Net's four losses (paper 000, "Loss Functions"), each a batch mean.

The paper writes Loss_R with a squared L2 norm and names it MSE; the authors used Keras's ``mse``,
which averages over pixels, so do we: a per-image sum would outweigh the other two losses by the
number of pixels. The positive Dice is computed per image and averaged over the batch, with a
small epsilon for empty images (the paper gives none).
"""
from __future__ import annotations

import torch

DICE_EPSILON = 1e-7


def fence_cut_loss(d_of_fence_cut: torch.Tensor) -> torch.Tensor:
    """Loss_Cf = 1/n sum |D(I_fc) - 1|: the fence cut tries to pass as a reference image."""
    return (d_of_fence_cut - 1.0).abs().mean()


def wild_cut_loss(i_fc: torch.Tensor, i_wc: torch.Tensor) -> torch.Tensor:
    """Loss_Cw = 2|I_fc ∩ I_wc| / (|I_fc| + |I_wc|): the positive Dice, minimised so that the two
    cuts become complementary."""
    dims = tuple(range(1, i_fc.ndim))
    overlap = (i_fc * i_wc).sum(dims)
    return (2.0 * overlap / (i_fc.sum(dims) + i_wc.sum(dims) + DICE_EPSILON)).mean()


def reconstruction_loss(i_in: torch.Tensor, i_ro: torch.Tensor) -> torch.Tensor:
    """Loss_R: mean squared error between the input and I_ro."""
    return ((i_in - i_ro) ** 2).mean()


def discriminator_loss(d_out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Loss_D = 1/(n+m) (sum |D(I_fc) + 1| + sum |D(R_d) - 1|): mean absolute error to +1 for the
    reference set and -1 for fence cuts (the paper prefers MAE to the Earth Mover distance)."""
    return (d_out - targets).abs().mean()
