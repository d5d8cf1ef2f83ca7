"""autouad_convert_dataset FORMAT -i SOURCE -d ID [--name NAME] [format options]"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from autouad.utils.images import ImageReadError
from dataset_conversion import CONVERTER_MODULES


class ConversionError(Exception):
    """A source that does not have the layout its format promises; the message names the path."""


def load_converter(fmt: str):
    if fmt not in CONVERTER_MODULES:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(CONVERTER_MODULES)}")
    return importlib.import_module(CONVERTER_MODULES[fmt])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autouad_convert_dataset",
        description="Convert a public dataset layout into $AUTOUAD_raw/DatasetXXX_Name (see docs/dataset_format.md).")
    sub = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    for fmt in CONVERTER_MODULES:
        try:
            module = load_converter(fmt)
        except ModuleNotFoundError as e:  # a converter still being written must not break the others
            if e.name != CONVERTER_MODULES[fmt]:
                raise
            continue
        p = sub.add_parser(fmt, help=module.HELP, description=module.HELP)
        if fmt != "demo":
            p.add_argument("-i", "--input", required=True, type=Path, help="the source folder (or file) in the format's layout")
        p.add_argument("-d", "--dataset-id", required=True, type=int, help="the new dataset's id, 0-999")
        p.add_argument("--name", default=None, help="the dataset's name (default: the format's own)")
        p.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this id and name")
        module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    fmt = args.pop("format")
    module = load_converter(fmt)
    source = args.pop("input", None)
    dataset_id, name, overwrite = args.pop("dataset_id"), args.pop("name"), args.pop("overwrite")
    try:
        if fmt == "demo":
            folder = module.convert(dataset_id, name, overwrite=overwrite, **args)
        else:
            folder = module.convert(source, dataset_id, name, overwrite=overwrite, **args)
    except (ConversionError, ImageReadError, FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"autouad_convert_dataset {fmt}: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {folder}")
    print(f"next: autouad_plan_and_preprocess -d {dataset_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
