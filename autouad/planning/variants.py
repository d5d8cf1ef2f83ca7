"""Planner variants that change one decision, selected with ``--planner`` (nnU-Net's way):

    autouad_plan_and_preprocess -d 3 --planner autouad.planning.variants.NoHistogramEqualizationPlanner \\
        --plans-name autouadPlans_noeq
    autouad_train 3 0 -p autouadPlans_noeq
"""
from __future__ import annotations

from autouad.planning.planner import AutoUADPlanner


class NoHistogramEqualizationPlanner(AutoUADPlanner):
    """The method's normalisation without its per-slice histogram equalisation.

    The two-phase liver paper equalises every slice (its LiTS CTs are contrast-enhanced). Equalising
    inside the liver keeps only the rank of each intensity within its slice, so a hypo-dense tumour
    and the darkest normal tissue (the hypo-dense vessels of an unenhanced CT) both become "the
    darkest pixels". On the unenhanced synthetic-tumour CT copies the two settings did not agree
    between folds (docs/results.md): too little data to change the paper's default, so this is an
    option."""

    def choose_normalization(self) -> tuple[dict, str]:
        scheme, reason = super().choose_normalization()
        if not scheme.get("histogram_equalization"):
            return scheme, reason
        return (dict(scheme, histogram_equalization=False),
                reason.replace(" with per-slice histogram equalisation", "")
                + "; per-slice histogram equalisation switched off (NoHistogramEqualizationPlanner)")


class HistogramEqualizationPlanner(AutoUADPlanner):
    """Every slice (every X-ray) histogram-equalised after the method's normalisation: each
    intensity keeps only its rank within its own image.

    Why: an X-ray's grey values carry no physical unit, and exposure and processing differ between
    acquisitions. On Kermany the normal test X-rays are brighter on average than the pneumonia ones
    (124.1 against 119.3 of 255), so brightness alone ranks the test images at AUROC 0.427, and a map
    that followed brightness (ASC-Net's I_ro in the run of 2026-12-03, r = 0.97) landed below chance
    (docs/results.md).
    Equalising removes the brightness and contrast of the image as a whole and keeps its structure.
    The liver paper does the same to its CT slices. Measured on Kermany (`fast`, 2026-12-07,
    docs/results.md): the VAE's test AUROC 0.727 and 0.792 in two runs (0.654-0.686 without),
    HealthyGAN 0.813 and 0.762 (0.745-0.804 without), ASC-Net no steadier (0.466). The folds'
    validation images (Kermany's `train` folder) lack the test folder's brightness shift, so
    out-of-fold validation cannot tell that it helps (the VAE's fell); it stays a variant until
    repeats confirm it:

        autouad_plan_and_preprocess -d 2 -m ascnet --planner autouad.planning.variants.HistogramEqualizationPlanner \
            --plans-name autouadPlans_ascnet_equalized

    Equalisation works on values in [0, 1]. A method whose scheme is a z-score (the auto-encoders) gets
    a per-image min-max to [0, 1] first: after equalisation every image has the same mean and spread,
    so a z-score would add nothing but a fixed scale."""

    def choose_normalization(self) -> tuple[dict, str]:
        scheme, reason = super().choose_normalization()
        if scheme.get("histogram_equalization"):
            return scheme, reason
        if scheme["scheme"] == "zscore":
            scheme = {"scheme": "minmax", "clip_percentiles": [0.0, 100.0]}
            reason += "; per-image min-max to [0, 1] instead of the z-score, for the equalisation"
        return (dict(scheme, histogram_equalization=True),
                reason + "; per-slice histogram equalisation switched on (HistogramEqualizationPlanner)")


class LowResolutionPlanner(AutoUADPlanner):
    """Slices with a quarter of the schedule's pixels (each side halved), as nnU-Net's ``3d_lowres``
    trades resolution for context; here it trades resolution for iterations.

    Why: under a wall-clock budget the step time sets how much a method learns. At Kermany's `fast`
    128x128 the two-phase net's step takes 4.8 s on the project's 2-core CPU, so an 8-minute budget
    buys 100 iterations of the 1100 its schedule names (docs/results.md, "Budgeted `fast` run").
    A step on a quarter of the pixels costs about a quarter; whether the extra iterations outweigh
    the coarser maps is a question for out-of-fold validation, so this is a variant, not the default:

        autouad_plan_and_preprocess -d 2 -m twophase --planner autouad.planning.variants.LowResolutionPlanner \\
            --plans-name autouadPlans_twophase_lowres
    """
    pixel_fraction = 0.25

    def choose_geometry(self) -> tuple[dict, str]:
        geometry = self.settings["geometry"]
        full = geometry["max_slice_pixels"][self.schedule_name]
        divisor = geometry["slice_size_divisor"]
        # at least one divisor-sized block a side: the networks pool down to it
        reduced = max(divisor * divisor, int(full * self.pixel_fraction))
        self.settings = dict(self.settings, geometry=dict(geometry, max_slice_pixels=dict(
            geometry["max_slice_pixels"], **{self.schedule_name: reduced})))
        try:
            plan, reason = super().choose_geometry()
        finally:
            self.settings = dict(self.settings, geometry=geometry)
        return plan, reason + f" (LowResolutionPlanner: {reduced} of the schedule's {full} px per slice)"
