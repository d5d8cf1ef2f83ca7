"""Post-processing of binary anomaly masks."""
