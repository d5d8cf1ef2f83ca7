"""The contract every registered method keeps, checked for each method the registry holds (a new
method package is picked up without touching this file; see docs/extending.md):

* its declaration is sound: a trainer subclassing AutoUADTrainer, a plans file with the three
  schedules, inference networks it really builds;
* it plans, trains a few iterations on a tiny dataset, calibrates a threshold, and saves a model
  that loads back (weights only) and predicts, in memory, a map and a mask of the input's geometry;
* a run interrupted in the middle of an iteration resumes from its last checkpoint and ends with
  exactly the weights, optimizer states and losses of an uninterrupted run.

The networks are the method's declared ``tiny_network``: the paper's architecture at a fraction of
its widths, so that the whole contract runs in seconds per method.
"""
import copy
import time

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from autouad import AnomalyModel, AnomalyPredictor, api
from autouad.methods.registry import get_method, method_names
from autouad.model import MODEL_FILE
from autouad.planning.method_plans import load_method_plans
from autouad.planning.plans_files import find_plans
from autouad.training.base_trainer import CHECKPOINT_FINAL, AutoUADTrainer
from autouad.training.run import alias_overrides
from autouad.utils.files import save_json
from dataset_conversion import demo
from tests.conftest import assert_same_checkpoints

DATASET = "Dataset007_DemoBrainMRI"


class Interrupted(Exception):
    pass


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small demo brain MRI (normal subjects, patients with lesions, a brain ROI, one test case)
    in its own folders; each method plans it on first use (smoke), with its tiny networks."""
    root = tmp_path_factory.mktemp("contract")
    demo.convert(7, raw_folder=root / "raw", seed=0, num_normal=2, num_patients=2, num_test=1, spacing=4.0)
    api.plan_and_preprocess(7, steps=("fingerprint",), num_processes=1, raw_folder=root / "raw",
                            preprocessed_folder=root / "preprocessed")
    return root


def planned(root, method: str):
    """The method's smoke plans of the tiny dataset with its tiny networks (planned once)."""
    preprocessed = root / "preprocessed" / DATASET
    if not (preprocessed / f"autouadPlans_{method}.json").is_file():
        result = api.plan_and_preprocess(7, method=method, schedule="smoke", num_processes=1,
                                         steps=("plan", "preprocess"), raw_folder=root / "raw",
                                         preprocessed_folder=root / "preprocessed")
        plans = result.plans
        plans.method_settings.setdefault("network", {}).update(get_method(method).tiny_network)
        plans.batch_size = min(plans.batch_size, 4)
        save_json(plans.to_dict(), result.plans_path)
    return find_plans(preprocessed, method)


@pytest.mark.parametrize("method", method_names())
def test_the_declaration_is_sound(method):
    spec = get_method(method)
    trainer = spec.trainer_class()
    assert issubclass(trainer, AutoUADTrainer) and trainer.method == method
    assert spec.plans_path.is_file() and spec.paper and (spec.setting is None or spec.setting_reason)
    settings = load_method_plans(method)
    assert {"paper", "fast", "smoke"} <= set(settings["schedules"])
    for option, keys in spec.schedule_aliases.items():
        assert all(key in settings["schedules"]["smoke"] for key in keys), (option, keys)


@pytest.mark.parametrize("method", method_names())
def test_trains_saves_loads_and_predicts_a_map_of_the_inputs_shape(tiny, method):
    plans, _ = planned(tiny, method)
    [fold] = api.train(7, 0, method, device="cpu", preprocessed_folder=tiny / "preprocessed",
                       results_folder=tiny / "results", overwrite=True)
    assert (fold.folder / CHECKPOINT_FINAL).is_file() and np.isfinite(fold.threshold)

    model = AnomalyModel.load(fold.folder / MODEL_FILE)
    built = model.trainer.build_networks()
    assert model.method == method and model.threshold is not None
    assert set(model.networks) == set(type(model.trainer).inference_networks or built) <= set(built)

    raw = tiny / "raw" / DATASET
    case = sorted((raw / "imagesTs").glob("*_0000.nii.gz"))[0].name[:-len("_0000.nii.gz")]
    images = [sitk.ReadImage(str(raw / "imagesTs" / f"{case}_{c:04d}.nii.gz")) for c in range(2)]
    result = AnomalyPredictor([model]).predict(images, roi=sitk.ReadImage(str(raw / "roisTs" / f"{case}.nii.gz")))
    for image in (result.map, result.mask):
        assert image.GetSize() == images[0].GetSize() and image.GetDirection() == images[0].GetDirection()
        assert image.GetOrigin() == images[0].GetOrigin() and image.GetSpacing() == images[0].GetSpacing()
    assert np.isfinite(sitk.GetArrayFromImage(result.map)).all() and np.isfinite(result.score)
    assert set(np.unique(sitk.GetArrayFromImage(result.mask))) <= {0, 1}


