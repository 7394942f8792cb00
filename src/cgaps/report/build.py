"""Build ``report.html`` from a run directory: read the tables, shape them, render one file.

Design:

- **Reads only the run directory** (docs/method.md §6), so the report can be rebuilt after any
  stage is rerun, and a run produced by another tool renders the same way. It reads through
  the one run loader, :func:`cgaps.runtables.load_run` with ``results=True``. Required:
  ``run.json``, ``items.parquet`` (scored), ``concepts.parquet``, ``saliency.parquet`` and, with
  two or more benchmarks, ``overlap.parquet``; a missing one is a :class:`CGapsError` naming the
  stage that writes it. Optional: ``labels.parquet``, ``contexts.parquet``, ``robustness.json``.
- **Shaping is separate from rendering**: :func:`report_context` returns plain dicts and
  lists (plus the figures' SVG as ``Markup``), :func:`render` feeds them to one Jinja template
  with autoescaping on. Every piece of benchmark text (prompts, responses, labels, contexts,
  benchmark names) reaches the page through the template's escaping or the figures' ``_esc``;
  nothing from the data is marked safe.
- **Self-contained and bounded**: no external resource (CSS and a little JS are inline, figures
  are inline SVG); tables are capped (:class:`ReportConfig`) and example texts truncated, so
  a 16k-concept run stays a few megabytes. The file is written atomically
  (:func:`cgaps.rundir.write_text`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cgaps import rundir
from cgaps.chance import concept_chance, group_table, matrix_chance, scored_matrix
from cgaps.config import config_from_run
from cgaps.errors import CGapsError, settings_diff
from cgaps.report import figures, fill_confirm
from cgaps.report.checks import checks_section

# defined with the other user-facing configs, so that the CLI reads its fields without pandas
from cgaps.report.config import ReportConfig
from cgaps.runtables import RunTables, load_run
from cgaps.stats import mean_interval

if TYPE_CHECKING:
    from cgaps.scoring.core import SuiteMatrix

# ---------------------------------------------------------------- shaping


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def _accuracy(items: pd.DataFrame, benchmarks: list[str], groups: pd.DataFrame) -> list[dict[str, Any]]:
    """The accuracy table: each benchmark with its categories beneath it, then the suite, each
    with its Wilson interval, chance level and verdict (:func:`cgaps.chance.group_table`)."""
    by_group = groups.set_index("group")
    rows = []

    def add(name: str, df: pd.DataFrame, kind: str, shown: str) -> None:
        mean = float(df["score"].mean())
        lo, hi = mean_interval(df["score"].to_numpy())
        g = by_group.loc[name] if name in by_group.index else None
        rows.append(
            {
                "scope": name,
                "shown": shown,
                "kind": kind,
                "n": len(df),
                "mean": mean,
                "ci_low": lo,
                "ci_high": hi,
                "chance": _num(g["chance"]) if g is not None else math.nan,
                "verdict": str(g["verdict"]) if g is not None else "chance unknown",
                "is_all": name == rundir.ALL_SCOPE,
            }
        )

    for b in benchmarks:
        sub = items[items["benchmark"] == b]
        add(b, sub, "benchmark", b)
        if "category" in items.columns:
            cats = sub["category"].dropna().astype(str)
            for c in dict.fromkeys(cats[cats != ""]):
                add(f"{b}:{c}", sub[sub["category"].astype(str) == c], "category", c)
    add(rundir.ALL_SCOPE, items, "all", rundir.ALL_SCOPE)
    return rows


def _flat(d: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Flatten nested config dicts into (dotted key, display value)."""
    if not isinstance(d, dict):
        return [(prefix or "value", json.dumps(d) if not isinstance(d, str) else d)]
    out: list[tuple[str, str]] = []
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.extend(_flat(v, key))
        elif v is None:  # a config field left at its default, not a value called "null"
            out.append((key, "default"))
        else:
            out.append((key, v if isinstance(v, str) else json.dumps(v)))
    return out


HEADLINE_KEYS = ("model", "reader", "sae", "layer", "span", "pool", "suite", "presence", "min_support", "fdr")


def _shown(key: str, value: Any, model: dict[str, Any]) -> str:
    """A headline value in words: the model names run.json recorded, not the config's null defaults."""
    if key in ("model", "reader"):
        recorded = model.get("evaluated" if key == "model" else "reader")
        if isinstance(recorded, str) and recorded:
            return recorded if recorded == value or value in (None, "embedded") else f"{recorded} ({value})"
        if value is None:
            return "the evaluated model" if key == "reader" else "–"
    if value is None:
        return {"layer": "the SAE's own", "top_k": "all"}.get(key, "default")
    return value if isinstance(value, str) else json.dumps(value)


def _header(meta: dict[str, Any], width: int, run_dir: Path) -> dict[str, Any]:
    config: dict[str, Any] = meta["config"] if isinstance(meta.get("config"), dict) else {}
    model: dict[str, Any] = meta["model"] if isinstance(meta.get("model"), dict) else {}
    headline = [(k, _shown(k, config[k], model)) for k in HEADLINE_KEYS if k in config]
    # inputs is the stages' staleness bookkeeping (digests), the report's own record included:
    # shown, a rebuilt page would differ from the first one by its own record
    rest = {k: v for k, v in meta.items() if k not in ("config", "schema_version", "inputs")}
    return {
        "run_name": run_dir.resolve().name,
        "n_concepts": width,
        "headline": headline,
        "config": _flat(config),
        "other": _flat(rest),
    }


def _truncate(text: str, limit: int) -> tuple[str, int]:
    """The first ``limit`` characters and how many were cut."""
    text = "" if text is None else str(text)
    if len(text) <= limit:
        return text, 0
    return text[:limit], len(text) - limit


def _turns(messages: Any) -> list[tuple[str, str]] | None:
    """Chat turns from the JSON ``messages`` column, or None when absent or unreadable."""
    if messages is None or (isinstance(messages, float) and math.isnan(messages)):
        return None
    try:
        data = json.loads(messages) if isinstance(messages, str) else list(messages)
    except (TypeError, ValueError):
        return None
    if not isinstance(data, list) or not data:
        return None
    turns = []
    for m in data:
        if isinstance(m, dict):
            turns.append((str(m.get("role", "?")), str(m.get("content", ""))))
    return turns or None


