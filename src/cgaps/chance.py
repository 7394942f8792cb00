"""Chance levels: what guessing would score, per item, per group of items and per concept.

A strength on a yes/no task at 47% accuracy is a coin flip, however far above the suite's mean
it sits. This module says what guessing would score and whether an accuracy is significantly
above that (docs/method.md §3, "Chance level"); the report, the explorer, ``cgaps export`` and
the status lines all take their chance figures from here, so they cannot disagree.

- **Per item** (:func:`item_chance`), from what the item is (its ``answer_type`` and
  ``choices``, the vocabulary of :mod:`cgaps.answers`):

  * multiple choice with k options (``choice``, ``loglik_choice``, or any item with a
    ``choices`` list and no answer type): 1/k;
  * a two-way decision (``yesno``; ``refusal``: refuse or comply; ``hold``: keep the correct
    number or take the pushed one): 1/2;
  * free-form answers (``number``, ``math``, ``short``, ``text``): 0, a guess almost never
    matches;
  * anything else (no answer type and no choices, as in a table imported from another tool):
    unknown (NaN). Unknown items are left out of every average below; a group or concept
    whose items are all unknown has no chance level and is never marked.

- **Per group** (:func:`group_table`: each benchmark and each ``benchmark:category``): the
  mean chance level ḡ of its items, and one-sided binomial tests of its accuracy on its n
  items (k = the sum of the scores) against ḡ: *above chance* when P(X ≥ k) ≤ α, *below
  chance* when P(X ≤ k) ≤ α, else *at chance*.

- **Per concept** (:func:`weighted_chance`): the chance level with the weights of χ_model,
  g(c, S) = Σ s'_c(x) g(x) / Σ s'_c(x) over the items of S where c is present (the
  thresholded saliency of docs/method.md §2), and the same one-sided binomial test with
  n = n_eff trials and k = χ_model · n_eff successes (:func:`p_above`). A strength is *at
  chance* when that p-value exceeds α: its χ_model is not significantly above what guessing
  would score on its items.

- **The binomial tail on fractional counts.** n_eff and χ_model · n_eff are rarely integers, so
  P(X ≥ k) for X ~ Bin(n, g) is taken in its closed form as the regularised incomplete beta
  function, I_g(k, n − k + 1), which is exact at integer k and n and continuous between them
  (the same identity scipy's own binomial survival function uses). A mixture of items with
  different chance levels has a smaller variance than a binomial with their mean level
  (a Poisson-binomial), so testing against Bin(n, ḡ) can only make "above chance" harder to
  reach: a strength is never cleared by this approximation that the exact test would keep.

- **α** is the run's ``fdr`` (0.05 by default), one-sided, per concept and per group.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cgaps.answers import CHOICE_TYPES

if TYPE_CHECKING:
    import scipy.sparse as sp

    from cgaps.runtables import RunTables
    from cgaps.scoring.core import SuiteMatrix

# answer types whose answer is one of two (yes / no, refuse / comply, keep / cave)
BINARY_TYPES = ("yesno", "refusal", "hold")
# free-form answers: a guess almost never matches
FREE_TYPES = ("number", "math", "short", "text")
VERDICTS = ("above chance", "at chance", "below chance", "chance unknown")


def _n_choices(raw: Any) -> int | None:
    """The number of options of a ``choices`` value (a JSON list, or a list), None without one."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return None
    if isinstance(raw, str):
        if not raw.strip():
            return None
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    try:
        n = len(raw)
    except TypeError:
        return None
    return n if n > 0 else None


def _level(kind: str | None, k: int | None) -> float:
    if kind in CHOICE_TYPES or (kind is None and k is not None):
        return 1.0 / k if k else math.nan
    if kind in BINARY_TYPES:
        return 0.5
    if kind in FREE_TYPES:
        return 0.0
    return math.nan


def one_item_chance(answer_type: Any, choices: Any) -> float:
    """The chance level of one item (module docstring); NaN when it cannot be told."""
    kind = answer_type if isinstance(answer_type, str) and answer_type else None
    return _level(kind, _n_choices(choices))


def item_chance(items: pd.DataFrame) -> np.ndarray:
    """Each item's chance level (float64, NaN where unknown), in the order of ``items``."""
    n = len(items)
    types = items["answer_type"].tolist() if "answer_type" in items.columns else [None] * n
    choices = items["choices"].tolist() if "choices" in items.columns else [None] * n
    out = np.empty(n, dtype=np.float64)
    for i, (t, c) in enumerate(zip(types, choices, strict=True)):
        out[i] = _level(t if isinstance(t, str) and t else None, _n_choices(c))
    return out


# ---------------------------------------------------------------- the binomial tails


