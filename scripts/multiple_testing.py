"""Which multiple-testing procedure finds a planted topic (docs/results.md, "Power at the sizes
users have"): the procedures docs/method.md §3 weighed, on the same planted draws.

The run is one prepared by ``scripts/planted_power.py prepare`` (real prompts, a metadata facet
withheld from scoring). Each draw keeps ``--size`` items of every group, plants accuracy 0.1 on
two random groups and 0.7 elsewhere, and scores the ALL scope with every procedure:

- ``flat``: one Benjamini-Hochberg over every tested concept (the procedure before issue 19);
- ``filter10`` / ``filter20``: the same over the concepts with support >= 10 / 20 (independent
  filtering, Bourgon, Gentleman & Huber 2010);
- ``tarone``: the same over the concepts Tarone's rule keeps (Gilbert 2005);
- ``hierarchical``: the themes by BH, then the members of the R selected themes among M at
  fdr * R / M (Benjamini & Bogomolov 2014);
- ``concepts+themes``: one BH over the concepts and the themes;
- ``tarone, concepts+themes``: the same after Tarone's rule (what ``cgaps score`` does);
- ``tarone, weighted``: the same with p-value weights (weighted BH: BH on p / w, the weights
  averaging 1 over the kept hypotheses; Genovese, Roeder & Wasserman 2006) that spend the budget
  by each hypothesis's power against a drop of ``--delta`` (Roeder & Wasserman 2009: w =
  (M / fdr) * Phi-bar(theta / 2 + c / theta), theta = delta * sum s / sqrt(sum s^2 v), c such
  that the mean is 1). Like Tarone's bound, theta reads the groups' score variances only, which
  permutations within groups keep;
- ``tarone, with item topics``: ``tarone, concepts+themes`` with a third kind of hypothesis,
  sets of *items*: every node of an average-linkage tree of the items (cosine of their
  IDF-weighted ŝ' rows) with at least ``min_support`` items, the whole set excepted, each tested
  with unit saliency on its items (the tree of EvalTree, tested like a concept). Built from the
  saliency alone. A node points to a planted group when the group with most of its items per
  item of the group is planted;
- ``item topics apart``: the same hypotheses as two families, concepts and themes, and item
  topics, each with its own Tarone's rule and BH at fdr / 2 (the union's rate stays <= fdr).

``--presence T`` rescores the same draws at another presence threshold τ; ``--null`` shuffles
each draw's scores over the items (the same accuracy, no link to any group or concept), so every
call is a false one; the counts are then of gaps and strengths together.

Printed: a markdown table of the mean gap concepts and gap themes called per draw, the median
calls (concepts and themes) and the draws with at least 5, and the share of the 20 strongest
(by q) that point to a planted group (:mod:`cgaps.validate.topics`)::

    python scripts/multiple_testing.py RUNS/math_type --size 30 --repeats 8
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy import optimize, stats
from scipy.cluster import hierarchy

from cgaps.runtables import load_run
from cgaps.scoring.core import (
    SuiteMatrix,
    bh_scopes,
    build_matrix,
    chi_tables,
    concept_max,
    kept_hypotheses,
    p_values,
    smallest_p,
    tarone_keep,
)
from cgaps.scoring.stage import concept_scale
from cgaps.scoring.themes import ThemeSet, theme_structure
from cgaps.stats import bh_adjust
from cgaps.validate.topics import item_facet

PROCEDURES = (
    "flat",
    "filter10",
    "filter20",
    "tarone",
    "hierarchical",
    "concepts+themes",
    "tarone, concepts+themes",
    "tarone, weighted",
    "tarone, with item topics",
    "item topics apart",
)


def item_topics(shat: sp.csr_matrix, min_support: int) -> list[np.ndarray]:
    """The item sets of the procedure ``tarone, with item topics``: the nodes of an average-linkage
    tree of the items (cosine of their IDF-weighted rows of ŝ') with min_support to n - 1 items."""
    n = shat.shape[0]
    df = np.asarray((shat > 0).sum(axis=0)).ravel()
    x = (shat @ sp.diags(np.log((1 + n) / (1 + df)))).toarray()
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    members: list[list[int]] = [[i] for i in range(n)]
    nodes = []
    for a, b, _, _ in hierarchy.linkage(x, method="average", metric="cosine"):
        members.append(members[int(a)] + members[int(b)])
        if min_support <= len(members[-1]) < n:
            nodes.append(np.array(sorted(members[-1])))
    return nodes


def bh(p: np.ndarray, keep: np.ndarray) -> np.ndarray:
    q = np.full(len(p), np.nan)
    q[keep] = bh_adjust(p[keep])
    return q


def power_weights(theta: np.ndarray, fdr: float) -> np.ndarray:
    """Roeder & Wasserman's (2009) weights for hypotheses whose z has mean ``theta`` under the
    alternative: (M / fdr) * Phi-bar(theta / 2 + c / theta), with c such that they average 1."""
    m = len(theta)
    th = np.maximum(theta, 1e-9)

    def excess(log_c: float) -> float:  # falls as c grows
        return float((m / fdr) * stats.norm.sf(th / 2 + np.exp(log_c) / th).sum() - m)

    if m == 0 or excess(-30.0) < 0:
        return np.ones(m)
    c = np.exp(optimize.brentq(excess, -30.0, 30.0))
    return (m / fdr) * stats.norm.sf(th / 2 + c / th)


def hierarchical(
    p_theme: np.ndarray, p_concept: np.ndarray, theme_of: np.ndarray, fdr: float
) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini-Bogomolov: BH over the themes (each concept outside a theme is its own family),
    then BH within each selected family at fdr * R / M. Returns the called themes and concepts."""
    # families: every theme, and every tested concept in none
    alone = np.flatnonzero(theme_of < 0)
    fam_p = np.r_[p_theme, p_concept[alone]]
    q_fam = bh_adjust(fam_p)
    selected = q_fam <= fdr
    r, m = int(selected.sum()), len(fam_p)
    level = fdr * r / max(m, 1)
    called = np.zeros(len(p_concept), dtype=bool)
    for t in np.flatnonzero(selected[: len(p_theme)]):
        members = np.flatnonzero(theme_of == t)
        called[members] = bh_adjust(p_concept[members]) <= level
    called[alone[selected[len(p_theme) :]]] = True
    return selected[: len(p_theme)], called


def tarone_bh(
    p_mins: list[np.ndarray], ps: list[np.ndarray], fdr: float
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``cgaps score``'s calls over several tables of the ALL scope (NaN p_min: not tested):
    Tarone's rule and one Benjamini-Hochberg over them together; per table q and the kept mask."""
    keeps = [kp[0] for kp in kept_hypotheses([p[None] for p in p_mins], fdr)]
    qs = bh_scopes([np.where(kp, p, np.nan)[None] for kp, p in zip(keeps, ps, strict=True)])
    return [q[0] for q in qs], keeps


def one_draw(
    m: Any,
    themes: Any,
    groups: np.ndarray,
    names: np.ndarray,
    planted: np.ndarray,
    y: np.ndarray,
    cfg: Any,
    delta: float,
    topic_sal: sp.csr_matrix,
    both_sides: bool = False,
) -> dict[str, tuple[int, int, float | None]]:
    m = m.with_scores(y)
    shat = m.shat_matrix()
    t = chi_tables(m)
    ts = themes.saliency(shat)
    coo = ts.tocoo()
    tm = SuiteMatrix(
        ts, y, m.bench, m.benchmarks, m.item_ids, concept_max(coo.col, coo.data, ts.shape[1]), m.group
    )
    tt = chi_tables(tm)
    # item topics: unit saliency on each node's items
    im = SuiteMatrix(topic_sal, y, m.bench, m.benchmarks, m.item_ids, np.ones(topic_sal.shape[1]), m.group)
    it = chi_tables(im)
    k = -1  # the ALL scope
    n_tests = (t.support >= cfg.min_support).sum(axis=1) + (tt.support >= cfg.min_support).sum(axis=1)
    n_all = n_tests + (it.support >= cfg.min_support).sum(axis=1)
    zc, pwc, psc = p_values(m, t, cfg, n_tests)
    zt, pwt, pst = p_values(tm, tt, cfg, n_tests, stream=len(n_tests))
    zi, pwi, psi = p_values(im, it, cfg, n_all, stream=2 * len(n_tests))
    pc = np.minimum(1, 2 * np.minimum(pwc[k], psc[k]))
    pt = np.minimum(1, 2 * np.minimum(pwt[k], pst[k]))
    pi = np.minimum(1, 2 * np.minimum(pwi[k], psi[k]))
    tested_c, tested_t = t.support[k] >= cfg.min_support, tt.support[k] >= cfg.min_support
    pmin_c, pmin_t = smallest_p(m, t, cfg, n_tests)[k], smallest_p(tm, tt, cfg, n_tests)[k]
    pmin_i = smallest_p(im, it, cfg, n_all)[k]
    code = np.searchsorted(names, groups)
    onehot = np.zeros((len(code), len(names)))
    onehot[np.arange(len(code)), code] = 1.0
    mass = np.asarray(shat.T @ onehot)  # concepts x groups
    mass_t = np.asarray(themes.membership().T @ mass)  # themes x groups: the members' mass summed
    mass_i = np.asarray(topic_sal.T @ onehot)  # item topics x groups: their items
    sizes = np.maximum(onehot.sum(axis=0), 1)

    def summary(
        qc: np.ndarray, qt: np.ndarray, qi: np.ndarray | None = None
    ) -> tuple[int, int, float | None]:
        """Gap concepts, gap themes (and item topics: findings beyond one concept), the top 20's
        share on a planted group. With ``both_sides`` (null draws) strengths count too."""
        found: list[tuple[float, bool]] = []
        counts = []
        for q, z, ms in ((qc, zc, mass), (qt, zt, mass_t), (qi, zi, mass_i)):
            if q is None:
                continue
            with np.errstate(invalid="ignore"):
                called = np.flatnonzero((q <= cfg.fdr) & ((z[k] < 0) | both_sides))
            found += [(q[j], bool(planted[int(np.argmax(ms[j] / sizes))])) for j in called]
            counts.append(len(called))
        top = [pt_ for _, pt_ in sorted(found, key=lambda r: r[0])[:20]]
        return counts[0], sum(counts[1:]), (float(np.mean(top)) if top else None)

    none_t = np.full(len(pt), np.nan)
    out = {
        "flat": summary(bh(pc, tested_c), none_t),
        "filter10": summary(bh(pc, t.support[k] >= max(10, cfg.min_support)), none_t),
        "filter20": summary(bh(pc, t.support[k] >= 20), none_t),
    }
    keep_c = np.zeros(len(pc), dtype=bool)
    keep_c[tested_c] = tarone_keep(pmin_c[tested_c], cfg.fdr)
    out["tarone"] = summary(bh(pc, keep_c), none_t)
    sel, called = hierarchical(pt[tested_t], pc[tested_c], themes.theme_of()[tested_c], cfg.fdr)
    qc = np.full(len(pc), np.nan)
    qc[np.flatnonzero(tested_c)[called]] = 0.0
    qt = np.full(len(pt), np.nan)
    qt[np.flatnonzero(tested_t)[sel]] = 0.0
    out["hierarchical"] = summary(qc, qt)
    # no Tarone: every tested hypothesis is kept (p_min 0 where tested)
    (qc, qt), _ = tarone_bh(
        [np.where(tested_c, 0.0, np.nan), np.where(tested_t, 0.0, np.nan)], [pc, pt], cfg.fdr
    )
    out["concepts+themes"] = summary(qc, qt)
    (qc, qt), (keep_c, keep_t) = tarone_bh([pmin_c, pmin_t], [pc, pt], cfg.fdr)
    out["tarone, concepts+themes"] = summary(qc, qt)
    # the same kept hypotheses, their p-values weighted by power (weights averaging 1 over them all)
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = [delta * np.nan_to_num(x.sum_s[k] / np.sqrt(x.null_var[k])) for x in (t, tt)]
    w = power_weights(np.r_[theta[0][keep_c], theta[1][keep_t]], cfg.fdr)
    wc, wt = np.ones(len(pc)), np.ones(len(pt))
    wc[keep_c], wt[keep_t] = w[: int(keep_c.sum())], w[int(keep_c.sum()) :]
    (qc, qt), _ = tarone_bh(
        [pmin_c, pmin_t],
        [np.minimum(1.0, pc / np.maximum(wc, 1e-300)), np.minimum(1.0, pt / np.maximum(wt, 1e-300))],
        cfg.fdr,
    )
    out["tarone, weighted"] = summary(qc, qt)
    (qc, qt, qi), _ = tarone_bh([pmin_c, pmin_t, pmin_i], [pc, pt, pi], cfg.fdr)
    out["tarone, with item topics"] = summary(qc, qt, qi)
    # two families at fdr / 2 each: their q-values doubled, so that q <= fdr still calls
    (qc, qt), _ = tarone_bh([pmin_c, pmin_t], [pc, pt], cfg.fdr / 2)
    (qi,), _ = tarone_bh([pmin_i], [pi], cfg.fdr / 2)
    out["item topics apart"] = summary(*(np.minimum(1.0, 2 * q) for q in (qc, qt, qi)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--facet", default="category")
    ap.add_argument("--size", type=int, default=30, help="items per group")
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--delta", type=float, default=0.4, help="the drop the weighted procedure's weights aim at"
    )
    ap.add_argument("--presence", type=float, help="score at this presence threshold instead of the run's")
    ap.add_argument("--null", action="store_true", help="shuffle each draw's scores: every call is false")
    args = ap.parse_args()
    run = load_run(args.run)
    cfg = run.config()
    if args.presence is not None:
        cfg = cfg.replace(presence=args.presence)
    scale, _ = concept_scale(run, cfg)
    groups_all = item_facet(run.items, args.facet)
    assert groups_all is not None, f"no facet {args.facet}"
    names = np.unique(groups_all[groups_all != ""])
    rng = np.random.default_rng([args.seed, args.size])
    rows = np.sort(
        np.concatenate([rng.choice(np.flatnonzero(groups_all == g), args.size, replace=False) for g in names])
    )
    items = run.items.iloc[rows].reset_index(drop=True)
    sal = run.saliency[run.saliency["item_id"].isin(set(items["item_id"]))]
    m = build_matrix(items, sal, run.n_concepts, presence=cfg.presence, scale=scale)
    groups = groups_all[rows]
    themes = theme_structure(m, cfg)
    topics = item_topics(m.shat_matrix(), cfg.min_support)
    topic_sal = ThemeSet(tuple(topics), len(rows)).membership()  # items x topics, 1 on a topic's items
    results: dict[str, list[tuple[int, int, float | None]]] = {p: [] for p in PROCEDURES}
    for r in range(args.repeats):
        draw = np.random.default_rng([args.seed, args.size, r])
        planted = np.zeros(len(names), dtype=bool)
        planted[draw.choice(len(names), 2, replace=False)] = True
        p = np.where(planted[np.searchsorted(names, groups)], 0.1, 0.7)
        y = (draw.random(len(p)) < p).astype(float)
        if args.null:
            y = draw.permutation(y)
        for name, res in one_draw(
            m,
            themes,
            groups,
            names,
            planted,
            y,
            cfg.replace(seed=cfg.seed + r),
            args.delta,
            topic_sal,
            args.null,
        ).items():
            results[name].append(res)
    print(
        f"{args.run}: {len(names)} groups x {args.size} items, presence {cfg.presence}, {len(themes)} themes, "
        f"{len(topics)} item topics, {args.repeats} draws"
    )
    print(
        "| procedure | gap concepts | gap themes | median calls | draws with >= 5 | draws with any | top 20 on a planted group |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, rows_ in results.items():
        shares = [s for *_, s in rows_ if s is not None]
        calls = np.array([a + b for a, b, _ in rows_])
        print(
            f"| {name} | {np.mean([a for a, _, _ in rows_]):.1f} | {np.mean([b for _, b, _ in rows_]):.1f} | "
            f"{np.median(calls):g} | {int((calls >= 5).sum())} of {len(calls)} | {int((calls > 0).sum())} | "
            + (f"{np.mean(shares):.2f}" if shares else "—")
            + " |"
        )


if __name__ == "__main__":
    main()
