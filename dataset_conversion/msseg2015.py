"""The ISBI 2015 longitudinal MS lesion segmentation challenge training data (ASC-Net's "MS-SEG2015":
21 scans of 5 subjects, 181x217x181, skull-stripped and registered to MNI space by the organisers):

    training/training01/preprocessed/training01_01_{flair,mprage,pd,t2}_pp.nii
    training/training01/masks/training01_01_mask{1,2}.nii        lesion masks of two raters

-i names the training/ folder or the folder holding it; .nii.gz files are accepted as well.

Protocol choices:
- cases: one per scan, training01_01 ...; patient = the subject (training01), so that patient-wise
  folds keep a subject's time points together.
- channels: --modalities, default flair. ASC-Net follows the setting of Baur et al.'s comparative
  study (paper 001, ref. 3), which works on FLAIR, where MS lesions are hyperintense; FLAIR (and T2)
  are also what a BraTS-derived reference can match. --modalities flair,t2 gives both.
  Names: FLAIR, MPRAGE, PD, T2.
- anomaly mask: rater --rater (default 1; the challenge scored against both raters).
- ROI 'brain': nonzero in the first chosen modality (the preprocessed images are skull-stripped).
- roles: every scan is of an MS patient: 'unlabeled'.
- normal reference: slices_without_anomaly (default). ASC-Net took its reference from tumour-free
  BraTS slices, outside this data set; inside it, the lesion-free slices of the scans are the closest
  self-contained equivalent. 'cases' leaves no normal reference (no case is normal) and suits a
  combination with an external reference data set.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from autouad.dataset.raw_dataset import RawDatasetWriter
from autouad.utils.progress import progress
from dataset_conversion.common import read_volume, parse_modalities
from dataset_conversion.convert import ConversionError

FORMAT = "msseg2015"
HELP = "ISBI 2015 MS lesion challenge training data: training/trainingNN/{preprocessed,masks}/trainingNN_MM_*"
MODALITIES = {"flair": "FLAIR", "mprage": "MPRAGE", "pd": "PD", "t2": "T2"}


def add_arguments(parser) -> None:
    parser.add_argument("--modalities", default="flair",
                        help="comma-separated channels in order, from flair,mprage,pd,t2 (default flair)")
    parser.add_argument("--rater", type=int, choices=(1, 2), default=1, help="whose lesion masks (default 1)")
    parser.add_argument("--normal-reference", choices=("slices_without_anomaly", "cases"),
                        default="slices_without_anomaly",
                        help="slices_without_anomaly (default): lesion-free slices are the normal reference; "
                             "cases: only cases with role normal (there are none)")






def existing(path: Path) -> Path:
    """path (.nii) or its .nii.gz twin, whichever exists; path itself when neither does."""
    gz = path.with_name(path.name + ".gz")
    return gz if gz.is_file() and not path.is_file() else path


def find_scans(source: Path) -> list[tuple[str, str, Path]]:
    """(case id, subject, subject folder) for every scan."""
    if not source.is_dir():
        raise ConversionError(f"{source}: not a folder")
    if (source / "training").is_dir():
        source = source / "training"
    subjects = sorted(d for d in source.iterdir() if d.is_dir() and re.fullmatch(r"training\d+", d.name))
    if not subjects:
        raise ConversionError(f"{source}: no trainingNN/ subject folders (expected training/training01/ ...)")
    scans = []
    for subject in subjects:
        if not (subject / "preprocessed").is_dir():
            raise ConversionError(f"{subject / 'preprocessed'}: folder missing")
        ids = sorted({m.group(1) for p in (subject / "preprocessed").iterdir()
                      if (m := re.fullmatch(rf"({subject.name}_\d+)_\w+_pp\.nii(\.gz)?", p.name))})
        if not ids:
            raise ConversionError(f"{subject / 'preprocessed'}: no {subject.name}_NN_<modality>_pp.nii files")
        scans += [(case_id, subject.name, subject) for case_id in ids]
    return scans


def convert(source, dataset_id: int, name: str | None = None, *, raw_folder=None, overwrite: bool = False,
            modalities="flair", rater: int = 1, normal_reference: str = "slices_without_anomaly") -> Path:
    source = Path(source)
    chosen = parse_modalities(modalities, MODALITIES)
    if rater not in (1, 2):
        raise ValueError(f"rater must be 1 or 2, got {rater}")
    files = {}
    for case_id, subject, folder in find_scans(source):
        images = [existing(folder / "preprocessed" / f"{case_id}_{m}_pp.nii") for m in chosen]
        files[case_id] = (subject, images, existing(folder / "masks" / f"{case_id}_mask{rater}.nii"))
    missing = [str(p) for _, images, mask in files.values() for p in [*images, mask] if not p.is_file()]
    if missing:
        raise ConversionError(f"missing files: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    with RawDatasetWriter(
            dataset_id, name or "MSSEG2015", modality="MRI",
            channel_names={str(i): MODALITIES[m] for i, m in enumerate(chosen)}, file_ending=".nii.gz",
            description=f"ISBI 2015 longitudinal MS lesion challenge, training scans (preprocessed); "
                        f"mask: rater {rater}; ROI: brain = nonzero in {MODALITIES[chosen[0]]}",
            reference="Carass et al., NeuroImage 2017 (ISBI 2015 longitudinal MS lesion segmentation challenge)",
            licence="see the challenge's data usage terms", roi_name="brain", normal_reference=normal_reference,
            conversion={"format": FORMAT, "source": str(source.resolve()),
                        "options": {"modalities": chosen, "rater": rater, "normal_reference": normal_reference}},
            raw_folder=raw_folder, overwrite=overwrite) as writer:
        for case_id, (subject, images, mask_path) in progress(files.items(), desc="converting MS-SEG 2015", unit="scan"):
            channels = [read_volume(p) for p in images]
            mask = read_volume(mask_path)
            shapes = {c.GetSize() for c in channels} | {mask.GetSize()}
            if len(shapes) > 1:
                raise ConversionError(f"{mask_path.parent.parent}: {case_id}'s images and mask differ in size")
            brain = sitk.GetArrayViewFromImage(channels[0]) != 0
            writer.add_case(case_id, channels, role="unlabeled", mask=sitk.GetArrayFromImage(mask) > 0,
                            roi=np.asarray(brain), reference_image=channels[0], patient=subject)
    return writer.target
