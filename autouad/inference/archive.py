"""Shareable models: a trained configuration (or the chosen one of inference_instructions.json) as one
zip file that another machine installs or predicts with directly.

    autouad_export_model -d 1 -o brats_model.zip      # the instructions' choice, else the planner's model
    autouad_install_model brats_model.zip              # into $AUTOUAD_results
    autouad_predict -i scans/ -o out/ -m brats_model.zip

The archive holds, under the dataset's name, what prediction reads and nothing else: per model folder
its plans, dataset.json and fingerprint, and per fold ``model.pt`` (inference networks, plans,
threshold; tensors and plain data only) and ``threshold.json``; the inference instructions when
there are some; and ``manifest.json`` with the SHA-256 of every file. Opening an archive refuses, in
one line, a path that would leave its folder, a file the manifest does not list or whose checksum
differs, and a weights file that needs pickle to load.
"""
from __future__ import annotations

import hashlib
import io
import json
import tempfile
import time
import zipfile
from pathlib import Path, PurePosixPath

import torch

from autouad import __version__
from autouad.utils.files import atomic_output

MANIFEST = "manifest.json"
ARCHIVE_FORMAT = "autouad-model-archive-1"
MODEL_FOLDER_FILES = ("plans.json", "dataset.json", "dataset_fingerprint.json")
FOLD_FILES = ("model.pt", "threshold.json")
MAX_FILE_BYTES = 4 * 2 ** 30


