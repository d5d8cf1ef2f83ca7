"""The quality-control report of a finished prediction folder (``autouad_predict ... --report``).

``write_report`` reads what ``autouad_predict`` left in a folder (predictions.json, the masks, and
maps/ and rois/ when --save-maps ran; see autouad/inference/outputs.py) and writes one self-contained
``report.html`` with its PNGs in a ``report/`` folder beside it:

* a header with what ran (model, dataset, folds, thresholds), the cases that failed and why, and any
  warnings of the run, shown first so that nobody reads the masks without seeing them;
* a table of all cases, most anomalous first (image score, else the anomalous voxel count);
* per case, for the top ``max_cases`` (200 by default): the slice with the largest anomaly as three
  panels (input, anomaly map, mask over the input) and the histogram of the map inside the region
  with the threshold marked.

The page opens from disk without a server: image links are relative, and there is no external
CSS, JavaScript or font. Every string from the folder (case names come from user files) is
HTML-escaped, and every file is written atomically, so an interrupted run never leaves a half page.
Nothing here needs torch: the report can be rebuilt from a prediction folder on any machine.
"""
from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import matplotlib

# Figures are only ever saved to files. Selecting Agg before pyplot loads keeps a report built on a
# server without a display from trying a GUI backend; a session that already loaded pyplot (a
# notebook) keeps its backend, which does not matter here because the figures below never go
# through pyplot.
if "matplotlib.pyplot" not in sys.modules:
    matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from autouad.inference.outputs import PREDICTIONS_FILE  # noqa: E402
from autouad.utils.files import atomic_output, load_json, save_figure  # noqa: E402
from autouad.utils.images import ImageReadError, read_image  # noqa: E402

REPORT_FILE = "report.html"
FIGURES_FOLDER = "report"
DEFAULT_FIGURE_CASES = 200  # per-case figures cost a few image reads each; the table lists all cases
DPI = 80
SLICE_FIGSIZE = (9.0, 3.0)  # three panels of about 3x3 inches: 720x240 pixels at 80 dpi
HISTOGRAM_FIGSIZE = (4.5, 3.0)
MAX_PANEL_PIXELS = 480  # slices are subsampled to about twice the drawn size: faster, same look
MASK_COLOUR = (1.0, 0.15, 0.1)
ROI_COLOUR = (0.2, 0.8, 1.0)
SCREENSHOT_MARGIN = 400  # pixels rendered below a screenshot and cut off (see screenshot)


@dataclass
class CaseRow:
    """One predicted case as the report sees it."""
    case: str
    record: dict
    score: float | None
    decision: int | None
    voxels: int | None
    rank: int = 0  # 1-based position in the table
    notes: list[str] = field(default_factory=list)  # shown in the case's section

    @property
    def anchor(self) -> str:
        return f"case-{self.rank}"

    @property
    def file_stem(self) -> str:
        # The rank makes the name unique; the slug only helps a person browsing report/. Case names
        # come from user files and may hold anything, so none of it reaches a path unfiltered.
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.case).strip("._")[:60] or "case"
        return f"{self.rank:05d}_{slug}"


# ---- choosing and drawing a slice --------------------------------------------------------------------
def _side_sign(side: str | None) -> float:
    """+1 when high map values are anomalous, -1 when low ones are (anomalous_side "below")."""
    return -1.0 if side == "below" else 1.0


def _as_volume(array: np.ndarray) -> np.ndarray:
    """(z, y, x) for any image: a 2D image becomes one slice, so that 2D and 3D share one code path."""
    array = np.asarray(array)
    while array.ndim > 3:  # a 4D file (time or channels first in SimpleITK order): its first volume
        array = array[0]
    return array[None] if array.ndim == 2 else array


