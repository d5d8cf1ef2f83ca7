"""COVIDx CXR chest X-rays (Wang et al., COVID-Net), as HealthyGAN uses them (paper 003, sec. 3.1):

    train/<filename>  test/<filename>
    train.txt  test.txt      (older releases: train_COVIDx<v>.txt, test_COVIDx<v>.txt; or --train-file/--test-file)

One image per line: `patient_id filename class [source]`, whitespace-separated; class is
positive/negative (COVIDx CXR-2 and later) or COVID-19/normal/pneumonia (releases up to 8).
A val/ split (COVIDx CXR-4) is not used.

Protocol choices:
- image labels: negative/normal are 0; the classes of --abnormal-classes are 1 (default positive,
  COVID-19 and pneumonia: non-COVID pneumonia is abnormal too, and this is anomaly detection); a
  class in neither (e.g. pneumonia with --abnormal-classes positive,COVID-19) is left out.
- training roles, HealthyGAN's protocol: a known-healthy set B (role 'normal') and a mixed
  unannotated set A (role 'unlabeled', its labels kept for evaluation only). The paper drew 10,031
  healthy images for B and 3,663 healthy plus 1,570 positive ones for A; --normal-fraction (default
  10031/13694) of the healthy training images go to B, the other healthy images and all abnormal
  ones to A. The paper's 100 unused positives and healthy images (apparently a validation set) are
  not held back. B is drawn patient-wise (patients shuffled with --seed, dealt until the fraction is
  reached, so it is met to within one patient's images) from patients with healthy images only,
  so that no patient is in both sets.
- test split: the test file, with its labels.
- images: 8-bit grey PNG, colour converted with ITU-R BT.601 luma, 16-bit images scaled to 8 bit.
- case id: the file name without its ending, other characters than letters, digits, '_' and '-'
  replaced by '_'; patient = patient_id.
"""
from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path


from autouad.dataset.raw_dataset import RawDatasetWriter
from autouad.utils.progress import progress
from dataset_conversion.common import read_grey_uint8
from dataset_conversion.convert import ConversionError

FORMAT = "covidx"
HELP = "COVIDx CXR: train/, test/ and train.txt, test.txt (patient_id filename class source); HealthyGAN's split"
NORMAL_CLASSES = ("negative", "normal")
DEFAULT_ABNORMAL = "positive,COVID-19,pneumonia"
PAPER_NORMAL_FRACTION = 10031 / (10031 + 3663)


def add_arguments(parser) -> None:
    parser.add_argument("--train-file", type=Path, default=None,
                        help="the training split file (default: train.txt or train_COVIDx*.txt in the source)")
    parser.add_argument("--test-file", type=Path, default=None,
                        help="the test split file (default: test.txt or test_COVIDx*.txt in the source)")
    parser.add_argument("--normal-fraction", type=float, default=PAPER_NORMAL_FRACTION,
                        help="fraction of the healthy training images in the normal role (default 10031/13694 "
                             "= %(default).4f, HealthyGAN's split); the rest are unlabeled")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random normal/unlabeled split (default 0)")
    parser.add_argument("--abnormal-classes", default=DEFAULT_ABNORMAL,
                        help=f"comma-separated classes with label 1 (default {DEFAULT_ABNORMAL}); "
                             "classes neither normal nor abnormal are left out")


@dataclass
class Entry:
    patient: str
    filename: str
    cls: str
    path: Path




def case_id_of(filename: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-]", "_", Path(filename).stem)


def find_split_file(source: Path, split: str, given: Path | None) -> Path:
    if given is not None:
        path = given if given.is_absolute() else source / given
        if not path.is_file():
            raise ConversionError(f"{path}: split file not found")
        return path
    candidates = [source / f"{split}.txt"] if (source / f"{split}.txt").is_file() else \
        sorted(source.glob(f"{split}_COVIDx*.txt"))
    if not candidates:
        raise ConversionError(f"{source}: no {split}.txt or {split}_COVIDx*.txt split file")
    if len(candidates) > 1:
        raise ConversionError(f"{source}: several {split} split files ({', '.join(p.name for p in candidates)}); "
                              f"choose one with --{split}-file")
    return candidates[0]


def parse_split_file(path: Path, image_folder: Path, known: set[str]) -> list[Entry]:
    entries, seen = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) >= 4 and tokens[-2].lower() in known:
            cls, filename = tokens[-2], " ".join(tokens[1:-2])
        elif len(tokens) >= 3 and tokens[-1].lower() in known:
            cls, filename = tokens[-1], " ".join(tokens[1:-1])
        else:
            raise ConversionError(f"{path}:{number}: expected 'patient_id filename class [source]' with class "
                                  f"one of {sorted(known)}, got {line.strip()!r}")
        if filename not in seen:  # a repeated line adds nothing
            seen.add(filename)
            entries.append(Entry(tokens[0], filename, cls.lower(), image_folder / filename))
    return entries


