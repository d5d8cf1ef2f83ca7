"""BraTS training data in the official release layouts.

    BraTS 2019  MICCAI_BraTS_2019_Data_Training/{HGG,LGG}/BraTS19_<inst>_<id>_1/
                    BraTS19_<inst>_<id>_1_{flair,t1,t1ce,t2,seg}.nii.gz
    BraTS 2021  BraTS2021_Training_Data/BraTS2021_<id>/BraTS2021_<id>_{flair,t1,t1ce,t2,seg}.nii.gz

-i names the release folder or the folder holding it. HGG/ and LGG/ grade folders mean the 2019
layout (BraTS 2018 is the same); BraTS*/ case folders directly inside mean the 2021 layout
(BraTS 2020's is the same, with .nii files, which are accepted too).

Protocol choices:
- channels: --modalities, in the order given (default flair,t1,t1ce,t2 -> FLAIR, T1, T1ce, T2).
- anomaly mask: seg > 0, the whole tumour (labels 1 necrosis / non-enhancing core, 2 oedema,
  4 enhancing tumour), the tumour ASC-Net segments (paper 001, sec. 4.2).
- ROI 'brain': voxels nonzero in any chosen modality; BraTS is skull-stripped with background
  exactly 0, and the chosen modalities are what the model sees.
- roles: every case is a glioma patient, so every case is 'unlabeled'; patient = case id (one
  scan per patient in the training release).
- normal reference: slices_without_anomaly (default), ASC-Net's BraTS protocol: the tumour-free
  slices of the patients form the reference distribution. 'cases' is offered, but no case is normal.
- no test split: the validation/test releases have no public segmentations; autouad makes
  patient-wise folds (ASC-Net: patient-wise two-fold cross-validation).
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

FORMAT = "brats"
HELP = "BraTS 2019 ({HGG,LGG}/BraTS19_*/) or 2021 (BraTS2021_*/) training data: <case>_{flair,t1,t1ce,t2,seg}.nii.gz"
MODALITIES = {"flair": "FLAIR", "t1": "T1", "t1ce": "T1ce", "t2": "T2"}
RELEASE_FOLDERS = ("MICCAI_BraTS_2019_Data_Training", "BraTS2021_Training_Data")


def add_arguments(parser) -> None:
    parser.add_argument("--modalities", default="flair,t1,t1ce,t2",
                        help="comma-separated channels in order, from flair,t1,t1ce,t2 (default: all four)")
    parser.add_argument("--normal-reference", choices=("slices_without_anomaly", "cases"),
                        default="slices_without_anomaly",
                        help="slices_without_anomaly (default): tumour-free slices are the normal reference, "
                             "as ASC-Net on BraTS; cases: only cases with role normal (there are none)")






def find_cases(source: Path) -> tuple[str, list[Path]]:
    """The layout ('2019' or '2021') and the case folders."""
    if not source.is_dir():
        raise ConversionError(f"{source}: not a folder")
    for child in RELEASE_FOLDERS:
        if (source / child).is_dir():
            source = source / child
    grades = [source / g for g in ("HGG", "LGG") if (source / g).is_dir()]
    if grades:
        layout, cases = "2019", [d for g in grades for d in g.iterdir() if d.is_dir()]
    else:
        layout, cases = "2021", [d for d in source.iterdir() if d.is_dir() and d.name.lower().startswith("brats")]
    if not cases:
        raise ConversionError(f"{source}: neither HGG/ LGG/ folders of case folders (BraTS 2019) "
                              f"nor BraTS2021_*/ case folders (BraTS 2021)")
    return layout, sorted(cases, key=lambda d: d.name)


def release_name(case_dirs: list[Path]) -> str:
    """BraTS2019 from BraTS19_..., BraTS2020 from BraTS20_Training_..., BraTS2021 from BraTS2021_..."""
    m = re.match(r"brats(?:20)?(\d\d)", case_dirs[0].name, re.IGNORECASE)
    return f"BraTS20{m.group(1)}" if m else "BraTS"


def case_file(case_dir: Path, suffix: str) -> Path:
    """<case>_<suffix>.nii.gz, or .nii; the .nii.gz path when neither exists (for the error message)."""
    gz = case_dir / f"{case_dir.name}_{suffix}.nii.gz"
    plain = gz.with_name(gz.name[:-3])
    return plain if plain.is_file() and not gz.is_file() else gz


def convert(source, dataset_id: int, name: str | None = None, *, raw_folder=None, overwrite: bool = False,
            modalities="flair,t1,t1ce,t2", normal_reference: str = "slices_without_anomaly") -> Path:
    source = Path(source)
    chosen = parse_modalities(modalities, MODALITIES)
    layout, case_dirs = find_cases(source)
    files = {d: ([case_file(d, m) for m in chosen], case_file(d, "seg")) for d in case_dirs}
    missing = [str(p) for images, seg in files.values() for p in [*images, seg] if not p.is_file()]
    if missing:
        raise ConversionError(f"missing files: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    with RawDatasetWriter(
            dataset_id, name or release_name(case_dirs), modality="MRI",
            channel_names={str(i): MODALITIES[m] for i, m in enumerate(chosen)}, file_ending=".nii.gz",
            description=f"BraTS {layout}-layout training cases (glioma patients); mask: seg > 0 (whole tumour); "
                        "ROI: brain = nonzero in any channel",
            reference="Menze et al., IEEE TMI 2015; Bakas et al., Sci. Data 2017; Bakas et al., arXiv:1811.02629",
            licence="see the BraTS data usage agreement", roi_name="brain", normal_reference=normal_reference,
            conversion={"format": FORMAT, "source": str(source.resolve()), "layout": layout,
                        "options": {"modalities": chosen, "normal_reference": normal_reference}},
            raw_folder=raw_folder, overwrite=overwrite) as writer:
        for case_dir, (images, seg_path) in progress(files.items(), desc="converting BraTS", unit="case"):
            channels = [read_volume(p) for p in images]
            seg = read_volume(seg_path)
            shapes = {c.GetSize() for c in channels} | {seg.GetSize()}
            if len(shapes) > 1:
                raise ConversionError(f"{case_dir}: channels and seg differ in size {sorted(shapes)}")
            brain = np.zeros(sitk.GetArrayViewFromImage(seg).shape, dtype=bool)
            for c in channels:
                brain |= sitk.GetArrayViewFromImage(c) != 0
            writer.add_case(case_dir.name, images, role="unlabeled", mask=sitk.GetArrayFromImage(seg) > 0, roi=brain,
                            reference_image=channels[0], patient=case_dir.name)
    return writer.target
