"""Random-shape pseudo anomalies (paper 004, section 3.1 and Algorithm 1 of its supplement).

A mask of random shape and size is made from noise, and the image is shifted in intensity inside it:

1. noise of the slice's size, blurred with a Gaussian (sigma 15 px at the paper's 256x256 slices);
2. stretched to the full 0-255 range (per slice: its minimum to 0, its maximum to 255);
3. thresholded at 200, which keeps the top of the blurred field: a few blobs;
4. opening then closing with a 9x9 elliptical kernel, which removes specks smaller than the kernel
   and fills small gaps (the order of the authors' public code; the paper's text names them the
   other way round);
5. restricted to the ROI (the liver in the paper; the authors keep the non-zero pixels of their
   ROI-cropped slices);
6. inside the mask, the image is shifted by one random constant C with 60 <= |C| <= 100 on a 0-255
   scale and clipped to the valid range.

Step 6 follows the paper's text ("overlay the new intensity values on the original image I within
the mask regions") and the authors' public code. The paper's equation (1) as printed,
I_s = (1 - M_s) * (I + C) + M_s * I, shifts OUTSIDE the mask instead, contradicting both; we take
it for a typo.

The images arrive preprocessed in [0, 1] (CT: HU window, then per-slice histogram equalisation inside
the ROI), so the 0-255 constants apply to ``image * 255``: a shift C is C / 255 here, and clipping
keeps [0, 1].

Choices where the paper is silent or its code differs from its text, each documented:

* Noise: standard normal (the paper's "Gaussian noise"; the authors' code draws uniform integers).
  The blurred field is stretched by its own minimum and maximum, so the noise's mean and scale do
  not matter, and a 15-px blur makes either noise a near-Gaussian field.
* Blur: truncated at 3 sigma with mirrored borders, as OpenCV's GaussianBlur on 8-bit images (the
  authors' call); the authors' rounding to 8 bits after the blur and the stretch is dropped.
* C is uniform on [-100, -60] U [60, 100], the authors' code (rejection sampling of U(-100, 100)
  until |C| >= 60); the paper's text says "drawn from a Gaussian distribution within a defined
  range" without naming one. Several channels each get their own C (the paper has one channel).
* Morphology as OpenCV's ``morphologyEx`` does it: the image border neither erodes nor dilates.
* Sizes: the paper's sigma and kernel are in pixels of its 256x256 slices, where the liver fills the
  slice. autouad's slices are smaller on CPU schedules (128x128 at ``fast``), so both scale with the
  slice (sigma = 15 * sqrt(H * W) / 256, the kernel to the nearest odd size, at least 3), keeping
  anomalies the same size relative to the organ. At 256x256 they are the paper's.
* Without an ROI (datasets that have none) the mask is restricted to the non-zero foreground (the
  authors' rule; preprocessing sets the background to 0), or the whole slice if that is empty.
* A slice may get an empty mask (no blob survives inside the ROI); the authors' code keeps such
  normal samples by default (its ``rejection`` option is off), and so do we.

Everything is vectorised over the batch with scipy.ndimage and numpy; the randomness comes from the
``numpy.random.Generator`` the caller passes, so that a resumed run synthesises the same anomalies.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# The paper's slice size, in whose pixels its blur sigma and kernel size are given.
PAPER_SLICE_SIDE = 256
# OpenCV's GaussianBlur on 8-bit images cuts its kernel at 3 sigma.
BLUR_TRUNCATE = 3.0


@dataclass(frozen=True)
class SynthesisSettings:
    """The synthesis constants, as the plans' ``synthesis`` block gives them (0-255 scale, pixels of
    a ``reference_slice_side`` x ``reference_slice_side`` slice)."""
    noise_blur_sigma: float = 15.0
    mask_threshold: float = 200.0
    morphology_kernel: int = 9
    shift_abs_range: tuple[float, float] = (60.0, 100.0)
    reference_slice_side: int = PAPER_SLICE_SIDE

    @classmethod
    def from_plans(cls, block: dict) -> "SynthesisSettings":
        low, high = (float(v) for v in block.get("shift_abs_range", cls.shift_abs_range))
        if not 0 <= low <= high <= 255:
            raise ValueError(f"shift_abs_range must satisfy 0 <= low <= high <= 255, not {[low, high]}")
        return cls(noise_blur_sigma=float(block.get("noise_blur_sigma", cls.noise_blur_sigma)),
                   mask_threshold=float(block.get("mask_threshold", cls.mask_threshold)),
                   morphology_kernel=int(block.get("morphology_kernel", cls.morphology_kernel)),
                   shift_abs_range=(low, high),
                   reference_slice_side=int(block.get("reference_slice_side", cls.reference_slice_side)))

    def scaled_to(self, slice_shape: tuple[int, int]) -> tuple[float, int]:
        """(blur sigma, odd kernel size) in pixels of a slice of ``slice_shape``."""
        scale = math.sqrt(slice_shape[0] * slice_shape[1]) / self.reference_slice_side
        kernel = max(3, 2 * int(round((self.morphology_kernel * scale - 1) / 2)) + 1)
        return self.noise_blur_sigma * scale, kernel


@dataclass
class SyntheticBatch:
    images: np.ndarray   # (B, C, H, W) float32 in [0, 1]: the inputs with pseudo anomalies
    masks: np.ndarray    # (B, H, W) bool: where the anomalies are
    shifts: np.ndarray   # (B, C) float: the intensity shift C of each slice and channel, 0-255 scale


def elliptical_kernel(size: int) -> np.ndarray:
    """A (size, size) boolean ellipse, the same as OpenCV's getStructuringElement(MORPH_ELLIPSE):
    row i covers the columns within round(c * sqrt(1 - (i - r)^2 / r^2)) of the centre."""
    if size < 1:
        raise ValueError(f"kernel size must be positive, not {size}")
    r = c = size // 2
    if r == 0:
        return np.ones((size, size), bool)
    dy = np.arange(size) - r
    half_widths = np.floor(c * np.sqrt(np.clip(r * r - dy * dy, 0, None) / (r * r)) + 0.5).astype(int)
    columns = np.abs(np.arange(size) - c)
    return columns[None, :] <= half_widths[:, None]


def opening_then_closing(masks: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Morphological opening, then closing, of each (H, W) mask of a (B, H, W) stack; the border
    neither erodes nor dilates (OpenCV's default), so blobs touching it survive."""
    structure = kernel[None]  # no coupling between the slices of the batch
    opened = ndimage.binary_dilation(ndimage.binary_erosion(masks, structure, border_value=1), structure,
                                     border_value=0)
    return ndimage.binary_erosion(ndimage.binary_dilation(opened, structure, border_value=0), structure,
                                  border_value=1)


