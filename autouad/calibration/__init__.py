"""Calibration: turning anomaly maps into decisions without test labels."""
