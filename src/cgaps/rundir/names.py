"""The run directory's fixed names: its files (declared with the stages that write them, in
:mod:`cgaps.stages`), the whole-suite scope and the rules for names and ids."""

from __future__ import annotations

import re

from cgaps.stages import (
    CONCEPTS,
    CONFIRM_DIR,
    CONFIRMATION,
    CONTEXTS,
    ITEMS,
    LABELS,
    LABELS_LLM_CACHE,
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
    THEME_TESTS,
    THEMES,
    VALIDATION,
)

SCHEMA_VERSION = 1

COMPARE = "compare.parquet"  # written by `cgaps compare` into its own --out folder, not a run directory

ALL_SCOPE = "ALL"

# Benchmark names and item ids: at most this many characters, and no control characters (they
# are printed in messages, tables and HTML; a 10 MB name or an ESC sequence must not get there).
MAX_NAME = 200
CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f]")

__all__ = [
    "ALL_SCOPE",
    "COMPARE",
    "CONCEPTS",
    "CONFIRM_DIR",
    "CONFIRMATION",
    "CONTEXTS",
    "CONTROL_CHARS",
    "ITEMS",
    "LABELS",
    "LABELS_LLM_CACHE",
    "MAX_NAME",
    "OPTION_LOGLIKS",
    "OVERLAP",
    "REPORT",
    "RESPONSES_PARTIAL",
    "RESPONSES_SETTINGS",
    "ROBUSTNESS",
    "RUN_FILES",
    "RUN_JSON",
    "SALIENCY",
    "SALIENCY_SHARDS",
    "SCHEMA_VERSION",
    "THEME_TESTS",
    "THEMES",
    "VALIDATION",
]
