"""autouad_export_model -d DATASET -o model.zip and autouad_install_model model.zip: a trained model as
one file to hand to a colleague (autouad.inference.archive). Thin layers over autouad.api."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autouad import api
from autouad.inference.archive import ModelArchiveError


def main_export(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="autouad_export_model", description=__doc__)
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or DatasetXXX_Name")
    parser.add_argument("-o", "--output", required=True, type=Path, help="the zip file to write")
    parser.add_argument("--model-folder", type=Path, default=None,
                        help="export this <method>__<plans> folder instead of the inference instructions' choice")
    parser.add_argument("-f", "--folds", type=int, nargs="+", default=None, help="folds to include (default: all)")
    args = parser.parse_args(argv)
    try:
        path = api.export_model(args.dataset, args.output, model_folder=args.model_folder, folds=args.folds)
    except (ModelArchiveError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({path.stat().st_size / 2 ** 20:.1f} MiB); predict with: autouad_predict -i IN -o OUT -m {path}")
    return 0


def main_install(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="autouad_install_model", description=__doc__)
    parser.add_argument("archive", type=Path, help="a zip written by autouad_export_model")
    parser.add_argument("--overwrite", action="store_true", help="replace files of an earlier install")
    args = parser.parse_args(argv)
    try:
        folder = api.install_model(args.archive, overwrite=args.overwrite)
    except (ModelArchiveError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"installed into {folder}; predict with: autouad_predict -i IN -o OUT -d {folder.name}")
    return 0
