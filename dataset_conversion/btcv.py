"""BTCV "Multi-Atlas Labeling Beyond the Cranial Vault" abdomen CTs (Synapse), the healthy training
set of the liver paper (paper 004, sec. 4):

    RawData/Training/img/img0001.nii.gz     RawData/Training/label/label0001.nii.gz

-i names RawData/, its parent, RawData/Training/, or any folder that directly holds img/ and label/.
RawData/Testing/ has no labels, hence no ROI, and is not used.

Protocol choices:
- roles: paper 004 treats BTCV as anomaly-free (no liver tumours), so every case is 'normal', without
  anomaly masks; normal_reference is 'cases'. Test on real tumours with a LiTS dataset.
- cases: BTCV_<nnnn> from img<nnnn>, each its own patient.
- ROI: the organ label --roi-label (default 6, the liver in BTCV's 13-organ labelling: 1 spleen,
  2 right kidney, 3 left kidney, 4 gallbladder, 5 oesophagus, 6 liver, 7 stomach, 8 aorta, 9 IVC,
  10 portal and splenic veins, 11 pancreas, 12 right and 13 left adrenal gland), named --roi-name;
  paper 004 extracts the liver ROI from these organ annotations. A case without that label is
  left out (and named in dataset.json's conversion record), since it has no ROI to train on.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import SimpleITK as sitk

from autouad.dataset.raw_dataset import RawDatasetWriter
from autouad.utils.progress import progress
from dataset_conversion.common import read_volume
from dataset_conversion.convert import ConversionError

FORMAT = "btcv"
HELP = "BTCV abdomen CTs: RawData/Training/{img/img0001.nii.gz,label/label0001.nii.gz}; all cases normal, ROI one organ"


def add_arguments(parser) -> None:
    parser.add_argument("--roi-label", type=int, default=6, help="the organ label that is the ROI (default 6, liver)")
    parser.add_argument("--roi-name", default="liver", help="the ROI's name in dataset.json (default liver)")




def find_training_folder(source: Path) -> Path:
    if not source.is_dir():
        raise ConversionError(f"{source}: not a folder")
    for folder in (source, source / "Training", source / "RawData" / "Training"):
        if (folder / "img").is_dir() and (folder / "label").is_dir():
            return folder
    raise ConversionError(f"{source}: no img/ and label/ folders, neither here nor under Training/ or RawData/Training/")


def find_pairs(folder: Path) -> list[tuple[str, Path, Path]]:
    pairs = []
    for image in sorted((folder / "img").iterdir()):
        m = re.fullmatch(r"img(\d+)(\.nii(?:\.gz)?)", image.name)
        if m:
            label = folder / "label" / f"label{m.group(1)}{m.group(2)}"
            if not label.is_file():
                raise ConversionError(f"{label}: label file missing for {image}")
            pairs.append((f"BTCV_{m.group(1)}", image, label))
    if not pairs:
        raise ConversionError(f"{folder / 'img'}: no img<nnnn>.nii.gz files")
    return pairs


def convert(source, dataset_id: int, name: str | None = None, *, raw_folder=None, overwrite: bool = False,
            roi_label: int = 6, roi_name: str = "liver") -> Path:
    source = Path(source)
    if roi_label < 1:
        raise ValueError(f"--roi-label must be an organ label >= 1, got {roi_label}")
    pairs = find_pairs(find_training_folder(source))
    skipped: list[str] = []
    with RawDatasetWriter(
            dataset_id, name or "BTCV", modality="CT", channel_names={"0": "CT"}, file_ending=".nii.gz",
            description=f"BTCV abdomen training CTs, all normal (no anomaly masks); ROI: organ label {roi_label} "
                        f"({roi_name})",
            reference="Landman et al., MICCAI 2015 Multi-Atlas Labeling Beyond the Cranial Vault workshop",
            licence="see the Synapse BTCV terms of use", roi_name=roi_name, normal_reference="cases",
            conversion={"format": FORMAT, "source": str(source.resolve()),
                        "options": {"roi_label": roi_label, "roi_name": roi_name}},
            raw_folder=raw_folder, overwrite=overwrite) as writer:
        for case_id, image_path, label_path in progress(pairs, desc="converting BTCV", unit="scan"):
            image, labels = read_volume(image_path), read_volume(label_path)
            if image.GetSize() != labels.GetSize():
                raise ConversionError(f"{label_path}: size {labels.GetSize()} differs from the image's {image.GetSize()}")
            roi = sitk.GetArrayFromImage(labels) == roi_label
            if not roi.any():
                print(f"btcv: {label_path} has no label {roi_label}; {case_id} left out", file=sys.stderr)
                skipped.append(case_id)
                continue
            writer.add_case(case_id, [image_path], role="normal", roi=roi, reference_image=image)
        writer.meta["conversion"]["skipped_without_roi"] = skipped
    return writer.target
