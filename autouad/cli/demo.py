"""autouad_demo: the pipeline on a demo dataset that autouad generates itself.

It runs generate -> validate -> fingerprint -> plan -> preprocess -> train fold 0 (which ends by
calibrating the fold's threshold on its validation cases) -> predict the test split -> evaluate
against the test masks, in a folder of its own (default ./autouad_demo_output, so your AUTOUAD_*
folders are left alone), and prints the metrics and where every output is.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DEMO_ID = 999
DEMO_NAME = "Demo"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="autouad_demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, default=Path("autouad_demo_output"),
                        help="folder for the demo's raw, preprocessed and results folders")
    parser.add_argument("--np", type=int, default=2, dest="num_processes", help="worker processes")
    parser.add_argument("--schedule", default="smoke", choices=("smoke", "fast", "paper"),
                        help="training schedule to plan (default smoke: the demo must be quick)")
    args = parser.parse_args(argv)
    root = args.output.resolve()
    from autouad import api
    from autouad.paths import dataset_folder_name
    from dataset_conversion import demo

    folders = {"raw_folder": root / "raw", "preprocessed_folder": root / "preprocessed",
               "results_folder": root / "results"}
    start = time.time()
    name = dataset_folder_name(DEMO_ID, DEMO_NAME)
    raw = folders["raw_folder"] / name
    try:
        if (raw / "dataset.json").is_file():
            print(f"[1/5] demo dataset already generated: {raw}")
        else:
            print(f"[1/5] generating the demo dataset (MNI152 anatomy, synthetic lesions) into {raw}")
            demo.convert(DEMO_ID, DEMO_NAME, raw_folder=folders["raw_folder"])
        print("[2/5] validate, fingerprint, plan and preprocess")
        planned = api.plan_and_preprocess(DEMO_ID, schedule=args.schedule, num_processes=args.num_processes,
                                          raw_folder=folders["raw_folder"],
                                          preprocessed_folder=folders["preprocessed_folder"])
        s, plans = planned.fingerprint["summary"], planned.plans
        print()
        print(f"demo data ready in {time.time() - start:.0f} s")
        print(f"  cases: {s['num_normal_cases']} normal, {s['num_unlabeled_cases']} unlabeled, {s['num_test_cases']} test")
        print(f"  slices with brain: {s['num_foreground_slices']} (reference {s['num_reference_slices']}, "
              f"with lesions {s.get('num_anomaly_slices', 0)})")
        pol = ", ".join(f"{k} {v['polarity']}" for k, v in (s.get("anomaly_polarity") or {}).items())
        print(f"  lesion polarity: {pol}; lesion fraction of the brain {100 * s.get('anomaly_fraction_mean', 0):.2f} %")
        print(f"  plan: {plans.method} on {plans.preprocessing.slice_size} slices, {plans.folds.num_folds} folds, "
              f"threshold {plans.threshold.strategy}")
        print(f"  outputs: {folders['preprocessed_folder'] / name}")
        print(f"[3/5] train fold 0 ({args.schedule} schedule)")
        api.train(DEMO_ID, 0, schedule=args.schedule, overwrite=True,
                  preprocessed_folder=folders["preprocessed_folder"], results_folder=folders["results_folder"])
        predictions = root / "predictions"
        print(f"[4/5] predict the {s['num_test_cases']} test cases into {predictions}")
        run = api.predict(raw / "imagesTs", predictions, dataset=DEMO_ID, roi_folder=raw / "roisTs", folds=[0],
                          save_maps=True, results_folder=folders["results_folder"], raw_folder=folders["raw_folder"])
        if run.failed:
            raise RuntimeError(f"{len(run.failed)} test case(s) could not be predicted: {run.failed}")
        print("[5/5] evaluate against the test masks")
        evaluation = api.evaluate(raw / "masksTs", predictions)
    except Exception as e:  # the demo reports any failure in one line, like the commands it stands for
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    from autouad.evaluation.evaluator import format_summary_table
    print(format_summary_table(evaluation.summary))
    print()
    print(f"demo done in {time.time() - start:.0f} s")
    print(f"  trained fold 0 and its threshold: {folders['results_folder'] / name}")
    print(f"  predicted masks, maps and predictions.json: {predictions}")
    print(f"  metrics: {evaluation.path}")
    print(f"  (the {args.schedule} schedule trains for seconds: the numbers show the pipeline works, not how well "
          f"{plans.method} segments; train with --schedule fast or paper for that)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
