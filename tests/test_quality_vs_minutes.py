"""benchmarks/quality_vs_minutes.py: curves gathered from the folds' training logs, one line per
method and fold, the every-channel variant apart from its method."""
import json

from tests.conftest import load_benchmark

curves_script = load_benchmark("quality_vs_minutes")


def write_log(work, plans_folder, fold, values):
    folder = work / "results" / "Dataset001_X" / plans_folder / f"fold_{fold}"
    folder.mkdir(parents=True)
    events = [{"event": "budget", "step": 0, "budget_minutes": 8, "factor": 0.5, "iterations": 40}]
    events += [{"event": "validation", "metric": "pixel AUROC", "minutes": float(i), "value": v}
               for i, v in enumerate(values)]
    (folder / "training_log.json").write_text(json.dumps({"events": events}), encoding="utf-8")


def test_curves_per_method_and_fold_with_the_budget(tmp_path):
    work = tmp_path / "work"
    write_log(work, "vae__autouadPlans_vae", 0, [0.5, 0.7, 0.6])
    write_log(work, "vae__autouadPlans_vae", 1, [0.4, 0.8])
    write_log(work, "vae__autouadPlans_vae_allchannels", 0, [0.55, 0.9])
    curves = curves_script.gather(work)["Dataset001_X"]
    assert sorted(curves) == ["vae", "vae:allchannels"]
    assert [f["fold"] for f in curves["vae"]] == [0, 1] and curves["vae"][0]["values"] == [0.5, 0.7, 0.6]
    assert curves["vae:allchannels"][0]["budget"] == {"budget_minutes": 8, "factor": 0.5, "iterations": 40}

    output, plot = tmp_path / "curves.json", tmp_path / "curves.png"
    assert curves_script.main(["--work", str(work), "--output", str(output), "--plot", str(plot)]) == 0
    assert json.loads(output.read_text(encoding="utf-8"))["Dataset001_X"]["vae"][1]["minutes"] == [0.0, 1.0]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert curves_script.main(["--work", str(tmp_path / "empty")]) == 1


def test_curves_of_other_work_folders_stay_unless_replaced(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    write_log(first, "vae__autouadPlans_vae", 0, [0.5, 0.7])
    write_log(first, "caae__autouadPlans_caae", 0, [0.6, 0.65])
    write_log(second, "caae__autouadPlans_caae", 0, [0.3, 0.9])
    output, plot = tmp_path / "curves.json", tmp_path / "curves.png"
    for work in (first, second):
        assert curves_script.main(["--work", str(work), "--output", str(output), "--plot", str(plot)]) == 0
    curves = json.loads(output.read_text(encoding="utf-8"))["Dataset001_X"]
    assert curves["vae"][0]["values"] == [0.5, 0.7] and curves["caae"][0]["values"] == [0.3, 0.9]
    assert curves_script.main(["--work", str(second), "--output", str(output), "--plot", str(plot), "--replace"]) == 0
    assert sorted(json.loads(output.read_text(encoding="utf-8"))["Dataset001_X"]) == ["caae"]