class ModelArchiveError(Exception):
    """An archive that cannot be exported, installed or opened; the message names it and says why."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def export_model(results_dataset_folder: Path, output: Path, model_folder: Path | None = None,
                 folds: list[int] | None = None) -> Path:
    """Pack the dataset's chosen configuration (its inference_instructions.json, with every model it
    uses) or one ``model_folder`` into ``output`` (written atomically)."""
    from autouad.selection.evidence import KNN_KIND
    from autouad.selection.find_best import INSTRUCTIONS_FILE

    dataset_folder = Path(results_dataset_folder)
    dataset = dataset_folder.name
    files: dict[str, bytes] = {}
    instructions = dataset_folder / INSTRUCTIONS_FILE
    if model_folder is None and instructions.is_file():
        data = json.loads(instructions.read_text(encoding="utf-8"))
        members = data["chosen"]["members"]
        folders = [dataset_folder / info["model_folder"] for info in members.values() if info["kind"] == "method"]
        if any(info["kind"] == KNN_KIND for info in members.values()):
            raise ModelArchiveError(f"{instructions}: the chosen configuration uses the pixel kNN baseline, which needs "
                                    f"the dataset's normal training images; export a model folder with --model-folder")
        folds = folds or data["folds"]
        files[f"{dataset}/{INSTRUCTIONS_FILE}"] = instructions.read_bytes()
    elif model_folder is not None:
        folders = [Path(model_folder)]
    else:
        raise ModelArchiveError(f"{dataset_folder}: no {INSTRUCTIONS_FILE}; run autouad_find_best_configuration, or name "
                                f"a model folder")
    for folder in folders:
        trained = sorted(int(p.name.split("_")[1]) for p in folder.glob("fold_*") if (p / "model.pt").is_file())
        chosen = folds or trained
        missing = [k for k in chosen if k not in trained]
        if missing or not chosen:
            raise ModelArchiveError(f"{folder}: fold(s) {missing or 'any'} have no model.pt; train and calibrate them first")
        for name in MODEL_FOLDER_FILES:
            if (folder / name).is_file():
                files[f"{dataset}/{folder.name}/{name}"] = (folder / name).read_bytes()
        for k in chosen:
            for name in FOLD_FILES:
                files[f"{dataset}/{folder.name}/fold_{k}/{name}"] = (folder / f"fold_{k}" / name).read_bytes()
    manifest = {"format": ARCHIVE_FORMAT, "autouad_version": __version__, "dataset": dataset,
                "created": time.strftime("%Y-%m-%d %H:%M"),
                "contents": "inference instructions" if any(n.endswith(INSTRUCTIONS_FILE) for n in files) else "model",
                "files": {name: sha256(data) for name, data in sorted(files.items())}}
    output = Path(output)
    with atomic_output(output, suffix=".tmp.zip") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:  # weights barely compress
            archive.writestr(MANIFEST, json.dumps(manifest, indent=2))
            for name, data in sorted(files.items()):
                archive.writestr(name, data)
    return output


def read_archive(path: Path) -> tuple[dict, dict[str, bytes]]:
    """(manifest, {name: bytes}) of a checked archive; ModelArchiveError naming the problem otherwise."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelArchiveError(f"{path}: not a readable zip file ({e})") from None
    with archive:
        entries = archive.infolist()
        for entry in entries:
            name = PurePosixPath(entry.filename)
            if name.is_absolute() or ".." in name.parts or "\\" in entry.filename or ":" in entry.filename:
                raise ModelArchiveError(f"{path}: entry {entry.filename!r} would leave the model's folder; refused")
            if (entry.external_attr >> 16) & 0o170000 == 0o120000:
                raise ModelArchiveError(f"{path}: entry {entry.filename!r} is a symbolic link; refused")
            if entry.file_size > MAX_FILE_BYTES:
                raise ModelArchiveError(f"{path}: entry {entry.filename!r} declares {entry.file_size} bytes; refused")
        names = [e.filename for e in entries if not e.is_dir()]
        if MANIFEST not in names:
            raise ModelArchiveError(f"{path}: no {MANIFEST}; not an autouad model archive")
        try:
            manifest = json.loads(archive.read(MANIFEST))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelArchiveError(f"{path}: {MANIFEST} is not valid JSON ({e})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != ARCHIVE_FORMAT:
            raise ModelArchiveError(f"{path}: {MANIFEST} is not an {ARCHIVE_FORMAT} manifest")
        listed = manifest.get("files") or {}
        unlisted = sorted(set(names) - set(listed) - {MANIFEST})
        if unlisted:
            raise ModelArchiveError(f"{path}: {unlisted[0]} is not listed in {MANIFEST}; refused")
        files = {}
        for name, digest in listed.items():
            if name not in names:
                raise ModelArchiveError(f"{path}: {name} is listed in {MANIFEST} but missing")
            data = archive.read(name)
            if sha256(data) != digest:
                raise ModelArchiveError(f"{path}: {name} does not match its SHA-256 in {MANIFEST}; refused")
            files[name] = data
    for name, data in files.items():
        if name.endswith(".pt"):
            try:
                torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            except Exception as e:  # a pickled object, or a damaged file
                first = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
                raise ModelArchiveError(f"{path}: {name} does not load as weights only ({first}); refused") from None
    return manifest, files


def install_model(path: Path, results_root: Path, overwrite: bool = False) -> Path:
    """Unpack a checked archive into ``results_root``; returns the dataset's results folder. Existing
    files are never replaced unless ``overwrite``."""
    manifest, files = read_archive(path)
    results_root = Path(results_root)
    clashes = [name for name in files if (results_root / name).exists()]
    if clashes and not overwrite:
        raise ModelArchiveError(f"{results_root / clashes[0]} already exists; install elsewhere or pass --overwrite")
    for name, data in files.items():
        with atomic_output(results_root / name) as tmp:
            tmp.write_bytes(data)
    return results_root / manifest["dataset"]


class OpenedArchive:
    """An archive unpacked, after its checks, into a temporary folder for prediction."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._folder = tempfile.TemporaryDirectory(prefix="autouad_model_")
        self.dataset_folder = install_model(self.path, Path(self._folder.name))

    def model_folder(self) -> Path:
        """What to predict with: the instructions' folder when the archive has them, else its model."""
        from autouad.selection.find_best import INSTRUCTIONS_FILE
        if (self.dataset_folder / INSTRUCTIONS_FILE).is_file():
            return self.dataset_folder
        [folder] = [p for p in self.dataset_folder.iterdir() if p.is_dir()]
        return folder

    def close(self) -> None:
        self._folder.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
