"""A small synthetic brain MRI dataset, generated on the spot: ``autouad_convert_dataset demo -d ID``.

Healthy anatomy comes from the MNI ICBM152 2009a nonlinear symmetric templates that the nilearn
package ships in its package data (T1 intensity, grey- and white-matter probabilities, 1 mm, skull
stripped); nothing is downloaded. Every subject is the template under its own smooth random
elastic deformation and small random affine, with a smooth multiplicative bias field, Rician noise
and a global intensity scale, resampled to a coarse demo resolution (2 mm by default) and cropped
to the head, so that the whole autouad pipeline runs quickly on a laptop CPU.

    channels  0 FLAIR  synthesised from tissue probabilities (CSF dark, grey matter > white matter)
              1 T1     the template's T1 intensity
    normal    --num-normal subjects, role "normal", with an all-zero anomaly mask
    patients  --num-patients subjects, role "unlabeled", 1-3 lesions each: blobs of thresholded
              smoothed noise or deformed ellipsoids of radius ~3-20 mm, inside the brain, with a soft
              boundary and internal heterogeneity, replacing the tissue they cover; in FLAIR mostly
              hyperintense (10-60 % against the surrounding parenchyma), some hypointense; in T1
              mildly hypointense. Their mask is the binary lesion.
    test      --num-test further patients in the test split, with masks
    ROI       the subject's (deformed) brain mask for every case, roi_name "brain"; voxels outside
              it are zero, as in skull-stripped BraTS data.

Normal subjects get an all-zero mask rather than none, so that evaluation can count their voxels
as true negatives. Every subject draws from ``numpy.random.SeedSequence([seed, group, index])``, so a
rerun with the same options writes identical images and adding subjects leaves earlier ones as they
were; its anatomy, lesions and acquisition use three independent streams of it, so that
``synthesise_subject(..., with_lesions=False)`` gives a patient's lesion-free twin. dataset.json's
``conversion.lesions`` describes each patient's lesions (centre, radius, shape, FLAIR and T1 intensity
change relative to the surrounding parenchyma, voxel count).
"""
from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.transform import Rotation

from autouad.dataset.raw_dataset import RawDatasetWriter

FORMAT = "demo"
HELP = ("generate a small synthetic brain MRI dataset (FLAIR + T1, normal subjects and patients with "
        "lesions) from the MNI152 template shipped with nilearn; needs no source")
DEFAULT_NAME = "DemoBrainMRI"
CHANNELS = ("FLAIR", "T1")
TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
GROUPS = {"normal": 0, "patient": 1, "test": 2}  # the second element of each subject's seed

DESCRIPTION = (
    "SYNTHETIC demo data, not real patients: brain MRI (FLAIR, T1) simulated from the MNI ICBM152 2009a "
    "nonlinear symmetric template with random elastic and affine deformations, bias fields, Rician noise "
    "and intensity scales; patients carry 1-3 artificial lesions (mostly FLAIR-hyperintense, some "
    "hypointense, mildly T1-hypointense). Masks: the lesions (all-zero for normal subjects); "
    "ROI: the brain mask; skull-stripped. Made by autouad_convert_dataset demo.")
REFERENCE = (
    "Template: Fonov et al., NeuroImage 54(1):313-327, 2011 (Unbiased average age-appropriate atlases for "
    "pediatric studies); Fonov et al., NeuroImage 47:S102, 2009; Collins et al., 1999. "
    "Shipped with nilearn (https://nilearn.github.io).")
LICENCE = (
    "Synthetic images derived from the MNI ICBM152 2009a template, which may be used freely with "
    "acknowledgement under its copyright notice: Copyright (C) 1993-2009 Louis Collins, McConnell Brain "
    "Imaging Centre, Montreal Neurological Institute, McGill University. Permission to use, copy, modify, "
    "and distribute this software and its documentation for any purpose and without fee is hereby "
    "granted, provided that the above copyright notice appear in all copies. The authors and McGill "
    "University make no representations about the suitability of this software for any purpose. It is "
    "provided 'as is' without express or implied warranty.")

