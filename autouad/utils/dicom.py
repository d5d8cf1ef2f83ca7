"""Finding and reading DICOM series, the form in which hospital data arrives.

A DICOM series is a folder of files, one 2D slice each (or one multi-frame file), that share a
SeriesInstanceUID. GDCM, through SimpleITK, groups the files of a folder by that UID and sorts them
along the slice normal; this module turns each series into one case with a stable name and reads
it as a ``SimpleITK.Image`` with the origin, spacing and direction the files describe, so that a
prediction can be written as NIfTI in exactly the series' geometry.

ITK reads past several defects without complaint, so they are checked here and reported as one
line through ``ImageReadError``:

* GDCM leaves out any file it cannot parse completely, even one truncated by a single byte, so a
  damaged slice would silently vanish from the volume. Files with the DICOM magic that belong to
  no series and are cut short or hold pixel data are therefore remembered as ``damaged``.
* ITK stacks slices with their mean spacing and only warns about missing slices; a gap of more than
  1 % of the median step is an error naming the largest gap, and so are repeated positions
  (several acquisitions or echoes under one UID).
* ITK takes size, spacing and orientation from the first file; files that disagree are an error.
* ITK gives the volume an orthogonal grid; slices whose positions do not lie on it (gantry tilt)
  are an error rather than a silently wrong geometry.

No pydicom: SimpleITK reads the headers, and a small walk over the data elements tells a cut file
from a complete non-image one (DICOMDIR, report).
"""
from __future__ import annotations

import os
import re
import struct
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from autouad.utils.images import ImageReadError, file_ending

MODALITY_TAG = "0008|0060"
POSITION_TAG = "0020|0032"  # ImagePositionPatient
DICM_OFFSET = 128  # a DICOM Part 10 file has a 128-byte preamble, then b"DICM"
PIXEL_DATA_TAGS = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")  # (7FE0,0010) little and big endian
# Explicit VRs whose length takes 4 bytes after 2 reserved ones (PS3.5 7.1.2).
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
UNDEFINED_LENGTH = 0xFFFFFFFF
IMPLICIT_LITTLE_ENDIAN, BIG_ENDIAN, DEFLATED = "1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"
SLICE_SPACING_TOLERANCE = 0.01  # relative deviation of a slice step from the median step
ORIENTATION_TOLERANCE = 1e-3  # direction cosines written as DS strings carry about 6 decimals


@dataclass
class DicomSeries:
    """One DICOM series found by ``find_dicom_series``: one case to predict or convert."""
    name: str  # case name: letters, digits, '-', '_' and '.', unique within one search
    folder: Path
    series_uid: str  # SeriesInstanceUID; "" when the folder has only damaged files
    files: list[Path]  # in the order GDCM sorts them (along the slice normal)
    modality: str | None = None  # tag 0008|0060, e.g. "MR", "CT"
    damaged: list[Path] = field(default_factory=list)  # DICOM files GDCM left out: cut short or unreadable


def _regular_files(folder: Path) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [p for p in entries if not p.name.startswith(".") and p.is_file()]


def _has_dicm_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(DICM_OFFSET)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _may_hold_series(files: list[Path]) -> bool:
    """A folder is looked at by GDCM only when it has files and none of another image type: such
    a folder holds NIfTI/PNG/... cases, and a DICOM file among them is not a series of its own."""
    return bool(files) and all(file_ending(p) is None for p in files)


