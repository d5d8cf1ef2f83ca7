"""How fast each method runs, and how close that is to what this machine can do.

    python benchmarks/speed.py [--methods ascnet caae ...] [--device auto|cpu|cuda] [--slice-size H W]
                               [--output speed.json]

Builds a small demo dataset (the project's own generator, 1 mm MNI anatomy) in a temporary folder,
plans and preprocesses it for every method with the ``fast`` schedule (the planned slice size and
batch of a CPU run; ``--schedule paper`` for the paper's; ``--slice-size H W`` pins the slice size,
scaling the planned spacing to fit), and measures, each method in a process of its own so that its
peak memory is its own:

* inference: slices per second through ``predict_slices`` (evaluation mode, inference mode, the
  predictor's batch of twice the training batch), at the planned (or pinned) slice size;
* FLOPs per slice of that forward pass (torch's FLOP counter: convolutions and matrix products,
  2 per multiply-add) and so the achieved FLOP/s;
* training: steps per second of the method's main phase (the one with the most iterations),
  FLOPs per step, and the share of the steps' time spent making batches (reading slices and, for
  the pseudo-anomaly methods, synthesis), when the networks wait for data;
* preprocessing: seconds per volume (read, crop, resample, normalise) on the demo's volumes;
* autouad_predict's whole path on the demo's two test volumes: volumes per second, and the share
  of the wall time the model computed (the next cases are read and preprocessed on a background
  thread meanwhile; the rest is the writing of masks and maps);
* peak memory: the process's peak resident set (CPU) or torch's peak allocation (GPU).

Beside them the machine's own limit, measured in the same run on the same device: the throughput of
a large 3x3 convolution (16 x 256 x 64 x 64, 256 filters) and of a 4096 x 4096 matrix product, once at
the start and again in each method's process just before its figures (a shared host's speed drifts
between minutes). Each achieved FLOP/s is printed as a fraction of the convolution's measured beside
it. Results: a JSON file and a Markdown table on stdout. Figures depend on the machine: the output
names it.
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATASET_ID = 901
from autouad.methods.registry import method_names  # noqa: E402  (after the sys.path line)
from autouad.utils.files import save_json  # noqa: E402
from autouad.utils.machine import machine_description  # noqa: E402

METHODS = tuple(method_names())


# ---- the machine's limit ------------------------------------------------------------------------------
def best_seconds(fn, repeats: int, warmup: int = 1) -> float:
    """The fastest of ``repeats`` timed calls (after ``warmup``), synchronising a GPU."""
    for _ in range(warmup):
        fn()
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


@torch.inference_mode()
def machine_limit(device: torch.device, dtype=torch.float32) -> dict:
    """FLOP/s of a large convolution and of a large matrix product on ``device``."""
    x = torch.randn(16, 256, 64, 64, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(256, 256, 3, 3, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    conv_flops = 2 * 16 * 256 * 64 * 64 * 256 * 9
    repeats = 5 if device.type == "cpu" else 50
    conv = conv_flops / best_seconds(lambda: torch.nn.functional.conv2d(x, w, padding=1), repeats)
    a = torch.randn(4096, 4096, device=device, dtype=dtype)
    matmul = 2 * 4096 ** 3 / best_seconds(lambda: a @ a, repeats)
    return {"conv3x3_flops_per_s": conv, "matmul_flops_per_s": matmul, "dtype": str(dtype).replace("torch.", "")}


# ---- one method ---------------------------------------------------------------------------------------
class FlopCount(TorchDispatchMode):
    """Counts the FLOPs of every operator torch's FLOP counter knows (convolutions, matrix products,
    2 per multiply-add) at the dispatcher, below autograd: unlike FlopCounterMode's module hooks it
    works through torch.autograd.grad (the WGAN-GP gradient penalties)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        count = flop_registry.get(func._overloadpacket)
        if count is None:
            # composite operators (conv2d under inference mode) reach the mode undecomposed: count
            # the operators they are made of (as FlopCounterMode does)
            with self:
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        out = func(*args, **kwargs)
        if count is not None:
            self.total += int(count(*args, **kwargs, out_val=out))
        return out


