"""Chen & Konukoglu (MIDL 2018): the constrained adversarial auto-encoder and its AAE and VAE baselines."""
