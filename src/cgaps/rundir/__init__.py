"""The run directory (docs/method.md §6), one module per concern.

A run directory is the contract between stages: each stage reads what earlier stages wrote and
writes its own files, so any stage can be rerun or replaced by another tool. Every read
validates its table and fails with a :class:`~cgaps.errors.CGapsError` that names the file, the
field and the fix.

| module | what it holds |
| --- | --- |
| :mod:`~cgaps.rundir.names` | the files' fixed names, the whole-suite scope, the rules for names and ids |
| :mod:`~cgaps.rundir.atomic` | atomic writes and checked reads of Parquet, JSON and text |
| :mod:`~cgaps.rundir.runjson` | ``run.json``: its documented keys, the checked reader, the merging writer |
| :mod:`~cgaps.rundir.schemas` | every table's typed schema (a description per column), the column tuples, the type checks of writers and readers |
| :mod:`~cgaps.rundir.tables` | the validating readers of items and saliency |
| :mod:`~cgaps.rundir.provenance` | digests of what a stage read, recorded in run.json ``inputs`` |
| :mod:`~cgaps.rundir.lock` | one writer at a time: the advisory lock on the directory |
| :mod:`~cgaps.rundir.places` | where a command may write: never inside another run's directory |

The names below are re-exported so that callers write ``rundir.ITEMS`` or ``rundir.writing``
without knowing which concern holds them.
"""

from cgaps.rundir.atomic import (
    TABLE_CONFIG_KEY,
    atomic_path,
    clear_run,
    naming_errors,
    read_json_file,
    read_table,
    read_table_config,
    write_json,
    write_table,
    write_text,
)
from cgaps.rundir.lock import LOCK, remove_stale_temporaries, writing
from cgaps.rundir.names import (
    ALL_SCOPE,
    CONCEPTS,
    CONFIRM_DIR,
    CONFIRMATION,
    CONTEXTS,
    CONTROL_CHARS,
    ITEMS,
    LABELS,
    LABELS_LLM_CACHE,
    MAX_NAME,
    OPTION_LOGLIKS,
    OVERLAP,
    REPORT,
    RESPONSES_PARTIAL,
    RESPONSES_SETTINGS,
    ROBUSTNESS,
    RUN_FILES,
    RUN_JSON,
    SALIENCY,
    SALIENCY_SHARDS,
    SCHEMA_VERSION,
    THEME_TESTS,
    THEMES,
    VALIDATION,
)
from cgaps.rundir.places import check_output, is_run_dir, run_root
from cgaps.rundir.provenance import (
    STAGE_INPUTS,
    file_digest,
    items_digest,
    mark_stale,
    record_completion,
    stage_check,
    stage_is_current,
    stage_record,
)
from cgaps.rundir.runjson import RUN_JSON_KEYS, RunJson, n_concepts, read_run_json, update_run_json
from cgaps.rundir.schemas import (
    CONCEPT_COLUMNS,
    CONTEXT_COLUMNS,
    ENRICH_COLUMNS,
    ITEM_COLUMNS,
    ITEM_OPTIONAL,
    ITEM_REQUIRED,
    ITEM_SCORED,
    LABEL_COLUMNS,
    OVERLAP_COLUMNS,
    SALIENCY_COLUMNS,
    TABLES,
    TableSchema,
    columns,
    table_schema,
)
from cgaps.rundir.tables import (
    read_items,
    read_saliency,
    validate_items,
    validate_saliency,
)

__all__ = [
    "ALL_SCOPE",
    "CONCEPTS",
    "CONFIRM_DIR",
    "CONFIRMATION",
    "CONCEPT_COLUMNS",
    "CONTEXTS",
    "CONTEXT_COLUMNS",
    "CONTROL_CHARS",
    "ENRICH_COLUMNS",
    "ITEMS",
    "ITEM_COLUMNS",
    "ITEM_OPTIONAL",
    "ITEM_REQUIRED",
    "ITEM_SCORED",
    "LABELS",
    "LABELS_LLM_CACHE",
    "LABEL_COLUMNS",
    "LOCK",
    "MAX_NAME",
    "OPTION_LOGLIKS",
    "OVERLAP",
    "OVERLAP_COLUMNS",
    "REPORT",
    "RESPONSES_PARTIAL",
    "RESPONSES_SETTINGS",
    "ROBUSTNESS",
    "RUN_FILES",
    "RUN_JSON",
    "RUN_JSON_KEYS",
    "SALIENCY",
    "SALIENCY_COLUMNS",
    "SALIENCY_SHARDS",
    "SCHEMA_VERSION",
    "STAGE_INPUTS",
    "TABLES",
    "TABLE_CONFIG_KEY",
    "THEME_TESTS",
    "THEMES",
    "VALIDATION",
    "RunJson",
    "TableSchema",
    "columns",
    "atomic_path",
    "check_output",
    "clear_run",
    "file_digest",
    "is_run_dir",
    "items_digest",
    "mark_stale",
    "n_concepts",
    "naming_errors",
    "read_items",
    "read_json_file",
    "read_run_json",
    "read_saliency",
    "read_table",
    "read_table_config",
    "record_completion",
    "remove_stale_temporaries",
    "run_root",
    "stage_check",
    "stage_is_current",
    "stage_record",
    "table_schema",
    "update_run_json",
    "validate_items",
    "validate_saliency",
    "write_json",
    "write_table",
    "write_text",
    "writing",
]
