"""autouad: a self-configuring pipeline for unsupervised anomaly detection and segmentation
in medical images (raw -> fingerprint -> plans -> preprocessed -> trained folds -> predictions).

    from autouad import api, AnomalyPredictor, AnomalyModel

``autouad.api`` runs the stages; ``AnomalyPredictor`` predicts images in memory with a trained
configuration; ``AnomalyModel`` is one trained fold. They are imported on first use, so that
``import autouad`` (and the command lines' help) does not import torch.
"""

__version__ = "0.1.0"
__all__ = ["AnomalyModel", "AnomalyPredictor", "api"]


def __getattr__(name: str):
    if name == "AnomalyPredictor":
        from autouad.inference.predictor import AnomalyPredictor
        return AnomalyPredictor
    if name == "AnomalyModel":
        from autouad.model import AnomalyModel
        return AnomalyModel
    if name == "api":
        import importlib
        return importlib.import_module("autouad.api")
    raise AttributeError(f"module 'autouad' has no attribute {name!r}")
