"""autouad_train from the command line: outputs, DDP on the CPU (gloo, two processes), bad input."""
from __future__ import annotations

import json

import pytest
import torch

from autouad.cli.train import main
from autouad.training import base_trainer
from autouad.training.logger import TrainingLog

DATASET = "Dataset007_DemoBrainMRI"
QUICK = ["--set", "max_iterations_per_step=1"]


@pytest.fixture
def env(demo_planned, monkeypatch, tmp_path):
    for key, value in demo_planned.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AUTOUAD_results", str(tmp_path / "results"))
    return tmp_path / "results" / DATASET / "ascnet__autouadPlans_ascnet"


def one_line_error(capsys, *fragments):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_train_writes_checkpoints_log_plot_and_validation_maps(env, monkeypatch):
    drawn, checkpoints = [], []
    monkeypatch.setattr(TrainingLog, "plot", lambda self, path, title, plot=TrainingLog.plot: (
        drawn.append(path), plot(self, path, title))[-1])
    monkeypatch.setattr(base_trainer, "save_checkpoint", lambda state, path, save=base_trainer.save_checkpoint: (
        checkpoints.append(path), save(state, path))[-1])
    assert main(["7", "0", "-m", "ascnet", *QUICK]) == 0
    # a run of seconds writes a checkpoint at every phase end but draws progress.png once, at the end
    assert len(checkpoints) >= 4 and [p.name for p in drawn] == ["progress.png"]
    fold = env / "fold_0"
    for name in ("checkpoint_latest.pt", "checkpoint_final.pt", "training_log.json", "progress.png"):
        assert (fold / name).is_file(), name
    assert (env / "plans.json").is_file() and (env / "dataset.json").is_file()
    log = json.loads((fold / "training_log.json").read_text())
    assert log["finished"] and log["schedule"]["max_iterations_per_step"] == 1
    assert 0 < log["data_loading_seconds"] < max(e["seconds"] for e in log["entries"])
    maps = json.loads((fold / "validation" / "maps.json").read_text())
    assert maps["cases"] == log["validation_cases"] and maps["map"] == "I_ro"
    for case in maps["cases"]:
        assert (fold / "validation" / f"{case}.npy").is_file()
        assert sum(json.loads((fold / "validation" / f"{case}_histogram.json").read_text())["counts"]) > 0
    state = torch.load(fold / "checkpoint_final.pt", weights_only=True)
    assert state["finished"] and state["position"]["step"] == 4


def test_ddp_on_cpu_with_gloo(env):
    # with a budget: both ranks must scale to one schedule (the slowest rank's step times), or they hang
    assert main(["7", "0", "-m", "ascnet", "--device", "cpu", "--num-gpus", "2", "--budget-minutes", "0.05", *QUICK]) == 0
    log = json.loads((env / "fold_0" / "training_log.json").read_text())
    # the trainer checks at the end that both ranks hold identical weights
    assert log["world_size"] == 2 and log["finished"]
    assert any(e.get("event") == "budget" for e in log["events"])


def test_bad_input_gives_one_line_errors(env, capsys, demo_planned, tmp_path):
    assert main(["42", "0"]) == 1
    one_line_error(capsys, "no dataset with id 42")
    assert main(["7", "0", "-m", "caae"]) == 1
    one_line_error(capsys, "no plans", "autouad_plan_and_preprocess")
    assert main(["7", "5", "-m", "ascnet"]) == 1
    one_line_error(capsys, "fold 5 is out of range")
    assert main(["7", "0", "-m", "ascnet", "--continue"]) == 1
    one_line_error(capsys, "no checkpoint to continue from")
    assert main(["7", "0", "-m", "ascnet", "--set", "no_such_setting=3"]) == 1
    one_line_error(capsys, "no setting 'no_such_setting'")


def test_corrupt_checkpoint_and_existing_run_are_refused_untouched(env, capsys):
    fold = env / "fold_0"
    fold.mkdir(parents=True)
    garbage = b"this is not a checkpoint" * 10
    (fold / "checkpoint_latest.pt").write_bytes(garbage)
    assert main(["7", "0", "-m", "ascnet", "--continue", *QUICK]) == 1
    one_line_error(capsys, "checkpoint_latest.pt", "not a readable autouad checkpoint")
    assert main(["7", "0", "-m", "ascnet", *QUICK]) == 1
    one_line_error(capsys, "already holds checkpoint_latest.pt", "--continue")
    assert (fold / "checkpoint_latest.pt").read_bytes() == garbage
    assert sorted(p.name for p in fold.iterdir()) == ["checkpoint_latest.pt"]