def p_above(successes: Any, trials: Any, chance: Any) -> np.ndarray:
    """P(X ≥ k) for X ~ Bin(n, g), continuous in k and n (module docstring); NaN where any input is."""
    from scipy.special import betainc

    k, n, g = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (successes, trials, chance)))
    out = np.full(k.shape, np.nan)
    ok = np.isfinite(k) & np.isfinite(n) & np.isfinite(g) & (n > 0)
    k = np.clip(k, 0.0, n)
    g = np.clip(g, 0.0, 1.0)
    none = ok & (k <= 0)
    out[none] = 1.0
    some = ok & (k > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[some] = betainc(k[some], n[some] - k[some] + 1.0, g[some])
    return out


def p_below(successes: Any, trials: Any, chance: Any) -> np.ndarray:
    """P(X ≤ k) for X ~ Bin(n, g), continuous in k and n; NaN where any input is."""
    from scipy.special import betainc

    k, n, g = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (successes, trials, chance)))
    out = np.full(k.shape, np.nan)
    ok = np.isfinite(k) & np.isfinite(n) & np.isfinite(g) & (n > 0)
    k = np.clip(k, 0.0, n)
    g = np.clip(g, 0.0, 1.0)
    full = ok & (k >= n)
    out[full] = 1.0
    part = ok & (k < n)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[part] = betainc(n[part] - k[part], k[part] + 1.0, 1.0 - g[part])
    return out


def verdict(p_up: float, p_down: float, chance: float, alpha: float) -> str:
    """One of :data:`VERDICTS` for a group's two one-sided p-values."""
    if not math.isfinite(chance):
        return "chance unknown"
    if math.isfinite(p_up) and p_up <= alpha:
        return "above chance"
    if math.isfinite(p_down) and p_down <= alpha:
        return "below chance"
    return "at chance"


# ---------------------------------------------------------------- groups of items


