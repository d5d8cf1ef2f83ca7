"""autouad_baseline knn|intensity|flair -d DATASET -o OUTPUT [-i INPUT]: a non-learned baseline's predictions.

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
    parser.add_argument("baseline", choices=["knn", "intensity", "flair"],
                        help="knn: pixel k-nearest neighbours (2D images); intensity (or flair): the per-case "
                             "robust z-score of one channel, cut at --z")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or DatasetXXX_Name in $AUTOUAD_raw")
    parser.add_argument("-o", "--output", required=True, type=Path, help="prediction folder to write")
    parser.add_argument("-i", "--input", type=Path, default=None, help="images to score (default: imagesTs)")
    parser.add_argument("-k", type=int, default=1, help="knn: nearest normal images averaged (default 1)")
    parser.add_argument("--size", type=int, default=32, help="knn: side of the shrunk grey images (default 32)")
    parser.add_argument("--channel", default=None,
                        help="intensity: the channel (default: the one the fingerprint measured with the strongest "
                             "anomaly contrast; FLAIR for 'flair')")
    parser.add_argument("--z", type=float, default=2.0, help="intensity: the robust z cut (default 2)")
    parser.add_argument("--rois", type=Path, default=None, help="intensity: ROI masks (default: roisTs with imagesTs)")
    args = parser.parse_args(argv)
    try:
        if args.baseline == "knn":
            record = api.baseline_knn(args.dataset, args.output, args.input, k=args.k, size=args.size)
        else:
            channel = args.channel or ("FLAIR" if args.baseline == "flair" else None)
            record = api.baseline_intensity(args.dataset, args.output, args.input, channel=channel, z=args.z,
                                            roi_folder=args.rois)
    except (ValueError, FileNotFoundError, ImageReadError, PredictionError, api.APIError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    if args.baseline == "knn":
        print(f"pixel kNN (k={args.k}, {args.size}x{args.size}): {record['num_predicted']} image(s) scored against "
              f"{record['num_normal_reference']} normal training images in {record['seconds']} s; threshold "
              f"{record['image_threshold']:.4g}; written to {args.output}")
    else:
        print(f"{record['configuration']}: {record['num_predicted']} case(s) in {record['seconds']} s; written to "
              f"{args.output}")
    for problem in record["failed"].values():
        print(f"skipped: {problem}", file=sys.stderr)
    return 1 if record["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
