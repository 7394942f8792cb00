"""Where ``cgaps fill`` and ``cgaps confirm`` take items from: the options of a pool.

Imports only the standard library and :mod:`cgaps.config`, so ``cgaps --help`` stays instant.
"""

from __future__ import annotations

from dataclasses import dataclass

from cgaps.config_fields import check_options, documented, is_integer


@dataclass(frozen=True)
class PoolConfig:
    """The pool (docs/method.md §7) and the optional generated items."""

    pool: str | None = documented(
        None,
        "Where the items come from: a run directory, a suite name, comma-separated benchmark names, "
        "or a benchmark spec file (as `cgaps items` reads them).",
    )
    data_dir: str | None = documented(
        None, "Folder with the benchmarks' original files, for a pool named by suite or benchmark."
    )
    pool_limit: int | None = documented(
        None, "At most this many items per pool benchmark (seeded sample; suites and spec files only)."
    )
    generator: str | None = documented(
        None,
        "Also draft items with a served model, openai://HOST:PORT/v1/MODEL, targeting each concept; "
        "only drafts on which the concept is present and whose answer checks are kept.",
    )
    drafts: int = documented(4, "Drafts asked of the generator per targeted concept.")
    generate_concepts: int = documented(20, "At most this many concepts get generated drafts.")

    def __post_init__(self) -> None:
        check_options(
            "pool",
            self,
            (
                (
                    "pool_limit",
                    self.pool_limit is None or (is_integer(self.pool_limit) and self.pool_limit >= 1),
                    "an integer >= 1",
                ),
                ("drafts", is_integer(self.drafts) and self.drafts >= 1, "an integer >= 1"),
                (
                    "generate_concepts",
                    is_integer(self.generate_concepts) and self.generate_concepts >= 1,
                    "an integer >= 1",
                ),
                (
                    "generator",
                    self.generator is None or self.generator.startswith("openai://"),
                    "an openai://HOST:PORT/v1/MODEL address",
                ),
            ),
        )
