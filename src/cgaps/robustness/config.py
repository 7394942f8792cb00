"""The config of the robustness checks (``cgaps robustness``), documented field by field.

One dataclass holds every default and every check: :func:`cgaps.robustness.core.robustness_run`
takes it, and the command line generates its flags from the fields (the help text is each
field's ``metadata["help"]``; field names are the option names, ``max_delete`` is
``--max-delete``). This module imports only the standard library and the light :mod:`cgaps.config`, so
``cgaps --help`` can read the fields without loading numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

from cgaps.config_fields import check_options, documented, is_integer, is_number


@dataclass(frozen=True)
class RobustnessConfig:
    """How many subsamples and how much ablation the robustness checks run."""

    repeats: int = documented(100, "Subsampling repeats (seeded by the run's seed).")
    drop: float = documented(0.2, "Fraction of every benchmark dropped in each subsampling repeat.")
    top: int = documented(100, "Best / worst concepts whose most aligned items the ablation deletes.")
    # written as "max_frac" in robustness.json (its key there since the first version)
    max_delete: float = documented(0.01, "At most this fraction of the suite is deleted by the ablation.")

    def __post_init__(self) -> None:
        # the `and`s keep a wrong type from reaching the comparison
        integer, number = is_integer, is_number
        check_options(
            "robustness",
            self,
            (
                ("repeats", integer(self.repeats) and self.repeats >= 2, "an integer >= 2 (a std needs two)"),
                ("drop", number(self.drop) and 0 <= self.drop < 1, "a number in [0, 1)"),
                ("top", integer(self.top) and self.top >= 1, "an integer >= 1"),
                ("max_delete", number(self.max_delete) and 0 < self.max_delete < 1, "a number in (0, 1)"),
            ),
        )
