"""Pools: items that ``cgaps fill`` and ``cgaps confirm`` draw from (docs/method.md §7).

:mod:`cgaps.pools.coverage` loads a pool, reads where each concept is present on its prompts and
fixes the concept scale; :mod:`cgaps.pools.generated` drafts items with a served model and keeps
those that carry their concept; :mod:`cgaps.pools.config` holds the options (imported by the
command line, so this package imports nothing heavy at its top).
"""