def present_rows(m: SuiteMatrix, concepts: set[int] | list[int]) -> pd.DataFrame:
    """(item_id, concept, value) of ``concepts`` where they are present: the thresholded saliency
    the scores were computed from (:func:`cgaps.chance.scored_matrix`), never the raw table."""
    cols = np.asarray(sorted(concepts), dtype=np.int64)
    sub = m.saliency.tocsc()[:, cols].tocoo()
    return pd.DataFrame(
        {
            "item_id": m.item_ids[sub.row].astype(str),
            "concept": cols[sub.col].astype(np.int32),
            "value": sub.data,
        }
    )


class _Examples:
    """Top example items per (concept, scope): highest saliency first, correct and incorrect apart.

    Only the concepts that appear in a table are looked at, and only the items where they are
    present (``present``, :func:`present_rows`): a concept of support 1 has one example, as its
    χ_model has one item.
    """

    def __init__(self, tables: RunTables, present: pd.DataFrame, opts: ReportConfig) -> None:
        self.opts = opts
        k = opts.examples
        items = tables.items.set_index("item_id", drop=False)
        self.items = items
        sal = present.merge(tables.items[["item_id", "benchmark", "score"]], on="item_id", how="inner")
        sal["correct"] = sal["score"] >= 0.5
        sal = sal.sort_values(["concept", "value", "item_id"], ascending=[True, False, True], kind="stable")
        self.all: dict[int, list[tuple[str, float]]] = {}
        self.bench: dict[tuple[int, str], list[tuple[str, float]]] = {}
        if k > 0 and len(sal):
            self._collect(sal.groupby(["concept", "correct"], sort=False).head(k), None)
            self._collect(sal.groupby(["concept", "benchmark", "correct"], sort=False).head(k), "benchmark")
        self._cache: dict[str, dict[str, Any]] = {}

    def _collect(self, top: pd.DataFrame, by: str | None) -> None:
        # Incorrect first (for a gap they are the evidence), then by saliency: one sort, one pass.
        top = top.sort_values(
            ["concept", "correct", "value", "item_id"], ascending=[True, True, False, True], kind="stable"
        )
        for r in top.itertuples(index=False):
            pair = (str(r.item_id), float(r.value))
            if by is None:
                self.all.setdefault(int(r.concept), []).append(pair)
            else:
                self.bench.setdefault((int(r.concept), str(r.benchmark)), []).append(pair)

    def get(self, concept: int, scope: str) -> list[dict[str, Any]]:
        pairs = (
            self.all.get(concept, []) if scope == rundir.ALL_SCOPE else self.bench.get((concept, scope), [])
        )
        return [{**self._item(i), "value": v} for i, v in pairs]

    def _item(self, item_id: str) -> dict[str, Any]:
        if item_id in self._cache:
            return self._cache[item_id]
        row = self.items.loc[item_id]
        o = self.opts
        turns = _turns(row.get("messages")) if "messages" in row.index else None
        if turns:
            budget, shown = o.prompt_chars, []
            for role, content in turns:
                text, cut = _truncate(content, max(budget, 0))
                shown.append({"role": role, "text": text, "cut": cut})
                budget -= len(text)
            prompt = {"turns": shown, "text": "", "cut": 0}
        else:
            text, cut = _truncate(row["prompt"], o.prompt_chars)
            prompt = {"turns": None, "text": text, "cut": cut}
        response, rcut = _truncate(row.get("response", ""), o.response_chars)
        reference, fcut = _truncate(row["reference"], o.reference_chars)
        score = float(row["score"])
        category = row.get("category") if "category" in row.index else None
        if category is not None and not isinstance(category, str):
            category = None if pd.isna(category) else str(category)
        out = {
            "item_id": item_id,
            "benchmark": row["benchmark"],
            "score": score,
            "correct": score >= 0.5,
            "partial": 0 < score < 1,
            "category": category or None,
            "prompt": prompt,
            "response": response,
            "response_cut": rcut,
            "reference": reference,
            "reference_cut": fcut,
        }
        self._cache[item_id] = out
        return out


def _is_true(x: Any) -> bool:
    """A bool column's value (None / NaN in a column another writer left empty: False)."""
    try:
        return bool(x) and not (isinstance(x, float) and math.isnan(x))
    except (TypeError, ValueError):
        return False


def present_contexts(contexts: pd.DataFrame, m: SuiteMatrix) -> pd.DataFrame:
    """The top contexts whose (item, concept) is present at the scores' threshold; a context on an
    item where the concept stays below it is not evidence of what the scores measured."""
    if contexts.empty:
        return contexts
    row_of = pd.Index(m.item_ids.astype(str))
    rows = row_of.get_indexer(contexts["item_id"].astype(str))
    cols = contexts["concept"].to_numpy(dtype=np.int64)
    ok = (rows >= 0) & (cols >= 0) & (cols < m.saliency.shape[1])
    keep = np.zeros(len(contexts), dtype=bool)
    if ok.any():
        keep[ok] = np.asarray(m.saliency[rows[ok], cols[ok]]).ravel() > 0
    return contexts[keep]


