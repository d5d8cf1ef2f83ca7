"""brats-deepmedic and chestxray-folders on small files written in their layouts (the real data
tests in test_real_data.py run them on ../shared/data where it exists)."""
import numpy as np
import pytest
import SimpleITK as sitk

from autouad.utils.files import load_json
from dataset_conversion import brats_deepmedic
from dataset_conversion.convert import ConversionError, main as convert_main
from tests.conftest import write_volume


def deepmedic_layout(root):
    rng = np.random.default_rng(0)
    for split, case in (("train", "brats_2013_pat0001_1"), ("validation", "brats_2013_pat0002_1"),
                        ("test", "brats_2013_pat0003_1")):
        d = root / split / case
        brain = np.zeros((6, 10, 12), np.uint8)
        brain[1:5, 2:8, 2:10] = 1
        labels = np.zeros((6, 10, 12), np.uint8)
        labels[2, 4:6, 4:6] = 4  # any label > 0 is tumour
        labels[3, 4, 4] = 2
        for name in ("Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz"):
            write_volume((rng.standard_normal((6, 10, 12)) * brain).astype(np.float32), d / name)
        write_volume(labels, d / "OTMultiClass.nii.gz")
        write_volume(brain, d / "brainmask.nii.gz")
    return root


def test_brats_deepmedic(tmp_path):
    src = deepmedic_layout(tmp_path / "src")
    folder = brats_deepmedic.convert(src, 1, raw_folder=tmp_path / "raw")
    meta = load_json(folder / "dataset.json")
    assert meta["normal_reference"] == "slices_without_anomaly" and meta["channel_names"] == {"0": "FLAIR", "1": "T1c"}
    assert set(meta["training"]) == {"brats_2013_pat0001_1", "brats_2013_pat0002_1", "brats_2013_pat0003_1"}
    assert meta["training"]["brats_2013_pat0001_1"] == {"role": "unlabeled", "patient": "brats_2013_pat0001"}
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "masksTr" / "brats_2013_pat0001_1.nii.gz")))
    assert mask.dtype == np.uint8 and mask.sum() == 5 and set(np.unique(mask)) == {0, 1}
    kept = brats_deepmedic.convert(src, 2, raw_folder=tmp_path / "raw", keep_test_split=True)
    assert list(load_json(kept / "dataset.json")["test"]) == ["brats_2013_pat0003_1"]


def test_brats_deepmedic_missing_file_leaves_nothing(tmp_path):
    src = deepmedic_layout(tmp_path / "src")
    (src / "test" / "brats_2013_pat0003_1" / "brainmask.nii.gz").unlink()
    with pytest.raises(ConversionError, match="brainmask.nii.gz"):
        brats_deepmedic.convert(src, 1, raw_folder=tmp_path / "raw")
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())


def test_chestxray_folders_through_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOUAD_raw", str(tmp_path / "raw"))
    rng = np.random.default_rng(0)
    files = {"train/NORMAL/IM-0115-0001.jpeg": 0, "train/NORMAL/IM-0115-0002.jpeg": 0,
             "train/PNEUMONIA/person1_bacteria_1.jpeg": 1, "train/PNEUMONIA/person1_virus_7.jpeg": 1,
             "test/NORMAL/IM-0001-0001.jpeg": 0, "test/PNEUMONIA/person9_bacteria_3.jpeg": 1}
    for rel in files:
        path = tmp_path / "src" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        rgb = sitk.GetImageFromArray((rng.random((16, 20, 3)) * 255).astype(np.uint8), isVector=True)
        sitk.WriteImage(rgb, str(path))
    assert convert_main(["chestxray-folders", "-i", str(tmp_path / "src"), "-d", "4"]) == 0
    folder = tmp_path / "raw" / "Dataset004_ChestXray"
    meta = load_json(folder / "dataset.json")
    assert meta["modality"] == "X-ray" and meta["file_ending"] == ".png"
    assert meta["training"]["NORMAL_IM-0115-0001"] == {"role": "normal", "label": 0, "patient": "IM-0115"}
    assert meta["training"]["PNEUMONIA_person1_virus_7"] == {"role": "unlabeled", "label": 1, "patient": "person1"}
    assert meta["test"] == {"NORMAL_IM-0001-0001": {"label": 0, "patient": "IM-0001"},
                            "PNEUMONIA_person9_bacteria_3": {"label": 1, "patient": "person9"}}
    grey = sitk.ReadImage(str(folder / "imagesTr" / "NORMAL_IM-0115-0001_0000.png"))
    assert grey.GetNumberOfComponentsPerPixel() == 1 and grey.GetSize() == (20, 16)
    assert convert_main(["chestxray-folders", "-i", str(tmp_path / "nowhere"), "-d", "5"]) == 1


