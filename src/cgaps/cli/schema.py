"""``cgaps schema [FILE]``: what each file of a run directory holds, from the schemas the code checks.

Like inspect-ai's ``inspect log schema``: one source (:mod:`cgaps.rundir.schemas`, whose typed
schemas the writers and readers check), shown on demand. Without an argument, one line per
file; with a file, each column (or run.json key) with its type, presence, writer and meaning.
Plain aligned lines, readable in a log and by grep; ``--json`` for programs. Reads no run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import typer

_PRESENCE = {"required": "required", "scored": "after evaluation", "optional": "optional"}


def schema(
    file: str | None = typer.Argument(
        None,
        help="A run file: a table (items, items.parquet, saliency, concepts...), run.json, or another file.",
        show_default=False,
        metavar="FILE",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead."),
) -> None:
    """Print the run directory's files, or the columns of one table (name, type, presence, meaning).

    Examples:

        cgaps schema

        cgaps schema items

        cgaps schema run.json

        cgaps schema concepts --json
    """
    import json

    from cgaps.console import result
    from cgaps.rundir import schemas

    described: Any = (
        [schemas.describe(f) for f in schemas.file_names()]
        if file is None
        else schemas.describe(schemas.find_file(file))
    )
    if as_json:
        result(json.dumps(described, indent=2, ensure_ascii=False))
        return
    if file is None:
        rows = [(d["file"], d["written_by"], _summary(d)) for d in described]
        lines = _aligned(("file", "written by", "what it holds"), rows)
    else:
        d = described
        lines = [f"{d['file']}: {_summary(d)}; written by {d['written_by']}"]
        if d["kind"] == "table":
            header = ("column", "type", "presence", "written by", "description")
            cols = d["columns"]
            lines += _aligned(
                header,
                [
                    (c["name"], c["type"], _PRESENCE[c["presence"]], c["written_by"], c["description"])
                    for c in cols
                ],
            )
        elif "keys" in d:
            lines += _aligned(
                ("key", "type", "description"), [(k["name"], k["type"], k["description"]) for k in d["keys"]]
            )
    for line in lines:
        result(line)


def _summary(d: dict[str, Any]) -> str:
    if d["kind"] != "table":
        return str(d["description"])
    return f"one row per {d['row']}; {len(d['columns'])} columns, other columns {d['other_columns']}"


def _aligned(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell; the last one (it may be long) as it is."""
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    return ["  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]]) for r in table]
