"""autouad_demo: the pipeline on a demo dataset that autouad generates itself.

It runs generate -> validate -> fingerprint -> plan -> preprocess -> train fold 0 (which ends by
calibrating the fold's threshold on its validation cases) -> predict the test split -> evaluate
against the test masks, in a folder of its own (default ./autouad_demo_output, so your AUTOUAD_*
folders are left alone), and prints the metrics and where every output is.
"""
from __future__ import annotations

import argparse
import os
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
    for kind, var in (("raw", "AUTOUAD_raw"), ("preprocessed", "AUTOUAD_preprocessed"), ("results", "AUTOUAD_results")):
        os.environ[var] = str(root / kind)
    from autouad.cli.evaluate import main as evaluate_main
    from autouad.cli.plan_and_preprocess import main_plan_and_preprocess
    from autouad.cli.predict import main as predict_main
    from autouad.cli.train import main as train_main
    from autouad.paths import dataset_folder_name
    from autouad.utils.files import load_json
    from dataset_conversion import demo

    start = time.time()
    name = dataset_folder_name(DEMO_ID, DEMO_NAME)
    results = root / "results"
    raw = root / "raw" / name
    if (raw / "dataset.json").is_file():
        print(f"[1/5] demo dataset already generated: {raw}")
    else:
        print(f"[1/5] generating the demo dataset (MNI152 anatomy, synthetic lesions) into {raw}")
        demo.convert(DEMO_ID, DEMO_NAME, raw_folder=root / "raw")
    print("[2/5] validate, fingerprint, plan and preprocess")
    status = main_plan_and_preprocess(["-d", str(DEMO_ID), "--np", str(args.num_processes),
                                       "--schedule", args.schedule])
    if status:
        return status
    pre = root / "preprocessed" / name
    s = load_json(pre / "dataset_fingerprint.json")["summary"]
    plans = load_json(pre / "plans.json")
    print()
    print(f"demo data ready in {time.time() - start:.0f} s")
    print(f"  cases: {s['num_normal_cases']} normal, {s['num_unlabeled_cases']} unlabeled, {s['num_test_cases']} test")
    print(f"  slices with brain: {s['num_foreground_slices']} (reference {s['num_reference_slices']}, "
          f"with lesions {s.get('num_anomaly_slices', 0)})")
    pol = ", ".join(f"{k} {v['polarity']}" for k, v in (s.get("anomaly_polarity") or {}).items())
    print(f"  lesion polarity: {pol}; lesion fraction of the brain {100 * s.get('anomaly_fraction_mean', 0):.2f} %")
    print(f"  plan: {plans['method']} on {plans['preprocessing']['slice_size']} slices, "
          f"{plans['folds']['num_folds']} folds, threshold {plans['threshold']['strategy']}")
    print(f"  outputs: {pre}")
    print(f"[3/5] train fold 0 ({args.schedule} schedule)")
    status = train_main([str(DEMO_ID), "0", "--schedule", args.schedule, "--overwrite"])
    if status:
        return status
    predictions = root / "predictions"
    print(f"[4/5] predict the {s['num_test_cases']} test cases into {predictions}")
    status = predict_main(["-i", str(raw / "imagesTs"), "-o", str(predictions), "-d", str(DEMO_ID), "-f", "0",
                           "--rois", str(raw / "roisTs"), "--save-maps"])
    if status:
        return status
    print("[5/5] evaluate against the test masks")
    status = evaluate_main(["-r", str(raw / "masksTs"), "-p", str(predictions)])
    if status:
        return status
    print()
    print(f"demo done in {time.time() - start:.0f} s")
    print(f"  trained fold 0 and its threshold: {results / name}")
    print(f"  predicted masks, maps and predictions.json: {predictions}")
    print(f"  metrics: {predictions / 'summary.json'}")
    print(f"  (the {args.schedule} schedule trains for seconds: the numbers show the pipeline works, not how well "
          f"ASC-Net segments; train with --schedule fast or paper for that)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