def count_flops(fn) -> int:
    with FlopCount() as counter:
        fn()
    return counter.total


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def measure_method(method: str, workspace: Path, device: torch.device, train_steps: int,
                   inference_batches: int) -> dict:
    from autouad.dataset.raw_dataset import load_raw_dataset
    from autouad.methods import trainer_class
    from autouad.planning.plans_files import find_plans
    from autouad.preprocessing.preprocessor import CasePreprocessor
    from autouad.utils.files import load_json

    preprocessed = next((workspace / "preprocessed").glob(f"Dataset{DATASET_ID}_*"))
    plans, plans_path = find_plans(preprocessed, method)
    meta = load_json(preprocessed / "dataset.json")
    trainer = trainer_class(method)(plans, 0, preprocessed, workspace / "results" / method / "fold_0", device=device)
    trainer.initialize()
    h, w = plans.slice_size
    all_channels = len(meta["channel_names"])
    out = {"method": method, "slice_size": [h, w], "batch_size": trainer.batch_size,
           "input_channels": len(trainer.input_channels)}

    # The limit again, in this process just before its figures: on a shared host the same convolution
    # ran at 171 GFLOP/s in one run and 299 in the next, so a fraction is only fair against a limit
    # measured beside it.
    out["limit"] = machine_limit(device)

    # training: the main phase's steps, the networks in training mode as the base's loop puts them
    phase = max(trainer.phases, key=lambda p: p.iterations)
    for network in trainer.networks.values():
        network.train()
    trainer.seed_iteration(0)
    out["train_flops_per_step"] = count_flops(lambda: trainer.train_iteration(phase, 0))
    data_before, start = trainer.data_loading_seconds(), time.perf_counter()
    seconds = best_seconds(lambda: trainer.train_iteration(phase, 1), repeats=train_steps, warmup=0)
    # the share of the timed steps' wall time spent making batches, during which the model waits
    out["train_data_fraction"] = (trainer.data_loading_seconds() - data_before) / (time.perf_counter() - start)
    out.update(train_phase=phase.name, train_steps_per_s=1.0 / seconds)

    # inference: predict_slices on random slices with every channel of the dataset
    batch = max(1, 2 * trainer.batch_size)
    slices = np.random.default_rng(0).random((batch * inference_batches, all_channels, h, w), dtype=np.float32)
    trainer.predict_slices(slices[:batch])  # warm-up (oneDNN / cuDNN pick their kernels)
    start = time.perf_counter()
    trainer.predict_slices(slices)
    if device.type == "cuda":
        torch.cuda.synchronize()
    out["inference_slices_per_s"] = len(slices) / (time.perf_counter() - start)
    one = trainer.to_device(np.ascontiguousarray(slices[:1][:, trainer.input_channels]))
    with torch.inference_mode():
        for network in trainer.networks.values():
            network.eval()
        out["inference_flops_per_slice"] = count_flops(lambda: trainer.predict_anomaly_map(one))

    # preprocessing: every demo training volume, read to preprocessed slices
    raw = load_raw_dataset(next((workspace / "raw").glob(f"Dataset{DATASET_ID}_*")))
    preprocessor = CasePreprocessor(plans.preprocessing, meta["modality"], meta.get("normal_reference", "cases"))
    cases = raw.training_cases()
    start = time.perf_counter()
    for case in cases:
        preprocessor.run(case)
    out["preprocessing_s_per_volume"] = (time.perf_counter() - start) / len(cases)
    out.update(predict_folder(trainer, meta, workspace))
    out["peak_memory_bytes"] = peak_memory_bytes(device)
    return out