def test_keep_best_validation_checkpoint(env, monkeypatch, capsys):
    # a scripted validation curve: the untrained start (never kept), then its best at the first
    # trained point; the fold's model.pt and threshold must come from that point's networks
    curve = iter([0.95, 0.9, 0.6, 0.7, 0.8])
    monkeypatch.setattr(base_trainer.AutoUADTrainer, "validation_quality",
                        lambda self: {"metric": "pixel AUROC", "value": next(curve)})
    assert main(["7", "0", "-m", "ascnet", *QUICK, "--set", "keep_checkpoint=best_validation"]) == 0
    fold = env / "fold_0"
    best = torch.load(fold / "checkpoint_best.pt", weights_only=True)
    final = torch.load(fold / "checkpoint_final.pt", weights_only=True)
    assert best["best_validation"]["step"] == 1 and best["best_validation"]["value"] == 0.9
    assert final["position"]["step"] == 4 and final["best_validation"] == best["best_validation"]
    kept = [e for e in json.loads((fold / "training_log.json").read_text())["events"] if e["event"] == "kept checkpoint"]
    assert len(kept) == 1 and kept[0]["kept_step"] == 1 and kept[0]["final_value"] == 0.8
    assert "keeping the networks of iteration 1" in capsys.readouterr().out
    model = torch.load(fold / "model.pt", weights_only=True)["networks"]
    differs = False
    for name, weights in model.items():
        for key, tensor in weights.items():
            assert torch.equal(tensor, best["networks"][name][key]), (name, key)
            differs |= not torch.equal(tensor, final["networks"][name][key])
    assert differs, "the best and the final networks should differ after three more iterations"
    # the final networks stay reachable (benchmarks/keep_checkpoint.py predicts with both)
    from autouad.model import AnomalyModel
    for checkpoint, expected in (("checkpoint_final.pt", final), ("checkpoint_best.pt", best)):
        loaded = AnomalyModel.from_fold_folder(fold, "cpu", checkpoint)
        for name, net in loaded.networks.items():
            for key, tensor in net.state_dict().items():
                assert torch.equal(tensor, expected["networks"][name][key]), (checkpoint, name, key)


def test_keep_checkpoint_refuses_unknown_value(env, capsys):
    assert main(["7", "0", "-m", "ascnet", *QUICK, "--set", "keep_checkpoint=best"]) == 1
    one_line_error(capsys, "keep_checkpoint must be one of final, best_validation")


@pytest.fixture
def blob_proxy(monkeypatch):
    """These tests train ASC-Net, the demo's planned method, but check the pasted-blob proxy of every
    other method; ASC-Net's own (the input's outliers, which the demo has too few of) is tested in
    tests/test_ascnet.py."""
    from autouad.methods.ascnet.trainer import ASCNetTrainer
    monkeypatch.setattr(ASCNetTrainer, "proxy_quality", base_trainer.AutoUADTrainer.proxy_quality)


def test_keep_best_proxy_checkpoint_is_chosen_label_free(env, monkeypatch, blob_proxy):
    # the labelled curve is scripted to peak at the last point; best_proxy must ignore it and keep
    # the point where the model found the pasted blobs best
    curve = iter([0.1, 0.2, 0.3, 0.4, 0.99])
    monkeypatch.setattr(base_trainer.AutoUADTrainer, "validation_quality",
                        lambda self: {"metric": "pixel AUROC", "value": next(curve, 0.5)})
    assert main(["7", "0", "-m", "ascnet", *QUICK, "--set", "keep_checkpoint=best_proxy"]) == 0
    fold = env / "fold_0"
    events = json.loads((fold / "training_log.json").read_text())["events"]
    proxy = [e for e in events if e["event"] == "proxy"]
    assert [e["step"] for e in proxy] == [e["step"] for e in events if e["event"] == "validation"]
    assert len(proxy) >= 3 and all(e["metric"] == "proxy pixel AUROC" and 0 <= e["value"] <= 1 for e in proxy)
    trained = [e for e in proxy if e["step"] > 0]
    best = max(trained, key=lambda e: e["value"])  # the first of equal values, as the trainer keeps it
    kept = [e for e in events if e["event"] == "kept checkpoint"]
    assert len(kept) == 1 and kept[0]["which"] == "best_proxy" and kept[0]["kept_step"] == best["step"]
    assert kept[0]["final_value"] == proxy[-1]["value"]
    assert torch.load(fold / "checkpoint_best.pt", weights_only=True)["best_validation"]["metric"] == "proxy pixel AUROC"


