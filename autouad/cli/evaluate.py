"""autouad_evaluate -r REFERENCE -p PREDICTIONS: score a prediction folder written by autouad_predict.

REFERENCE is a folder of reference masks <case><ending> (pixel level: Dice with and without
post-processing and, when the predictions hold maps/, AUROC, average precision and the
best-possible Dice, an upper bound that uses the reference labels), or a labels file, a CSV with a
case,label header or a raw dataset's dataset.json (image level, from PREDICTIONS/scores.csv).
The results go to summary.json, by default in PREDICTIONS; the reference is never written to.
A thin layer over autouad.api.evaluate.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autouad import api
from autouad.evaluation.evaluator import EvaluationError, format_summary_table
from autouad.utils.images import ImageReadError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="autouad_evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-r", "--reference", required=True, type=Path,
                        help="folder of reference masks, or a labels file (.csv with case,label, or dataset.json)")
    parser.add_argument("-p", "--predictions", required=True, type=Path, help="prediction folder of autouad_predict")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="where to write summary.json (default PREDICTIONS/summary.json)")
    parser.add_argument("--roi", type=Path, default=None,
                        help="folder of region-of-interest masks to compute AUROC / AP / best Dice in "
                             "(default PREDICTIONS/rois, else the whole image)")
    args = parser.parse_args(argv)
    try:
        result = api.evaluate(args.reference, args.predictions, roi_folder=args.roi, output=args.output)
    except (EvaluationError, ImageReadError, FileNotFoundError) as e:
        message = " ".join(str(e).split())
        print(f"error: {message}", file=sys.stderr)
        return 1
    print(format_summary_table(result.summary))
    print(f"summary written to {result.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
