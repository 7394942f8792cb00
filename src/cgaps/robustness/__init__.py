"""Robustness stage (``cgaps robustness``): the paper's subsampling and adversarial-ablation checks."""