@pytest.mark.parametrize("method", method_names())
def test_an_interrupted_run_resumes_exactly(tiny, tmp_path, method):
    plans, plans_path = planned(tiny, method)
    cls = get_method(method).trainer_class()

    overrides = {}

    def trainer(folder, kind=cls):
        made = kind(copy.deepcopy(plans), 0, plans_path.parent, folder, schedule_overrides=overrides)
        made.checkpoint_every = 2
        made.initialize()
        return made

    if sum(p.iterations for p in trainer(tmp_path / "probe").phases) < 4:
        # a smoke schedule of a couple of iterations: twice its epochs (or iterations) to interrupt it
        aliases = get_method(method).schedule_aliases
        overrides = alias_overrides(method, epochs=2) if "epochs" in aliases else alias_overrides(method, iterations=4)
    straight = trainer(tmp_path / "straight")
    straight.run_training()
    steps = straight.position["step"]
    assert steps >= 3, f"{method}'s smoke schedule is too short to interrupt"
    stop = steps // 2 + 1

    class Killed(cls):
        def train_iteration(self, phase, iteration):
            losses = super().train_iteration(phase, iteration)
            if self.position["step"] == stop:  # the networks have been updated; the step is not recorded
                raise Interrupted
            return losses

    with pytest.raises(Interrupted):
        trainer(tmp_path / "broken", Killed).run_training()
    resumed = trainer(tmp_path / "broken")
    resumed.resume()
    assert resumed.position["step"] <= stop
    resumed.run_training()
    a, b = assert_same_checkpoints(tmp_path / "straight" / CHECKPOINT_FINAL, tmp_path / "broken" / CHECKPOINT_FINAL)

    def losses(entries):
        return [{k: v for k, v in e.items() if k != "seconds"} for e in entries]
    assert losses(a["log"]["entries"]) == losses(b["log"]["entries"])


@pytest.mark.parametrize("method", method_names())
def test_the_memory_layout_is_the_declared_one_and_changes_no_map(tiny, tmp_path, method):
    """``channels_last`` (set per method from benchmarks/speed_options.py) puts the networks and
    every batch from to_device in NHWC memory, for training and for a loaded model alike; the maps
    are those of the contiguous layout up to float rounding."""
    plans, plans_path = planned(tiny, method)
    cls = get_method(method).trainer_class()
    slices = np.random.default_rng(0).random((3, len(plans.preprocessing.channels)) + tuple(plans.slice_size),
                                             dtype=np.float32)

    def kernels(trainer):
        """The 4D weights whose two layouts differ (a 1x1 or one-input-channel kernel is both)."""
        return [p for net in trainer.networks.values() for p in net.parameters()
                if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1]

    maps = {}
    for layout in (False, True):
        torch.manual_seed(0)
        trainer = cls(copy.deepcopy(plans), 0, plans_path.parent, tmp_path / str(layout))
        trainer.channels_last = layout
        trainer.initialize()
        weights = kernels(trainer)
        assert weights and all(p.is_contiguous(memory_format=torch.channels_last) == layout for p in weights)
        assert trainer.to_device(slices).is_contiguous(memory_format=torch.channels_last) == layout
        maps[layout] = trainer.predict_slices(slices)
    scale = float(np.abs(maps[False]).max()) or 1.0
    assert np.abs(maps[True] - maps[False]).max() <= 1e-4 * scale

    inference = cls.for_inference(plans, 0, {k: v.state_dict() for k, v in trainer.networks.items()}, "memory")
    assert all(p.is_contiguous(memory_format=torch.channels_last) == cls.channels_last for p in kernels(inference))


@pytest.mark.parametrize("method", method_names())
def test_bf16_training_runs_every_iteration_under_autocast_and_keeps_float32_weights(tiny, tmp_path, method):
    """The schedule's training_precision bf16 runs each training iteration (the run's and the
    budget's timed ones) under bf16 autocast: every method's losses stay finite, and the weights,
    which the checkpoint and the model file hold, stay float32."""
    plans, plans_path = planned(tiny, method)
    cls = get_method(method).trainer_class()
    seen = []

    class Watched(cls):
        def train_iteration(self, phase, iteration):
            seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
            return super().train_iteration(phase, iteration)

    trainer = Watched(copy.deepcopy(plans), 0, plans_path.parent, tmp_path, schedule_overrides={"training_precision": "bf16"})
    trainer.initialize()
    assert trainer.resolved_training_precision == "bf16" and trainer.header()["training_precision"] == "bf16"
    trainer.run_training()
    assert seen and all(seen)
    assert all(np.isfinite(v) for e in trainer.log.entries if e.get("phase") for k, v in e.items()
               if isinstance(v, float)), trainer.log.entries[-1]
    assert all(p.dtype == torch.float32 for net in trainer.networks.values() for p in net.parameters())
    assert not torch.is_autocast_enabled("cpu")


