"""The BraTS example cases shipped with DeepMedic: {train,validation,test}/<case>/ holding
Flair_subtrMeanDivStd.nii.gz, T1c_subtrMeanDivStd.nii.gz (z-scored inside the brain),
OTMultiClass.nii.gz (tumour labels 0-4) and brainmask.nii.gz.

Every case is a glioma patient, so every case is 'unlabeled'; the normal reference follows
ASC-Net's BraTS protocol (paper 001, sec. 4.2): the tumour-free brain slices of the patients.
DeepMedic's own train/validation/test folders are not a patient-wise protocol of the papers, so all
cases become training cases (autouad makes patient-wise folds) unless --keep-test-split is given.
"""
from __future__ import annotations

import re
from pathlib import Path

import SimpleITK as sitk

from autouad.dataset.raw_dataset import RawDatasetWriter
from dataset_conversion.convert import ConversionError

FORMAT = "brats-deepmedic"
HELP = "BraTS cases in the DeepMedic example layout ({train,validation,test}/<case>/Flair_..., T1c_..., OTMultiClass, brainmask)"
CHANNEL_FILES = {"FLAIR": "Flair_subtrMeanDivStd.nii.gz", "T1c": "T1c_subtrMeanDivStd.nii.gz"}
MASK_FILE, ROI_FILE = "OTMultiClass.nii.gz", "brainmask.nii.gz"
SPLIT_FOLDERS = ("train", "validation", "test")


def add_arguments(parser) -> None:
    parser.add_argument("--normal-reference", choices=("slices_without_anomaly", "cases"),
                        default="slices_without_anomaly",
                        help="slices_without_anomaly (default): tumour-free slices are the normal reference, "
                             "as ASC-Net on BraTS; cases: only cases with role normal (there are none here)")
    parser.add_argument("--keep-test-split", action="store_true",
                        help="put the cases of the source's test/ folder into the test split")


def patient_of(case_id: str) -> str:
    """brats_2013_pat0001_1 -> brats_2013_pat0001 (the trailing _N numbers a scan of that patient)."""
    m = re.match(r"^(.*pat\d+)(_\d+)?$", case_id)
    return m.group(1) if m else case_id


def find_cases(source: Path) -> list[tuple[str, Path]]:
    if not source.is_dir():
        raise ConversionError(f"{source}: not a folder")
    found = []
    for split in SPLIT_FOLDERS:
        for case_dir in sorted((source / split).glob("*")) if (source / split).is_dir() else []:
            if case_dir.is_dir():
                found.append((split, case_dir))
    if not found:
        raise ConversionError(f"{source}: no case folders under {', '.join(s + '/' for s in SPLIT_FOLDERS)}")
    missing = [str(d / f) for _, d in found for f in [*CHANNEL_FILES.values(), MASK_FILE, ROI_FILE]
               if not (d / f).is_file()]
    if missing:
        raise ConversionError(f"missing files: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    return sorted(found, key=lambda item: item[1].name)


def convert(source, dataset_id: int, name: str | None = None, *, raw_folder=None, overwrite: bool = False,
            normal_reference: str = "slices_without_anomaly", keep_test_split: bool = False) -> Path:
    source = Path(source)
    cases = find_cases(source)
    with RawDatasetWriter(
            dataset_id, name or "BraTS2015DeepMedic", modality="MRI",
            channel_names={str(i): c for i, c in enumerate(CHANNEL_FILES)}, file_ending=".nii.gz",
            description="BraTS 2013/2015 high-grade glioma cases from the DeepMedic examples; "
                        "masks: any OTMultiClass label > 0; ROI: brainmask",
            reference="Menze et al., IEEE TMI 2015; Kamnitsas et al., MedIA 2017 (DeepMedic)",
            licence="CC BY-NC-SA 3.0", roi_name="brain", normal_reference=normal_reference,
            conversion={"format": FORMAT, "source": str(source.resolve()),
                        "options": {"normal_reference": normal_reference, "keep_test_split": keep_test_split}},
            raw_folder=raw_folder, overwrite=overwrite) as writer:
        for split, case_dir in cases:
            case_id = case_dir.name
            target_split = "test" if (keep_test_split and split == "test") else "train"
            writer.add_case(
                case_id, [case_dir / f for f in CHANNEL_FILES.values()],
                role="unlabeled" if target_split == "train" else None, split=target_split,
                mask=sitk.ReadImage(str(case_dir / MASK_FILE)), roi=sitk.ReadImage(str(case_dir / ROI_FILE)),
                patient=patient_of(case_id))
    return writer.target