@contextmanager
def _quiet_itk():
    """ITK warns on stderr for every folder without a series; a search expects many of those."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _series_ids(folder: Path) -> list[str]:
    with _quiet_itk():
        try:
            return sorted(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
        except RuntimeError:
            return []


def is_dicom_folder(folder: str | Path, recursive: bool = False) -> bool:
    """Whether ``folder`` (or, with ``recursive``, any folder below it) holds a DICOM series.

    Cheap: it looks for the DICM magic at byte 128 first and only asks GDCM (which parses headers,
    not pixel data) when no file has it, for old files written without the preamble."""
    folder = Path(folder)
    for current in _walk(folder) if recursive else [folder]:
        files = _regular_files(current)
        if not _may_hold_series(files):
            continue
        if any(p.name.upper() != "DICOMDIR" and _has_dicm_magic(p) for p in files):
            return True
        if _series_ids(current):
            return True
    return False


def _walk(folder: Path) -> list[Path]:
    """``folder`` and its subfolders, sorted, hidden ones skipped; linked folders are followed once."""
    found, seen = [], set()
    for root, dirs, _ in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a symbolic link back up the tree
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.append(Path(root))
    return found


def _sanitise(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".")  # a leading dot would hide the output file
    return name or "series"


def _modality(path: Path) -> str | None:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.LoadPrivateTagsOff()
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    if not reader.HasMetaDataKey(MODALITY_TAG):
        return None
    return reader.GetMetaData(MODALITY_TAG).strip() or None


def _mentions_uid(data: bytes, uid: str) -> bool:
    """Whether the raw bytes hold ``uid`` as a whole value (not as the prefix of a longer UID)."""
    needle = uid.encode("ascii", "ignore")
    start = data.find(needle)
    while start >= 0:
        after = data[start + len(needle): start + len(needle) + 1]  # b"" at the end of the data
        if after != b"." and not after.isdigit():
            return True
        start = data.find(needle, start + 1)
    return False


def _runs_past_end(data: bytes) -> bool:
    """Whether the data elements of a DICOM Part 10 file run past its end (a cut copy).

    Walks the elements flat, by their lengths only: an item or sequence of undefined length is
    entered, everything else skipped, so no data dictionary is needed. Deflated and big-endian
    files are not walked (False: cannot tell)."""
    n, pos = len(data), DICM_OFFSET + 4
    explicit, transfer_syntax, in_meta = True, "", True  # the file meta group is explicit VR LE
    while pos < n:
        if pos + 8 > n:
            return True
        group, element = struct.unpack_from("<HH", data, pos)
        if in_meta and group != 0x0002:
            in_meta = False
            if transfer_syntax in (DEFLATED, BIG_ENDIAN):
                return False
            explicit = transfer_syntax != IMPLICIT_LITTLE_ENDIAN
        if group == 0xFFFE:  # item and delimiters: no VR in either syntax
            header, (length,) = 8, struct.unpack_from("<I", data, pos + 4)
            if element != 0xE000:
                length = 0  # delimiters are empty
        elif explicit:
            vr = data[pos + 4: pos + 6]
            if not (vr.isalpha() and vr.isupper()):
                return True  # garbage where an element should start
            if vr in LONG_VRS:
                if pos + 12 > n:
                    return True
                header, (length,) = 12, struct.unpack_from("<I", data, pos + 8)
            else:
                header, (length,) = 8, struct.unpack_from("<H", data, pos + 6)
        else:
            header, (length,) = 8, struct.unpack_from("<I", data, pos + 4)
        if length == UNDEFINED_LENGTH:
            pos += header  # walk into the sequence or item
            continue
        if pos + header + length > n:
            return True
        if (group, element) == (0x0002, 0x0010):
            transfer_syntax = data[pos + header: pos + header + length].strip(b"\0 ").decode("ascii", "replace")
        pos += header + length
    return False


def _damaged_files(files: list[Path], in_series: set[str]) -> dict[Path, bytes]:
    """DICOM files of a folder that GDCM put in no series and that should have been in one, with
    their bytes.

    GDCM drops any file it cannot parse to the end, even one cut by a single byte. A DICOM file in
    no series is damaged when it is cut short or holds pixel data; one that is complete and has no
    Pixel Data element (DICOMDIR, structured report, presentation state) is rightly in none."""
    damaged = {}
    for path in files:
        if path.name in in_series or not _has_dicm_magic(path):
            continue
        try:
            data = path.read_bytes()
        except OSError:
            data = b""
        if not data or _runs_past_end(data) or any(tag in data for tag in PIXEL_DATA_TAGS):
            damaged[path] = data
    return damaged


def find_dicom_series(folder: str | Path) -> list[DicomSeries]:
    """Every DICOM series in ``folder`` and its subfolders, one case per series.

    A folder with one series gives the case its path relative to ``folder``, parts joined with
    "__" (``folder`` itself gives its own name); a folder with several gives
    ``<that name>__<SeriesInstanceUID>``. Names are sanitised and made unique with "_2", "_3", ...
    Only headers are read (GDCM's scanner stops before the pixel data)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder not found")
    found: list[DicomSeries] = []
    used: set[str] = set()

    def unique(name: str) -> str:
        name = candidate = _sanitise(name)
        n = 1
        while candidate.lower() in used:  # case-insensitive: outputs may land on such a file system
            n += 1
            candidate = f"{name}_{n}"
        used.add(candidate.lower())
        return candidate

    for current in _walk(folder):
        files = _regular_files(current)
        if not _may_hold_series(files):
            continue
        relative = current.relative_to(folder).parts
        base = "__".join(relative) if relative else folder.resolve().name
        with _quiet_itk():
            by_uid = {uid: [Path(f) for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(current), uid)]
                      for uid in _series_ids(current)}
        by_uid = {uid: paths for uid, paths in by_uid.items() if paths}
        in_series = {p.name for paths in by_uid.values() for p in paths}
        damaged = _damaged_files(files, in_series)
        if not by_uid:
            if damaged:  # a case that cannot be read is reported, not silently skipped
                found.append(DicomSeries(unique(base), current, "", [], None, sorted(damaged)))
            continue
        for uid, paths in by_uid.items():
            # A damaged file is attributed to the series whose UID it mentions; when it mentions
            # none or several (its header may be cut), every series of the folder is suspect.
            mine = [p for p, data in damaged.items() if _mentions_uid(data, uid)]
            orphans = [p for p, data in damaged.items()
                       if sum(_mentions_uid(data, other) for other in by_uid) != 1]
            name = base if len(by_uid) == 1 else f"{base}__{uid}"
            found.append(DicomSeries(unique(name), current, uid, paths, _modality(paths[0]),
                                     sorted(set(mine) | set(orphans))))
    return found


