"""find_best_configuration: compare every candidate configuration out of fold, choose one, and
write what inference should use (nnU-Net's find_best_configuration, with the baselines as honest
candidates).

Candidates: every trained method of the dataset (its folds' validation maps), the non-learned
intensity baseline per channel and as the mean of the channels (pixel-level datasets), the pixel
kNN baseline (image-level datasets), and averages of the best two and three. A configuration is a
candidate with a threshold source and a post-processing (autouad.selection.configurations), or,
for image-level datasets, an image score with its label-free cut.

Out of fold: the cases of each fold are scored with parameters fitted on the other folds'
validation cases only; with a single fold the parameters are fitted on that fold itself (said in
the instructions). Selection metric: the mean subject-wise Dice at the configuration's own cut
(pixel AUROC breaks ties) where validation cases have masks; image AUROC (F1 breaks ties) where they
have image labels. Before recommending anything, the chosen configuration's bootstrap interval is
checked against chance, and every candidate whose interval lies below chance is reported as
ranking the wrong way round (it is not flipped: the sign of a map is a property of the method).

Writes ``$AUTOUAD_results/DatasetXXX_Name/inference_instructions.json`` and a short
``inference_instructions.txt``; ``autouad_predict -d`` follows them.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autouad.calibration.thresholds import CalibrationError
from autouad.evaluation.metrics import roc_auc, undefined_to_none
from autouad.selection.configurations import (THRESHOLD_SOURCES, PixelConfiguration, PixelScorer, bootstrap_interval,
                                              ensemble_values, image_ensemble, image_threshold,
                                              pixel_auroc)
from autouad.selection.evidence import (INTENSITY, KNN, KNN_KIND, Candidate, CaseEvidence, SelectionError,
                                        collect_image_evidence, collect_pixel_evidence, intensity_candidates,
                                        method_candidates, trained_method_folders)
from autouad.utils.files import load_json, save_json
from autouad.utils.files import atomic_output

INSTRUCTIONS_FILE = "inference_instructions.json"
INSTRUCTIONS_TEXT = "inference_instructions.txt"
CHANCE_AUROC = 0.5


@dataclass
class Scored:
    """One configuration's out-of-fold result."""
    configuration: str
    candidate: str
    threshold: str | None
    kernel: int
    per_case: dict[str, dict] = field(default_factory=dict)     # case -> {"dice" | "flagged_fraction", "fold"}
    auroc: dict[str, float] = field(default_factory=dict)       # case (pixel) or fold (image) -> AUROC
    image: dict | None = None                                   # image-level metrics at the cut, pooled
    error: str | None = None

    @property
    def dice(self) -> float:
        values = [v["dice"] for v in self.per_case.values() if "dice" in v]
        return float(np.mean(values)) if values else float("nan")

    @property
    def mean_auroc(self) -> float:
        values = [v for v in self.auroc.values() if np.isfinite(v)]
        return float(np.mean(values)) if values else float("nan")

    def key(self, task: str) -> tuple[float, float]:
        """What selection maximises (NaN ranks last)."""
        def finite(v):
            return v if np.isfinite(v) else -1.0
        if task == "image":
            return finite(self.mean_auroc), finite((self.image or {}).get("f1", float("nan")))
        return finite(self.dice), finite(self.mean_auroc)

    def to_dict(self) -> dict:
        out = {"configuration": self.configuration, "candidate": self.candidate}
        if self.error:
            return dict(out, error=self.error)
        if self.threshold is not None:
            out.update(threshold=self.threshold, postprocessing_kernel=self.kernel or None)
        if any("dice" in v for v in self.per_case.values()):
            out["dice"] = self.dice
        out["auroc"] = self.mean_auroc
        if self.image:
            out["image"] = {k: self.image[k] for k in ("auroc", "average_precision", "precision", "recall",
                                                       "specificity", "f1")}
        return out


