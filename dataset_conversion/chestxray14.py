"""NIH ChestX-ray14 (Wang et al., CVPR 2017), as HealthyGAN uses it (paper 003, sec. 3.2):

    Data_Entry_2017.csv      Image Index, Finding Labels, Follow-up #, Patient ID, ..., View Position, ...
                             (Data_Entry_2017_v2020.csv, the 2020 re-release's name, is read too)
    train_val_list.txt  test_list.txt      one image file name a line (the official patient-wise split)
    images/*.png  or  images_001/images/*.png ... images_012/images/*.png

Protocol choices:
- images: posterior-anterior (View Position PA) only, with "No Finding" (label 0) or exactly one
  finding (label 1; no '|' in Finding Labels), as the paper.
- training roles, from train_val_list: --num-normal (10,000) healthy images form the known-healthy
  set B (role 'normal'); --num-mixed-healthy (5,000) healthy and --num-mixed-diseased (3,195)
  single-finding images form the mixed unannotated set A (role 'unlabeled', labels for evaluation
  only). Fewer are taken where fewer exist. The draw is patient-wise so that no patient is in both
  sets: patients are shuffled with --seed and dealt one at a time to whichever set is the smaller
  fraction full; a set takes the patient's images it still needs, in shuffled order; the rest of the
  patient's images are left out.
- test split: every filtered image of test_list. The paper drew 4,000 + 4,000 validation and
  10,000 + 10,000 test images without saying from where; the official test list is used whole
  instead. Training patients that also appear in the test list are left out of training (none in
  the official lists), so patients never cross the split.
- images: 8-bit grey PNG (the few RGBA images by BT.601 luma); case id = the file name
  without .png; patient = Patient ID.
"""
from __future__ import annotations

import csv
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path


from autouad.dataset.raw_dataset import RawDatasetWriter
from autouad.utils.progress import progress
from dataset_conversion.convert import ConversionError
from dataset_conversion.common import read_grey_uint8

FORMAT = "chestxray14"
HELP = "NIH ChestX-ray14: Data_Entry_2017.csv, train_val_list.txt, test_list.txt, images[_NNN/images]/; HealthyGAN's split"
CSV_NAMES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")  # the latter: the 2020 re-release's name
TRAIN_LIST, TEST_LIST = "train_val_list.txt", "test_list.txt"
COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "View Position")


def add_arguments(parser) -> None:
    parser.add_argument("--num-normal", type=int, default=10000, help="healthy images in the normal role (default 10000)")
    parser.add_argument("--num-mixed-healthy", type=int, default=5000,
                        help="healthy images in the unlabeled role (default 5000)")
    parser.add_argument("--num-mixed-diseased", type=int, default=3195,
                        help="single-finding images in the unlabeled role (default 3195)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draw (default 0)")


@dataclass
class Entry:
    image: str
    patient: str
    label: int  # 0 No Finding, 1 one finding


def read_entries(csv_path: Path) -> tuple[dict[str, Entry], int]:
    """The PA, no-finding-or-single-finding images by file name, and how many rows there were."""
    if not csv_path.is_file():
        raise ConversionError(f"{csv_path}: file not found")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        absent = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if absent:
            raise ConversionError(f"{csv_path}: columns {absent} missing")
        rows = list(reader)
    kept = {}
    for row in rows:
        findings = row["Finding Labels"].strip()
        if row["View Position"].strip() == "PA" and "|" not in findings and findings:
            kept[row["Image Index"].strip()] = Entry(row["Image Index"].strip(), row["Patient ID"].strip(),
                                                     0 if findings == "No Finding" else 1)
    return kept, len(rows)


def read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise ConversionError(f"{path}: file not found")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def index_images(source: Path) -> dict[str, Path]:
    folders = [source / "images", *sorted(source.glob("images_*/images"))]
    index = {p.name: p for folder in folders if folder.is_dir() for p in folder.glob("*.png")}
    if not index:
        raise ConversionError(f"{source}: no PNG images in images/ or images_NNN/images/")
    return index


