"""Chest X-rays in class folders, as Kermany et al. (2018) ship them:
{train,test[,val]}/{NORMAL,PNEUMONIA,...}/*.jpeg.

The training NORMAL folder becomes the normal role (HealthyGAN's set B); every other training class
becomes the unlabeled role (the mixed set A; its class is kept as an image-level label for
evaluation only, never for training). test/ becomes the test split with its image labels.
val/ (16 images in the original release; also valid/ or validation/) joins the training cases; any
other folder is reported, never skipped silently.
Images are stored as 8-bit grey PNG, losslessly from the decoded source.
"""
from __future__ import annotations

import re
from pathlib import Path


from autouad.dataset.raw_dataset import RawDatasetWriter
from autouad.utils.images import IMAGE_2D_ENDINGS
from autouad.utils.progress import progress
from dataset_conversion.common import read_grey_uint8
from dataset_conversion.convert import ConversionError

FORMAT = "chestxray-folders"
HELP = "X-rays in class folders: {train,test[,val]}/{NORMAL,<other classes>}/*.jpeg (Kermany et al.)"
# validation folders of such releases, whose images join the training cases
VALIDATION_FOLDERS = ("val", "valid", "validation")


def add_arguments(parser) -> None:
    parser.add_argument("--normal-class", default="NORMAL", help="the folder name of the normal class (default NORMAL)")
    parser.add_argument("--patient-pattern", default=None,
                        help="a regular expression whose first group is the patient in a file name (without its "
                             "ending); default: Kermany's and ChestX-ray14's naming")


# file-name patterns whose first group is the patient: Kermany's person123_bacteria_456 and
# (NORMAL2-)IM-0115-0001, ChestX-ray14's 00000001_000 (patient 00000001, follow-up 000)
PATIENT_PATTERNS = (r"^(person\d+)_", r"^(.*IM-\d+)-\d+$", r"^(\d+)_\d+$")


def patient_of(stem: str, pattern: str | None = None) -> str:
    """The patient a file name belongs to, by ``pattern`` or the known naming; else the image is its
    own patient. Follow-ups of one patient must land in one fold."""
    for candidate in ([pattern] if pattern else PATIENT_PATTERNS):
        m = re.match(candidate, stem)
        if m and m.groups():
            return m.group(1)
    return stem


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_2D_ENDINGS)


def convert(source, dataset_id: int, name: str | None = None, *, raw_folder=None, overwrite: bool = False,
            normal_class: str = "NORMAL", patient_pattern: str | None = None) -> Path:
    source = Path(source)
    if patient_pattern is not None:
        try:
            if re.compile(patient_pattern).groups < 1:
                raise ConversionError(f"--patient-pattern {patient_pattern!r}: needs a group, e.g. '^(\\d+)_'")
        except re.error as e:
            raise ConversionError(f"--patient-pattern {patient_pattern!r}: not a regular expression ({e})") from None
    if not (source / "train").is_dir():
        raise ConversionError(f"{source}: no train/ folder with class sub-folders")
    if not (source / "train" / normal_class).is_dir():
        raise ConversionError(f"{source / 'train'}: no {normal_class}/ folder for the normal class")
    known = {"train", "test", *VALIDATION_FOLDERS}
    unknown = sorted(d.name for d in source.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name not in known)
    if unknown:
        # an image left behind silently is an image lost: name what this converter does not read
        raise ConversionError(f"{source / unknown[0]}: unknown folder (this format reads train/, test/ and "
                              f"{'/, '.join(VALIDATION_FOLDERS)}/); move or rename it")
    splits = ["train", *VALIDATION_FOLDERS, "test"]
    classes = sorted({d.name for split in splits if (source / split).is_dir()
                      for d in (source / split).iterdir() if d.is_dir()})
    abnormal = [c for c in classes if c != normal_class]
    items = []  # (split, class, path)
    for split in splits:
        for cls in classes:
            folder = source / split / cls
            if folder.is_dir():
                items += [("test" if split == "test" else "train", cls, p) for p in _images(folder)]
    if not any(s == "train" for s, _, _ in items):
        raise ConversionError(f"{source}: no images under train/")
    with RawDatasetWriter(
            dataset_id, name or "ChestXray", modality="X-ray", channel_names={"0": "X-ray"}, file_ending=".png",
            description=f"chest X-rays from class folders; normal class {normal_class}, other classes {abnormal}",
            image_label_names={"0": normal_class, "1": "abnormal (" + ", ".join(abnormal) + ")"},
            conversion={"format": FORMAT, "source": str(source.resolve()),
                        "options": {"normal_class": normal_class, "patient_pattern": patient_pattern}},
            raw_folder=raw_folder, overwrite=overwrite) as writer:
        seen: set[str] = set()
        for split, cls, path in progress(items, desc="converting X-rays", unit="image"):
            case_id = re.sub(r"[^A-Za-z0-9_\-]", "_", f"{cls}_{path.stem}")
            if case_id in seen:
                raise ConversionError(f"{path}: two images map to case id {case_id}")
            seen.add(case_id)
            grey = read_grey_uint8(path)
            is_normal = cls == normal_class
            writer.add_case(case_id, [grey], role=("normal" if is_normal else "unlabeled") if split == "train" else None,
                            split=split, label=0 if is_normal else 1, patient=patient_of(path.stem, patient_pattern))
    return writer.target
