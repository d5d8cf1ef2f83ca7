"""Reading images through SimpleITK, with 2D and 3D treated alike.

Every image is handed around as a numpy array in SimpleITK's index order, (z, y, x) for volumes
and (y, x) for 2D images, plus a ``Geometry`` that holds spacing, origin and direction in
SimpleITK's (x, y[, z]) order, so that an output can be given exactly its input's geometry.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

VOLUME_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
IMAGE_2D_ENDINGS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SUPPORTED_ENDINGS = VOLUME_ENDINGS + IMAGE_2D_ENDINGS
# More values than this in one image is a damaged or hostile header, not a scan (a 1024^3 CT has 1.1e9)
MAX_VOXELS = 2_000_000_000


class ImageReadError(Exception):
    """A file that cannot be read as an image; the message names the file."""


def file_ending(path: str | Path) -> str | None:
    name = str(path).lower()
    for ending in sorted(SUPPORTED_ENDINGS, key=len, reverse=True):
        if name.endswith(ending):
            return ending
    return None


@dataclass
class Geometry:
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    size: tuple[int, ...]  # SimpleITK order (x, y[, z])

    @property
    def dimension(self) -> int:
        return len(self.size)

    @property
    def array_shape(self) -> tuple[int, ...]:
        return tuple(reversed(self.size))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Geometry":
        return cls(tuple(d["spacing"]), tuple(d["origin"]), tuple(d["direction"]), tuple(d["size"]))

    @classmethod
    def of(cls, image: sitk.Image) -> "Geometry":
        return cls(tuple(float(v) for v in image.GetSpacing()), tuple(float(v) for v in image.GetOrigin()),
                   tuple(float(v) for v in image.GetDirection()), tuple(int(v) for v in image.GetSize()))

    def mismatch(self, other: "Geometry", rtol: float = 1e-4, atol: float = 1e-3) -> str | None:
        """A short description of how ``other`` differs, or None when they agree."""
        if self.size != other.size:
            return f"size {other.size} != {self.size}"
        for field in ("spacing", "origin", "direction"):
            a, b = np.asarray(getattr(self, field)), np.asarray(getattr(other, field))
            if not np.allclose(a, b, rtol=rtol, atol=atol):
                return f"{field} {tuple(round(float(v), 4) for v in b)} != {tuple(round(float(v), 4) for v in a)}"
        return None

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


def read_sitk(path: str | Path) -> sitk.Image:
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        voxels = int(np.prod(reader.GetSize(), dtype=np.float64)) * max(1, reader.GetNumberOfComponents())
        if voxels > MAX_VOXELS:
            raise ImageReadError(f"{path}: its header declares {'x'.join(map(str, reader.GetSize()))} voxels "
                                 f"({voxels / 1e9:.1f} billion values), more than autouad reads "
                                 f"({MAX_VOXELS / 1e9:.1f} billion); refused before reading")
        return reader.Execute()
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        reason = next((ln.strip() for ln in first if "exception" not in ln.lower() and ln.strip()), "unreadable")
        if "Unknown PixelType" in reason and file_ending(path) in IMAGE_2D_ENDINGS:
            # SimpleITK's PNG reader knows no grey + alpha images; Pillow (matplotlib's) does
            return _read_with_pillow(path)
        raise ImageReadError(f"{path}: unreadable or truncated image ({reason[:160]})") from None


def _read_with_pillow(path: Path) -> sitk.Image:
    from PIL import Image
    try:
        with Image.open(path) as picture:
            picture.load()
            if picture.mode in ("LA", "La"):
                array, vector = np.asarray(picture)[..., 0], False
            elif picture.mode in ("P", "PA", "CMYK", "YCbCr"):
                array, vector = np.asarray(picture.convert("RGB")), True
            else:
                array = np.asarray(picture)
                vector = array.ndim == 3
    except (OSError, ValueError) as e:
        raise ImageReadError(f"{path}: unreadable or truncated image ({e})") from None
    return sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=vector)


def rgb_to_grey(array: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma, the conversion PIL's 'L' mode uses, for RGB(A) X-rays stored as colour."""
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float64)
    return array[..., :3].astype(np.float64) @ weights


def image_array(image: sitk.Image, where: str, dtype=np.float32, grey: bool = True) -> tuple[np.ndarray, Geometry]:
    """The voxels of an image (SimpleITK index order) and its geometry. The one conversion from
    SimpleITK that every reader goes through (the converters, training, prediction; files and images
    in memory alike), so that one picture always gives one array:

    * colour 2D images become grey (BT.601 luma) when ``grey``; grey with alpha keeps its grey;
    * 16-bit 2D images (PNG, TIFF) are put on the 0-255 scale of 8-bit ones (x 255 / 65535, kept as
      floats): a 16-bit export of an X-ray is the same picture as its 8-bit one."""
    geometry = Geometry.of(image)
    array = sitk.GetArrayFromImage(image)
    components = image.GetNumberOfComponentsPerPixel()
    if components > 1:
        if not grey:
            raise ImageReadError(f"{where}: has {components} components per pixel")
        array = rgb_to_grey(array) if components >= 3 else array[..., 0]
    if image.GetDimension() == 2 and image.GetPixelIDValue() in (sitk.sitkUInt16, sitk.sitkVectorUInt16):
        array = array.astype(np.float64) * (255.0 / 65535.0)
    return array.astype(dtype, copy=False), geometry


def read_image(path: str | Path, dtype=np.float32, grey: bool = True) -> tuple[np.ndarray, Geometry]:
    """Read any supported image; colour 2D images are converted to grey when ``grey``."""
    return image_array(read_sitk(path), str(path), dtype, grey)


def verify_file(path: str | Path) -> list[str]:
    """Problems SimpleITK reads past silently: it zero-fills a truncated .nii.gz and turns NaN in
    NIfTI files into 0, and decoders may return half a truncated PNG or JPEG. Returns messages
    naming the file (empty when all is well)."""
    path = Path(path)
    ending = file_ending(path)
    if path.is_file() and path.stat().st_size == 0:
        return [f"{path}: empty file (0 bytes)"]
    if ending in (".nii", ".nii.gz"):
        import nibabel

        try:
            nifti = nibabel.load(str(path))
            if int(np.prod(nifti.shape, dtype=np.float64)) > MAX_VOXELS:
                return [f"{path}: its header declares {'x'.join(map(str, nifti.shape))} voxels, more than autouad "
                        f"reads ({MAX_VOXELS / 1e9:.1f} billion); refused before reading"]
            data = np.asanyarray(nifti.dataobj)
        except Exception as e:  # nibabel raises many types for damaged files
            return [f"{path}: unreadable or truncated image ({type(e).__name__}: {str(e)[:120]})"]
        if data.dtype.kind == "f":
            n_nan, n_inf = int(np.isnan(data).sum()), int(np.isinf(data).sum())
            if n_nan or n_inf:
                return [f"{path}: contains {n_nan} NaN and {n_inf} Inf values"]
        return []
    if ending == ".png":
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 12))
            if b"IEND" not in f.read():
                return [f"{path}: truncated PNG (no IEND chunk at the end)"]
    if ending in (".jpg", ".jpeg"):
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 1024))
            if b"\xff\xd9" not in f.read():
                return [f"{path}: truncated JPEG (no end-of-image marker)"]
    return []
