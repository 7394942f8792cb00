"""Concept labels (docs/method.md §5): top activating contexts and provisional labels
(:mod:`cgaps.labels.contexts`, whose :class:`~cgaps.labels.contexts.TopContextLabels` is the first
:class:`cgaps.seams.LabelSource`)."""
