"""The explorer's data layer: the served runs' Parquet files, queried in place through DuckDB.

Design:

- **Read in place, indexed in memory, read-only.** Each run directory's tables are read where
  they lie (docs/method.md §6): no import step, no database file, nothing written. At start
  DuckDB copies into its memory what the pages filter, sort and look up, each in the order
  that makes its lookups short ranges (its zone maps skip the rest): ``concepts.parquet`` by
  scope (a page of one scope) and again by concept (one concept's rows); one search row per
  concept (id, label, contexts' tokens and the labels stage's words); ``labels.parquet`` and
  ``contexts.parquet`` as written; the items' benchmark, score and texts (cut to what a page
  shows); the saliency as (concept, item number, value) by concept. Two things are NumPy
  arrays because a page indexes them rather than queries them: the saliency by item (a CSR
  index: a concept's neighbours are one gather and a count) and χ_bench / χ_model as
  benchmark × concept matrices (the list's small bars). Measured on 65,536 concepts × 100,000
  items with 6.1 M saliency rows: 0.8 GB, 10 s to start, 10-15 ms of CPU a request
  (docs/explorer.md).
- **The concept list from kept answers.** The list's filters other than the search are one query
  whose ordered ids are kept; a search is a substring scan of the search rows held as NumPy
  bytes (:class:`SearchRows`), kept as a mask; a page's rows are read from the scope's columns
  kept as arrays. :meth:`Store.concepts_reference` is the same answer as one SQL query.
- **A sandbox around the engine.** After the start, DuckDB may read only the served run
  directories (``allowed_directories``), external access is otherwise off and the settings are
  locked, so even a query that went wrong could not read another file. Every file is resolved
  first: one whose real path leaves its run directory (a symlink out) is treated as absent.
- **Bound parameters only.** Values from a request reach SQL as ``?`` parameters; the only
  pieces of SQL text that vary are the sort expression, picked from :data:`SORTS` by name,
  and the table names, made here from the run's index.
- **Defensive optional tables.** ``labels.parquet`` needs only ``concept``; its other columns
  (``label``, ``source`` and whatever evidence the labels stage writes) are shown as they are.
  ``themes.parquet`` is read with whatever columns it has (see :meth:`Store.themes`).

Each request works on its own DuckDB cursor (one connection per thread, same database).
"""

from __future__ import annotations

import inspect
import json
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cgaps import rundir
from cgaps.errors import CGapsError
from cgaps.report.export import GAP_FILTERS, export_frame

THEMES = rundir.THEMES  # written by `cgaps label` (cgaps.labels.themes); optional

# Sortable columns of the concept list: request name -> SQL expression (the allow-list).
SORTS = {
    "concept": "c.concept",
    "label": "lower(l.label)",
    "support": "c.support",
    "chi_bench": "c.chi_bench",
    "chi_model": "c.chi_model",
    "expected": "c.expected",
    "delta": "(c.chi_model - c.expected)",
    "ci_low": "c.ci_low",
    "ci_high": "c.ci_high",
    "n_eff": "c.n_eff",
    "status": "c.status",
    "gap": "c.gap",
    "q_value": "c.q_value",
    "chance": "c.chance",
}
STATUSES = ("missing", "under", "normal", "over")
GAPS = GAP_FILTERS  # weak, strong, strong_above_chance, strong_at_chance, none
# Text cut per example field; the page says how much more there was.
TEXT_CHARS = 1500
EXAMPLES = 4  # example items per side (high / low score)
NEAREST = 10
NEAREST_ITEMS = 1000  # the concept's highest-saliency items the neighbours are measured on
# labels.parquet columns searched besides the label (written by the labels stage, when present)
SEARCHED_LABEL_COLUMNS = (
    "tokens",
    "evidence_label",
    "imported_label",
    "llm_label",
    "output_tokens",
    "phrase",
)
NUMERIC = ("support", "chi_bench", "chi_bench_raw", "chi_model", "expected", "n_eff", "ci_low", "ci_high")


# labels.parquet's columns (docs/method.md §5) as the evidence panel names them
EVIDENCE_NAMES = {
    "phrase": "in words",
    "format": "fires on prompt text repeated across items (format)",
    "evidence_label": "label from its evidence",
    "tokens": "distinctive tokens (where it peaks, against the run's text)",
    "output_tokens": "output tokens (logit lens of its direction)",
    "enrich_facet": "grouping it is enriched in",
    "enrich_group": "group holding most of its weight",
    "enrich_mass": "share of its weight on that group",
    "enrich_items": "that group's share of the items",
    "enrich_p": "enrichment p-value (hypergeometric)",
    "imported_label": "imported label",
    "imported_source": "imported from",
    "llm_label": "label written by a language model",
    "llm_score": "that label's detection score (0.5 = chance)",
}


def evidence_name(column: str) -> str:
    """An evidence column's name in words (:data:`EVIDENCE_NAMES`, else its own with spaces)."""
    return EVIDENCE_NAMES.get(column, column.replace("_", " "))


class BadRequest(ValueError):
    """A request parameter that cannot be answered; the message says which and why (HTTP 400)."""


