"""autouad_baseline knn -d DATASET -o OUTPUT [-i INPUT] [-k K]: a non-learned baseline's predictions.

The pixel k-nearest-neighbour baseline (autouad/evaluation/baselines.py) scores each image of INPUT
(default: the dataset's imagesTs) by its distance to the dataset's normal training images and
writes scores.csv and predictions.json in the layout of autouad_predict, so that
``autouad_evaluate -r .../dataset.json -p OUTPUT`` scores it exactly as it scores a method.
A thin layer over autouad.api.baseline_knn.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autouad import api
from autouad.inference.predictor import PredictionError
from autouad.utils.images import ImageReadError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="autouad_baseline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("baseline", choices=["knn"], help="knn: pixel k-nearest neighbours (2D images)")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or DatasetXXX_Name in $AUTOUAD_raw")
    parser.add_argument("-o", "--output", required=True, type=Path, help="prediction folder to write")
    parser.add_argument("-i", "--input", type=Path, default=None, help="images to score (default: imagesTs)")
    parser.add_argument("-k", type=int, default=1, help="number of nearest normal images averaged (default 1)")
    parser.add_argument("--size", type=int, default=32, help="side of the shrunk grey images (default 32)")
    args = parser.parse_args(argv)
    try:
        record = api.baseline_knn(args.dataset, args.output, args.input, k=args.k, size=args.size)
    except (ValueError, FileNotFoundError, ImageReadError, PredictionError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    print(f"pixel kNN (k={args.k}, {args.size}x{args.size}): {record['num_predicted']} image(s) scored against "
          f"{record['num_normal_reference']} normal training images in {record['seconds']} s; threshold "
          f"{record['image_threshold']:.4g}; written to {args.output}")
    for problem in record["failed"].values():
        print(f"skipped: {problem}", file=sys.stderr)
    return 1 if record["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