def choose_slice(mask: np.ndarray | None, signed_map: np.ndarray | None, roi: np.ndarray | None) -> tuple[int, str]:
    """(index along axis 0, why): the slice with the most mask voxels; for an empty mask the slice
    holding the most anomalous map value inside the region; else the middle slice."""
    volume = next(a for a in (mask, signed_map, roi) if a is not None)
    depth = volume.shape[0]
    empty = "empty mask" if mask is not None else "no mask"
    if mask is not None:
        counts = mask.reshape(depth, -1).sum(axis=1)
        if counts.max() > 0:
            z = int(counts.argmax())
            return z, f"chosen for the most mask voxels ({int(counts[z])})"
    if signed_map is not None:
        values = np.where(roi, signed_map, -np.inf) if roi is not None else signed_map
        values = np.where(np.isfinite(values), values, -np.inf)
        peaks = values.reshape(depth, -1).max(axis=1)
        if np.isfinite(peaks).any():
            return int(peaks.argmax()), f"{empty}, chosen for the most anomalous map value"
    return depth // 2, f"{empty}, the middle slice"


def _stride(shape: tuple[int, ...]) -> int:
    return max(1, int(np.ceil(max(shape) / MAX_PANEL_PIXELS)))


def _window(image: np.ndarray) -> tuple[float, float]:
    """Grey levels for display: 1st-99th percentile, so one hot pixel or a black border does not
    wash the image out."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(finite, (1, 99))
    return (float(low), float(high)) if high > low else (float(finite.min()), float(finite.max()) + 1e-6)


def _outline(ax, mask: np.ndarray, colour, width: float, style: str = "solid") -> None:
    if mask.any() and not mask.all():
        ax.contour(mask.astype(np.float32), levels=[0.5], colors=[colour], linewidths=width, linestyles=style)


def _placeholder(ax, shape: tuple[int, ...], aspect: float) -> None:
    """A light grey panel the size of the slice, so that a missing panel does not resize the row."""
    ax.imshow(np.full(shape[:2], np.nan), cmap=matplotlib.colormaps["gray"].with_extremes(bad="0.92"),
              aspect=aspect)


def draw_slice(path: Path, image: np.ndarray | None, anomaly_map: np.ndarray | None, mask: np.ndarray | None,
               roi: np.ndarray | None, aspect: float, map_name: str, threshold: float | None) -> None:
    """Three panels of one 2D slice (arrays already cut to the slice): input, map, mask over input."""
    shape = next(a for a in (mask, anomaly_map, image) if a is not None).shape
    s = _stride(shape)

    def cut(a):
        return None if a is None else a[::s, ::s]

    image, anomaly_map, mask, roi = cut(image), cut(anomaly_map), cut(mask), cut(roi)
    shape = next(a for a in (mask, anomaly_map, image) if a is not None).shape
    fig = Figure(figsize=SLICE_FIGSIZE, layout="constrained")
    ax_image, ax_map, ax_mask = fig.subplots(1, 3)
    for ax in (ax_image, ax_map, ax_mask):
        ax.set_xticks([])
        ax.set_yticks([])

    if image is not None:
        low, high = _window(image)
        ax_image.imshow(image, cmap="gray", vmin=low, vmax=high, aspect=aspect)
        ax_image.set_title("input (channel 0)", fontsize=10)
    else:
        _placeholder(ax_image, shape, aspect)
        ax_image.text(0.5, 0.5, "input missing", ha="center", va="center", fontsize=11, color="0.3",
                      transform=ax_image.transAxes)
        ax_image.set_title("input", fontsize=10)  # the path is in the HTML beside, where it can wrap

    if anomaly_map is not None:
        shown = np.ma.masked_where(~roi, anomaly_map) if roi is not None else np.ma.masked_invalid(anomaly_map)
        finite = shown.compressed()
        finite = finite[np.isfinite(finite)]
        low, high = (np.percentile(finite, (1, 99.5)) if finite.size else (0.0, 1.0))
        if threshold is not None and finite.size:  # keep the threshold on the colour bar
            low, high = min(low, threshold), max(high, threshold)
        high = high if high > low else low + 1e-6
        cmap = matplotlib.colormaps["magma"].with_extremes(bad="black")
        shown_image = ax_map.imshow(shown, cmap=cmap, vmin=low, vmax=high, aspect=aspect)
        bar = fig.colorbar(shown_image, ax=ax_map, fraction=0.05, pad=0.02)
        bar.ax.tick_params(labelsize=7)
        if threshold is not None:
            bar.ax.axhline(threshold, color="cyan", linewidth=1.5)
        ax_map.set_title(f"anomaly map ({map_name})", fontsize=10)
    else:
        _placeholder(ax_map, shape, aspect)
        ax_map.text(0.5, 0.5, "no map saved\n(predict with --save-maps)", ha="center", va="center",
                    fontsize=9, color="0.3", transform=ax_map.transAxes)
        ax_map.set_title("anomaly map", fontsize=10)

    # The mask over the input, else over the map, so that the outline has something to sit on.
    if image is not None:
        low, high = _window(image)
        ax_mask.imshow(image, cmap="gray", vmin=low, vmax=high, aspect=aspect)
    elif anomaly_map is not None:
        ax_mask.imshow(np.where(np.isfinite(anomaly_map), anomaly_map, 0), cmap="gray", aspect=aspect)
    else:
        ax_mask.imshow(np.zeros(shape[:2] if mask is None else mask.shape), cmap="gray", vmin=0, vmax=1,
                       aspect=aspect)
    if roi is not None:
        _outline(ax_mask, roi, ROI_COLOUR, 0.8, "dashed")
    n = 0
    if mask is not None:
        n = int(mask.sum()) * s * s  # about the count at full resolution
        fill = np.zeros(mask.shape + (4,), np.float32)
        fill[mask] = (*MASK_COLOUR, 0.45)
        ax_mask.imshow(fill, aspect=aspect)
        _outline(ax_mask, mask, MASK_COLOUR, 1.2)
    ax_mask.set_title("mask" if mask is None or n == 0 else "mask (red)", fontsize=10)
    save_figure(fig, path, dpi=DPI)  # a pyplot-free Figure: nothing global to close afterwards


def draw_histogram(path: Path, values: np.ndarray, threshold: float | None, side: str | None,
                   region: str) -> None:
    """The map values inside the region, log counts (the background dwarfs a lesion), threshold
    as a vertical line."""
    fig = Figure(figsize=HISTOGRAM_FIGSIZE, layout="constrained")
    ax = fig.subplots()
    values = values[np.isfinite(values)]
    if values.size:
        low, high = float(values.min()), float(values.max())
        if threshold is not None:
            low, high = min(low, threshold), max(high, threshold)
        ax.hist(values, bins=100, range=(low, high if high > low else low + 1e-6), color="0.35", log=True)
    else:
        ax.text(0.5, 0.5, "no map values in the region", ha="center", va="center", transform=ax.transAxes)
    if threshold is not None:
        arrow = "→" if side != "below" else "←"
        ax.axvline(threshold, color="red", linewidth=1.5,
                   label=f"threshold {threshold:.4g} (anomalous {arrow})")
        ax.legend(fontsize=8, loc="best", framealpha=0.85)
    ax.set_title(f"map values in {region} (n={values.size:,})", fontsize=10)
    ax.tick_params(labelsize=8)
    ax.set_ylabel("voxels", fontsize=8)
    save_figure(fig, path, dpi=DPI)


# ---- one case ----------------------------------------------------------------------------------------
def _resolve(folder: Path, relative: str | None) -> Path | None:
    return None if not relative else folder / relative


def _read_optional(path: Path | None, what: str, notes: list[str]):
    """(array as (z, y, x), geometry) or (None, None) with a note when the file is absent or unreadable."""
    if path is None:
        return None, None
    try:
        array, geometry = read_image(path)
    except ImageReadError as e:
        notes.append(f"{what} not shown: {e}")
        return None, None
    return _as_volume(array), geometry


def draw_case(row: CaseRow, prediction_folder: Path, figures: Path, meta: dict) -> list[str]:
    """The case's PNGs (paths relative to ``figures.parent``); notes go to ``row.notes``."""
    outputs = row.record.get("outputs") or {}
    notes = row.notes
    mask, mask_geometry = _read_optional(_resolve(prediction_folder, outputs.get("mask")), "mask", notes)
    anomaly_map, map_geometry = _read_optional(_resolve(prediction_folder, outputs.get("map")), "map", notes)
    roi, _ = _read_optional(_resolve(prediction_folder, outputs.get("roi")), "region", notes)

    image, image_geometry = None, None
    inputs = row.record.get("inputs") or []
    if inputs:
        first = Path(inputs[0])
        first = first if first.is_absolute() else prediction_folder / first
        if first.is_file():
            image, image_geometry = _read_optional(first, "input", notes)
        else:
            notes.append(f"input missing (deleted since prediction?): {first}")
    else:
        notes.append("input not recorded in predictions.json")

    reference = next((a for a in (mask, anomaly_map, image) if a is not None), None)
    if reference is None:
        notes.append("nothing to draw: neither mask, map nor input could be read")
        return []
    # Arrays that do not match the case's shape (a file replaced since) are dropped, not guessed at.
    shape = reference.shape
    arrays = {"mask": mask, "map": anomaly_map, "region": roi, "input": image}
    for name, array in arrays.items():
        if array is not None and array.shape != shape:
            notes.append(f"{name} not shown: shape {array.shape} differs from {shape}")
            arrays[name] = None
    mask, anomaly_map, roi, image = arrays["mask"], arrays["map"], arrays["region"], arrays["input"]
    mask = None if mask is None else mask > 0
    roi = None if roi is None else roi > 0
    if roi is not None and not roi.any():
        notes.append("the region is empty")

    side = meta.get("anomalous_side")
    threshold = meta.get("threshold")
    signed = None if anomaly_map is None else _side_sign(side) * anomaly_map
    z, why = choose_slice(mask, signed, roi)
    geometry = next(g for g in (mask_geometry, map_geometry, image_geometry) if g is not None)
    # Pixels as wide as they are tall on screen: the aspect is the (y, x) spacing ratio.
    spacing = geometry.spacing
    aspect = float(spacing[1] / spacing[0]) if len(spacing) > 1 and spacing[0] > 0 else 1.0
    if shape[0] > 1:
        row.notes.insert(0, f"slice {z + 1} of {shape[0]}, {why}")
    elif mask is None or not mask.any():
        row.notes.insert(0, "empty mask" if mask is not None else "no mask")

    def at(a):
        return None if a is None else a[z]

    written = []
    slice_png = figures / f"{row.file_stem}_slice.png"
    draw_slice(slice_png, at(image), at(anomaly_map), at(mask), at(roi), aspect, meta.get("map") or "map",
               threshold)
    written.append(f"{figures.name}/{slice_png.name}")
    if anomaly_map is not None:
        values = anomaly_map[roi] if roi is not None else anomaly_map.ravel()
        hist_png = figures / f"{row.file_stem}_histogram.png"
        draw_histogram(hist_png, values, threshold, side, "the region" if roi is not None else "the whole image")
        written.append(f"{figures.name}/{hist_png.name}")
    return written


