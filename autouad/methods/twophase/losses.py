"""Losses of the two-phase pseudo-anomaly net (paper 004, section 3.2) and of its DRAEM baseline.

* Restoration (two-phase, eq. 2): L1 between the restored image and the original, the mean over
  pixels (torch's L1Loss, as the authors' code).
* Segmentation (both, eq. 3): the focal loss of Lin et al. with alpha = 1 and gamma = 2, the mean
  over pixels. The segmentation net gives one logit per pixel and p = sigmoid(logit) is the
  probability of anomaly; the two classes of eq. (3) are anomaly (probability p) and normal
  (1 - p), so for a pixel of ground truth t

      FL = -alpha * [t * (1 - p)^gamma * log p + (1 - t) * p^gamma * log(1 - p)],

  eq. (3) with its sum over classes weighted by the one-hot ground truth (which the printed equation
  leaves implicit). A two-channel softmax, as the authors' code uses, depends only on the difference
  of its two logits, which is what one logit is, so both parametrise the same model. Logs come from
  ``logsigmoid`` for stability; the authors' label smoothing of 1e-5 is dropped.
* DRAEM (Zavrtanik et al., ICCV 2021): L2 (mean squared error) + SSIM loss (1 - SSIM) for the
  reconstruction, plus the focal loss. SSIM as DRAEM's code computes it: an 11x11 Gaussian window
  with sigma 1.5, zero padding (the map keeps the image's size), C1 = (0.01 L)^2, C2 = (0.03 L)^2
  with the data range L = 1 (the images are in [0, 1]), averaged over pixels and channels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

FOCAL_ALPHA = 1.0
FOCAL_GAMMA = 2.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def l1_loss(restored: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Mean |restored - original| over every pixel and channel (eq. 2)."""
    return (restored - original).abs().mean()


def l2_loss(restored: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Mean (restored - original)^2 (DRAEM's reconstruction term)."""
    return ((restored - original) ** 2).mean()


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = FOCAL_ALPHA,
               gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Binary focal loss from logits (any shape) and 0/1 targets of the same shape, the mean over
    pixels: -alpha (1 - p_t)^gamma log p_t with p_t the probability of the true class."""
    targets = targets.to(logits.dtype)
    log_p = F.logsigmoid(logits)          # log p, p = probability of anomaly
    log_not_p = F.logsigmoid(-logits)     # log (1 - p)
    p = log_p.exp()
    anomalous = targets * (1.0 - p) ** gamma * log_p
    normal = (1.0 - targets) * p ** gamma * log_not_p
    return -(alpha * (anomalous + normal)).mean()


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """(size, size) Gaussian weights summing to 1 (the outer product of a normalised 1D Gaussian)."""
    offsets = torch.arange(size, dtype=torch.float64) - size // 2
    line = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    line = line / line.sum()
    return torch.outer(line, line)


def ssim(a: torch.Tensor, b: torch.Tensor, window_size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA,
         data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM of two (B, C, H, W) batches, each channel on its own (Wang et al. 2004), with local
    statistics from a Gaussian window and zero padding as DRAEM's code. On an image smaller than
    the window, the window shrinks to the largest odd size that fits (DRAEM's code shrinks it to the
    image's side, which for an even side would change the map's size)."""
    channels, height, width = a.shape[1:]
    size = min(window_size, height, width)
    size -= 1 - size % 2
    window = gaussian_window(size, sigma).to(a.dtype).to(a.device).expand(channels, 1, size, size)

    def local_mean(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, padding=size // 2, groups=channels)

    mu_a, mu_b = local_mean(a), local_mean(b)
    var_a = local_mean(a * a) - mu_a ** 2
    var_b = local_mean(b * b) - mu_b ** 2
    covariance = local_mean(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * covariance + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return ssim_map.mean()


def ssim_loss(restored: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """1 - SSIM (DRAEM's structural term)."""
    return 1.0 - ssim(restored, original)