class _Describer:
    """A concept's description: its phrase or label, else its top contexts, else 'concept N'.

    ``phrase`` (a short description in words) and ``format`` (the concept fires on prompt text
    repeated verbatim across items, such as instructions) are read from ``labels.parquet`` when
    the labels stage wrote them; without them the label alone is shown.
    """

    def __init__(self, tables: RunTables, opts: ReportConfig, m: SuiteMatrix | None = None) -> None:
        self.labels: dict[int, tuple[str, str]] = {}
        self.phrases: dict[int, str] = {}
        self.format: set[int] = set()
        self.has_format = False
        if tables.labels is not None:
            for c, label, source in tables.labels[list(rundir.LABEL_COLUMNS)].itertuples(index=False):
                if isinstance(label, str) and label.strip():
                    self.labels[int(c)] = (
                        label.strip(),
                        "" if source is None or pd.isna(source) else str(source),
                    )
            if "phrase" in tables.labels.columns:
                for c, phrase in tables.labels[["concept", "phrase"]].itertuples(index=False):
                    if isinstance(phrase, str) and phrase.strip():
                        self.phrases[int(c)] = phrase.strip()
            if "format" in tables.labels.columns:
                self.has_format = True
                self.format = {
                    int(c)
                    for c, f in tables.labels[["concept", "format"]].itertuples(index=False)
                    if _is_true(f)
                }
        self.contexts: dict[int, list[dict[str, Any]]] = {}
        if tables.contexts is not None and opts.contexts > 0:
            ctx = tables.contexts if m is None else present_contexts(tables.contexts, m)
            ctx = ctx.sort_values(["concept", "rank"], kind="stable")
            ctx = ctx.groupby("concept", sort=False).head(opts.contexts)
            n = opts.context_chars
            for r in ctx.itertuples(index=False):
                left = "" if pd.isna(r.left) else str(r.left)
                right = "" if pd.isna(r.right) else str(r.right)
                self.contexts.setdefault(int(r.concept), []).append(
                    {
                        "left": ("…" if len(left) > n else "") + left[-n:] if n else "",
                        "token": "" if pd.isna(r.token) else str(r.token),
                        "right": right[:n] + ("…" if len(right) > n else "") if n else "",
                        "item_id": str(r.item_id),
                        "value": _num(r.value),
                    }
                )

        self.evidence: dict[int, dict[str, Any]] = {}
        if tables.labels is not None and "tokens" in tables.labels.columns:
            self.evidence = _evidence_lines(tables.labels)

    def __call__(self, concept: int) -> dict[str, Any]:
        label = self.labels.get(concept)
        return {
            "label": label[0] if label else None,
            "source": label[1] if label else None,
            "phrase": self.phrases.get(concept),
            "format": concept in self.format,
            "contexts": self.contexts.get(concept, []),
            "evidence": self.evidence.get(concept),
        }

    def name(self, concept: int) -> str:
        """The concept in words, for a sentence: its phrase, else its label, else its number."""
        label = self.labels.get(concept)
        return self.phrases.get(concept) or (label[0] if label else f"concept {concept}")


def _json_list(raw: Any) -> list[Any]:
    if not isinstance(raw, str) or not raw:
        return []
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return []
    return data if isinstance(data, list) else []


def enrichment_words(group: Any, mass: Any, items: Any, p: Any) -> str | None:
    """'61% of its weight on probes:weekday (8% of items, p = 3e-12)', or None without a group."""
    m, b, pv = _num(mass), _num(items), _num(p)
    if not isinstance(group, str) or not group or not math.isfinite(m):
        return None
    sig = f", p = {pv:.0e}" if math.isfinite(pv) else ""
    return f"{100 * m:.0f}% of its weight on {group} ({100 * b:.0f}% of items{sig})"


def _evidence_lines(labels: pd.DataFrame) -> dict[int, dict[str, Any]]:
    """Per concept the evidence the labels stage wrote, as short display strings."""
    out: dict[int, dict[str, Any]] = {}
    cols = ["concept", "tokens", "output_tokens", "enrich_group", "enrich_mass", "enrich_items", "enrich_p"]
    if not all(c in labels.columns for c in cols):
        return out
    for c, toks, outs, group, mass, share, p in labels[cols].itertuples(index=False):
        tokens = [str(t[0]) for t in _json_list(toks) if isinstance(t, list) and t][:5]
        outputs = [" ".join(str(t[0]).split()) or "␣" for t in _json_list(outs) if isinstance(t, list) and t][
            :5
        ]
        enrich = enrichment_words(group, mass, share, p)
        if tokens or outputs or enrich:
            out[int(c)] = {"tokens": tokens, "outputs": outputs, "enrich": enrich}
    return out


# Table kinds: (key, gap/status filter, sort columns, ascending, caption).
TABLES = {
    "gaps": "Model gaps",
    "strengths": "Model strengths",
    "over": "Most over-represented concepts",
    "under": "Most under-represented concepts",
}


def _select(df: pd.DataFrame, kind: str, n: int) -> pd.DataFrame:
    """The rows of one table, best first."""
    df = df.assign(delta=df["chi_model"] - df["expected"])
    if kind == "gaps":
        sel = df[df["gap"] == "weak"].sort_values(
            ["q_value", "delta", "concept"], ascending=[True, True, True], na_position="last", kind="stable"
        )
    elif kind == "strengths":
        # strengths above chance first: one at chance level is no better than guessing
        chance = df["at_chance"] if "at_chance" in df.columns else pd.Series(False, index=df.index)
        sel = (
            df.assign(_chance=chance.astype(bool))[df["gap"] == "strong"]
            .sort_values(
                ["_chance", "q_value", "delta", "concept"],
                ascending=[True, True, False, True],
                na_position="last",
                kind="stable",
            )
            .drop(columns="_chance")
        )
    elif kind == "over":
        sel = df[df["status"] == "over"].sort_values(
            ["chi_bench", "concept"], ascending=[False, True], kind="stable"
        )
    else:
        sel = df[df["status"] == "under"].sort_values(
            ["chi_bench", "concept"], ascending=[True, True], kind="stable"
        )
    return sel.head(n)


def _figures(r: Any) -> dict[str, Any]:
    """The scored figures of a concepts.parquet or themes.parquet row, as the tables show them,
    with its chance level (:mod:`cgaps.chance`) where the row carries one."""
    chi, exp = _num(r.chi_model), _num(r.expected)
    return {
        "support": int(r.support),
        "chi_bench": _num(r.chi_bench),
        "chi_model": chi,
        "expected": exp,
        "delta": chi - exp,
        "ci_low": _num(r.ci_low),
        "ci_high": _num(r.ci_high),
        "q": _num(r.q_value),
        "chance": _num(getattr(r, "chance", math.nan)),
        "p_chance": _num(getattr(r, "p_chance", math.nan)),
        "at_chance": bool(getattr(r, "at_chance", False)) and r.gap == "strong",
    }


