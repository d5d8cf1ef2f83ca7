"""Zhang, Deng & Li (SASHIMI 2023): unsupervised liver tumour segmentation with random-shape pseudo
anomalies and two-phase training (paper 004), and its DRAEM baseline (Zavrtanik et al., ICCV 2021)."""
from autouad.methods.registry import MethodSpec, Requirements, register

_COMMON = {"needs": Requirements(), "schedule_aliases": {"epochs": ("phase1_epochs",)},
           "tiny_network": {"restoration_width": 4, "segmentation_width": 4}}

register(MethodSpec(
    name="twophase",
    trainer="autouad.methods.twophase.trainer:TwoPhaseTrainer",
    paper="Zhang, Deng & Li, liver tumour segmentation with pseudo anomaly synthesis (SASHIMI 2023): paper 004",
    setting=Requirements(roi=True, modalities=("CT",)),
    setting_reason=("CT with an organ ROI: the liver paper's setting (paper 004), trained on normal ROI slices "
                    "with synthetic anomalies"),
    priority=20, **_COMMON))
# the paper's baseline: compared against, never the planner's first choice
register(MethodSpec(name="draem", trainer="autouad.methods.twophase.draem:DRAEMTrainer",
                    paper="DRAEM (Zavrtanik et al., ICCV 2021), the baseline of paper 004",
                    setting=None, setting_reason="", priority=60,
                    # DRAEM's paper: the maximum of the segmentation map after a 21x21 mean filter
                    image_score="max_mean_filtered", **_COMMON))
