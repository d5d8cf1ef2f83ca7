"""autouad_find_best_configuration -d DATASET [-f FOLDS]: compare every trained method's configurations
(threshold sources, post-processing, image scores) and the non-learned baselines out of fold,
with averages of the best ones, choose one, and write inference_instructions.json and .txt into
$AUTOUAD_results/DatasetXXX_Name/. autouad_predict -d DATASET follows them. A thin layer over
autouad.api.find_best_configuration.
"""
from __future__ import annotations

import argparse
import sys

from autouad import api
from autouad.planning.plans import PlansError
from autouad.selection.evidence import SelectionError
from autouad.selection.find_best import INSTRUCTIONS_TEXT
from autouad.utils.progress import set_quiet


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="autouad_find_best_configuration", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or DatasetXXX_Name")
    parser.add_argument("-f", "--folds", type=int, nargs="+", default=None,
                        help="the folds to compare on (default: all of the plans' folds; each must be trained)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    set_quiet(args.quiet)
    try:
        instructions = api.find_best_configuration(args.dataset, args.folds, quiet=args.quiet)
    except (SelectionError, PlansError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    chosen = instructions["chosen"]
    figure = chosen["auroc"] if instructions["task"] == "image" else chosen.get("dice")
    print(f"chosen: {chosen['configuration']} ({'image AUROC' if instructions['task'] == 'image' else 'Dice'} "
          f"{'n/a' if figure is None else format(figure, '.3f')} out of fold over folds {instructions['folds']})")
    for warning in instructions["warnings"]:
        print(f"WARNING: {warning}", file=sys.stderr)
    print(f"written: {INSTRUCTIONS_TEXT} and .json in the dataset's results folder")
    return 0


if __name__ == "__main__":
    sys.exit(main())