# -- generation parameters -------------------------------------------------------------------------
MARGIN_MM = 12.0               # around the template brain's bounding box, room for the deformations
AFFINE_SCALE = 0.05            # per-axis scale in 1 +- this
AFFINE_ROTATION_DEG = 5.0      # about each axis
ELASTIC_CONTROL_MM = 24.0      # spacing of the random control grid of the displacement field
ELASTIC_STD_MM = (1.0, 2.0)    # per-component standard deviation of the displacement
BIAS_CONTROL_MM = 64.0
BIAS_STD = (0.05, 0.12)        # of the log bias field
NOISE_FRACTION = (0.02, 0.045)  # Rician sigma relative to the white-matter intensity
GLOBAL_SCALE = (0.75, 1.35)
BASE_INTENSITY = {"FLAIR": 400.0, "T1": 600.0}
# FLAIR from tissue probabilities, relative to white matter
FLAIR_GM = (1.2, 1.4)
FLAIR_CSF = (0.08, 0.2)
FLAIR_OTHER = 1.05             # brain that the GM/WM maps leave unclassified (brainstem midline)
T1_CSF, T1_GM = 0.3, 0.6       # template T1 levels of CSF and grey matter, to tell CSF from tissue
# lesions
LESIONS_PER_PATIENT = (1, 3)
LESION_RADIUS_MM = (3.0, 20.0)
FLAIR_CHANGE = (0.10, 0.60)
HYPERINTENSE_PROBABILITY = 0.8
T1_CHANGE = (0.05, 0.25)       # a decrease
HETEROGENEITY = (0.04, 0.10)  # relative amplitude of the internal texture in FLAIR


def add_arguments(parser) -> None:
    parser.add_argument("--num-normal", type=int, default=8, help="normal training subjects (default 8)")
    parser.add_argument("--num-patients", type=int, default=8,
                        help="training patients with lesions, role unlabeled (default 8)")
    parser.add_argument("--num-test", type=int, default=4, help="test patients with lesions and masks (default 4)")
    parser.add_argument("--spacing", type=float, default=2.0,
                        help="isotropic voxel size in mm (default 2.0; the template has 1.0)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed; the same seed gives the same files (default 0)")
    parser.add_argument("--normal-reference", choices=("cases", "slices_without_anomaly"), default="cases",
                        help="cases (default): the normal subjects are the normal reference; "
                             "slices_without_anomaly: also the lesion-free slices of the patients")


# -- the template -------------------------------------------------------------------------------------
def template_folder() -> Path:
    spec = importlib.util.find_spec("nilearn")  # finds the package without importing it (slow)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise FileNotFoundError(
            f"{TEMPLATE_FILES['t1']}: the demo dataset is made from the MNI152 template that the nilearn "
            f"package ships, and nilearn is not installed; install it with: pip install nilearn")
    for location in locations:
        folder = Path(location) / "datasets" / "data"
        if (folder / TEMPLATE_FILES["t1"]).is_file():
            return folder
    return Path(locations[0]) / "datasets" / "data"


@dataclass
class Template:
    """The template, cropped, smoothed for the target spacing, in numpy (z, y, x) order."""
    t1: np.ndarray          # 0..1
    gm: np.ndarray          # probabilities 0..1
    wm: np.ndarray
    brain: np.ndarray       # 0/1 float, for interpolation
    source_offset: np.ndarray   # template index of the cropped arrays' first voxel (z, y, x)
    template_spacing: np.ndarray  # (z, y, x) mm
    grid_start: np.ndarray  # template continuous index of the output grid's first voxel (z, y, x)
    grid_shape: tuple[int, int, int]
    centre: np.ndarray      # template index of the brain's centre (z, y, x), the affine's fixed point
    spacing: float          # output spacing, mm
    origin: tuple[float, ...]     # output geometry, SimpleITK order
    direction: tuple[float, ...]


