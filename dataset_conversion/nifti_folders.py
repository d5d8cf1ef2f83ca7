"""Any data set as image files in folders, named by case:

    images/<case>.nii.gz                       one channel, or
    images/<case>_0000.nii.gz, <case>_0001...  one file per channel (all cases alike)
    masks/<case>.nii.gz                        optional anomaly masks (> 0 is anomaly)
    rois/<case>.nii.gz                         optional region-of-interest masks (> 0 is inside)
    normal.txt                                 optional: the case ids of known-normal cases, one a line

.nii, .nii.gz, .nrrd, .mha and .mhd inputs are read; the output is .nii.gz.

Protocol choices (roles and splits are only what is given; nothing is inferred from the masks):
- roles: the cases listed in normal.txt, or matched by --normal-cases, are 'normal'; every other
  training case is 'unlabeled'. --normal-cases is a shell glob on case ids ('IXI*'), or a regular
  expression (full match) when written re:PATTERN. Given both, a case named by either is normal.
- channels: file names all ending in _NNNN with a _0000 in every case are one file per channel;
  a single-channel data set whose case ids end in _NNNN needs --channel-names with one name.
- test split: the case ids listed in --test-cases FILE (one a line) go to the test split.
- modality (--modality, required), channel names (--channel-names, default channel_0, ...),
  --roi-name and --normal-reference are written as given. patient = case id.
"""
from __future__ import annotations

import fnmatch
import re
from collections import defaultdict
from pathlib import Path


from autouad.dataset.raw_dataset import MODALITIES, NORMAL_REFERENCE_PROTOCOLS, RawDatasetWriter
from autouad.utils.images import VOLUME_ENDINGS, file_ending
from autouad.utils.progress import progress
from dataset_conversion.convert import ConversionError

FORMAT = "nifti-folders"
HELP = "images/<case>[_0000].nii.gz, optional masks/<case>, rois/<case>, normal.txt: any volume data set"


def add_arguments(parser) -> None:
    parser.add_argument("--modality", required=True, choices=MODALITIES, help="the imaging modality")
    parser.add_argument("--channel-names", default=None,
                        help="comma-separated channel names in file order, e.g. FLAIR,T1 (default channel_0, ...)")
    parser.add_argument("--normal-cases", default=None,
                        help="case ids with role normal: a glob ('IXI*') or re:REGEX (besides normal.txt)")
    parser.add_argument("--test-cases", type=Path, default=None, help="a file listing the case ids of the test split")
    parser.add_argument("--roi-name", default=None, help="what rois/ holds, e.g. brain or liver")
    parser.add_argument("--normal-reference", choices=NORMAL_REFERENCE_PROTOCOLS, default="cases",
                        help="cases (default): the normal cases; slices_without_anomaly: also the anomaly-free "
                             "slices of masked training cases")


def volume_files(folder: Path) -> dict[str, Path]:
    """{name without ending: path} of the volume files in folder."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        ending = file_ending(p)
        if p.is_file() and ending in VOLUME_ENDINGS:
            stem = p.name[:-len(ending)]
            if stem in found:
                raise ConversionError(f"{p}: {stem} exists with two endings (also {found[stem].name})")
            found[stem] = p
    return found


def group_channels(images: dict[str, Path], images_dir: Path, num_names: int | None) -> dict[str, list[Path]]:
    """{case: [channel files]}. Names all ending in _NNNN, with channel _0000 in every case, are the
    one-file-per-channel layout; otherwise (or with one --channel-names name and several files per
    case) every file is a single-channel case."""
    grouped: dict[str, dict[int, Path]] = defaultdict(dict)
    if all(re.search(r"_\d{4}$", stem) for stem in images):
        for stem, path in images.items():
            grouped[stem[:-5]][int(stem[-4:])] = path
    multi = bool(grouped) and all(0 in files for files in grouped.values()) and \
        (num_names != 1 or all(len(files) == 1 for files in grouped.values()))
    if not multi:
        return {stem: [path] for stem, path in images.items()}
    channels = max(len(files) for files in grouped.values())
    for case, files in grouped.items():
        if sorted(files) != list(range(channels)):
            raise ConversionError(f"{images_dir}: case {case} has channels {sorted(files)}, expected 0..{channels - 1}")
    return {case: [files[c] for c in range(channels)] for case, files in grouped.items()}


def read_ids(path: Path) -> set[str]:
    if not path.is_file():
        raise ConversionError(f"{path}: file not found")
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and not line.startswith("#")}


def matches(pattern: str | None, case_id: str) -> bool:
    if not pattern:
        return False
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], case_id) is not None
    return fnmatch.fnmatchcase(case_id, pattern)


def convert(source, dataset_id: int, name: str | None = None, *, raw_folder=None, overwrite: bool = False,
            modality: str, channel_names: str | None = None, normal_cases: str | None = None,
            test_cases=None, roi_name: str | None = None, normal_reference: str = "cases") -> Path:
    source = Path(source)
    if not (source / "images").is_dir():
        raise ConversionError(f"{source / 'images'}: folder missing")
    names = [c.strip() for c in channel_names.split(",")] if channel_names else None
    cases = group_channels(volume_files(source / "images"), source / "images", len(names) if names else None)
    if not cases:
        raise ConversionError(f"{source / 'images'}: no image files ({', '.join(VOLUME_ENDINGS)})")
    num_channels = len(next(iter(cases.values())))
    names = names or [f"channel_{c}" for c in range(num_channels)]
    if len(names) != num_channels:
        raise ValueError(f"--channel-names names {len(names)} channels, {source / 'images'} has {num_channels}")
    masks, rois = volume_files(source / "masks"), volume_files(source / "rois")
    for kind, files in (("masks", masks), ("rois", rois)):
        if stray := sorted(set(files) - set(cases)):
            raise ConversionError(f"{source / kind}: {stray[0]} has no image in {source / 'images'}")
    normal = read_ids(source / "normal.txt") if (source / "normal.txt").is_file() else set()
    test = read_ids(Path(test_cases)) if test_cases else set()
    for what, ids in (("normal.txt", normal), (str(test_cases), test)):
        if unknown := sorted(ids - set(cases)):
            raise ConversionError(f"{what}: case {unknown[0]} has no image in {source / 'images'}")
    if rois and len(rois) != len(cases):
        raise ConversionError(f"{source / 'rois'}: ROIs for {len(rois)} of {len(cases)} cases; give one for every case")
    with RawDatasetWriter(
            dataset_id, name or re.sub(r"[^A-Za-z0-9_\-]", "_", source.resolve().name), modality=modality,
            channel_names={str(i): n for i, n in enumerate(names)}, file_ending=".nii.gz",
            description=f"converted from image folders at {source.resolve()}", roi_name=roi_name if rois else None,
            normal_reference=normal_reference,
            conversion={"format": FORMAT, "source": str(source.resolve()),
                        "options": {"normal_cases": normal_cases,
                                    "test_cases": str(test_cases) if test_cases else None}},
            raw_folder=raw_folder, overwrite=overwrite) as writer:
        for case_id, images in progress(sorted(cases.items()), desc="converting", unit="case"):
            split = "test" if case_id in test else "train"
            role = None if split == "test" else \
                "normal" if case_id in normal or matches(normal_cases, case_id) else "unlabeled"
            writer.add_case(case_id, images, role=role, split=split, mask=masks.get(case_id), roi=rois.get(case_id))
    return writer.target
