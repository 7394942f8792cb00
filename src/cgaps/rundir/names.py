"""The run directory's fixed names: its files, the whole-suite scope and the name rules."""

from __future__ import annotations

import re
from pathlib import Path

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
COMPARE = "compare.parquet"  # written by `cgaps compare` into its own --out folder, not a run directory

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

# Benchmark names and item ids: at most this many characters, and no control characters (they
# are printed in messages, tables and HTML; a 10 MB name or an ESC sequence must not get there).
MAX_NAME = 200
CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f]")