# ---- the page ----------------------------------------------------------------------------------------
def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _number(value, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def sorted_rows(cases: dict[str, dict]) -> list[CaseRow]:
    """Most anomalous first: scored cases by score, then the others by anomalous voxel count."""
    rows = []
    for case, record in cases.items():
        record = record if isinstance(record, dict) else {}
        score = record.get("score")
        voxels = record.get("anomalous_voxels")
        rows.append(CaseRow(str(case), record, None if score is None else float(score), record.get("decision"),
                            None if voxels is None else int(voxels)))
    rows.sort(key=lambda r: (r.score is None, -(r.score or 0.0), -(r.voxels or 0), r.case))
    for rank, row in enumerate(rows, start=1):
        row.rank = rank
    return rows


STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto;
       max-width: 1120px; padding: 0 16px; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin: 0 0 0.3em 0; word-break: break-all; }
.warnings { background: #fff3cd; border: 2px solid #e0a800; border-radius: 6px; padding: 10px 16px;
            margin: 12px 0; }
.warnings h2 { color: #8a5a00; }
.failed { background: #fdecea; border: 1px solid #e57373; border-radius: 6px; padding: 8px 16px; margin: 12px 0; }
.failed li, .warnings li { word-break: break-word; }
dl.run { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 12px 0; }
dl.run dt { font-weight: 600; } dl.run dd { margin: 0; word-break: break-all; }
table { border-collapse: collapse; min-width: 60%; margin: 12px 0 24px 0; font-size: 0.92em; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; }
th { background: #f3f3f3; position: sticky; top: 0; }
th.num { text-align: right; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.case { word-break: break-all; }
tr.anomalous td.decision { color: #b00020; font-weight: 600; }
.note { color: #555; font-size: 0.92em; }
section.case { border-top: 1px solid #ccc; padding: 14px 0; }
.figures { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-start; }
.figures img { border: 1px solid #ddd; max-width: 100%; height: auto; }
"""

# Lets a headless browser (tests/test_report.py) tell whether every image loaded from disk.
IMAGE_CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  document.body.dataset.imagesTotal = images.length;
  document.body.dataset.imagesLoaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
});
"""


def _header(meta: dict, rows: list[CaseRow], failed: dict, warnings: list) -> list[str]:
    parts = [f"<h1>autouad QC report: {_e(meta.get('dataset', '?'))}</h1>"]
    if warnings:
        parts.append('<div class="warnings"><h2>Warnings</h2><ul>')
        parts += [f"<li>{_e(w)}</li>" for w in warnings]
        parts.append("</ul></div>")
    folds = meta.get("folds")
    image_threshold = meta.get("image_threshold")
    fields = [
        ("method", meta.get("method")), ("plans", meta.get("plans_name")), ("model folder", meta.get("model_folder")),
        ("dataset", meta.get("dataset")),
        ("folds", ", ".join(str(f) for f in folds) if isinstance(folds, list) else folds),
        ("map", meta.get("map")), ("threshold", _number(meta.get("threshold"), 6)),
        ("anomalous side", meta.get("anomalous_side")),
        ("image threshold", _number(image_threshold, 6) if image_threshold is not None else None),
        # how images were scored: one image score, or each ASC-Net fold's own orientation
        ("image score", meta.get("image_score") if image_threshold is not None else None),
        ("input folder", meta.get("input_folder")),
        ("cases predicted", len(rows)), ("cases failed", len(failed)),
    ]
    parts.append('<dl class="run">')
    parts += [f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in fields if v is not None]
    parts.append("</dl>")
    if failed:
        parts.append(f'<div class="failed"><h2>Failed cases ({len(failed)})</h2><ul>')
        parts += [f"<li><b>{_e(case)}</b>: {_e(reason)}</li>" for case, reason in sorted(failed.items())]
        parts.append("</ul></div>")
    return parts


def _table(rows: list[CaseRow], drawn: set[int]) -> list[str]:
    # Volumes get no image score: their table leaves the two empty columns out.
    scored = any(row.score is not None or row.decision is not None for row in rows)
    head = '<th class="num">score</th><th>decision</th>' if scored else ""
    parts = ['<h2 id="cases">Cases, most anomalous first</h2>', "<table>",
             f'<tr><th class="num">#</th><th>case</th>{head}<th class="num">anomalous voxels</th><th></th></tr>']
    for row in rows:
        decision = {1: "anomalous", 0: "normal"}.get(row.decision, "—")
        link = f'<a href="#{row.anchor}">view</a>' if row.rank in drawn else '<span class="note">no figure</span>'
        cells = (f'<td class="num score">{_e(_number(row.score))}</td><td class="decision">{_e(decision)}</td>'
                 if scored else "")
        parts.append(f'<tr class="{"anomalous" if row.decision == 1 else "normal"}">'
                     f'<td class="num">{row.rank}</td><td class="case">{_e(row.case)}</td>{cells}'
                     f'<td class="num">{_e(_number(row.voxels))}</td><td>{link}</td></tr>')
    parts.append("</table>")
    return parts


def _section(row: CaseRow, images: list[str]) -> list[str]:
    facts = [f"rank {row.rank}", f"anomalous voxels {_number(row.voxels)}"]
    if row.score is not None:
        facts.insert(1, f"score {_number(row.score)}")
    if row.decision is not None:
        facts.insert(2, {1: "anomalous", 0: "normal"}.get(row.decision, str(row.decision)))
    parts = [f'<section class="case" id="{row.anchor}"><h2>{_e(row.case)}</h2>',
             f'<div class="note">{_e(" · ".join(facts))} · <a href="#cases">back to the table</a></div>']
    parts += [f'<div class="note">{_e(note)}</div>' for note in row.notes]
    parts.append('<div class="figures">')
    parts += [f'<img src="{_e(quote(src))}" alt="{_e(row.case)}">' for src in images]
    parts.append("</div></section>")
    return parts


def write_report(prediction_folder: Path, output: Path | None = None, max_cases: int | None = None) -> Path:
    """Write the QC report of ``prediction_folder`` and return the HTML path.

    ``output`` is the HTML file (default ``<prediction_folder>/report.html``); the PNGs go to a
    ``report/`` folder beside it. The table lists every case; per-case figures are drawn for the
    ``max_cases`` most anomalous cases (default 200), and the page says how many were left out."""
    prediction_folder = Path(prediction_folder)
    predictions = prediction_folder / PREDICTIONS_FILE
    if not predictions.is_file():
        raise FileNotFoundError(f"{predictions}: not found (is {prediction_folder} an autouad_predict output?)")
    meta = load_json(predictions)
    output = Path(output) if output is not None else prediction_folder / REPORT_FILE
    figures = output.parent / FIGURES_FOLDER
    figures.mkdir(parents=True, exist_ok=True)

    rows = sorted_rows(meta.get("cases") or {})
    failed = {str(k): str(v) for k, v in (meta.get("failed") or {}).items()}
    warnings = [str(w) for w in (meta.get("warnings") or [])]
    limit = DEFAULT_FIGURE_CASES if max_cases is None else max(0, int(max_cases))

    sections, drawn = [], set()
    for row in rows[:limit]:
        images = draw_case(row, prediction_folder, figures, meta)
        drawn.add(row.rank)
        sections += _section(row, images)

    body = _header(meta, rows, failed, warnings)
    left_out = len(rows) - len(drawn)
    if left_out > 0:
        body.append(f'<p class="note">Figures are drawn for the {len(drawn)} most anomalous cases; '
                    f'{left_out} case{"s" if left_out != 1 else ""} left out (listed in the table only).</p>')
    if not rows:
        body.append('<p class="note">No case was predicted.</p>')
    body += _table(rows, drawn) if rows else []
    body += sections
    page = "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>autouad QC report: {_e(meta.get('dataset', ''))}</title>",
        f"<style>{STYLE}</style>", "</head><body>", *body,
        f"<script>{IMAGE_CHECK_SCRIPT}</script>", "</body></html>", ""])
    with atomic_output(output, suffix=".tmp.html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    return output


# ---- a picture of the page -----------------------------------------------------------------------------
def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_command(chromium: str, profile: Path) -> list[str]:
    """Headless Chromium that stays offline and keeps its profile in ``profile`` (a fresh folder:
    the user's own profile may be locked by a running browser)."""
    return [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--hide-scrollbars", f"--user-data-dir={profile}"]


def screenshot(html_path: Path, png: Path, width: int = 1200, height: int = 1600, timeout: float = 120) -> bool:
    """A PNG of the top ``width`` x ``height`` pixels of the page (for the docs); False when no
    Chromium is installed or it failed."""
    chromium = find_chromium()
    if chromium is None:
        return False
    from PIL import Image  # installed with matplotlib

    with tempfile.TemporaryDirectory() as work:
        shot = Path(work) / "screenshot.png"
        # Headless Chromium now and then leaves the last tiles at the bottom of the window unpainted:
        # render a taller window and keep its top.
        command = chromium_command(chromium, Path(work) / "profile") + [
            f"--window-size={width},{height + SCREENSHOT_MARGIN}", "--force-device-scale-factor=1",
            "--run-all-compositor-stages-before-draw", "--virtual-time-budget=5000", f"--screenshot={shot}",
            Path(html_path).resolve().as_uri()]
        try:
            done = subprocess.run(command, capture_output=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            return False
        if done.returncode != 0 or not shot.is_file() or shot.stat().st_size == 0:
            return False
        with Image.open(shot) as full, atomic_output(png, suffix=".tmp.png") as tmp:
            full.crop((0, 0, min(width, full.width), min(height, full.height))).save(tmp, format="PNG")
    return True
