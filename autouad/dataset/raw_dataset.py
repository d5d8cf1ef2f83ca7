"""The raw dataset format (docs/dataset_format.md): reading it and writing it.

    DatasetXXX_Name/
        dataset.json
        imagesTr/<case>_0000<ending> ...   one file per channel
        masksTr/<case><ending>             optional anomaly masks, for evaluation only
        roisTr/<case><ending>              optional region-of-interest masks (brain, liver, ...)
        imagesTs/ masksTs/ roisTs/         the optional test split, same layout
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import SimpleITK as sitk

from autouad import __version__
from autouad.paths import dataset_folder_name, raw_root
from autouad.utils.files import load_json, save_json
from autouad.utils.images import SUPPORTED_ENDINGS, ImageReadError, file_ending, read_sitk, verify_file

MODALITIES = ("MRI", "CT", "X-ray")
ROLES = ("normal", "unlabeled")
# How the normal reference distribution is defined:
#   cases                   the training cases whose role is "normal"
#   slices_without_anomaly  additionally, every slice of a masked training case without anomaly
#                           voxels (ASC-Net's BraTS / LiTS protocol: tumour-free slices of patients)
NORMAL_REFERENCE_PROTOCOLS = ("cases", "slices_without_anomaly")
REQUIRED_KEYS = ("name", "modality", "channel_names", "file_ending", "training")
OPTIONAL_KEYS = ("description", "reference", "licence", "roi_name", "normal_reference", "test",
                 "image_label_names", "conversion")
CASE_KEYS_TRAINING = ("role", "label", "patient")
CASE_KEYS_TEST = ("label", "patient")
SPLIT_FOLDERS = {"train": ("imagesTr", "masksTr", "roisTr"), "test": ("imagesTs", "masksTs", "roisTs")}


@dataclass
class CaseFiles:
    case_id: str
    split: str  # "train" or "test"
    images: list[Path]
    mask: Path | None
    roi: Path | None
    role: str | None  # None for test cases
    label: int | None
    patient: str

    @property
    def all_files(self) -> list[Path]:
        return self.images + [p for p in (self.mask, self.roi) if p is not None]


@dataclass
class RawDataset:
    folder: Path
    meta: dict
    cases: list[CaseFiles] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def num_channels(self) -> int:
        return len(self.meta["channel_names"])

    @property
    def normal_reference(self) -> str:
        return self.meta.get("normal_reference", "cases")

    def training_cases(self) -> list[CaseFiles]:
        return [c for c in self.cases if c.split == "train"]

    def test_cases(self) -> list[CaseFiles]:
        return [c for c in self.cases if c.split == "test"]


def case_files(folder: Path, meta: dict, case_id: str, split: str) -> tuple[list[Path], Path | None, Path | None]:
    images_dir, masks_dir, rois_dir = (folder / d for d in SPLIT_FOLDERS[split])
    ending = meta["file_ending"]
    images = [images_dir / f"{case_id}_{int(c):04d}{ending}" for c in sorted(meta["channel_names"], key=int)]
    mask = masks_dir / f"{case_id}{ending}"
    roi = rois_dir / f"{case_id}{ending}"
    return images, (mask if mask.exists() else None), (roi if roi.exists() else None)


def load_raw_dataset(folder: str | Path) -> RawDataset:
    """Read dataset.json and list every case's files. Structural problems raise ValueError;
    the thorough checks (readability, geometry, values) live in autouad.dataset.validation."""
    folder = Path(folder)
    meta = load_json(folder / "dataset.json")
    ds = RawDataset(folder, meta)
    for split, key in (("train", "training"), ("test", "test")):
        for case_id, info in (meta.get(key) or {}).items():
            images, mask, roi = case_files(folder, meta, case_id, split)
            ds.cases.append(CaseFiles(case_id, split, images, mask, roi,
                                      role=info.get("role") if split == "train" else None,
                                      label=info.get("label"), patient=str(info.get("patient", case_id))))
    return ds


ImageLike = "sitk.Image | np.ndarray | str | Path"


class RawDatasetWriter:
    """Builds a raw dataset in a hidden temporary folder and moves it into place only when the
    converter finished, so that a failed or interrupted conversion leaves nothing to trust.

        with RawDatasetWriter(3, "Demo", modality="MRI", channel_names={"0": "FLAIR"},
                              file_ending=".nii.gz") as w:
            w.add_case("case_000", [flair_image], role="normal", mask=mask, roi=brain)
    """

    def __init__(self, dataset_id: int, name: str, *, modality: str, channel_names: dict,
                 file_ending: str = ".nii.gz", description: str = "", reference: str = "",
                 licence: str = "", roi_name: str | None = None, normal_reference: str = "cases",
                 image_label_names: dict | None = None, conversion: dict | None = None,
                 raw_folder: str | Path | None = None, overwrite: bool = False):
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        if normal_reference not in NORMAL_REFERENCE_PROTOCOLS:
            raise ValueError(f"normal_reference must be one of {NORMAL_REFERENCE_PROTOCOLS}")
        if file_ending not in SUPPORTED_ENDINGS:
            raise ValueError(f"file_ending must be one of {SUPPORTED_ENDINGS}")
        self.root = Path(raw_folder) if raw_folder is not None else raw_root()
        self.target = self.root / dataset_folder_name(dataset_id, name)
        self.overwrite = overwrite
        self.meta = {"name": name, "description": description, "reference": reference, "licence": licence,
                     "modality": modality, "channel_names": {str(k): v for k, v in channel_names.items()},
                     "file_ending": file_ending}
        if roi_name:
            self.meta["roi_name"] = roi_name
        self.meta["normal_reference"] = normal_reference
        if image_label_names:
            self.meta["image_label_names"] = {str(k): v for k, v in image_label_names.items()}
        self.meta["conversion"] = dict(conversion or {}, autouad_version=__version__)
        self.training: dict[str, dict] = {}
        self.test: dict[str, dict] = {}
        self.tmp: Path | None = None

    # -- context management: the dataset appears atomically --------------------------------
    def __enter__(self) -> "RawDatasetWriter":
        from autouad.paths import DATASET_FOLDER_RE

        self.root.mkdir(parents=True, exist_ok=True)
        dataset_id = int(DATASET_FOLDER_RE.match(self.target.name).group(1))
        clashes = [p for p in self.root.glob(f"Dataset{dataset_id:03d}_*") if p.is_dir() and p != self.target]
        if clashes:
            raise FileExistsError(f"dataset id {dataset_id} is already used by {clashes[0]}; choose another -d")
        if self.target.exists() and not self.overwrite:
            raise FileExistsError(f"{self.target} already exists; remove it or pass --overwrite")
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", suffix=".partial", dir=self.root))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._finish()
        finally:
            if self.tmp is not None and self.tmp.exists():
                shutil.rmtree(self.tmp, ignore_errors=True)

    def _finish(self) -> None:
        if not self.training:
            raise ValueError("the converter found no training cases")
        meta = dict(self.meta, training=self.training)
        if self.test:
            meta["test"] = self.test
        save_json(meta, self.tmp / "dataset.json")
        if self.target.exists():  # only reached with overwrite=True
            old = self.target.with_name(self.target.name + ".old")
            self.target.rename(old)
            self.tmp.rename(self.target)
            shutil.rmtree(old)
        else:
            self.tmp.rename(self.target)
        self.tmp = None

    # -- adding cases -------------------------------------------------------------------------
    def add_case(self, case_id: str, channels: Iterable, *, role: str | None = None, split: str = "train",
                 mask=None, roi=None, label: int | None = None, patient: str | None = None,
                 reference_image: sitk.Image | None = None) -> None:
        """Add one case. ``channels``, ``mask`` and ``roi`` are each a SimpleITK image, a numpy array
        (given ``reference_image``'s geometry) or a path to a file with this dataset's ending (copied).
        Masks are written as uint8 with 1 where the anomaly / region is."""
        assert self.tmp is not None, "use RawDatasetWriter as a context manager"
        if split not in SPLIT_FOLDERS:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if split == "train" and role not in ROLES:
            raise ValueError(f"case {case_id}: role must be one of {ROLES}, got {role!r}")
        if "/" in case_id or case_id.startswith("."):
            raise ValueError(f"case id {case_id!r} must be a plain file name")
        book = self.training if split == "train" else self.test
        if case_id in book:
            raise ValueError(f"case {case_id} added twice")
        channels = list(channels)
        if len(channels) != len(self.meta["channel_names"]):
            raise ValueError(f"case {case_id}: {len(channels)} channels given, "
                             f"dataset.json names {len(self.meta['channel_names'])}")
        images_dir, masks_dir, rois_dir = (self.tmp / d for d in SPLIT_FOLDERS[split])
        ending = self.meta["file_ending"]
        for c, channel in enumerate(channels):
            self._write(channel, images_dir / f"{case_id}_{c:04d}{ending}", reference_image, binary=False)
        if mask is not None:
            self._write(mask, masks_dir / f"{case_id}{ending}", reference_image, binary=True)
        if roi is not None:
            self._write(roi, rois_dir / f"{case_id}{ending}", reference_image, binary=True)
        entry: dict = {}
        if split == "train":
            entry["role"] = role
        if label is not None:
            entry["label"] = int(label)
        if patient is not None and patient != case_id:
            entry["patient"] = str(patient)
        book[case_id] = entry

    def _write(self, item, path: Path, reference_image, binary: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        ending = self.meta["file_ending"]
        if isinstance(item, (str, Path)):
            src = Path(item)
            damaged = verify_file(src)
            if damaged:  # a converter must not copy a file that every later stage would refuse
                raise ImageReadError(damaged[0])
            if not binary and file_ending(src) == ending:
                shutil.copyfile(src, path)
                return
            item = read_sitk(src)
        if isinstance(item, np.ndarray):
            array = item
            image = sitk.GetImageFromArray((array > 0).astype(np.uint8) if binary else array)
            if reference_image is not None:
                image.CopyInformation(reference_image)
        else:
            image = item
            if binary:
                binarised = sitk.Cast(sitk.GetImageFromArray(
                    (sitk.GetArrayViewFromImage(image) > 0).astype(np.uint8)), sitk.sitkUInt8)
                binarised.CopyInformation(image)
                image = binarised
        sitk.WriteImage(image, str(path), useCompression=ending in (".nii.gz", ".nrrd", ".mha"))