def test_training_precision_auto_follows_the_cpu_and_bad_values_are_refused(monkeypatch):
    from autouad.training import base_trainer
    from autouad.training.base_trainer import TrainingError, apply_schedule_overrides

    class Probe(AutoUADTrainer):
        method = "probe"

        def __init__(self, precision):  # only what resolved_training_precision reads
            self.schedule, self.device = {"training_precision": precision}, torch.device("cpu")

    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(base_trainer, "cpu_has_native_bf16", lambda native=native: native)
        assert Probe("auto").resolved_training_precision == expected
        assert Probe("fp32").resolved_training_precision == "fp32"
    with pytest.raises(TrainingError, match="training_precision must be one of fp32, bf16, auto, not 'fp16'"):
        apply_schedule_overrides({"name": "fast"}, {"training_precision": "fp16"})


@pytest.mark.parametrize("method", method_names())
def test_a_budget_scales_the_schedule_and_leaves_the_start_untouched(tiny, tmp_path, method):
    """fit_to_budget times a few iterations of each phase kind from the starting state, restores it
    exactly, and multiplies the method's budget keys by one factor; a resumed run keeps the fitted
    schedule instead of measuring again."""
    plans, plans_path = planned(tiny, method)
    cls = get_method(method).trainer_class()

    def trainer(folder):
        made = cls(copy.deepcopy(plans), 0, plans_path.parent, folder)
        made.checkpoint_every = 1
        made.initialize()
        return made

    fresh = trainer(tmp_path / "a")
    before = {k: {n: t.clone() for n, t in net.state_dict().items()} for k, net in fresh.networks.items()}
    streams = {k: loader.stream.state_dict() for k, loader in fresh.loaders.items()}
    schedule = dict(fresh.schedule)
    fitted = fresh.fit_to_budget(1e-4)   # far less than the schedule needs: every count down to its floor
    for name, net in fresh.networks.items():
        assert all(torch.equal(before[name][n], t) for n, t in net.state_dict().items()), name
    assert {k: loader.stream.state_dict() for k, loader in fresh.loaders.items()} == streams
    assert fresh.position == {"phase": 0, "iteration": 0, "step": 0} and not fresh.log.entries
    assert fitted["factor"] < 1 and fresh.schedule["budget_factor"] == pytest.approx(fitted["factor"], rel=1e-2)
    factor = fresh.schedule["budget_factor"]
    for key in cls.budget_keys:
        value = schedule.get(key)
        if isinstance(value, int) and key not in cls.fractional_budget_keys:
            assert fresh.schedule[key] == max(1, round(value * factor)), key
        elif isinstance(value, (int, float)):
            assert fresh.schedule[key] == pytest.approx(value * factor, rel=1e-5), key
    assert sum(p.iterations for p in fresh.phases) <= sum(p.iterations for p in trainer(tmp_path / "b").phases)
    fresh.run_training()
    resumed = trainer(tmp_path / "a")
    resumed.resume()
    assert resumed.schedule == fresh.schedule and resumed.finished


def test_a_budget_leaves_room_for_the_work_besides_iterations(tiny, tmp_path, monkeypatch):
    """The budget is the run's wall time: what a run does besides its iterations (here a stated 20 s
    once and 0.01 s per iteration) is taken out first, so the iterations get (budget - 20 s) and the
    fitted run's estimate is the budget. HealthyGAN's model selections are part of its overheads
    (the Kermany fold that planned 7.9 minutes and took 10.4)."""
    plans, plans_path = planned(tiny, "vae")
    cls = get_method("vae").trainer_class()
    monkeypatch.setattr(cls, "budget_overheads", lambda self: (20.0, 0.01))
    trainer = cls(copy.deepcopy(plans), 0, plans_path.parent, tmp_path / "vae")
    trainer.initialize()
    phases = list(trainer.phases)
    fitted = trainer.fit_to_budget(1.0)
    assert fitted["overhead_seconds"] == {"fixed": 20.0, "per_iteration": 0.01}
    per_iteration = fitted["seconds_per_iteration"]
    estimate = sum(p.iterations * (per_iteration[p.kind] + 0.01) for p in phases)
    assert fitted["factor"] == pytest.approx(40.0 / estimate, rel=0.02)
    assert fitted["estimated_minutes"] == pytest.approx(1.0, abs=0.05)

    plans, plans_path = planned(tiny, "healthygan")
    gan = get_method("healthygan").trainer_class()(copy.deepcopy(plans), 0, plans_path.parent, tmp_path / "gan")
    gan.initialize()
    assert gan.selection_sets
    calls = []

    def slow_distance(self, translate=True):
        calls.append(translate)
        time.sleep(0.05)
        return 0.0
    monkeypatch.setattr(AutoUADTrainer, "budget_overheads", lambda self: (0.0, 0.0))
    monkeypatch.setattr(type(gan), "frechet_distance", slow_distance)
    fixed, _ = gan.budget_overheads()
    every = gan.schedule_value("selection_every")
    selections = sum(-(-p.iterations // every) for p in gan.phases if p.kind == "training") + 1
    assert len(calls) == 1  # timed once, counted for every selection
    assert selections * 0.05 <= fixed < selections * 0.05 * 2
