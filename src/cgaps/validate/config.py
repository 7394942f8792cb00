"""The config of ``cgaps validate``, documented field by field (the CLI generates its flags from them).

Imports only the standard library and :mod:`cgaps.config`, so ``cgaps --help`` stays instant.
"""

from __future__ import annotations

from dataclasses import dataclass

from cgaps.config_fields import check_options, documented, is_integer, is_number


def _sizes_ok(text: object) -> bool:
    if not isinstance(text, str):
        return False
    parts = [x.strip() for x in text.split(",") if x.strip()]
    return bool(parts) and all(x.isdigit() and int(x) >= 5 for x in parts)


@dataclass(frozen=True)
class ValidateConfig:
    """How many null and planted draws the validation runs."""

    null_draws: int = documented(
        20, "Null draws: scores permuted within benchmark, independent of every concept."
    )
    planted_repeats: int = documented(
        3, "Planted draws per (support bin, effect size) cell of the power curve."
    )
    planted_concepts: int = documented(3, "Weak concepts planted together in one planted draw.")
    base_accuracy: float = documented(
        0.7, "Accuracy of the items no planted concept fires on, in planted draws."
    )
    shuffles: int = documented(200, "Random concept sets behind the probe-family baseline.")
    topic_facet: str = documented(
        "category",
        "Planted topics: the item facet whose groups get planted failure ('category' or 'meta.FIELD', "
        "e.g. meta.level); a run without it skips the check.",
    )
    topic_sizes: str = documented(
        "30,100", "Planted topics: items per group, comma-separated (groups with fewer items are left out)."
    )
    topic_repeats: int = documented(
        20,
        "Planted topics: draws per size, each planting 2 random groups (0 skips the check). Which two "
        "groups fail decides most of what a draw finds, so a few draws say little.",
    )

    def sizes(self) -> tuple[int, ...]:
        """``topic_sizes`` as numbers."""
        return tuple(int(x) for x in self.topic_sizes.split(",") if x.strip())

    def __post_init__(self) -> None:
        check_options(
            "validate",
            self,
            (
                ("null_draws", is_integer(self.null_draws) and self.null_draws >= 1, "an integer >= 1"),
                (
                    "planted_repeats",
                    is_integer(self.planted_repeats) and self.planted_repeats >= 0,
                    "an integer >= 0 (0 skips the power curve)",
                ),
                (
                    "planted_concepts",
                    is_integer(self.planted_concepts) and self.planted_concepts >= 1,
                    "an integer >= 1",
                ),
                (
                    "base_accuracy",
                    is_number(self.base_accuracy) and 0.5 < self.base_accuracy < 1,
                    "a number in (0.5, 1)",
                ),
                ("shuffles", is_integer(self.shuffles) and self.shuffles >= 10, "an integer >= 10"),
                (
                    "topic_facet",
                    isinstance(self.topic_facet, str)
                    and (self.topic_facet == "category" or self.topic_facet.startswith("meta.")),
                    "'category' or 'meta.FIELD'",
                ),
                ("topic_sizes", _sizes_ok(self.topic_sizes), "comma-separated integers >= 5, e.g. 30,100"),
                (
                    "topic_repeats",
                    is_integer(self.topic_repeats) and self.topic_repeats >= 0,
                    "an integer >= 0 (0 skips the planted topics)",
                ),
            ),
        )