def group_table(items: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Accuracy and chance level per benchmark and per ``benchmark:category``, suite first.

    Columns: ``group`` (``ALL``, a benchmark, or ``benchmark:category``, the names the labels
    stage's enrichment uses), ``benchmark``, ``category`` (None for a benchmark), ``n``,
    ``accuracy`` (the mean score), ``chance`` (the mean chance level of the items whose level is
    known), ``p_above``, ``p_below`` and ``verdict``."""
    from cgaps.rundir import ALL_SCOPE

    g = item_chance(items)
    y = pd.to_numeric(items["score"], errors="coerce").to_numpy(dtype=np.float64)
    bench = items["benchmark"].astype(str).to_numpy()
    if "category" in items.columns:
        raw = items["category"]
        cats = raw.astype(str).where(raw.notna() & (raw.astype(str) != ""), "").to_numpy()
    else:
        cats = np.full(len(items), "", dtype=object)
    groups: list[tuple[str, str, str | None, np.ndarray]] = [
        (ALL_SCOPE, ALL_SCOPE, None, np.ones(len(items), bool))
    ]
    for b in dict.fromkeys(bench):
        in_b = bench == b
        groups.append((b, b, None, in_b))
        for cat in dict.fromkeys(cats[in_b & (cats != "")]):
            groups.append((f"{b}:{cat}", b, str(cat), in_b & (cats == cat)))
    rows = []
    for name, b, category, mask in groups:
        known = mask & np.isfinite(g)
        n = int(mask.sum())
        acc = float(y[mask].mean()) if n else math.nan
        chance = float(g[known].mean()) if known.any() else math.nan
        nk = int(known.sum())
        k = float(y[known].sum())
        up = float(p_above(k, nk, chance)) if nk else math.nan
        down = float(p_below(k, nk, chance)) if nk else math.nan
        rows.append(
            {
                "group": name,
                "benchmark": b,
                "category": category,
                "n": n,
                "accuracy": acc,
                "chance": chance,
                "p_above": up,
                "p_below": down,
                "verdict": verdict(up, down, chance, alpha),
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- concepts and themes


def weighted_chance(
    weights: sp.csr_matrix, chance: np.ndarray, bench: np.ndarray, n_benchmarks: int
) -> np.ndarray:
    """(K + 1) x F chance levels: per benchmark k (row k) and over all items (row K), the
    ``weights``-weighted mean of the items' ``chance`` over the items where a column has weight;
    items of unknown chance (NaN) are left out; NaN where no known item has weight."""
    import scipy.sparse as sp

    n = weights.shape[0]
    known = np.isfinite(chance)
    rows = np.concatenate([bench, np.full(n, n_benchmarks)])
    cols = np.concatenate([np.arange(n), np.arange(n)])
    g = np.where(known, chance, 0.0)
    scope = sp.csr_matrix((np.ones(2 * n), (rows, cols)), shape=(n_benchmarks + 1, n))
    num = (scope @ sp.diags(g) @ weights).toarray()
    den = (scope @ sp.diags(known.astype(np.float64)) @ weights).toarray()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def at_chance(chi_model: Any, n_eff: Any, chance: Any, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(p, at_chance): p = P(X ≥ χ_model · n_eff) for X ~ Bin(n_eff, chance), and whether p > α
    (False where the chance level or χ_model is unknown: nothing to mark)."""
    chi = np.asarray(chi_model, dtype=np.float64)
    n = np.asarray(n_eff, dtype=np.float64)
    p = p_above(chi * n, n, chance)
    return p, np.isfinite(p) & (p > alpha)


def scored_matrix(run: RunTables, scoring_config: dict[str, Any] | None = None) -> SuiteMatrix:
    """The run's saliency as its scores saw it: thresholded at the presence config field the scoring
    tables were made with (``scoring_config``, from their metadata; else run.json's), on the same concept
    scale (docs/method.md §2). Examples, contexts, counts and chance levels use this, never the
    raw table."""
    from cgaps.config import SCORING_FIELDS
    from cgaps.scoring.core import build_matrix
    from cgaps.scoring.stage import concept_scale

    cfg = run.config()
    stored = {k: v for k, v in (scoring_config or {}).items() if k in SCORING_FIELDS}
    if stored:
        cfg = cfg.replace(**stored)
    scale, _ = concept_scale(run, cfg)
    return build_matrix(run.items, run.saliency, run.n_concepts, presence=cfg.presence, scale=scale)


def matrix_chance(m: SuiteMatrix, items: pd.DataFrame) -> np.ndarray:
    """The items' chance levels (:func:`item_chance`) in the order of the rows of ``m``."""
    levels = pd.Series(item_chance(items), index=pd.Index(items["item_id"].astype(str)))
    return levels.reindex(pd.Index(m.item_ids.astype(str))).to_numpy(dtype=np.float64)


CHANCE_COLUMNS = ("concept", "scope", "chance", "p_chance", "at_chance")


def concept_chance(m: SuiteMatrix, concepts: pd.DataFrame, items: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """For every row of ``concepts`` (concept x scope, as ``cgaps score`` writes it): its chance
    level, the p-value of χ_model against it and ``at_chance``; columns :data:`CHANCE_COLUMNS`,
    in the rows' order. ``m`` is :func:`scored_matrix` (its rows in ``items``' order)."""
    levels = weighted_chance(m.saliency, matrix_chance(m, items), m.bench, len(m.benchmarks))
    scopes = {name: k for k, name in enumerate(m.benchmarks)}
    from cgaps.rundir import ALL_SCOPE

    scopes[ALL_SCOPE] = len(m.benchmarks)
    k = concepts["scope"].map(scopes).to_numpy()
    c = concepts["concept"].to_numpy(dtype=np.int64)
    level = np.full(len(concepts), np.nan)
    ok = ~pd.isna(k)
    level[ok] = levels[k[ok].astype(np.int64), c[ok]]
    p, flag = at_chance(concepts["chi_model"], concepts["n_eff"], level, alpha)
    return pd.DataFrame(
        {
            "concept": c.astype(np.int32),
            "scope": concepts["scope"].to_numpy(),
            "chance": level,
            "p_chance": p,
            "at_chance": flag,
        },
        columns=list(CHANCE_COLUMNS),
    )


def run_chance(run: RunTables, scoring_config: dict[str, Any] | None = None) -> pd.DataFrame:
    """:func:`concept_chance` of a run loaded with ``results=True`` (α = its ``fdr``)."""
    if run.concepts is None:
        raise ValueError("run_chance needs the run's concepts table (load_run(..., results=True))")
    alpha = float((scoring_config or {}).get("fdr", run.meta.get("config", {}).get("fdr", 0.05)))
    return concept_chance(scored_matrix(run, scoring_config), run.concepts, run.items, alpha)


def strengths_at_chance(concepts: pd.DataFrame, chance: pd.DataFrame, scope: str | None = None) -> int:
    """How many strengths (``gap == 'strong'``) of ``scope`` (default ``ALL``) are at chance."""
    from cgaps.rundir import ALL_SCOPE

    scope = scope or ALL_SCOPE
    rows = (concepts["scope"] == scope).to_numpy() & (concepts["gap"] == "strong").to_numpy()
    return int((rows & chance["at_chance"].to_numpy()).sum())


def record_strengths_at_chance(
    run_dir: Any, cfg: Any, concepts: pd.DataFrame | None = None
) -> tuple[np.ndarray, RunTables]:
    """After ``cgaps score`` (the command and the pipeline's score step): ``at_chance`` for every
    row of the ``concepts`` it wrote (read from the run when not given), on the saliency its
    scores used, and the count of the strengths of ``ALL`` at chance into run.json ``counts.strengths_at_chance`` (what ``cgaps
    status`` shows). Here and not in :mod:`cgaps.scoring`: chance levels read the scored matrix,
    so scoring cannot depend on this module. Returns the flags and the run it loaded."""
    from pathlib import Path

    from cgaps import rundir
    from cgaps.config import SCORING_FIELDS
    from cgaps.runtables import load_run

    run = load_run(run_dir, coded=True)
    if concepts is None:
        concepts = rundir.read_table(Path(run_dir) / rundir.CONCEPTS, "rerun `cgaps score RUN_DIR`")
    scoring_config = {k: getattr(cfg, k) for k in SCORING_FIELDS}
    flags = concept_chance(scored_matrix(run, scoring_config), concepts, run.items, cfg.fdr)[
        "at_chance"
    ].to_numpy()
    count = strengths_at_chance(concepts, pd.DataFrame({"at_chance": flags}))
    with rundir.writing(run_dir):
        rundir.update_run_json(run_dir, counts={"strengths_at_chance": count})
    return flags, run
