"""The run directory: fixed file names, table schemas, validated reads and atomic writes.

A run directory is the contract between stages (docs/method.md §6): each stage reads
what earlier stages wrote and writes its own files, so any stage can be rerun or
replaced by another tool. Every read validates its table and fails with a
:class:`~cgaps.errors.CGapsError` that names the file, the field and the fix.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict, Unpack

import numpy as np
import pandas as pd

from cgaps.errors import CGapsError, did_you_mean

SCHEMA_VERSION = 1

RUN_JSON = "run.json"
ITEMS = "items.parquet"
SALIENCY = "saliency.parquet"
SALIENCY_SHARDS = "saliency_shards"
CONCEPTS = "concepts.parquet"
LABELS = "labels.parquet"
OVERLAP = "overlap.parquet"
ROBUSTNESS = "robustness.json"
VALIDATION = "validation.json"  # written by `cgaps validate`
REPORT = "report.html"
CONTEXTS = "contexts.parquet"  # top activating contexts per concept (written by `cgaps extract`)
RESPONSES_PARTIAL = "responses.partial.jsonl"
RESPONSES_SETTINGS = Path(RESPONSES_PARTIAL).with_suffix(".json").name  # the settings signature beside it
OPTION_LOGLIKS = "option_logliks.parquet"  # every option's log-likelihood (docs/benchmarks.md)
THEMES = "themes.parquet"  # concept themes (written by `cgaps label`, cgaps.labels.themes)
LABELS_LLM_CACHE = "labels_llm_cache.jsonl"  # auto-interp answers, resumable (cgaps.labels.autointerp)

# Everything the stages write into a run directory, working files included: `cgaps run --force`
# deletes exactly these to start over (a file missing here would survive into the new run).
RUN_FILES = (
    RUN_JSON,
    ITEMS,
    RESPONSES_PARTIAL,
    RESPONSES_SETTINGS,
    OPTION_LOGLIKS,
    SALIENCY,
    SALIENCY_SHARDS,  # a folder
    CONTEXTS,
    LABELS,
    THEMES,
    LABELS_LLM_CACHE,
    CONCEPTS,
    OVERLAP,
    ROBUSTNESS,
    VALIDATION,
    REPORT,
)

ALL_SCOPE = "ALL"

# items.parquet: what every item has, what evaluation adds, and what is optional.
ITEM_REQUIRED = ("item_id", "benchmark", "prompt", "reference")
ITEM_SCORED = ("response", "score")
ITEM_OPTIONAL = (
    "messages",  # JSON list of {role, content}; overrides `prompt` for multi-turn items
    "answer_type",  # grader key (see cgaps.evaluate.grade)
    "choices",  # JSON list of option strings, for log-likelihood scoring
    "category",  # sub-category for display (subject, family, axiom...)
    "meta",  # JSON object with anything else (gold aliases, bias metadata...)
)
ITEM_COLUMNS = ITEM_REQUIRED + ITEM_SCORED + ITEM_OPTIONAL
# Benchmark names and item ids: at most this many characters, and no control characters (they
# are printed in messages, tables and HTML; a 10 MB name or an ESC sequence must not get there).
MAX_NAME = 200
_CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f]")

SALIENCY_COLUMNS = ("item_id", "concept", "value")

CONCEPT_COLUMNS = (
    "concept",
    "scope",
    "support",
    "chi_bench",
    "chi_bench_raw",
    "chi_model",
    "expected",
    "n_eff",
    "ci_low",
    "ci_high",
    "status",
    "gap",
    "q_value",
)
LABEL_COLUMNS = ("concept", "label", "source")
OVERLAP_COLUMNS = ("a", "b", "jaccard", "spearman_chi_model", "spearman_chi_bench")
# The firing token of a top context is `token`; `left` / `right` are the text around it.
CONTEXT_COLUMNS = ("concept", "rank", "item_id", "value", "left", "token", "right")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    The one atomic-write rule of the project: a killed writer leaves the old file (or none),
    never half a new one, and its temporary file is removed. Write whatever format into the
    yielded path (Parquet, JSON, safetensors, a folder is not supported).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    # mkstemp creates 0600; run files are meant to be read by other tools and users
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # again: some writers (safetensors) replace the file they were given
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# The key of the settings a table was computed with, in its Parquet schema metadata.
TABLE_KNOBS_KEY = b"cgaps.knobs"


def write_table(df: pd.DataFrame, path: str | Path, knobs: dict[str, Any] | None = None) -> None:
    """Write a Parquet table atomically (a crash never leaves half a file behind).

    ``knobs`` (a JSON object) is stored in the file's schema metadata, so the table says how it
    was made even when the file beside it that would say so (run.json) was not updated: a
    multi-file write killed halfway cannot pair this table with another configuration.
    """
    with atomic_path(path) as tmp:
        if knobs is None:
            df.to_parquet(tmp, index=False)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
            meta = {
                **(table.schema.metadata or {}),
                TABLE_KNOBS_KEY: json.dumps(_nan_to_none(knobs)).encode(),
            }
            pq.write_table(table.replace_schema_metadata(meta), tmp)


def read_table_knobs(path: str | Path) -> dict[str, Any] | None:
    """The ``knobs`` :func:`write_table` stored in a Parquet file; None for a file without them
    (written by an older cgaps or another tool)."""
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception as e:  # pyarrow raises several unrelated types for a bad file
        raise CGapsError(
            f"{path}: not a readable Parquet file ({e}); rewrite it with pandas.DataFrame.to_parquet"
        ) from e
    raw = meta.get(TABLE_KNOBS_KEY)
    if raw is None:
        return None
    try:
        knobs = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CGapsError(f"{path}: damaged settings in the schema metadata ({e}); rerun `cgaps score`") from e
    if not isinstance(knobs, dict):
        raise CGapsError(
            f"{path}: the settings in the schema metadata are not a JSON object; rerun `cgaps score`"
        )
    return knobs


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
    path = Path(path)
    if not path.exists():
        raise CGapsError(f"{path}: no such file; {what}")
    try:
        return pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several unrelated types for a bad file
        raise CGapsError(
            f"{path}: not a readable Parquet file ({e}); rewrite it with pandas.DataFrame.to_parquet"
        ) from e


# ---------------------------------------------------------------- run.json


class RunJson(TypedDict, total=False):
    """The top-level keys of ``run.json`` (docs/method.md section 6).

    Every stage merges its keys in with :func:`update_run_json` (dictionaries one level
    deep), so the file says how each table was made; a key is absent until the stage that
    writes it has run. A new key is added here, with its documentation, before any stage
    writes it: :func:`update_run_json` refuses others, :func:`read_run_json` names them.
    """

    schema_version: int
    """The run-directory format (:data:`SCHEMA_VERSION`); a reader refuses another version."""
    n_concepts: int
    """The SAE width F (written by ``extract``); required by ``score``, ``robustness`` and ``report``."""
    config: dict[str, Any]
    """The resolved :class:`~cgaps.config.RunConfig` fields; ``items`` writes the item fields,
    ``score`` the scoring knobs it used, ``extract`` the layer it resolved."""
    model: dict[str, Any]
    """Model names as loaded: ``evaluated`` (by ``evaluate``) and ``reader`` (by ``extract``), and
    beside each (``evaluated_loaded``, ``reader_loaded``) what was really loaded
    (:func:`cgaps.models.loading.describe_load`): the argument, the GGUF file with its
    quantisation and the dtype it was de-quantised to (or the folder, or the hub revision), and
    the dtype and device the model ran in."""
    sae: dict[str, Any]
    """The SAE ``extract`` used: ``id``, ``fingerprint`` (of its weights), ``width``, ``layer``, ``hook_name``."""
    counts: dict[str, Any]
    """Items per benchmark, graded and scored items, saliency rows, analysed and dropped tokens,
    firing concepts, gap counts: each stage adds its own."""
    accuracy: dict[str, Any]
    """Per benchmark, ``{"n": items, "mean": mean score}`` (written by ``evaluate``)."""
    timings: dict[str, Any]
    """Seconds per stage (``evaluate_s``, ``extract_s``, ``pipeline_score_s``...)."""
    versions: dict[str, Any]
    """Optional: versions of the software that wrote the run, ``{name: version}``."""
    imported: dict[str, Any]
    """Written by ``cgaps import`` instead of ``evaluate``: where the responses and scores came
    from (``format`` lm-eval / inspect / table, ``files``, the chosen ``metric`` or scorer, the
    harness's own per-task means beside ours); ``model.evaluated`` names the model that answered."""
    inputs: dict[str, Any]
    """Per stage (``evaluate``, ``extract``, ``score``), ``{"columns": [...], "digest": "...",
    "by_column": {...}}`` (``score`` also ``"files"``: the saliency's digest): the item columns
    it used and their :func:`items_digest` (:func:`stage_record`), written when the stage
    completes; ``{"stale": reason}`` once new items made its output stale (:func:`mark_stale`).
    The pipeline reruns a stage whose digest no longer matches; ``cgaps status`` shows why."""


RUN_JSON_KEYS = tuple(RunJson.__annotations__)
# the keys whose value is a JSON object (merged one level deep by update_run_json)
_RUN_JSON_OBJECTS = tuple(k for k in RUN_JSON_KEYS if k not in ("schema_version", "n_concepts"))


def read_run_json(run_dir: str | Path) -> dict[str, Any]:
    """Read and check ``run.json`` against :class:`RunJson`: its keys, their types, the schema version.

    ``n_concepts`` is checked where it is needed (:func:`n_concepts`): a run has none before
    extraction. The result is a plain dict (what the readers of single keys want).
    """
    path = Path(run_dir) / RUN_JSON
    if not path.exists():
        raise CGapsError(
            f"{path}: no such file; create the run with `cgaps items` or `cgaps run CONFIG.yaml`"
        )
    meta = read_json_file(path, "restore it, or rebuild the run with `cgaps run CONFIG.yaml --force`")
    if not isinstance(meta, dict):
        raise CGapsError(f"{path}: expected a JSON object at the top level")
    version = meta.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise CGapsError(
            f"{path}: field 'schema_version' is {version!r} but this cgaps reads schema {SCHEMA_VERSION}; "
            "rerun the pipeline into a new directory with this version (`cgaps run CONFIG.yaml`)"
        )
    for key, value in meta.items():
        if key not in RUN_JSON_KEYS:
            raise CGapsError(
                f"{path}: unknown key {key!r}.{did_you_mean(key, RUN_JSON_KEYS)} Known keys: {', '.join(RUN_JSON_KEYS)}"
            )
        if key in _RUN_JSON_OBJECTS and not isinstance(value, dict):
            raise CGapsError(
                f"{path}: key {key!r} must be a JSON object, got {type(value).__name__}; "
                "restore it, or rebuild the run with `cgaps run CONFIG.yaml --force`"
            )
    return meta


def update_run_json(run_dir: str | Path, **fields: Unpack[RunJson]) -> dict[str, Any]:
    """Merge ``fields`` into ``run.json`` (JSON objects merged one level deep) and write it back.

    An unknown key is a bug in the caller (TypeError): document it in :class:`RunJson` first.
    """
    unknown = [k for k in fields if k not in RUN_JSON_KEYS]
    if unknown:
        raise TypeError(f"run.json has no key(s) {', '.join(unknown)}; add them to rundir.RunJson")
    path = Path(run_dir) / RUN_JSON
    meta: dict[str, Any] = read_run_json(run_dir) if path.exists() else {"schema_version": SCHEMA_VERSION}
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(meta.get(key), dict):
            meta[key] = {**meta[key], **value}
        else:
            meta[key] = value
    meta["schema_version"] = SCHEMA_VERSION
    write_json(meta, path)
    return meta


def n_concepts(meta: dict[str, Any], run_dir: str | Path) -> int:
    value = meta.get("n_concepts")
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise CGapsError(
            f"{Path(run_dir) / RUN_JSON}: field 'n_concepts' must be a positive integer (the SAE width), "
            f"got {value!r}; run `cgaps extract` or add it by hand"
        )
    return value


# ---------------------------------------------------------------- items


def validate_items(df: pd.DataFrame, path: str | Path, *, scored: bool = False) -> pd.DataFrame:
    """Check an items table; return it with canonical dtypes.

    ``scored`` also requires ``response`` and ``score`` with every score in [0, 1].
    """
    path = Path(path)
    missing = [c for c in ITEM_REQUIRED + (ITEM_SCORED if scored else ()) if c not in df.columns]
    if missing:
        hint = " (run `cgaps evaluate` or `cgaps grade` first)" if set(missing) <= set(ITEM_SCORED) else ""
        raise CGapsError(
            f"{path}: missing column(s) {', '.join(missing)}{hint}; required: {', '.join(ITEM_REQUIRED)}"
        )
    extra = [c for c in df.columns if c not in ITEM_COLUMNS]
    if extra:
        raise CGapsError(
            f"{path}: unknown column(s) {', '.join(map(str, extra))}; allowed: {', '.join(ITEM_COLUMNS)} "
            "(put other metadata into the JSON column 'meta')"
        )
    if len(df) == 0:
        raise CGapsError(f"{path}: the items table is empty; a suite needs at least one item per benchmark")
    df = df.copy()
    for col in ("item_id", "benchmark"):
        if df[col].isna().any():
            row = int(df[col].isna().to_numpy().nonzero()[0][0])
            raise CGapsError(f"{path}: row {row}: field '{col}' is empty; every item needs one")
        df[col] = df[col].astype(str)
    for col in ("item_id", "benchmark"):  # checked before anything prints a name or an id
        lengths = df[col].str.len()
        if (lengths > MAX_NAME).any():
            row = int((lengths > MAX_NAME).to_numpy().nonzero()[0][0])
            raise CGapsError(
                f"{path}: row {row}: field '{col}' is {int(lengths.iloc[row]):,} characters long; "
                f"names and ids have at most {MAX_NAME}"
            )
        controls = df[col].str.contains(_CONTROL_CHARS, regex=True)
        if controls.any():
            row = int(controls.to_numpy().nonzero()[0][0])
            raise CGapsError(
                f"{path}: row {row}: field '{col}' holds a control character "
                f"({_CONTROL_CHARS.sub('?', df[col].iloc[row])!r}); names and ids are printable text"
            )
    empty_bench = df["benchmark"].str.strip() == ""
    if empty_bench.any():
        row = int(empty_bench.to_numpy().nonzero()[0][0])
        raise CGapsError(
            f"{path}: row {row}: field 'benchmark' is blank; name the benchmark the item belongs to"
        )
    dup = df["item_id"].duplicated(keep=False)
    if dup.any():
        ids = df.loc[dup, "item_id"].unique()[:3]
        raise CGapsError(
            f"{path}: field 'item_id' has duplicates ({', '.join(map(repr, ids))}); item ids must be unique in the suite"
        )
    if ALL_SCOPE in set(df["benchmark"]):
        raise CGapsError(
            f"{path}: field 'benchmark' uses the reserved name {ALL_SCOPE!r}; rename that benchmark"
        )
    for col in ("prompt", "reference", "response"):
        if col in df.columns:
            df[col] = df[col].fillna("").astype(str)
    if "score" in df.columns:
        score = pd.to_numeric(df["score"], errors="coerce")
        bad = score.isna() | (score < 0) | (score > 1)
        if scored and bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise CGapsError(
                f"{path}: row {row} (item_id {df['item_id'].iloc[row]!r}): field 'score' is "
                f"{df['score'].iloc[row]!r}; scores must be numbers in [0, 1] (1 = correct), not NaN"
            )
        df["score"] = score.astype("float64")
    return df


def read_items(run_dir: str | Path, *, scored: bool = False) -> pd.DataFrame:
    path = Path(run_dir) / ITEMS
    df = read_table(path, "create it with `cgaps items SUITE --out RUN_DIR`")
    return validate_items(df, path, scored=scored)


# ---------------------------------------------------------------- saliency


def validate_saliency(
    df: pd.DataFrame, path: str | Path, item_ids: pd.Index | None, n_concepts: int
) -> pd.DataFrame:
    """Check a sparse saliency table against the items and the SAE width."""
    path = Path(path)
    missing = [c for c in SALIENCY_COLUMNS if c not in df.columns]
    extra = [c for c in df.columns if c not in SALIENCY_COLUMNS]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if extra:
            parts.append(f"unknown column(s) {', '.join(map(str, extra))}")
        raise CGapsError(f"{path}: {'; '.join(parts)}; the columns are exactly {', '.join(SALIENCY_COLUMNS)}")
    # shallow: under copy-on-write the caller's frame is never changed, and 50M rows are not copied
    df = df.copy(deep=False)
    df["item_id"] = df["item_id"].astype(str)
    concept = pd.to_numeric(df["concept"], errors="coerce")
    if concept.isna().any() or (concept != concept.round()).any():
        raise CGapsError(f"{path}: field 'concept' must hold integers (SAE latent indices)")
    bad = (concept < 0) | (concept >= n_concepts)
    if bad.any():
        raise CGapsError(
            f"{path}: field 'concept' has {int(concept[bad].iloc[0])}, outside 0..{n_concepts - 1} "
            f"(run.json n_concepts = {n_concepts}); the saliency was written with another SAE"
        )
    value = pd.to_numeric(df["value"], errors="coerce").astype("float64")
    vals = value.to_numpy()
    badv = ~(vals > 0) | ~np.isfinite(vals)  # vectorised: paper-scale runs have ~50M rows (NaN > 0 is False)
    if badv.any():
        row = int(badv.nonzero()[0][0])
        raise CGapsError(
            f"{path}: row {row}: field 'value' is {df['value'].iloc[row]!r}; saliency rows hold finite values > 0 only"
        )
    df["concept"] = concept.astype("int32")
    df["value"] = value.astype("float32")
    if item_ids is not None:
        unknown = ~df["item_id"].isin(item_ids)
        if unknown.any():
            raise CGapsError(
                f"{path}: field 'item_id' has {df.loc[unknown, 'item_id'].iloc[0]!r}, which is not in {ITEMS}; "
                "saliency and items must come from the same run"
            )
    # duplicates on integer keys (item code x width + concept): a hash of ints, not of (str, int) rows
    codes = pd.factorize(df["item_id"])[0].astype(np.int64)
    if pd.Index(codes * n_concepts + df["concept"].to_numpy()).has_duplicates:
        raise CGapsError(
            f"{path}: duplicate (item_id, concept) rows; pool each concept to one value per item"
        )
    return df


def read_saliency(
    run_dir: str | Path, item_ids: pd.Index | None, n_concepts: int, *, coded: bool = False
) -> pd.DataFrame:
    """The validated saliency; ``coded`` (with ``item_ids``): ``item_id`` as codes into
    ``item_ids``, read by :func:`cgaps.runtables.read_saliency_coded` when it takes the file."""
    if coded and item_ids is not None:
        from cgaps.runtables import coded_item_ids, read_saliency_coded  # runtables imports this module

        fast = read_saliency_coded(run_dir, item_ids, n_concepts)
        if fast is not None:
            return fast
        return coded_item_ids(read_saliency(run_dir, item_ids, n_concepts), item_ids)
    path = Path(run_dir) / SALIENCY
    df = read_table(path, "create it with `cgaps extract RUN_DIR`")
    return validate_saliency(df, path, item_ids, n_concepts)


# ---------------------------------------------------------------- provenance and one writer

# The item columns each stage's output depends on (item_id: which items there are).
STAGE_INPUTS = {
    "evaluate": ("item_id", "prompt", "messages", "choices", "answer_type"),
    "extract": ("item_id", "prompt", "messages", "response"),
    "score": ("item_id", "benchmark", "score"),
}
# The files of the run each stage's output depends on besides items.parquet (their content digest
# is recorded too): scoring reads the saliency.
STAGE_FILES: dict[str, tuple[str, ...]] = {"score": (SALIENCY,)}


def _digest_rows(items: pd.DataFrame, cols: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for row in items.reindex(columns=list(cols)).itertuples(index=False):  # a missing column is NaN
        cells = [v if isinstance(v, str) else _number(v) for v in row]
        h.update(json.dumps(cells).encode("utf-8") + b"\n")
    return h.hexdigest()[:16]


def _number(v: Any) -> Any:
    # scores are inputs of scoring: numbers count by value, NaN and None as null
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def items_digest(items: pd.DataFrame, stage: str, columns: tuple[str, ...] | None = None) -> str:
    """A short fingerprint of the columns of ``items`` that ``stage`` depends on
    (``columns``, by default :data:`STAGE_INPUTS`; a missing column or NaN cell counts as
    null), in row order."""
    return _digest_rows(items, STAGE_INPUTS[stage] if columns is None else columns)


def file_digest(path: str | Path) -> str | None:
    """A short fingerprint of a file's bytes (None when there is no such file)."""
    path = Path(path)
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def stage_record(
    items: pd.DataFrame,
    stage: str,
    columns: tuple[str, ...] | None = None,
    run_dir: str | Path | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a completed stage writes into run.json ``inputs``: the columns it used
    (``columns``, by default :data:`STAGE_INPUTS`), their :func:`items_digest`, one digest per
    column (so a later check can say which changed), for a stage of :data:`STAGE_FILES`, the
    digests of those files in ``run_dir``, and the config ``settings`` it ran with (a run whose
    ``config`` in run.json later says otherwise is stale: :func:`stage_check`)."""
    cols = STAGE_INPUTS[stage] if columns is None else columns
    record: dict[str, Any] = {
        "columns": list(cols),
        "digest": items_digest(items, stage, cols),
        "by_column": {c: _digest_rows(items, (c,)) for c in cols},
    }
    if stage in STAGE_FILES:
        if run_dir is None:
            raise TypeError(f"stage_record({stage!r}) needs run_dir for {', '.join(STAGE_FILES[stage])}")
        record["files"] = {name: file_digest(Path(run_dir) / name) for name in STAGE_FILES[stage]}
    if settings is not None:
        record["settings"] = settings
    return record


def mark_stale(run_dir: str | Path, stages: list[str], reason: str) -> None:
    """Record in run.json that the outputs of ``stages`` no longer match the run (``reason``):
    :func:`stage_check` reports them stale until the stage runs again and records its inputs."""
    if stages:
        update_run_json(run_dir, inputs={stage: {"stale": reason} for stage in stages})


def stage_check(
    run_dir: str | Path, stage: str, items: pd.DataFrame, *, meta: dict[str, Any] | None = None
) -> tuple[bool | None, str]:
    """Whether ``stage``'s recorded inputs still match the run, and why not.

    Returns ``(True, "")`` when they match, ``(False, reason)`` when they do not (changed item
    columns, named; a changed file of :data:`STAGE_FILES`; marked stale by :func:`mark_stale`; a
    damaged record), and ``(None, reason)`` when no inputs are recorded (a run written before
    digests, or a stage not run yet). ``meta``: the run.json the caller has already read.
    """
    meta = read_run_json(run_dir) if meta is None else meta
    recorded = meta.get("inputs", {}).get(stage)
    if recorded is None:
        return None, "its inputs were not recorded (an older run)"
    if not isinstance(recorded, dict):
        return False, f"its record in {RUN_JSON} 'inputs' is damaged"
    if "stale" in recorded:
        return False, str(recorded["stale"])
    cols, digest = recorded.get("columns"), recorded.get("digest")
    if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
        return False, f"its record in {RUN_JSON} 'inputs' is damaged"
    if digest != items_digest(items, stage, tuple(cols)):
        by_column = recorded.get("by_column")
        changed = (
            [c for c in cols if by_column.get(c) != _digest_rows(items, (c,))]
            if isinstance(by_column, dict)
            else []
        )
        what = f"column(s) {', '.join(changed)}" if changed else "items"
        return False, f"the {what} of {ITEMS} changed since it ran"
    files = recorded.get("files", {})
    if isinstance(files, dict):
        for name, want in files.items():
            if file_digest(Path(run_dir) / name) != want:
                return False, f"{name} changed since it ran"
    settings, config = recorded.get("settings"), meta.get("config")
    if isinstance(settings, dict) and isinstance(config, dict):
        changed = [k for k in settings if k in config and config[k] != settings[k]]
        if changed:
            was = ", ".join(f"{k}={settings[k]!r}" for k in changed)
            now = ", ".join(f"{k}={config[k]!r}" for k in changed)
            return False, f"it ran with {was}; the run's config now says {now}"
    return True, ""


def stage_is_current(
    run_dir: str | Path, stage: str, items: pd.DataFrame, *, meta: dict[str, Any] | None = None
) -> bool | None:
    """Whether ``stage``'s recorded inputs match the run (:func:`stage_check`); None when none
    are recorded (a run written before digests). A damaged record is not current."""
    return stage_check(run_dir, stage, items, meta=meta)[0]


LOCK = ".cgaps.lock"  # held by the process writing the run directory; not a RUN_FILE: --force keeps it
_held: dict[Path, int] = {}  # run dir -> lock fd; re-entrant in one process (the outermost holder releases)


def remove_stale_temporaries(run_dir: str | Path) -> int:
    """Delete the temporary files (``.NAME.*.tmp``, :func:`atomic_path`) that killed writers left in
    the run directory and its shard folder; only call with the run's lock held. Returns how many."""
    run_dir = Path(run_dir)
    n = 0
    for folder in (run_dir, run_dir / SALIENCY_SHARDS):
        if folder.is_dir():
            for path in folder.glob(".*.tmp"):
                if path.is_file():
                    path.unlink(missing_ok=True)
                    n += 1
    return n


@contextlib.contextmanager
def writing(run_dir: str | Path) -> Iterator[None]:
    """Hold the run directory's writer lock (an advisory ``flock`` on :data:`LOCK`) for a stage.

    A second process writing the same run directory gets a one-line error naming the holder's
    pid instead of doing the same work beside it. The lock is re-entrant within a process (the
    pipeline holds it around its stages). Taking it first removes the temporary files of
    writers that were killed (:func:`remove_stale_temporaries`).
    """
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CGapsError(f"{run_dir}: cannot be used as a run directory ({e.strerror}); pass a folder") from e
    key = run_dir.resolve()
    if key in _held:
        yield
        return
    path = run_dir / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise CGapsError(
            f"{path}: cannot create the run's lock file ({e.strerror}); check that {run_dir} is writable"
        ) from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise CGapsError(
            f"{run_dir}: another cgaps process (pid {holder}) is writing this run directory; "
            "wait for it to finish, or use another --out"
        ) from e
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    _held[key] = fd
    try:
        remove_stale_temporaries(run_dir)
        yield
    finally:
        del _held[key]
        os.ftruncate(fd, 0)
        os.close(fd)  # closing releases the flock
