"""The QC report (autouad/inference/report.py) on synthetic prediction folders: no model, no torch.

The folders mimic what autouad_predict writes (autouad/inference/outputs.py): masks beside
predictions.json, float maps in maps/, regions in rois/. One is 3D NIfTI without image scores, one
is 2D PNG with scores; both hold the awkward cases a report meets in practice: an empty mask, an
input deleted since prediction, a failed case, a case name with markup in it.
"""
from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import SimpleITK as sitk

from autouad.inference.report import chromium_command, write_report

CHROMIUM = Path("/usr/bin/chromium")
EVIL = "brain<script>alert('x')"  # a legal file name on Linux, and markup if pasted into HTML raw
THRESHOLD = 0.5


def _write(array: np.ndarray, path: Path, spacing=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    if spacing is not None:
        image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def _ellipse(shape, centre, radii) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def _blob(shape, centre, sigma) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return np.exp(-sum((g - c) ** 2 / (2 * s ** 2) for g, c, s in zip(grid, centre, sigma)))


def _case_3d(rng, lesion):
    """(image, map, roi, mask) of a head-like volume (z, y, x) with an optional bright lesion."""
    shape = (12, 72, 88)
    head = _ellipse(shape, (6, 36, 44), (8, 30, 38))
    image = np.where(head, 300 + 40 * rng.standard_normal(shape), 0).astype(np.float32)
    image[_ellipse(shape, (6, 36, 44), (8, 24, 31))] += 200  # a "brain" inside the "skull"
    anomaly = 0.08 * np.abs(rng.standard_normal(shape))
    if lesion is not None:
        centre, radius = lesion
        image += (250 * _blob(shape, centre, (1.5, radius, radius))).astype(np.float32) * head
        anomaly += _blob(shape, centre, (1.5, radius, radius))
    anomaly = (anomaly * head).astype(np.float32)
    mask = ((anomaly >= THRESHOLD) & head).astype(np.uint8)
    return image, anomaly, head.astype(np.uint8), mask


def _case_2d(rng, lesion):
    shape = (96, 112)
    body = _ellipse(shape, (48, 56), (44, 52))
    image = np.clip(np.where(body, 120 + 15 * rng.standard_normal(shape), 10), 0, 255)
    anomaly = 0.1 * np.abs(rng.standard_normal(shape))
    if lesion is not None:
        centre, radius, strength = lesion
        image += 90 * _blob(shape, centre, (radius, radius))
        anomaly += strength * _blob(shape, centre, (radius, radius))
    anomaly = (anomaly * body).astype(np.float32)
    mask = ((anomaly >= THRESHOLD) & body).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8), anomaly, body.astype(np.uint8), mask


def _record(meta_extra: dict, cases: dict, failed: dict, warnings: list | None) -> dict:
    record = {"model_folder": "/results/Dataset001/caae__plans", "plans_name": "plans", "folds": [0, 1],
              "threshold": THRESHOLD, "anomalous_side": "above", "map": "I_ro", "cases": cases, "failed": failed,
              "num_predicted": len(cases), "num_failed": len(failed), **meta_extra}
    if warnings is not None:
        record["warnings"] = warnings
    return record


def make_folder_3d(root: Path) -> Path:
    """A 3D NIfTI prediction folder with maps and regions; no image scores (volumes get none)."""
    rng = np.random.default_rng(0)
    inputs, out = root / "inputs_3d", root / "pred_3d"
    spacing = (1.0, 1.0, 4.0)
    lesions = {"brain_001": ((7, 30, 58), 5.0), "brain_002": ((4, 46, 30), 2.5), EVIL: None,
               "brain_004": ((8, 40, 40), 4.0)}
    cases = {}
    for case, lesion in lesions.items():
        image, anomaly, roi, mask = _case_3d(rng, lesion)
        source = inputs / f"{case}_0000.nii.gz"
        _write(image, source, spacing)
        _write(mask, out / f"{case}.nii.gz", spacing)
        _write(anomaly, out / "maps" / f"{case}.nii.gz", spacing)
        _write(roi, out / "rois" / f"{case}.nii.gz", spacing)
        cases[case] = {"inputs": [str(source.resolve())],
                       "outputs": {"mask": f"{case}.nii.gz", "map": f"maps/{case}.nii.gz",
                                   "roi": f"rois/{case}.nii.gz"},
                       "anomalous_voxels": int(mask.sum()), "slices": int(image.shape[0])}
    (inputs / "brain_004_0000.nii.gz").unlink()  # the input went away after prediction
    failed = {"brain_005": f"{inputs / 'brain_005_0000.nii.gz'}: unreadable or truncated image (gzip error)"}
    warnings = ["fold 1's threshold was calibrated on 3 validation cases only"]
    record = _record({"dataset": "Dataset001_Synthetic3D", "method": "caae", "image_threshold": None},
                     cases, failed, warnings)
    (out / "predictions.json").write_text(json.dumps(record, indent=2))
    return out


