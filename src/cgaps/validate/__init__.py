"""Validate stage (``cgaps validate``): can this run's gap calls be trusted?

:mod:`cgaps.validate.core` runs three checks on the run's own saliency matrix and writes
``validation.json``; :mod:`cgaps.validate.config` holds their config (import-light, for
``--help``).
"""
