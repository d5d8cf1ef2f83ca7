"""benchmarks/ascnet_collect_run.py: one whole ASC-Net run's folds and rows added to the repeats file,
which benchmarks/ascnet_proxy_repeats.py then reads; a stored run is never overwritten."""
import json

import pytest

from tests.conftest import load_benchmark

collect = load_benchmark("ascnet_collect_run")
repeats = load_benchmark("ascnet_proxy_repeats")


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def trained_fold(work, fold, outliers_auroc, restarts=()):
    folder = work / collect.FOLDS / f"fold_{fold}"
    events = [{"step": 0, "event": "validation", "value": 0.2},
              *({"step": 5 * r, "event": "restart", "major": True, "restart": r, "separation": s} for r, s in restarts),
              {"step": 10, "event": "validation", "value": 0.8},
              {"step": 10, "event": "orientation", "major": True, "input_outliers_auroc": outliers_auroc,
               "decided_by": "input_outliers", "inverted": outliers_auroc < 0.5}]
    write(folder / "training_log.json", {"training_precision": "fp32", "entries": [{"step": 10}], "events": events})
    write(folder / "validation" / "summary.json", {"pixel": {
        "dice": {"mean": 0.5}, "pooled_auroc": 0.9, "best_possible_dice": {"mean_dice": 0.7}}})


def test_a_run_is_added_with_its_folds_and_rows_and_never_twice(tmp_path):
    work, results, stored = tmp_path / "work", tmp_path / "quality.json", tmp_path / "repeats.json"
    trained_fold(work, 0, 0.1, restarts=[(1, 0.2), (2, 0.4)])
    trained_fold(work, 1, 0.9)
    row = {"dice": [0.4, 0.1], "machine": "test machine", "settings": {"restarts": 2}}
    write(results, {"brats": {"ascnet": row, "auto": {"dice": [0.8, 0.1]}}})
    write(stored, {"brats": {"runs": [{"run": "A", "folds": {}}]}})
    arguments = ["--work", str(work), "--results", str(results), "--run", "B", "--commit", "abc1234",
                 "--repeats", str(stored)]
    assert collect.main(arguments) == 0
    run = json.loads(stored.read_text())["brats"]["runs"][-1]
    assert run["run"] == "B" and run["settings"] == {"restarts": 2} and run["ascnet"]["dice"] == [0.4, 0.1]
    assert run["folds"]["0"]["restarts"] == [{"step": 5, "restart": 1, "separation": 0.2},
                                             {"step": 10, "restart": 2, "separation": 0.4}]
    assert run["folds"]["1"]["labelled_probe_raw_I_ro"] == [0.2, 0.8] and "restarts" not in run["folds"]["1"]
    # the proxy analysis reads the new folds: separation |AUROC - 0.5| of the final orientation
    assert [(r["run"], r["fold"], round(r["separation"], 2)) for r in repeats.fold_rows(json.loads(stored.read_text()))] \
        == [("B", 0, 0.4), ("B", 1, 0.4)]
    with pytest.raises(SystemExit, match="already holds a run B"):
        collect.main(arguments)
