"""Rahman Siddiquee et al. (SASHIMI 2022): HealthyGAN, a one-directional translation from a mixed
(unlabeled) set of images to healthy images, with |x - G(x)| as the anomaly map."""
from autouad.methods.registry import MethodSpec, Requirements, register

register(MethodSpec(
    name="healthygan",
    trainer="autouad.methods.healthygan.trainer:HealthyGANTrainer",
    paper="Rahman Siddiquee et al., HealthyGAN (SASHIMI 2022): paper 003",
    needs=Requirements(normal_reference=True, unlabeled=True),
    setting=Requirements(unlabeled=True, dimensions=(2,)),
    setting_reason=("2D images with a normal set and an unlabeled mixed set: an image-level task, HealthyGAN's "
                    "setting (paper 003)"),
    priority=10,
    image_score="mean",  # the paper: the mean of |x - G(x)| (more robust than the max in its appendix)
    image_level_on_2d=True,
    tiny_network={"generator_features": 8, "residual_blocks": 2, "discriminator_features": 8},
    schedule_aliases={"iterations": ("iterations",)},
))
