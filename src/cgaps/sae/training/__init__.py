"""Training toolkit for SAEs (``cgaps train-sae`` and the shipped-SAE recipe).

:mod:`~cgaps.sae.training.cache` builds a resumable on-disk cache of residual activations,
:mod:`~cgaps.sae.training.train` trains a TopK SAE with AuxK on it and saves it in sae-lens
format, :mod:`~cgaps.sae.training.metrics` measures FVU, L0, dead latents and CE increase,
:mod:`~cgaps.sae.training.measure` bundles them into ``measure_sae`` (used by the CLI and the
recipe), :mod:`~cgaps.sae.training.corpus` builds the recipe's text mix. The runtime side (loading an
SAE for extraction) is :mod:`cgaps.sae`.
"""
