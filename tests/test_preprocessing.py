"""Preprocessing: exact mapping back to the raw voxels, restoring to file geometry, skipping, determinism."""
from types import SimpleNamespace

import numpy as np
import SimpleITK as sitk

from autouad.dataset.raw_dataset import RawDatasetWriter, load_raw_dataset
from autouad.preprocessing.normalization import equalize_slice_histograms
from autouad.preprocessing.orientation import orientation_of
from autouad.planning.plans import Normalization, Preprocessing
from autouad.preprocessing.preprocessor import (CasePreprocessor, preprocess_dataset, preprocessed_to_file_index,
                                                restore_to_file_array)
from autouad.utils.images import Geometry

# ITK axis 0 runs toward -S (superior-inferior reversed), axis 1 toward +L, axis 2 toward -P:
# a permuted and flipped orientation, so the test exercises the reorientation too.
OBLIQUE_DIRECTION = (0, 1, 0,
                     0, 0, -1,
                     -1, 0, 0)
SHAPE = (14, 20, 18)  # numpy (k, j, i)
SPACING = (2.0, 0.9, 1.3)  # ITK (i, j, k)


def encoded_volume():
    k, j, i = np.indices(SHAPE)
    return (k * 10000 + j * 100 + i + 1).astype(np.float32)  # >0 everywhere; decodes to its own index


def make_dataset(raw, with_roi=True):
    values = encoded_volume()
    roi = np.zeros(SHAPE, np.uint8)
    roi[2:12, 3:17, 2:16] = 1
    mask = np.zeros(SHAPE, np.uint8)
    mask[4:9, 6:12, 5:11] = 1
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(SPACING)
    image.SetDirection(OBLIQUE_DIRECTION)
    image.SetOrigin((10.0, -5.0, 3.0))
    with RawDatasetWriter(21, "Map", modality="MRI", channel_names={"0": "X"}, roi_name="brain" if with_roi else None,
                          normal_reference="slices_without_anomaly", raw_folder=raw) as w:
        w.add_case("case_a", [image], role="unlabeled", mask=mask, roi=roi if with_roi else None,
                   reference_image=image)
    return w.target, values, roi, mask


def preprocessing(target_spacing=(0.7, 1.1), slice_size=(32, 32), order=0, mode="spacing", crop="roi",
                  value_range=(0, 1e7)) -> Preprocessing:
    return Preprocessing(mode=mode, target_spacing=list(target_spacing), slice_size=list(slice_size), crop=crop,
                         image_order=order, mask_order=1, channels=["X"], data_folder="p_2d",
                         normalization=Normalization("fixed_range", range=list(value_range)))


def test_orientation_is_exact_and_invertible():
    geometry = Geometry(SPACING, (0, 0, 0), OBLIQUE_DIRECTION, tuple(reversed(SHAPE)))
    o = orientation_of(geometry)
    values = encoded_volume()
    canonical = o.to_canonical(values)
    assert np.array_equal(o.from_canonical(canonical), values)
    for idx in [(0, 0, 0), (3, 7, 11), tuple(s - 1 for s in canonical.shape)]:
        k, j, i = o.index_to_file(idx, SHAPE)
        assert canonical[idx] == values[k, j, i]
    # canonical axis 0 must run inferior -> superior in physical space
    image = sitk.GetImageFromArray(values)
    image.SetDirection(OBLIQUE_DIRECTION)
    image.SetSpacing(SPACING)
    z = [image.TransformIndexToPhysicalPoint(tuple(int(v) for v in reversed(o.index_to_file((s, 0, 0), SHAPE))))[2]
         for s in (0, 1)]
    assert z[1] > z[0]


def test_preprocessed_pixel_maps_back_to_its_voxel(tmp_path):
    folder, values, roi, _ = make_dataset(tmp_path)
    case = load_raw_dataset(folder).cases[0]
    meta, data, mask, roi_p = CasePreprocessor(preprocessing(), "MRI", "slices_without_anomaly").run(case)
    assert data.shape[1:] == (1, 32, 32)
    checked = 0
    for s in range(meta["num_slices"]):
        rows, cols = np.nonzero(data[s, 0] > 0)
        for r, c in zip(rows, cols):
            code = int(round(float(data[s, 0, r, c]) * 1e7))
            expected = preprocessed_to_file_index(meta, s, int(r), int(c))
            assert (code - 1) // 10000 == expected[0] and (code - 1) // 100 % 100 == expected[1] \
                and (code - 1) % 100 == expected[2], (s, r, c)
            assert roi[expected] == 1
            checked += 1
    assert checked > 500


