"""The options of the report (``cgaps report``, and the ``report`` section of a run's config),
documented field by field. The standard library and :mod:`cgaps.config_fields` only, so
``cgaps --help`` reads the fields without loading pandas or jinja."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from cgaps.config_fields import documented
from cgaps.errors import CGapsError


@dataclass(frozen=True)
class ReportConfig:
    """What the report shows and how much of it (the caps keep the file small)."""

    top: int = documented(50, "Rows per table in the suite-wide (ALL) scope.")
    top_per_benchmark: int = documented(10, "Rows per table in each benchmark's scope.")
    examples: int = documented(2, "Example items per concept row, for each of correct and incorrect.")
    contexts: int = documented(3, "Top activating contexts shown for a concept without a label.")
    prompt_chars: int = documented(
        600, "Prompt text shown per example item (longer ones are cut, with a note)."
    )
    response_chars: int = documented(400, "Response text shown per example item.")
    reference_chars: int = documented(200, "Reference text shown per example item.")
    context_chars: int = documented(60, "Characters of text shown on each side of a context's firing token.")
    bins: int = documented(40, "Histogram bins.")

    def __post_init__(self) -> None:
        for name, value in dataclasses.asdict(self).items():
            if not isinstance(value, int) or value < (1 if name in ("bins", "top") else 0):
                raise CGapsError(
                    f"report option {name!r} must be a non-negative integer (bins, top >= 1), got {value!r}"
                )
