"""Fingerprint values against values computed by hand on constructed volumes."""
import numpy as np
import pytest

from autouad.dataset.raw_dataset import RawDatasetWriter
from autouad.fingerprint.extractor import DatasetFingerprintExtractor


def make_dataset(raw, normal_reference="cases"):
    """Two cases of 6 x 10 x 8 voxels (z, y, x), spacing (x, y, z) = (0.5, 0.7, 3.0).

    ROI: rows 2..7, columns 2..5, slices 1..4 (z 0 and 5 have no ROI).
    Channel 0: 10 inside the ROI, 30 inside the anomaly (bright); channel 1: 5 in the ROI, 1 in the anomaly.
    The patient's anomaly: slices 2 and 3, rows 4..5, columns 3..4 (8 voxels)."""
    import SimpleITK as sitk

    shape = (6, 10, 8)
    roi = np.zeros(shape, np.uint8)
    roi[1:5, 2:8, 2:6] = 1
    anomaly = np.zeros(shape, np.uint8)
    anomaly[2:4, 4:6, 3:5] = 1
    cases = {}
    for case, has_anomaly in (("normal_a", False), ("patient_b", True)):
        c0 = np.where(roi > 0, 10.0, 0.0).astype(np.float32)
        c1 = np.where(roi > 0, 5.0, 0.0).astype(np.float32)
        if has_anomaly:
            c0[anomaly > 0], c1[anomaly > 0] = 30.0, 1.0
        cases[case] = (c0, c1, anomaly if has_anomaly else np.zeros(shape, np.uint8))
    with RawDatasetWriter(7, "Fp", modality="MRI", channel_names={"0": "FLAIR", "1": "T1"}, roi_name="brain",
                          normal_reference=normal_reference, raw_folder=raw) as w:
        for case, (c0, c1, mask) in cases.items():
            images = []
            for a in (c0, c1):
                im = sitk.GetImageFromArray(a)
                im.SetSpacing((0.5, 0.7, 3.0))
                images.append(im)
            ref = images[0]
            w.add_case(case, images, role="normal" if case == "normal_a" else "unlabeled",
                       mask=mask, roi=roi, reference_image=ref)
    return w.target


def test_fingerprint_values_by_hand(tmp_path):
    folder = make_dataset(tmp_path, normal_reference="slices_without_anomaly")
    fp = DatasetFingerprintExtractor(folder, num_processes=1).run()
    cases = {c["case"]: c for c in fp["cases"]}
    b = cases["patient_b"]
    assert b["spacing"] == pytest.approx([3.0, 0.7, 0.5])  # canonical (slice, row, column)
    assert b["shape"] == [6, 10, 8] and b["n_slices"] == 6 and b["dimension"] == 3
    assert b["foreground_definition"] == "roi"
    assert b["foreground_voxels"] == 4 * 6 * 4 == 96
    assert b["foreground_slices"] == 4
    assert b["roi_fraction"] == pytest.approx(96 / (6 * 10 * 8))
    # FLAIR inside the ROI: 88 voxels of 10 and 8 of 30
    values = np.array([10.0] * 88 + [30.0] * 8)
    stats = b["intensity"]["FLAIR"]
    assert stats["mean"] == pytest.approx(values.mean())
    assert stats["std"] == pytest.approx(values.std())
    assert stats["median"] == pytest.approx(10.0)
    assert stats["percentile_99_5"] == pytest.approx(np.percentile(values, 99.5))
    assert stats["percentile_00_5"] == pytest.approx(10.0)
    assert b["anomaly_voxels"] == 8
    assert b["anomaly_fraction"] == pytest.approx(8 / 96)
    assert b["anomaly_slices"] == 2
    assert b["polarity"]["FLAIR"]["polarity"] == "bright"
    assert b["polarity"]["FLAIR"]["inside_mean"] == pytest.approx(30.0)
    assert b["polarity"]["FLAIR"]["surround_mean"] == pytest.approx(10.0)
    assert b["polarity"]["FLAIR"]["contrast"] == pytest.approx(20.0 / values.std())
    assert b["polarity"]["T1"]["polarity"] == "dark"
    # slice protocol: the patient's 4 ROI slices minus the 2 anomaly slices; the normal case's 4
    assert b["reference_slices"] == 2 and cases["normal_a"]["reference_slices"] == 4
    s = fp["summary"]
    assert s["num_normal_cases"] == 1 and s["num_unlabeled_cases"] == 1
    assert s["num_foreground_slices"] == 8 and s["num_reference_slices"] == 6
    assert s["num_normal_slices"] == 4 and s["num_unlabeled_slices"] == 4
    assert s["anomaly_polarity"]["FLAIR"]["polarity"] == "bright"
    assert s["median_spacing"] == pytest.approx([3.0, 0.7, 0.5])
    # pooled foreground samples: 96 voxels of the normal case (10) and the patient's 96
    pooled = np.array([10.0] * 96 + list(values))
    assert s["foreground_intensity"]["FLAIR"]["mean"] == pytest.approx(pooled.mean())


def test_case_protocol_gives_no_reference_slices_in_patients(tmp_path):
    folder = make_dataset(tmp_path, normal_reference="cases")
    fp = DatasetFingerprintExtractor(folder, num_processes=1).run()
    assert {c["case"]: c["reference_slices"] for c in fp["cases"]} == {"normal_a": 4, "patient_b": 0}