def predict_folder(trainer, dataset_meta: dict, workspace: Path) -> dict:
    """autouad_predict's whole path on the demo's test volumes (read, preprocess on the background thread,
    forward passes, threshold, post-process, restore, write): volumes per second and the share of the
    wall time the model computed. The model is the trainer's freshly initialised networks with a fixed
    cut, in memory: speed does not depend on what the network learned or where the cut lies."""
    from autouad.calibration.thresholds import Threshold
    from autouad.inference.predictor import AnomalyPredictor
    from autouad.model import AnomalyModel, DatasetFacts

    model = AnomalyModel.from_trainer(trainer, DatasetFacts.from_dataset_json(dataset_meta),
                                      Threshold(0.5, "above", "fixed", "speed benchmark: a fixed cut"))
    raw = next((workspace / "raw").glob(f"Dataset{DATASET_ID}_*"))
    record = AnomalyPredictor([model]).predict_folder(raw / "imagesTs", workspace / "predictions" / trainer.method,
                                                      raw / "roisTs" if (raw / "roisTs").is_dir() else None)
    return {"predict_volumes_per_s": record["num_predicted"] / record["seconds"],
            "predict_model_busy_fraction": record["model_seconds"] / record["seconds"],
            "predict_waiting_for_data_s": record["waiting_for_data_seconds"]}


# ---- the run ------------------------------------------------------------------------------------------
def pin_slice_size(plans, size: tuple[int, int]):
    """The plans with their slice size pinned to ``size``, for a speed figure stated at a fixed size (the
    issue's GPU bar: ASC-Net at 160x160). A spacing plan's spacing is scaled by the one factor that fits
    its planned field of view (slice size x spacing, which holds the largest foreground box) into
    ``size``; a resize plan (2D images) is resized to it. The batch size stays the planned one. The
    given plans are left as they are."""
    from autouad.planning.method_plans import load_method_plans

    plans = copy.deepcopy(plans)
    divisor = load_method_plans(plans.method)["geometry"]["slice_size_divisor"]
    if any(s % divisor for s in size):
        raise ValueError(f"--slice-size {size[0]} {size[1]}: {plans.method} needs multiples of {divisor}")
    geometry = plans.preprocessing
    planned = list(geometry.slice_size)
    if geometry.mode == "spacing":
        factor = max(p / n for p, n in zip(planned, size))
        geometry.target_spacing = [round(s * factor, 6) for s in geometry.target_spacing]
    geometry.slice_size = list(size)
    plans.reasons["geometry"] = (f"pinned by benchmarks/speed.py --slice-size to {size[0]}x{size[1]} (planned "
                                 f"{planned[0]}x{planned[1]})")
    return plans


def prepare_workspace(workspace: Path, methods: list[str], schedule: str,
                      slice_size: tuple[int, int] | None = None, spacing: float = 1.0) -> dict:
    """The demo dataset (at ``spacing`` mm; 1 mm is a real brain MRI's size, which the speed figures
    need) planned and preprocessed for each method (at ``slice_size`` when given); returns each
    method's plans as the planner made them, before any pinning."""
    from autouad import api
    from autouad.utils.files import save_json
    from dataset_conversion import demo

    folders = {"raw_folder": workspace / "raw", "preprocessed_folder": workspace / "preprocessed"}
    demo.convert(DATASET_ID, raw_folder=workspace / "raw", seed=0, num_normal=2, num_patients=2, num_test=2,
                 spacing=spacing)
    planned = {}
    for method in methods:
        plan = api.plan_and_preprocess(DATASET_ID, method=method, schedule=schedule, num_processes=1,
                                       steps=("fingerprint", "plan"), **folders)
        planned[method] = plan.plans
        if slice_size is not None:
            save_json(pin_slice_size(plan.plans, slice_size).to_dict(), plan.plans_path)
        api.plan_and_preprocess(DATASET_ID, method=method, num_processes=1, steps=("preprocess",), **folders)
    return planned


