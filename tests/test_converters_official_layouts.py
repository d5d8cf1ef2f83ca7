"""The converters for official public layouts (BraTS, MS-SEG 2015, LiTS, BTCV, COVIDx, ChestX-ray14)
and the generic nifti-folders one, each run on tiny files written here in that layout."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from autouad.dataset.raw_dataset import load_raw_dataset
from dataset_conversion import brats, btcv, chestxray14, covidx, lits, msseg2015, nifti_folders
from dataset_conversion.convert import ConversionError, main

SHAPE = (10, 16, 12)  # z, y, x


# -- helpers ------------------------------------------------------------------------------------
def write(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 2.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing[: image.GetDimension()])
    sitk.WriteImage(image, str(path))
    return path


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.uint8), isVector=array.ndim == 3), str(path))
    return path


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def meta_of(folder: Path) -> dict:
    return json.loads((folder / "dataset.json").read_text())


def box(z0, z1, y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros(SHAPE, dtype=bool)
    m[z0:z1, y0:y1, x0:x1] = True
    return m


def expect_conversion_error(call, names: str, raw: Path) -> None:
    """call() raises a one-line ConversionError naming ``names`` and leaves no dataset behind."""
    with pytest.raises(ConversionError) as e:
        call()
    assert names in str(e.value) and "\n" not in str(e.value)
    assert not raw.exists() or not list(raw.iterdir()), list(raw.iterdir())


# -- BraTS ----------------------------------------------------------------------------------------
BRAIN_A, BRAIN_B = box(1, 9, 2, 14, 2, 10), box(1, 9, 3, 15, 2, 11)  # FLAIR/T1/T1ce cover A, T2 covers B


def make_brats_case(case_dir: Path, k: int) -> np.ndarray:
    values = {"flair": 100, "t1": 200, "t1ce": 300, "t2": 400}
    for m, v in values.items():
        write(case_dir / f"{case_dir.name}_{m}.nii.gz", ((BRAIN_B if m == "t2" else BRAIN_A) * (v + k)).astype(np.int16))
    seg = np.zeros(SHAPE, dtype=np.uint8)
    seg[3, 5:7, 4:6], seg[4, 5:8, 4:7], seg[5, 6, 5] = 2, 1, 4
    write(case_dir / f"{case_dir.name}_seg.nii.gz", seg)
    return seg


def test_brats2019_layout(tmp_path):
    root = tmp_path / "src" / "MICCAI_BraTS_2019_Data_Training"
    segs = {}
    for grade, case in (("HGG", "BraTS19_TCIA01_131_1"), ("HGG", "BraTS19_CBICA_AAB_1"), ("LGG", "BraTS19_TCIA10_103_1")):
        segs[case] = make_brats_case(root / grade / case, len(segs))
    folder = brats.convert(tmp_path / "src", 1, raw_folder=tmp_path / "raw")  # the parent of the release folder
    assert folder == tmp_path / "raw" / "Dataset001_BraTS2019"
    meta = meta_of(folder)
    assert meta["modality"] == "MRI" and meta["roi_name"] == "brain"
    assert meta["channel_names"] == {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"}
    assert meta["normal_reference"] == "slices_without_anomaly"
    assert meta["training"] == {c: {"role": "unlabeled"} for c in segs} and "test" not in meta
    ds = load_raw_dataset(folder)
    assert {c.case_id: c.patient for c in ds.cases} == {c: c for c in segs}
    for k, (case, seg) in enumerate(segs.items()):
        for c, v in enumerate((100, 200, 300, 400)):
            assert read(folder / "imagesTr" / f"{case}_{c:04d}.nii.gz").max() == v + k
        np.testing.assert_array_equal(read(folder / "masksTr" / f"{case}.nii.gz"), seg > 0)
        np.testing.assert_array_equal(read(folder / "roisTr" / f"{case}.nii.gz"), BRAIN_A | BRAIN_B)


def test_brats2021_layout_through_cli(tmp_path, monkeypatch):
    release = tmp_path / "BraTS2021_Training_Data"
    seg = make_brats_case(release / "BraTS2021_00000", 0)
    make_brats_case(release / "BraTS2021_00002", 1)
    monkeypatch.setenv("AUTOUAD_raw", str(tmp_path / "raw"))
    assert main(["brats", "-i", str(release), "-d", "2", "--modalities", "t2,flair",
                 "--normal-reference", "cases"]) == 0
    folder = tmp_path / "raw" / "Dataset002_BraTS2021"
    meta = meta_of(folder)
    assert meta["channel_names"] == {"0": "T2", "1": "FLAIR"} and meta["normal_reference"] == "cases"
    assert meta["conversion"]["layout"] == "2021"
    assert read(folder / "imagesTr" / "BraTS2021_00000_0000.nii.gz").max() == 400
    assert read(folder / "imagesTr" / "BraTS2021_00000_0001.nii.gz").max() == 100
    assert not (folder / "imagesTr" / "BraTS2021_00000_0002.nii.gz").exists()
    np.testing.assert_array_equal(read(folder / "masksTr" / "BraTS2021_00000.nii.gz"), seg > 0)
    np.testing.assert_array_equal(read(folder / "roisTr" / "BraTS2021_00000.nii.gz"), BRAIN_A | BRAIN_B)


def test_brats_malformed(tmp_path):
    release = tmp_path / "BraTS2021_Training_Data"
    make_brats_case(release / "BraTS2021_00000", 0)
    missing = release / "BraTS2021_00000" / "BraTS2021_00000_t1ce.nii.gz"
    missing.unlink()
    expect_conversion_error(lambda: brats.convert(release, 3, raw_folder=tmp_path / "raw"), str(missing), tmp_path / "raw")
    # the missing channel is not needed when not chosen
    brats.convert(release, 3, raw_folder=tmp_path / "raw", modalities="flair")
    empty = tmp_path / "empty"
    empty.mkdir()
    expect_conversion_error(lambda: brats.convert(empty, 4, raw_folder=tmp_path / "raw2"), str(empty), tmp_path / "raw2")
    with pytest.raises(ValueError):
        brats.convert(release, 5, raw_folder=tmp_path / "raw3", modalities="flair,dwi")


# -- MS-SEG 2015 ----------------------------------------------------------------------------------
def make_msseg(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    masks = {}
    for case in ("training01_01", "training01_02", "training02_01"):
        subject = root / "training" / case[:10]
        for k, m in enumerate(("flair", "mprage", "pd", "t2")):
            write(subject / "preprocessed" / f"{case}_{m}_pp.nii", (BRAIN_A * (10.0 * (k + 1))).astype(np.float32))
        mask1, mask2 = box(4, 5, 6, 8, 5, 7), box(4, 6, 6, 9, 5, 7)
        write(subject / "masks" / f"{case}_mask1.nii", mask1.astype(np.uint8))
        write(subject / "masks" / f"{case}_mask2.nii", mask2.astype(np.uint8))
        masks[case] = (mask1, mask2)
    return masks


def test_msseg2015_layout(tmp_path):
    masks = make_msseg(tmp_path / "isbi")
    folder = msseg2015.convert(tmp_path / "isbi", 6, raw_folder=tmp_path / "raw", rater=2)
    meta = meta_of(folder)
    assert meta["channel_names"] == {"0": "FLAIR"} and meta["normal_reference"] == "slices_without_anomaly"
    assert meta["roi_name"] == "brain"
    assert set(meta["training"]) == set(masks)
    assert all(e["role"] == "unlabeled" for e in meta["training"].values())
    patients = {c.case_id: c.patient for c in load_raw_dataset(folder).cases}
    assert patients == {"training01_01": "training01", "training01_02": "training01", "training02_01": "training02"}
    for case, (_, mask2) in masks.items():
        np.testing.assert_array_equal(read(folder / "masksTr" / f"{case}.nii.gz"), mask2)
        np.testing.assert_array_equal(read(folder / "roisTr" / f"{case}.nii.gz"), BRAIN_A)
        assert read(folder / "imagesTr" / f"{case}_0000.nii.gz").max() == 10.0
    # two channels, rater 1, given the training/ folder itself
    folder = msseg2015.convert(tmp_path / "isbi" / "training", 7, raw_folder=tmp_path / "raw",
                               modalities="t2,flair", normal_reference="cases")
    meta = meta_of(folder)
    assert meta["channel_names"] == {"0": "T2", "1": "FLAIR"} and meta["normal_reference"] == "cases"
    assert read(folder / "imagesTr" / "training02_01_0000.nii.gz").max() == 40.0
    np.testing.assert_array_equal(read(folder / "masksTr" / "training02_01.nii.gz"), masks["training02_01"][0])


def test_msseg2015_malformed(tmp_path):
    make_msseg(tmp_path / "isbi")
    missing = tmp_path / "isbi" / "training" / "training01" / "masks" / "training01_02_mask2.nii"
    missing.unlink()
    raw = tmp_path / "raw"
    expect_conversion_error(lambda: msseg2015.convert(tmp_path / "isbi", 8, raw_folder=raw, rater=2), str(missing), raw)
    expect_conversion_error(lambda: msseg2015.convert(tmp_path / "nowhere", 8, raw_folder=raw),
                            str(tmp_path / "nowhere"), raw)


# -- LiTS -----------------------------------------------------------------------------------------
def make_lits_labels(k: int) -> np.ndarray:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[2:8, 4:12, 3:9] = 1
    labels[4:6, 6:8, 5:7] = 2
    labels[7, 5, 4 + k] = 2
    return labels


def test_lits_batch_folders(tmp_path):
    src = tmp_path / "LiTS"
    ct = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 400 - 1000).astype(np.int16)
    labels = {}
    for batch, n in (("Training Batch 1", 0), ("Training Batch 1", 1), ("Training Batch 2", 28)):
        write(src / batch / f"volume-{n}.nii", ct + n)
        labels[n] = make_lits_labels(n % 3)
        write(src / batch / f"segmentation-{n}.nii", labels[n])
    folder = lits.convert(src, 9, raw_folder=tmp_path / "raw")
    meta = meta_of(folder)
    assert meta["modality"] == "CT" and meta["channel_names"] == {"0": "CT"} and meta["roi_name"] == "liver"
    assert meta["file_ending"] == ".nii.gz" and meta["normal_reference"] == "slices_without_anomaly"
    assert meta["training"] == {f"LiTS_{n:03d}": {"role": "unlabeled"} for n in (0, 1, 28)}
    for n, lab in labels.items():
        np.testing.assert_array_equal(read(folder / "imagesTr" / f"LiTS_{n:03d}_0000.nii.gz"), ct + n)
        np.testing.assert_array_equal(read(folder / "masksTr" / f"LiTS_{n:03d}.nii.gz"), lab == 2)  # tumour only
        np.testing.assert_array_equal(read(folder / "roisTr" / f"LiTS_{n:03d}.nii.gz"), lab >= 1)  # liver + tumour
    assert not list(folder.rglob("*.nii")) and len(list(folder.rglob("*.nii.gz"))) == 9


def test_lits_flat_gz_through_cli_and_malformed(tmp_path, monkeypatch):
    src = tmp_path / "flat"
    for n in (3, 4):
        write(src / f"volume-{n}.nii.gz", np.full(SHAPE, -50, np.int16))
        write(src / f"segmentation-{n}.nii.gz", make_lits_labels(0))
    monkeypatch.setenv("AUTOUAD_raw", str(tmp_path / "raw"))
    assert main(["lits", "-i", str(src), "-d", "10", "--name", "LiTSflat", "--normal-reference", "cases"]) == 0
    meta = meta_of(tmp_path / "raw" / "Dataset010_LiTSflat")
    assert set(meta["training"]) == {"LiTS_003", "LiTS_004"} and meta["normal_reference"] == "cases"
    (src / "segmentation-4.nii.gz").unlink()
    raw = tmp_path / "raw_bad"
    expect_conversion_error(lambda: lits.convert(src, 11, raw_folder=raw), str(src / "segmentation-4.nii"), raw)
    assert main(["lits", "-i", str(src), "-d", "11"]) == 1
    assert not (tmp_path / "raw" / "Dataset011_LiTS").exists()


# -- BTCV -----------------------------------------------------------------------------------------
def make_btcv(training: Path) -> dict[str, np.ndarray]:
    labels = {}
    for k, case in enumerate(("0001", "0002", "0007")):
        write(training / "img" / f"img{case}.nii.gz", np.full(SHAPE, 40 + k, np.int16))
        lab = np.zeros(SHAPE, np.uint8)
        lab[1:4, 2:6, 2:6] = 1  # spleen
        if case != "0007":  # case 0007 has no liver
            lab[3:8, 8:14, 3:10] = 6
        lab[6, 2, 2 + k] = 6 if case != "0007" else 0
        write(training / "label" / f"label{case}.nii.gz", lab)
        labels[case] = lab
    return labels


def test_btcv_layout(tmp_path):
    labels = make_btcv(tmp_path / "btcv" / "RawData" / "Training")
    (tmp_path / "btcv" / "RawData" / "Testing" / "img").mkdir(parents=True)
    folder = btcv.convert(tmp_path / "btcv", 12, raw_folder=tmp_path / "raw")
    meta = meta_of(folder)
    assert meta["modality"] == "CT" and meta["roi_name"] == "liver" and meta["normal_reference"] == "cases"
    assert meta["training"] == {"BTCV_0001": {"role": "normal"}, "BTCV_0002": {"role": "normal"}}
    assert meta["conversion"]["skipped_without_roi"] == ["BTCV_0007"]
    assert not (folder / "masksTr").exists()
    for case in ("0001", "0002"):
        np.testing.assert_array_equal(read(folder / "roisTr" / f"BTCV_{case}.nii.gz"), labels[case] == 6)
        assert read(folder / "imagesTr" / f"BTCV_{case}_0000.nii.gz").max() == 40 + int(case == "0002")


def test_btcv_training_folder_through_cli_and_malformed(tmp_path, monkeypatch):
    training = tmp_path / "Training"
    labels = make_btcv(training)
    monkeypatch.setenv("AUTOUAD_raw", str(tmp_path / "raw"))
    assert main(["btcv", "-i", str(training), "-d", "13", "--roi-label", "1", "--roi-name", "spleen"]) == 0
    folder = tmp_path / "raw" / "Dataset013_BTCV"
    meta = meta_of(folder)
    assert meta["roi_name"] == "spleen" and len(meta["training"]) == 3
    np.testing.assert_array_equal(read(folder / "roisTr" / "BTCV_0007.nii.gz"), labels["0007"] == 1)
    (training / "label" / "label0002.nii.gz").unlink()
    raw = tmp_path / "raw_bad"
    expect_conversion_error(lambda: btcv.convert(training, 14, raw_folder=raw),
                            str(training / "label" / "label0002.nii.gz"), raw)
    expect_conversion_error(lambda: btcv.convert(tmp_path / "raw", 14, raw_folder=raw), str(tmp_path / "raw"), raw)


# -- COVIDx ---------------------------------------------------------------------------------------
def make_covidx(src: Path, old_format: bool = False) -> None:
    rng = np.random.default_rng(0)
    neg, pos = ("normal", "COVID-19") if old_format else ("negative", "positive")
    train = [(f"N{i}", f"neg{i}.png", neg) for i in range(8)] + [("N9", "neg9a.png", neg), ("N9", "neg9b.png", neg)]
    train += [(f"P{i}", f"pos {i}.jpg" if i == 0 else f"pos{i}.png", pos) for i in range(3)]
    train += [("M1", "m1_neg.png", neg), ("M1", "m1_pos.png", pos)]
    test = [("T1", "t_neg1.png", neg), ("T2", "t_neg2.png", neg), ("T3", "t_pos1.png", pos), ("T4", "t_pos2.png", pos)]
    if old_format:
        train += [("Q1", "pneu1.png", "pneumonia")]
        test += [("Q2", "pneu2.png", "pneumonia")]
    for split, entries in (("train", train), ("test", test)):
        for _, filename, _ in entries:
            write_png(src / split / filename, rng.integers(0, 256, (8, 10)))
        name = f"{split}_COVIDx5.txt" if old_format else f"{split}.txt"
        (src / name).write_text("".join(f"{p} {f} {c} somesource\n" for p, f, c in entries))
    # one colour image: stored as grey (BT.601 luma)
    write_png(src / "train" / "neg0.png", np.dstack([np.full((8, 10), 100), np.full((8, 10), 200), np.full((8, 10), 50)]))


def test_covidx_healthygan_split(tmp_path):
    make_covidx(tmp_path / "covidx")
    folder = covidx.convert(tmp_path / "covidx", 15, raw_folder=tmp_path / "raw")
    meta = meta_of(folder)
    assert meta["modality"] == "X-ray" and meta["file_ending"] == ".png" and meta["normal_reference"] == "cases"
    ds = load_raw_dataset(folder)
    train = {c.case_id: c for c in ds.training_cases()}
    assert len(train) == 15 and "pos_0" in train
    normal = [c for c in train.values() if c.role == "normal"]
    unlabeled = [c for c in train.values() if c.role == "unlabeled"]
    assert all(c.label == 0 for c in normal)
    target = round(covidx.PAPER_NORMAL_FRACTION * 11)  # 11 healthy training images
    assert target <= len(normal) <= target + 1  # met to within one patient's images (N9 has two)
    assert {c.patient for c in normal}.isdisjoint(c.patient for c in unlabeled)
    assert {c.case_id for c in unlabeled if c.label == 1} == {"pos_0", "pos1", "pos2", "m1_pos"}
    assert train["m1_neg"].role == "unlabeled" and train["m1_neg"].label == 0  # its patient has a positive image
    assert train["neg9a"].role == train["neg9b"].role and train["neg9a"].patient == "N9"
    assert {c.case_id: c.label for c in ds.test_cases()} == {"t_neg1": 0, "t_neg2": 0, "t_pos1": 1, "t_pos2": 1}
    grey = read(folder / "imagesTr" / "neg0_0000.png")
    assert grey.shape == (8, 10) and grey.dtype == np.uint8
    assert grey[0, 0] == round(0.299 * 100 + 0.587 * 200 + 0.114 * 50)
    # seeded: the same seed gives the same split, another fraction another one
    again = load_raw_dataset(covidx.convert(tmp_path / "covidx", 16, "again", raw_folder=tmp_path / "raw"))
    assert {c.case_id: c.role for c in again.training_cases()} == {c: t.role for c, t in train.items()}
    none = load_raw_dataset(covidx.convert(tmp_path / "covidx", 17, "none", raw_folder=tmp_path / "raw",
                                           normal_fraction=0.0))
    assert all(c.role == "unlabeled" for c in none.training_cases())


def test_covidx_old_format_through_cli_and_malformed(tmp_path, monkeypatch):
    src = tmp_path / "covidx5"
    make_covidx(src, old_format=True)
    monkeypatch.setenv("AUTOUAD_raw", str(tmp_path / "raw"))
    assert main(["covidx", "-i", str(src), "-d", "18", "--abnormal-classes", "COVID-19"]) == 0
    ds = load_raw_dataset(tmp_path / "raw" / "Dataset018_COVIDx")
    ids = {c.case_id for c in ds.cases}
    assert "pneu1" not in ids and "pneu2" not in ids  # pneumonia is neither normal nor abnormal here
    folder = covidx.convert(src, 19, raw_folder=tmp_path / "raw")  # default: pneumonia is abnormal
    ds = load_raw_dataset(folder)
    labels = {c.case_id: (c.role, c.label) for c in ds.cases}
    assert labels["pneu1"] == ("unlabeled", 1) and labels["pneu2"] == (None, 1) and labels["pos1"] == ("unlabeled", 1)
    (src / "test" / "t_pos2.png").unlink()
    raw = tmp_path / "raw_bad"
    expect_conversion_error(lambda: covidx.convert(src, 20, raw_folder=raw), str(src / "test" / "t_pos2.png"), raw)
    (src / "test_COVIDx5.txt").unlink()
    expect_conversion_error(lambda: covidx.convert(src, 20, raw_folder=raw), str(src), raw)


# -- ChestX-ray14 ---------------------------------------------------------------------------------
CXR14_ROWS = [  # image, findings, patient, view, list
    ("00000001_000.png", "No Finding", 1, "PA", "train"), ("00000001_001.png", "No Finding", 1, "PA", "train"),
    ("00000001_002.png", "No Finding", 1, "PA", "train"),
    ("00000002_000.png", "No Finding", 2, "PA", "train"), ("00000002_001.png", "No Finding", 2, "PA", "train"),
    ("00000002_002.png", "Effusion", 2, "PA", "train"),
    ("00000003_000.png", "Atelectasis", 3, "PA", "train"), ("00000003_001.png", "Atelectasis|Effusion", 3, "PA", "train"),
    ("00000004_000.png", "No Finding", 4, "AP", "train"), ("00000004_001.png", "No Finding", 4, "AP", "train"),
    ("00000004_002.png", "No Finding", 4, "PA", "train"),
    ("00000005_000.png", "Mass", 5, "PA", "train"),
    ("00000006_000.png", "No Finding", 6, "PA", "train"), ("00000006_001.png", "No Finding", 6, "PA", "train"),
    ("00000007_000.png", "Nodule", 7, "AP", "train"),
    ("00000008_000.png", "No Finding", 8, "PA", "train"), ("00000008_001.png", "No Finding", 8, "PA", "test"),
    ("00000009_000.png", "No Finding", 9, "PA", "test"), ("00000009_001.png", "Hernia", 9, "PA", "test"),
    ("00000009_002.png", "Mass|Nodule", 9, "PA", "test"), ("00000009_003.png", "Hernia", 9, "AP", "test"),
]


def make_chestxray14(src: Path) -> None:
    lines = ["Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
             "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"]
    for k, (image, findings, patient, view, _) in enumerate(CXR14_ROWS):
        lines.append(f"{image},{findings},{k},{patient},58,M,{view},2500,2048,0.168,0.168,")
        folder = src / ("images_001" if k % 2 else "images_002") / "images"
        write_png(folder / image, np.full((6, 7), k * 10))
    rgba = np.dstack([np.full((6, 7), 30)] * 3 + [np.full((6, 7), 255)])
    write_png(next(src.glob("images_*/images/00000006_000.png")), rgba)
    (src / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    (src / "train_val_list.txt").write_text("".join(r[0] + "\n" for r in CXR14_ROWS if r[4] == "train"))
    (src / "test_list.txt").write_text("".join(r[0] + "\n" for r in CXR14_ROWS if r[4] == "test"))


def test_chestxray14_filters_and_pools(tmp_path):
    src = tmp_path / "cxr14"
    make_chestxray14(src)
    folder = chestxray14.convert(src, 21, raw_folder=tmp_path / "raw")  # paper sizes: capped at what exists
    ds = load_raw_dataset(folder)
    train, test = ds.training_cases(), ds.test_cases()
    ids = {c.case_id for c in ds.cases}
    for excluded in ("00000004_000", "00000004_001", "00000007_000", "00000009_003",  # AP
                     "00000003_001", "00000009_002",  # more than one finding
                     "00000008_000"):  # patient 8 is in the test list
        assert excluded not in ids
    assert {c.case_id: c.label for c in test} == {"00000008_001": 0, "00000009_000": 0, "00000009_001": 1}
    assert {c.patient for c in train}.isdisjoint(c.patient for c in test)
    normal = [c for c in train if c.role == "normal"]
    unlabeled = [c for c in train if c.role == "unlabeled"]
    assert normal and all(c.label == 0 for c in normal)
    assert {c.case_id for c in unlabeled if c.label == 1} == {"00000003_000", "00000005_000"} | (
        {"00000002_002"} if "2" not in {c.patient for c in normal} else set())
    assert {c.patient for c in normal}.isdisjoint(c.patient for c in unlabeled)
    counts = meta_of(folder)["conversion"]["counts"]
    assert counts["normal"] + counts["unlabeled_healthy"] == 8  # every healthy PA image of patients 1, 2, 4, 6
    assert counts["unlabeled_healthy"] > 0  # patients are dealt to both pools, not all healthy ones to normal
    assert counts["normal"] == len(normal) and counts["unlabeled_diseased"] == sum(c.label == 1 for c in unlabeled)
    grey = read(folder / "imagesTr" / "00000006_000_0000.png")
    assert grey.shape == (6, 7) and grey.dtype == np.uint8 and grey[0, 0] == 30


def test_chestxray14_sizes_through_cli_and_malformed(tmp_path, monkeypatch):
    src = tmp_path / "cxr14"
    make_chestxray14(src)
    monkeypatch.setenv("AUTOUAD_raw", str(tmp_path / "raw"))
    assert main(["chestxray14", "-i", str(src), "-d", "22", "--num-normal", "2", "--num-mixed-healthy", "1",
                 "--num-mixed-diseased", "1", "--seed", "3"]) == 0
    ds = load_raw_dataset(tmp_path / "raw" / "Dataset022_ChestXray14")
    roles = [(c.role, c.label) for c in ds.training_cases()]
    assert sorted(roles) == [("normal", 0), ("normal", 0), ("unlabeled", 0), ("unlabeled", 1)]
    train = ds.training_cases()
    assert {c.patient for c in train if c.role == "normal"}.isdisjoint(c.patient for c in train if c.role == "unlabeled")
    raw = tmp_path / "raw_bad"
    next(src.glob("images_*/images/00000009_001.png")).unlink()
    expect_conversion_error(lambda: chestxray14.convert(src, 23, raw_folder=raw), "00000009_001.png", raw)
    (src / "test_list.txt").unlink()
    expect_conversion_error(lambda: chestxray14.convert(src, 23, raw_folder=raw), str(src / "test_list.txt"), raw)


# -- nifti-folders --------------------------------------------------------------------------------
def test_nifti_folders_multichannel(tmp_path):
    src = tmp_path / "mine"
    mask = box(4, 6, 5, 8, 5, 8).astype(np.uint8) * 3
    for case, ending in (("caseA", ".nrrd"), ("caseB", ".mha"), ("caseC", ".nii")):
        for c in (0, 1):
            write(src / "images" / f"{case}_{c:04d}{ending}", np.full(SHAPE, 10 * (c + 1), np.float32))
        write(src / "rois" / f"{case}.nii.gz", BRAIN_A.astype(np.uint8))
    write(src / "masks" / "caseB.nii", mask)
    (src / "normal.txt").write_text("caseA\n")
    (tmp_path / "test.txt").write_text("caseC\n")
    folder = nifti_folders.convert(src, 24, raw_folder=tmp_path / "raw", modality="MRI", channel_names="FLAIR,T1",
                                   test_cases=tmp_path / "test.txt", roi_name="brain")
    meta = meta_of(folder)
    assert meta["name"] == "mine" and meta["channel_names"] == {"0": "FLAIR", "1": "T1"} and meta["roi_name"] == "brain"
    assert meta["training"] == {"caseA": {"role": "normal"}, "caseB": {"role": "unlabeled"}}
    assert meta["test"] == {"caseC": {}}
    assert read(folder / "imagesTr" / "caseB_0001.nii.gz").max() == 20
    np.testing.assert_array_equal(read(folder / "imagesTs" / "caseC_0000.nii.gz"), np.full(SHAPE, 10, np.float32))
    np.testing.assert_array_equal(read(folder / "masksTr" / "caseB.nii.gz"), mask > 0)
    np.testing.assert_array_equal(read(folder / "roisTs" / "caseC.nii.gz"), BRAIN_A)
    assert sorted(p.name for p in folder.rglob("*") if p.is_file() and p.name != "dataset.json") == sorted(
        [f"{c}_{k:04d}.nii.gz" for c in ("caseA", "caseB", "caseC") for k in (0, 1)]
        + ["caseB.nii.gz"] + [f"{c}.nii.gz" for c in ("caseA", "caseB", "caseC")])


def test_nifti_folders_single_channel_through_cli_and_malformed(tmp_path, monkeypatch):
    src = tmp_path / "ixi"
    for case in ("IXI001", "IXI002", "pat_0001", "pat_0002"):
        write(src / "images" / f"{case}.nii.gz", np.ones(SHAPE, np.float32))
    monkeypatch.setenv("AUTOUAD_raw", str(tmp_path / "raw"))
    assert main(["nifti-folders", "-i", str(src), "-d", "25", "--modality", "CT", "--normal-cases", "IXI*",
                 "--normal-reference", "slices_without_anomaly"]) == 0
    meta = meta_of(tmp_path / "raw" / "Dataset025_ixi")
    assert meta["modality"] == "CT" and meta["channel_names"] == {"0": "channel_0"}
    assert meta["normal_reference"] == "slices_without_anomaly" and "roi_name" not in meta
    assert {c: e["role"] for c, e in meta["training"].items()} == {
        "IXI001": "normal", "IXI002": "normal", "pat_0001": "unlabeled", "pat_0002": "unlabeled"}
    # case ids that end in _NNNN: one channel name says each file is a case
    only = tmp_path / "suffixed"
    for case in ("scan_0000", "scan_0001"):
        write(only / "images" / f"{case}.nii.gz", np.ones(SHAPE, np.float32))
    folder = nifti_folders.convert(only, 26, raw_folder=tmp_path / "raw", modality="MRI", channel_names="T1",
                                   normal_cases=r"re:scan_000[1-9]")
    assert meta_of(folder)["training"] == {"scan_0000": {"role": "unlabeled"}, "scan_0001": {"role": "normal"}}
    raw = tmp_path / "raw_bad"
    write(src / "masks" / "IXI003.nii.gz", np.zeros(SHAPE, np.uint8))
    expect_conversion_error(lambda: nifti_folders.convert(src, 27, raw_folder=raw, modality="MRI"),
                            str(src / "masks"), raw)
    expect_conversion_error(lambda: nifti_folders.convert(tmp_path / "none", 27, raw_folder=raw, modality="MRI"),
                            str(tmp_path / "none" / "images"), raw)