def split_normal_patients(train: list[Entry], normal_fraction: float, rng: random.Random) -> set[str]:
    """Patients whose images form the normal role: drawn from the patients with healthy images only."""
    healthy_images = defaultdict(int)
    for e in train:
        if e.cls in NORMAL_CLASSES:
            healthy_images[e.patient] += 1
    patients_with_abnormal = {e.patient for e in train if e.cls not in NORMAL_CLASSES}
    candidates = sorted(p for p in healthy_images if p not in patients_with_abnormal)
    rng.shuffle(candidates)
    target, taken, chosen = round(normal_fraction * sum(healthy_images.values())), 0, set()
    for patient in candidates:
        if taken >= target:
            break
        chosen.add(patient)
        taken += healthy_images[patient]
    return chosen


def convert(source, dataset_id: int, name: str | None = None, *, raw_folder=None, overwrite: bool = False,
            train_file=None, test_file=None, normal_fraction: float = PAPER_NORMAL_FRACTION, seed: int = 0,
            abnormal_classes: str = DEFAULT_ABNORMAL) -> Path:
    source = Path(source)
    if not 0.0 <= normal_fraction <= 1.0:
        raise ValueError(f"--normal-fraction must be between 0 and 1, got {normal_fraction}")
    abnormal = {c.strip().lower() for c in abnormal_classes.split(",") if c.strip()}
    if not abnormal or abnormal & set(NORMAL_CLASSES):
        raise ValueError(f"--abnormal-classes must name classes other than {NORMAL_CLASSES}, got {abnormal_classes!r}")
    if not source.is_dir():
        raise ConversionError(f"{source}: not a folder")
    for folder in ("train", "test"):
        if not (source / folder).is_dir():
            raise ConversionError(f"{source / folder}: image folder missing")
    known = set(NORMAL_CLASSES) | abnormal | {"positive", "covid-19", "pneumonia"}
    splits = {split: parse_split_file(find_split_file(source, split, given), source / split, known)
              for split, given in (("train", train_file and Path(train_file)), ("test", test_file and Path(test_file)))}
    left_out = sum(e.cls not in NORMAL_CLASSES and e.cls not in abnormal for es in splits.values() for e in es)
    splits = {s: [e for e in es if e.cls in NORMAL_CLASSES or e.cls in abnormal] for s, es in splits.items()}
    missing = [str(e.path) for es in splits.values() for e in es if not e.path.is_file()]
    if missing:
        raise ConversionError(f"missing images: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    for split, entries in splits.items():
        by_id: dict[str, str] = {}
        for e in entries:
            if by_id.setdefault(case_id_of(e.filename), e.filename) != e.filename:
                raise ConversionError(f"{e.path}: {e.filename!r} and {by_id[case_id_of(e.filename)]!r} "
                                      f"map to the same case id")
    normal_patients = split_normal_patients(splits["train"], normal_fraction, random.Random(seed))
    with RawDatasetWriter(
            dataset_id, name or "COVIDx", modality="X-ray", channel_names={"0": "X-ray"}, file_ending=".png",
            description="COVIDx chest X-rays in HealthyGAN's protocol: known-healthy images (normal) and a mixed "
                        "unannotated set (unlabeled; labels for evaluation only)",
            reference="Wang et al., Sci. Rep. 2020 (COVID-Net); Rahman Siddiquee et al., SASHIMI 2022 (HealthyGAN)",
            licence="see the licences of COVIDx's source data sets", normal_reference="cases",
            image_label_names={"0": "normal (" + ", ".join(NORMAL_CLASSES) + ")",
                               "1": "abnormal (" + ", ".join(sorted(abnormal)) + ")"},
            conversion={"format": FORMAT, "source": str(source.resolve()), "left_out_other_classes": left_out,
                        "options": {"normal_fraction": normal_fraction, "seed": seed,
                                    "abnormal_classes": sorted(abnormal)}},
            raw_folder=raw_folder, overwrite=overwrite) as writer:
        for split, entries in splits.items():
            for e in progress(entries, desc=f"converting COVIDx {split}", unit="image"):
                label = 0 if e.cls in NORMAL_CLASSES else 1
                role = None if split == "test" else "normal" if e.patient in normal_patients else "unlabeled"
                writer.add_case(case_id_of(e.filename), [read_grey_uint8(e.path)], role=role, split=split,
                                label=label, patient=e.patient)
    return writer.target