def _row(r: Any, scope: str, describe: _Describer, examples: _Examples) -> dict[str, Any]:
    c = int(r.concept)
    lo, hi, chi, exp = _num(r.ci_low), _num(r.ci_high), _num(r.chi_model), _num(r.expected)

    def pct(x: float) -> float | None:
        return round(100 * min(max(x, 0.0), 1.0), 1) if math.isfinite(x) else None

    return {
        "concept": c,
        **_figures(r),
        "status": r.status,
        "gap": r.gap,
        "desc": describe(c),
        "examples": examples.get(c, scope),
        # Positions (percent of the [0, 1] track) for the CSS forest-plot cell.
        "bar": {
            "lo": pct(lo),
            "hi": pct(hi),
            "chi": pct(chi),
            "exp": pct(exp),
            "chance": pct(_num(getattr(r, "chance", math.nan))),
        },
    }


def _matrix(overlap: pd.DataFrame | None, names: list[str], column: str) -> np.ndarray:
    m = np.full((len(names), len(names)), np.nan)
    np.fill_diagonal(m, 1.0)
    if overlap is None:
        return m
    index = {n: i for i, n in enumerate(names)}
    for a, b, v in overlap[["a", "b", column]].itertuples(index=False):
        i, j = index.get(str(a)), index.get(str(b))
        if i is not None and j is not None and i != j:
            m[i, j] = m[j, i] = _num(v)
    return m


def table_config(run_dir: Path) -> dict[str, Any]:
    """The scoring config stored in ``concepts.parquet`` ({} for a table without them); a
    ``overlap.parquet`` made with other config (a `cgaps score` killed between its writes) is an error."""
    scoring_config = rundir.read_table_config(run_dir / rundir.CONCEPTS) or {}
    overlap = run_dir / rundir.OVERLAP
    other = rundir.read_table_config(overlap) if overlap.exists() else None
    if scoring_config and other is not None and other != scoring_config:
        diff = settings_diff(other, scoring_config, new_name="in concepts")
        raise CGapsError(
            f"{overlap}: computed with other scoring config than {rundir.CONCEPTS} ({diff}); "
            "`cgaps score` was interrupted: run it again"
        )
    return scoring_config


# ---------------------------------------------------------------- themes and findings


def read_themes(run_dir: Path, scoring_config: dict[str, Any]) -> tuple[pd.DataFrame | None, str | None]:
    """``themes.parquet`` when present and made from the current ``concepts.parquet`` (same scoring
    config in both tables' metadata), else None and, for a stale table, why it is left out."""
    from cgaps.labels.themes import THEME_COLUMNS, THEMES

    path = run_dir / THEMES
    if not path.exists():
        return _tested_themes(run_dir, scoring_config)
    df = rundir.read_table(path, "rerun `cgaps label RUN_DIR`")
    if "spread" not in df.columns:  # written before the column existed: the enriched group alone
        df = df.assign(spread="[]")
    missing = [c for c in THEME_COLUMNS if c not in df.columns]
    if missing:
        raise CGapsError(f"{path}: missing column(s) {', '.join(missing)}; rerun `cgaps label RUN_DIR`")
    made = dict(rundir.read_table_config(path) or {})
    if "theme_cut" not in scoring_config:  # scored before theme_cut was a scoring config field
        made.pop("theme_cut", None)
    if scoring_config and made != scoring_config:
        return (
            None,
            f"{THEMES} was made before the last `cgaps score`; rerun `cgaps label RUN_DIR` to update the themes",
        )
    df = df.copy()
    df["scope"] = df["scope"].astype(str)
    df["gap"] = df["gap"].fillna("").astype(str)
    return df, None


UNLABELLED_NOTE = (
    "These themes are as `cgaps score` tested them, named by their members: run `cgaps label RUN_DIR` "
    "to say in words what each is about."
)


def _tested_themes(run_dir: Path, scoring_config: dict[str, Any]) -> tuple[pd.DataFrame | None, str | None]:
    """Without ``themes.parquet`` (no ``cgaps label`` yet), the themes ``cgaps score`` tested
    (``theme_tests.parquet``): their calls are findings of their own, whether or not any member
    is called alone, so they are shown, named by their members, with empty word columns."""
    path = run_dir / rundir.THEME_TESTS
    if not path.exists():
        return None, None
    made = dict(rundir.read_table_config(path) or {})
    if scoring_config and made != scoring_config:  # scored apart from concepts.parquet (an interrupted score)
        return None, f"{rundir.THEME_TESTS} is not from the last `cgaps score`; rerun `cgaps score RUN_DIR`"
    df = rundir.read_table(path, "rerun `cgaps score RUN_DIR`").copy()
    df["scope"] = df["scope"].astype(str)
    df["gap"] = df["gap"].fillna("").astype(str)
    return (
        df.assign(
            tokens="[]",
            enrich_group=None,
            enrich_mass=np.nan,
            enrich_items=np.nan,
            enrich_p=np.nan,
            spread="[]",
        ),
        UNLABELLED_NOTE,
    )


SPREAD_BELOW = 0.5  # a theme whose largest group holds less than this is named by its largest groups


