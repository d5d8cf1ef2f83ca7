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
