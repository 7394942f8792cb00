"""``cgaps import FORMAT ...``: another tool's per-sample results as a run directory.

Sub-commands, one per format (:mod:`cgaps.importers`): ``lm-eval`` (lm-evaluation-harness
``--log_samples`` output), ``inspect`` (inspect-ai eval logs), ``table`` (any JSONL/CSV/Parquet
with a field map). Each writes ``items.parquet`` with responses and scores and ``run.json``;
``cgaps extract`` then reads the transcripts with the reader model (no generation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cgaps.cli._common import field_help
from cgaps.config import EMBEDDED, RunConfig

app = typer.Typer(
    name="import",
    help="Import another tool's per-sample results (lm-eval, inspect-ai, a table) as a run directory.",
    no_args_is_help=True,
)

OutOption = typer.Option(
    ..., "--out", help="Run directory to write items.parquet and run.json into.", file_okay=False
)
ForceOption = typer.Option(False, "--force", help="Replace a run already in --out.")
# The evaluated model wrote the responses; the reader (recorded as config.reader) reads them in
# `cgaps extract` (docs/method.md §2): by default the embedded SmolLM2 with its shipped SAE.
ReaderOption = typer.Option(
    EMBEDDED,
    "--reader",
    help="Reader model `cgaps extract` encodes the transcripts with (any --model value).",
)
SaeOption = typer.Option(EMBEDDED, "--sae", help=field_help(RunConfig, "sae"))


def _write(imported: Any, name: str, out: Path, reader: str, sae: str, force: bool) -> None:
    from cgaps.console import result
    from cgaps.importers import write_imported_run

    items = write_imported_run(out, imported, name=name, reader=reader, sae=sae, force=force)
    means = items.groupby("benchmark", sort=False)["score"].mean()
    result(
        f"wrote {len(items)} items to {out}: "
        + ", ".join(f"{k} {v:.4f}" for k, v in means.items())
        + f"; next: cgaps extract {out}"
    )


@app.command("lm-eval")
def lm_eval(
    paths: list[Path] = typer.Argument(
        ...,
        help="samples_<task>_<timestamp>.jsonl files, or the --output_path folder of lm_eval --log_samples.",
    ),
    out: Path = OutOption,
    metric: str | None = typer.Option(
        None,
        "--metric",
        help="Per-sample metric used as the score: a name for every task, or TASK=METRIC,... "
        "(default: each task's first metric).",
    ),
    filter_name: str | None = typer.Option(
        None, "--filter", help="Filter of tasks logged with several (default: the first in each file)."
    ),
    force: bool = ForceOption,
    reader: str = ReaderOption,
    sae: str = SaeOption,
) -> None:
    """Import lm-evaluation-harness per-sample logs (one item per sample, benchmark = task).

    Examples:

        cgaps import lm-eval results/ --out runs/mine

        cgaps import lm-eval results/ --out runs/mine --metric acc_norm
    """
    from cgaps.importers.lmeval import read_lm_eval

    imported = read_lm_eval(paths, metric, filter_name)
    _write(imported, ",".join(map(str, paths)), out, reader, sae, force)


@app.command("table")
def table(
    file: Path = typer.Argument(
        ..., help="A JSONL, JSON (list), CSV or Parquet file, one row per item.", dir_okay=False
    ),
    mapping: str = typer.Option(
        ...,
        "--map",
        help="item_id=PATH,prompt=PATH,response=PATH,score=PATH[,benchmark=PATH|'NAME'][,reference=PATH]"
        "[,category=PATH]; a PATH may be nested: question.stem, choices[0].text.",
    ),
    out: Path = OutOption,
    evaluated: str = typer.Option(
        "unknown", "--evaluated", help="Name of the model that wrote the responses."
    ),
    force: bool = ForceOption,
    reader: str = ReaderOption,
    sae: str = SaeOption,
) -> None:
    """Import any table of per-item prompts, responses and scores.

    Examples:

        cgaps import table answers.jsonl --out runs/mine --evaluated gpt-4o --map item_id=id,prompt=question,response=output,score=correct,benchmark='arc'
    """
    from cgaps.importers.table import read_table_import

    imported = read_table_import(file, mapping, evaluated)
    _write(imported, str(file), out, reader, sae, force)


@app.command("inspect")
def inspect_log(
    log: Path = typer.Argument(..., help="An inspect-ai eval log (.eval or .json)."),
    out: Path = OutOption,
    scorer: str | None = typer.Option(
        None, "--scorer", help="Scorer whose value is the score (default: the first)."
    ),
    skip_errors: bool = typer.Option(
        False,
        "--skip-errors",
        help="Import the samples that did not error and record how many did (default: refuse, naming them).",
    ),
    force: bool = ForceOption,
    reader: str = ReaderOption,
    sae: str = SaeOption,
) -> None:
    """Import an inspect-ai eval log through inspect's own log reader.

    Examples:

        cgaps import inspect logs/2025-01-01T00-00-00_task_X.eval --out runs/mine
    """
    from cgaps.importers.inspect_log import read_inspect

    imported = read_inspect(log, scorer, skip_errors=skip_errors)
    if imported.source.get("skipped_errors"):
        from cgaps.console import info

        skipped = imported.source["skipped_errors"]
        info(f"[yellow]skipped {len(skipped)} errored sample(s): {', '.join(skipped[:5])}")
    _write(imported, str(log), out, reader, sae, force)
