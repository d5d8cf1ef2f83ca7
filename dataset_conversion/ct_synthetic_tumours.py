"""One abdominal CT with an organ segmentation -> normal training slabs and test copies with
synthetic tumours.

Made for ../shared/data/ct_abdomen_example (TotalSegmentator's test CT, liver = label 5), which has
no tumour and a single patient; it gives the two-phase liver network something to train on and
something to be scored on:

* training: the organ's slices, split into ``--slabs`` contiguous slabs (default 2) that act as
  patients, so that patient-wise cross-validation always validates on slices the fold did not
  train on; role "normal", ROI = the organ;
* test: ``--num-test`` copies of the organ's slices with 1-3 synthetic tumours each, with masks.

The test tumours come from a generator deliberately unlike the training synthesis of the
pseudo-anomaly methods (blurred-noise blobs shifted by 60-100 grey values inside a 400 HU window,
about 94-157 HU): round (ellipsoids) or lobulated (a union of overlapping spheres) shapes, soft
edges and texture, and hypo- or hyper-dense by 40-80 HU, the contrast of many liver lesions in
portal-venous CT. Kinds alternate round-hypo, lobulated-hyper, round-hyper, lobulated-hypo, and
the dataset.json records each test case's kind. All randomness comes from ``--seed``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from autouad.dataset.raw_dataset import RawDatasetWriter
from dataset_conversion.common import read_volume
from dataset_conversion.convert import ConversionError

FORMAT = "ct-synthetic-tumours"
HELP = ("one CT + organ segmentation (e.g. ct_abdomen_example): normal training slabs, test copies with "
        "synthetic tumours")
KINDS = (("round", "hypo"), ("lobulated", "hyper"), ("round", "hyper"), ("lobulated", "hypo"))
DEFAULT_FILES = ("example_ct.nii.gz", "example_seg.nii.gz")


def add_arguments(parser) -> None:
    parser.add_argument("--segmentation", default=None,
                        help=f"organ label image (default: {DEFAULT_FILES[1]} beside the CT when -i is a folder)")
    parser.add_argument("--segmentation-offset", type=int, default=None,
                        help="first CT slice the segmentation covers, when it has fewer slices (default: found "
                             "from where the organ's voxels are soft tissue)")
    parser.add_argument("--organ-label", type=int, default=5, help="label of the organ (TotalSegmentator liver: 5)")
    parser.add_argument("--organ-name", default="liver", help="name of the organ, the dataset's ROI")
    parser.add_argument("--slabs", type=int, default=2, help="training slabs (patients) the organ's slices split into")
    parser.add_argument("--num-test", type=int, default=4, help="test copies with synthetic tumours")
    parser.add_argument("--seed", type=int, default=0)


def find_inputs(source: Path, segmentation) -> tuple[Path, Path]:
    if source.is_dir():
        ct, seg = source / DEFAULT_FILES[0], Path(segmentation) if segmentation else source / DEFAULT_FILES[1]
    else:
        if segmentation is None:
            raise ConversionError(f"{source}: give the organ segmentation with --segmentation")
        ct, seg = source, Path(segmentation)
    for path in (ct, seg):
        if not path.is_file():
            raise ConversionError(f"{path}: not found")
    return ct, seg


# HU of soft tissue: an organ label that lies on the organ has nearly all its voxels in this range.
SOFT_TISSUE_HU = (-100.0, 300.0)


def organ_mask(ct: sitk.Image, hu: np.ndarray, seg: sitk.Image, seg_path: Path, ct_path: Path, label: int,
               offset: int | None) -> tuple[np.ndarray, int]:
    """(the organ as a bool array of the CT's shape, the slice offset of the segmentation).

    A segmentation with fewer slices than the CT (same in-plane grid) covers part of it. Its header
    may not say which part: ct_abdomen_example's has the CT's origin, yet its liver lies on the CT's
    last 30 slices, not the first. Unless ``offset`` is given, the offset is the one at which the
    organ's voxels are soft tissue (SOFT_TISSUE_HU) most often."""
    same_grid = (np.allclose(ct.GetSpacing(), seg.GetSpacing(), atol=1e-4)
                 and np.allclose(ct.GetDirection(), seg.GetDirection(), atol=1e-6))
    (cx, cy, cz), (sx, sy, sz) = ct.GetSize(), seg.GetSize()
    if not same_grid or (sx, sy) != (cx, cy) or sz > cz:
        raise ConversionError(f"{seg_path}: its grid (size {seg.GetSize()}, spacing, direction) does not "
                              f"match {ct_path.name} (size {ct.GetSize()})")
    labels = sitk.GetArrayFromImage(seg) == label
    if not labels.any():
        raise ConversionError(f"{seg_path}: no voxel has label {label}")

    def soft_tissue_fraction(k: int) -> float:
        values = hu[k:k + sz][labels]
        return float(((values > SOFT_TISSUE_HU[0]) & (values < SOFT_TISSUE_HU[1])).mean())

    if offset is None:
        offset = max(range(cz - sz + 1), key=soft_tissue_fraction)
    elif not 0 <= offset <= cz - sz:
        raise ConversionError(f"--segmentation-offset {offset}: must lie in 0..{cz - sz}")
    organ = np.zeros((cz, cy, cx), bool)
    organ[offset:offset + sz] = labels
    return organ, int(offset)


def tumour_profile(shape: tuple[int, ...], spacing_zyx: np.ndarray, centre: np.ndarray, radius_mm: float,
                   kind: str, rng: np.random.Generator) -> np.ndarray:
    """A tumour's weight in [0, 1] per voxel: 1 inside, a soft edge of about 1.5 mm."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1) * spacing_zyx
    centre_mm = centre * spacing_zyx
    if kind == "round":
        axes = radius_mm * rng.uniform(0.75, 1.25, 3)
        distance = np.sqrt((((grid - centre_mm) / axes) ** 2).sum(-1)) * radius_mm - radius_mm
    else:  # lobulated: overlapping spheres around the centre
        distance = np.full(shape, np.inf)
        for _ in range(rng.integers(3, 7)):
            direction = rng.normal(size=3)
            offset = direction / np.linalg.norm(direction) * radius_mm * rng.uniform(0.3, 0.7)
            r = radius_mm * rng.uniform(0.45, 0.75)
            distance = np.minimum(distance, np.sqrt(((grid - centre_mm - offset) ** 2).sum(-1)) - r)
    return 1.0 / (1.0 + np.exp(distance / 0.75))


def add_tumours(hu: np.ndarray, organ: np.ndarray, spacing_zyx: np.ndarray, shape_kind: str, density: str,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(CT with 1-3 tumours inside the organ, their mask)."""
    depth = ndimage.distance_transform_edt(organ, sampling=spacing_zyx)
    out, weight = hu.astype(np.float32).copy(), np.zeros(hu.shape, np.float32)
    for _ in range(rng.integers(1, 4)):
        radius = rng.uniform(6.0, 18.0)
        inside = np.argwhere(depth >= min(radius * 0.6, depth.max() * 0.8))
        centre = inside[rng.integers(len(inside))].astype(float)
        weight = np.maximum(weight, tumour_profile(hu.shape, spacing_zyx, centre, radius, shape_kind, rng))
    weight *= organ
    contrast = rng.uniform(40.0, 80.0) * (-1.0 if density == "hypo" else 1.0)
    texture = ndimage.gaussian_filter(rng.normal(0.0, 1.0, hu.shape), 1.0)
    texture *= 8.0 / max(float(texture.std()), 1e-6)
    out += weight * (contrast + texture)
    return out, (weight >= 0.5).astype(np.uint8)


def sub_volume(image: sitk.Image, array: np.ndarray, z0: int) -> sitk.Image:
    """``array`` (slices z0.. of ``image``) with the geometry those slices have in ``image``."""
    out = sitk.GetImageFromArray(array)
    out.SetSpacing(image.GetSpacing())
    out.SetDirection(image.GetDirection())
    out.SetOrigin(image.TransformIndexToPhysicalPoint((0, 0, int(z0))))
    return out


def convert(source, dataset_id: int, name: str | None = None, *, raw_folder=None, overwrite: bool = False,
            segmentation=None, segmentation_offset: int | None = None, organ_label: int = 5, organ_name: str = "liver", slabs: int = 2,
            num_test: int = 4, seed: int = 0) -> Path:
    if slabs < 1 or num_test < 0:
        raise ValueError("--slabs must be at least 1 and --num-test at least 0")
    ct_path, seg_path = find_inputs(Path(source), segmentation)
    ct, seg = read_volume(ct_path), read_volume(seg_path)
    hu = sitk.GetArrayFromImage(ct).astype(np.float32)
    organ, offset = organ_mask(ct, hu, seg, seg_path, ct_path, organ_label, segmentation_offset)
    zs = np.flatnonzero(organ.any(axis=(1, 2)))
    if len(zs) < slabs:
        raise ConversionError(f"{seg_path}: label {organ_label} ({organ_name}) covers {len(zs)} slices, "
                              f"fewer than the {slabs} slabs asked for")
    z0, z1 = int(zs[0]), int(zs[-1]) + 1
    spacing_zyx = np.array(ct.GetSpacing()[::-1], float)
    rng = np.random.default_rng(seed)
    options = {"segmentation": str(seg_path.resolve()), "segmentation_offset": offset, "organ_label": organ_label,
               "slabs": slabs,
               "num_test": num_test, "seed": seed}
    with RawDatasetWriter(
            dataset_id, name or "CTSyntheticTumours", modality="CT", channel_names={"0": "CT"},
            file_ending=".nii.gz", roi_name=organ_name,
            description=(f"{ct_path.name}: the {organ_name}'s slices split into {slabs} normal training slabs; "
                         f"{num_test} test copies with synthetic tumours (round or lobulated, hypo- or "
                         f"hyper-dense by 40-80 HU)"),
            reference="TotalSegmentator test data (Wasserthal et al., Radiology: AI 2023)", licence="Apache-2.0",
            conversion={"format": FORMAT, "source": str(ct_path.resolve()), "options": options},
            raw_folder=raw_folder, overwrite=overwrite) as writer:
        for k, slab in enumerate(np.array_split(np.arange(z0, z1), slabs)):
            a, b = int(slab[0]), int(slab[-1]) + 1
            writer.add_case(f"slab_{k}", [sub_volume(ct, hu[a:b], a)], role="normal",
                            roi=sub_volume(ct, organ[a:b].astype(np.uint8), a), patient=f"slab_{k}")
        kinds = {}
        for i in range(num_test):
            shape_kind, density = KINDS[i % len(KINDS)]
            with_tumours, mask = add_tumours(hu[z0:z1], organ[z0:z1], spacing_zyx, shape_kind, density, rng)
            case_id = f"tumour_{i:02d}_{shape_kind}_{density}"
            writer.add_case(case_id, [sub_volume(ct, with_tumours, z0)], split="test", label=1,
                            mask=sub_volume(ct, mask, z0), roi=sub_volume(ct, organ[z0:z1].astype(np.uint8), z0))
            kinds[case_id] = f"{shape_kind}, {density}-dense"
        writer.meta["conversion"]["test_tumours"] = kinds
    return writer.target
