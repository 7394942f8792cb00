"""Concept labels and themes (docs/method.md §5), the ``cgaps label`` stage: :mod:`.stage` writes
``labels.parquet`` (its only writer) and ``themes.parquet`` from the run's evidence
(:mod:`.evidence`), imported labels (:mod:`.imported`), an LLM's (:mod:`.autointerp`) and, where
there is no evidence, the top contexts extraction found (:mod:`.top_contexts`, the first
:class:`cgaps.seams.LabelSource`)."""
