"""``cgaps label RUN_DIR``: concept labels and themes (docs/method.md §5) into labels.parquet and
themes.parquet.

Only typer, the standard library and the light option module load at import time (``cgaps
--help`` stays instant); the stage, pandas and torch load inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cgaps.cli._common import RunDirArg, options_from, section_config
from cgaps.labels.config import LabelConfig


@options_from(LabelConfig, over="run.json")
def label(run_dir: Path = RunDirArg, *, options: dict[str, Any]) -> None:
    """Say what each concept is: distinctive tokens, output tokens, where its mass falls among the items' metadata, imported or LLM labels, and themes of similar concepts with their own gap test.

    Examples:

        cgaps label runs/p

        cgaps label runs/p --labels-file explanations.jsonl.gz

        cgaps label runs/p --labeler http://127.0.0.1:8080/v1 --labeler-model qwen --llm-concepts 20
    """
    from rich.table import Table

    from cgaps import rundir
    from cgaps.console import result
    from cgaps.labels.stage import THEMES, label_run

    opts = section_config(run_dir, "label", options)  # a bad value is a one-line error naming the option
    label_run(run_dir, opts)
    import pandas as pd

    themes = pd.read_parquet(Path(run_dir) / THEMES)
    rows = themes[(themes["scope"] == rundir.ALL_SCOPE) & themes["gap"].isin(["weak", "strong"])].head(10)
    table = Table(title=f"{run_dir}: first gap and strength themes")
    for col in ("theme", "call", "members", "χ_model", "expected", "label"):
        table.add_column(col, justify="left" if col in ("call", "label") else "right")
    for r in rows.itertuples(index=False):
        table.add_row(
            str(r.theme),
            str(r.gap),
            str(r.n_members),
            f"{r.chi_model:.3f}",
            f"{r.expected:.3f}",
            str(r.label),
        )
    result(table)
