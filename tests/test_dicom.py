"""Finding and reading DICOM series (autouad.utils.dicom) on series written here with SimpleITK."""
from __future__ import annotations

import struct
import uuid
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from autouad.utils.dicom import find_dicom_series, is_dicom_folder, read_dicom_series
from autouad.utils.images import ImageReadError


def write_dicom_series(volume: sitk.Image, folder: Path, series_uid: str | None = None,
                       modality: str = "MR") -> list[Path]:
    """Write a 3D ``volume`` as a DICOM series, one file per slice, and return the files.

    The pattern of SimpleITK's "DicomSeriesFromArray" example: each 2D slice carries the tags that
    place it in space (ImagePositionPatient from the volume's index-to-physical transform,
    ImageOrientationPatient from the direction's first two columns), and KeepOriginalImageUID makes
    GDCM keep the UIDs given here. Pixels are written as int16. Readers stack the slices along the
    cross product of the two in-plane directions, so a direction that is a proper rotation
    (determinant +1) comes back exactly; a reflection comes back as the same image flipped in z."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or f"2.25.{uuid.uuid4().int}"  # the UUID-derived UID form of DICOM PS3.5
    study_uid = f"2.25.{uuid.uuid4().int}"
    volume = sitk.Cast(volume, sitk.sitkInt16)
    d, spacing = volume.GetDirection(), volume.GetSpacing()
    shared_tags = {
        "0008|0060": modality,
        "0020|000e": series_uid,
        "0020|000d": study_uid,
        "0020|0037": "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
        "0028|0030": f"{spacing[1]:.6f}\\{spacing[0]:.6f}",  # row spacing (y), then column spacing (x)
        "0018|0050": f"{spacing[2]:.6f}",
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    paths = []
    for z in range(volume.GetDepth()):
        image_slice = volume[:, :, z]
        for tag, value in shared_tags.items():
            image_slice.SetMetaData(tag, value)
        position = volume.TransformIndexToPhysicalPoint((0, 0, z))
        image_slice.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in position))
        image_slice.SetMetaData("0020|0013", str(z + 1))
        image_slice.SetMetaData("0008|0018", f"{series_uid}.{z + 1}")  # SOPInstanceUID
        path = folder / f"slice_{z:04d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(image_slice)
        paths.append(path)
    return paths


def rotation(axis, angle: float) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def make_volume(depth: int = 5, seed: int = 0, direction=None) -> sitk.Image:
    """Small int16 volume with an oblique direction, anisotropic spacing and an off-zero origin."""
    array = np.random.default_rng(seed).integers(-1000, 3000, (depth, 9, 11)).astype(np.int16)
    volume = sitk.GetImageFromArray(array)
    volume.SetSpacing((0.8, 1.1, 3.5))
    volume.SetOrigin((-12.5, 30.25, 7.0))
    volume.SetDirection(tuple(rotation((1.0, 0.5, 0.2), 0.4).ravel()) if direction is None else direction)
    return volume




def assert_same_image(read: sitk.Image, written: sitk.Image) -> None:
    assert np.array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(written))
    for getter in ("GetOrigin", "GetSpacing", "GetDirection"):
        assert np.allclose(getattr(read, getter)(), getattr(written, getter)(), atol=1e-4), getter


def read_error(series) -> str:
    with pytest.raises(ImageReadError) as info:
        read_dicom_series(series)
    message = str(info.value)
    assert "\n" not in message and "RuntimeError" not in message and "Exception thrown" not in message
    return message


def test_round_trip_keeps_pixels_and_geometry(tmp_path):
    volume = make_volume()
    write_dicom_series(volume, tmp_path / "in" / "case1", series_uid="1.2.826.0.1.3680043.2.1125.1")
    [series] = find_dicom_series(tmp_path / "in")
    assert (series.name, series.series_uid, series.modality) == ("case1", "1.2.826.0.1.3680043.2.1125.1", "MR")
    assert [p.name for p in series.files] == [f"slice_{z:04d}.dcm" for z in range(5)] and not series.damaged
    assert_same_image(read_dicom_series(series), volume)
    assert is_dicom_folder(tmp_path / "in" / "case1")
    assert not is_dicom_folder(tmp_path / "in") and is_dicom_folder(tmp_path / "in", recursive=True)


@pytest.mark.parametrize("direction", [(0, 0, 1, 1, 0, 0, 0, 1, 0), (1, 0, 0, 0, 0, -1, 0, 1, 0)])
def test_round_trip_sagittal_and_coronal(tmp_path, direction):
    volume = make_volume(depth=3, direction=direction)
    write_dicom_series(volume, tmp_path / "s", modality="CT")
    [series] = find_dicom_series(tmp_path / "s")
    assert series.name == "s" and series.modality == "CT"  # a series in the searched folder itself
    assert_same_image(read_dicom_series(series), volume)


def test_single_file_is_a_2d_image(tmp_path):
    volume = make_volume(depth=1, direction=tuple(rotation((0, 0, 1), 0.3).ravel()))
    write_dicom_series(volume, tmp_path / "xray" / "p1", modality="DX")
    [series] = find_dicom_series(tmp_path / "xray")
    image = read_dicom_series(series)
    assert image.GetDimension() == 2 and image.GetSize() == (11, 9)
    assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(volume)[0])
    assert np.allclose(image.GetSpacing(), (0.8, 1.1)) and np.allclose(image.GetOrigin(), (-12.5, 30.25))
    assert np.allclose(image.GetDirection(), np.array(volume.GetDirection()).reshape(3, 3)[:2, :2].ravel(), atol=1e-4)


def write_together(work: Path, target: Path, volumes: list[tuple[sitk.Image, str]]) -> Path:
    """Several (volume, SeriesInstanceUID) written as series into one folder, file names prefixed."""
    target.mkdir(parents=True, exist_ok=True)
    for i, (volume, uid) in enumerate(volumes):
        for path in write_dicom_series(volume, work / str(i), series_uid=uid):
            path.rename(target / f"{i}_{path.name}")
    return target


def test_names_one_series_several_series_nested_and_unique(tmp_path):
    root = tmp_path / "in"
    write_dicom_series(make_volume(2), root / "p1")
    write_together(tmp_path / "work", root / "p2",
                   [(make_volume(2, seed=1), "1.2.3.2"), (make_volume(2, seed=2), "1.2.3.1")])
    write_dicom_series(make_volume(2), root / "site a" / "p3" / "t1")
    write_dicom_series(make_volume(2), root / "x y")
    write_dicom_series(make_volume(2), root / "x_y")
    # a folder of NIfTI cases is not a series, even with a stray DICOM file in it
    write_dicom_series(make_volume(1), root / "nifti")
    sitk.WriteImage(make_volume(2), str(root / "nifti" / "case_0000.nii.gz"))

    series = find_dicom_series(root)
    names = [s.name for s in series]
    assert names == ["p1", "p2__1.2.3.1", "p2__1.2.3.2", "site_a__p3__t1", "x_y", "x_y_2"]
    by_name = {s.name: s for s in series}
    assert all(p.name.startswith("1_") for p in by_name["p2__1.2.3.1"].files)
    assert_same_image(read_dicom_series(by_name["p2__1.2.3.1"]), make_volume(2, seed=2))
    assert not is_dicom_folder(root / "nifti")


def test_missing_middle_slice_is_an_error_naming_the_gap(tmp_path):
    files = write_dicom_series(make_volume(5), tmp_path / "gap")
    files[2].unlink()
    [series] = find_dicom_series(tmp_path)
    message = read_error(series)
    assert str(tmp_path / "gap") in message and "7.000 mm" in message and "slice_0001.dcm" in message


def test_truncated_file_is_an_error_naming_it(tmp_path):
    files = write_dicom_series(make_volume(5), tmp_path / "cut")
    data = files[3].read_bytes()
    files[3].write_bytes(data[: len(data) - 100])  # GDCM then leaves the file out of the series
    [series] = find_dicom_series(tmp_path)
    assert [p.name for p in series.damaged] == ["slice_0003.dcm"]
    message = read_error(series)
    assert str(tmp_path / "cut") in message and "slice_0003.dcm" in message and "truncated" in message


def explicit_element(group: int, element: int, vr: bytes, value: bytes, undefined: bool = False) -> bytes:
    if vr in (b"SQ", b"OB", b"UN", b"UT"):
        length = 0xFFFFFFFF if undefined else len(value)
        return struct.pack("<HH", group, element) + vr + b"\0\0" + struct.pack("<I", length) + value
    return struct.pack("<HH", group, element) + vr + struct.pack("<H", len(value)) + value


def structured_report() -> bytes:
    """A complete DICOM file without pixel data (as a DICOMDIR or report is), with a sequence and an
    item of undefined length, written by hand since SimpleITK writes only images."""
    item = explicit_element(0x0040, 0xA010, b"CS", b"CONTAINS") + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    sequence = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + item + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return (b"\0" * 128 + b"DICM"
            + explicit_element(0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.1\0")
            + explicit_element(0x0008, 0x0016, b"UI", b"1.2.840.10008.5.1.4.1.1.88.22\0")
            + explicit_element(0x0040, 0xA730, b"SQ", sequence, undefined=True))


def test_complete_non_image_dicom_file_is_not_damaged(tmp_path):
    write_dicom_series(make_volume(3), tmp_path / "case")
    report = structured_report()
    (tmp_path / "case" / "report.dcm").write_bytes(report)
    (tmp_path / "case" / "cut_report.dcm").write_bytes(report[:-10])
    [series] = find_dicom_series(tmp_path)
    assert [p.name for p in series.damaged] == ["cut_report.dcm"]
    (tmp_path / "case" / "cut_report.dcm").unlink()
    [series] = find_dicom_series(tmp_path)
    assert not series.damaged and len(series.files) == 3
    read_dicom_series(series)


def test_only_damaged_files_still_give_a_case(tmp_path):
    [path] = write_dicom_series(make_volume(1), tmp_path / "one")
    path.write_bytes(path.read_bytes()[:600])
    [series] = find_dicom_series(tmp_path)
    assert series.name == "one" and series.series_uid == "" and series.damaged == [path]
    assert "slice_0000.dcm" in read_error(series)


def test_files_disagreeing_in_size_or_orientation_are_errors(tmp_path):
    small = sitk.GetImageFromArray(np.zeros((2, 9, 10), np.int16))
    folder = write_together(tmp_path / "work", tmp_path / "size", [(make_volume(2), "1.2.3.9"), (small, "1.2.3.9")])
    assert "size" in read_error(find_dicom_series(folder)[0])
    turned = make_volume(2, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    folder = write_together(tmp_path / "work", tmp_path / "orientation",
                            [(make_volume(2), "1.2.3.9"), (turned, "1.2.3.9")])
    assert "orientation" in read_error(find_dicom_series(folder)[0])


def test_two_acquisitions_under_one_uid_are_an_error(tmp_path):
    folder = write_together(tmp_path / "work", tmp_path / "echoes",
                            [(make_volume(3), "1.2.3.9"), (make_volume(3, seed=5), "1.2.3.9")])
    assert "same slice position" in read_error(find_dicom_series(folder)[0])


def test_unreadable_file_after_finding_is_an_error(tmp_path):
    files = write_dicom_series(make_volume(3), tmp_path / "gone")
    [series] = find_dicom_series(tmp_path)
    files[1].unlink()
    message = read_error(series)
    assert str(tmp_path / "gone") in message and "slice_0001.dcm" in message


def test_slices_off_the_grid_are_an_error(tmp_path):
    """Gantry tilt: each slice shifted in x by 0.5 mm more than the last, which ITK's grid cannot hold."""
    slices = []
    for z in range(4):
        image = sitk.GetImageFromArray(np.full((1, 9, 11), z, np.int16))
        image.SetSpacing((0.8, 1.1, 3.5))
        image.SetOrigin((0.5 * z, 0.0, 3.5 * z))
        slices.append((image, "1.2.3.10"))
    folder = write_together(tmp_path / "work", tmp_path / "tilt", slices)
    message = read_error(find_dicom_series(folder)[0])
    assert "off the volume's grid" in message and "1_slice_0000.dcm" in message