def _reason(error: RuntimeError) -> str:
    """The informative line of a SimpleITK/ITK exception, without source paths and object ids."""
    lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else "unreadable"
    line = re.sub(r"^(sitk::ERROR:|ITK ERROR:)\s*", "", line)
    line = re.sub(r"^\w+\(0x[0-9a-fA-F]+\):\s*", "", line)
    return line[:160]


@dataclass
class _Header:
    path: Path
    size: tuple[int, ...]
    spacing: np.ndarray
    origin: np.ndarray
    direction: np.ndarray  # 3x3, columns are the row, column and slice-normal directions
    has_position: bool


def _read_header(path: Path, folder: Path) -> _Header:
    if not path.is_file():
        raise ImageReadError(f"{folder}: file {path.name} of the series is missing")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.LoadPrivateTagsOff()
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise ImageReadError(f"{folder}: file {path.name} is unreadable ({_reason(e)})") from None
    if reader.GetDimension() != 3:  # GDCMImageIO always reports 3D, one slice for a 2D file
        raise ImageReadError(f"{folder}: file {path.name} is not read as a DICOM image")
    return _Header(path, tuple(reader.GetSize()), np.array(reader.GetSpacing()), np.array(reader.GetOrigin()),
                   np.array(reader.GetDirection()).reshape(3, 3), reader.HasMetaDataKey(POSITION_TAG))


def _check_consistent(headers: list[_Header], folder: Path) -> None:
    first = headers[0]
    for h in headers[1:]:
        if h.size[:2] != first.size[:2]:
            raise ImageReadError(f"{folder}: files disagree in size: {h.path.name} is {h.size[0]}x{h.size[1]}, "
                                 f"{first.path.name} is {first.size[0]}x{first.size[1]}")
        if not np.allclose(h.direction, first.direction, atol=ORIENTATION_TOLERANCE):
            raise ImageReadError(f"{folder}: files disagree in orientation (ImageOrientationPatient): "
                                 f"{h.path.name} differs from {first.path.name}")
        if not np.allclose(h.spacing[:2], first.spacing[:2], rtol=1e-3):
            raise ImageReadError(f"{folder}: files disagree in pixel spacing: {h.path.name} has "
                                 f"{tuple(round(float(v), 4) for v in h.spacing[:2])}, {first.path.name} has "
                                 f"{tuple(round(float(v), 4) for v in first.spacing[:2])}")


