"""Chen & Konukoglu (MIDL 2018): the constrained adversarial auto-encoder and its AAE and VAE baselines."""
from autouad.methods.registry import MethodSpec, Requirements, register

_PAPER = "Chen & Konukoglu, constrained adversarial auto-encoders (MIDL 2018): paper 002"
_COMMON = {"needs": Requirements(), "schedule_aliases": {"iterations": ("iterations",)},
           "tiny_network": {"features": [8, 16, 32, 64], "latent_dim": 16}}

register(MethodSpec(
    name="caae", trainer="autouad.methods.caae.trainer:CAAETrainer", paper=_PAPER, setting=Requirements(),
    setting_reason="a normal set: the constrained AAE's setting (paper 002), trained on normal images",
    priority=40, **_COMMON))
# the paper's baselines: compared against, never the planner's first choice
register(MethodSpec(name="aae", trainer="autouad.methods.caae.trainer:AAETrainer", paper=_PAPER + " (AAE baseline)",
                    setting=None, setting_reason="", priority=41, **_COMMON))
register(MethodSpec(name="vae", trainer="autouad.methods.caae.trainer:VAETrainer", paper=_PAPER + " (VAE baseline)",
                    setting=None, setting_reason="", priority=42, **_COMMON))
