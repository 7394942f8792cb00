"""Any table of per-item results as a run directory (``cgaps import table FILE --map ...``).

The file (JSONL, a JSON list, CSV or Parquet, read by :func:`cgaps.items.sources.read_table_file`
so errors name the file and line) has one row per item; ``--map`` says where each item field
is: ``item_id=PATH,prompt=PATH,response=PATH,score=PATH`` and optionally ``benchmark``,
``reference`` and ``category``. A PATH is a field path of :func:`cgaps.items.custom.field_path`
(``question.stem``, ``question.choices[0].text``), so a file loads as its author published it.
``benchmark`` may instead be a quoted name (``benchmark='arc'``) for the whole file; without
it the benchmark is the file's stem. Scores must be numbers in [0, 1] (``true``/``false``
count as 1/0). The rest of each row is kept in ``meta`` (``{"row": ...}``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cgaps.errors import CGapsError, did_you_mean
from cgaps.importers import Imported, check_score, meta_json
from cgaps.items.custom import field_path, split_path
from cgaps.items.sources import Record, read_table_file

MAP_REQUIRED = ("item_id", "prompt", "response", "score")
MAP_OPTIONAL = ("benchmark", "reference", "category")
MAP_KEYS = MAP_REQUIRED + MAP_OPTIONAL
_MAP_EXAMPLE = "item_id=id,prompt=question.stem,response=output,score=correct[,benchmark='arc']"


def parse_map(text: str) -> dict[str, str]:
    """``key=path,...`` -> ``{key: path}``; unknown, repeated or missing keys are errors."""
    out: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise CGapsError(f"--map: {part.strip()!r} is not KEY=PATH; e.g. {_MAP_EXAMPLE}")
        if key not in MAP_KEYS:
            raise CGapsError(
                f"--map: unknown key {key!r}.{did_you_mean(key, MAP_KEYS)} Keys: {', '.join(MAP_KEYS)}"
            )
        if key in out:
            raise CGapsError(f"--map: key {key!r} is given twice")
        if not _is_literal(value):
            try:
                split_path(value)
            except CGapsError as e:
                raise CGapsError(f"--map {key}: {e}") from e
        out[key] = value
    missing = [k for k in MAP_REQUIRED if k not in out]
    if missing:
        raise CGapsError(
            f"--map: no {', '.join(missing)}; required: {', '.join(MAP_REQUIRED)} (e.g. {_MAP_EXAMPLE})"
        )
    for key in ("item_id", "prompt", "response", "score", "reference", "category"):
        if key in out and _is_literal(out[key]):
            raise CGapsError(f"--map {key}: a quoted name is only allowed for benchmark; give a field path")
    return out


def _is_literal(value: str) -> bool:
    return len(value) >= 2 and value[0] == value[-1] and value[0] in "'\""


def _text(value: Any, where: str, key: str, path: str) -> str:
    if isinstance(value, list | dict):
        raise CGapsError(
            f"{where}: field {path!r} (--map {key}) is a {type(value).__name__}, not text; map {key} to a text field"
        )
    return "" if value is None else str(value)


def _plain(value: Any) -> Any:
    """Parquet cells (numpy arrays and scalars) as JSON-able Python values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def read_table_import(path: str | Path, mapping: str, evaluated: str = "unknown") -> Imported:
    """Every row of ``path`` as a scored item, by the ``--map`` ``mapping``."""
    path = Path(path)
    fields = parse_map(mapping)
    if not path.is_file():
        raise CGapsError(f"{path}: no such file; give a JSONL, JSON, CSV or Parquet file")
    bench = fields.get("benchmark")
    out = Imported(rows=[], evaluated=evaluated)
    for rec in read_table_file(path):

        def get(key: str, rec: Record = rec) -> str:
            return _text(field_path(rec, fields[key]), rec.where, key, fields[key])

        if bench is None:
            benchmark = path.stem
        elif _is_literal(bench):
            benchmark = bench[1:-1]
        else:
            benchmark = get("benchmark")
        item_id = get("item_id")
        if not item_id.strip():
            raise rec.fail(fields["item_id"], "is blank; every item needs an id")
        raw_score = field_path(rec, fields["score"])
        if isinstance(raw_score, str) and raw_score.strip().lower() in ("true", "false"):
            raw_score = raw_score.strip().lower() == "true"
        if item_id in out.where:
            raise CGapsError(
                f"{rec.where}: field {fields['item_id']!r} (--map item_id) {item_id!r} appears twice "
                f"(first at {out.where[item_id]}); every item needs its own id"
            )
        out.where[item_id] = rec.where
        out.rows.append(
            {
                "item_id": item_id,
                "benchmark": benchmark,
                "prompt": get("prompt"),
                "reference": get("reference") if "reference" in fields else "",
                "response": get("response"),
                "score": check_score(raw_score, rec.where, fields["score"]),
                "category": get("category") if "category" in fields else "",
                "meta": meta_json({"row": _plain(rec.row)}),
            }
        )
    out.source = {"format": "table", "file": str(path), "map": fields}
    return out
