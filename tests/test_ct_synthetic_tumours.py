"""ct-synthetic-tumours: normal training slabs of an organ and test copies with synthetic tumours
that lie inside the organ and change the CT only there."""
import numpy as np
import pytest
import SimpleITK as sitk

from autouad.utils.files import load_json
from dataset_conversion import ct_synthetic_tumours
from dataset_conversion.convert import ConversionError
from tests.conftest import shared_data, write_volume


def small_ct(root):
    """A 24-slice body of fat (-100 HU) holding a 'liver' ellipsoid of 50 HU on slices 12-21; the
    segmentation has 12 slices and, like ct_abdomen_example's, the CT's origin, while its organ
    lies on the CT's last 12 slices."""
    zz, yy, xx = np.mgrid[:24, :40, :48]
    hu = np.full((24, 40, 48), -1000.0, np.float32)
    hu[((yy - 20) / 18) ** 2 + ((xx - 24) / 22) ** 2 < 1] = -100.0
    liver = ((zz - 16.5) / 5.5) ** 2 + ((yy - 20) / 12) ** 2 + ((xx - 24) / 15) ** 2 < 1
    hu[liver] = 50.0
    hu += np.random.default_rng(0).normal(0, 5, hu.shape).astype(np.float32)
    seg = np.where(liver, 5, 0).astype(np.uint8)[12:]
    write_volume(hu, root / "example_ct.nii.gz", spacing=(2.0, 2.0, 3.0))
    write_volume(seg.astype(np.uint8), root / "example_seg.nii.gz", spacing=(2.0, 2.0, 3.0))
    return hu, liver


def test_slabs_and_tumours_inside_the_organ(tmp_path):
    hu, liver = small_ct(tmp_path / "src")
    folder = ct_synthetic_tumours.convert(tmp_path / "src", 5, raw_folder=tmp_path / "raw", num_test=4, seed=1)
    meta = load_json(folder / "dataset.json")
    assert meta["modality"] == "CT" and meta["roi_name"] == "liver"
    assert meta["conversion"]["options"]["segmentation_offset"] == 12  # found from the organ's HU
    assert meta["training"] == {"slab_0": {"role": "normal"}, "slab_1": {"role": "normal"}}
    assert sorted(meta["test"]) == ["tumour_00_round_hypo", "tumour_01_lobulated_hyper", "tumour_02_round_hyper",
                                    "tumour_03_lobulated_hypo"]
    organ_z = np.flatnonzero(liver.any(axis=(1, 2)))
    slab_slices = [sitk.ReadImage(str(folder / "imagesTr" / f"slab_{k}_0000.nii.gz")).GetSize()[2] for k in (0, 1)]
    assert sum(slab_slices) == len(organ_z)
    first = sitk.ReadImage(str(folder / "imagesTr" / "slab_1_0000.nii.gz"))
    source = sitk.ReadImage(str(tmp_path / "src" / "example_ct.nii.gz"))
    # a slab keeps its slices' place in space
    assert np.allclose(first.GetOrigin(), source.TransformIndexToPhysicalPoint((0, 0, int(organ_z[0]) + slab_slices[0])))
    original = hu[organ_z[0]:organ_z[-1] + 1]
    for case, info in meta["test"].items():
        assert info == {"label": 1}
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "imagesTs" / f"{case}_0000.nii.gz")))
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "masksTs" / f"{case}.nii.gz"))).astype(bool)
        roi = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "roisTs" / f"{case}.nii.gz"))).astype(bool)
        assert mask.any() and not (mask & ~roi).any()
        changed = np.abs(image - original) > 1e-3
        assert not (changed & ~roi).any()  # nothing changes outside the organ
        shift = float(np.mean(image[mask] - original[mask]))
        assert (shift < -20) if case.endswith("hypo") else (shift > 20)


def test_a_segmentation_that_fits_nowhere_is_refused(tmp_path):
    small_ct(tmp_path / "src")
    write_volume(np.zeros((12, 40, 47), np.uint8), tmp_path / "src" / "example_seg.nii.gz", spacing=(2.0, 2.0, 3.0))
    with pytest.raises(ConversionError, match="does not match"):
        ct_synthetic_tumours.convert(tmp_path / "src", 5, raw_folder=tmp_path / "raw")


def test_real_ct_abdomen_example(tmp_path):
    source = shared_data("ct_abdomen_example")
    folder = ct_synthetic_tumours.convert(source, 6, raw_folder=tmp_path / "raw", num_test=2)
    meta = load_json(folder / "dataset.json")
    assert meta["conversion"]["options"]["segmentation_offset"] == 82  # the liver lies on the last 30 slices
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "imagesTr" / "slab_0_0000.nii.gz")))
    roi = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "roisTr" / "slab_0.nii.gz"))).astype(bool)
    assert 20 < np.median(image[roi]) < 90  # liver parenchyma, not air