def write_pictures(root, names, rng, dtype=np.uint8):
    for rel in names:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        top = 65535 if dtype == np.uint16 else 255
        sitk.WriteImage(sitk.GetImageFromArray((rng.random((16, 20)) * top).astype(dtype)), str(path))


def test_chestxray_folders_reports_an_unknown_folder_and_reads_valid(tmp_path):
    from dataset_conversion import chestxray_folders
    rng = np.random.default_rng(1)
    write_pictures(tmp_path / "src", ["train/NORMAL/a.png", "train/PNEUMONIA/b.png", "valid/NORMAL/c.png",
                                      "test/NORMAL/d.png", "test/PNEUMONIA/e.png"], rng)
    folder = chestxray_folders.convert(tmp_path / "src", 4, raw_folder=tmp_path / "raw")
    assert "NORMAL_c" in load_json(folder / "dataset.json")["training"]   # valid/ joins the training cases
    write_pictures(tmp_path / "src", ["extra/NORMAL/f.png"], rng)
    with pytest.raises(ConversionError, match="extra: unknown folder"):
        chestxray_folders.convert(tmp_path / "src", 5, raw_folder=tmp_path / "raw")


def test_follow_ups_of_one_patient_are_one_patient(tmp_path):
    """ChestX-ray14-style names <patient>_<follow-up>: the follow-ups share a patient (and so a
    fold); a pattern of the user's own names the patient in other naming schemes."""
    from dataset_conversion import chestxray_folders
    rng = np.random.default_rng(2)
    write_pictures(tmp_path / "src", ["train/NORMAL/00000001_000.png", "train/NORMAL/00000001_001.png",
                                      "train/PNEUMONIA/00000002_000.png", "test/NORMAL/00000003_000.png"], rng)
    folder = chestxray_folders.convert(tmp_path / "src", 6, raw_folder=tmp_path / "raw")
    training = load_json(folder / "dataset.json")["training"]
    assert {training[c]["patient"] for c in ("NORMAL_00000001_000", "NORMAL_00000001_001")} == {"00000001"}
    write_pictures(tmp_path / "own", ["train/NORMAL/pt7-scan1.png", "train/NORMAL/pt7-scan2.png",
                                      "train/PNEUMONIA/pt8-scan1.png"], rng)
    folder = chestxray_folders.convert(tmp_path / "own", 7, raw_folder=tmp_path / "raw", patient_pattern=r"^(pt\d+)-")
    assert load_json(folder / "dataset.json")["training"]["NORMAL_pt7-scan2"]["patient"] == "pt7"


def test_a_16_bit_picture_reads_as_its_8_bit_self_in_conversion_and_prediction(tmp_path):
    """Conversion and prediction read images through one function: a 16-bit PNG gives the array
    of its 8-bit version (within the rounding of the 8-bit copy)."""
    from autouad.utils.images import read_image
    from dataset_conversion.common import read_grey_uint8
    rng = np.random.default_rng(3)
    values = (rng.random((16, 20)) * 65535).astype(np.uint16)
    sitk.WriteImage(sitk.GetImageFromArray(values), str(tmp_path / "x16.png"))
    sitk.WriteImage(sitk.GetImageFromArray(np.round(values / 257).astype(np.uint8)), str(tmp_path / "x8.png"))
    assert np.abs(read_image(tmp_path / "x16.png")[0] - read_image(tmp_path / "x8.png")[0]).max() <= 0.5
    assert np.array_equal(read_grey_uint8(tmp_path / "x16.png"), read_grey_uint8(tmp_path / "x8.png"))
