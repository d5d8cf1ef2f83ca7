"""Training: the fold's data, deterministic batch streams, checkpoints, the log and the trainer base."""
