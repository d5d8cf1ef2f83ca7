"""autouad_plan_and_preprocess -d ID: validate -> fingerprint -> plan -> preprocess.

The single steps are also commands of their own: autouad_extract_fingerprint, autouad_plan and
autouad_preprocess (each reads what the step before it wrote).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from autouad.dataset.raw_dataset import load_raw_dataset
from autouad.dataset.validation import DatasetValidationError
from autouad.fingerprint.extractor import DatasetFingerprintExtractor
from autouad.paths import find_dataset_name, preprocessed_root, raw_root
from autouad.planning.method_plans import METHODS
from autouad.planning.plans_files import default_plans_name, plans_file_name
from autouad.planning.planner import SCHEDULES, PlanningError, load_planner_class, plan_dataset
from autouad.preprocessing.preprocessor import preprocess_dataset
from autouad.utils.files import load_json, save_json

FINGERPRINT_FILE = "dataset_fingerprint.json"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", "--dataset", required=True, nargs="+",
                        help="dataset id(s) or DatasetXXX_Name folder name(s)")
    parser.add_argument("--np", type=int, default=2, dest="num_processes",
                        help="worker processes (default 2)")


def _planning_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--method", choices=METHODS, default=None,
                        help="use this method instead of the one the planner picks from the data")
    parser.add_argument("--schedule", choices=SCHEDULES, default=None,
                        help="training schedule (default: paper on a GPU, fast on a CPU)")
    parser.add_argument("--folds", type=int, default=None, help="number of patient-wise folds (default 2 on small data)")
    parser.add_argument("--memory-budget-gb", type=float, default=8.0,
                        help="training memory the batch size must fit in (default 8 GiB)")
    parser.add_argument("--planner", default=None, help="dotted path of an AutoUADPlanner subclass")
    parser.add_argument("--plans-name", default=None,
                        help="name of the plans (default autouadPlans, or autouadPlans_<method> with -m)")


def _folders(dataset: str) -> tuple[str, Path, Path]:
    name = find_dataset_name(dataset)
    raw = raw_root() / name
    if not raw.is_dir():
        raise FileNotFoundError(f"{raw}: no such raw dataset (check AUTOUAD_raw)")
    return name, raw, preprocessed_root() / name


def _fingerprint(raw: Path, num_processes: int) -> dict:
    return DatasetFingerprintExtractor(raw, num_processes).run()


def _write_fingerprint(fingerprint: dict, raw: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(raw / "dataset.json", out / "dataset.json")
    save_json(fingerprint, out / FINGERPRINT_FILE)


def _plans_name(args) -> str:
    """--plans-name, else autouadPlans_<method> for a method named with -m, else autouadPlans."""
    return args.plans_name or default_plans_name(getattr(args, "method", None))


def _plan(fingerprint: dict, out: Path, args) -> dict:
    return plan_dataset(fingerprint, out, load_planner_class(args.planner), plans_file=plans_file_name(_plans_name(args)),
                        method=args.method, schedule=args.schedule, num_folds=args.folds,
                        memory_budget_gb=args.memory_budget_gb, plans_name=_plans_name(args))


def _preprocess(raw: Path, out: Path, plans: dict, num_processes: int) -> dict:
    ds = load_raw_dataset(raw)
    return preprocess_dataset(ds, plans, out / plans["preprocessing"]["data_folder"], num_processes)


def _print_plan(plans: dict) -> None:
    print(f"plan: method {plans['method']}, schedule {plans['schedule']['name']}, slices "
          f"{plans['preprocessing']['slice_size'][0]}x{plans['preprocessing']['slice_size'][1]}, "
          f"batch {plans['batch_size']}, {plans['folds']['num_folds']} folds, threshold {plans['threshold']['strategy']}")
    for key, reason in plans["reasons"].items():
        print(f"  {key}: {reason}")


def _run(args, steps: tuple[str, ...]) -> int:
    status = 0
    for dataset in args.dataset:
        start = time.time()
        try:
            name, raw, out = _folders(dataset)
            if "fingerprint" in steps:
                fingerprint = _fingerprint(raw, args.num_processes)
                s = fingerprint["summary"]
                print(f"{name}: {s['num_training_cases']} training cases ({s['num_normal_cases']} normal, "
                      f"{s['num_unlabeled_cases']} unlabeled), {s['num_test_cases']} test; all files check out")
                if getattr(args, "verify_only", False):
                    continue
                _write_fingerprint(fingerprint, raw, out)
            else:
                fingerprint = load_json(out / FINGERPRINT_FILE)
            if "plan" in steps:
                plans = _plan(fingerprint, out, args)
                _print_plan(plans)
            else:
                plans = load_json(out / plans_file_name(_plans_name(args)))
            if "preprocess" in steps:
                result = _preprocess(raw, out, plans, args.num_processes)
                print(f"preprocessed {result['done']} case(s), skipped {result['skipped']} already done; "
                      f"{result['num_slices']} slices in {out / plans['preprocessing']['data_folder']}")
            print(f"{name}: finished in {time.time() - start:.1f} s; outputs in {out}")
        except DatasetValidationError as e:
            print(str(e), file=sys.stderr)
            status = 1
        except (PlanningError, FileNotFoundError, ValueError) as e:
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
    steps = ("fingerprint",) if args.verify_only else \
        ("fingerprint", "plan") if args.no_preprocess else ("fingerprint", "plan", "preprocess")
    return _run(args, steps)


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
    parser.add_argument("-m", "--method", choices=METHODS, default=None,
                        help="preprocess the plans of this method (autouadPlans_<method>)")
    parser.add_argument("--plans-name", default=None)
    return _run(parser.parse_args(argv), ("preprocess",))


if __name__ == "__main__":
    sys.exit(main_plan_and_preprocess())
