"""Prediction: from images to anomaly masks, maps and scores in the inputs ' geometry."""
