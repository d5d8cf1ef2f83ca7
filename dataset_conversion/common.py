"""Small helpers the converters share."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from autouad.utils.images import ImageReadError, read_sitk, rgb_to_grey
from dataset_conversion.convert import ConversionError


def read_volume(path: Path) -> sitk.Image:
    """Read a source image, turning a read failure into a ConversionError that names the file."""
    try:
        return read_sitk(path)
    except ImageReadError as e:
        raise ConversionError(str(e)) from None


def read_grey_uint8(path: Path) -> np.ndarray:
    """Any 2D image as 8-bit grey: colour by BT.601 luma, grey+alpha by its grey, 16 bit scaled."""
    image = read_volume(path)
    array = sitk.GetArrayFromImage(image)
    scale = 255 / 65535 if array.dtype == np.uint16 else 1.0
    components = image.GetNumberOfComponentsPerPixel()
    if components >= 3:
        array = rgb_to_grey(array)
    elif components == 2:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ConversionError(f"{path}: not a 2D image (array shape {array.shape})")
    return np.clip(np.round(array * scale), 0, 255).astype(np.uint8)


def parse_modalities(modalities, known: tuple[str, ...]) -> list[str]:
    """'flair,t2' (or a list) -> ['flair', 't2'], each one of ``known`` and none twice."""
    chosen = [m.strip().lower() for m in (modalities.split(",") if isinstance(modalities, str) else modalities)]
    if not chosen or len(set(chosen)) != len(chosen) or any(m not in known for m in chosen):
        raise ValueError(f"--modalities must be distinct names from {','.join(known)}, got {modalities!r}")
    return chosen
