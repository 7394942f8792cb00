"""The config of ``cgaps confirm``, documented field by field (the CLI generates its flags from them).

Imports only the standard library and :mod:`cgaps.config`, so ``cgaps --help`` stays instant.
"""

from __future__ import annotations

from dataclasses import dataclass

from cgaps.config_fields import check_options, documented, is_integer


@dataclass(frozen=True)
class ConfirmConfig:
    """Which calls are tested again, on how many fresh items, against what (docs/method.md §7)."""

    per_concept: int = documented(
        20, "Fresh pool items drawn for each call, among those where it is present (seeded)."
    )
    scope: str = documented("ALL", "The scope whose calls are tested again: ALL or one benchmark.")
    controls: int = documented(
        1, "Random uncalled concepts of matched support tested the same way, per called concept."
    )
    themes: bool = documented(True, "Test the gap and strength themes too (when themes.parquet is current).")
    model: str | None = documented(
        None,
        "Evaluated model for the fresh items (default: the run's); e.g. openai://HOST:PORT/v1/MODEL.",
    )
    responses: str | None = documented(
        None,
        'Grade these responses instead of evaluating: a JSONL of {"item_id": ..., "response": ...} '
        "lines for (at least) the pool items that may be drawn.",
    )
    seed: int = documented(0, "Seed of the item draws and of the control concepts.")

    def __post_init__(self) -> None:
        check_options(
            "confirm",
            self,
            (
                ("per_concept", is_integer(self.per_concept) and self.per_concept >= 1, "an integer >= 1"),
                ("controls", is_integer(self.controls) and self.controls >= 0, "an integer >= 0"),
                ("scope", isinstance(self.scope, str) and self.scope != "", "ALL or a benchmark name"),
                ("seed", is_integer(self.seed), "an integer"),
            ),
        )