# ---- out-of-fold scoring -------------------------------------------------------------------------------------
def fitting_cases(evidence: list[CaseEvidence], fold: int, folds: list[int]) -> list[CaseEvidence]:
    """The cases whose labels may shape the parameters used on ``fold``: the other folds', or, with
    one fold only, that fold's own (in-sample)."""
    others = [c for c in evidence if c.fold in folds and c.fold != fold]
    return others or [c for c in evidence if c.fold == fold]


def score_pixel(config: PixelConfiguration, scorer: PixelScorer, evidence: list[CaseEvidence],
                folds: list[int]) -> Scored:
    scored = Scored(config.name, config.candidate, config.threshold, config.kernel)
    for fold in folds:
        try:
            params = scorer.fit(config, fitting_cases(evidence, fold, folds))
        except CalibrationError as e:
            scored.error = str(e)
            return scored
        fold_cases = [c for c in evidence if c.fold == fold]
        for name, value in scorer.score(config, params, fold_cases).items():
            scored.per_case[name] = dict(value, fold=fold)
        for case in fold_cases:
            scored.auroc[case.name] = pixel_auroc(case, config.candidate)
    return scored


def score_image(candidate: str, evidence: list[CaseEvidence], folds: list[int],
                members: tuple[str, ...] = ()) -> Scored:
    scored = Scored(candidate, candidate, None, 0)
    decisions = []
    for fold in folds:
        fitting = fitting_cases(evidence, fold, folds)
        fold_cases = [c for c in evidence if c.fold == fold]
        if members:
            image_ensemble(fold_cases, fitting, members, candidate)
            image_ensemble(fitting, fitting, members, candidate)
        try:
            cut = image_threshold(fitting, candidate)
        except CalibrationError as e:
            scored.error = str(e)
            return scored
        labelled = [c for c in fold_cases if c.label is not None]
        scores = np.array([c.scores[candidate] for c in labelled])
        labels = np.array([c.label for c in labelled], bool)
        scored.auroc[str(fold)] = roc_auc(scores, labels) if len(set(labels.tolist())) > 1 else float("nan")
        decisions += [(c.name, c.scores[candidate], c.label, c.scores[candidate] >= cut) for c in labelled]
    if decisions:
        _, scores, labels, flags = zip(*decisions)
        from autouad.evaluation.metrics import image_level_metrics
        scored.image = image_level_metrics(np.array(scores), np.array(labels, bool), np.array(flags, bool))
        scored.per_case = {name: {"score": float(s), "label": int(lab)} for name, s, lab, _ in decisions}
    return scored


# ---- the selection ---------------------------------------------------------------------------------------------
@dataclass
class Comparison:
    """Everything compared for one set of folds: what find_best_configuration writes, and what the
    benchmark's leave-one-fold-out selection repeats per outer fold."""
    task: str
    folds: list[int]
    results: list[Scored]
    candidates: dict[str, Candidate]
    kernels: list[int]

    @property
    def ranked(self) -> list[Scored]:
        return sorted((r for r in self.results if r.error is None), key=lambda r: r.key(self.task), reverse=True)

    @property
    def best(self) -> Scored:
        ranked = self.ranked
        if not ranked:
            raise SelectionError("no configuration could be scored: " +
                                 "; ".join(sorted({r.error for r in self.results if r.error}))[:300])
        return ranked[0]


def pixel_configurations(candidates: dict[str, Candidate], kernels: list[int]) -> list[PixelConfiguration]:
    configs = []
    for name, candidate in candidates.items():
        for source in THRESHOLD_SOURCES:
            if source == "case_histogram" and candidate.value_range is None:
                continue
            configs += [PixelConfiguration(name, source, k) for k in kernels]
    return configs