def test_slices_are_the_roi_slices_and_flags_follow_the_mask(tmp_path):
    folder, values, roi, mask = make_dataset(tmp_path)
    case = load_raw_dataset(folder).cases[0]
    meta, data, mask_p, roi_p = CasePreprocessor(preprocessing(), "MRI", "slices_without_anomaly").run(case)
    o = orientation_of(Geometry.from_dict(meta["file_geometry"]))
    roi_c, mask_c = o.to_canonical(roi), o.to_canonical(mask)
    assert meta["slices"]["canonical_index"] == np.flatnonzero(roi_c.any(axis=(1, 2))).tolist()
    has = [bool(mask_c[z].any()) for z in meta["slices"]["canonical_index"]]
    assert meta["slices"]["has_anomaly"] == has
    assert meta["slices"]["is_reference"] == [not h for h in has]
    assert mask_p.dtype == np.uint8 and mask_p.shape == (meta["num_slices"], 32, 32)


def test_restore_to_file_geometry(tmp_path):
    folder, values, roi, mask = make_dataset(tmp_path)
    case = load_raw_dataset(folder).cases[0]
    meta, data, mask_p, roi_p = CasePreprocessor(preprocessing(), "MRI", "slices_without_anomaly").run(case)
    restored = restore_to_file_array(mask_p.astype(np.float32), meta) > 0.5
    assert restored.shape == mask.shape
    dice = 2 * (restored & (mask > 0)).sum() / (restored.sum() + mask.sum())
    assert dice > 0.9
    # without resampling (target spacing = file spacing) the round trip is exact
    o = orientation_of(Geometry.from_dict(meta["file_geometry"]))
    spacing = o.canonical_spacing(Geometry.from_dict(meta["file_geometry"]))
    meta2, data2, mask2, _ = CasePreprocessor(preprocessing(target_spacing=spacing[1:], slice_size=(24, 24)),
                                              "MRI", "slices_without_anomaly").run(case)
    assert np.array_equal(restore_to_file_array(mask2.astype(np.float32), meta2, order=0) > 0.5, mask > 0)
    restored_values = restore_to_file_array(data2[:, 0], meta2, order=0) * 1e7
    assert np.allclose(restored_values[roi > 0], values[roi > 0], atol=0.5)


def test_dataset_preprocessing_skips_done_cases_and_is_deterministic(tmp_path):
    folder, *_ = make_dataset(tmp_path / "raw")
    ds = load_raw_dataset(folder)
    plans = SimpleNamespace(plans_name="p", preprocessing=preprocessing(order=3))
    out = tmp_path / "pre"
    first = preprocess_dataset(ds, plans, out, num_processes=1)
    a = np.load(out / "case_a.npy")
    assert first["done"] == 1 and first["skipped"] == 0
    second = preprocess_dataset(ds, plans, out, num_processes=1)
    assert second["done"] == 0 and second["skipped"] == 1
    plans.preprocessing.slice_size = [40, 40]  # a changed plan redoes the case
    third = preprocess_dataset(ds, plans, out, num_processes=1)
    assert third["done"] == 1 and np.load(out / "case_a.npy").shape[-1] == 40
    plans.preprocessing.slice_size = [32, 32]
    preprocess_dataset(ds, plans, out, num_processes=1)
    assert np.array_equal(np.load(out / "case_a.npy"), a)
    assert np.load(out / "case_a.npy", mmap_mode="r").shape == a.shape  # memory-mappable, no pickle


def test_2d_resize_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    img = (rng.random((40, 50)) * 255).astype(np.uint8)
    mask = np.zeros((40, 50), np.uint8)
    mask[10:20, 20:35] = 1
    with RawDatasetWriter(22, "Flat", modality="X-ray", channel_names={"0": "X"}, file_ending=".png",
                          raw_folder=tmp_path) as w:
        w.add_case("img", [img], role="unlabeled", mask=mask)
    case = load_raw_dataset(w.target).cases[0]
    p = preprocessing(mode="resize", slice_size=(64, 64), crop="none", value_range=(0, 255))
    meta, data, mask_p, _ = CasePreprocessor(p, "X-ray", "cases").run(case)
    assert data.shape == (1, 1, 64, 64)
    y, x = preprocessed_to_file_index(meta, 0, 63, 0)
    assert (y, x) == (39, 0)
    restored = restore_to_file_array(mask_p.astype(np.float32), meta) > 0.5
    assert restored.shape == (40, 50)
    assert (restored == (mask > 0)).mean() > 0.98


def test_histogram_equalisation_flattens_the_histogram():
    rng = np.random.default_rng(0)
    vol = rng.beta(2, 8, size=(2, 64, 64)).astype(np.float32)  # skewed toward dark
    fg = np.ones_like(vol, dtype=bool)
    eq = equalize_slice_histograms(vol, fg)
    hist, _ = np.histogram(eq[0], bins=4, range=(0, 1))
    assert hist.min() > 0.15 * eq[0].size
    assert eq.min() >= 0 and eq.max() <= 1
    # monotone: the order of the intensities is kept
    order = np.argsort(vol[0].ravel())
    assert np.all(np.diff(eq[0].ravel()[order]) >= -1e-6)