def _check_slice_positions(headers: list[_Header], folder: Path) -> float:
    """The median slice step along the normal; raises for missing, repeated or unevenly spaced slices."""
    missing = next((h for h in headers if not h.has_position), None)
    if missing is not None:
        raise ImageReadError(f"{folder}: file {missing.path.name} has no ImagePositionPatient (0020,0032), "
                             f"so the {len(headers)} files cannot be stacked into a volume")
    normal = headers[0].direction[:, 2]
    positions = np.array([h.origin @ normal for h in headers])
    # Repeated positions first: GDCM cannot sort such a series by position and falls back to
    # file name order, which would otherwise look like a gap.
    order = np.argsort(positions, kind="stable")
    closest = int(np.argmin(np.diff(positions[order])))
    if abs(positions[order[closest + 1]] - positions[order[closest]]) < 1e-3:
        first, second = headers[order[closest]].path.name, headers[order[closest + 1]].path.name
        raise ImageReadError(f"{folder}: files {first} and {second} lie at the same slice position (several "
                             f"acquisitions or echoes under one SeriesInstanceUID?)")
    steps = np.diff(positions)
    step = float(np.median(steps))
    worst = int(np.argmax(np.abs(steps - step)))
    if abs(steps[worst] - step) > SLICE_SPACING_TOLERANCE * abs(step):
        raise ImageReadError(f"{folder}: slice spacing is not uniform (missing slices?): largest gap "
                             f"{abs(steps[worst]):.3f} mm between {headers[worst].path.name} and "
                             f"{headers[worst + 1].path.name}, median step {abs(step):.3f} mm")
    return step


def _to_2d(image: sitk.Image) -> sitk.Image:
    """A one-slice volume as a 2D image. Its in-plane direction is kept when it is a proper 2D
    rotation or reflection; an oblique plane gets the identity (a 2D image cannot express it)."""
    in_plane = np.array(image.GetDirection()).reshape(3, 3)[:2, :2]
    keep = np.allclose(in_plane @ in_plane.T, np.eye(2), atol=1e-4)
    strategy = (sitk.ExtractImageFilter.DIRECTIONCOLLAPSETOSUBMATRIX if keep
                else sitk.ExtractImageFilter.DIRECTIONCOLLAPSETOIDENTITY)
    size = list(image.GetSize())
    return sitk.Extract(image, [size[0], size[1], 0], [0, 0, 0], strategy)


def read_dicom_series(series: DicomSeries) -> sitk.Image:
    """The series as one image in its own geometry: a volume, or a 2D image for a single 2D file.

    Raises ``ImageReadError`` (one line naming the folder) for damaged or unreadable files, files
    that disagree in size, spacing or orientation, and missing, repeated or tilted slices."""
    folder = Path(series.folder)
    if series.damaged:
        names = ", ".join(p.name for p in series.damaged[:3]) + (" ..." if len(series.damaged) > 3 else "")
        raise ImageReadError(f"{folder}: {len(series.damaged)} DICOM file(s) are damaged or truncated and cannot "
                             f"be read by GDCM: {names}")
    if not series.files:
        raise ImageReadError(f"{folder}: series {series.series_uid or '?'} has no files")
    headers = [_read_header(Path(p), folder) for p in series.files]
    _check_consistent(headers, folder)

    if len(headers) == 1:
        try:
            image = sitk.ReadImage(str(series.files[0]))
        except RuntimeError as e:
            raise ImageReadError(f"{folder}: file {Path(series.files[0]).name} is unreadable ({_reason(e)})") from None
        return _to_2d(image) if image.GetDimension() == 3 and image.GetSize()[2] == 1 else image

    multi_frame = next((h for h in headers if h.size[2] != 1), None)
    if multi_frame is not None:
        raise ImageReadError(f"{folder}: file {multi_frame.path.name} holds {multi_frame.size[2]} frames; a series "
                             f"of several multi-frame files is not supported")
    step = _check_slice_positions(headers, folder)

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in series.files])
    reader.MetaDataDictionaryArrayUpdateOff()
    reader.LoadPrivateTagsOff()
    try:
        image = reader.Execute()
    except RuntimeError as e:
        raise ImageReadError(f"{folder}: series {series.series_uid} is unreadable ({_reason(e)})") from None

    # ITK builds an orthogonal grid from the first file's orientation and the mean step; every
    # file's own position must lie on it, or the geometry written with the prediction would be wrong.
    tolerance = SLICE_SPACING_TOLERANCE * abs(step) + 1e-3
    for z, h in enumerate(headers):
        offset = float(np.linalg.norm(np.array(image.TransformIndexToPhysicalPoint((0, 0, z))) - h.origin))
        if offset > tolerance:
            raise ImageReadError(f"{folder}: file {h.path.name} lies {offset:.3f} mm off the volume's grid (gantry "
                                 f"tilt or sheared slices?); resample the series before using it")
    return image