def markdown_table(result: dict) -> str:
    measured = [r for r in result["methods"] if "error" not in r]
    convs = [r["limit"]["conv3x3_flops_per_s"] for r in measured if "limit" in r]
    beside = (f"; beside each method: {min(convs) / 1e9:.1f}-{max(convs) / 1e9:.1f} GFLOP/s" if convs else "")
    lines = [f"Machine: {result['machine']} ({result['device']}); measured limit: 3x3 convolution "
             f"{result['limit']['conv3x3_flops_per_s'] / 1e9:.1f} GFLOP/s at the start{beside}; matrix product "
             f"{result['limit']['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s",
             "",
             "| method | slice | batch | inference slices/s | GFLOP/slice | conv limit GFLOP/s "
             "| inference GFLOP/s (of limit) | training steps/s | training GFLOP/s (of limit) "
             "| training time making batches | preprocessing s/volume | autouad_predict volumes/s (model busy) "
             "| peak memory |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["methods"]:
        if "error" in r:
            lines.append(f"| {r['method']} | error: {r['error']} |")
            continue
        # the method's own limit, measured in its process just before its figures
        limit = r.get("limit", result["limit"])["conv3x3_flops_per_s"]
        inf = r["inference_slices_per_s"] * r["inference_flops_per_slice"]
        train = r["train_steps_per_s"] * r["train_flops_per_step"]
        lines.append(
            f"| {r['method']} | {r['slice_size'][0]}x{r['slice_size'][1]} | {r['batch_size']} "
            f"| {r['inference_slices_per_s']:.1f} | {r['inference_flops_per_slice'] / 1e9:.3f} "
            f"| {limit / 1e9:.1f} | {inf / 1e9:.1f} ({inf / limit:.0%}) | {r['train_steps_per_s']:.3f} "
            f"| {train / 1e9:.1f} ({train / limit:.0%}) | {r['train_data_fraction']:.1%} "
            f"| {r['preprocessing_s_per_volume']:.2f} "
            f"| {r['predict_volumes_per_s']:.2f} ({r['predict_model_busy_fraction']:.0%}) "
            f"| {r['peak_memory_bytes'] / 2 ** 30:.2f} GiB |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--device", default="auto", help="auto (a GPU when torch sees one), cpu or cuda")
    parser.add_argument("--schedule", default="fast", choices=["fast", "paper", "smoke"],
                        help="whose planned slice size and batch to measure (default fast)")
    parser.add_argument("--slice-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="pin every method's slice size (e.g. 160 160, the size of the issue's GPU bar for "
                             "ASC-Net) instead of the planned one")
    parser.add_argument("--train-steps", type=int, default=3, help="timed training steps per method (best of)")
    parser.add_argument("--inference-batches", type=int, default=4, help="predictor batches timed per method")
    parser.add_argument("--output", type=Path, default=Path("speed.json"))
    parser.add_argument("--workspace", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))

    if args.worker:  # one method, in its own process; one JSON line on stdout
        print(json.dumps(measure_method(args.worker, args.workspace, device, args.train_steps,
                                        args.inference_batches)))
        return 0

    with tempfile.TemporaryDirectory(prefix="autouad_speed_") as tmp:
        workspace = Path(tmp)
        prepare_workspace(workspace, args.methods, args.schedule, args.slice_size and tuple(args.slice_size))
        result = {"machine": machine_description(device), "device": str(device), "schedule": args.schedule,
                  "pinned_slice_size": args.slice_size,
                  "limit": machine_limit(device), "methods": []}
        for method in args.methods:
            print(f"measuring {method} ...", file=sys.stderr, flush=True)
            run = subprocess.run([sys.executable, __file__, "--worker", method, "--workspace", str(workspace),
                                  "--device", str(device), "--train-steps", str(args.train_steps),
                                  "--inference-batches", str(args.inference_batches)],
                                 capture_output=True, encoding="utf-8", errors="replace")
            if run.returncode != 0:
                last = (run.stderr.strip().splitlines() or ["no output"])[-1]
                result["methods"].append({"method": method, "error": last[:200]})
            else:
                result["methods"].append(json.loads(run.stdout.strip().splitlines()[-1]))
    save_json(result, args.output)
    print(markdown_table(result))
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
