"""Reading benchmark files into records that remember where they came from.

Every loader works on :class:`Record` s: one source row (a JSON line, a CSV row, a JSON file,
a hub row) plus ``where``, the place to name in an error (``path:line`` or
``hf://repo/split:row``). Local files and hub datasets are both turned into records here,
and the benchmark parsers in :mod:`cgaps.items.paper` never see the difference; that
is what keeps the offline path (tested) and the hub path (not testable offline) one path.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cgaps.errors import CGapsError


@dataclass(frozen=True)
class Record:
    row: dict[str, Any]
    where: str  # "file:line" or "hf://repo/split:row", for error messages

    def get(self, field: str, types: type | tuple[type, ...] = object) -> Any:
        """The value of a required field, or an error naming file, line and field."""
        if field not in self.row or self.row[field] is None:
            raise CGapsError(
                f"{self.where}: missing field {field!r}; fields present: {', '.join(map(str, self.row))}"
            )
        value = self.row[field]
        if not isinstance(value, types):
            names = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
            raise CGapsError(
                f"{self.where}: field {field!r} should be {names}, got {type(value).__name__} {value!r:.60}"
            )
        return value

    def fail(self, field: str, problem: str) -> CGapsError:
        return CGapsError(f"{self.where}: field {field!r} {problem}")


def require_file(path: Path, hint: str) -> Path:
    if not path.exists():
        raise CGapsError(f"{path}: no such file; {hint}")
    return path


_NOT_UTF8 = "save the file as UTF-8"


@contextmanager
def _utf8(path: Path) -> Iterator[None]:
    """Turn a decoding error while reading ``path`` into a one-line error naming the file."""
    try:
        yield
    except UnicodeDecodeError as e:
        raise CGapsError(f"{path}: not UTF-8 text ({e.reason}); {_NOT_UTF8}") from e


def read_jsonl(path: Path) -> Iterator[Record]:
    """One record per non-blank line; a bad line is an error naming the file and line."""
    with open(path, "rb") as f:  # bytes, so that a line that is not UTF-8 is named exactly
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CGapsError(
                    f"{path}:{lineno}: not UTF-8 text ({e.reason} at column {e.start + 1}); {_NOT_UTF8}"
                ) from e
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise CGapsError(
                    f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno}); fix or delete that line"
                ) from e
            if not isinstance(row, dict):
                raise CGapsError(
                    f"{path}:{lineno}: expected a JSON object per line, got {type(row).__name__}"
                )
            yield Record(row, f"{path}:{lineno}")


def _load_json(path: Path) -> Any:
    """A whole JSON file; a syntax error names the file and line."""
    from cgaps.rundir import read_json_file

    return read_json_file(path, "fix the file, or fetch the original again")


def read_json(path: Path) -> Record:
    """A whole JSON file as one record (MATH problems, LogicBench axiom files)."""
    row = _load_json(path)
    if not isinstance(row, dict):
        raise CGapsError(f"{path}: expected a JSON object at the top level")
    return Record(row, str(path))


def read_csv(path: Path) -> Iterator[Record]:
    """CSV with a header; ``where`` is the physical line where the row starts (header = line 1)."""
    with open(path, encoding="utf-8", newline="") as f, _utf8(path):
        reader = csv.DictReader(f)
        start = reader.line_num + 1
        for row in reader:
            # None keys/values come from ragged rows: report them rather than guess.
            if None in row or None in row.values():
                raise CGapsError(
                    f"{path}:{start}: row has {'more' if None in row else 'fewer'} cells than the header"
                )
            yield Record(dict(row), f"{path}:{start}")
            start = reader.line_num + 1


def read_lines(path: Path) -> list[tuple[str, str]]:
    """Non-blank lines with their ``file:line`` (label files such as SocialIQA's dev-labels.lst)."""
    with open(path, encoding="utf-8") as f, _utf8(path):
        return [(line.strip(), f"{path}:{n}") for n, line in enumerate(f, 1) if line.strip()]


def read_table_file(path: Path) -> Iterator[Record]:
    """JSONL, JSON (a list of objects), CSV or Parquet, chosen by extension (custom benchmarks)."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from read_jsonl(path)
    elif suffix == ".csv":
        yield from read_csv(path)
    elif suffix == ".json":
        rows = _load_json(path)
        if not isinstance(rows, list):
            raise CGapsError(f"{path}: expected a JSON list of objects (or use .jsonl, one object per line)")
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise CGapsError(f"{path}: element {i} is not a JSON object")
            yield Record(row, f"{path}: element {i}")
    elif suffix in (".parquet", ".pq"):
        import pandas as pd

        try:
            table = pd.read_parquet(path)
        except Exception as e:  # pyarrow raises several unrelated types for a bad file
            raise CGapsError(f"{path}: not a readable Parquet file ({' '.join(str(e).split())[:200]})") from e
        for i, row in enumerate(table.to_dict("records")):
            yield Record(row, f"{path}: row {i}")
    else:
        raise CGapsError(f"{path}: unknown data format {suffix!r}; use .jsonl, .json, .csv or .parquet")


def download(urls: dict[str, str]) -> dict[str, Path]:
    """Fetch original files into the ``datasets`` cache; the local readers then read them.

    Used for benchmarks whose hub copies changed the original fields: the files at the
    MANIFEST's commit, cached by ``datasets``, go through exactly the offline code path.
    """
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a dependency
        raise CGapsError(
            "downloading benchmark files needs the 'datasets' package: pip install datasets"
        ) from e
    try:
        paths = datasets.DownloadManager().download(urls)
    except Exception as e:  # connection and HTTP errors come in many types
        raise CGapsError(
            f"could not download {next(iter(urls.values()))} and {len(urls) - 1} more ({type(e).__name__}: {e}); "
            "check the connection, or pass --data-dir with the original files"
        ) from e
    return {k: Path(v) for k, v in paths.items()}


def hub_records(repo: str, config: str | None, split: str, **kwargs: Any) -> Iterator[Record]:
    """Rows of a Hugging Face dataset (needs internet the first time; cached afterwards)."""
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a dependency
        raise CGapsError("loading from the hub needs the 'datasets' package: pip install datasets") from e
    try:
        ds = datasets.load_dataset(repo, config, split=split, **kwargs)
    except Exception as e:  # network, auth and missing-config errors all land here
        raise CGapsError(
            f"hf://{repo} ({config or 'default'}, {split}): could not load ({type(e).__name__}: {e}); "
            "check the connection, or pass --data-dir with the original files"
        ) from e
    name = repo if repo not in ("json", "csv") else str(kwargs.get("data_files"))
    for i, row in enumerate(ds):
        yield Record(dict(row), f"hf://{name}/{split}:{i}")
