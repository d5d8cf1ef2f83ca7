"""autouad_plan_and_preprocess -d ID: validate -> fingerprint -> plan -> preprocess.

The single steps are also commands of their own: autouad_extract_fingerprint, autouad_plan and
autouad_preprocess (each reads what the step before it wrote). A thin layer over
autouad.api.plan_and_preprocess.
"""
from __future__ import annotations

import argparse
import sys

from autouad import api
from autouad.dataset.validation import DatasetValidationError
from autouad.methods.registry import method_names
from autouad.planning.plans import PlansError
from autouad.planning.planner import SCHEDULES, PlanningError
from autouad.utils.progress import set_quiet

FINGERPRINT_FILE = api.FINGERPRINT_FILE


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", "--dataset", required=True, nargs="+",
                        help="dataset id(s) or DatasetXXX_Name folder name(s)")
    parser.add_argument("--np", type=int, default=2, dest="num_processes",
                        help="worker processes (default 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _planning_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--method", choices=method_names(), default=None,
                        help="use this method instead of the one the planner picks from the data")
    parser.add_argument("--schedule", choices=SCHEDULES, default=None,
                        help="training schedule (default: paper on a GPU, fast on a CPU)")
    parser.add_argument("--folds", type=int, default=None, help="number of patient-wise folds (default 2 on small data)")
    parser.add_argument("--memory-budget-gb", type=float, default=8.0,
                        help="training memory the batch size must fit in (default 8 GiB)")
    parser.add_argument("--planner", default=None, help="dotted path of an AutoUADPlanner subclass")
    parser.add_argument("--plans-name", default=None,
                        help="name of the plans (default autouadPlans, or autouadPlans_<method> with -m)")


def _run(args, steps: tuple[str, ...]) -> int:
    set_quiet(args.quiet)
    status = 0
    for dataset in args.dataset:
        try:
            api.plan_and_preprocess(
                dataset, method=getattr(args, "method", None), schedule=getattr(args, "schedule", None),
                num_folds=getattr(args, "folds", None), planner=getattr(args, "planner", None),
                plans_name=getattr(args, "plans_name", None),
                memory_budget_gb=getattr(args, "memory_budget_gb", 8.0), num_processes=args.num_processes,
                steps=steps, verify_only=getattr(args, "verify_only", False))
        except DatasetValidationError as e:
            print(str(e), file=sys.stderr)
            status = 1
        except (PlanningError, PlansError, FileNotFoundError, ValueError, api.APIError) as e:
            print(f"error: {e}", file=sys.stderr)
            status = 1
    return status


def main_plan_and_preprocess(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="autouad_plan_and_preprocess", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(parser)
    _planning_options(parser)
    parser.add_argument("--verify-only", action="store_true", help="check the raw dataset and stop; writes nothing")
    parser.add_argument("--no-preprocess", action="store_true", help="stop after planning")
    args = parser.parse_args(argv)
    return _run(args, ("fingerprint", "plan") if args.no_preprocess else ("fingerprint", "plan", "preprocess"))


def main_extract_fingerprint(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="autouad_extract_fingerprint",
                                     description="validate a raw dataset and write dataset_fingerprint.json")
    _common(parser)
    parser.add_argument("--verify-only", action="store_true", help="check the raw dataset and stop; writes nothing")
    return _run(parser.parse_args(argv), ("fingerprint",))


def main_plan(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="autouad_plan", description="write plans.json from the fingerprint")
    _common(parser)
    _planning_options(parser)
    return _run(parser.parse_args(argv), ("plan",))


def main_preprocess(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="autouad_preprocess", description="preprocess a planned dataset")
    _common(parser)
    parser.add_argument("-m", "--method", choices=method_names(), default=None,
                        help="preprocess the plans of this method (autouadPlans_<method>)")
    parser.add_argument("--plans-name", default=None)
    return _run(parser.parse_args(argv), ("preprocess",))


if __name__ == "__main__":
    sys.exit(main_plan_and_preprocess())