def _num(x: Any) -> float | None:
    """A JSON-safe number: None for NaN, inf or anything not a number."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _plain(x: Any) -> Any:
    """A JSON-safe copy of a value read from an arbitrary (labels, themes) column."""
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return _num(x)
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_plain(v) for v in x]
    if isinstance(x, (bytes, bytearray)):
        return f"<{len(x)} bytes>"
    return str(x)


def _json_or_plain(x: Any) -> Any:
    """A value of an evidence column: JSON text (lists, objects) parsed, anything else as :func:`_plain`."""
    if isinstance(x, str) and x[:1] in "[{":
        try:
            return _plain(json.loads(x))
        except ValueError:
            return x
    return _plain(x)


def _words(x: Any) -> list[str]:
    """The words of a searched value: text as it is; from JSON lists of [token, figure, ...] the
    tokens only (a search for "0.5" must not match every concept's numbers)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return []
    if isinstance(x, str) and x[:1] == "[":
        try:
            data = json.loads(x)
        except ValueError:
            return [x]
        if isinstance(data, list):
            return [
                str(d[0] if isinstance(d, list) and d else d) for d in data if not isinstance(d, (int, float))
            ]
    return [str(x)]


def _search_text(values: Any) -> str:
    return " ".join(w for v in values for w in _words(v))


def _sql_name(name: str) -> str:
    """A column name as a quoted SQL identifier (names come from the Parquet schema, not a request)."""
    return '"' + name.replace('"', '""') + '"'


class Kept:
    """The last ``size`` answers of one kind, by key, for any thread (a small LRU cache), holding
    at most ``budget`` bytes of NumPy arrays (an answer is an array or a dict of arrays; the
    newest answer is kept even where it alone is larger).

    Two threads asking for the same missing key may both compute it; either answer is kept."""

    def __init__(self, size: int, budget: int | None = None) -> None:
        self.size = size
        self.budget = budget
        self._answers: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def _nbytes(value: Any) -> int:
        if isinstance(value, np.ndarray):
            return int(value.nbytes)
        if isinstance(value, dict):
            return sum(Kept._nbytes(v) for v in value.values())
        return 0

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._answers:
                self._answers.move_to_end(key)
                return self._answers[key][0]
        value = make()
        size = self._nbytes(value)
        with self._lock:
            if key in self._answers:
                self._bytes -= self._answers.pop(key)[1]
            self._answers[key] = (value, size)
            self._bytes += size
            while len(self._answers) > 1 and (
                len(self._answers) > self.size or (self.budget is not None and self._bytes > self.budget)
            ):
                self._bytes -= self._answers.popitem(last=False)[1][1]
        return value

    def __len__(self) -> int:
        return len(self._answers)

    @property
    def nbytes(self) -> int:
        """The bytes of the arrays kept now."""
        return self._bytes


class SearchRows:
    """Every concept's search text as UTF-8 bytes in fixed-width NumPy arrays, one array per
    width (a text padded by at most an eighth), for substring search.

    On this project's shared 2-core machine, over the 65,536 search rows of bench/explorer.py's
    run, DuckDB's ``contains`` took a median 11-16 ms a search, and 61-68 ms when the process had
    been idle for 0.3 s before (a reader types, pauses, types: the caches have gone cold);
    ``numpy.strings.find`` over these arrays 6.6-6.9 ms and 17-19 ms (docs/explorer.md, Speed). A match of the UTF-8 bytes is a match of the text (no character's
    encoding begins inside another's), so the answer is the same as ``contains``; a needle with a
    NUL byte, which the fixed-width arrays cannot tell from padding, is left to DuckDB."""

    def __init__(self, concepts: np.ndarray, texts: list[str]) -> None:
        raw = [t.encode("utf-8") for t in texts]
        size = np.fromiter(map(len, raw), dtype=np.int64, count=len(raw))
        # widths 16, 24, 32, ... each at most 1/8 above the one before (a multiple of 8): a text is
        # padded by at most an eighth, and a search is one call a width (tens at most)
        widths = [16]
        while widths[-1] < max(int(size.max(initial=0)), 16):
            widths.append(widths[-1] + max(8, widths[-1] // 64 * 8))
        width = np.asarray(widths)[np.searchsorted(widths, np.maximum(size, 1))]
        self.buckets: list[tuple[np.ndarray, np.ndarray]] = []
        for w in np.unique(width):
            pick = np.flatnonzero(width == w)
            self.buckets.append(
                (np.asarray(concepts)[pick].astype(np.int64), np.array([raw[i] for i in pick], dtype=f"S{w}"))
            )

    def find(self, needle: str) -> np.ndarray | None:
        """The concepts whose text contains ``needle`` (lower-cased already), or None where the
        needle has a NUL byte (ask DuckDB)."""
        data = needle.encode("utf-8")
        if b"\x00" in data:
            return None
        found = [ids[np.strings.find(texts, data) >= 0] for ids, texts in self.buckets]
        return np.concatenate(found) if found else np.zeros(0, np.int64)


# the concept list's columns of a scope and of the labels, as a page reads them
LIST_COLUMNS = (
    "support", "chi_bench", "chi_model", "expected", "ci_low", "ci_high", "n_eff",
    "status", "gap", "q_value", "chance", "p_chance", "at_chance",
)  # fmt: skip
LIST_LABELS = ("label", "source", "tokens", "format")


def _concept_number(q: str) -> int | None:
    """The concept a search names by number ("42", "c42", "#42"), if it does: decimal digits only
    ("²" is a digit to str.isdigit, and not to int)."""
    digits = q.lstrip("#c").strip()
    return int(digits) if digits.isdecimal() else None


def _plain_columns(got: dict[str, Any]) -> dict[str, np.ndarray]:
    """DuckDB's ``fetchnumpy`` columns with its masks resolved: NaN in a number column, None in
    any other, as the rows of a query read them (a page reads values, not masks)."""
    out = {}
    for name, col in got.items():
        if isinstance(col, np.ma.MaskedArray):
            mask = np.ma.getmaskarray(col)
            if col.dtype.kind == "f":
                col = col.filled(np.nan)
            else:
                col = np.asarray(col.data, dtype=object)
                col[mask] = None
        out[name] = np.asarray(col)
    return out


# the concept list's kept answers per run: the ids of the last filters in their order (a reader
# changes a filter rarely and types often), and the match masks of the last searches
# counts and byte budgets: at 65,536 concepts the counts bind (16 orders of 0.25 MB, 64 masks of
# 64 KB, 5 column sets of ~7 MB); a run with a million concepts is held to the budgets instead
KEPT_ORDERS, KEPT_ORDERS_BYTES = 16, 32 << 20
KEPT_SEARCHES, KEPT_SEARCHES_BYTES = 64, 16 << 20
KEPT_SCOPES, KEPT_COLUMNS_BYTES = 4, 128 << 20


@dataclass
class Run:
    """One served run directory: its files (resolved, inside it) and what the list pages need."""

    index: int
    name: str
    path: Path
    meta: dict[str, Any]
    n_concepts: int
    files: dict[str, Path] = field(default_factory=dict)
    benchmarks: list[str] = field(default_factory=list)
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    label_columns: list[str] = field(default_factory=list)
    item_columns: list[str] = field(default_factory=list)
    scoring_config: dict[str, Any] = field(default_factory=dict)
    # the saliency by item (CSR: item i's firing concepts are item_concepts[item_ptr[i]:item_ptr[i+1]])
    # and how many items each concept fires on
    item_ptr: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    item_concepts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    fires: np.ndarray = field(default_factory=lambda: np.zeros(0))
    per_bench: dict[str, np.ndarray] = field(default_factory=dict)
    theme_rows: list[dict[str, Any]] | None = None  # themes.parquet, read on first use
    # accuracy and chance level per benchmark and category (cgaps.chance.group_table)
    groups: list[dict[str, Any]] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)  # ALL scope: gaps, strengths, at chance
    theme_chance: dict[tuple[Any, str], dict[str, Any]] = field(default_factory=dict)
    # the concept list's kept answers (Store.concepts) and one more than the largest concept id
    orders: Kept = field(default_factory=lambda: Kept(KEPT_ORDERS, KEPT_ORDERS_BYTES))
    searches: Kept = field(default_factory=lambda: Kept(KEPT_SEARCHES, KEPT_SEARCHES_BYTES))
    # by scope, and None: the labels
    columns: Kept = field(default_factory=lambda: Kept(KEPT_SCOPES + 1, KEPT_COLUMNS_BYTES))
    id_bound: int = 0
    search_rows: SearchRows | None = None

    @property
    def t(self) -> str:
        """Prefix of this run's in-memory tables."""
        return f"r{self.index}"

    def summary(self) -> dict[str, Any]:
        def part(key: str) -> dict[str, Any]:
            value = self.meta.get(key)
            return value if isinstance(value, dict) else {}

        config, model, sae = part("config"), part("model"), part("sae")
        return {
            "name": self.name,
            "n_concepts": self.n_concepts,
            "benchmarks": self.benchmarks,
            "accuracy": self.accuracy,
            "has": {k: k in self.files for k in ("labels", "contexts", "themes", "overlap")},
            "model": _plain(model.get("evaluated", config.get("model"))),
            "sae": _plain(sae.get("id", config.get("sae"))),
            "scoring_config": _plain(self.scoring_config),
            "label_columns": self.label_columns,
            "calls": self.calls,
            "suite": next((g for g in self.groups if g["group"] == rundir.ALL_SCOPE), None),
        }


_FILES = {
    "run_json": rundir.RUN_JSON,
    "items": rundir.ITEMS,
    "saliency": rundir.SALIENCY,
    "concepts": rundir.CONCEPTS,
    "overlap": rundir.OVERLAP,
    "labels": rundir.LABELS,
    "contexts": rundir.CONTEXTS,
    "themes": THEMES,
}
_REQUIRED = ("run_json", "items", "saliency", "concepts")


def _inside(path: Path, root: Path) -> Path | None:
    """``path`` resolved, when it is a regular file whose real location is inside ``root``."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return real if real.is_file() and real.is_relative_to(root) else None


def _unique_names(paths: list[Path]) -> list[str]:
    names: list[str] = []
    for p in paths:
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", p.name) or "run"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


class Store:
    """The served runs and the one in-memory DuckDB database that queries them."""

    def __init__(self, run_dirs: list[Path], *, memory_limit: str = "1GB", threads: int = 1) -> None:
        import duckdb

        if not run_dirs:
            raise CGapsError("no run directory given; pass one or more RUN_DIRs written by `cgaps score`")
        if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", memory_limit, flags=re.IGNORECASE):
            raise CGapsError(f"memory limit {memory_limit!r}: give a size such as 512MB or 2GB")
        self.con = duckdb.connect(":memory:")
        self.con.execute(f"SET memory_limit = '{memory_limit}'")
        self._local = threading.local()
        self.runs: list[Run] = []
        roots = [Path(p).resolve() for p in run_dirs]
        for i, (root, name) in enumerate(zip(roots, _unique_names(roots), strict=True)):
            self.runs.append(self._open(i, name, Path(run_dirs[i]), root))
        # from here on the engine reads only the served directories, and nobody can change that
        allowed = ", ".join("'" + str(r).replace("'", "''") + "/'" for r in roots)
        self.con.execute(f"SET allowed_directories = [{allowed}]")
        self.con.execute("SET enable_external_access = false")
        # loading sorts millions of rows on every core; a request's queries are small, and on shared
        # cores DuckDB's worker threads cost more than they save (docs/explorer.md, Speed)
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        self.con.execute("SET lock_configuration = true")
        # (a, b) -> the paired comparison table, its summary per scope and its record
        self._compare_cache: dict[tuple[str, str], tuple[Any, list[dict[str, Any]], dict[str, Any]]] = {}
        self._bench_cache: dict[tuple[str, int], dict[str, Any]] = {}

    # ------------------------------------------------------------ loading

    def _open(self, index: int, name: str, given: Path, root: Path) -> Run:
        if not root.is_dir():
            raise CGapsError(f"{given}: not a directory; pass a run directory written by `cgaps score`")
        files = {}
        for key, fname in _FILES.items():
            found = _inside(root / fname, root)
            if found is not None:
                files[key] = found
            elif key in _REQUIRED:
                fix = "run `cgaps score RUN_DIR`" if key == "concepts" else "run `cgaps run` on it"
                raise CGapsError(
                    f"{given / fname}: missing (or a link out of the run directory); {fix} first"
                )
        if "themes" not in files:
            # not labelled yet: the themes `cgaps score` tested are findings of their own (a gap
            # theme may have no member called alone), shown named by their members
            tested = _inside(root / rundir.THEME_TESTS, root)
            if tested is not None:
                files["themes"] = tested
        meta = rundir.read_run_json(root)
        run = Run(index, name, root, meta, rundir.n_concepts(meta, given), files)
        run.scoring_config = rundir.read_table_config(files["concepts"]) or {
            k: v
            for k, v in (meta.get("config") or {}).items()
            if k in ("presence", "min_support", "fdr", "ci_level")
        }
        cols = {key: self._columns(files[key]) for key in files if key != "run_json"}
        need = {
            "items": ("item_id", "benchmark", "prompt", "reference", "response", "score"),
            "saliency": rundir.SALIENCY_COLUMNS,
            "concepts": rundir.CONCEPT_COLUMNS,
            "overlap": rundir.OVERLAP_COLUMNS,
            "contexts": rundir.CONTEXT_COLUMNS,
            "labels": ("concept",),
        }
        for key, columns in need.items():
            if key in cols:
                missing = [c for c in columns if c not in cols[key]]
                if missing:
                    raise CGapsError(
                        f"{files[key]}: missing column(s) {', '.join(missing)}; rerun the stage that writes it"
                    )
        run.item_columns = cols["items"]
        run.label_columns = cols.get("labels", [])
        self._load(run, cols)
        return run

    def _columns(self, path: Path) -> list[str]:
        try:
            rows = self.con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(path)]).fetchall()
        except Exception as e:  # a damaged file: say which one
            raise CGapsError(
                f"{path}: not a readable Parquet table ({e}); rerun the stage that writes it"
            ) from e
        return [str(r[0]) for r in rows]

    def _load(self, run: Run, cols: dict[str, list[str]]) -> None:
        """Copy what every request filters on into DuckDB's memory (see the module docstring)."""
        from cgaps.chance import concept_chance, group_table, scored_matrix
        from cgaps.runtables import load_run

        t, con, f = run.t, self.con, run.files
        # items: the row number `i` stands for the item id in the saliency index (4 bytes, not a string)
        con.execute(
            f"CREATE TABLE {t}_items AS SELECT CAST(row_number() OVER () - 1 AS INTEGER) AS i, "
            "CAST(item_id AS VARCHAR) AS item_id, CAST(benchmark AS VARCHAR) AS benchmark, "
            "CAST(score AS DOUBLE) AS score FROM read_parquet(?)",
            [str(f["items"])],
        )
        bench = con.execute(
            f"SELECT benchmark, count(*), avg(score), min(i) FROM {t}_items GROUP BY benchmark ORDER BY 4"
        ).fetchall()
        run.benchmarks = [str(b) for b, *_ in bench]
        run.accuracy = {str(b): {"n": int(n), "mean": _num(m) or 0.0} for b, n, m, _ in bench}
        n, m = con.execute(f"SELECT count(*), avg(score) FROM {t}_items").fetchone() or (0, 0.0)
        run.accuracy[rundir.ALL_SCOPE] = {"n": int(n), "mean": _num(m) or 0.0}
        fdr = self._fdr(run)
        # the saliency as the scores saw it: thresholded at the tables' presence config field on the same
        # concept scale (cgaps.chance.scored_matrix), so that examples, contexts, neighbours and
        # counts never show an item the scores did not count
        tables = load_run(run.path, coded=True)
        matrix = scored_matrix(tables, run.scoring_config)
        run.groups = [
            {k: (_num(v) if isinstance(v, float) else v) for k, v in g.items()}
            for g in group_table(tables.items, fdr).to_dict("records")
        ]
        floats = ", ".join(f"CAST({c} AS DOUBLE) AS {c}" for c in NUMERIC[1:] + ("q_value",))
        # each row's chance level and its test (cgaps.chance), joined to the scoring table
        scored = con.execute(
            "SELECT CAST(concept AS INTEGER) AS concept, CAST(scope AS VARCHAR) AS scope, "
            "CAST(chi_model AS DOUBLE) AS chi_model, CAST(n_eff AS DOUBLE) AS n_eff FROM read_parquet(?)",
            [str(f["concepts"])],
        ).df()
        chance = concept_chance(matrix, scored, tables.items, fdr)
        con.register("chance_rows", chance)
        # sorted by scope: a page of one scope reads one stretch of the table (DuckDB's zone maps)
        con.execute(
            f"CREATE TABLE {t}_c AS SELECT CAST(c.concept AS INTEGER) AS concept, CAST(c.scope AS VARCHAR) AS scope, "
            f"CAST(c.support AS BIGINT) AS support, {floats}, CAST(c.status AS VARCHAR) AS status, "
            "coalesce(CAST(c.gap AS VARCHAR), '') AS gap, CAST(h.chance AS DOUBLE) AS chance, "
            "CAST(h.p_chance AS DOUBLE) AS p_chance, coalesce(h.at_chance, false) AS at_chance "
            "FROM read_parquet(?) c LEFT JOIN chance_rows h ON h.concept = CAST(c.concept AS INTEGER) "
            "AND h.scope = CAST(c.scope AS VARCHAR) ORDER BY scope, concept",
            [str(f["concepts"])],
        )
        con.unregister("chance_rows")
        del scored, chance
        scopes = {s for (s,) in con.execute(f"SELECT DISTINCT scope FROM {t}_c").fetchall()}
        absent = [s for s in [*run.benchmarks, rundir.ALL_SCOPE] if s not in scopes]
        if absent:
            raise CGapsError(
                f"{f['concepts']}: no rows for scope(s) {', '.join(map(repr, absent))}; "
                "rerun `cgaps score RUN_DIR`"
            )
        weak, strong, at = con.execute(
            f"SELECT count(*) FILTER (gap = 'weak'), count(*) FILTER (gap = 'strong'), "
            f"count(*) FILTER (gap = 'strong' AND at_chance) FROM {t}_c WHERE scope = ?",
            [rundir.ALL_SCOPE],
        ).fetchone() or (0, 0, 0)
        run.calls = {"gaps": int(weak), "strengths": int(strong), "strengths_at_chance": int(at)}
        # the present saliency twice: as (concept, item, value) sorted by concept in DuckDB (a
        # concept's items are one short stretch, 12 bytes a row), and by item as two arrays (a CSR
        # index: the concepts firing on an item set, the neighbours, in one gather)
        order = con.execute(f"SELECT item_id FROM {t}_items ORDER BY i").fetchnumpy()["item_id"]
        place = pd.Index(np.asarray(order, dtype=object).astype(str)).get_indexer(matrix.item_ids.astype(str))
        coo = matrix.saliency.tocoo()
        rows = pd.DataFrame(
            {
                "concept": coo.col.astype(np.int32),
                "item": place[coo.row].astype(np.int32),
                "value": coo.data.astype(np.float32),
            }
        )
        run.theme_chance = self._theme_chance(run, matrix, tables.items, fdr)
        # gap and strength themes of ALL: findings of their own, even where no member is called
        all_themes = [r for r in self._theme_rows(run) if str(r.get("scope")) == rundir.ALL_SCOPE]
        run.calls["theme_gaps"] = sum(r.get("gap") == "weak" for r in all_themes)
        run.calls["theme_strengths"] = sum(r.get("gap") == "strong" for r in all_themes)
        del tables, matrix, coo
        con.register("present_rows", rows)
        con.execute(
            f"CREATE TABLE {t}_s AS SELECT concept, item, value FROM present_rows ORDER BY concept, value DESC, item"
        )
        con.unregister("present_rows")
        by_item = rows.sort_values(["item", "concept"], kind="stable")
        counts = np.bincount(by_item["item"].to_numpy(), minlength=int(run.accuracy[rundir.ALL_SCOPE]["n"]))
        run.item_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        run.item_concepts = by_item["concept"].to_numpy(dtype=np.int32)
        del by_item, rows
        # labels as written (any columns), and one search row per concept: id, label, source, tokens
        if "labels" in f:
            con.execute(
                f"CREATE TABLE {t}_labels AS SELECT * REPLACE (CAST(concept AS INTEGER) AS concept) "
                "FROM read_parquet(?) ORDER BY concept",
                [str(f["labels"])],
            )
        if "contexts" in f:
            # only the contexts on items where the concept is present (the scores' threshold)
            con.execute(
                f"CREATE TABLE {t}_ctx AS SELECT CAST(x.concept AS INTEGER) AS concept, CAST(x.rank AS INTEGER) AS rank, "
                'CAST(x.item_id AS VARCHAR) AS item_id, CAST(x.value AS DOUBLE) AS value, CAST(x."left" AS VARCHAR) AS '
                '"left", CAST(x.token AS VARCHAR) AS token, CAST(x."right" AS VARCHAR) AS "right" '
                f"FROM read_parquet(?) x JOIN {t}_items i ON i.item_id = CAST(x.item_id AS VARCHAR) "
                f"WHERE EXISTS (SELECT 1 FROM {t}_s s WHERE s.concept = CAST(x.concept AS INTEGER) AND s.item = i.i) "
                "ORDER BY concept, rank",
                [str(f["contexts"])],
            )
        lab = [c for c in ("label", "source", "phrase", "format") if c in cols.get("labels", [])]
        label_sql = ", ".join(
            f"CAST(l.{c} AS VARCHAR) AS {c}" if c in lab else f"NULL::VARCHAR AS {c}"
            for c in ("label", "source")
        )
        if "phrase" in lab:  # the labels stage's phrase, when it wrote one, is the name shown
            label_sql = label_sql.replace(
                "CAST(l.label AS VARCHAR) AS label",
                "coalesce(nullif(CAST(l.phrase AS VARCHAR), ''), CAST(l.label AS VARCHAR)) AS label",
            )
        label_sql += (
            ", coalesce(CAST(l.format AS BOOLEAN), false) AS format"
            if "format" in lab
            else ", false AS format"
        )
        sql = f"CREATE TABLE {t}_lab AS SELECT k.concept, {label_sql}, "
        sql += "x.tokens" if "contexts" in f else "NULL::VARCHAR AS tokens"
        sql += f" FROM (SELECT DISTINCT concept FROM {t}_c) k"
        if "labels" in f:
            sql += f" LEFT JOIN {t}_labels l ON l.concept = k.concept"
        if "contexts" in f:
            sql += (
                f" LEFT JOIN (SELECT concept, string_agg(DISTINCT trim(token), ' ') AS tokens FROM {t}_ctx "
                "GROUP BY 1) x ON x.concept = k.concept"
            )
        con.execute(sql + " ORDER BY k.concept")
        # the search text of each concept: its id, label and tokens, with the labels stage's other
        # words (distinctive and output tokens, other sources' labels) taken out of their JSON
        extra = [c for c in SEARCHED_LABEL_COLUMNS if c in cols.get("labels", [])]
        words = "".join(f", x.{_sql_name(c)}" for c in extra)
        sql = f"SELECT k.concept, k.label, k.tokens{words} FROM {t}_lab k"
        if extra:
            sql += f" LEFT JOIN {t}_labels x ON x.concept = k.concept"
        frame = con.execute(sql + " ORDER BY k.concept").df()
        texts = [_search_text(row) for row in frame.drop(columns="concept").itertuples(index=False)]
        search = pd.DataFrame(
            {
                "concept": frame["concept"],
                "search": ("c" + frame["concept"].astype(str) + " " + pd.Series(texts)).str.lower(),
            }
        )
        con.register("search_rows", search)
        con.execute(f"CREATE TABLE {t}_q AS SELECT concept, search FROM search_rows ORDER BY concept")
        con.unregister("search_rows")
        run.id_bound = max(run.n_concepts, int(frame["concept"].max()) + 1 if len(frame) else 0)
        run.search_rows = SearchRows(search["concept"].to_numpy(), search["search"].tolist())
        # χ_bench and χ_model as benchmark x concept arrays: a page's per-benchmark bars by indexing
        for key in ("chi_bench", "chi_model"):
            mat = np.full((len(run.benchmarks), run.n_concepts), np.nan)
            for k, b in enumerate(run.benchmarks):
                got = con.execute(
                    f"SELECT concept, {key} FROM {t}_c WHERE scope = ? AND concept BETWEEN 0 AND ?",
                    [b, run.n_concepts - 1],
                ).fetchnumpy()
                mat[k, got["concept"]] = np.ma.filled(np.ma.asarray(got[key], dtype=np.float64), np.nan)
            run.per_bench[key] = mat
        # the concept table again, by concept: one concept's rows are one stretch (the detail view)
        con.execute(f"CREATE TABLE {t}_cc AS SELECT * FROM {t}_c ORDER BY concept, scope")
        # the item texts the pages show, cut to what they show (the rest is counted, not kept)
        category = "CAST(x.category AS VARCHAR)" if "category" in cols["items"] else "NULL::VARCHAR"
        cut = "".join(
            f", left(CAST({c} AS VARCHAR), {TEXT_CHARS}) AS {c}, length(CAST({c} AS VARCHAR)) AS {c}_len"
            for c in ("prompt", "response", "reference")
        )
        con.execute(
            f"CREATE TABLE {t}_texts AS SELECT i.i{cut}, {category} AS category FROM read_parquet(?) x "
            f"JOIN {t}_items i ON i.item_id = CAST(x.item_id AS VARCHAR) ORDER BY i.i",
            [str(f["items"])],
        )
        run.fires = np.bincount(run.item_concepts, minlength=run.n_concepts).astype(np.float64)

    @staticmethod
    def _theme_chance(
        run: Run, matrix: Any, items: pd.DataFrame, fdr: float
    ) -> dict[tuple[Any, str], dict[str, Any]]:
        """(theme, scope) -> its chance level, p-value and ``at_chance`` (as the report computes
        them, :func:`cgaps.report.build.theme_chance`), for a themes table the labels stage wrote."""
        if "themes" not in run.files:
            return {}
        from cgaps.chance import matrix_chance
        from cgaps.report.build import theme_chance

        themes = pd.read_parquet(run.files["themes"])
        if not {"theme", "scope", "members", "chi_model", "n_eff"} <= set(themes.columns) or themes.empty:
            return {}  # another writer's table: shown as it is, without chance levels
        themes["scope"] = themes["scope"].astype(str)
        done = theme_chance(themes, matrix, matrix_chance(matrix, items), fdr)
        return {
            (_plain(r.theme), str(r.scope)): {
                "chance": _num(r.chance),
                "p_chance": _num(r.p_chance),
                "at_chance": bool(r.at_chance) and r.gap == "strong",
            }
            for r in done.itertuples(index=False)
        }

    # ------------------------------------------------------------ helpers

    @staticmethod
    def _fdr(run: Run) -> float:
        """The run's ``fdr`` (from its scoring tables' config): the level of its calls and chance tests."""
        v = _num(run.scoring_config.get("fdr"))
        return v if v is not None else 0.05

    def cursor(self) -> Any:
        """This thread's cursor on the shared database."""
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._local.cur = self.con.cursor()
        return cur

    def run(self, name: str | None) -> Run:
        """The run called ``name`` (the first one when None)."""
        if name is None or name == "":
            return self.runs[0]
        for r in self.runs:
            if r.name == name:
                return r
        raise BadRequest(f"run {name!r} is not served; served runs: {', '.join(r.name for r in self.runs)}")

    def scope(self, run: Run, scope: str | None) -> str:
        if scope is None or scope == "":
            return rundir.ALL_SCOPE
        if scope != rundir.ALL_SCOPE and scope not in run.benchmarks:
            raise BadRequest(
                f"scope {scope!r} is not a benchmark of run {run.name!r}; choose ALL or one of "
                f"{', '.join(run.benchmarks)}"
            )
        return scope

    def concept_id(self, run: Run, concept: int) -> int:
        if not 0 <= concept < run.n_concepts:
            raise BadRequest(
                f"concept {concept} is out of range; run {run.name!r} has concepts 0-{run.n_concepts - 1}"
            )
        return concept

    def _rows(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        cur = self.cursor().execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    # ------------------------------------------------------------ the concept list

    def concepts(
        self,
        run: Run,
        *,
        scope: str,
        q: str = "",
        gap: str = "",
        status: str = "",
        min_support: int = 0,
        sort: str = "q_value",
        order: str = "asc",
        page: int = 1,
        per_page: int = 50,
    ) -> dict[str, Any]:
        """One page of the concept list, filtered and sorted server-side.

        The filters other than the search pick the concepts in the list's order by one query
        whose answer is kept (:meth:`_ordered`); a search is then a mask over those ids
        (:meth:`_matches`, also kept), so typing into the search box costs one scan of the
        search rows and no sort. :meth:`concepts_reference` is the same page as one SQL query."""
        ordering = self._ordering(run, sort, order)
        q = q.strip()
        ids = self._ordered(run, scope, gap, status, min_support, ordering)
        if q:
            ids = ids[self._matches(run, q)[ids]]
        start = (page - 1) * per_page
        rows = self._page_rows(run, scope, ids[start : start + per_page].tolist())
        return self._page(run, scope, rows, len(ids), page, per_page)

    def concepts_reference(self, run: Run, **ask: Any) -> dict[str, Any]:
        """:meth:`concepts` (the same keyword arguments and defaults) written plainly: the
        filters, the search, the order and the page in one SQL query (what the kept orders and
        masks must give, checked in the tests)."""
        a = inspect.signature(Store.concepts).bind(self, run, **ask)
        a.apply_defaults()
        scope, page, per_page = a.arguments["scope"], a.arguments["page"], a.arguments["per_page"]
        join, order_by = self._ordering(run, a.arguments["sort"], a.arguments["order"])
        where, params = self._where(
            run,
            scope,
            a.arguments["q"].strip(),
            a.arguments["gap"],
            a.arguments["status"],
            a.arguments["min_support"],
        )
        sql = (
            f"SELECT c.concept, {', '.join('c.' + k for k in LIST_COLUMNS)}, "
            f"{', '.join('x.' + k for k in LIST_LABELS)} FROM {run.t}_c c {join} "
            f"JOIN {run.t}_lab x ON x.concept = c.concept WHERE {' AND '.join(where)} "
            f"ORDER BY {order_by} LIMIT ? OFFSET ?"
        )
        rows = self._rows(sql, [*params, per_page, (page - 1) * per_page])
        return self._page(run, scope, rows, self._count(run.t, where, params), page, per_page)

    @staticmethod
    def _ordering(run: Run, sort: str, order: str) -> tuple[str, str]:
        """The list's order as SQL: the join it needs (the labels, to sort by them) and the ORDER
        BY clause (the sort, nulls last, then concept id). ``sort`` is checked against :data:`SORTS`."""
        if sort not in SORTS:
            raise BadRequest(f"cannot sort by {sort!r}; sortable columns: {', '.join(SORTS)}")
        join = f"JOIN {run.t}_lab l ON l.concept = c.concept" if sort == "label" else ""
        return join, f"{SORTS[sort]} {'DESC' if order == 'desc' else 'ASC'} NULLS LAST, c.concept ASC"

    def _ordered(
        self, run: Run, scope: str, gap: str, status: str, min_support: int, ordering: tuple[str, str]
    ) -> np.ndarray:
        """The ids of the concepts that pass the list's filters other than the search, in the
        list's order (the sort, nulls last, then concept id): one query per filter, kept."""

        def query() -> np.ndarray:
            where, params = self._where(run, scope, "", gap, status, min_support)
            join, order_by = ordering
            sql = f"SELECT c.concept FROM {run.t}_c c {join} WHERE {' AND '.join(where)} ORDER BY {order_by}"
            got = self.cursor().execute(sql, params).fetchnumpy()["concept"]
            return np.asarray(got, dtype=np.int32)

        return run.orders.get((scope, gap, status, int(min_support), ordering), query)

    def _matches(self, run: Run, q: str) -> np.ndarray:
        """Which concepts a search matches, as a mask by concept id (kept for the last searches:
        the next page of a search, or a word typed again, scans nothing)."""

        def scan() -> np.ndarray:
            got = run.search_rows.find(q.lower()) if run.search_rows is not None else None
            if got is None:  # a NUL in the needle: DuckDB's scan
                got = (
                    self.cursor()
                    .execute(f"SELECT concept FROM {run.t}_q WHERE contains(search, ?)", [q.lower()])
                    .fetchnumpy()["concept"]
                )
            mask = np.zeros(run.id_bound, dtype=bool)
            mask[np.asarray(got, dtype=np.int64)] = True
            number = _concept_number(q)
            if number is not None and number < run.id_bound:
                mask[number] = True
            return mask

        return run.searches.get(q, scan)

    def _page(
        self, run: Run, scope: str, rows: list[dict[str, Any]], total: int, page: int, per_page: int
    ) -> dict[str, Any]:
        """The list's answer from its rows as read (:meth:`_page_rows` or the reference's SQL)."""
        per = self._per_benchmark(run, [int(r["concept"]) for r in rows])
        out = []
        for r in rows:
            c = int(r["concept"])
            out.append(
                {
                    "concept": c,
                    "label": r["label"],
                    "source": r["source"],
                    "tokens": (r["tokens"] or "")[:200] or None,
                    "format": bool(r["format"]),
                    "support": int(r["support"]),
                    **{
                        k: _num(r[k])
                        for k in ("chi_bench", "chi_model", "expected", "ci_low", "ci_high", "n_eff")
                    },
                    "q_value": _num(r["q_value"]),
                    "chance": _num(r["chance"]),
                    "p_chance": _num(r["p_chance"]),
                    "at_chance": bool(r["at_chance"]) and r["gap"] == "strong",
                    "status": r["status"],
                    "gap": r["gap"],
                    "per_benchmark": per.get(c, {}),
                }
            )
        return {
            "run": run.name,
            "scope": scope,
            "total": total,
            "page": page,
            "per_page": per_page,
            "rows": out,
        }

    def _page_rows(self, run: Run, scope: str, ids: list[int]) -> list[dict[str, Any]]:
        """The list's columns of the concepts ``ids`` in ``scope``, in that order, read from the
        scope's columns and the labels kept as arrays (a page is 25-50 lookups, not a query)."""
        if not ids:
            return []
        t = run.t

        def kept(key: str | None, sql: str, params: list[Any]) -> dict[str, np.ndarray]:
            return run.columns.get(
                key, lambda: _plain_columns(self.cursor().execute(sql, params).fetchnumpy())
            )

        cols = kept(
            scope,
            f"SELECT concept, {', '.join(LIST_COLUMNS)} FROM {t}_c WHERE scope = ? ORDER BY concept",
            [scope],
        )
        labels = kept(None, f"SELECT concept, {', '.join(LIST_LABELS)} FROM {t}_lab ORDER BY concept", [])
        want = np.asarray(ids, dtype=np.int64)
        at, lat = np.searchsorted(cols["concept"], want), np.searchsorted(labels["concept"], want)
        return [
            {"concept": c, **{k: cols[k][i] for k in LIST_COLUMNS}, **{k: labels[k][j] for k in LIST_LABELS}}
            for c, i, j in zip(ids, at.tolist(), lat.tolist(), strict=True)
        ]

    def _where(
        self, run: Run, scope: str, q: str, gap: str, status: str, min_support: int
    ) -> tuple[list[str], list[Any]]:
        """The list's filters as SQL conditions on ``c`` (a run's concept table) and their parameters."""
        where: list[str] = ["c.scope = ?"]
        params: list[Any] = [scope]
        if q:
            # a plain substring test: nothing in q is a pattern, and it scans the 65,536 search rows
            # of a large run in half the time of LIKE with an escape clause (docs/explorer.md)
            cond = f"c.concept IN (SELECT concept FROM {run.t}_q WHERE contains(search, ?))"
            params.append(q.lower())
            number = _concept_number(q)
            if number is not None:
                cond = f"({cond} OR c.concept = ?)"
                params.append(number)
            where.append(cond)
        where += self._gap_filter(gap)
        if status:
            where.append("c.status = ?")
            params.append(status)
        if min_support:
            where.append("c.support >= ?")
            params.append(int(min_support))
        return where, params

    def export(
        self,
        run: Run,
        *,
        scope: str,
        q: str = "",
        gap: str = "",
        status: str = "",
        min_support: int = 0,
        sort: str = "q_value",
        order: str = "asc",
    ) -> str:
        """Every row the list's filters keep, in its order, as the CSV of :mod:`cgaps.report.export`
        (the file ``cgaps export`` writes for the same rows)."""
        if sort not in SORTS:
            raise BadRequest(f"cannot sort by {sort!r}; sortable columns: {', '.join(SORTS)}")
        where, params = self._where(run, scope, q.strip(), gap, status, min_support)
        direction = "DESC" if order == "desc" else "ASC"
        join = f"JOIN {run.t}_lab l ON l.concept = c.concept" if sort == "label" else ""
        rows = (
            self.cursor()
            .execute(
                f"SELECT c.* FROM {run.t}_c c {join} WHERE {' AND '.join(where)} "
                f"ORDER BY {SORTS[sort]} {direction} NULLS LAST, c.concept ASC",
                params,
            )
            .df()
        )
        labels = None
        if "labels" in run.files:
            keep = [c for c in ("concept", "label", "phrase", "format") if c in run.label_columns]
            labels = (
                self.cursor().execute(f"SELECT {', '.join(map(_sql_name, keep))} FROM {run.t}_labels").df()
            )
        from cgaps.report.export import to_csv

        return to_csv(export_frame(rows, labels))

    @staticmethod
    def _gap_filter(gap: str) -> list[str]:
        """SQL conditions for one of :data:`GAPS` (values from the allow-list only, never the request)."""
        return {
            "": [],
            "weak": ["c.gap = 'weak'"],
            "strong": ["c.gap = 'strong'"],
            "strong_above_chance": ["c.gap = 'strong'", "NOT c.at_chance"],
            "strong_at_chance": ["c.gap = 'strong'", "c.at_chance"],
            "none": ["c.gap = ''"],
        }[gap]

    def _count(self, t: str, where: list[str], params: list[Any]) -> int:
        sql = f"SELECT count(*) FROM {t}_c c WHERE {' AND '.join(where)}"
        return int(self.cursor().execute(sql, params).fetchone()[0])

    def _per_benchmark(self, run: Run, ids: list[int]) -> dict[int, dict[str, list[float | None]]]:
        """χ_bench and χ_model per benchmark (in the run's benchmark order) for the given concepts."""
        return {c: {key: [_num(v) for v in m[:, c]] for key, m in run.per_bench.items()} for c in ids}

    # ------------------------------------------------------------ one concept

    def concept(self, run: Run, concept: int, scope: str) -> dict[str, Any]:
        """Everything the detail view shows about one concept."""
        t, f = run.t, run.files
        scopes = self._rows(f"SELECT * FROM {t}_cc WHERE concept = ?", [concept])
        order = {b: i for i, b in enumerate([*run.benchmarks, rundir.ALL_SCOPE])}
        scopes.sort(key=lambda r: order.get(r["scope"], len(order)))
        per_scope = [
            {
                "scope": r["scope"],
                "support": int(r["support"]),
                **{k: _num(r[k]) for k in (*NUMERIC[1:], "q_value", "chance", "p_chance")},
                "status": r["status"],
                "gap": r["gap"],
                "at_chance": bool(r["at_chance"]) and r["gap"] == "strong",
                "n_items": run.accuracy.get(r["scope"], {}).get("n"),
                "accuracy": run.accuracy.get(r["scope"], {}).get("mean"),
            }
            for r in scopes
        ]
        lab = self._rows(f"SELECT label, source, tokens FROM {t}_lab WHERE concept = ?", [concept])
        evidence: dict[str, Any] = {}
        enrichment = None
        if "labels" in f:
            rows = self._rows(f"SELECT * FROM {t}_labels WHERE concept = ? LIMIT 1", [concept])
            if rows:
                evidence = {
                    k: _json_or_plain(v)
                    for k, v in rows[0].items()
                    if k not in ("concept", "label", "source")
                }
                from cgaps.report.build import enrichment_words

                r = rows[0]
                enrichment = enrichment_words(
                    r.get("enrich_group"), r.get("enrich_mass"), r.get("enrich_items"), r.get("enrich_p")
                )
        contexts = []
        if "contexts" in f:
            contexts = [
                {k: _plain(v) for k, v in r.items()}
                for r in self._rows(
                    f'SELECT rank, item_id, value, "left", token, "right" FROM {t}_ctx WHERE concept = ? '
                    "ORDER BY rank LIMIT 20",
                    [concept],
                )
            ]
        return {
            "run": run.name,
            "concept": concept,
            "scope": scope,
            "label": lab[0]["label"] if lab else None,
            "source": lab[0]["source"] if lab else None,
            "tokens": lab[0]["tokens"] if lab else None,
            "evidence": evidence,
            # the evidence columns' names in words (EVIDENCE_NAMES; an unknown column by its own name)
            "evidence_names": {k: evidence_name(k) for k in evidence},
            "enrichment": enrichment,
            "themes": self._themes_of(run, concept),
            "scopes": per_scope,
            "contexts": contexts,
            "examples": self.examples(run, concept, scope),
            "nearest": self.nearest(run, concept),
        }

    def examples(self, run: Run, concept: int, scope: str) -> dict[str, Any]:
        """The highest-saliency items with a high score (≥ 0.5) and with a low one, side by side."""
        t = run.t
        bench = "" if scope == rundir.ALL_SCOPE else "AND i.benchmark = ?"
        picked = []
        for high, test in ((True, "i.score >= 0.5"), (False, "i.score < 0.5")):
            # the saliency table is sorted by (concept, value desc): a short, ordered stretch
            picked += self._rows(
                f"SELECT i.i, i.item_id, s.value, i.score, i.benchmark, {high} AS high FROM {t}_s s "
                f"JOIN {t}_items i ON i.i = s.item WHERE s.concept = ? AND {test} {bench} "
                "ORDER BY s.value DESC, i.item_id LIMIT ?",
                [concept, *([scope] if bench else []), EXAMPLES],
            )
        texts: dict[int, dict[str, Any]] = {}
        if picked:
            rows = self._rows(f"SELECT * FROM {t}_texts WHERE i = ANY(?)", [[p["i"] for p in picked]])
            texts = {int(r["i"]): r for r in rows}
        sides: dict[str, list[dict[str, Any]]] = {"high": [], "low": []}
        for p in picked:
            r = texts.get(int(p["i"]), {})
            entry = {
                "item_id": p["item_id"],
                "benchmark": p["benchmark"],
                "score": _num(p["score"]),
                "saliency": _num(p["value"]),
                "category": r.get("category"),
            }
            for c in ("prompt", "response", "reference"):
                text = r.get(c) or ""
                entry[c] = text
                entry[f"{c}_cut"] = max(int(r.get(f"{c}_len") or 0) - len(text), 0)
            sides["high" if p["high"] else "low"].append(entry)
        return sides

    def nearest(self, run: Run, concept: int) -> list[dict[str, Any]]:
        """Concepts firing on the same items: cosine of the binary firing vectors, measured on the
        concept's (up to) :data:`NEAREST_ITEMS` highest-saliency items against the other concept's
        firing on all items (exact when the concept fires on fewer items than that)."""
        t = run.t
        top = np.array(
            [
                i
                for (i,) in self.cursor()
                .execute(
                    f"SELECT item FROM {t}_s WHERE concept = ? ORDER BY value DESC, item LIMIT ?",
                    [concept, NEAREST_ITEMS],
                )
                .fetchall()
            ],
            dtype=np.int64,
        )
        if not len(top):
            return []
        ptr, concepts = run.item_ptr, run.item_concepts
        shared = np.bincount(
            np.concatenate([concepts[ptr[i] : ptr[i + 1]] for i in top]), minlength=run.n_concepts
        ).astype(np.float64)
        shared[concept] = 0
        fires = run.fires
        with np.errstate(invalid="ignore", divide="ignore"):
            cosine = np.where(shared > 0, shared / np.sqrt(len(top) * fires), 0.0)
        # best first, ties by concept id (lexsort: last key is the primary one)
        order = np.lexsort((np.arange(len(cosine)), -cosine))[:NEAREST]
        order = order[cosine[order] > 0]
        labels = {
            int(r["concept"]): r
            for r in self._rows(
                f"SELECT concept, label, tokens FROM {t}_lab WHERE concept = ANY(?)",
                [[int(c) for c in order]],
            )
        }
        return [
            {
                "concept": int(c),
                "shared": int(shared[c]),
                "cosine": _num(cosine[c]),
                "label": labels.get(int(c), {}).get("label"),
                "tokens": (labels.get(int(c), {}).get("tokens") or "")[:120] or None,
            }
            for c in order
        ]

    # ------------------------------------------------------------ benchmarks

    def benchmarks(self, run: Run, top: int = 8) -> dict[str, Any]:
        """Per benchmark: missing share, coverage histogram, most missing / under / over concepts;
        the overlap and correlation matrices. Computed once per run (the tables never change)."""
        key = (run.name, top)
        if key not in self._bench_cache:
            self._bench_cache[key] = self._benchmarks(run, top)
        return self._bench_cache[key]

    def _benchmarks(self, run: Run, top: int) -> dict[str, Any]:
        t, cur = run.t, self.cursor()
        counts = cur.execute(f"SELECT scope, status, count(*) FROM {t}_c GROUP BY 1, 2", []).fetchall()
        status: dict[str, dict[str, int]] = {}
        for s, st, n in counts:
            status.setdefault(s, {})[st] = int(n)
        # χ_bench histogram among the concepts present in the scope, on log10 bins
        edges = np.linspace(-5.0, 0.0, 26)
        hist_rows = cur.execute(
            f"SELECT scope, least(greatest(floor((log10(chi_bench) + 5) * 5), 0), 24) AS bin, count(*) "
            f"FROM {t}_c WHERE status != 'missing' AND chi_bench > 0 GROUP BY 1, 2"
        ).fetchall()
        hist: dict[str, list[int]] = {}
        for s, b, n in hist_rows:
            hist.setdefault(s, [0] * 25)[int(b)] = int(n)
        out = []
        for b in [*run.benchmarks, rundir.ALL_SCOPE]:
            st = status.get(b, {})
            total = sum(st.values()) or 1
            lists = {}
            if b != rundir.ALL_SCOPE:
                # missing here, most present elsewhere; under / over by χ_bench
                lists["missing"] = self._rows(
                    f"SELECT c.concept, l.label, l.tokens, a.support AS value FROM {t}_c c "
                    f"JOIN {t}_c a ON a.concept = c.concept AND a.scope = ? JOIN {t}_lab l ON l.concept = c.concept "
                    "WHERE c.scope = ? AND c.status = 'missing' ORDER BY a.support DESC, c.concept LIMIT ?",
                    [rundir.ALL_SCOPE, b, top],
                )
            for kind, direction in (("under", "ASC"), ("over", "DESC")):
                lists[kind] = self._rows(
                    f"SELECT c.concept, l.label, l.tokens, c.chi_bench AS value FROM {t}_c c "
                    f"JOIN {t}_lab l ON l.concept = c.concept WHERE c.scope = ? AND c.status = ? "
                    f"ORDER BY c.chi_bench {direction}, c.concept LIMIT ?",
                    [b, kind, top],
                )
            lists["weak"] = self._rows(
                f"SELECT c.concept, l.label, l.tokens, c.chi_model - c.expected AS value FROM {t}_c c "
                f"JOIN {t}_lab l ON l.concept = c.concept WHERE c.scope = ? AND c.gap = 'weak' "
                "ORDER BY c.q_value, value, c.concept LIMIT ?",
                [b, top],
            )
            out.append(
                {
                    "benchmark": b,
                    "n_items": run.accuracy.get(b, {}).get("n"),
                    "accuracy": run.accuracy.get(b, {}).get("mean"),
                    "status": st,
                    "missing_share": st.get("missing", 0) / total,
                    "histogram": hist.get(b, [0] * 25),
                    "lists": {
                        k: [
                            {
                                "concept": int(r["concept"]),
                                "label": r["label"],
                                "tokens": (r["tokens"] or "")[:80] or None,
                                "value": _num(r["value"]),
                            }
                            for r in v
                        ]
                        for k, v in lists.items()
                    },
                }
            )
        matrices: dict[str, list[list[float | None]]] = {}
        if "overlap" in run.files:
            names = run.benchmarks
            pos = {n: i for i, n in enumerate(names)}
            for col in ("jaccard", "spearman_chi_model", "spearman_chi_bench"):
                m: list[list[float | None]] = [
                    [1.0 if i == j else None for j in range(len(names))] for i in range(len(names))
                ]
                matrices[col] = m
            for r in self._rows("SELECT * FROM read_parquet(?)", [str(run.files["overlap"])]):
                i, j = pos.get(str(r["a"])), pos.get(str(r["b"]))
                if i is None or j is None:
                    continue
                for col in matrices:
                    matrices[col][i][j] = matrices[col][j][i] = _num(r[col])
        return {
            "run": run.name,
            "benchmarks": out,
            # accuracy and chance level per benchmark and category (cgaps.chance.group_table)
            "groups": run.groups,
            "bin_edges": [float(e) for e in edges],
            "matrices": matrices,
            "names": run.benchmarks,
            "themes": self._bench_themes(run),
        }

    # ------------------------------------------------------------ themes (optional)

    def _theme_rows(self, run: Run) -> list[dict[str, Any]]:
        if "themes" not in run.files:
            return []
        cache = run.theme_rows
        if cache is None:
            cache = [
                {k: _plain(v) for k, v in r.items()}
                for r in self._rows("SELECT * FROM read_parquet(?)", [str(run.files["themes"])])
            ]
            for r in cache:  # the chance level of each theme and scope, where it could be computed
                r.update(run.theme_chance.get((r.get("theme"), str(r.get("scope"))), {}))
            run.theme_rows = cache
        return cache

    @staticmethod
    def _theme_key(row: dict[str, Any]) -> Any:
        for k in ("theme", "theme_id", "id"):
            if k in row:
                return row[k]
        return None

    @staticmethod
    def _members(row: dict[str, Any]) -> list[int]:
        for k in ("members", "concepts", "member_concepts"):
            v = row.get(k)
            if isinstance(v, str):
                try:
                    v = json.loads(v)
                except ValueError:
                    v = [s for s in re.split(r"[,\s]+", v) if s]
            if isinstance(v, list):
                return [int(x) for x in v if isinstance(x, (int, float)) or str(x).isdigit()]
        return []

    def themes(self, run: Run, scope: str = rundir.ALL_SCOPE) -> dict[str, Any]:
        """``themes.parquet`` as it is: either one row per theme (with a list column ``members``
        or ``concepts``) or one row per (theme, concept); rows of another scope than the chosen
        one are left out when the table has a ``scope`` column."""
        rows = self._theme_rows(run)
        # which table: themes.parquet (with words, `cgaps label`) or theme_tests.parquet (`cgaps score`)
        source = run.files["themes"].name if "themes" in run.files else None
        if not rows:
            return {
                "run": run.name,
                "available": "themes" in run.files,
                "source": source,
                "columns": [],
                "themes": [],
            }
        if "scope" in rows[0]:
            rows = [r for r in rows if r.get("scope") in (scope, None)]
        grouped: dict[Any, dict[str, Any]] = {}
        for r in rows:
            key = self._theme_key(r)
            g = grouped.setdefault(key, {"theme": key, "fields": {}, "members": []})
            members = self._members(r)
            if members:
                g["members"].extend(members)
            elif isinstance(r.get("concept"), int):
                g["members"].append(r["concept"])
            for k, v in r.items():
                if k not in ("members", "concepts", "member_concepts", "concept") and k not in g["fields"]:
                    g["fields"][k] = v
        labels = dict(
            self.cursor()
            .execute(
                f"SELECT concept, coalesce(label, tokens) FROM {run.t}_lab WHERE concept = ANY(?)",
                [sorted({c for g in grouped.values() for c in g["members"]})],
            )
            .fetchall()
        )
        themes = []
        for g in grouped.values():
            members = list(dict.fromkeys(g["members"]))
            g["size"] = len(members)
            g["members"] = [{"concept": c, "label": labels.get(c)} for c in members[:50]]
            themes.append(g)
        columns = list(dict.fromkeys(k for g in themes for k in g["fields"]))
        return {"run": run.name, "available": True, "source": source, "columns": columns, "themes": themes}

    def _themes_of(self, run: Run, concept: int) -> list[dict[str, Any]]:
        found = []
        for r in self._theme_rows(run):
            if concept in self._members(r) or r.get("concept") == concept:
                found.append({"theme": self._theme_key(r), "label": r.get("label")})
        return list({json.dumps(x, default=str): x for x in found}.values())[:5]

    def _bench_themes(self, run: Run) -> dict[str, list[dict[str, Any]]]:
        """Theme rows per benchmark scope, when the themes table has scope and status/gap columns."""
        out: dict[str, list[dict[str, Any]]] = {}
        for r in self._theme_rows(run):
            s = r.get("scope")
            if isinstance(s, str) and (r.get("gap") or r.get("status") in ("missing", "under", "over")):
                out.setdefault(s, []).append(
                    {
                        "theme": self._theme_key(r),
                        "label": r.get("label"),
                        "gap": r.get("gap"),
                        "status": r.get("status"),
                    }
                )
        return {k: v[:10] for k, v in out.items()}

    # ------------------------------------------------------------ one benchmark against another

    def scatter(self, run: Run, x: str, y: str, metric: str, min_support: int = 1) -> dict[str, Any]:
        """Per concept, ``metric`` (χ_model or χ_bench) in scope ``x`` against scope ``y``, over the
        concepts present on at least ``min_support`` items of both, with their call in ``ALL``; and
        the Spearman ρ of the points (with ``min_support`` 1, the cell of ``overlap.parquet``'s
        matrix: values rounded to 12 decimals, average ranks, docs/method.md §3)."""
        from scipy import stats

        if metric not in ("chi_model", "chi_bench"):
            raise BadRequest(f"metric must be one of chi_model, chi_bench, got {metric!r}")
        rows = (
            self.cursor()
            .execute(
                f"SELECT a.concept, a.{metric} AS x, b.{metric} AS y, g.gap, g.at_chance FROM {run.t}_c a "
                f"JOIN {run.t}_c b ON b.concept = a.concept AND b.scope = ? "
                f"JOIN {run.t}_c g ON g.concept = a.concept AND g.scope = ? "
                "WHERE a.scope = ? AND a.support >= ? AND b.support >= ? ORDER BY a.concept",
                [y, rundir.ALL_SCOPE, x, max(int(min_support), 1), max(int(min_support), 1)],
            )
            .fetchnumpy()
        )
        xs = np.asarray(rows["x"], dtype=np.float64)
        ys = np.asarray(rows["y"], dtype=np.float64)
        ok = np.isfinite(xs) & np.isfinite(ys)
        rho = None
        if ok.sum() >= 3 and np.ptp(xs[ok]) > 0 and np.ptp(ys[ok]) > 0:
            rho = _num(stats.spearmanr(np.round(xs[ok], 12), np.round(ys[ok], 12))[0])
        call = [
            "strength at chance"
            if g == "strong" and bool(c)
            else {"weak": "gap", "strong": "strength"}.get(g, "")
            for g, c in zip(rows["gap"], rows["at_chance"], strict=True)
        ]
        return {
            "run": run.name,
            "x": x,
            "y": y,
            "metric": metric,
            "min_support": max(int(min_support), 1),
            "n": int(ok.sum()),
            "rho": rho,
            "concepts": [int(c) for c in np.asarray(rows["concept"])[ok]],
            "xs": [float(v) for v in xs[ok]],
            "ys": [float(v) for v in ys[ok]],
            "calls": [c for c, k in zip(call, ok, strict=True) if k],
        }

    # ------------------------------------------------------------ compare two runs

    def compare(
        self,
        a: Run,
        b: Run,
        *,
        scope: str,
        q: str = "",
        call: str = "",
        sort: str = "q_value",
        order: str = "asc",
        page: int = 1,
        per_page: int = 50,
    ) -> dict[str, Any]:
        """One page of the paired comparison of two runs on the same items: the table
        ``cgaps compare`` writes (:func:`cgaps.compare.paired`, computed once per pair of runs)
        for one scope, with the counts of :func:`cgaps.compare.summary`. ``call`` keeps the rows
        called ``b_better`` or ``a_better``, or those called against the benchmarks' mean Δ
        (``b_beyond``, ``a_beyond``); ``significant`` any of the first two."""
        if scope != rundir.ALL_SCOPE and scope not in b.benchmarks:
            raise BadRequest(f"scope {scope!r} is not a benchmark of run {b.name!r}")
        if call not in COMPARE_CALLS:
            raise BadRequest(
                f"call must be one of {', '.join(c for c in COMPARE_CALLS if c)} (or empty), got {call!r}"
            )
        if sort not in COMPARE_SORTS:
            raise BadRequest(f"cannot sort the comparison by {sort!r}; sortable: {', '.join(COMPARE_SORTS)}")
        df, scopes, record = self._paired(a, b)
        view = df[df["scope"] == scope]
        if q.strip():
            needle = q.strip().lower()
            mask = view["search"].str.contains(needle, regex=False)
            if needle.lstrip("#c").isdigit():
                mask |= view["concept"] == int(needle.lstrip("#c"))
            view = view[mask]
        if call == "significant":
            view = view[view["call"] != ""]
        elif call in ("b_better", "a_better"):
            view = view[view["call"] == call]
        elif call:
            view = view[view["call_adjusted"] == call.replace("_beyond", "_better")]
        view = view.sort_values(
            [COMPARE_SORTS[sort], "concept"],
            ascending=[order != "desc", True],
            na_position="last",
            kind="stable",
        )
        total = len(view)
        page_df = view.iloc[(page - 1) * per_page : page * per_page]
        rows = [
            {
                k: (_plain(v) if k in ("label", "tokens", "call", "call_adjusted", "scope") else _num(v))
                for k, v in r.items()
                if k not in ("search", "abs_z")
            }
            for r in page_df.to_dict("records")
        ]
        for r in rows:
            r["concept"] = int(r["concept"] or 0)
            r["support"] = int(r["support"] or 0)
            r["discordant"] = int(r["discordant"] or 0)
        return {
            "a": a.name,
            "b": b.name,
            "scope": scope,
            "fdr": _num(record["fdr"]),
            "min_support": int(record["min_support"]),
            "n_items": int(record["n_items"]),
            "summary": next(s for s in scopes if s["scope"] == scope),
            "scopes": scopes,
            "total": total,
            "page": page,
            "per_page": per_page,
            "rows": rows,
        }

    def compare_points(self, a: Run, b: Run, scope: str) -> dict[str, Any]:
        """χ_model of A against B per concept of ``scope`` (the Compare view's scatter), with each call."""
        df, _, _ = self._paired(a, b)
        view = df[(df["scope"] == scope) & df["chi_model_a"].notna() & df["chi_model_b"].notna()]
        return {
            "a": a.name,
            "b": b.name,
            "scope": scope,
            "concepts": [int(c) for c in view["concept"]],
            "xs": [float(v) for v in view["chi_model_a"]],
            "ys": [float(v) for v in view["chi_model_b"]],
            "calls": [{"b_better": "B better", "a_better": "A better"}.get(c, "") for c in view["call"]],
        }

    def _paired(self, a: Run, b: Run) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
        """The paired table of runs A and B (with A's labels and search text), its per-scope
        summary and its record; computed on first use and kept (the runs never change)."""
        key = (a.name, b.name)
        if key not in self._compare_cache:
            from cgaps.compare import paired, summary
            from cgaps.runtables import load_run

            if a.n_concepts != b.n_concepts:
                raise BadRequest(
                    f"runs {a.name!r} ({a.n_concepts} concepts) and {b.name!r} ({b.n_concepts}) do not share "
                    "an SAE; compare needs the same concepts"
                )
            ta, tb = load_run(a.path), load_run(b.path)
            try:
                table, record = paired(ta, tb)
            except CGapsError as e:  # not comparable: the request cannot be answered, say why
                raise BadRequest(str(e)) from e
            scopes = [{k: _plain(v) for k, v in r.items()} for r in summary(table, ta.items, tb.items)]
            del ta, tb
            labels = (
                self.cursor()
                .execute(
                    f"SELECT l.concept, l.label, l.tokens, q.search FROM {a.t}_lab l "
                    f"JOIN {a.t}_q q USING (concept)"
                )
                .df()
            )
            table = table.merge(labels, on="concept", how="left")
            table["search"] = table["search"].fillna("")
            table["abs_z"] = table["z"].abs()
            self._compare_cache[key] = (table, scopes, record)
        return self._compare_cache[key]


# the Compare view's filters and sort keys (request name -> column of the paired table)
COMPARE_CALLS = ("", "significant", "b_better", "a_better", "b_beyond", "a_beyond")
COMPARE_SORTS = {
    "concept": "concept",
    "delta": "delta",
    "abs_z": "abs_z",
    "q_value": "q_value",
    "q_adjusted": "q_adjusted",
    "chi_model_a": "chi_model_a",
    "chi_model_b": "chi_model_b",
    "support": "support",
}