def theme_phrase(
    tokens: list[str], group: Any, mass: Any, share: Any, spread: list[Any] | None = None
) -> str:
    """A theme in words: where its weight falls and its tokens, e.g.
    'probes:weekday items (68% of its weight, 8% of all items) · “days”, “Today”, “Sunday”'. When
    its largest group holds less than :data:`SPREAD_BELOW` of its weight, the largest groups of
    ``spread`` (``[[group, mass share, item share], ...]``) are named instead, e.g.
    'probes:date_add, add_no_carry and add_carry items (35%, 31%, 29% of its weight)',
    or, when even those hold less than half of it, 'spread over many groups (largest probes:date_add, 15%)'."""
    parts = []
    m, b = _num(mass), _num(share)
    rows = [r for r in (spread or []) if isinstance(r, list) and len(r) >= 2 and isinstance(r[0], str)]
    if isinstance(group, str) and group and math.isfinite(m) and m < SPREAD_BELOW and len(rows) > 1:
        held = sum(_num(r[1]) for r in rows)
        if held >= SPREAD_BELOW:
            names = [str(r[0]) for r in rows]
            prefix = names[0].split(":", 1)[0] + ":" if ":" in names[0] else ""
            if prefix and all(n.startswith(prefix) for n in names):  # one benchmark's categories
                names = [n.removeprefix(prefix) for n in names]
            else:
                prefix = ""
            joined = prefix + ", ".join(names[:-1]) + " and " + names[-1]
            shares = ", ".join(f"{100 * _num(r[1]):.0f}%" for r in rows)
            parts.append(f"{joined} items ({shares} of its weight)")
        else:
            parts.append(f"items spread over many groups (largest {group}, {100 * m:.0f}% of its weight)")
    elif isinstance(group, str) and group and math.isfinite(m):
        parts.append(f"{group} items ({100 * m:.0f}% of its weight, {100 * b:.0f}% of all items)")
    if tokens:
        parts.append(("text with " if not parts else "") + ", ".join(f"“{t}”" for t in tokens[:4]))
    return " · ".join(parts)


def theme_chance(themes: pd.DataFrame, m: SuiteMatrix, chance: np.ndarray, alpha: float) -> pd.DataFrame:
    """``themes`` with ``chance``, ``p_chance`` and ``at_chance`` (:mod:`cgaps.chance`): a theme's
    chance level weighs its items as its χ_model does, by the theme's saliency (the sum over its
    members of ŝ', docs/method.md §3, :func:`cgaps.labels.themes.theme_matrix`)."""
    from cgaps.chance import at_chance, weighted_chance
    from cgaps.labels.themes import theme_matrix

    ids = sorted({int(t) for t in themes["theme"]})
    first = themes.drop_duplicates("theme").set_index("theme")["members"]
    members = [np.asarray([int(c) for c in _json_list(first.loc[t])], dtype=np.int64) for t in ids]
    members = [c[(c >= 0) & (c < m.n_concepts)] for c in members]
    out = themes.copy()
    if not ids or any(len(c) == 0 for c in members):
        return out.assign(chance=np.nan, p_chance=np.nan, at_chance=False)
    levels = weighted_chance(theme_matrix(m.shat_matrix(), members), chance, m.bench, len(m.benchmarks))
    row = {name: k for k, name in enumerate(m.benchmarks)} | {rundir.ALL_SCOPE: len(m.benchmarks)}
    col = {t: j for j, t in enumerate(ids)}
    k = out["scope"].map(row)
    j = out["theme"].map(col)
    ok = (k.notna() & j.notna()).to_numpy()
    level = np.full(len(out), np.nan)
    level[ok] = levels[k[ok].astype(int).to_numpy(), j[ok].astype(int).to_numpy()]
    p, flag = at_chance(out["chi_model"], out["n_eff"], level, alpha)
    return out.assign(chance=level, p_chance=p, at_chance=flag)


def _theme_rows(themes: pd.DataFrame, describe: _Describer, limit: int | None) -> list[dict[str, Any]]:
    """The ALL-scope themes shown in the report: every gap and strength theme, then the rest, up to ``limit``."""
    rows = []
    all_rows = themes[themes["scope"] == rundir.ALL_SCOPE].sort_values("theme", kind="stable")
    if limit is not None:
        all_rows = all_rows.head(limit)
    has_format = "format" in themes.columns
    for r in all_rows.itertuples(index=False):
        members = [int(c) for c in _json_list(r.members)]
        tokens = [str(t) for t in _json_list(r.tokens)]
        rows.append(
            {
                "theme": int(r.theme),
                "phrase": theme_phrase(
                    tokens, r.enrich_group, r.enrich_mass, r.enrich_items, _json_list(r.spread)
                )
                or _members_phrase(int(r.theme), members, describe),
                "gap": r.gap,
                "format": has_format and _is_true(r.format),
                "n_members": int(r.n_members),
                "members": [{"concept": c, "desc": describe(c)} for c in members[:12]],
                "member_ids": members,
                "more_members": max(0, len(members) - 12),
                **_figures(r),
                "enrich_p": _num(r.enrich_p),
            }
        )
    return rows


def _members_phrase(theme: int, members: list[int], describe: _Describer, shown: int = 3) -> str:
    """A theme without words (not labelled yet) named by its strongest members, e.g.
    'theme 4: “Vedas” (concept 12), concept 40, concept 7 and 5 more'."""
    names = [
        describe.name(c) if describe.name(c) == f"concept {c}" else f"{describe.name(c)} (concept {c})"
        for c in members[:shown]
    ]
    more = f" and {len(members) - shown} more" if len(members) > shown else ""
    return f"theme {theme}: " + ", ".join(names) + more if names else f"theme {theme}"


def _power_lines(power: dict[str, Any] | None, scope: str) -> list[str]:
    """Under an empty gap table: what a concept on 30 items of ``scope`` must show to be called,
    and the items per benchmark a topic would need: the power lines of a scope that called
    nothing (:func:`cgaps.scoring.power.summary_sentences`), less their first, "nothing was called"."""
    from cgaps.scoring.power import summary_sentences

    return summary_sentences(power or {}, 0, scope)[1:]


def _scoring_notes(
    power: dict[str, Any] | None, all_df: pd.DataFrame, themes: pd.DataFrame | None
) -> list[list[dict[str, Any]]]:
    """The first screen's lines on what the data could have found (run.json ``power``, written by
    ``cgaps score``): that nothing was called when no concept or theme of ``ALL`` is, what a
    concept on 30 items must show, and then what would be needed."""
    from cgaps.scoring.power import scope_calls, summary_sentences

    if not power:
        return []
    all_themes = None if themes is None else themes[themes["scope"] == rundir.ALL_SCOPE]
    calls = scope_calls(all_df, all_themes).get(rundir.ALL_SCOPE, 0)
    return [[_link(line)] for line in summary_sentences(power, calls)]