def compare(evidence: list[CaseEvidence], candidates: list[Candidate], folds: list[int], task: str,
            kernels: list[int], quiet: bool = False) -> Comparison:
    """Score every configuration of every candidate out of fold over ``folds``, then the averages of
    the two and three best candidates (by their best configuration)."""
    evidence = [c for c in evidence if c.fold in folds]
    pool = {c.name: c for c in candidates}
    results: list[Scored] = []
    scorer = PixelScorer({n: c.value_range for n, c in pool.items()})

    def run(names: dict[str, Candidate]) -> list[Scored]:
        if task == "image":
            return [score_image(n, evidence, folds, c.members) for n, c in names.items()]
        configs = pixel_configurations(names, kernels)
        out = []
        for i, config in enumerate(configs):
            if not quiet:
                print(f"\r  scoring {i + 1}/{len(configs)}: {config.name:<70}", end="", file=sys.stderr, flush=True)
            out.append(score_pixel(config, scorer, evidence, folds))
        if not quiet:
            print(file=sys.stderr)
        return out

    results += run(pool)
    # ensembles of the best distinct candidates (one image score per method)
    best_per_candidate: dict[str, Scored] = {}
    for r in sorted((r for r in results if r.error is None), key=lambda r: r.key(task), reverse=True):
        base = r.candidate.split("[")[0]
        if base not in {b.split("[")[0] for b in best_per_candidate}:
            best_per_candidate[r.candidate] = r
    top = list(best_per_candidate)[:3]
    ensembles = {}
    for size in (2, 3):
        if len(top) >= size:
            members = tuple(top[:size])
            name = "ensemble:" + "+".join(members)
            ensembles[name] = Candidate(name, "ensemble", members=members,
                                        note=f"the mean of {' and '.join(members)} "
                                             f"({'z-scored against normal images' if task == 'image' else 'robust z-scored per case'})")
            if task != "image":
                ensemble_values(evidence, members, name)
    pool.update(ensembles)
    results += run(ensembles)
    return Comparison(task, list(folds), results, pool, kernels)


def kernel_options(plans, spacing_mm: float) -> list[int]:
    """None, the plan's kernel carried to the raw voxels, and one about half its size."""
    pp = plans.postprocessing
    if not pp.enabled or not pp.kernel_size or pp.kernel_size <= 1:
        return [0]
    plan_spacing = float(np.mean(plans.preprocessing.target_spacing or [spacing_mm]))
    millimetres = pp.kernel_size * plan_spacing
    paper = max(1, 2 * int(round((millimetres / spacing_mm - 1) / 2)) + 1)
    smaller = max(3, 2 * int(round((paper / 2 - 1) / 2)) + 1)
    return sorted({0, paper, smaller} - ({smaller} if smaller >= paper else set()))


# ---- deployable parameters and the instructions ------------------------------------------------------------
def deployable(comparison: Comparison, evidence: list[CaseEvidence], chosen: Scored) -> dict:
    """The chosen configuration with its parameters fitted on every fold's cases."""
    candidate = comparison.candidates[chosen.candidate]
    members = list(candidate.members) or [chosen.candidate]
    member_info = {m: _candidate_dict(comparison.candidates[m]) for m in members}
    out = {"configuration": chosen.configuration, "candidate": chosen.candidate, "kind": candidate.kind,
           "members": member_info, "fitted_on_folds": comparison.folds}
    cases = [c for c in evidence if c.fold in comparison.folds]
    if comparison.task == "image":
        if candidate.members:
            out["normalisation"] = {m: {"mean": mean, "std": std} for m, (mean, std) in
                                    image_ensemble(cases, cases, candidate.members, chosen.candidate).items()}
        out["image_threshold"] = {"value": image_threshold(cases, chosen.candidate), "percentile": 95.0,
                                  "how": "the 95th percentile of the normal validation images' scores (label-free)"}
        return out
    scorer = PixelScorer({n: c.value_range for n, c in comparison.candidates.items()})
    config = PixelConfiguration(chosen.candidate, chosen.threshold, chosen.kernel)
    out["threshold"] = {"source": chosen.threshold, "how": THRESHOLD_SOURCES[chosen.threshold],
                        **scorer.fit(config, cases)}
    out["postprocessing"] = {"kernel": chosen.kernel, "operations": ["opening", "closing"] if chosen.kernel else [],
                             "space": "the raw image's voxels, slice by slice along its axial axis, inside the region"}
    return out


