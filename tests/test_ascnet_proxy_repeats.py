"""benchmarks/ascnet_proxy_repeats.py: the folds it reads from stored runs, and the choice between
two runs of a fold by the label-free separation (against the masks' choice)."""
from tests.conftest import load_benchmark

repeats = load_benchmark("ascnet_proxy_repeats")


def fold(auroc_of_outliers, pixel_auroc, dice, iterations=100):
    return {"iterations": iterations, "orientation": {"input_outliers_auroc": auroc_of_outliers},
            "validation_pixel_auroc": pixel_auroc, "validation_best_possible_dice": dice}


def test_the_better_of_two_runs_is_the_one_whose_outliers_separate_more():
    stored = {"brats": {"runs": [
        {"run": "A", "folds": {"0": fold(0.05, 0.9, 0.7), "1": fold(0.70, 0.6, 0.2)}},
        {"run": "B", "folds": {"0": fold(0.30, 0.7, 0.3), "1": fold(0.98, 0.9, 0.8)}},
        # a run stopped before its validation export, and one from before the orientation: skipped
        {"run": "C", "folds": {"0": {"iterations": 5, "orientation": {"input_outliers_auroc": 0.5}}}},
        {"run": "D", "folds": {"0": {"validation_pixel_auroc": 0.5}}, "ascnet": None}]}}
    rows = repeats.fold_rows(stored)
    assert [(r["run"], r["fold"]) for r in rows] == [("A", 0), ("A", 1), ("B", 0), ("B", 1)]
    assert [round(r["separation"], 2) for r in rows] == [0.45, 0.2, 0.2, 0.48]   # either side of 0.5 counts
    chosen = repeats.best_of_two(rows, "best_possible_dice")
    assert chosen[0] == {"runs": 2, "one_run": 0.5, "best_of_two_by_separation": 0.7, "best_of_two_by_the_masks": 0.7}
    assert chosen[1]["best_of_two_by_separation"] == 0.8 and chosen[1]["one_run"] == 0.5
