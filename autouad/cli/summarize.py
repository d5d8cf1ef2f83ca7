"""autouad_summarize -d DATASET: one table of every trained fold of every method on a dataset.

Reads each fold's ``validation/summary.json`` (written by autouad_train after calibrating the fold)
and ``threshold.json``; prints a row per fold and the mean over folds per model, and saves the
table as ``$AUTOUAD_results/DatasetXXX_Name/validation_summary.json``. The figures are the folds'
own validation cases in the preprocessed slice space; autouad_evaluate scores predicted files.
A thin layer over autouad.api.summarize.
"""
from __future__ import annotations

import argparse
import sys

from autouad import api
from autouad.evaluation.summary import SUMMARY_TABLE_FILE, format_table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="autouad_summarize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or DatasetXXX_Name")
    args = parser.parse_args(argv)
    try:
        table = api.summarize(args.dataset)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{table['dataset']}: validation cases of each fold (preprocessed slice space)")
    print(format_table(table["rows"]))
    print(f"saved {SUMMARY_TABLE_FILE} beside the models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