def _candidate_dict(candidate: Candidate) -> dict:
    out = {"kind": candidate.kind, "note": candidate.note}
    if candidate.kind == "method":
        # relative to the dataset's results folder, where the instructions lie: a copied, exported or
        # installed results folder keeps working
        out.update(model_folder=Path(candidate.model_folder).name, anomalous_side=candidate.anomalous_side,
                   value_range=candidate.value_range)
        if candidate.image_score:
            out["image_score"] = candidate.image_score
    elif candidate.kind == INTENSITY:
        out.update(channel=candidate.channel, sign=candidate.sign, signs=list(candidate.signs))
    return out


def chance_warnings(comparison: Comparison, chosen: Scored) -> tuple[list[str], list[float]]:
    """Warnings for a chosen configuration that does not beat chance, and for candidates that rank
    the anomalies below chance; returns them and the chosen's AUROC interval."""
    warnings = []
    interval = _auroc_interval(comparison, chosen)
    if np.isfinite(interval[0]) and interval[0] <= CHANCE_AUROC:
        warnings.append(f"nothing here separates anomalies from normal tissue reliably better than chance: the best "
                        f"configuration ({chosen.configuration}) has an out-of-fold AUROC of {chosen.mean_auroc:.3f} "
                        f"with a 95 % bootstrap interval of {interval[0]:.3f}-{interval[1]:.3f}, which includes "
                        f"{CHANCE_AUROC}; do not rely on its decisions")
    seen = set()
    for result in comparison.ranked:
        if result.candidate in seen:
            continue
        seen.add(result.candidate)
        low, high = _auroc_interval(comparison, result)
        if np.isfinite(high) and high < CHANCE_AUROC:
            warnings.append(f"{result.candidate} ranks the anomalies below chance (AUROC {result.mean_auroc:.3f}, "
                            f"interval {low:.3f}-{high:.3f}): its map is higher on normal than on anomalous "
                            f"{'images' if comparison.task == 'image' else 'voxels'}; it is reported, not flipped")
    return warnings, list(interval)


def _auroc_interval(comparison: Comparison, result: Scored) -> tuple[float, float]:
    if comparison.task == "image":
        rows = np.array([(v["score"], v["label"]) for v in result.per_case.values()], np.float64)
        if len(rows) < 2:
            return float("nan"), float("nan")

        def auc(sample):
            labels = sample[:, 1].astype(bool)
            return roc_auc(sample[:, 0], labels) if 0 < labels.sum() < len(labels) else float("nan")
        return bootstrap_interval(rows, auc, resamples=500)
    values = np.array([v for v in result.auroc.values() if np.isfinite(v)])
    return bootstrap_interval(values, np.mean)


def write_instructions(instructions: dict, folder: Path) -> None:
    save_json(instructions, folder / INSTRUCTIONS_FILE)
    chosen = instructions["chosen"]
    lines = [f"{instructions['dataset']}: inference instructions ({instructions['created']})",
             f"chosen: {chosen['configuration']}",
             f"  selection metric: {instructions['selection_metric']}; {instructions['fitting']}"]
    def number(value) -> str:
        return "n/a" if value is None else f"{value:.3f}"
    metric = (f"image AUROC {number(chosen['auroc'])}" if instructions["task"] == "image"
              else f"Dice {number(chosen.get('dice'))}, pixel AUROC {number(chosen['auroc'])}")
    lines.append(f"  out of fold: {metric}")
    for warning in instructions["warnings"]:
        lines.append(f"WARNING: {warning}")
    lines.append("runners-up:")
    for row in instructions["candidates"][1:6]:
        value = row.get("dice", row.get("auroc"))
        lines.append(f"  {row['configuration']}: {value:.3f}" if value is not None else f"  {row['configuration']}")
    lines.append(f"predict with: autouad_predict -i IN -o OUT -d {instructions['dataset']}")
    with atomic_output(folder / INSTRUCTIONS_TEXT) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