def _link(text: str, href: str | None = None) -> dict[str, Any]:
    return {"text": text, "href": href}


def _entries(
    all_df: pd.DataFrame, theme_rows: list[dict[str, Any]] | None, describe: _Describer
) -> list[dict[str, Any]]:
    """The findings :mod:`cgaps.report.findings` lists, best first (by q): every called theme (one
    finding with its members, called or not) and every called concept that no called theme
    holds (themes are built from all concepts, so a concept may be called alone outside them)."""
    themed: set[int] = set()
    out: list[dict[str, Any]] = []
    for r in theme_rows or []:
        if r["gap"] not in ("weak", "strong"):
            continue
        themed.update(r["member_ids"])  # every member, not only the 12 shown
        out.append(
            {
                "name": r["phrase"],
                "href": f"#theme-{r['theme']}",
                "kind": r["gap"],
                "theme": True,
                "format": r["format"],
                "chi_model": r["chi_model"],
                "expected": r["expected"],
                "chance": r["chance"],
                "at_chance": r["at_chance"],
                "q": r["q"],
                "detail": f"{r['n_members']} concept{'' if r['n_members'] == 1 else 's'}, {r['support']} items",
            }
        )
    for kind in ("gaps", "strengths"):
        for r in _select(all_df, kind, len(all_df)).itertuples(index=False):
            c = int(r.concept)
            if c in themed:
                continue
            f = _figures(r)
            out.append(
                {
                    "name": describe.name(c),
                    "href": "#gaps" if kind == "gaps" else "#strengths",
                    "kind": r.gap,
                    "format": c in describe.format,
                    "chi_model": f["chi_model"],
                    "expected": f["expected"],
                    "chance": f["chance"],
                    "at_chance": f["at_chance"],
                    "q": f["q"],
                    "detail": (f"concept {c}, " if describe.name(c) != f"concept {c}" else "")
                    + f"{int(r.support)} items",
                }
            )
    # best first: the smallest q (NaN last); ties keep themes before concepts
    return sorted(out, key=lambda e: (not math.isfinite(e["q"]), e["q"] if math.isfinite(e["q"]) else 0.0))


def _findings(
    t: RunTables,
    all_df: pd.DataFrame,
    themes: pd.DataFrame | None,
    theme_rows: list[dict[str, Any]],
    describe: _Describer,
    fdr: float,
    groups: pd.DataFrame,
) -> list[list[dict[str, Any]]]:
    """The report's opening sentences (:mod:`cgaps.report.findings`), each a list of text segments
    (a segment with ``href`` links to its evidence). Generated from the tables alone."""
    from cgaps.report import findings as words

    items = t.items
    acc = float(items["score"].mean())
    suite = groups[groups["group"] == rundir.ALL_SCOPE].iloc[0].to_dict()
    out = [words.accuracy_sentence(len(items), acc, suite), *words.group_sentences(groups)]
    strong = all_df["gap"] == "strong"
    n_chance = int((strong & all_df["at_chance"]).sum()) if "at_chance" in all_df.columns else 0
    theme_counts = None
    if themes is not None:
        all_t = themes[themes["scope"] == rundir.ALL_SCOPE]
        t_strong = all_t["gap"] == "strong"
        theme_counts = {
            "weak": int((all_t["gap"] == "weak").sum()),
            "strong": int(t_strong.sum()),
            "strong_chance": int((t_strong & all_t["at_chance"]).sum())
            if "at_chance" in all_t.columns
            else 0,
        }
    out.append(
        words.calls_sentence(
            int((all_df["gap"] == "weak").sum()), int(strong.sum()), n_chance, fdr, theme_counts
        )
    )
    has_format = ("format" in themes.columns) if themes is not None else describe.has_format
    out += words.call_lists(
        _entries(all_df, theme_rows if themes is not None else None, describe), has_format
    )

    # where the gap themes' weight falls, with each group's accuracy (a category's, or a benchmark's)
    if themes is not None:
        gaps_t = themes[(themes["scope"] == rundir.ALL_SCOPE) & (themes["gap"] == "weak")]
        # each theme's items shared among the groups holding its weight (a theme spread thinly over
        # every group adds little to each), then the groups holding most
        weight: dict[str, float] = {}
        for r in gaps_t.itertuples(index=False):
            rows = [x for x in _json_list(r.spread) if isinstance(x, list) and len(x) >= 2]
            if not rows and isinstance(r.enrich_group, str) and r.enrich_group:
                rows = [[r.enrich_group, _num(r.enrich_mass)]]
            for g, share, *_ in rows:
                if isinstance(g, str) and g and math.isfinite(_num(share)):
                    weight[g] = weight.get(g, 0.0) + _num(r.support) * _num(share)
        top = pd.Series(weight, dtype=np.float64).sort_values(ascending=False, kind="stable").head(4)
        by_group = groups.set_index("group")
        if len(top):
            segs = [_link("The gap themes concentrate on ")]
            for n, g in enumerate(top.index):
                shown = str(g)
                if str(g) in by_group.index:
                    row = by_group.loc[str(g)]
                    shown += f" (accuracy {100 * row['accuracy']:.0f}%"
                    shown += (
                        f"; {words.chance_words(row['chance'])})" if math.isfinite(row["chance"]) else ")"
                    )
                segs.append(_link(shown))
                segs.append(_link(", " if n < len(top) - 1 else f", against {100 * acc:.0f}% overall."))
            out.append(segs)
        # benchmark gaps per benchmark: the least covered and the missing themes
        if len(t.benchmarks) > 1:
            names = {r["theme"]: r["phrase"] for r in theme_rows}
            for b in t.benchmarks:
                sub = themes[themes["scope"] == b]
                miss = sub[(sub["status"] == "missing") & sub["theme"].isin(list(names))].head(2)
                under = (
                    sub[(sub["status"] == "under") & sub["theme"].isin(list(names))]
                    .sort_values("chi_bench")
                    .head(2)
                )
                if not len(miss) and not len(under):
                    continue
                segs = [_link(f"In {b}, ")]
                for n, (lead, rows) in enumerate(
                    (("least covered themes: ", under), ("themes it never exercises: ", miss))
                ):
                    if not len(rows):
                        continue
                    segs.append(_link(lead if n == 0 or not len(under) else "; " + lead))
                    for k, th in enumerate(rows["theme"]):
                        segs.append(_link(names[int(th)], f"#theme-{int(th)}"))
                        segs.append(_link(" and " if k < len(rows) - 1 else ""))
                segs.append(_link("."))
                out.append(segs)
    return out