@functools.lru_cache(maxsize=2)
def load_template(spacing: float) -> Template:
    folder = template_folder()
    images = {}
    for key, name in TEMPLATE_FILES.items():
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: MNI152 template file not found in nilearn's package data "
                                    f"(reinstall nilearn: pip install --force-reinstall nilearn)")
        images[key] = sitk.ReadImage(str(path))
    reference = images["t1"]
    arrays = {k: sitk.GetArrayFromImage(im).astype(np.float32) / 255.0 for k, im in images.items()}
    tsp = np.array(reference.GetSpacing()[::-1], dtype=float)
    brain = ndimage.binary_fill_holes(arrays["t1"] > 0)
    idx = np.argwhere(brain)
    lo, hi = idx.min(0), idx.max(0)
    margin_vox = MARGIN_MM / tsp
    # output grid over the brain's bounding box plus margin
    extent_mm = (hi - lo) * tsp + 2 * MARGIN_MM
    grid_shape = tuple(int(math.ceil(e / spacing)) + 1 for e in extent_mm)
    grid_start = lo - margin_vox
    # crop the source with a little more, so that interpolation never misses brain
    pad = np.ceil(margin_vox * 2 + 2).astype(int)
    c_lo = np.maximum(lo - pad, 0)
    c_hi = np.minimum(hi + pad + 1, np.array(brain.shape))
    crop = tuple(slice(a, b) for a, b in zip(c_lo, c_hi))
    sigma = 0.4 * np.sqrt(np.maximum((spacing / tsp) ** 2 - 1.0, 0.0))  # anti-aliasing, in voxels
    def prepare(a):
        a = np.ascontiguousarray(a[crop], dtype=np.float32)
        return ndimage.gaussian_filter(a, sigma) if np.any(sigma > 0) else a
    origin = reference.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in grid_start[::-1]))
    return Template(
        t1=prepare(arrays["t1"]), gm=prepare(arrays["gm"]), wm=prepare(arrays["wm"]),
        brain=prepare(brain.astype(np.float32)), source_offset=c_lo.astype(float), template_spacing=tsp,
        grid_start=grid_start.astype(float), grid_shape=grid_shape,
        centre=(lo + hi) / 2.0, spacing=float(spacing), origin=tuple(origin),
        direction=tuple(reference.GetDirection()))


# -- random fields ------------------------------------------------------------------------------------
def smooth_field(rng: np.random.Generator, shape, spacing_mm: float, control_mm: float) -> np.ndarray:
    """A smooth random field of zero mean and unit standard deviation: Gaussian noise on a control grid
    every ``control_mm``, upsampled with cubic B-splines (separably, one small matrix per axis)."""
    coarse_shape = tuple(max(2, int(math.ceil(n * spacing_mm / control_mm)) + 1) for n in shape)
    field = rng.standard_normal(coarse_shape)
    for axis, (n, c) in enumerate(zip(shape, coarse_shape)):
        field = np.moveaxis(np.tensordot(_upsampling_matrix(n, c), field, axes=(1, axis)), 0, axis)
    field = field.astype(np.float32)
    field -= field.mean()
    return field / max(float(field.std()), 1e-6)


@functools.lru_cache(maxsize=64)
def _upsampling_matrix(n: int, c: int) -> np.ndarray:
    """(n, c): column j is ndimage.zoom's cubic-spline upsampling of the j-th unit vector."""
    eye = np.eye(c)
    return np.stack([ndimage.zoom(eye[j], n / c, order=3, mode="nearest", grid_mode=True)[:n]
                     for j in range(c)], axis=1)


def smooth_noise(rng: np.random.Generator, shape, sigma_vox: float) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox, mode="reflect")
    noise -= noise.mean()
    return noise / max(float(noise.std()), 1e-6)


# -- one subject ---------------------------------------------------------------------------------------
@dataclass
class Lesion:
    centre: tuple[int, int, int]  # output voxel (z, y, x)
    radius_mm: float
    shape: str            # "ellipsoid" (deformed) or "blob" (thresholded smoothed noise)
    flair_change: float   # relative to the surrounding parenchyma: > 0 hyperintense
    t1_change: float      # < 0: hypointense
    mask: np.ndarray      # bool, whole volume
    box: tuple[slice, slice, slice]  # where the lesion's arrays below lie
    weight: np.ndarray    # soft membership 0..1 (a soft boundary around ``mask``)
    contrast: np.ndarray  # 0..1, how much of the change each voxel gets (a dimmer core in some)
    texture: np.ndarray   # smooth noise of unit variance, the internal heterogeneity
    heterogeneity: float  # the texture's relative amplitude in FLAIR (half of it in T1)


@dataclass
class Subject:
    flair: np.ndarray
    t1: np.ndarray
    brain: np.ndarray   # bool
    lesion: np.ndarray  # bool, union of the lesions
    lesions: list[Lesion]


