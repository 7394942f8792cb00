"""``run.json``: its documented keys (:class:`RunJson`), the checked reader and the merging writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict, Unpack

from cgaps.errors import CGapsError, did_you_mean
from cgaps.rundir.atomic import read_json_file, write_json
from cgaps.rundir.names import RUN_JSON, SCHEMA_VERSION


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
    ``score`` the scoring config it used, ``extract`` the layer it resolved."""
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
    power: dict[str, Any]
    """What the run could have found (written by ``score``, :mod:`cgaps.scoring.power`): per scope
    its items, mean score, null variance, the hypotheses kept, the bar a single call must pass
    and the smallest detectable accuracy drop and rise by support (docs/method.md §3)."""
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