def gather(dataset_name: str, raw_folder: Path, preprocessed_folder: Path, results_folder: Path,
           folds: list[int] | None, quiet: bool = False, proxy: bool = False):
    """(task, folds, candidates, evidence, kernels, plans, proxy) of a dataset's trained folds. Evidence from
    the validation cases' masks or image labels; with neither (or ``proxy``), from synthetic
    anomalies pasted into their normal tissue (autouad.selection.proxy)."""
    from autouad.dataset.raw_dataset import load_raw_dataset
    from autouad.planning.plans import load_plans

    pre = preprocessed_folder / dataset_name
    fingerprint = load_json(pre / "dataset_fingerprint.json")
    splits = load_json(pre / "splits_final.json")
    folds = list(folds) if folds is not None else list(range(len(splits)))
    folders = trained_method_folders(results_folder / dataset_name, folds)
    # the planner's own plans, else the first trained method's (the post-processing kernel's source)
    plans_files = [pre / "plans.json"] + [f / "plans.json" for f in folders.values()]
    existing = [f for f in plans_files if f.is_file()]
    if not existing:
        raise SelectionError(f"{pre}: no plans; run autouad_plan_and_preprocess first")
    plans = load_plans(existing[0])
    dataset = load_raw_dataset(raw_folder / dataset_name)
    validation = {n for k in folds for n in splits[k]["val"]}
    cases = [c for c in dataset.training_cases() if c.case_id in validation]
    image_level = fingerprint["summary"]["dimension"] == 2 and not any(c.mask is not None for c in cases)
    if not proxy and any(c.mask is not None for c in cases):
        task = "segmentation"
    elif not proxy and any(c.label is not None for c in cases):
        task = "image"
    else:
        proxy = True
        task = "image" if image_level else "segmentation"
    candidates = method_candidates(folders, task == "image")
    if proxy:
        from autouad.selection.proxy import collect_proxy_evidence
        if task == "image" and fingerprint["summary"]["dimension"] == 2:
            candidates.append(Candidate(KNN, KNN_KIND, note="pixel kNN against the fold's normal training images"))
        if task != "image":
            candidates += intensity_candidates(fingerprint)
        evidence = collect_proxy_evidence(raw_folder / dataset_name, splits, folds, candidates, fingerprint,
                                          task == "image", quiet=quiet)
        spacing = float(np.median([np.mean(c.spacing[1:]) for c in evidence]))
        kernels = [0] if task == "image" else kernel_options(plans, spacing)
        return task, folds, candidates, evidence, kernels, plans, True
    if task == "image":
        if fingerprint["summary"]["dimension"] == 2:
            candidates.append(Candidate(KNN, KNN_KIND, note="pixel kNN: 32x32 standardised images, distance to the "
                                                         "fold's nearest normal training image"))
        evidence = collect_image_evidence(raw_folder / dataset_name, pre, splits, folds, candidates, quiet)
        kernels = [0]
    else:
        candidates += intensity_candidates(fingerprint)
        evidence = collect_pixel_evidence(raw_folder / dataset_name, pre, splits, folds, candidates, quiet)
        spacing = float(np.median([np.mean(c.spacing[1:]) for c in evidence]))
        kernels = kernel_options(plans, spacing)
    if not candidates:
        raise SelectionError(f"{results_folder / dataset_name}: no candidate")
    return task, folds, candidates, evidence, kernels, plans, False


