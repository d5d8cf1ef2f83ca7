"""Finding the cases in a folder of images to predict.

Files follow the raw dataset's naming: ``<case>_0000<ending>``, ``<case>_0001<ending>``, ... one
file per channel in the order of dataset.json's ``channel_names``. A trailing ``_dddd`` is read as a
channel only when it is one of the plan's channel indices (``_0000`` .. ``_{N-1}``): X-ray sets name
files like ``person1608_virus_2786.jpeg``, and that is case ``person1608_virus_2786``, not channel
2786. For a plan that reads a single channel a plain file name is a case of its own. A case needs
the channels its model reads; channels the model does not read may be absent.

Where a name can be read two ways (``scan.png`` and ``scan.jpg``, or ``a_0000.nii.gz`` beside
``a.nii.gz`` for a one-channel plan), every file is still predicted: the later one gets a case name
that keeps its ending or suffix, and ``notes`` says how it was read. Optional ROI masks (brain,
liver) lie in another folder as ``<case><ending>``.

A subfolder holding a DICOM series is a case of its own (hospital data arrives as series), named by
its folder (autouad.utils.dicom); it is read with SimpleITK's series reader and its outputs are
NIfTI files in the series' geometry.

Problems are collected per case, each one line naming the file; a case with a problem is skipped,
the others are predicted.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from autouad.dataset.raw_dataset import CaseFiles
from autouad.utils.images import SUPPORTED_ENDINGS, file_ending

CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass
class InputCase:
    case_id: str
    images: list[Path]                 # the files present, in channel order
    roi: Path | None
    ending: str
    channels: list[int] = field(default_factory=list)   # the channel index of each file (empty: 0..n-1)
    dicom: object | None = None        # a DICOM series (autouad.utils.dicom.DicomSeries): one channel

    def as_case_files(self) -> CaseFiles:
        return CaseFiles(self.case_id, "test", self.images, None, self.roi, role=None, label=None,
                         patient=self.case_id)

    @property
    def channel_indices(self) -> list[int]:
        return self.channels or list(range(len(self.images)))


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and file_ending(p) is not None)


def find_input_cases(folder: Path, channel_names: dict, roi_folder: Path | None = None,
                     required: list[int] | None = None, notes: dict | None = None
                     ) -> tuple[list[InputCase], dict[str, str]]:
    """(cases ready to predict, {case or file: problem}) for the images in ``folder``. ``required``
    are the channels the model reads (default: all); ``notes`` collects how ambiguous names were read."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: input folder not found")
    num_channels = len(channel_names)
    required = sorted(range(num_channels) if required is None else required)
    notes = {} if notes is None else notes
    expected = ", ".join(f"{int(k):04d} {v}" for k, v in sorted(channel_names.items(), key=lambda kv: int(kv[0])))
    by_case: dict[str, dict[int, Path]] = defaultdict(dict)
    problems: dict[str, str] = {}
    for path in image_files(folder):
        ending = file_ending(path)
        stem = path.name[: -len(ending)]
        match = CHANNEL_SUFFIX.match(stem)
        if match and int(match["channel"]) < num_channels:
            case, channel = match["case"], int(match["channel"])
        elif num_channels == 1:
            case, channel = stem, 0
        else:
            problems[path.name] = (f"{path}: no channel suffix; the plan reads {num_channels} channels, named "
                                   f"<case>_0000{ending} ... ({expected})")
            continue
        if channel in by_case[case]:
            # the name is taken: keep this file as a case of its own, under a name that tells them apart
            other = by_case[case][channel]
            alternative = stem if stem != case else f"{stem}_{ending.lstrip('.').replace('.', '_')}"
            while alternative in by_case:
                alternative += "_"
            notes[path.name] = (f"{path} read as case {alternative}: {other.name} already is case {case}")
            case = alternative
        by_case[case][channel] = path
    cases = []
    dicom_cases = dicom_input_cases(folder, num_channels, required, roi_folder, set(by_case), problems)
    for case_id, channels in sorted(by_case.items()):
        found = sorted(channels)
        missing = [c for c in required if c not in channels]
        if missing:
            names = ", ".join(f"{c:04d}" for c in found)
            problems[case_id] = (f"{channels[found[0]]}: case {case_id} has channel file(s) {names}, but the model "
                                 f"reads {', '.join(f'{c:04d}' for c in required)} ({expected})")
            continue
        images = [channels[c] for c in found]
        endings = {file_ending(p) for p in images}
        if len(endings) > 1:
            problems[case_id] = f"{images[0]}: case {case_id} mixes file types {sorted(endings)}"
            continue
        ending = endings.pop()
        roi = None
        if roi_folder is not None:
            candidates = [Path(roi_folder) / f"{case_id}{e}" for e in SUPPORTED_ENDINGS]
            roi = next((p for p in candidates if p.is_file()), None)
            if roi is None:
                problems[case_id] = f"{Path(roi_folder) / (case_id + ending)}: no ROI mask for case {case_id}"
                continue
        cases.append(InputCase(case_id, images, roi, ending, found if found != list(range(num_channels)) else []))
    return sorted(cases + dicom_cases, key=lambda c: c.case_id), problems


def dicom_input_cases(folder: Path, num_channels: int, required: list[int], roi_folder: Path | None,
                      taken: set[str], problems: dict[str, str]) -> list[InputCase]:
    """A case per DICOM series in the subfolders of ``folder``: the one channel its model reads."""
    from autouad.utils.dicom import find_dicom_series, is_dicom_folder
    if not any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir()):
        return []
    subfolders = [p for p in sorted(folder.iterdir()) if p.is_dir() and is_dicom_folder(p, recursive=True)]
    if not subfolders:
        return []
    cases = []
    for series in find_dicom_series(folder):
        name = series.name
        while name in taken:
            name += "_dicom"
        taken.add(name)
        if len(required) != 1:
            problems[name] = (f"{series.folder}: a DICOM series is one channel, the model reads {len(required)}; "
                              f"give the channels as NIfTI files <case>_0000.nii.gz ...")
            continue
        roi = None
        if roi_folder is not None:
            roi = next((Path(roi_folder) / f"{name}{e}" for e in SUPPORTED_ENDINGS
                        if (Path(roi_folder) / f"{name}{e}").is_file()), None)
            if roi is None:
                problems[name] = f"{Path(roi_folder) / (name + '.nii.gz')}: no ROI mask for DICOM series {name}"
                continue
        cases.append(InputCase(name, [series.folder], roi, ".nii.gz",
                               channels=required if num_channels > 1 else [], dicom=series))
    return cases
