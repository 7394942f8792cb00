"""Planted topics on a run's own text: does failure on whole metadata groups show up as gaps?

The planted power curve of :mod:`cgaps.validate.core` plants failure on the items of chosen
*concepts*, which the test then looks for: it measures the test, not whether a real weakness
(a subject, a task, a category the model fails) surfaces as concepts. This check plants it
where users meet it. The run's items are grouped by a metadata facet (``category``, or a
``meta`` field such as MATH's ``level``); ``planted`` groups get accuracy ``low``, the others
``high`` (0/1 scores drawn independently), and the run is scored with the facet withheld (the
expected scores come from the benchmarks, whatever ``adjust_by`` says). At each size (items
per group, a seeded subsample of every group that has that many) it reports, over the
repeats, the gap concepts and gap themes called in ``ALL`` and the share of the 20 strongest
(by q, then z) whose saliency points to a planted group: the group where the concept's ŝ' mass
per item of the group is largest (for a theme, its members' summed mass).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pandas as pd

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.scoring.core import SuiteMatrix, score_tables
from cgaps.scoring.themes import ThemeSet, theme_structure

TOP = 20


def item_facet(items: pd.DataFrame, facet: str) -> np.ndarray | None:
    """The group of every item on ``facet`` (``category`` or ``meta.FIELD``, as text; "" where
    absent); None when the items have no such facet."""
    if facet == "category":
        if "category" not in items.columns:
            return None
        return items["category"].fillna("").astype(str).to_numpy()
    key = facet.removeprefix("meta.")
    if "meta" not in items.columns:
        return None

    def get(raw: Any) -> str:
        try:
            value = json.loads(raw) if isinstance(raw, str) and raw else {}
        except ValueError:
            return ""
        return "" if not isinstance(value, dict) or value.get(key) is None else str(value[key])

    return items["meta"].map(get).to_numpy()


def _pointing(mass: np.ndarray, sizes: np.ndarray, planted: np.ndarray) -> bool:
    """Whether the group with the most mass per item is a planted one."""
    return bool(planted[int(np.argmax(mass / sizes))])


def planted_draw(
    m: SuiteMatrix,
    groups: np.ndarray,
    names: np.ndarray,
    planted: np.ndarray,
    cfg: RunConfig,
    themes: ThemeSet,
    rng: np.random.Generator,
    low: float,
    high: float,
) -> dict[str, Any]:
    """One draw: scores planted on the groups ``planted`` (a mask over ``names``), scored; what was found."""
    code = np.searchsorted(names, groups)
    p = np.where(planted[code], low, high)
    y = (rng.random(len(p)) < p).astype(np.float64)
    shat = m.shat_matrix()
    concepts, tests = score_tables(
        m.with_scores(y), cfg, themes=themes.saliency(shat), theme_of=themes.theme_of()
    )
    onehot = np.zeros((len(code), len(names)))
    onehot[np.arange(len(code)), code] = 1.0
    mass = np.asarray(shat.T @ onehot)  # concepts x groups
    sizes = np.maximum(onehot.sum(axis=0), 1.0)
    found: list[tuple[float, float, bool, str]] = []  # (q, z-like order key, points to planted, kind)
    c_all = concepts[concepts["scope"] == rundir.ALL_SCOPE]
    weak_c = c_all[c_all["gap"] == "weak"]
    for c, q, chi, e in weak_c[["concept", "q_value", "chi_model", "expected"]].itertuples(index=False):
        found.append((float(q), float(chi - e), _pointing(mass[int(c)], sizes, planted), "concept"))
    n_weak_t = n_strong_t = 0
    # how far the draw was from a first call: the hypotheses Tarone's rule kept in ALL (the bar of a
    # lone call is fdr / kept) and the smallest two-sided p-value among them
    kept_p = c_all.loc[c_all["q_value"].notna(), "p_value"].to_numpy(dtype=np.float64)
    if tests is not None and len(tests):
        t_all = tests[tests["scope"] == rundir.ALL_SCOPE]
        kept_p = np.concatenate([kept_p, t_all.loc[t_all["q_value"].notna(), "p_value"].to_numpy(np.float64)])
        weak_t = t_all[t_all["gap"] == "weak"]
        n_weak_t, n_strong_t = len(weak_t), int((t_all["gap"] == "strong").sum())
        for t, q, chi, e in weak_t[["theme", "q_value", "chi_model", "expected"]].itertuples(index=False):
            members = themes.members[int(t)]
            found.append(
                (float(q), float(chi - e), _pointing(mass[members].sum(axis=0), sizes, planted), "theme")
            )
    found.sort(key=lambda r: (r[0], r[1]))
    top = found[:TOP]

    def share(kind: str | None) -> float | None:
        rows = [r for r in found if kind is None or r[3] == kind][:TOP]
        return float(np.mean([r[2] for r in rows])) if rows else None

    return {
        "planted": [str(n) for n in names[planted]],
        "weak_concepts": len(weak_c),
        "strong_concepts": int((c_all["gap"] == "strong").sum()),
        "weak_themes": n_weak_t,
        "strong_themes": n_strong_t,
        "top": len(top),
        "top_pointing": share(None),
        "top_concepts_pointing": share("concept"),
        "top_themes_pointing": share("theme"),
        "kept": len(kept_p),
        "best_p": float(kept_p.min()) if len(kept_p) else None,
    }


def planted_topics(
    m: SuiteMatrix,
    groups: np.ndarray,
    cfg: RunConfig,
    rng: np.random.Generator,
    *,
    sizes: tuple[int, ...] = (30, 100),
    repeats: int = 5,
    planted: int = 2,
    low: float = 0.1,
    high: float = 0.7,
    w_dec: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """The check of the module docstring at each size; one summary per size that the groups allow."""
    # the facet is withheld from the run: expected scores from the benchmarks alone
    cfg = cfg.replace(adjust_by="benchmark")
    m = dataclasses.replace(m, group=None)
    out = []
    for size in sizes:
        names, counts = np.unique(groups[groups != ""], return_counts=True)
        eligible = names[counts >= size]
        if len(eligible) < planted + 1:
            continue
        rows = np.sort(
            np.concatenate(
                [rng.choice(np.flatnonzero(groups == g), size=size, replace=False) for g in eligible]
            )
        )
        sub = m.subset(rows)
        themes = theme_structure(sub, cfg, w_dec)
        draws = []
        for r in range(repeats):
            chosen = np.zeros(len(eligible), dtype=bool)
            chosen[rng.choice(len(eligible), size=planted, replace=False)] = True
            draw_cfg = cfg.replace(seed=cfg.seed + 20_000 + 100 * size + r)
            draws.append(planted_draw(sub, groups[rows], eligible, chosen, draw_cfg, themes, rng, low, high))

        def mean(key: str, draws: list[dict[str, Any]] = draws) -> float | None:
            vals = [d[key] for d in draws if d[key] is not None]
            return float(np.mean(vals)) if vals else None

        calls = np.array([d["weak_concepts"] + d["weak_themes"] for d in draws])
        out.append(
            {
                "per_group": size,
                "groups": len(eligible),
                "n_draws": len(draws),
                # the mean hides a cliff: a draw calls many or none, by which groups fail
                "calls_median": float(np.median(calls)),
                "draws_with_calls": int((calls > 0).sum()),
                "draws_with_5_calls": int((calls >= 5).sum()),
                "planted_groups": planted,
                "accuracy_planted": low,
                "accuracy_other": high,
                "themes": len(themes),
                "weak_concepts": mean("weak_concepts"),
                "weak_themes": mean("weak_themes"),
                "strong_concepts": mean("strong_concepts"),
                "top_pointing": mean("top_pointing"),
                "top_concepts_pointing": mean("top_concepts_pointing"),
                "top_themes_pointing": mean("top_themes_pointing"),
                "draws": draws,
            }
        )
    return out
