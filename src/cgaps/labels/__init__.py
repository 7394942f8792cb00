"""Concept labels (SPEC §5): top activating contexts and provisional labels (:mod:`cgaps.labels.contexts`)."""
