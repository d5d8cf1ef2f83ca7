"""ASC-Net (Dey & Hong, MICCAI 2021 and its journal version): papers 000 and 001."""
from autouad.methods.registry import MethodSpec, Requirements, register

register(MethodSpec(
    name="ascnet",
    trainer="autouad.methods.ascnet.trainer:ASCNetTrainer",
    paper="Dey & Hong, ASC-Net (MICCAI 2021, journal version): papers 000/001",
    needs=Requirements(normal_reference=True, unlabeled=True),
    # its papers' data: MRI and CT volumes (BraTS, LiTS, MS-SEG); on X-rays its I_ro follows brightness
    setting=Requirements(unlabeled=True, modalities=("MRI", "CT")),
    setting_reason=("a normal reference and an unlabeled set: ASC-Net's setting (paper 000/001), which cuts the "
                    "unlabeled images against the reference distribution"),
    priority=30,
    # I_ro is a reconstruction: anomalies are the bright or the dark side of it, as they are in the image
    anomalous_side="polarity",
    tiny_network={"encoder_features": [4, 8, 16, 32], "transition_features": 32},
    schedule_aliases={"epochs": ("epochs_per_step",), "cycles": ("stage1_cycles", "stage2_cycles")},
))
