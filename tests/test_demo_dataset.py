"""The demo converter: a synthetic brain MRI dataset made from nilearn's MNI152 template.

Normal subjects get an all-zero anomaly mask (not no mask), so that evaluation counts their voxels as
true negatives; patients' masks are their lesions. Small counts and 3-4 mm voxels keep this quick.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from autouad.dataset.raw_dataset import load_raw_dataset
from autouad.dataset.validation import LoadedCase, check_dataset_json, load_case
from autouad.utils.images import Geometry
from dataset_conversion import demo
from dataset_conversion.convert import main

SMALL = dict(num_normal=2, num_patients=2, num_test=1, spacing=3.0)


def read(path):
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), Geometry.of(image)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = demo.convert(7, raw_folder=tmp_path_factory.mktemp("raw"), seed=0, **SMALL)
    return load_raw_dataset(folder)


def test_dataset_json(dataset):
    meta = json.loads((dataset.folder / "dataset.json").read_text())
    assert dataset.folder.name == "Dataset007_DemoBrainMRI"
    assert meta["modality"] == "MRI"
    assert meta["channel_names"] == {"0": "FLAIR", "1": "T1"}
    assert meta["roi_name"] == "brain" and meta["normal_reference"] == "cases"
    assert meta["training"] == {"demo_normal_000": {"role": "normal", "label": 0},
                                "demo_normal_001": {"role": "normal", "label": 0},
                                "demo_patient_000": {"role": "unlabeled", "label": 1},
                                "demo_patient_001": {"role": "unlabeled", "label": 1}}
    assert meta["test"] == {"demo_test_000": {"label": 1}}
    assert "synthetic" in meta["description"].lower()
    assert "McConnell Brain Imaging Centre" in meta["licence"]
    conversion = meta["conversion"]
    assert conversion["format"] == "demo" and conversion["seed"] == 0
    assert conversion["options"] == dict(SMALL, seed=0, normal_reference="cases")
    assert set(conversion["lesions"]) == {"demo_patient_000", "demo_patient_001", "demo_test_000"}
    for lesions in conversion["lesions"].values():
        assert 1 <= len(lesions) <= 3
        for lesion in lesions:
            assert lesion["shape"] in ("ellipsoid", "blob") and lesion["voxels"] > 0
            assert 3.0 <= lesion["radius_mm"] <= 20.0
            assert 0.1 <= abs(lesion["flair_change"]) <= 0.6 and lesion["t1_change"] < 0
    assert check_dataset_json(meta, dataset.folder) == []


def test_every_case_loads_with_consistent_geometry(dataset):
    assert len(dataset.training_cases()) == 4 and len(dataset.test_cases()) == 1
    for case in dataset.cases:
        assert case.mask is not None and case.roi is not None, case.case_id
        loaded = load_case(case)
        assert isinstance(loaded, LoadedCase), loaded
        arrays = [read(p) for p in case.images]
        mask, mask_geometry = read(case.mask)
        roi, roi_geometry = read(case.roi)
        for array, geometry in arrays:
            assert array.dtype == np.float32 and array.shape == mask.shape == roi.shape
            assert geometry.mismatch(mask_geometry) is None and geometry.mismatch(roi_geometry) is None
            assert geometry.spacing == (3.0, 3.0, 3.0)
            assert array.min() >= 0 and np.isfinite(array).all()
            assert not array[roi == 0].any(), "voxels outside the brain must be zero"
            assert (array[roi > 0] > 0).mean() > 0.99
        assert set(np.unique(mask)) <= {0, 1} and set(np.unique(roi)) == {0, 1}
        # cropped to the head: the brain nearly fills the volume but does not touch its border
        assert not (roi[0].any() or roi[-1].any() or roi[:, 0].any() or roi[:, -1].any()
                    or roi[:, :, 0].any() or roi[:, :, -1].any())


def test_lesions_inside_brain_and_only_in_patients(dataset):
    for case in dataset.cases:
        mask, _ = read(case.mask)
        roi, _ = read(case.roi)
        if case.role == "normal":
            assert not mask.any(), f"{case.case_id}: a normal subject's mask must be all zero"
        else:
            assert mask.sum() > 0, f"{case.case_id}: a patient without lesion voxels"
            assert not (mask & (roi == 0)).any(), f"{case.case_id}: lesion voxels outside the brain"


def test_flair_lesion_polarity():
    template = demo.load_template(3.0)
    checked = 0
    for index in range(6):
        subject = demo.synthesise_subject(template, demo.subject_seed(0, "patient", index), with_lesions=True)
        assert subject.lesion.any() and not (subject.lesion & ~subject.brain).any()
        for lesion in subject.lesions:
            shell = ndimage.binary_dilation(lesion.mask, iterations=2) & ~subject.lesion & subject.brain
            inside, around = subject.flair[lesion.mask].mean(), subject.flair[shell].mean()
            if lesion.flair_change > 0:
                assert inside > around, (index, lesion.flair_change, inside, around)
                checked += 1
            elif lesion.flair_change <= -0.3:
                assert inside < around, (index, lesion.flair_change, inside, around)
    assert checked >= 3


def test_lesion_free_twin_differs_only_around_the_lesions():
    template = demo.load_template(3.0)
    seed = demo.subject_seed(0, "patient", 1)
    patient = demo.synthesise_subject(template, seed, with_lesions=True)
    twin = demo.synthesise_subject(template, seed, with_lesions=False)
    assert not twin.lesion.any() and not twin.lesions
    assert np.array_equal(patient.brain, twin.brain)
    touched = np.zeros(patient.brain.shape, dtype=bool)
    for lesion in patient.lesions:
        touched[lesion.box] = True
    assert np.array_equal(patient.flair[~touched], twin.flair[~touched])
    assert not np.array_equal(patient.flair[patient.lesion], twin.flair[patient.lesion])


def test_same_seed_same_arrays_other_seed_different(dataset, tmp_path):
    small = dict(SMALL, num_normal=1, num_patients=1, num_test=0)
    again = load_raw_dataset(demo.convert(8, raw_folder=tmp_path / "a", seed=0, **small))
    other = load_raw_dataset(demo.convert(8, raw_folder=tmp_path / "b", seed=1, **small))
    first = {c.case_id: c for c in dataset.cases}
    for case in again.cases:  # the first subjects of each group do not depend on the counts
        for mine, theirs in zip(case.all_files, first[case.case_id].all_files):
            a, ga = read(mine)
            b, gb = read(theirs)
            assert a.tobytes() == b.tobytes() and ga == gb, mine.name
    for case in other.cases:
        a, _ = read(case.images[0])
        b, _ = read(first[case.case_id].images[0])
        assert a.shape != b.shape or not np.array_equal(a, b)


def test_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUTOUAD_raw", str(tmp_path))
    args = ["demo", "-d", "5", "--num-normal", "1", "--num-patients", "1", "--num-test", "0",
            "--spacing", "4", "--seed", "3", "--normal-reference", "slices_without_anomaly"]
    assert main(args) == 0
    folder = tmp_path / "Dataset005_DemoBrainMRI"
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["normal_reference"] == "slices_without_anomaly" and "test" not in meta
    assert meta["conversion"]["options"]["seed"] == 3 and meta["conversion"]["options"]["spacing"] == 4.0
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [
        "demo_normal_000_0000.nii.gz", "demo_normal_000_0001.nii.gz",
        "demo_patient_000_0000.nii.gz", "demo_patient_000_0001.nii.gz"]
    assert "wrote" in capsys.readouterr().out
    assert main(args) == 1  # exists already
    assert "already exists" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0


def test_bad_options():
    with pytest.raises(ValueError, match="num-normal"):
        demo.convert(9, num_normal=-1)
    with pytest.raises(ValueError, match="spacing"):
        demo.convert(9, spacing=0.1)


def test_missing_nilearn_names_the_file(monkeypatch):
    monkeypatch.setattr(demo.importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(FileNotFoundError, match="mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz.*nilearn"):
        demo.load_template.__wrapped__(3.0)