def draw_pools(entries: list[Entry], needs: dict[str, int], rng: random.Random) -> dict[str, list[Entry]]:
    """Patient-wise draw of the normal pool (healthy) and the mixed pool (healthy + diseased)."""
    by_patient = defaultdict(list)
    for e in entries:
        by_patient[e.patient].append(e)
    patients = sorted(by_patient)
    rng.shuffle(patients)
    wanted = {"normal": {0: needs["normal"]}, "mixed": {0: needs["mixed_healthy"], 1: needs["mixed_diseased"]}}
    pools: dict[str, list[Entry]] = {"normal": [], "mixed": []}

    def fill(pool: str) -> float:
        total = sum(wanted[pool].values()) + len(pools[pool])
        return len(pools[pool]) / total if total else 1.0

    for patient in patients:
        images = by_patient[patient]
        rng.shuffle(images)
        usable = [p for p in ("normal", "mixed") if any(wanted[p].get(e.label, 0) > 0 for e in images)]
        if not usable:
            continue
        pool = min(usable, key=fill)
        for e in images:
            if wanted[pool].get(e.label, 0) > 0:
                wanted[pool][e.label] -= 1
                pools[pool].append(e)
    return pools


def convert(source, dataset_id: int, name: str | None = None, *, raw_folder=None, overwrite: bool = False,
            num_normal: int = 10000, num_mixed_healthy: int = 5000, num_mixed_diseased: int = 3195,
            seed: int = 0) -> Path:
    source = Path(source)
    if min(num_normal, num_mixed_healthy, num_mixed_diseased) < 0:
        raise ValueError("--num-normal, --num-mixed-healthy and --num-mixed-diseased must be >= 0")
    if not source.is_dir():
        raise ConversionError(f"{source}: not a folder")
    csv_path = next((source / n for n in CSV_NAMES if (source / n).is_file()), source / CSV_NAMES[0])
    kept, num_rows = read_entries(csv_path)
    train_names, test_names = read_list(source / TRAIN_LIST), read_list(source / TEST_LIST)
    test = [kept[n] for n in test_names if n in kept]
    test_patients = {e.patient for e in test}
    train = [kept[n] for n in train_names if n in kept and kept[n].patient not in test_patients]
    pools = draw_pools(train, {"normal": num_normal, "mixed_healthy": num_mixed_healthy,
                               "mixed_diseased": num_mixed_diseased}, random.Random(seed))
    chosen = [("train", "normal", e) for e in pools["normal"]] + [("train", "unlabeled", e) for e in pools["mixed"]]
    chosen += [("test", None, e) for e in test]
    index = index_images(source)
    missing = [e.image for _, _, e in chosen if e.image not in index]
    if missing:
        raise ConversionError(f"{source}: images not found in images/ or images_NNN/images/: {', '.join(missing[:5])}"
                              + (" ..." if len(missing) > 5 else ""))
    counts = {"normal": len(pools["normal"]), "unlabeled_healthy": sum(e.label == 0 for e in pools["mixed"]),
              "unlabeled_diseased": sum(e.label == 1 for e in pools["mixed"]),
              "test_healthy": sum(e.label == 0 for e in test), "test_diseased": sum(e.label == 1 for e in test)}
    with RawDatasetWriter(
            dataset_id, name or "ChestXray14", modality="X-ray", channel_names={"0": "X-ray"}, file_ending=".png",
            description="NIH ChestX-ray14 PA images with no or one finding, in HealthyGAN's protocol: known-healthy "
                        "images (normal) and a mixed unannotated set (unlabeled; labels for evaluation only)",
            reference="Wang et al., CVPR 2017 (ChestX-ray8); Rahman Siddiquee et al., SASHIMI 2022 (HealthyGAN)",
            licence="NIH Clinical Center: no restrictions on use; cite the paper and acknowledge the NIH",
            normal_reference="cases",
            image_label_names={"0": "No Finding", "1": "one finding"},
            conversion={"format": FORMAT, "source": str(source.resolve()), "csv_rows": num_rows, "counts": counts,
                        "options": {"num_normal": num_normal, "num_mixed_healthy": num_mixed_healthy,
                                    "num_mixed_diseased": num_mixed_diseased, "seed": seed}},
            raw_folder=raw_folder, overwrite=overwrite) as writer:
        for split, role, e in progress(chosen, desc="converting ChestX-ray14", unit="image"):
            writer.add_case(e.image.removesuffix(".png"), [read_grey_uint8(index[e.image])], role=role, split=split,
                            label=e.label, patient=e.patient)
    return writer.target
