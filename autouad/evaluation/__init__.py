"""Evaluation of predictions against reference masks or image-level labels: metrics and summary.json."""
