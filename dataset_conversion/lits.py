"""The LiTS (MICCAI 2017 Liver Tumor Segmentation) training set: 131 abdominal CTs

    volume-<n>.nii  segmentation-<n>.nii     labels 0 background, 1 liver, 2 tumour

either flat in the -i folder or in its sub-folders as released ("Training Batch 1/",
"Training Batch 2/"); .nii.gz files are accepted too. Output is .nii.gz, intensities unchanged (HU).

Protocol choices:
- cases: LiTS_<n:03d>, each its own patient.
- anomaly mask: label 2 only (the tumours).
- ROI 'liver': label >= 1, the liver including its tumours, as ASC-Net crops to the liver
  (paper 001, sec. 4.2) and paper 004 extracts the liver ROI from the organ annotation.
- roles: every scan is of a patient with liver lesions: 'unlabeled'.
- normal reference: slices_without_anomaly (default), ASC-Net's LiTS protocol: the liver slices
  without lesions form the reference distribution; 'cases' leaves none here (pair with a healthy
  data set such as BTCV, as paper 004 does).
- no test split: the LiTS test set has no public labels; autouad makes patient-wise folds.
"""
from __future__ import annotations

import re
from pathlib import Path

import SimpleITK as sitk

from autouad.dataset.raw_dataset import RawDatasetWriter
from autouad.utils.progress import progress
from dataset_conversion.common import read_volume
from dataset_conversion.convert import ConversionError

FORMAT = "lits"
HELP = "LiTS training set: volume-<n>.nii and segmentation-<n>.nii, flat or in 'Training Batch 1/2' folders"
LIVER, TUMOUR = 1, 2


def add_arguments(parser) -> None:
    parser.add_argument("--normal-reference", choices=("slices_without_anomaly", "cases"),
                        default="slices_without_anomaly",
                        help="slices_without_anomaly (default): lesion-free liver slices are the normal reference, "
                             "as ASC-Net on LiTS; cases: only cases with role normal (there are none)")




def find_files(source: Path, kind: str) -> dict[int, Path]:
    """{n: path} of <kind>-<n>.nii[.gz] in source and its direct sub-folders."""
    found: dict[int, Path] = {}
    for folder in [source, *sorted(d for d in source.iterdir() if d.is_dir())]:
        for p in sorted(folder.iterdir()):
            m = re.fullmatch(rf"{kind}-(\d+)\.nii(\.gz)?", p.name)
            if m and p.is_file():
                if int(m.group(1)) in found:
                    raise ConversionError(f"{p}: {kind} {int(m.group(1))} found twice (also {found[int(m.group(1))]})")
                found[int(m.group(1))] = p
    return found


def find_pairs(source: Path) -> list[tuple[int, Path, Path]]:
    if not source.is_dir():
        raise ConversionError(f"{source}: not a folder")
    volumes, segmentations = find_files(source, "volume"), find_files(source, "segmentation")
    if not volumes:
        raise ConversionError(f"{source}: no volume-<n>.nii files, neither here nor in its sub-folders")
    missing = [str(volumes[n].with_name(f"segmentation-{n}.nii")) for n in sorted(volumes) if n not in segmentations]
    missing += [str(segmentations[n].with_name(f"volume-{n}.nii")) for n in sorted(segmentations) if n not in volumes]
    if missing:
        raise ConversionError(f"missing files: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    return [(n, volumes[n], segmentations[n]) for n in sorted(volumes)]


def convert(source, dataset_id: int, name: str | None = None, *, raw_folder=None, overwrite: bool = False,
            normal_reference: str = "slices_without_anomaly") -> Path:
    source = Path(source)
    pairs = find_pairs(source)
    with RawDatasetWriter(
            dataset_id, name or "LiTS", modality="CT", channel_names={"0": "CT"}, file_ending=".nii.gz",
            description="LiTS training CTs; mask: tumour (label 2); ROI: liver including tumour (label >= 1)",
            reference="Bilic et al., The Liver Tumor Segmentation Benchmark (LiTS), MedIA 2023",
            licence="see the LiTS challenge terms of use", roi_name="liver", normal_reference=normal_reference,
            conversion={"format": FORMAT, "source": str(source.resolve()),
                        "options": {"normal_reference": normal_reference}},
            raw_folder=raw_folder, overwrite=overwrite) as writer:
        for n, volume_path, seg_path in progress(pairs, desc="converting LiTS", unit="scan"):
            volume, seg = read_volume(volume_path), read_volume(seg_path)
            if volume.GetSize() != seg.GetSize():
                raise ConversionError(f"{seg_path}: size {seg.GetSize()} differs from the volume's {volume.GetSize()}")
            labels = sitk.GetArrayFromImage(seg)
            # the segmentation's header sometimes differs from the volume's by rounding: use the volume's
            writer.add_case(f"LiTS_{n:03d}", [volume], role="unlabeled", mask=labels == TUMOUR,
                            roi=labels >= LIVER, reference_image=volume)
    return writer.target
