"""Small helpers the converters share."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from autouad.utils.images import ImageReadError, image_array, read_sitk
from dataset_conversion.convert import ConversionError


def read_volume(path: Path) -> sitk.Image:
    """Read a source image, turning a read failure into a ConversionError that names the file."""
    try:
        return read_sitk(path)
    except ImageReadError as e:
        raise ConversionError(str(e)) from None


def read_grey_uint8(path: Path) -> np.ndarray:
    """Any 2D image as 8-bit grey, read as training and prediction read it (image_array: colour by
    BT.601 luma, grey+alpha by its grey, 16 bit on the 8-bit scale), then rounded."""
    image = read_volume(path)
    try:
        array, _ = image_array(image, str(path))
    except ImageReadError as e:
        raise ConversionError(str(e)) from None
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ConversionError(f"{path}: not a 2D image (array shape {array.shape})")
    return np.clip(np.round(array), 0, 255).astype(np.uint8)


def parse_modalities(modalities, known: tuple[str, ...]) -> list[str]:
    """'flair,t2' (or a list) -> ['flair', 't2'], each one of ``known`` and none twice."""
    chosen = [m.strip().lower() for m in (modalities.split(",") if isinstance(modalities, str) else modalities)]
    if not chosen or len(set(chosen)) != len(chosen) or any(m not in known for m in chosen):
        raise ValueError(f"--modalities must be distinct names from {','.join(known)}, got {modalities!r}")
    return chosen
