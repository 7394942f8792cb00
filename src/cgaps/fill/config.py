"""The config of ``cgaps fill``, documented field by field (the CLI generates its flags from them).

Imports only the standard library and :mod:`cgaps.config`, so ``cgaps --help`` stays instant.
"""

from __future__ import annotations

from dataclasses import dataclass

from cgaps.config_fields import check_options, documented, is_integer, is_number

BUDGET_SHARE = 0.2  # the default budget: this share of the benchmark's items


@dataclass(frozen=True)
class FillConfig:
    """Which benchmark to fill, with how many items, weighted how (docs/method.md §7)."""

    benchmark: str = documented("", "The benchmark of RUN_DIR to fill (one of its benchmark names).")
    budget: int | None = documented(
        None, f"Items to select (default: {BUDGET_SHARE:.0%} of the benchmark's items, at least 1)."
    )
    reference: str | None = documented(
        None,
        "A reference run (same reader and SAE) whose concepts define what counts; default: the "
        "concepts present anywhere in RUN_DIR's suite (in the pool when the benchmark is the run's only one).",
    )
    missing_weight: float = documented(1.0, "Objective weight of covering one missing concept.")
    under_weight: float = documented(
        0.5, "Objective weight of lifting one under-represented concept to the benchmark's under threshold."
    )
    verify: bool = documented(
        False,
        "Extract the augmented benchmark again and measure its missing and under shares, next to a "
        "random selection and a selection by metadata group of the same budget.",
    )
    seed: int = documented(0, "Seed of the random and group baselines.")

    def __post_init__(self) -> None:
        check_options(
            "fill",
            self,
            (
                ("benchmark", isinstance(self.benchmark, str) and self.benchmark != "", "a benchmark name"),
                (
                    "budget",
                    self.budget is None or (is_integer(self.budget) and self.budget >= 1),
                    "an integer >= 1",
                ),
                (
                    "missing_weight",
                    is_number(self.missing_weight) and self.missing_weight > 0,
                    "a number > 0",
                ),
                ("under_weight", is_number(self.under_weight) and self.under_weight >= 0, "a number >= 0"),
                ("seed", is_integer(self.seed), "an integer"),
            ),
        )
