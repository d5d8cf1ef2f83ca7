"""Selection: comparing the trained configurations of a dataset (and the baselines) out of fold, and
writing what inference should use (autouad_find_best_configuration)."""