def find_best_configuration(dataset_name: str, raw_folder: Path, preprocessed_folder: Path, results_folder: Path,
                            folds: list[int] | None = None, quiet: bool = False, write: bool = True,
                            proxy: bool = False) -> dict:
    """Compare, choose, and write the inference instructions (returned as a dict)."""
    start = time.time()
    task, folds, candidates, evidence, kernels, _, proxy = gather(dataset_name, raw_folder, preprocessed_folder,
                                                                  results_folder, folds, quiet, proxy)
    comparison = compare(evidence, candidates, folds, task, kernels, quiet)
    chosen = comparison.best
    warnings, interval = chance_warnings(comparison, chosen)
    from autouad.model import DatasetFacts
    facts = DatasetFacts.from_dataset_json(load_json(preprocessed_folder / dataset_name / "dataset.json"))
    instructions = {
        "dataset": dataset_name, "created": time.strftime("%Y-%m-%d %H:%M"), "task": task, "folds": folds,
        "dataset_facts": facts.to_dict(),
        "selection_metric": ("mean image AUROC of the folds (F1 at the label-free cut breaks ties)" if task == "image"
                             else "mean subject-wise Dice at the configuration's own cut (pixel AUROC breaks ties)")
                            + ("; on synthetic anomalies pasted into the validation cases' normal tissue (a "
                               "label-free proxy: no masks or image labels)" if proxy else ""),
        "proxy": proxy,
        "fitting": ("each fold's cases scored with thresholds fitted on the other folds' cases" if len(folds) > 1 else
                    "one fold: thresholds fitted and scored on the same fold's cases (in-sample, optimistic)"),
        "chosen": dict(chosen.to_dict(), auroc_interval=interval, **deployable(comparison, evidence, chosen)),
        "candidates": [r.to_dict() for r in comparison.ranked] + [r.to_dict() for r in comparison.results if r.error],
        "warnings": warnings, "seconds": round(time.time() - start, 1)}
    instructions = undefined_to_none(instructions)  # an undefined figure (NaN) is null in the JSON
    if write:
        write_instructions(instructions, results_folder / dataset_name)
    return instructions


# ---- leave-one-fold-out selection (honest benchmark rows) ----------------------------------------------------
def leave_one_fold_out(evidence: list[CaseEvidence], candidates: list[Candidate], folds: list[int], task: str,
                       kernels: list[int], quiet: bool = True) -> list[dict]:
    """For each outer fold: choose a configuration by comparing on the *other* folds only, fit its
    parameters on them, and score the outer fold's cases with it. What a user gets from the
    default commands, measured without the selection ever reading the scored fold's labels.
    Returns per outer fold {"fold", "chosen", "per_case"} (pixel: per-case Dice; image: scores)."""
    if len(folds) < 2:
        raise SelectionError("leave-one-fold-out selection needs at least two folds")
    out = []
    for outer in folds:
        inner = [k for k in folds if k != outer]
        inner_cases = [c for c in evidence if c.fold in inner]
        comparison = compare(inner_cases, candidates, inner, task, kernels, quiet)
        chosen = comparison.best
        candidate = comparison.candidates[chosen.candidate]
        scored_cases = [c for c in evidence if c.fold == outer]
        row = {"fold": outer, "chosen": chosen.configuration, "inner_folds": inner}
        if task == "image":
            if candidate.members:
                image_ensemble(scored_cases, inner_cases, candidate.members, chosen.candidate)
                image_ensemble(inner_cases, inner_cases, candidate.members, chosen.candidate)
            cut = image_threshold(inner_cases, chosen.candidate)
            row["per_case"] = {c.name: {"score": c.scores[chosen.candidate], "label": c.label,
                                        "decision": int(c.scores[chosen.candidate] >= cut)}
                               for c in scored_cases if c.label is not None}
        else:
            if candidate.members:
                ensemble_values(scored_cases, candidate.members, chosen.candidate)
            scorer = PixelScorer({n: c.value_range for n, c in comparison.candidates.items()})
            config = PixelConfiguration(chosen.candidate, chosen.threshold, chosen.kernel)
            params = scorer.fit(config, inner_cases)
            row["params"] = params
            row["per_case"] = scorer.score(config, params, scored_cases)
            for case in scored_cases:
                if case.name in row["per_case"] and case.has_anomaly:
                    row["per_case"][case.name]["auroc"] = pixel_auroc(case, chosen.candidate)
        out.append(row)
    return out
