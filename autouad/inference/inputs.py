"""Finding the cases in a folder of images to predict.

Files follow the raw dataset's naming: ``<case>_0000<ending>``, ``<case>_0001<ending>``, ... one
file per channel in the order of dataset.json's ``channel_names``. For a plan that reads a single
channel, a file without the suffix is a case of its own (``person1_virus_6.jpeg``), so a folder of
X-rays or single-sequence scans can be predicted as it is. Optional ROI masks (brain, liver) lie in
another folder as ``<case><ending>``.

Problems are collected per case, each one line naming the file; a case with a problem is skipped,
the others are predicted.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from autouad.dataset.raw_dataset import CaseFiles
from autouad.utils.images import SUPPORTED_ENDINGS, file_ending

CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass
class InputCase:
    case_id: str
    images: list[Path]
    roi: Path | None
    ending: str

    def as_case_files(self) -> CaseFiles:
        return CaseFiles(self.case_id, "test", self.images, None, self.roi, role=None, label=None,
                         patient=self.case_id)


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and file_ending(p) is not None)


def find_input_cases(folder: Path, channel_names: dict, roi_folder: Path | None = None
                     ) -> tuple[list[InputCase], dict[str, str]]:
    """(cases ready to predict, {case or file: problem}) for the images in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: input folder not found")
    num_channels = len(channel_names)
    expected = ", ".join(f"{int(k):04d} {v}" for k, v in sorted(channel_names.items(), key=lambda kv: int(kv[0])))
    by_case: dict[str, dict[int, Path]] = defaultdict(dict)
    problems: dict[str, str] = {}
    for path in image_files(folder):
        ending = file_ending(path)
        stem = path.name[: -len(ending)]
        match = CHANNEL_SUFFIX.match(stem)
        if match:
            by_case[match["case"]][int(match["channel"])] = path
        elif num_channels == 1:
            by_case[stem][0] = path
        else:
            problems[path.name] = (f"{path}: no channel suffix; the plan reads {num_channels} channels, named "
                                   f"<case>_0000{ending} ... ({expected})")
    cases = []
    for case_id, channels in sorted(by_case.items()):
        found = sorted(channels)
        if found != list(range(num_channels)):
            names = ", ".join(f"{c:04d}" for c in found)
            problems[case_id] = (f"{channels[found[0]]}: case {case_id} has channel file(s) {names}, but the plan "
                                 f"expects {num_channels}: {expected}")
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
        cases.append(InputCase(case_id, images, roi, ending))
    return cases, problems