def deformed_anatomy(template: Template, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Pull the template through a random affine plus elastic deformation onto the output grid."""
    shape, s = template.grid_shape, template.spacing
    tsp = template.template_spacing
    rotation = Rotation.from_euler("xyz", rng.uniform(-AFFINE_ROTATION_DEG, AFFINE_ROTATION_DEG, 3),
                                   degrees=True).as_matrix()
    matrix = rotation @ np.diag(rng.uniform(1 - AFFINE_SCALE, 1 + AFFINE_SCALE, 3))
    # output voxel -> mm relative to the brain's centre, per axis (separable)
    axes_mm = [((template.grid_start[d] + np.arange(shape[d]) * s / tsp[d]) - template.centre[d]) * tsp[d]
               for d in range(3)]
    grids = [a.reshape([-1 if d == k else 1 for k in range(3)]).astype(np.float32) for d, a in enumerate(axes_mm)]
    amplitude = rng.uniform(*ELASTIC_STD_MM)
    coords = []
    for i in range(3):
        q = (matrix[i, 0] * grids[0] + matrix[i, 1] * grids[1] + matrix[i, 2] * grids[2]
             + amplitude * smooth_field(rng, shape, s, ELASTIC_CONTROL_MM))
        coords.append((q / tsp[i] + template.centre[i] - template.source_offset[i]).astype(np.float32))
    coords = np.stack(coords)
    out = {}
    for key in ("t1", "gm", "wm", "brain"):
        out[key] = ndimage.map_coordinates(getattr(template, key), coords, order=1, mode="constant", cval=0.0,
                                           output=np.float32)
    return out


def place_lesion(rng: np.random.Generator, brain: np.ndarray, wm: np.ndarray, depth_mm: np.ndarray,
                 spacing: float) -> Lesion | None:
    """One random lesion centred in white matter, or None when the drawn shape missed the brain."""
    r = float(np.exp(rng.uniform(np.log(max(LESION_RADIUS_MM[0], 1.5 * spacing)), np.log(LESION_RADIUS_MM[1]))))
    need = min(0.8 * r, 15.0) + spacing
    candidates = np.flatnonzero((wm > 0.5) & (depth_mm >= need))
    if candidates.size == 0:
        candidates = np.flatnonzero(depth_mm >= min(need, depth_mm.max()))
    centre = np.array(np.unravel_index(candidates[rng.integers(candidates.size)], brain.shape))
    width_mm = rng.uniform(1.0, 2.5)  # softness of the boundary
    half = int(math.ceil((1.6 * r + 3 * width_mm) / spacing)) + 1
    lo = np.maximum(centre - half, 0)
    hi = np.minimum(centre + half + 1, np.array(brain.shape))
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    box_shape = tuple(int(v) for v in hi - lo)
    d = [((np.arange(lo[k], hi[k]) - centre[k]) * spacing).reshape([-1 if j == k else 1 for j in range(3)])
         for k in range(3)]
    kind = "ellipsoid" if rng.random() < 0.5 else "blob"
    if kind == "ellipsoid":
        semi = rng.uniform(0.6, 1.3, 3)
        semi = r * semi / np.prod(semi) ** (1 / 3)
        rot = Rotation.random(random_state=rng).as_matrix()
        rho2 = sum(((rot[0, i] * d[0] + rot[1, i] * d[1] + rot[2, i] * d[2]) / semi[i]) ** 2 for i in range(3))
        level = 1.0 - np.sqrt(rho2) + 0.15 * smooth_noise(rng, box_shape, max(1.0, 0.35 * r / spacing))
    else:
        rho = np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2) / r
        level = 0.55 * (1.0 - rho) + 0.45 * smooth_noise(rng, box_shape, max(1.0, 0.4 * r / spacing))
    inside = level > 0
    labels, n = ndimage.label(inside)
    if n > 1:
        inside = labels == (int(np.argmax(np.bincount(labels.ravel())[1:])) + 1)
    if not inside.any():  # a blob whose noise swallowed it: fall back to a sphere
        kind, inside = "ellipsoid", (d[0] ** 2 + d[1] ** 2 + d[2] ** 2) <= r * r
    inside &= brain[box]
    if not inside.any():
        return None
    weight = np.maximum(ndimage.gaussian_filter(inside.astype(np.float32), width_mm / spacing), 0.6 * inside)
    hyper = rng.random() < HYPERINTENSE_PROBABILITY
    flair_change = rng.uniform(*FLAIR_CHANGE) * (1 if hyper else -1)
    t1_change = -rng.uniform(*T1_CHANGE)
    contrast = np.ones(box_shape, dtype=np.float32)
    if hyper and r >= 10 and rng.random() < 0.4:  # a dimmer (necrotic-like) core in some large lesions
        depth = ndimage.distance_transform_edt(inside)
        core = ndimage.gaussian_filter((depth > 0.5 * depth.max()).astype(np.float32), 1.0)
        contrast -= rng.uniform(0.4, 0.8) * core
    texture = smooth_noise(rng, box_shape, max(0.7, 0.2 * r / spacing))
    mask = np.zeros(brain.shape, dtype=bool)
    mask[box] = inside
    return Lesion(tuple(int(c) for c in centre), round(r, 2), kind, round(float(flair_change), 3),
                  round(float(t1_change), 3), mask, box, weight, contrast, texture,
                  float(rng.uniform(*HETEROGENEITY)))


def apply_lesion(image: np.ndarray, parenchyma: np.ndarray, lesion: Lesion, change: float,
                 heterogeneity: float, spacing: float) -> None:
    """Replace the tissue under the lesion (softly, by its weight) with lesion tissue whose intensity is
    the surrounding parenchyma's (a smooth local mean that leaves CSF out) changed by ``change``."""
    box = lesion.box
    tissue, w = image[box], parenchyma[box]
    sigma = max(lesion.radius_mm, 6.0) / spacing
    local = ndimage.gaussian_filter(tissue * w, sigma, mode="nearest") / np.maximum(
        ndimage.gaussian_filter(w, sigma, mode="nearest"), 1e-3)
    target = local * (1.0 + change * lesion.contrast) * np.maximum(1.0 + heterogeneity * lesion.texture, 0.2)
    image[box] = tissue + lesion.weight * (target - tissue)


def subject_seed(seed: int, group: str, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), GROUPS[group], int(index)])


