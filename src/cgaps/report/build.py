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
  are inline SVG); tables are capped (:class:`ReportOptions`) and example texts truncated, so
  a 16k-concept run stays a few megabytes. The file is written atomically
  (:func:`cgaps.rundir.write_text`).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cgaps import rundir
from cgaps.config import config_from_run
from cgaps.errors import CGapsError, settings_diff
from cgaps.report import figures
from cgaps.report.checks import checks_section

# defined with the other user-facing configs, so that the CLI reads its fields without pandas
from cgaps.report.options import ReportOptions
from cgaps.runtables import RunTables, load_run
from cgaps.stats import mean_interval

# ---------------------------------------------------------------- shaping


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def _accuracy(items: pd.DataFrame, benchmarks: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name, df in [*((b, items[items["benchmark"] == b]) for b in benchmarks), (rundir.ALL_SCOPE, items)]:
        mean = float(df["score"].mean())
        lo, hi = mean_interval(df["score"].to_numpy())
        rows.append(
            {
                "scope": name,
                "n": len(df),
                "mean": mean,
                "ci_low": lo,
                "ci_high": hi,
                "is_all": name == rundir.ALL_SCOPE,
            }
        )
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
        else:
            out.append((key, v if isinstance(v, str) else json.dumps(v)))
    return out


HEADLINE_KEYS = ("model", "reader", "sae", "layer", "span", "pool", "suite", "presence", "min_support", "fdr")


def _header(meta: dict[str, Any], width: int, run_dir: Path) -> dict[str, Any]:
    config: dict[str, Any] = meta["config"] if isinstance(meta.get("config"), dict) else {}
    headline = [
        (k, config[k] if isinstance(config[k], str) else json.dumps(config[k]))
        for k in HEADLINE_KEYS
        if k in config
    ]
    rest = {k: v for k, v in meta.items() if k not in ("config", "schema_version")}
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


class _Examples:
    """Top example items per (concept, scope): highest saliency first, correct and incorrect apart.

    Only the concepts that appear in a table are looked at, so the cost is one filter of the
    saliency table, not a pass per row.
    """

    def __init__(self, tables: RunTables, concepts: set[int], opts: ReportOptions) -> None:
        self.opts = opts
        k = opts.examples
        items = tables.items.set_index("item_id", drop=False)
        self.items = items
        sal = tables.saliency[tables.saliency["concept"].isin(list(concepts))]
        sal = sal.merge(tables.items[["item_id", "benchmark", "score"]], on="item_id", how="inner")
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


class _Describer:
    """A concept's description: its label, else its top contexts, else 'concept N'."""

    def __init__(self, tables: RunTables, opts: ReportOptions) -> None:
        self.labels: dict[int, tuple[str, str]] = {}
        if tables.labels is not None:
            for c, label, source in tables.labels[list(rundir.LABEL_COLUMNS)].itertuples(index=False):
                if isinstance(label, str) and label.strip():
                    self.labels[int(c)] = (
                        label.strip(),
                        "" if source is None or pd.isna(source) else str(source),
                    )
        self.contexts: dict[int, list[dict[str, Any]]] = {}
        if tables.contexts is not None and opts.contexts > 0:
            ctx = tables.contexts.sort_values(["concept", "rank"], kind="stable")
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
            "contexts": self.contexts.get(concept, []),
            "evidence": self.evidence.get(concept),
        }


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
    "gaps": "Model gaps (weak concepts)",
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
        sel = df[df["gap"] == "strong"].sort_values(
            ["q_value", "delta", "concept"], ascending=[True, False, True], na_position="last", kind="stable"
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
    """The scored figures of a concepts.parquet or themes.parquet row, as the tables show them."""
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
        "bar": {"lo": pct(lo), "hi": pct(hi), "chi": pct(chi), "exp": pct(exp)},
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


def table_knobs(run_dir: Path) -> dict[str, Any]:
    """The scoring knobs stored in ``concepts.parquet`` ({} for a table without them); a
    ``overlap.parquet`` made with other knobs (a `cgaps score` killed between its writes) is an error."""
    knobs = rundir.read_table_knobs(run_dir / rundir.CONCEPTS) or {}
    overlap = run_dir / rundir.OVERLAP
    other = rundir.read_table_knobs(overlap) if overlap.exists() else None
    if knobs and other is not None and other != knobs:
        diff = settings_diff(other, knobs, new_name="in concepts")
        raise CGapsError(
            f"{overlap}: computed with other scoring knobs than {rundir.CONCEPTS} ({diff}); "
            "`cgaps score` was interrupted: run it again"
        )
    return knobs


# ---------------------------------------------------------------- themes and findings


def read_themes(run_dir: Path, knobs: dict[str, Any]) -> tuple[pd.DataFrame | None, str | None]:
    """``themes.parquet`` when present and made from the current ``concepts.parquet`` (same scoring
    knobs in both tables' metadata), else None and, for a stale table, why it is left out."""
    from cgaps.labels.themes import THEME_COLUMNS, THEMES

    path = run_dir / THEMES
    if not path.exists():
        return None, None
    df = rundir.read_table(path, "rerun `cgaps label RUN_DIR`")
    if "spread" not in df.columns:  # written before the column existed: the enriched group alone
        df = df.assign(spread="[]")
    missing = [c for c in THEME_COLUMNS if c not in df.columns]
    if missing:
        raise CGapsError(f"{path}: missing column(s) {', '.join(missing)}; rerun `cgaps label RUN_DIR`")
    made = {k: v for k, v in (rundir.read_table_knobs(path) or {}).items() if k != "theme_cut"}
    if knobs and made != knobs:
        return (
            None,
            f"{THEMES} was made before the last `cgaps score`; rerun `cgaps label RUN_DIR` to update the themes",
        )
    df = df.copy()
    df["scope"] = df["scope"].astype(str)
    df["gap"] = df["gap"].fillna("").astype(str)
    return df, None


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


def _theme_rows(themes: pd.DataFrame, describe: _Describer, limit: int) -> list[dict[str, Any]]:
    """The ALL-scope themes shown in the report: every gap and strength theme, then the rest, up to ``limit``."""
    rows = []
    all_rows = themes[themes["scope"] == rundir.ALL_SCOPE].sort_values("theme", kind="stable").head(limit)
    for r in all_rows.itertuples(index=False):
        members = [int(c) for c in _json_list(r.members)]
        tokens = [str(t) for t in _json_list(r.tokens)]
        rows.append(
            {
                "theme": int(r.theme),
                "phrase": theme_phrase(
                    tokens, r.enrich_group, r.enrich_mass, r.enrich_items, _json_list(r.spread)
                )
                or f"theme {int(r.theme)}",
                "gap": r.gap,
                "n_members": int(r.n_members),
                "members": [{"concept": c, "desc": describe(c)} for c in members[:12]],
                "more_members": max(0, len(members) - 12),
                **_figures(r),
                "enrich_p": _num(r.enrich_p),
            }
        )
    return rows


def _link(text: str, href: str | None = None) -> dict[str, Any]:
    return {"text": text, "href": href}


def _findings(
    t: RunTables,
    all_df: pd.DataFrame,
    themes: pd.DataFrame | None,
    theme_rows: list[dict[str, Any]],
    describe: _Describer,
    fdr: float,
) -> list[list[dict[str, Any]]]:
    """The report's opening sentences, each a list of text segments (a segment with ``href``
    links to its evidence). Generated from the tables alone: nothing is written for one run."""
    items = t.items
    n_weak = int((all_df["gap"] == "weak").sum())
    n_strong = int((all_df["gap"] == "strong").sum())
    out: list[list[dict[str, Any]]] = []
    acc = float(items["score"].mean())
    first = [
        _link(f"The model answers {100 * acc:.0f}% of the {len(items)} items correctly ("),
        _link("accuracy", "#accuracy"),
        _link("). "),
    ]
    if themes is not None:
        all_t = themes[themes["scope"] == rundir.ALL_SCOPE]
        tw, ts = int((all_t["gap"] == "weak").sum()), int((all_t["gap"] == "strong").sum())
        first += [
            _link(f"{n_weak} concepts are "),
            _link("gaps", "#gaps"),
            _link(
                f" (it does significantly worse where they fire than their benchmarks' accuracy predicts, FDR {fdr:g}) and {n_strong} are "
            ),
            _link("strengths", "#strengths"),
            _link("; grouped by what they fire on, they form "),
            _link(
                f"{tw} gap theme{'' if tw == 1 else 's'} and {ts} strength theme{'' if ts == 1 else 's'}",
                "#themes",
            ),
            _link("."),
        ]
    else:
        first += [
            _link(f"{n_weak} concepts are "),
            _link("gaps", "#gaps"),
            _link(f" and {n_strong} are "),
            _link("strengths", "#strengths"),
            _link(f" (FDR {fdr:g})."),
        ]
    out.append(first)

    def theme_list(kind: str) -> list[list[dict[str, Any]]]:
        return [
            [
                _link(r["phrase"], f"#theme-{r['theme']}"),
                _link(
                    f": right on {100 * r['chi_model']:.0f}% where {100 * r['expected']:.0f}% was expected "
                    f"({r['n_members']} concept{'' if r['n_members'] == 1 else 's'}, {r['support']} items)"
                ),
            ]
            for r in [r for r in theme_rows if r["gap"] == kind][:3]
        ]

    def concept_list(kind: str) -> list[list[dict[str, Any]]]:
        rows = _select(all_df, "gaps" if kind == "weak" else "strengths", 3)
        return [
            [
                _link(
                    describe(int(r.concept))["label"] or f"concept {int(r.concept)}",
                    "#gaps" if kind == "weak" else "#strengths",
                ),
                _link(
                    f": right on {100 * _num(r.chi_model):.0f}% where {100 * _num(r.expected):.0f}% was expected ({int(r.support)} items)"
                ),
            ]
            for r in rows.itertuples(index=False)
        ]

    for kind, lead in (("weak", "It fails most on:"), ("strong", "It does best on:")):
        sub = theme_list(kind) if themes is not None else concept_list(kind)
        if sub:
            out.append([_link(lead), {"sub": sub}])

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
        groups = pd.Series(weight, dtype=np.float64).sort_values(ascending=False, kind="stable").head(4)
        accs = _group_accuracy(items)
        if len(groups):
            segs = [_link("The gap themes concentrate on ")]
            for n, g in enumerate(groups.index):
                a = accs.get(str(g))
                segs.append(_link(str(g) + (f" (accuracy {100 * a:.0f}%)" if a is not None else "")))
                segs.append(_link(", " if n < len(groups) - 1 else f", against {100 * acc:.0f}% overall."))
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


def _group_accuracy(items: pd.DataFrame) -> dict[str, float]:
    """Mean score per benchmark and per ``benchmark:category`` (the enrichment groups' names)."""
    out = {str(b): float(v) for b, v in items.groupby("benchmark")["score"].mean().items()}
    if "category" in items.columns:
        cat = items.dropna(subset=["category"])
        key = cat["benchmark"].astype(str) + ":" + cat["category"].astype(str)
        out.update({str(k): float(v) for k, v in cat.groupby(key)["score"].mean().items()})
    return out


def report_context(run_dir: str | Path, options: ReportOptions | None = None) -> dict[str, Any]:
    """Everything the template shows, as plain data (and SVG markup for the figures)."""
    opts = options or ReportOptions()
    run_dir = Path(run_dir)
    t = load_run(run_dir, results=True)
    concepts = t.concepts
    assert concepts is not None  # results=True reads it or raises
    config: dict[str, Any] = t.meta["config"] if isinstance(t.meta.get("config"), dict) else {}
    # the knobs the tables were computed with are those in their own metadata (run.json may
    # be one `cgaps score` behind after a kill); run.json only for tables from older versions
    knobs = table_knobs(run_dir)
    config = {**config, **knobs}
    fdr = _num(config.get("fdr", 0.05))
    min_support = config.get("min_support", 5)
    under_pct, over_pct = config.get("under_pct", 10), config.get("over_pct", 90)
    benches = t.benchmarks
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
    examples = _Examples(t, needed, opts)
    describe = _Describer(t, opts)
    tables = {
        kind: [
            {
                "scope": scope,
                "rows": [_row(r, scope, describe, examples) for r in df.itertuples(index=False)],
                "count": int((by_scope[scope]["gap"] == {"gaps": "weak", "strengths": "strong"}[kind]).sum())
                if kind in ("gaps", "strengths")
                else int((by_scope[scope]["status"] == kind).sum()),
            }
            for scope, df in selections[kind].items()
        ]
        for kind in TABLES
    }

    themes, themes_note = read_themes(run_dir, knobs)
    theme_rows = [] if themes is None else _theme_rows(themes, describe, opts.top)
    findings = _findings(t, all_df, themes, theme_rows, describe, fdr)

    status_counts = {
        s: {k: int((by_scope[s]["status"] == k).sum()) for k in ("missing", "under", "normal", "over")}
        for s in [*benches, rundir.ALL_SCOPE]
    }
    return {
        "header": _header({**t.meta, "config": config}, t.n_concepts, run_dir),
        "accuracy": _accuracy(t.items, benches),
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
        "themes": theme_rows,
        "themes_note": themes_note,
        "has_evidence": bool(describe.evidence),
        "table_titles": TABLES,
        # robustness.json and validation.json as tables (cgaps.report.checks); empty without both
        "robustness": checks_section(run_dir, t.robustness),
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
    from jinja2 import Environment, StrictUndefined

    env = Environment(
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_visible,  # no control character (NUL, ESC...) of benchmark text reaches the page
    )
    env.filters.update(f=_fmt, q=_fmt_q, sortval=_sortval)
    source = resources.files("cgaps.report").joinpath("template.html.j2").read_text(encoding="utf-8")
    return env.from_string(source)


def render(context: dict[str, Any]) -> str:
    """The report's HTML for a :func:`report_context`."""
    return _template().render(**context)


def build_report(
    run_dir: str | Path, out: str | Path | None = None, options: ReportOptions | None = None
) -> Path:
    """Write the self-contained HTML report of a run; return its path (default ``RUN_DIR/report.html``)."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / rundir.REPORT
    opts = options or ReportOptions()
    context = report_context(run_dir, opts)
    rundir.write_text(render(context), out)
    if out.resolve() == (run_dir / rundir.REPORT).resolve():  # the run's own report: it is current now
        cfg = config_from_run(rundir.read_run_json(run_dir), run_dir)
        rundir.record_completion(run_dir, "report", cfg.replace(report=opts))
    return out