def make_folder_2d(root: Path) -> Path:
    """A 2D PNG prediction folder with float .tif maps, PNG regions and image scores."""
    rng = np.random.default_rng(1)
    inputs, out = root / "inputs_2d", root / "pred_2d"
    lesions = {"cxr_b": None, "cxr_a": ((40, 70), 9.0, 1.2), "cxr_c": ((60, 35), 5.0, 0.8)}
    scores = {"cxr_a": 0.83, "cxr_b": 0.12, "cxr_c": 0.47}
    image_threshold = 0.3
    cases = {}
    for case, lesion in lesions.items():
        image, anomaly, roi, mask = _case_2d(rng, lesion)
        source = inputs / f"{case}_0000.png"
        _write(image, source)
        _write(mask, out / f"{case}.png")
        _write(anomaly, out / "maps" / f"{case}.tif")
        _write(roi, out / "rois" / f"{case}.png")
        cases[case] = {"inputs": [str(source.resolve())],
                       "outputs": {"mask": f"{case}.png", "map": f"maps/{case}.tif", "roi": f"rois/{case}.png"},
                       "anomalous_voxels": int(mask.sum()), "slices": 1, "score": scores[case],
                       "decision": int(scores[case] >= image_threshold)}
    record = _record({"dataset": "Dataset002_Synthetic2D", "method": "ascnet", "image_threshold": image_threshold,
                      "image_score": "per fold: fold 0 mean (above, higher), fold 1 top_k_mean (below, lower)"},
                     cases, {"broken.png": "broken.png: truncated PNG (no IEND chunk at the end)"}, None)
    (out / "predictions.json").write_text(json.dumps(record, indent=2))
    return out


def image_sources(page: Path) -> list[Path]:
    """The files the page's <img> tags point at, resolved beside the page."""
    text = page.read_text(encoding="utf-8")
    return [page.parent / unquote(html.unescape(src)) for src in re.findall(r'<img src="([^"]*)"', text)]


def table_cases(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    return [html.unescape(c) for c in re.findall(r'<td class="case">(.*?)</td>', text)]


def test_report_3d(tmp_path):
    folder = make_folder_3d(tmp_path)
    page = write_report(folder)
    assert page == folder / "report.html" and page.is_file()
    text = page.read_text(encoding="utf-8")

    sources = image_sources(page)
    # three drawn cases with a map each: a slice figure and a histogram per case, plus the missing-input one
    assert len(sources) == 8
    assert all(p.is_file() and p.parent == folder / "report" for p in sources), sources
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in sources)
    # no score in 3D: sorted by anomalous voxel count
    voxels = json.loads((folder / "predictions.json").read_text(encoding="utf-8"))["cases"]
    assert table_cases(page) == sorted(voxels, key=lambda c: -voxels[c]["anomalous_voxels"])
    # the markup in a case name is text, never markup
    assert "<script>alert" not in text and html.escape(EVIL) in text
    assert "brain_005" in text and "gzip error" in text  # the failed case, with its reason
    assert "calibrated on 3 validation cases only" in text and 'class="warnings"' in text
    assert "input missing" in text
    assert "empty mask, chosen for the most anomalous map value" in text  # the evil case has no lesion
    assert ">score</th>" not in text  # volumes have no image score
    # self-contained: no network fetch of any kind
    assert not re.search(r"(src|href)=\"(https?:)?//", text) and "<link" not in text
    # no temporary file left behind
    assert not [p for p in folder.rglob("*") if ".tmp" in p.name]


def test_report_2d_sorted_by_score(tmp_path):
    folder = make_folder_2d(tmp_path)
    page = write_report(folder)
    assert table_cases(page) == ["cxr_a", "cxr_c", "cxr_b"]
    sources = image_sources(page)
    assert len(sources) == 6 and all(p.is_file() for p in sources)
    text = page.read_text(encoding="utf-8")
    assert "broken.png" in text and "truncated PNG" in text
    assert "empty mask" in text and 'class="warnings"' not in text  # cxr_b has no lesion
    assert "<dt>image score</dt><dd>per fold: fold 0 mean (above, higher)" in text  # how the scores were read


def test_report_elsewhere_and_capped(tmp_path):
    folder = make_folder_2d(tmp_path)
    page = write_report(folder, output=tmp_path / "qc" / "summary.html", max_cases=1)
    sources = image_sources(page)
    assert len(sources) == 2 and all(p.is_file() and p.parent == tmp_path / "qc" / "report" for p in sources)
    text = page.read_text(encoding="utf-8")
    assert table_cases(page) == ["cxr_a", "cxr_c", "cxr_b"]  # the table keeps every case
    assert "2 cases left out" in text
    assert not (folder / "report.html").exists()


def test_report_missing_predictions(tmp_path):
    with pytest.raises(FileNotFoundError, match="predictions.json"):
        write_report(tmp_path)


def test_report_images_load_in_chromium(tmp_path):
    """The page as a browser opens it from disk: every image must decode."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent (install it with: apt-get install -y chromium)")
    pages = [write_report(make_folder_3d(tmp_path)), write_report(make_folder_2d(tmp_path))]
    for page in pages:
        command = chromium_command(str(CHROMIUM), tmp_path / "profile") + [
            "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()]
        done = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        body = re.search(r"<body[^>]*>", done.stdout)
        assert body, done.stdout[:2000]
        loaded = re.search(r'data-images-loaded="(\d+)"', body.group(0))
        total = re.search(r'data-images-total="(\d+)"', body.group(0))
        assert loaded and total, body.group(0)
        assert int(loaded.group(1)) == int(total.group(1)) == len(image_sources(page)) > 0