def synthesise_subject(template: Template, seed: np.random.SeedSequence, with_lesions: bool) -> Subject:
    """One subject. Anatomy, lesions and acquisition (bias, scale, noise) draw from three independent
    streams of ``seed``, so that ``with_lesions=False`` gives a patient's exact lesion-free twin."""
    # the children that seed.spawn(3) would give, without spawn's side effect on ``seed``
    anatomy_rng, lesion_rng, acquisition_rng = (
        np.random.default_rng(np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, k)))
        for k in range(3))
    a = deformed_anatomy(template, anatomy_rng)
    s = template.spacing
    brain = ndimage.binary_fill_holes(a["brain"] > 0.5)
    soft_brain = np.clip(a["brain"], 0.0, 1.0)
    gm, wm, t1 = a["gm"], a["wm"], a["t1"]
    # CSF: the brain that is neither GM nor WM, where T1 is dark (the GM/WM maps leave part of the
    # brainstem unclassified, and it is not CSF)
    rest = np.clip(soft_brain - gm - wm, 0.0, 1.0)
    csf = rest * np.clip((T1_GM - t1) / (T1_GM - T1_CSF), 0.0, 1.0)
    other = rest - csf
    flair = (anatomy_rng.uniform(*FLAIR_GM) * gm + wm + anatomy_rng.uniform(*FLAIR_CSF) * csf
             + FLAIR_OTHER * other)
    parenchyma = np.clip(gm + wm + other, 0.0, 1.0)
    lesions: list[Lesion] = []
    if with_lesions:
        depth_mm = ndimage.distance_transform_edt(brain, sampling=s).astype(np.float32)
        wanted = int(lesion_rng.integers(LESIONS_PER_PATIENT[0], LESIONS_PER_PATIENT[1] + 1))
        attempts = 0
        while len(lesions) < wanted and attempts < 10 * wanted:
            attempts += 1
            lesion = place_lesion(lesion_rng, brain, wm, depth_mm, s)
            if lesion is not None:
                apply_lesion(flair, parenchyma, lesion, lesion.flair_change, lesion.heterogeneity, s)
                apply_lesion(t1, parenchyma, lesion, lesion.t1_change, 0.5 * lesion.heterogeneity, s)
                lesions.append(lesion)
        if not lesions:
            raise RuntimeError("could not place a lesion inside the brain")
    images = {}
    for name, anatomy, wm_level in (("FLAIR", flair, 1.0), ("T1", t1, 0.86)):
        bias = np.exp(acquisition_rng.uniform(*BIAS_STD) * smooth_field(acquisition_rng, anatomy.shape, s,
                                                                        BIAS_CONTROL_MM))
        scale = BASE_INTENSITY[name] * acquisition_rng.uniform(*GLOBAL_SCALE)
        sigma = acquisition_rng.uniform(*NOISE_FRACTION) * wm_level * scale
        clean = anatomy * bias * scale
        noisy = np.sqrt((clean + sigma * acquisition_rng.standard_normal(clean.shape, dtype=np.float32)) ** 2
                        + (sigma * acquisition_rng.standard_normal(clean.shape, dtype=np.float32)) ** 2)
        images[name] = np.where(brain, noisy, 0.0).astype(np.float32)
    union = np.zeros(brain.shape, dtype=bool)
    for lesion in lesions:
        union |= lesion.mask
    return Subject(images["FLAIR"], images["T1"], brain, union & brain, lesions)


