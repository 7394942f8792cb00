"""``cgaps validate RUN_DIR``: null calibration, planted power and probe-family alignment into validation.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cgaps.cli._common import RunDirArg, options_from, section_config
from cgaps.validate.config import ValidateConfig


@options_from(ValidateConfig, over="run.json")
def validate(run_dir: Path = RunDirArg, *, options: dict[str, Any]) -> None:
    """Check that the run's gap calls can be trusted: null draws, planted gaps, planted topics, probe families.

    Examples:

        cgaps validate runs/p

        cgaps validate runs/p --null-draws 50 --topic-facet meta.level
    """
    from rich.table import Table

    from cgaps import rundir
    from cgaps.console import result
    from cgaps.validate.core import validate_run

    opts = section_config(run_dir, "validate", options)
    out = validate_run(run_dir, opts)
    null = out["null"]
    table = Table(title=f"{run_dir}: {rundir.VALIDATION}")
    table.add_column("check")
    table.add_column("figure", justify="right")
    table.add_row(
        f"null draws calling anything ({null['promise']})",
        f"{null['draws_with_calls']} of {null['draws']}",
    )
    for row in out["planted"]:
        if row["recall"] is not None:
            table.add_row(
                f"planted recall, support {row['support']}, accuracy drop {row['effect']}",
                f"{row['recall']:.2f} (+{row['other_weak_calls_per_draw']:.1f} co-firing calls)",
            )
    topics = out.get("topics") or {}
    for row in topics.get("sizes", []):
        share = row["top_pointing"]
        table.add_row(
            f"planted topics ({topics['facet']}), {row['per_group']} items per group: gap concepts + themes, "
            "share of the top 20 on a planted group",
            f"{row['weak_concepts']:.1f} + {row['weak_themes']:.1f}, "
            + ("—" if share is None else f"{share:.2f}")
            + f" (median {row['calls_median']:g}; ≥ 5 calls in {row['draws_with_5_calls']} of {row['n_draws']} draws)",
        )
    if out.get("power"):
        lines = out["power"].get("sentences", {}).get("ALL", [])
        table.add_row("what the data could have found (ALL)", " ".join(lines))
    fam = out["families"]
    if fam:
        for side in ("weak", "strong"):
            s = fam[side]
            if s.get("accuracy") is not None:
                table.add_row(
                    f"family accuracy where the {s['concepts']} {side} concepts' mass lands",
                    f"{s['accuracy']:.3f} (random sets {s['shuffled_mean']:.3f}, p = {s['p_shuffled']:.3f})",
                )
    result(table)
