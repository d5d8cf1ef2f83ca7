"""Which CPU speed-ups help each method: bf16 autocast, channels-last memory and torch.compile, for
a training step and for inference, against the plain float32 step.

    python benchmarks/speed_options.py [--methods ...] [--options ...] [--output benchmarks/results/speed_options_cpu.json]

``--options fp32 channels_last fp32_again`` measures the memory layout alone (bf16 autocast and
compile, 7-20x slower and minutes of compilation on a CPU, take most of the full run's time).

Each method is planned (fast schedule) on the project's demo brain MRI, as benchmarks/speed.py does,
and measured in its own process: the median time of a few training iterations of its main phase and
of inference batches (the predictor's batch size), for every option alone (every option but
channels_last runs in the contiguous NCHW layout, whatever the method's own ``channels_last``); and, on one set of freshly
initialised networks, how far each option's maps move from float32's (relative to the largest map
value). Whether an option is kept is decided on these figures and on validation quality measured
separately (docs/results.md, "Speed options").
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from autouad.methods.registry import method_names  # noqa: E402  (after the sys.path line)
from autouad.utils.files import save_json  # noqa: E402

# fp32 comes first and again last: the two plain measurements bound the noise of the machine.
OPTIONS = ("fp32", "bf16_autocast", "channels_last", "compile", "fp32_again")


def median_seconds(fn, repeats: int, warmup: int = 1) -> tuple[float, float]:
    """(median seconds of ``repeats`` calls, seconds of the ``warmup`` calls before them: for
    torch.compile, the compilation)."""
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), first


def measure(method: str, workspace: Path, train_steps: int, inference_batches: int,
            options: tuple[str, ...] = OPTIONS) -> dict:
    from autouad.methods import trainer_class
    from autouad.planning.plans_files import find_plans

    preprocessed = next((workspace / "preprocessed").glob("Dataset*"))
    plans, _ = find_plans(preprocessed, method)
    out = {"method": method, "slice_size": list(plans.slice_size), "batch_size": plans.batch_size,
           "method_uses_channels_last": trainer_class(method).channels_last, "options": {}}
    for option in options:
        torch.manual_seed(0)
        trainer = trainer_class(method)(plans, 0, preprocessed, workspace / "results" / f"{method}_{option}",
                                        device="cpu")
        trainer.channels_last = option == "channels_last"  # the instance's layout, whatever the method's
        trainer.initialize()
        if option == "compile":
            # the gradient penalties (HealthyGAN, the AAEs' critic) differentiate twice, which
            # AOTAutograd's donated buffers forbid ("requires create_graph=False"); without them it runs
            functorch_config = getattr(getattr(torch, "_functorch", None), "config", None)
            if functorch_config is not None and hasattr(functorch_config, "donated_buffer"):
                functorch_config.donated_buffer = False
            try:
                for name in list(trainer.networks):
                    trainer.networks[name] = torch.compile(trainer.networks[name])
            except Exception as e:  # no compiler on the machine
                out["options"][option] = {"error": f"{type(e).__name__}: {str(e)[:120]}"}
                continue
        # the trainer's own autocast (what training_precision does in a run), fp32 for every other option
        trainer.schedule["training_precision"] = "bf16" if option == "bf16_autocast" else "fp32"
        phase = max(trainer.phases, key=lambda p: p.iterations)
        for net in trainer.networks.values():
            net.train()
        step = {"i": 0}

        def train_step():
            trainer.seed_iteration(step["i"])
            with trainer.training_autocast():
                trainer.train_iteration(phase, step["i"])
            step["i"] += 1
        try:
            train, first_train = median_seconds(train_step, train_steps)
        except Exception as e:
            out["options"][option] = {"error": f"{type(e).__name__}: {str(e)[:120]}"}
            continue
        batch = max(1, 2 * trainer.batch_size)
        slices = np.random.default_rng(0).random((batch * inference_batches, len(plans.preprocessing.channels))
                                                 + tuple(plans.slice_size), dtype=np.float32)
        trainer.inference_precision = "bf16" if option == "bf16_autocast" else "fp32"
        infer, _ = median_seconds(lambda: trainer.predict_slices(slices, batch), 2)
        out["options"][option] = {"train_seconds_per_step": train, "first_train_step_seconds": first_train,
                                  "inference_slices_per_second": len(slices) / infer}
    fp32 = out["options"].get("fp32", {})
    for option, row in out["options"].items():
        if "error" in row or option == "fp32" or "error" in fp32 or not fp32:
            continue
        row["train_speedup"] = fp32["train_seconds_per_step"] / row["train_seconds_per_step"]
        row["inference_speedup"] = row["inference_slices_per_second"] / fp32["inference_slices_per_second"]
    out["map_differences"] = map_differences(method, plans, preprocessed, workspace)
    return out


def map_differences(method: str, plans, preprocessed: Path, workspace: Path) -> dict:
    """Largest |map(option) - map(fp32)| of one set of freshly initialised networks."""
    from autouad.methods import trainer_class
    torch.manual_seed(0)
    trainer = trainer_class(method)(plans, 0, preprocessed, workspace / "results" / f"{method}_maps", device="cpu")
    trainer.channels_last = False
    trainer.initialize()
    slices = np.random.default_rng(1).random((8, len(plans.preprocessing.channels)) + tuple(plans.slice_size),
                                             dtype=np.float32)
    trainer.inference_precision = "fp32"
    reference = trainer.predict_slices(slices)
    trainer.inference_precision = "bf16"
    bf16 = trainer.predict_slices(slices)
    trainer.inference_precision = "fp32"
    trainer.channels_last = True
    trainer.networks = trainer.placed(trainer.networks)
    channels_last = trainer.predict_slices(slices)
    scale = float(np.abs(reference).max()) or 1.0
    return {"bf16_autocast": float(np.abs(bf16 - reference).max() / scale),
            "channels_last": float(np.abs(channels_last - reference).max() / scale),
            "note": "largest difference relative to the largest fp32 map value"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=method_names(), choices=method_names())
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--inference-batches", type=int, default=2)
    parser.add_argument("--options", nargs="+", default=list(OPTIONS), choices=OPTIONS,
                        help="fp32 is always measured first: every speed-up is relative to it")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks/results/speed_options_cpu.json")
    parser.add_argument("--workspace", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        options = ("fp32",) + tuple(o for o in args.options if o != "fp32")
        print(json.dumps(measure(args.worker, args.workspace, args.train_steps, args.inference_batches, options)))
        return 0
    from autouad.utils.machine import machine_description
    sys.path.insert(0, str(REPO / "benchmarks"))
    from speed import prepare_workspace
    with tempfile.TemporaryDirectory(prefix="autouad_speed_options_") as tmp:
        workspace = Path(tmp)
        prepare_workspace(workspace, args.methods, "fast")
        result = {"machine": machine_description("cpu"),
                  "measured": time.strftime("%Y-%m-%d %H:%M"), "methods": []}
        for method in args.methods:
            print(f"measuring {method} ...", file=sys.stderr, flush=True)
            run = subprocess.run([sys.executable, __file__, "--worker", method, "--workspace", str(workspace),
                                  "--train-steps", str(args.train_steps), "--inference-batches",
                                  str(args.inference_batches), "--options", *args.options], capture_output=True, encoding="utf-8", errors="replace")
            if run.returncode:
                result["methods"].append({"method": method, "error": (run.stderr.strip().splitlines() or ["?"])[-1]})
            else:
                result["methods"].append(json.loads(run.stdout.strip().splitlines()[-1]))
    save_json(result, args.output)
    for row in result["methods"]:
        if "error" in row:
            print(f"{row['method']}: error {row['error']}")
            continue
        cells = [f"{o} train x{r.get('train_speedup', 1):.2f} infer x{r.get('inference_speedup', 1):.2f}"
                 if "error" not in r else f"{o} error" for o, r in row["options"].items() if o != "fp32"]
        print(f"{row['method']}: " + "; ".join(cells))
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