def test_best_proxy_follows_the_proxy_not_the_labelled_curve(env, monkeypatch):
    from autouad.methods.ascnet.trainer import ASCNetTrainer
    # the labelled curve peaks at the last point, the proxy at the second trained one (step 2)
    validation = iter([0.1, 0.2, 0.3, 0.4, 0.99])
    proxy = iter([0.95, 0.6, 0.9, 0.7, 0.65])  # the untrained start's 0.95 is never kept
    monkeypatch.setattr(base_trainer.AutoUADTrainer, "validation_quality",
                        lambda self: {"metric": "pixel AUROC", "value": next(validation, 0.5)})
    monkeypatch.setattr(ASCNetTrainer, "proxy_quality",
                        lambda self: {"metric": "proxy pixel AUROC", "value": next(proxy, 0.5)})
    assert main(["7", "0", "-m", "ascnet", *QUICK, "--set", "keep_checkpoint=best_proxy"]) == 0
    events = json.loads((env / "fold_0" / "training_log.json").read_text())["events"]
    assert [e["step"] for e in events if e["event"] == "proxy"] == [0, 1, 2, 3, 4]
    kept = [e for e in events if e["event"] == "kept checkpoint"]
    assert kept[0]["kept_step"] == 2 and kept[0]["value"] == 0.9 and kept[0]["final_value"] == 0.65


def test_pasted_blobs_stay_in_the_region_and_show_in_intensity():
    import numpy as np
    from scipy import ndimage

    from autouad.evaluation.metrics import roc_auc
    from autouad.selection.proxy import paste_blobs_into_slices
    rng = np.random.default_rng(0)
    slices = ndimage.gaussian_filter(rng.normal(size=(6, 2, 64, 64)), (0, 0, 1, 1)).astype(np.float32)
    regions = np.zeros((6, 64, 64), bool)
    regions[:, 8:56, 10:54] = True
    regions[5] = False  # a slice without region gets nothing
    for sign in (1.0, -1.0):
        pasted, masks = paste_blobs_into_slices(slices, regions, [1.0] * 6, sign, np.random.default_rng(1))
        assert masks[:5].any(axis=(1, 2)).all() and not masks[5].any() and not (masks & ~regions).any()
        assert np.array_equal(pasted[:, :, ~regions.any(axis=0)], slices[:, :, ~regions.any(axis=0)])
        assert np.array_equal(pasted[5], slices[5])
        change = (pasted - slices)[:, 0]
        assert (sign * change[masks] > 0).all()
        # the blobs are what the intensity itself finds: the probe can tell a model that sees them
        assert roc_auc(sign * pasted[:, 0][regions], masks[regions]) > 0.8


def test_keep_checkpoint_given_on_continue_of_a_budgeted_run_holds(env, monkeypatch, blob_proxy):
    # a budget-fitted run resumes with the schedule it was fitted to; which networks to keep counts
    # no work, so --set keep_checkpoint on --continue must still take effect
    from autouad.training.fold_data import TrainingError
    save = base_trainer.AutoUADTrainer.save

    def dies_after_first_phase(self, name):
        save(self, name)
        if name == base_trainer.CHECKPOINT_LATEST and self.position["phase"] >= 1:
            raise TrainingError("killed")
    monkeypatch.setattr(base_trainer.AutoUADTrainer, "save", dies_after_first_phase)
    assert main(["7", "0", "-m", "ascnet", "--budget-minutes", "0.05", *QUICK]) == 1
    monkeypatch.setattr(base_trainer.AutoUADTrainer, "save", save)
    fold = env / "fold_0"
    fitted = torch.load(fold / "checkpoint_latest.pt", weights_only=True)["schedule"]
    assert "budget_factor" in fitted and "keep_checkpoint" not in fitted
    assert main(["7", "0", "-m", "ascnet", "--continue", "--set", "keep_checkpoint=best_proxy"]) == 0
    final = torch.load(fold / "checkpoint_final.pt", weights_only=True)["schedule"]
    assert final["keep_checkpoint"] == "best_proxy" and final["budget_factor"] == fitted["budget_factor"]
    kept = [e for e in json.loads((fold / "training_log.json").read_text())["events"] if e["event"] == "kept checkpoint"]
    assert len(kept) == 1 and kept[0]["which"] == "best_proxy"