def reference_image(template: Template) -> sitk.Image:
    image = sitk.Image([int(n) for n in template.grid_shape[::-1]], sitk.sitkUInt8)
    image.SetSpacing([template.spacing] * 3)
    image.SetOrigin(template.origin)
    image.SetDirection(template.direction)
    return image


def nilearn_version() -> str | None:
    try:
        from importlib.metadata import version
        return version("nilearn")
    except Exception:
        return None


def convert(dataset_id: int, name: str | None = None, *, raw_folder=None, overwrite: bool = False,
            num_normal: int = 8, num_patients: int = 8, num_test: int = 4, spacing: float = 2.0,
            seed: int = 0, normal_reference: str = "cases") -> Path:
    from autouad.utils.progress import progress

    for option, value in (("num_normal", num_normal), ("num_patients", num_patients), ("num_test", num_test)):
        if value < 0:
            raise ValueError(f"--{option.replace('_', '-')} must be >= 0, got {value}")
    if num_normal + num_patients == 0:
        raise ValueError("the dataset needs at least one training subject (--num-normal or --num-patients)")
    if not 0.5 <= spacing <= 8.0:
        raise ValueError(f"--spacing must be between 0.5 and 8 mm, got {spacing}")
    template = load_template(float(spacing))
    reference = reference_image(template)
    options = {"num_normal": num_normal, "num_patients": num_patients, "num_test": num_test,
               "spacing": float(spacing), "seed": seed, "normal_reference": normal_reference}
    lesion_log: dict[str, list[dict]] = {}
    conversion = {"format": FORMAT, "source": "MNI ICBM152 2009a nonlinear symmetric template (nilearn package data: "
                                               + ", ".join(TEMPLATE_FILES.values()) + ")",
                  "nilearn_version": nilearn_version(), "seed": seed, "options": options}
    plan = ([("normal", i, f"demo_normal_{i:03d}") for i in range(num_normal)]
            + [("patient", i, f"demo_patient_{i:03d}") for i in range(num_patients)]
            + [("test", i, f"demo_test_{i:03d}") for i in range(num_test)])
    with RawDatasetWriter(
            dataset_id, name or DEFAULT_NAME, modality="MRI",
            channel_names={str(i): c for i, c in enumerate(CHANNELS)}, file_ending=".nii.gz",
            description=DESCRIPTION, reference=REFERENCE, licence=LICENCE, roi_name="brain",
            normal_reference=normal_reference, conversion=conversion,
            raw_folder=raw_folder, overwrite=overwrite) as writer:
        for group, index, case_id in progress(plan, desc="demo subjects", unit="subject"):
            subject = synthesise_subject(template, subject_seed(seed, group, index), with_lesions=group != "normal")
            if subject.lesions:
                lesion_log[case_id] = [lesion_record(lesion, reference) for lesion in subject.lesions]
            writer.add_case(
                case_id, [subject.flair, subject.t1], role={"normal": "normal", "patient": "unlabeled"}.get(group),
                split="test" if group == "test" else "train", mask=subject.lesion.astype(np.uint8),
                roi=subject.brain.astype(np.uint8), label=0 if group == "normal" else 1,
                reference_image=reference)
        writer.meta["conversion"]["lesions"] = lesion_log
    return writer.target


def lesion_record(lesion: Lesion, reference: sitk.Image) -> dict:
    index_xyz = [int(v) for v in lesion.centre[::-1]]
    return {"centre_index_xyz": index_xyz,
            "centre_mm": [round(v, 2) for v in reference.TransformIndexToPhysicalPoint(index_xyz)],
            "radius_mm": lesion.radius_mm, "shape": lesion.shape,
            "flair_change": lesion.flair_change, "t1_change": lesion.t1_change,
            "voxels": int(lesion.mask.sum())}
