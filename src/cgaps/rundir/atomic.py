"""Atomic writes and checked reads of the run's files (Parquet, JSON, text).

The one atomic-write rule of the project lives here: a killed writer leaves the old file or none.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from cgaps.errors import CGapsError
from cgaps.rundir.schemas import TABLES, TableSchema, check_read, check_written


@contextlib.contextmanager
def naming_errors(path: str | Path) -> Iterator[None]:
    """Operating-system errors raised inside the block name ``path``: a full disk reaches the
    user as ``items.parquet: No space left on device``, not as pyarrow's or a buffered write's
    error that names no file (or a temporary one). The error keeps its errno, so the command
    line still tells disk full from permissions (:func:`cgaps.cli.main.os_error_line`)."""
    try:
        yield
    except OSError as e:
        named = e.filename is not None and not str(e.filename).endswith(".tmp")
        if named or e.errno is None:
            raise
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    The one atomic-write rule of the project: a killed writer leaves the old file (or none),
    never half a new one, and its temporary file is removed. Write whatever format into the
    yielded path (Parquet, JSON, safetensors, a folder is not supported). An OS error while
    writing (a full disk, a read-only folder) names ``path`` (:func:`naming_errors`), and the old
    file is left as it was.
    """
    path = Path(path)
    with naming_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    # mkstemp creates 0600; run files are meant to be read by other tools and users
    umask = os.umask(0)
    os.umask(umask)
    try:
        with naming_errors(path):
            os.chmod(tmp, 0o666 & ~umask)
            yield Path(tmp)
            os.chmod(
                tmp, 0o666 & ~umask
            )  # again: some writers (safetensors) replace the file they were given
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# The key of the settings a table was computed with, in its Parquet schema metadata.
TABLE_CONFIG_KEY = b"cgaps.knobs"


def write_table(
    df: pd.DataFrame,
    path: str | Path,
    scoring_config: dict[str, Any] | None = None,
    *,
    schema: TableSchema | None = None,
) -> None:
    """Write a Parquet table atomically (a crash never leaves half a file behind).

    The table is checked against ``schema`` first (:func:`cgaps.rundir.schemas.check_written`:
    a :class:`TypeError` for a column the schema does not have, or of another type, before a
    byte is written); by default the schema is the one of the table named like the file
    (:data:`cgaps.rundir.schemas.TABLES`), so every run table is checked, and a file of another
    name (an extraction shard) is written as it is. The bytes are those of
    ``df.to_parquet(path, index=False)``.

    ``scoring_config`` (a JSON object) is stored in the file's schema metadata, so the table says how it
    was made even when the file beside it that would say so (run.json) was not updated: a
    multi-file write killed halfway cannot pair this table with another configuration.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    table = pa.Table.from_pandas(df, preserve_index=False)  # what DataFrame.to_parquet writes
    spec = schema if schema is not None else TABLES.get(path.name)
    if spec is not None:
        check_written(table.schema, spec, path)
    meta = dict(table.schema.metadata or {})
    if df.attrs:  # as DataFrame.to_parquet stores them
        meta[b"PANDAS_ATTRS"] = json.dumps(df.attrs).encode()
    if scoring_config is not None:
        meta[TABLE_CONFIG_KEY] = json.dumps(_nan_to_none(scoring_config)).encode()
    if meta != (table.schema.metadata or {}):
        table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_table_config(path: str | Path) -> dict[str, Any] | None:
    """The ``scoring_config`` :func:`write_table` stored in a Parquet file; None for a file without them
    (written by an older cgaps or another tool)."""
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception as e:  # pyarrow raises several unrelated types for a bad file
        raise CGapsError(
            f"{path}: not a readable Parquet file ({e}); rewrite it with pandas.DataFrame.to_parquet"
        ) from e
    raw = meta.get(TABLE_CONFIG_KEY)
    if raw is None:
        return None
    try:
        scoring_config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CGapsError(f"{path}: damaged settings in the schema metadata ({e}); rerun `cgaps score`") from e
    if not isinstance(scoring_config, dict):
        raise CGapsError(
            f"{path}: the settings in the schema metadata are not a JSON object; rerun `cgaps score`"
        )
    return scoring_config


def write_text(text: str, path: str | Path) -> None:
    """Write a UTF-8 text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(obj: Any, path: str | Path) -> None:
    """Write JSON atomically, NaN written as null."""
    write_text(json.dumps(_nan_to_none(obj), indent=2, sort_keys=False) + "\n", path)


def read_json_file(path: str | Path, fix: str) -> Any:
    """Read a JSON file this project wrote; a damaged one is a one-line error saying ``fix``."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise CGapsError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); {fix}") from e
    except json.JSONDecodeError as e:
        raise CGapsError(f"{path}: invalid JSON at line {e.lineno} ({e.msg}); {fix}") from e


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_nan_to_none(v) for v in obj]
    return obj


def read_table(path: str | Path, what: str) -> pd.DataFrame:
    """Read a Parquet table; ``what`` says how to create it when it is missing.

    A table of :data:`cgaps.rundir.schemas.TABLES` (by file name) has its column types checked
    on the file's schema before any row is read (:func:`cgaps.rundir.schemas.check_read`).
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise CGapsError(f"{path}: no such file; {what}")
    try:
        schema = pq.read_schema(path)
    except Exception as e:  # pyarrow raises several unrelated types for a bad file
        raise _unreadable(path, e) from e
    spec = TABLES.get(path.name)
    if spec is not None:
        check_read(schema, spec, path)
    try:
        return pd.read_parquet(path)
    except Exception as e:
        raise _unreadable(path, e) from e


def _unreadable(path: Path, e: Exception) -> CGapsError:
    return CGapsError(
        f"{path}: not a readable Parquet file ({e}); rewrite it with pandas.DataFrame.to_parquet"
    )


def clear_run(run_dir: str | Path) -> None:
    """Delete every file the stages write into a run directory (:data:`cgaps.stages.RUN_FILES`,
    working files included): ``cgaps run --force`` starts over; other files stay."""
    import shutil

    from cgaps.stages import RUN_FILES

    for name in RUN_FILES:
        path = Path(run_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
