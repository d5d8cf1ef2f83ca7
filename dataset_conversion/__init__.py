"""Converters from public dataset layouts to the autouad raw format (docs/dataset_format.md).

Each converter is a module with
    FORMAT: str                         the name used on the command line
    HELP: str                           one line for --help
    add_arguments(parser) -> None       its own options; each option's dest is a keyword of convert()
    convert(source, dataset_id, name=None, *, raw_folder=None, overwrite=False, **options) -> Path
and is listed in CONVERTER_MODULES below.
"""

CONVERTER_MODULES = {
    "brats-deepmedic": "dataset_conversion.brats_deepmedic",
    "brats": "dataset_conversion.brats",
    "msseg2015": "dataset_conversion.msseg2015",
    "lits": "dataset_conversion.lits",
    "btcv": "dataset_conversion.btcv",
    "chestxray-folders": "dataset_conversion.chestxray_folders",
    "covidx": "dataset_conversion.covidx",
    "chestxray14": "dataset_conversion.chestxray14",
    "nifti-folders": "dataset_conversion.nifti_folders",
    "ct-synthetic-tumours": "dataset_conversion.ct_synthetic_tumours",
    "demo": "dataset_conversion.demo",
}
