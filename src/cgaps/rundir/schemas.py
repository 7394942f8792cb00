"""The run's tables, typed: one pyarrow schema per table file, a description per column.

This module is the one source of what each table holds (docs/method.md §6); everything else
follows from it:

* the column tuples (:data:`ITEM_REQUIRED`, :data:`CONCEPT_COLUMNS`... and :func:`columns`),
  which the stages use to build and select their tables;
* the writers' check (:func:`check_written`, run by :func:`cgaps.rundir.write_table` on every
  file named like a table here): a column that is not in the schema, a required one missing,
  or one of another type is a bug of ours, raised as :class:`TypeError` before a byte is
  written;
* the readers' check (:func:`check_read`, run by :func:`cgaps.rundir.read_table` on the
  file's Arrow schema before any row is read): a column of a type the reader cannot use (a
  ``score`` of strings, a ``concept`` of text, a ``choices`` column of lists) is the user's
  file at fault, a one-line :class:`~cgaps.errors.CGapsError` naming file, column and fix;
* ``cgaps schema [TABLE]`` (:mod:`cgaps.cli.schema`), which prints them;
* docs/method.md §6, whose table of files names every column here and no other
  (``tests/rundir/test_schemas.py``).

**Types** are the Arrow types the writers produce today (pandas 3 writes text as
``large_string``; pandas turns the overlap's benchmark names into ``string``), so the schemas
describe the files byte for byte, and checking changes no byte (the writer checks the table it
was going to write anyway, and writes it unchanged). The writers' check is by kind of value —
text, integer, float, boolean, at any width — so a harmless dtype variation on a path the tests
do not reach never stops a user's run, while a number written as text, or text as a number,
does; ``tests/rundir/test_schemas.py`` pins the exact types on the scoring tables, and the byte
comparisons of issue 20 pinned them on the demo and a ten-benchmark run. A column without a
single value (an empty table, an optional column no item uses) has Arrow type ``null``, as
pandas cannot tell its type: accepted everywhere. Readers are more lenient where the stage
converts anyway (text accepts any string, dictionary or, outside JSON columns, number type; a
number accepts any integer, float or bool; an integer accepts floats, whose values the stage
checks), and refuse what it cannot convert.

**Field metadata** (bytes keys, as Arrow stores them): ``description``; ``presence``:
``required`` (every file has it), ``scored`` (items only: added by evaluation — ``evaluate``,
``grade`` or ``import`` — and required by every stage after it) or ``optional``; ``written_by``:
the command that writes it; ``json``: ``true`` where each value is JSON text.

**Adding a column** is one edit: a :func:`column` line in its table's schema below, at the
position the writer puts it (a writer that selects :func:`columns` gets it in that order).
Everything listed above follows; then name it in docs/method.md §6 (the test says where it is
missing). **Adding a table**: its file name with the stage that writes it (:mod:`cgaps.stages`,
which declares every run file), a :class:`TableSchema` in :data:`TABLES`, and a row in
docs/method.md §6; another run file (JSON, a working file) gets its line in :data:`OTHER_FILES`.
``tests/rundir/test_schemas.py`` says which of these is missing.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from cgaps.errors import CGapsError, did_you_mean
from cgaps.rundir.names import (
    COMPARE,
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

PRESENCE = ("required", "scored", "optional")


def column(
    name: str,
    type: pa.DataType,
    description: str,
    *,
    written_by: str,
    presence: str = "required",
    json: bool = False,
) -> pa.Field:
    """One column: its Arrow type and its documentation in the field metadata (module docstring)."""
    if presence not in PRESENCE:
        raise ValueError(f"presence {presence!r}: one of {', '.join(PRESENCE)}")
    meta = {"description": description, "presence": presence, "written_by": written_by}
    if json:
        meta["json"] = "true"
    return pa.field(name, type, nullable=True, metadata=meta)


TEXT = pa.large_string()
F64 = pa.float64()


@dataclass(frozen=True)
class TableSchema:
    """A table file: its columns (:attr:`schema`) and what the file is."""

    file: str
    """The file name in the run directory (``compare.parquet``: in ``cgaps compare``'s folder)."""
    row: str
    """What one row is."""
    written_by: str
    """The commands that write the file."""
    schema: pa.Schema
    """Every column the file may have; the writers that select :meth:`columns` write them in this
    order (items.parquet keeps the order its loaders give)."""
    closed: bool = False
    """No other columns allowed (items and saliency); other tables may carry more, which are kept."""

    @property
    def name(self) -> str:
        """The table's short name (the file name without ``.parquet``)."""
        return self.file.removesuffix(".parquet")

    def columns(self, presence: str | None = None) -> tuple[str, ...]:
        """The column names (of one ``presence`` when given), in schema order."""
        return tuple(f.name for f in self.schema if presence is None or doc(f)["presence"] == presence)


def doc(field: pa.Field) -> dict[str, str]:
    """A field's metadata as text: ``description``, ``presence``, ``written_by`` (and ``json``)."""
    return {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}


def _enrich(written_by: str, of: str) -> list[pa.Field]:
    """The metadata-enrichment columns (docs/method.md §5) of labels.parquet and themes.parquet."""
    kw: dict[str, Any] = {"written_by": written_by, "presence": "optional" if of == "concept" else "required"}
    return [
        column(
            "enrich_facet",
            TEXT,
            f"the facet of the group the {of}'s saliency mass is enriched in: 'benchmark', "
            "'category' or a meta field; empty when never present",
            **kw,
        ),
        column("enrich_group", TEXT, "that group (e.g. 'probes:weekday'); empty when never present", **kw),
        column("enrich_mass", F64, f"m: the group's share of the {of}'s thresholded saliency mass ŝ'", **kw),
        column("enrich_items", F64, "b: the group's share of the run's items", **kw),
        column(
            "enrich_p",
            F64,
            f"hypergeometric p of at least as many of the {of}'s present items falling in the group",
            **kw,
        ),
    ]


def _tests(written_by: str, of: str, presence: str) -> list[pa.Field]:
    """The columns of the calls of docs/method.md §3 beyond ``q_value`` (issue 19)."""
    kw: dict[str, Any] = {"written_by": written_by, "presence": presence}
    return [
        column(
            "p_value",
            F64,
            f"two-sided p-value of the {of}'s score test; NaN when not tested or not kept by Tarone's rule",
            **kw,
        ),
        column(
            "p_min",
            F64,
            f"the smallest two-sided p-value the {of}'s items allow (Tarone's bound); NaN when not tested",
            **kw,
        ),
    ]


def _scores(written_by: str, of: str) -> list[pa.Field]:
    """The χ columns of concepts.parquet after ``scope`` (docs/method.md §3); themes.parquet has them too."""
    kw: dict[str, Any] = {"written_by": written_by}
    return [
        column("support", pa.int64(), f"n_c(S): items of the scope on which the {of} is present", **kw),
        column(
            "chi_bench",
            F64,
            "benchmark coverage χ_bench: mean normalised saliency ŝ over the scope, in [0, 1]",
            **kw,
        ),
        column(
            "chi_bench_raw",
            F64,
            "χ_bench in activation units (raw saliency), the unit of the paper's figures",
            **kw,
        ),
        column(
            "chi_model", F64, "χ_model: saliency-weighted accuracy Σ s·y / Σ s; NaN when it never fires", **kw
        ),
        column(
            "expected", F64, "e: the accuracy the benchmarks' difficulty alone predicts, Σ s·ȳ(B) / Σ s", **kw
        ),
        column("n_eff", F64, "effective sample size (Σ s)² / Σ s²", **kw),
        column("ci_low", F64, "Wilson interval of χ_model on n_eff trials at ci_level: lower end", **kw),
        column("ci_high", F64, "Wilson interval: upper end", **kw),
        column(
            "status", TEXT, "benchmark gap status by χ_bench percentile: missing, under, normal or over", **kw
        ),
        column("gap", TEXT, "model gap call: 'weak' (χ_model below e), 'strong' (above) or empty", **kw),
        column(
            "q_value", F64, "Benjamini–Hochberg q of the score test in this scope; NaN when not tested", **kw
        ),
    ]


_ITEMS = "items"
_SCORED_BY = "evaluate, grade, import"
ITEMS_TABLE = TableSchema(
    ITEMS,
    "item",
    "items (import); evaluate and grade add response and score",
    pa.schema(
        [
            column(
                "item_id",
                TEXT,
                "unique within the suite (the built-in suites use <benchmark>/<position>)",
                written_by=_ITEMS,
            ),
            column(
                "benchmark",
                TEXT,
                "the benchmark's name; 'ALL' is reserved for the whole-suite scope",
                written_by=_ITEMS,
            ),
            column("prompt", TEXT, "what the evaluated model is asked (the user turn)", written_by=_ITEMS),
            column("reference", TEXT, "the gold answer, in a form its grader accepts", written_by=_ITEMS),
            column(
                "response",
                TEXT,
                "the evaluated model's output (log-likelihood scoring: the chosen option as 'B) option text')",
                written_by=_SCORED_BY,
                presence="scored",
            ),
            column(
                "score",
                F64,
                "y(x) in [0, 1], how correct the response is (1 = correct)",
                written_by=_SCORED_BY,
                presence="scored",
            ),
            column(
                "messages",
                TEXT,
                "a multi-turn conversation, JSON list of {role, content}; overrides prompt",
                written_by=_ITEMS,
                presence="optional",
                json=True,
            ),
            column(
                "answer_type",
                TEXT,
                "which grader grades the response (cgaps.evaluate.grade)",
                written_by=_ITEMS,
                presence="optional",
            ),
            column(
                "choices",
                TEXT,
                "the option texts, JSON list of strings (multiple choice, log-likelihood scoring)",
                written_by=_ITEMS,
                presence="optional",
                json=True,
            ),
            column(
                "category",
                TEXT,
                "sub-category for display: subject, task, probe family, axiom...",
                written_by=_ITEMS,
                presence="optional",
            ),
            column(
                "meta",
                TEXT,
                "anything else, JSON object (gold aliases, bias metadata...); other columns are refused",
                written_by=_ITEMS,
                presence="optional",
                json=True,
            ),
        ]
    ),
    closed=True,
)

_EXTRACT = "extract"
SALIENCY_TABLE = TableSchema(
    SALIENCY,
    "item × firing concept",
    _EXTRACT,
    pa.schema(
        [
            column("item_id", TEXT, "the item (one of items.parquet)", written_by=_EXTRACT),
            column("concept", pa.int32(), "the SAE latent, 0 … n_concepts − 1", written_by=_EXTRACT),
            column(
                "value",
                pa.float32(),
                "raw saliency s_c(x) > 0: the concept's pooled activation on the item",
                written_by=_EXTRACT,
            ),
        ]
    ),
    closed=True,
)

CONTEXTS_TABLE = TableSchema(
    CONTEXTS,
    "concept × rank (its top 8 items)",
    _EXTRACT,
    pa.schema(
        [
            column("concept", pa.int32(), "the SAE latent", written_by=_EXTRACT),
            column(
                "rank", pa.int16(), "0 = the item with the concept's highest saliency", written_by=_EXTRACT
            ),
            column("item_id", TEXT, "the item", written_by=_EXTRACT),
            column("value", pa.float32(), "the concept's saliency on the item", written_by=_EXTRACT),
            column("left", TEXT, "the text before the firing token (12 reader tokens)", written_by=_EXTRACT),
            column("token", TEXT, "the token where the concept peaked", written_by=_EXTRACT),
            column("right", TEXT, "the text after it (12 reader tokens)", written_by=_EXTRACT),
        ]
    ),
)

_LABEL = "label"
_LABELS_BY = "extract (provisional), label"
LABELS_TABLE = TableSchema(
    LABELS,
    "concept",
    _LABELS_BY,
    pa.schema(
        [
            column(
                "concept", pa.int32(), "the SAE latent, every one 0 … n_concepts − 1", written_by=_LABELS_BY
            ),
            column(
                "label",
                TEXT,
                "the best available: imported, else an LLM label that beats chance, else evidence",
                written_by=_LABELS_BY,
            ),
            column(
                "source",
                TEXT,
                "where the label comes from: top_contexts, evidence, llm, an imported source; empty when none",
                written_by=_LABELS_BY,
            ),
            column(
                "evidence_label",
                TEXT,
                "the label from distinctive tokens, output tokens and enrichment, without a language model",
                written_by=_LABEL,
                presence="optional",
            ),
            column(
                "tokens",
                TEXT,
                "distinctive peak words (whole words of the run's text), JSON [[word, count, z, δ], ...], "
                "most distinctive first",
                written_by=_LABEL,
                presence="optional",
                json=True,
            ),
            column(
                "output_tokens",
                TEXT,
                "logit lens of the decoder direction over the words of the run's text, JSON [[word, logit], ...]",
                written_by=_LABEL,
                presence="optional",
                json=True,
            ),
            column(
                "phrase",
                TEXT,
                "the word window the concept's strongest activations share ('' when none); the report and "
                "the explorer name it by this when present",
                written_by=_LABEL,
                presence="optional",
            ),
            column(
                "format",
                pa.bool_(),
                "true when it fires on prompt text repeated verbatim across items (instructions, "
                "templates): a format finding, listed apart from the competencies",
                written_by=_LABEL,
                presence="optional",
            ),
            column(
                "item_words",
                TEXT,
                "words typical of the items where the concept is present, from their own text (not the "
                "template's), JSON [[word, items, z, δ], ...]",
                written_by=_LABEL,
                presence="optional",
                json=True,
            ),
            column(
                "format_share",
                F64,
                "share of the concept's saliency mass peaking on repeated prompt text; NaN without peak tokens",
                written_by=_LABEL,
                presence="optional",
            ),
            *_enrich(_LABEL, "concept"),
            column(
                "imported_label",
                TEXT,
                "label from --labels-file (Neuronpedia export or table); kept on reruns",
                written_by=_LABEL,
                presence="optional",
            ),
            column(
                "imported_source",
                TEXT,
                "where the imported label came from",
                written_by=_LABEL,
                presence="optional",
            ),
            column(
                "llm_label",
                TEXT,
                "label an OpenAI-compatible model wrote (--labeler); kept on reruns",
                written_by=_LABEL,
                presence="optional",
            ),
            column(
                "llm_score",
                F64,
                "detection balanced accuracy of the LLM label (0.5 = chance); NaN without one",
                written_by=_LABEL,
                presence="optional",
            ),
        ]
    ),
)

THEMES_TABLE = TableSchema(
    THEMES,
    "theme × scope (each benchmark, then ALL)",
    _LABEL,
    pa.schema(
        [
            column(
                "theme",
                pa.int32(),
                "the theme's number: gap themes first (by q), then strength themes, then the rest",
                written_by=_LABEL,
            ),
            column("scope", TEXT, "a benchmark, or ALL", written_by=_LABEL),
            column(
                "label",
                TEXT,
                "the theme's words: its members' shared tokens and enrichment",
                written_by=_LABEL,
            ),
            column("n_members", pa.int32(), "how many concepts the theme joins", written_by=_LABEL),
            column(
                "members",
                TEXT,
                "JSON list of concept ids, strongest gap/strength first",
                written_by=_LABEL,
                json=True,
            ),
            column(
                "tokens", TEXT, "JSON list of the members' distinctive tokens", written_by=_LABEL, json=True
            ),
            column(
                "spread",
                TEXT,
                "JSON list of [group, mass share, item share]: the enriched facet's largest groups",
                written_by=_LABEL,
                json=True,
            ),
            *_enrich(_LABEL, "theme"),
            column(
                "format",
                pa.bool_(),
                "true when its members' saliency mass peaks mostly on repeated prompt text (a format theme)",
                written_by=_LABEL,
                presence="optional",
            ),
            *_scores(_LABEL, "theme"),
            *_tests(_LABEL, "theme", "optional"),  # themes tables made before issue 19 lack them
        ]
    ),
)

_SCORE = "score"
CONCEPTS_TABLE = TableSchema(
    CONCEPTS,
    "concept × scope: every concept 0 … F − 1 in every benchmark (sorted) and ALL, never-firing ones too",
    _SCORE,
    pa.schema(
        [
            column("concept", pa.int32(), "the SAE latent", written_by=_SCORE),
            column("scope", TEXT, "a benchmark, or ALL (the whole suite)", written_by=_SCORE),
            *_scores(_SCORE, "concept"),
            # written since issue 19; a table scored before lacks them
            *_tests(_SCORE, "concept", "optional"),
            column(
                "theme",
                pa.int32(),
                "the theme (theme_tests.parquet) the concept belongs to; -1 for none",
                written_by=_SCORE,
                presence="optional",
            ),
        ]
    ),
)

THEME_TESTS_TABLE = TableSchema(
    THEME_TESTS,
    "theme × scope (each benchmark, then ALL): the themes tested beside the concepts",
    _SCORE,
    pa.schema(
        [
            column(
                "theme",
                pa.int32(),
                "the theme's number: gap themes first (by q in ALL), then strength themes, then the rest by support",
                written_by=_SCORE,
            ),
            column("scope", TEXT, "a benchmark, or ALL", written_by=_SCORE),
            column(
                "n_members", pa.int32(), "how many concepts the theme joins (two or more)", written_by=_SCORE
            ),
            column(
                "members",
                TEXT,
                "JSON list of concept ids, strongest first (by q, then p-value in ALL)",
                written_by=_SCORE,
                json=True,
            ),
            *_scores(_SCORE, "theme"),
            *_tests(_SCORE, "theme", "required"),
        ]
    ),
)

OVERLAP_TABLE = TableSchema(
    OVERLAP,
    "benchmark pair a < b",
    _SCORE,
    pa.schema(
        [
            column("a", pa.string(), "the first benchmark", written_by=_SCORE),
            column("b", pa.string(), "the second benchmark", written_by=_SCORE),
            column(
                "jaccard",
                F64,
                "Jaccard index of the two benchmarks' firing concepts; NaN when neither has one",
                written_by=_SCORE,
            ),
            column(
                "spearman_chi_model",
                F64,
                "Spearman correlation of χ_model over the concepts present in both; NaN with fewer than 3",
                written_by=_SCORE,
            ),
            column("spearman_chi_bench", F64, "the same for χ_bench", written_by=_SCORE),
        ]
    ),
)

_EVALUATE = "evaluate"
OPTION_LOGLIKS_TABLE = TableSchema(
    OPTION_LOGLIKS,
    "item × option, for the items answered by log-likelihood",
    _EVALUATE,
    pa.schema(
        [
            column("item_id", TEXT, "the item", written_by=_EVALUATE),
            column("option", pa.int64(), "the option's position, 0 first", written_by=_EVALUATE),
            column("letter", TEXT, "the option's letter (A, B, ...)", written_by=_EVALUATE),
            column("continuation", TEXT, "the exact string scored after the context", written_by=_EVALUATE),
            column(
                "loglik",
                F64,
                "its log-likelihood under the evaluated model (natural log, summed over its tokens)",
                written_by=_EVALUATE,
            ),
            column(
                "chars",
                pa.int64(),
                "the option's length in characters (loglik_norm divides by it)",
                written_by=_EVALUATE,
            ),
            column("chosen", pa.bool_(), "true for the option the item's answer is", written_by=_EVALUATE),
            column(
                "protocol",
                TEXT,
                "loglik, loglik_norm or loglik_letter (docs/benchmarks.md)",
                written_by=_EVALUATE,
            ),
        ]
    ),
)

_COMPARE = "compare"
COMPARE_TABLE = TableSchema(
    COMPARE,
    "concept × scope of two runs A and B of the same items (in cgaps compare's --out folder)",
    _COMPARE,
    pa.schema(
        [
            column("concept", pa.int32(), "the SAE latent", written_by=_COMPARE),
            column("scope", TEXT, "a benchmark, or ALL", written_by=_COMPARE),
            column(
                "chi_model_a",
                F64,
                "run A's χ_model on the common weights w = (s'_a + s'_b) / 2",
                written_by=_COMPARE,
            ),
            column("chi_model_b", F64, "run B's χ_model on the same weights", written_by=_COMPARE),
            column("delta", F64, "chi_model_b − chi_model_a", written_by=_COMPARE),
            column(
                "q_value",
                F64,
                "Benjamini–Hochberg q of the paired sign-flip test; NaN when not tested",
                written_by=_COMPARE,
            ),
            column("call", TEXT, "a_better, b_better (q ≤ fdr) or empty", written_by=_COMPARE),
            column(
                "support",
                pa.int64(),
                "items of the scope where the concept is present in A or B",
                written_by=_COMPARE,
            ),
            column(
                "discordant", pa.int64(), "of those, items where the two scores differ", written_by=_COMPARE
            ),
            column("z", F64, "the paired test's z; NaN where the concept never fires", written_by=_COMPARE),
            column("p_value", F64, "its two-sided p, floored at 2^(1 − discordant)", written_by=_COMPARE),
            column(
                "delta_expected",
                F64,
                "the mean paired difference of the concept's benchmarks, weighted by w",
                written_by=_COMPARE,
            ),
            column(
                "q_adjusted",
                F64,
                "q of the difference against delta_expected (§3's score test)",
                written_by=_COMPARE,
            ),
            column(
                "call_adjusted",
                TEXT,
                "a_better / b_better than the benchmarks' own difference, or empty",
                written_by=_COMPARE,
            ),
        ]
    ),
)

_CONFIRM = "confirm"
CONFIRMATION_TABLE = TableSchema(
    CONFIRMATION,
    "call (and matched control) × what it was (concept or theme)",
    _CONFIRM,
    pa.schema(
        [
            column("kind", TEXT, "`concept` or `theme`", written_by=_CONFIRM),
            column("id", pa.int32(), "the concept or theme number", written_by=_CONFIRM),
            column(
                "role",
                TEXT,
                "`called` (a call of the run) or `control` (a random concept of matched support)",
                written_by=_CONFIRM,
            ),
            column(
                "matched_to",
                pa.int32(),
                "the called concept a control is matched to; −1 for a called row",
                written_by=_CONFIRM,
            ),
            column("label", TEXT, "the concept's or theme's label", written_by=_CONFIRM),
            column("call", TEXT, "`weak` or `strong`: the direction tested again", written_by=_CONFIRM),
            column("support_run", pa.int64(), "support in the run", written_by=_CONFIRM),
            column("chi_model_run", F64, "χ_model in the run", written_by=_CONFIRM),
            column("expected_run", F64, "expected score in the run", written_by=_CONFIRM),
            column("q_run", F64, "q-value in the run", written_by=_CONFIRM),
            column("drawn", pa.int64(), "fresh items drawn for it", written_by=_CONFIRM),
            column("support_fresh", pa.int64(), "support on the fresh items", written_by=_CONFIRM),
            column("chi_model_fresh", F64, "χ_model on the fresh items", written_by=_CONFIRM),
            column("expected_fresh", F64, "expected score on the fresh items", written_by=_CONFIRM),
            column("z_fresh", F64, "the score test's z on the fresh items", written_by=_CONFIRM),
            column(
                "p_fresh",
                F64,
                "one-sided p-value in the called direction; NaN when not tested",
                written_by=_CONFIRM,
            ),
            column(
                "q_fresh",
                F64,
                "Benjamini–Hochberg q within its family (called, controls, themes)",
                written_by=_CONFIRM,
            ),
            column("tested", pa.bool_(), "fresh support ≥ min_support", written_by=_CONFIRM),
            column("replicated", pa.bool_(), "tested, q ≤ fdr and z on the called side", written_by=_CONFIRM),
        ]
    ),
)

TABLES: dict[str, TableSchema] = {
    t.file: t
    for t in (
        ITEMS_TABLE,
        OPTION_LOGLIKS_TABLE,
        SALIENCY_TABLE,
        CONTEXTS_TABLE,
        LABELS_TABLE,
        THEMES_TABLE,
        CONCEPTS_TABLE,
        THEME_TESTS_TABLE,
        OVERLAP_TABLE,
        CONFIRMATION_TABLE,
        COMPARE_TABLE,
    )
}
"""Every table file, by file name, in the pipeline's order."""

# The column tuples the stages use (their names predate the schemas; callers keep them).
ITEM_REQUIRED = ITEMS_TABLE.columns("required")
ITEM_SCORED = ITEMS_TABLE.columns("scored")
ITEM_OPTIONAL = ITEMS_TABLE.columns("optional")
ITEM_COLUMNS = ITEMS_TABLE.columns()
SALIENCY_COLUMNS = SALIENCY_TABLE.columns()
CONTEXT_COLUMNS = CONTEXTS_TABLE.columns()
LABEL_COLUMNS = LABELS_TABLE.columns("required")
ENRICH_COLUMNS = tuple(f.name for f in _enrich(_LABEL, "concept"))
CONCEPT_COLUMNS = CONCEPTS_TABLE.columns("required")  # what every concepts table has
CONCEPT_TABLE_COLUMNS = CONCEPTS_TABLE.columns()  # what `cgaps score` writes
OVERLAP_COLUMNS = OVERLAP_TABLE.columns()


def table_schema(name: str) -> TableSchema:
    """The table called ``name`` (``items``, ``items.parquet``); a near miss gets a "did you mean"."""

    key = name if name.endswith(".parquet") else f"{name}.parquet"
    if key in TABLES:
        return TABLES[key]
    names = [t.name for t in TABLES.values()]
    raise CGapsError(
        f"no table {name!r}.{did_you_mean(name.removesuffix('.parquet'), names)} Tables: {', '.join(names)}"
    )


def columns(name: str, presence: str | None = None) -> tuple[str, ...]:
    """The columns of the table ``name`` (of one ``presence`` when given), in schema order."""
    return table_schema(name).columns(presence)


# ---------------------------------------------------------------- type checks


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _same_kind(got: pa.DataType, want: pa.DataType) -> bool:
    """The writers' rule: the schema's kind of value (text, integer, float, boolean) at any width,
    or ``null`` (a column without values)."""
    if pa.types.is_null(got) or got == want:
        return True
    return any(
        is_kind(got) and is_kind(want)
        for is_kind in (_is_text, pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean)
    )


def _readable(got: pa.DataType, want: pa.DataType, json: bool) -> bool:
    """The readers' rule: a type the stage converts to ``want`` without guessing (module docstring)."""
    if pa.types.is_dictionary(got):  # pandas categoricals; the values are what counts
        got = got.value_type
    if pa.types.is_null(got) or got == want:
        return True
    numeric = pa.types.is_integer(got) or pa.types.is_floating(got) or pa.types.is_decimal(got)
    if _is_text(want):
        return _is_text(got) or (not json and (numeric or pa.types.is_boolean(got)))
    if pa.types.is_integer(want):
        return pa.types.is_integer(got) or pa.types.is_floating(got)
    if pa.types.is_floating(want):
        return numeric or pa.types.is_boolean(got)
    if pa.types.is_boolean(want):
        return pa.types.is_boolean(got)
    return False


def kind(field: pa.Field) -> str:
    """What the column holds, in words (for messages and ``cgaps schema``)."""
    t = field.type
    if _is_text(t):
        return "JSON text" if doc(field).get("json") == "true" else "text"
    if pa.types.is_integer(t):
        return "integers"
    if pa.types.is_floating(t):
        return "numbers"
    if pa.types.is_boolean(t):
        return "true/false"
    return str(t)


_FIX = {
    "text": "store it as text (strings)",
    "JSON text": "store each value as JSON text (json.dumps), not as a nested Parquet type",
    "integers": "store it as integers",
    "numbers": "store it as numbers (e.g. pandas.to_numeric), not text",
    "true/false": "store it as booleans",
}


def check_read(schema: pa.Schema, table: TableSchema, path: str | Path) -> None:
    """Check the column types of a user's file (its Arrow ``schema``) against ``table``: a one-line
    :class:`CGapsError` naming the file, the column and the fix. Presence and extra columns are
    the readers' own checks (their messages say which command writes what)."""
    want = table.schema
    for got in schema:
        if got.name not in want.names:
            continue
        field = want.field(got.name)
        if not _readable(got.type, field.type, doc(field).get("json") == "true"):
            k = kind(field)
            raise CGapsError(
                f"{path}: field {got.name!r} is {got.type}, but {table.file} holds {k} there "
                f"({doc(field)['description']}); {_FIX.get(k, f'store it as {field.type}')}"
            )


def check_written(schema: pa.Schema, table: TableSchema, path: str | Path) -> None:
    """Check a table a stage is about to write (its Arrow ``schema``) against ``table``.

    A column the schema does not have, a required one missing, or one of another type is a bug
    of ours, not the user's: a :class:`TypeError` saying what to fix in the code or here."""
    want = table.schema
    unknown = [n for n in schema.names if n not in want.names]
    missing = [n for n in table.columns("required") if n not in schema.names]
    wrong = [
        f"{f.name} is {f.type}, not {want.field(f.name).type}"
        for f in schema
        if f.name in want.names and not _same_kind(f.type, want.field(f.name).type)
    ]
    problems = [
        *([f"unknown column(s) {', '.join(unknown)}"] if unknown else []),
        *([f"missing column(s) {', '.join(missing)}"] if missing else []),
        *wrong,
    ]
    if problems:
        raise TypeError(
            f"{path}: the table to write does not match cgaps.rundir.schemas ({'; '.join(problems)}); "
            "fix the writer, or declare the column in the schema"
        )


# ---------------------------------------------------------------- run.json and the other files


def run_json_keys() -> list[tuple[str, str, str]]:
    """``(key, type, description)`` per key of ``run.json``, read from the source of
    :class:`~cgaps.rundir.RunJson` itself: its annotations and the docstring under each. The
    source is parsed, not imported: :mod:`cgaps.rundir.runjson` writes through
    :mod:`cgaps.rundir.atomic`, which checks tables with this module (no import cycle)."""
    source = Path(__file__).with_name("runjson.py").read_text(encoding="utf-8")
    body = next(
        node for node in ast.parse(source).body if isinstance(node, ast.ClassDef) and node.name == "RunJson"
    )
    keys = []
    for node, after in zip(body.body, [*body.body[1:], None], strict=True):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            text = (
                after.value.value
                if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                else ""
            )
            kind = "integer" if ast.unparse(node.annotation) == "int" else "object"
            keys.append((node.target.id, kind, _plain(str(text))))
    return keys


def _plain(rst: str) -> str:
    """A docstring as one line of plain text: ``:func:`~a.b``` -> ``b``, double backquotes dropped."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", lambda m: m.group(1).rsplit(".", 1)[-1], rst)
    return " ".join(text.replace("``", "").split())


# What the files that are not tables hold (``cgaps schema`` lists them beside the tables).
OTHER_FILES: dict[str, tuple[str, str]] = {
    RUN_JSON: ("every stage (merged)", "how every table was made; its keys: `cgaps schema run.json`"),
    RESPONSES_PARTIAL: ("evaluate", "working file: one line per answered item, so evaluation resumes"),
    RESPONSES_SETTINGS: ("evaluate", "working file: the settings that shape a response"),
    SALIENCY_SHARDS: (
        "extract",
        "working folder: shard-NNNNN.parquet with a .json sidecar each, manifest.json",
    ),
    LABELS_LLM_CACHE: ("label", "working file: the LLM labeler's answers per concept, so labelling resumes"),
    ROBUSTNESS: ("robustness", "subsampling, adversarial ablation, SAE swap (docs/method.md §4)"),
    VALIDATION: ("validate", "null calibration, planted power curve, probe-family alignment"),
    REPORT: ("report", "the static report: one self-contained offline page"),
    CONFIRM_DIR: ("confirm", "working folder: the fresh items' own run directory (items, scores, saliency)"),
}


def file_names() -> tuple[str, ...]:
    """Every file ``cgaps schema`` describes: the run directory's (:data:`RUN_FILES`), then
    ``cgaps compare``'s table."""
    return (*RUN_FILES, COMPARE)


def find_file(name: str) -> str:
    """The file called ``name`` (``items``, ``items.parquet``, ``run``, ``run.json``...); an unknown
    name is a :class:`CGapsError` with a "did you mean"."""

    aliases: dict[str, str] = {}
    for file in file_names():
        aliases.setdefault(file, file)
        aliases.setdefault(file.split(".")[0], file)
    if name in aliases:
        return aliases[name]
    raise CGapsError(f"no run file {name!r}.{did_you_mean(name, aliases)} Files: {', '.join(file_names())}")


def describe(file: str) -> dict[str, Any]:
    """What ``file`` (one of :func:`file_names`) holds, as JSON-ready data: a table's columns with
    their type, presence, writer and description; run.json's keys; another file's one line."""
    if file in TABLES:
        t = TABLES[file]
        return {
            "file": t.file,
            "kind": "table",
            "row": t.row,
            "written_by": t.written_by,
            "other_columns": "refused" if t.closed else "kept",
            "columns": [{"name": f.name, "type": str(f.type), **doc(f), "holds": kind(f)} for f in t.schema],
        }
    written_by, description = OTHER_FILES[file]
    out: dict[str, Any] = {
        "file": file,
        "kind": "folder" if file == SALIENCY_SHARDS else "file",
        "written_by": written_by,
        "description": description,
    }
    if file == RUN_JSON:
        out["keys"] = [{"name": k, "type": t, "description": d} for k, t, d in run_json_keys()]
    return out
