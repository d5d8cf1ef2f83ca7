"""find_best_configuration on constructed evidence whose right answer is known: it picks the
candidate that separates the anomalies, reports one that ranks them the wrong way round, says so
when nothing beats chance, and its leave-one-fold-out selection never reads the scored fold."""
import copy

import numpy as np
import pytest

from autouad.postprocessing.morphology import postprocess_cropped
from autouad.selection.configurations import PixelConfiguration, PixelScorer
from autouad.selection.evidence import Candidate, CaseEvidence
from autouad.selection.find_best import chance_warnings, compare, leave_one_fold_out
from autouad.postprocessing.morphology import postprocess_slices


def lesion_case(rng, name: str, fold: int, contrast: dict[str, float]) -> CaseEvidence:
    """A 6x24x24 case: a round region, a lesion of random size on the middle slices, and a map per
    candidate: noise plus ``contrast`` times the lesion (negative contrast: darker anomalies)."""
    z, yy, xx = np.mgrid[:6, :24, :24]
    region = (yy - 12) ** 2 + (xx - 12) ** 2 < 11 ** 2
    radius = rng.uniform(2.5, 4.5)
    centre = rng.uniform(9, 15, 2)
    lesion = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius ** 2) & (z >= 2) & (z <= 3) & region
    case = CaseEvidence(name, fold, region, lesion, np.array([True, True, False, False, True, True]), None,
                        (1.0, 1.0, 1.0))
    for candidate, c in contrast.items():
        scale = rng.uniform(0.5, 2.0)  # each case has its own intensity scale, as raw MRI does
        case.maps[candidate] = (scale * (rng.normal(0, 1, region.shape) + c * lesion))[region].astype(np.float32)
    return case


CANDIDATES = [Candidate("good", "intensity"), Candidate("weak", "intensity"), Candidate("inverted", "intensity"),
              Candidate("noise", "intensity")]
CONTRASTS = {"good": 4.0, "weak": 1.0, "inverted": -3.0, "noise": 0.0}


@pytest.fixture(scope="module")
def evidence():
    rng = np.random.default_rng(0)
    return [lesion_case(rng, f"case{i}", i % 2, CONTRASTS) for i in range(8)]


def test_selection_picks_the_candidate_that_separates_the_anomalies(evidence):
    comparison = compare(copy.deepcopy(evidence), CANDIDATES, [0, 1], "segmentation", [0, 3])
    best = comparison.best
    assert best.candidate in ("good", "ensemble:good+weak") and best.dice > 0.7
    singles = {r.candidate: r for r in comparison.ranked if r.candidate in CONTRASTS}
    assert singles["good"].mean_auroc > 0.95 and singles["inverted"].mean_auroc < 0.1
    # a per-case cut copes with each case's own scale; one global cut cannot
    by_source = {r.threshold: r.dice for r in comparison.ranked if r.candidate == "good" and r.kernel == 0}
    assert by_source["case_z"] > by_source["calibrated"]
    warnings, interval = chance_warnings(comparison, best)
    assert interval[0] > 0.5 and len(warnings) == 1 and warnings[0].startswith("inverted ranks the anomalies below")


def test_nothing_better_than_chance_is_said_plainly():
    rng = np.random.default_rng(1)
    cases = [lesion_case(rng, f"case{i}", i % 2, {"noise": 0.0}) for i in range(6)]
    comparison = compare(cases, [Candidate("noise", "intensity")], [0, 1], "segmentation", [0])
    warnings, interval = chance_warnings(comparison, comparison.best)
    assert interval[0] <= 0.5 and "nothing here separates anomalies" in warnings[0]


def test_leave_one_fold_out_never_reads_the_scored_fold(evidence):
    """Poison fold 0's references (every voxel anomalous): the selection for outer fold 0 (made on
    fold 1) and the parameters it fits must not change; only its score may."""
    clean = leave_one_fold_out(copy.deepcopy(evidence), CANDIDATES, [0, 1], "segmentation", [0, 3])
    poisoned = copy.deepcopy(evidence)
    for case in poisoned:
        if case.fold == 0:
            case.reference = case.region.copy()
    dirty = leave_one_fold_out(poisoned, CANDIDATES, [0, 1], "segmentation", [0, 3])
    assert dirty[0]["chosen"] == clean[0]["chosen"] and dirty[0]["params"] == clean[0]["params"]
    assert dirty[0]["per_case"] != clean[0]["per_case"]   # the scored fold's labels are what it is scored on


def test_cropped_post_processing_equals_the_whole_volume():
    rng = np.random.default_rng(2)
    mask = rng.random((5, 40, 40)) > 0.93
    mask[2, 10:20, 10:22] = True
    region = np.ones_like(mask)
    region[:, :, 35:] = False
    assert np.array_equal(postprocess_cropped(mask, region, 3), postprocess_slices(mask, region, 3))


def test_a_per_case_cut_is_fitted_on_the_fitting_cases_only(evidence):
    scorer = PixelScorer({"good": None})
    config = PixelConfiguration("good", "case_z", 0)
    fold1 = [c for c in evidence if c.fold == 1]
    params = scorer.fit(config, fold1)
    poisoned = copy.deepcopy(fold1)
    for case in poisoned:
        case.reference = np.zeros_like(case.reference)
        case.reference[case.region] = True
    assert scorer.fit(config, fold1) == params and PixelScorer({"good": None}).fit(config, poisoned) != params


def test_an_image_level_dataset_can_choose_the_knn_baseline_and_predict_follows_it(autouad_env, tmp_path):
    """The Kermany `auto` row's failure: the kNN candidate was listed but never scored (its kind and
    its name were confused), so selection and prediction stopped at KeyError 'pixel_knn'. With no
    trained method the kNN baseline is the only candidate: it is scored out of fold on both folds,
    chosen, and autouad_predict without -m follows it to image decisions."""
    import csv
    import json

    from autouad import api
    from autouad.cli.plan_and_preprocess import main_plan_and_preprocess
    from autouad.selection.evidence import KNN
    from tests.conftest import write_xray_dataset

    write_xray_dataset(9, "KnnOnly", 24, [True, False] * 6)
    assert main_plan_and_preprocess(["-d", "9", "--np", "1"]) == 0
    instructions = api.find_best_configuration(9, [0, 1], quiet=True)
    assert instructions["chosen"]["configuration"] == KNN
    [row] = instructions["candidates"]
    assert row["auroc"] > 0.9  # bright blobs are far from every normal image
    out = tmp_path / "out"
    api.predict(autouad_env["raw"] / "Dataset009_KnnOnly" / "imagesTs", out, dataset=9)
    assert json.loads((out / "predictions.json").read_text(encoding="utf-8"))["configuration"] == KNN
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    abnormal = [float(r["score"]) for r in rows if int(r["case"][-2:]) % 2 == 1]
    normal = [float(r["score"]) for r in rows if int(r["case"][-2:]) % 2 == 0]
    assert min(abnormal) > max(normal)
