"""autouad_predict -i IN -o OUT [-d DATASET]: anomaly masks for a folder of images.

The model is the trained folds of DATASET in $AUTOUAD_results (``-m`` / ``-p`` pick among several
methods or plans); without ``-d``, the only dataset there with trained models (or the one whose raw
folder holds IN). ``--model-folder`` points at a model folder directly, e.g. one received from a
colleague. Every fold's map is averaged and cut at the folds' calibrated threshold; see
autouad.inference.predictor for the outputs. Input files are named ``<case>_0000<ending>`` per
channel (a plain file name will do when the plan reads one channel); ``--rois`` gives region-of-
interest masks ``<case><ending>`` (brain, liver) when the dataset was trained with them.

An unreadable or unfit input is reported and skipped; the others are predicted. The exit status
is 1 when any case was skipped. A thin layer over autouad.api.predict.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autouad import api
from autouad.inference.outputs import PREDICTIONS_FILE
from autouad.inference.predictor import PredictionError
from autouad.methods.registry import method_names
from autouad.model import CHECKPOINT_FINAL
from autouad.utils.progress import set_quiet


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="autouad_predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--input", type=Path, required=True, help="folder of images to predict")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for the outputs (not the input folder)")
    parser.add_argument("-d", "--dataset", default=None, help="dataset id or DatasetXXX_Name the model was trained on")
    parser.add_argument("-m", "--model", default=None, metavar="MODEL",
                        help="an exported model (.zip), a trained <method>__<plans> folder, a dataset's results "
                             "folder with inference instructions, or a method name (" + ", ".join(method_names()) + ")")
    parser.add_argument("--method", choices=method_names(), default=None, help="which trained method of -d")
    parser.add_argument("-p", "--plans-name", default=None, help="which plans the model was trained with")
    parser.add_argument("--model-folder", type=Path, default=None, help="a trained <method>__<plans> folder")
    parser.add_argument("-f", "--folds", type=int, nargs="+", default=None, help="folds to average (default: all trained)")
    parser.add_argument("--rois", type=Path, default=None, help="folder of region-of-interest masks <case><ending>")
    parser.add_argument("--save-maps", action="store_true", help="also write the float anomaly maps and the regions")
    parser.add_argument("--no-postprocess", action="store_true", help="skip the plan's opening and closing")
    parser.add_argument("--checkpoint", default=CHECKPOINT_FINAL, help="checkpoint file of each fold")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--batch-size", type=int, default=None, help="slices per forward pass")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="auto: bf16 autocast on a GPU, fp32 on the CPU (default)")
    parser.add_argument("--continue", dest="resume", action="store_true",
                        help="predict only the cases an interrupted run into OUT did not finish")
    parser.add_argument("--report", action="store_true",
                        help="also write OUT/report.html: cases by score, the slice of largest anomaly, histograms")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    set_quiet(args.quiet)
    method, model = args.method, args.model_folder
    if args.model is not None:
        if args.model in method_names() and not Path(args.model).exists():
            method = args.model           # -m METHOD, as before
        else:
            model = Path(args.model)
    try:
        run = api.predict(args.input, args.output, model, args.dataset, args.rois, args.folds,
                          method=method, plans_name=args.plans_name, save_maps=args.save_maps,
                          postprocess=not args.no_postprocess, device=args.device, batch_size=args.batch_size,
                          precision=args.precision, checkpoint=args.checkpoint, resume=args.resume,
                          report=args.report)
    except (PredictionError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    record = run.record
    busy = ""
    if "model_seconds" in record and record["seconds"]:
        busy = (f" (the model computed {record['model_seconds'] / record['seconds']:.0%} of the time, waited "
                f"{record['waiting_for_data_seconds']:.1f} s for data)")
    print(f"predicted {record['num_predicted']} case(s) in {record['seconds']:.1f} s into {args.output}{busy}"
          + (f" with {record['configuration']}" if "configuration" in record else "")
          + (f"; {record['num_failed']} skipped (see {args.output / PREDICTIONS_FILE})" if record["num_failed"] else ""))
    return 1 if record["num_failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
