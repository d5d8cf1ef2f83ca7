"""Prediction: from images to anomaly masks, maps and scores in the geometry of the inputs."""
