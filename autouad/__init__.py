"""autouad: a self-configuring pipeline for unsupervised anomaly detection and segmentation
in medical images (raw -> fingerprint -> plans -> preprocessed -> trained folds -> predictions)."""

__version__ = "0.1.0"
