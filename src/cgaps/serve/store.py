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

import json
import math
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cgaps import rundir
from cgaps.errors import CGapsError

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
}
STATUSES = ("missing", "under", "normal", "over")
GAPS = ("weak", "strong", "none")
# Text cut per example field; the page says how much more there was.
TEXT_CHARS = 1500
EXAMPLES = 4  # example items per side (high / low score)
NEAREST = 10
NEAREST_ITEMS = 1000  # the concept's highest-saliency items the neighbours are measured on
# labels.parquet columns searched besides the label (written by the labels stage, when present)
SEARCHED_LABEL_COLUMNS = ("tokens", "evidence_label", "imported_label", "llm_label", "output_tokens")
NUMERIC = ("support", "chi_bench", "chi_bench_raw", "chi_model", "expected", "n_eff", "ci_low", "ci_high")


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
    knobs: dict[str, Any] = field(default_factory=dict)
    # the saliency by item (CSR: item i's firing concepts are item_concepts[item_ptr[i]:item_ptr[i+1]])
    # and how many items each concept fires on
    item_ptr: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    item_concepts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    fires: np.ndarray = field(default_factory=lambda: np.zeros(0))
    per_bench: dict[str, np.ndarray] = field(default_factory=dict)
    theme_rows: list[dict[str, Any]] | None = None  # themes.parquet, read on first use

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
            "knobs": _plain(self.knobs),
            "label_columns": self.label_columns,
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

    def __init__(
        self, run_dirs: list[Path], *, memory_limit: str = "1GB", threads: int | None = None
    ) -> None:
        import duckdb

        if not run_dirs:
            raise CGapsError("no run directory given; pass one or more RUN_DIRs written by `cgaps score`")
        if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", memory_limit, flags=re.IGNORECASE):
            raise CGapsError(f"memory limit {memory_limit!r}: give a size such as 512MB or 2GB")
        self.con = duckdb.connect(":memory:")
        self.con.execute(f"SET memory_limit = '{memory_limit}'")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        self._local = threading.local()
        self.runs: list[Run] = []
        roots = [Path(p).resolve() for p in run_dirs]
        for i, (root, name) in enumerate(zip(roots, _unique_names(roots), strict=True)):
            self.runs.append(self._open(i, name, Path(run_dirs[i]), root))
        # from here on the engine reads only the served directories, and nobody can change that
        allowed = ", ".join("'" + str(r).replace("'", "''") + "/'" for r in roots)
        self.con.execute(f"SET allowed_directories = [{allowed}]")
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")
        # (a, b, scope) -> the comparison table and the items the runs share (the tables never change)
        self._compare_cache: dict[tuple[str, str, str], tuple[Any, dict[str, int]]] = {}
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
        meta = rundir.read_run_json(root)
        run = Run(index, name, root, meta, rundir.n_concepts(meta, given), files)
        run.knobs = rundir.read_table_knobs(files["concepts"]) or {
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
        floats = ", ".join(f"CAST({c} AS DOUBLE) AS {c}" for c in NUMERIC[1:] + ("q_value",))
        # sorted by scope: a page of one scope reads one stretch of the table (DuckDB's zone maps)
        con.execute(
            f"CREATE TABLE {t}_c AS SELECT CAST(concept AS INTEGER) AS concept, CAST(scope AS VARCHAR) AS scope, "
            f"CAST(support AS BIGINT) AS support, {floats}, CAST(status AS VARCHAR) AS status, "
            "coalesce(CAST(gap AS VARCHAR), '') AS gap FROM read_parquet(?) ORDER BY scope, concept",
            [str(f["concepts"])],
        )
        scopes = {s for (s,) in con.execute(f"SELECT DISTINCT scope FROM {t}_c").fetchall()}
        absent = [s for s in [*run.benchmarks, rundir.ALL_SCOPE] if s not in scopes]
        if absent:
            raise CGapsError(
                f"{f['concepts']}: no rows for scope(s) {', '.join(map(repr, absent))}; "
                "rerun `cgaps score RUN_DIR`"
            )
        # labels as written (any columns), and one search row per concept: id, label, source, tokens
        if "labels" in f:
            con.execute(
                f"CREATE TABLE {t}_labels AS SELECT * REPLACE (CAST(concept AS INTEGER) AS concept) "
                "FROM read_parquet(?) ORDER BY concept",
                [str(f["labels"])],
            )
        if "contexts" in f:
            con.execute(
                f"CREATE TABLE {t}_ctx AS SELECT CAST(concept AS INTEGER) AS concept, CAST(rank AS INTEGER) AS rank, "
                'CAST(item_id AS VARCHAR) AS item_id, CAST(value AS DOUBLE) AS value, CAST("left" AS VARCHAR) AS '
                '"left", CAST(token AS VARCHAR) AS token, CAST("right" AS VARCHAR) AS "right" '
                "FROM read_parquet(?) ORDER BY concept, rank",
                [str(f["contexts"])],
            )
        lab = [c for c in ("label", "source") if c in cols.get("labels", [])]
        label_sql = ", ".join(
            f"CAST(l.{c} AS VARCHAR) AS {c}" if c in lab else f"NULL::VARCHAR AS {c}"
            for c in ("label", "source")
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
        # the saliency twice, as (concept, item, value) sorted by concept and by item: a concept's
        # items and an item set's concepts are then each one short stretch (12 bytes a row)
        con.execute(
            f"CREATE TABLE {t}_s AS SELECT CAST(s.concept AS INTEGER) AS concept, i.i AS item, "
            f"CAST(s.value AS FLOAT) AS value FROM read_parquet(?) s JOIN {t}_items i "
            "ON i.item_id = CAST(s.item_id AS VARCHAR) ORDER BY concept, value DESC, item",
            [str(f["saliency"])],
        )
        # by item, as arrays: the concepts firing on an item set (the neighbours) in one gather
        by_item = con.execute(f"SELECT item, concept FROM {t}_s ORDER BY item, concept").fetchnumpy()
        counts = np.bincount(by_item["item"], minlength=int(run.accuracy[rundir.ALL_SCOPE]["n"]))
        run.item_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        run.item_concepts = by_item["concept"].astype(np.int32)
        del by_item
        # χ_bench and χ_model as benchmark x concept arrays: a page's per-benchmark bars by indexing
        for key in ("chi_bench", "chi_model"):
            m = np.full((len(run.benchmarks), run.n_concepts), np.nan)
            for k, b in enumerate(run.benchmarks):
                got = con.execute(
                    f"SELECT concept, {key} FROM {t}_c WHERE scope = ? AND concept BETWEEN 0 AND ?",
                    [b, run.n_concepts - 1],
                ).fetchnumpy()
                m[k, got["concept"]] = np.ma.filled(np.ma.asarray(got[key], dtype=np.float64), np.nan)
            run.per_bench[key] = m
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

    # ------------------------------------------------------------ helpers

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
        """One page of the concept list, filtered and sorted server-side."""
        if sort not in SORTS:
            raise BadRequest(f"cannot sort by {sort!r}; sortable columns: {', '.join(SORTS)}")
        where: list[str] = ["c.scope = ?"]
        params: list[Any] = [scope]
        q = q.strip()
        if q:
            like = "%" + q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            cond = f"c.concept IN (SELECT concept FROM {run.t}_q WHERE search LIKE ? ESCAPE '\\')"
            params.append(like)
            digits = q.lstrip("#c").strip()
            if digits.isdigit():
                cond = f"({cond} OR c.concept = ?)"
                params.append(int(digits))
            where.append(cond)
        if gap == "none":
            where.append("c.gap = ''")
        elif gap:
            where.append("c.gap = ?")
            params.append(gap)
        if status:
            where.append("c.status = ?")
            params.append(status)
        if min_support:
            where.append("c.support >= ?")
            params.append(int(min_support))
        direction = "DESC" if order == "desc" else "ASC"
        t = run.t
        # the labels are joined to the page only, unless the sort needs them (a search is a semi-join)
        join = f"JOIN {t}_lab l ON l.concept = c.concept" if sort == "label" else ""
        # the filtered rows once (a search scans every concept's text), then their count and the
        # top of their order (a top-N, not a sort of every row)
        sql = (
            f"WITH f AS {'MATERIALIZED' if q else ''} (SELECT c.* FROM {t}_c c WHERE {' AND '.join(where)}) "
            "SELECT c.concept, c.support, c.chi_bench, c.chi_model, c.expected, c.ci_low, c.ci_high, c.n_eff, "
            f"c.status, c.gap, c.q_value, (SELECT count(*) FROM f) AS total FROM f c {join} "
            f"ORDER BY {SORTS[sort]} {direction} NULLS LAST, c.concept ASC LIMIT ? OFFSET ?"
        )
        rows = self._rows(sql, [*params, per_page, (page - 1) * per_page])
        # a page past the end has no row to carry the count
        total = int(rows[0]["total"]) if rows else self._count(t, where, params)
        labels = (
            {
                int(r["concept"]): r
                for r in self._rows(
                    f"SELECT concept, label, source, tokens FROM {t}_lab WHERE concept = ANY(?)",
                    [[int(r["concept"]) for r in rows]],
                )
            }
            if rows
            else {}
        )
        for r in rows:
            r.update({k: v for k, v in labels.get(int(r["concept"]), {}).items() if k != "concept"})
        ids = [int(r["concept"]) for r in rows]
        per = self._per_benchmark(run, ids)
        out = []
        for r in rows:
            c = int(r["concept"])
            out.append(
                {
                    "concept": c,
                    "label": r["label"],
                    "source": r["source"],
                    "tokens": (r["tokens"] or "")[:200] or None,
                    "support": int(r["support"]),
                    **{
                        k: _num(r[k])
                        for k in ("chi_bench", "chi_model", "expected", "ci_low", "ci_high", "n_eff")
                    },
                    "q_value": _num(r["q_value"]),
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
                **{k: _num(r[k]) for k in (*NUMERIC[1:], "q_value")},
                "status": r["status"],
                "gap": r["gap"],
                "n_items": run.accuracy.get(r["scope"], {}).get("n"),
                "accuracy": run.accuracy.get(r["scope"], {}).get("mean"),
            }
            for r in scopes
        ]
        lab = self._rows(f"SELECT label, source, tokens FROM {t}_lab WHERE concept = ?", [concept])
        evidence: dict[str, Any] = {}
        if "labels" in f:
            rows = self._rows(f"SELECT * FROM {t}_labels WHERE concept = ? LIMIT 1", [concept])
            if rows:
                evidence = {
                    k: _json_or_plain(v)
                    for k, v in rows[0].items()
                    if k not in ("concept", "label", "source")
                }
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
        if not rows:
            return {"run": run.name, "available": "themes" in run.files, "columns": [], "themes": []}
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
        return {"run": run.name, "available": True, "columns": columns, "themes": themes}

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

    # ------------------------------------------------------------ compare two runs

    def compare(
        self,
        a: Run,
        b: Run,
        *,
        scope: str,
        q: str = "",
        significant: bool = False,
        sort: str = "q_value",
        order: str = "asc",
        page: int = 1,
        per_page: int = 50,
    ) -> dict[str, Any]:
        """Per-concept χ_model differences between two runs on the same items (see :func:`compare_table`)."""
        if a.n_concepts != b.n_concepts:
            raise BadRequest(
                f"runs {a.name!r} ({a.n_concepts} concepts) and {b.name!r} ({b.n_concepts}) do not share an SAE; "
                "compare needs the same concepts"
            )
        if scope != rundir.ALL_SCOPE and scope not in b.benchmarks:
            raise BadRequest(f"scope {scope!r} is not a benchmark of run {b.name!r}")
        key = (a.name, b.name, scope)
        if key not in self._compare_cache:
            self._compare_cache[key] = (self._compare_table(a, b, scope), self._shared_items(a, b))
        df, shared = self._compare_cache[key]
        fdr = self._fdr(a)
        view = df
        if q.strip():
            needle = q.strip().lower()
            mask = view["search"].str.contains(needle, regex=False)
            if needle.lstrip("#c").isdigit():
                mask |= view["concept"] == int(needle.lstrip("#c"))
            view = view[mask]
        if significant:
            view = view[view["q_value"] <= fdr]
        cols = {"concept", "diff", "abs_z", "q_value", "chi_a", "chi_b", "support_a", "support_b"}
        if sort not in cols:
            raise BadRequest(f"cannot sort the comparison by {sort!r}; sortable: {', '.join(sorted(cols))}")
        view = view.sort_values(
            [sort, "concept"], ascending=[order != "desc", True], na_position="last", kind="stable"
        )
        total = len(view)
        page_df = view.iloc[(page - 1) * per_page : page * per_page]
        rows = [
            {k: (_plain(v) if k in ("label", "tokens") else _num(v)) for k, v in r.items() if k != "search"}
            for r in page_df.to_dict("records")
        ]
        for r in rows:
            r["concept"] = int(r["concept"] or 0)
        return {
            "a": a.name,
            "b": b.name,
            "scope": scope,
            "items": shared,
            "fdr": fdr,
            "n_significant": int((df["q_value"] <= fdr).sum()),
            "total": total,
            "page": page,
            "per_page": per_page,
            "rows": rows,
        }

    @staticmethod
    def _fdr(run: Run) -> float:
        v = _num(run.knobs.get("fdr"))
        return v if v is not None else 0.05

    def _shared_items(self, a: Run, b: Run) -> dict[str, int]:
        n_a, n_b, both = (
            self.cursor()
            .execute(
                f"SELECT (SELECT count(*) FROM {a.t}_items), (SELECT count(*) FROM {b.t}_items), "
                f"(SELECT count(*) FROM {a.t}_items x JOIN {b.t}_items y USING (item_id))"
            )
            .fetchone()
        )
        return {"a": int(n_a), "b": int(n_b), "shared": int(both)}

    def _compare_table(self, a: Run, b: Run, scope: str) -> Any:
        cur = self.cursor()
        df = cur.execute(
            f"SELECT x.concept, x.chi_model AS chi_a, y.chi_model AS chi_b, x.n_eff AS n_a, y.n_eff AS n_b, "
            f"x.support AS support_a, y.support AS support_b, x.ci_low AS lo_a, x.ci_high AS hi_a, "
            f"y.ci_low AS lo_b, y.ci_high AS hi_b, l.label, l.tokens, q.search FROM {a.t}_c x "
            f"JOIN {b.t}_c y ON y.concept = x.concept AND y.scope = x.scope "
            f"JOIN {a.t}_lab l ON l.concept = x.concept JOIN {a.t}_q q ON q.concept = x.concept "
            "WHERE x.scope = ? ORDER BY x.concept",
            [scope],
        ).df()
        table = compare_table(
            df, int(_num(a.knobs.get("min_support")) or 5), _num(a.knobs.get("ci_level")) or 0.95
        )
        table["search"] = table["search"].fillna("")
        return table


def compare_table(df: Any, min_support: int, ci_level: float = 0.95) -> Any:
    """Add ``diff``, ``z``, ``abs_z``, ``p_value`` and ``q_value`` to a frame of paired χ_model.

    Each run's χ_model gets the standard error its own Wilson interval implies,
    se = (ci_high − ci_low) / (2 z), z the normal quantile of ``ci_level`` (docs/method.md §3);
    unlike the plug-in sqrt(χ(1 − χ)/n_eff), it does not vanish when χ is 0 or 1 on a few
    items. Then z = (χ_a − χ_b)/sqrt(se_a² + se_b²), a two-sided p, and Benjamini–Hochberg over
    the concepts with support ≥ ``min_support`` in both runs (the others get no q). The runs
    are treated as independent; both grade the same items, so the two χ are positively
    correlated when their saliency agrees, and ignoring that makes the test conservative.
    """
    from scipy import stats

    from cgaps.stats import bh_adjust

    out = df.copy()
    out["diff"] = out["chi_a"] - out["chi_b"]
    width = 2 * stats.norm.ppf(0.5 + ci_level / 2)
    se_a = (out["hi_a"] - out["lo_a"]) / width
    se_b = (out["hi_b"] - out["lo_b"]) / width
    with np.errstate(invalid="ignore", divide="ignore"):
        var = se_a**2 + se_b**2
        z = out["diff"] / np.sqrt(var)
    # equal χ with zero variance: no evidence of a difference
    z = z.where(~((out["diff"] == 0) & (var == 0)), 0.0)
    out["z"] = z
    out["abs_z"] = z.abs()
    out["p_value"] = 2 * stats.norm.sf(np.abs(z.to_numpy(dtype=float)))
    tested = (
        (out["support_a"] >= min_support) & (out["support_b"] >= min_support) & np.isfinite(out["p_value"])
    ).to_numpy()
    q = np.full(len(out), np.nan)
    q[tested] = bh_adjust(out["p_value"].to_numpy()[tested])
    out["q_value"] = q
    return out