def report_context(run_dir: str | Path, options: ReportConfig | None = None) -> dict[str, Any]:
    """Everything the template shows, as plain data (and SVG markup for the figures)."""
    opts = options or ReportConfig()
    run_dir = Path(run_dir)
    t = load_run(run_dir, results=True)
    concepts = t.concepts
    assert concepts is not None  # results=True reads it or raises
    config: dict[str, Any] = t.meta["config"] if isinstance(t.meta.get("config"), dict) else {}
    # the config the tables were computed with are those in their own metadata (run.json may
    # be one `cgaps score` behind after a kill); run.json only for tables from older versions
    scoring_config = table_config(run_dir)
    config = {**config, **scoring_config}
    fdr = _num(config.get("fdr", 0.05))
    min_support = config.get("min_support", 5)
    under_pct, over_pct = config.get("under_pct", 10), config.get("over_pct", 90)
    benches = t.benchmarks
    # the saliency as the scores saw it (presence, concept scale): examples, contexts and chance
    # levels come from it, never from the raw table
    m = scored_matrix(t, scoring_config)
    chance = concept_chance(m, concepts, t.items, fdr)
    concepts = concepts.reset_index(drop=True).assign(
        chance=chance["chance"].to_numpy(),
        p_chance=chance["p_chance"].to_numpy(),
        at_chance=chance["at_chance"].to_numpy(),
    )
    groups = group_table(t.items, fdr)
    by_scope = {s: df for s, df in concepts.groupby("scope", sort=False)}
    all_df = by_scope[rundir.ALL_SCOPE]

    # --- benchmark coverage figures. Missing concepts (χ_bench = 0) are left out of the
    # histograms: they would swamp the first bin; the missing-% chart counts them instead.
    present = {
        s: df.loc[df["support"] > 0, "chi_bench"].to_numpy(dtype="float64") for s, df in by_scope.items()
    }
    bench_max = max([float(np.nanmax(present[b])) for b in benches if present[b].size] + [1e-6])
    all_max = float(np.nanmax(present[rundir.ALL_SCOPE])) if present[rundir.ALL_SCOPE].size else 1.0
    chi_bench_all = figures.histogram(
        present[rundir.ALL_SCOPE],
        figure="chi-bench-ALL",
        title="χ_bench, whole suite (concepts that fire)",
        xlabel="χ_bench (mean normalised saliency)",
        bins=opts.bins,
        value_range=(0.0, all_max),
        log_y=True,
        width=640,
        height=280,
    )
    chi_bench_small = [
        figures.histogram(
            present[b],
            figure=f"chi-bench-{b}",
            title=b,
            xlabel="χ_bench",
            bins=opts.bins // 2,
            value_range=(0.0, bench_max),
            log_y=True,
            width=300,
            height=190,
        )
        for b in benches
    ]
    missing_pct = [
        100.0 * float((by_scope[s]["status"] == "missing").mean()) for s in [*benches, rundir.ALL_SCOPE]
    ]
    missing_bar = figures.bar_chart(
        [*benches, "ALL (never present)"],
        missing_pct,
        figure="missing",
        title="Concepts missing from each benchmark",
        xlabel=f"% of the {t.n_concepts} concepts that are never present",
        highlight=[False] * len(benches) + [True],
    )

    # --- overlap
    overlap_figs = []
    if len(benches) > 1:
        overlap_figs.append(
            figures.heatmap(
                benches,
                _matrix(t.overlap, benches, "jaccard"),
                figure="jaccard",
                title="Jaccard overlap of present concepts",
            )
        )
        overlap_figs.append(
            figures.heatmap(
                benches,
                _matrix(t.overlap, benches, "spearman_chi_model"),
                figure="spearman-chi-model",
                diverging=True,
                title="Spearman correlation of χ_model (shared concepts)",
            )
        )

    # --- model performance figures
    chi_model = {s: df["chi_model"].to_numpy(dtype="float64") for s, df in by_scope.items()}
    medians = {s: (float(np.nanmedian(v)) if np.isfinite(v).any() else None) for s, v in chi_model.items()}
    chi_model_all = figures.histogram(
        chi_model[rundir.ALL_SCOPE],
        figure="chi-model-ALL",
        title="χ_model, whole suite",
        xlabel="χ_model",
        bins=opts.bins,
        value_range=(0.0, 1.0),
        median=True,
        width=640,
        height=280,
    )
    chi_model_small = [
        figures.histogram(
            chi_model[b],
            figure=f"chi-model-{b}",
            title=b,
            xlabel="χ_model",
            bins=opts.bins // 2,
            value_range=(0.0, 1.0),
            median=True,
            width=300,
            height=190,
        )
        for b in benches
    ]

    # --- tables
    selections: dict[str, dict[str, pd.DataFrame]] = {}
    needed: set[int] = set()
    for kind in TABLES:
        selections[kind] = {rundir.ALL_SCOPE: _select(all_df, kind, opts.top)}
        for b in benches:
            selections[kind][b] = _select(by_scope[b], kind, opts.top_per_benchmark)
        for df in selections[kind].values():
            needed.update(int(c) for c in df["concept"])
    examples = _Examples(t, present_rows(m, needed), opts)
    describe = _Describer(t, opts, m)
    power = t.meta.get("power") if isinstance(t.meta.get("power"), dict) else None
    tables = {
        kind: [
            {
                "scope": scope,
                "rows": [_row(r, scope, describe, examples) for r in df.itertuples(index=False)],
                "count": int((by_scope[scope]["gap"] == {"gaps": "weak", "strengths": "strong"}[kind]).sum())
                if kind in ("gaps", "strengths")
                else int((by_scope[scope]["status"] == kind).sum()),
                "at_chance": int(((by_scope[scope]["gap"] == "strong") & by_scope[scope]["at_chance"]).sum())
                if kind == "strengths"
                else 0,
                # an empty gap table says what the items could have shown and what would be needed
                "power": _power_lines(power, scope) if kind == "gaps" and not len(df) else [],
            }
            for scope, df in selections[kind].items()
        ]
        for kind in TABLES
    }

    themes, themes_note = read_themes(run_dir, scoring_config)
    if themes is not None:
        themes = theme_chance(themes, m, matrix_chance(m, t.items), fdr)
    theme_rows = [] if themes is None else _theme_rows(themes, describe, None)
    findings = _findings(t, all_df, themes, theme_rows, describe, fdr, groups)

    status_counts = {
        s: {k: int((by_scope[s]["status"] == k).sum()) for k in ("missing", "under", "normal", "over")}
        for s in [*benches, rundir.ALL_SCOPE]
    }
    return {
        # the report section shown is this build's options: run.json holds the last build's
        # (a rebuilt page equals the first one)
        "header": _header(
            {**t.meta, "config": {**config, "report": dataclasses.asdict(opts)}}, t.n_concepts, run_dir
        ),
        "accuracy": _accuracy(t.items, benches, groups),
        "benchmarks": benches,
        "n_items": len(t.items),
        "n_concepts": t.n_concepts,
        "fdr": fdr,
        "min_support": min_support,
        "under_pct": under_pct,
        "over_pct": over_pct,
        "has_labels": t.labels is not None,
        "has_contexts": t.contexts is not None,
        "status_counts": status_counts,
        "medians": medians,
        "figures": {
            "chi_bench_all": chi_bench_all,
            "chi_bench_small": chi_bench_small,
            "missing": missing_bar,
            "overlap": overlap_figs,
            "chi_model_all": chi_model_all,
            "chi_model_small": chi_model_small,
        },
        "overlap_rows": []
        if t.overlap is None
        else [
            {"a": str(a), "b": str(b), "jaccard": _num(j), "rho_model": _num(m), "rho_bench": _num(n)}
            for a, b, j, m, n in t.overlap[list(rundir.OVERLAP_COLUMNS)].itertuples(index=False)
        ],
        "tables": tables,
        "findings": findings,
        "themes": theme_rows[: opts.top],
        "n_themes": len(theme_rows),
        # The first screen's place for the scoring stage's own sentences (theme-level calls; what
        # the data could have found: the smallest gap each scope could call), each a list of
        # segments like the findings'. Filled when the scoring stage writes them (issue 21);
        # nothing is invented here.
        "scoring_notes": _scoring_notes(power, all_df, themes),
        "has_robustness_section": bool(t.robustness) or (run_dir / "validation.json").exists(),
        "themes_note": themes_note,
        "has_evidence": bool(describe.evidence),
        "table_titles": TABLES,
        # robustness.json and validation.json as tables (cgaps.report.checks); empty without both
        "robustness": checks_section(run_dir, t.robustness),
        "fill_confirm": fill_confirm.section(run_dir),  # cgaps fill / cgaps confirm, when run
        "options": asdict(opts),
    }