def random_shape_masks(rng: np.random.Generator, count: int, slice_shape: tuple[int, int], blur_sigma: float,
                       threshold: float, kernel_size: int) -> np.ndarray:
    """(count, H, W) boolean masks of random blobs: blurred noise, stretched to 0-255 per slice,
    above ``threshold``, then opened and closed with an elliptical kernel."""
    noise = rng.standard_normal((count, *slice_shape), dtype=np.float32)
    blurred = ndimage.gaussian_filter(noise, sigma=(0.0, blur_sigma, blur_sigma), mode="mirror",
                                      truncate=BLUR_TRUNCATE)
    low = blurred.min(axis=(1, 2), keepdims=True)
    high = blurred.max(axis=(1, 2), keepdims=True)
    stretched = (blurred - low) * (255.0 / np.maximum(high - low, 1e-12))
    return opening_then_closing(stretched > threshold, elliptical_kernel(kernel_size))


def anomaly_region(images: np.ndarray, roi: np.ndarray | None) -> np.ndarray:
    """Where anomalies may go, (B, H, W): the ROI; without one, the non-zero foreground of any
    channel (preprocessing sets the background to 0), or the whole slice where that is empty."""
    if roi is not None:
        return np.asarray(roi, bool)
    foreground = (images > 0).any(axis=1)
    empty = ~foreground.any(axis=(1, 2))
    foreground[empty] = True
    return foreground


def random_shifts(rng: np.random.Generator, count: int, channels: int,
                  shift_abs_range: tuple[float, float]) -> np.ndarray:
    """(count, channels) shifts C, uniform on [-high, -low] U [low, high] (0-255 scale)."""
    low, high = shift_abs_range
    magnitudes = rng.uniform(low, high, size=(count, channels))
    signs = np.where(rng.random((count, channels)) < 0.5, -1.0, 1.0)
    return signs * magnitudes


def shift_inside_masks(images: np.ndarray, masks: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """I_s = (1 - M) * I + M * clip(I + C / 255, 0, 1): the shift lands INSIDE the mask, as the
    paper's text and the authors' code do (its equation (1) as printed puts it outside, a typo)."""
    shifted = np.clip(images + (shifts / 255.0)[:, :, None, None].astype(images.dtype), 0.0, 1.0)
    return np.where(masks[:, None], shifted, images).astype(np.float32, copy=False)


def synthesise(images: np.ndarray, roi: np.ndarray | None, rng: np.random.Generator,
               settings: SynthesisSettings = SynthesisSettings()) -> SyntheticBatch:
    """Pseudo-anomalous versions of a batch of normal slices (B, C, H, W) in [0, 1]."""
    images = np.asarray(images, dtype=np.float32)
    count, channels = images.shape[:2]
    slice_shape = images.shape[2:]
    sigma, kernel = settings.scaled_to(slice_shape)
    masks = random_shape_masks(rng, count, slice_shape, sigma, settings.mask_threshold, kernel)
    masks &= anomaly_region(images, roi)
    shifts = random_shifts(rng, count, channels, settings.shift_abs_range)
    return SyntheticBatch(shift_inside_masks(images, masks, shifts), masks, shifts)