# ---------------------------------------------------------------- rendering


def _fmt(x: Any, digits: int = 3) -> str:
    v = _num(x)
    return "–" if not math.isfinite(v) else f"{v:.{digits}f}"


def _fmt_q(x: Any) -> str:
    v = _num(x)
    if not math.isfinite(v):
        return "–"
    return f"{v:.2e}" if v < 1e-3 else f"{v:.3f}"


def _sortval(x: Any) -> str:
    """A data-sort attribute: NaN sorts last."""
    v = _num(x)
    return "" if not math.isfinite(v) else repr(v)


def _visible(value: Any) -> Any:
    from markupsafe import Markup

    from cgaps.console import visible_controls

    if isinstance(value, Markup):  # the figures' SVG: already escaped, stays markup
        return Markup(visible_controls(str(value)))
    return visible_controls(value) if isinstance(value, str) else value


@functools.cache
def _template() -> Any:
    # Compiled once per process: compiling costs more than rendering a small run.
    source = resources.files("cgaps.report").joinpath("template.html.j2").read_text(encoding="utf-8")
    return jinja_env().from_string(source)


@functools.cache
def report_css() -> Any:
    """The report's stylesheet (``report.css``) as markup to inline; the compare page shares it."""
    from markupsafe import Markup

    return Markup(resources.files("cgaps.report").joinpath("report.css").read_text(encoding="utf-8"))


def jinja_env() -> Any:
    """The report's Jinja environment: autoescape on, no control character reaching the page, the
    number filters (``f``, ``q``, ``sortval``); the compare page renders through it too."""
    from jinja2 import Environment, StrictUndefined

    env = Environment(
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_visible,  # no control character (NUL, ESC...) of benchmark text reaches the page
    )
    env.filters.update(f=_fmt, q=_fmt_q, sortval=_sortval)
    return env


def render(context: dict[str, Any]) -> str:
    """The report's HTML for a :func:`report_context`."""
    return _template().render(**{"css": report_css(), **context})


def build_report(
    run_dir: str | Path, out: str | Path | None = None, options: ReportConfig | None = None
) -> Path:
    """Write the self-contained HTML report of a run; return its path (default ``RUN_DIR/report.html``)."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / rundir.REPORT
    opts = options or ReportConfig()
    context = report_context(run_dir, opts)
    if out.resolve() != (run_dir / rundir.REPORT).resolve():
        rundir.write_text(render(context), out)
        return out
    # the run's own report, under the run's lock like every stage (score_run...): taking it removes
    # the temporary file of a report killed while writing, and it is current once recorded
    with rundir.writing(run_dir):
        rundir.write_text(render(context), out)
        cfg = config_from_run(rundir.read_run_json(run_dir), run_dir)
        rundir.record_completion(run_dir, "report", cfg.replace(report=opts))
    return out
