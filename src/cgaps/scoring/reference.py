"""The plain reference implementation of the scoring stage, kept deliberately slow and simple.

:func:`reference_scores` recomputes ``concepts.parquet`` and ``overlap.parquet`` with Python
loops over items and concepts and Python floats. It shares no code with
:mod:`cgaps.scoring.core` (it uses ``math`` and the normal cdf/quantile of scipy only), so
that the vectorised path can be checked against it: ``tests/scoring/test_scoring.py`` compares the two
on synthetic suites, and ``bench/scoring_vs_reference.py`` times them. It lives in the package, not
in the tests, so that both can import it; nothing in the pipeline calls it.

It applies the rules that :mod:`cgaps.scoring.core`'s docstring fixes where the method
(docs/method.md §3) leaves a choice open: presence drops s < tau * (the concept's suite max);
the adjustment group of each item (``adjust_by``); percentile = 100 * (#less + 0.5 * #equal) / m
on chi_bench rounded to 12 decimals; the score test z = sum s (y - mu) / sqrt(sum s^2 v), 0
when the null variance is 0; themes given by their members, a theme's saliency the sum of its
members' s_hat and its scale the largest of those; p_min of every tested hypothesis by its
extreme outcome (:func:`_p_min`) and Tarone's rule by its definition (:func:`reference_tarone`);
Monte Carlo p-values for the kept hypotheses with n_eff * min(e, 1 - e) < mc_below, from the
same seeded draw protocol (:func:`reference_draws` re-implements it: chunk j of stream s's pass
p comes from ``default_rng([seed, s, p, j])``, s the scope's number for concepts and K + 1 plus
it for themes, only the items where the pass's hypotheses fire, groups in sorted order, items
in table order), 1,000 draws and then fresh passes 20x larger (up to ``mc_resamples``) for
those with at most 9 draws as extreme; one BH over the kept concepts' and themes' two-sided
p-values; the side of z. :func:`reference_themes` clusters by merging the closest pair of
clusters (average member distance) while it is within ``theme_cut``. Only column names come
from :mod:`cgaps.scoring.core`.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from cgaps.config import MC_FIRST_PASS, RunConfig
from cgaps.rundir import CONCEPT_COLUMNS, OVERLAP_COLUMNS
from cgaps.scoring.core import CONCEPT_EXTRA_COLUMNS, TEST_COLUMNS


def reference_draws(
    rows: list[int],
    ids: list[str],
    y: dict[str, float],
    group: dict[str, Any],
    seed: int,
    scope: int,
    stage: int,
    total: int,
) -> np.ndarray:
    """Centred null draws y* - ybar(g) for the items ``rows`` (len(rows) x total), by the chunked
    protocol of the module docstring; ``group`` maps each item to the group its score is redrawn
    from (its benchmark, its (benchmark, category) pair, or one group: ``adjust_by``)."""
    size = max(1, min(MC_FIRST_PASS, 20_000_000 // max(len(rows), 1)))
    keys = sorted(set(group.values()))
    chunks = []
    for chunk in range(-(-total // size)):
        rng = np.random.default_rng([seed, scope, stage, chunk])
        out = np.zeros((len(rows), size))
        for b in keys:
            mine = [j for j, r in enumerate(rows) if group[ids[r]] == b]
            if not mine:
                continue
            pool = np.array([y[i] for i in ids if group[i] == b])
            mean = sum(pool.tolist()) / len(pool)
            picks = rng.integers(0, len(pool), size=(len(mine), size))
            for j, pos in enumerate(mine):
                out[pos] = pool[picks[j]] - mean
        chunks.append(out)
    return np.concatenate(chunks, axis=1)[:, :total]


def _mc_p(recs: list[dict[str, Any]], draws_for: Any, total: int) -> None:
    """Monte Carlo p-values of the records ``recs`` (each with its items' rows ``_rows``)."""
    union = sorted({r for rec in recs for r in rec["_rows"]})
    pos = {r: j for j, r in enumerate(union)}
    draws = draws_for(union, total)
    for rec in recs:
        svec = np.array(rec["_s"])
        tstar = svec @ draws[[pos[r] for r in rec["_rows"]]]
        tol = 1e-9 * max(sum(rec["_s"]), 1.0)
        le = int((tstar <= rec["_stat"] + tol).sum())
        ge = int((tstar >= rec["_stat"] - tol).sum())
        rec["p_weak"], rec["p_strong"] = (1 + le) / (1 + total), (1 + ge) / (1 + total)


def reference_bh(pvals: list[float]) -> list[float]:
    """Benjamini-Hochberg q-values by the textbook step-up loop."""
    m = len(pvals)
    order = sorted(range(m), key=lambda i: pvals[i])
    q = [0.0] * m
    running = 1.0
    for rank in range(m, 0, -1):  # step-up: min over larger ranks
        i = order[rank - 1]
        running = min(running, pvals[i] * m / rank)
        q[i] = running
    return q


def _less_equal(vals: list[float]) -> list[tuple[int, int]]:
    """(#values < v, #values == v) for each v (bisect on a sorted copy, so the benchmark stays feasible)."""
    ordered = sorted(vals)
    return [
        (bisect.bisect_left(ordered, v), bisect.bisect_right(ordered, v) - bisect.bisect_left(ordered, v))
        for v in vals
    ]


def _avg_ranks(vals: list[float]) -> list[float]:
    return [less + (eq + 1) / 2 for less, eq in _less_equal(vals)]


def _spearman(a: list[float], b: list[float]) -> float:
    a = [round(v, 12) for v in a]
    b = [round(v, 12) for v in b]
    if len(a) < 3 or len(set(a)) == 1 or len(set(b)) == 1:
        return math.nan
    ra, rb = _avg_ranks(a), _avg_ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    return cov / math.sqrt(va * vb)


def _records(
    scope: str,
    key: str,
    n_cols: int,
    members: list[str],
    values: dict[str, dict[int, float]],
    scale: list[float],
    y: dict[str, float],
    ybar: dict[Any, float],
    vb: dict[Any, float],
    group: dict[str, Any],
    cfg: RunConfig,
) -> list[dict[str, Any]]:
    """The per-column figures of one scope (everything but the calls); ``values``: each item's
    {column: raw saliency}, ``scale``: each column's m_c."""
    zq = norm.ppf(0.5 + cfg.ci_level / 2)
    obs: list[list[tuple[float, float, float, float]]] = [[] for _ in range(n_cols)]
    where: list[list[str]] = [[] for _ in range(n_cols)]
    for i in members:
        for c, v in values[i].items():
            obs[c].append((v, y[i], ybar[group[i]], v / scale[c]))
            where[c].append(i)
    recs: list[dict[str, Any]] = []
    for c in range(n_cols):
        o = obs[c]
        r: dict[str, Any] = {key: c, "scope": scope, "support": len(o), "_where": where[c]}
        r["chi_bench"] = sum(min(h, 1.0) for _, _, _, h in o) / len(members)
        r["chi_bench_raw"] = sum(s for s, _, _, _ in o) / len(members)
        if not o:
            r.update(
                chi_model=math.nan,
                expected=math.nan,
                n_eff=0.0,
                ci_low=math.nan,
                ci_high=math.nan,
                z=math.nan,
                _null_var=0.0,
            )
            recs.append(r)
            continue
        ss = sum(s for s, _, _, _ in o)
        chi = sum(s * yy for s, yy, _, _ in o) / ss
        e = sum(s * yb for s, _, yb, _ in o) / ss
        neff = ss**2 / sum(s * s for s, _, _, _ in o)
        stat = sum(s * (yy - yb) for s, yy, yb, _ in o)
        null_var = sum(s * s * vb[group[i]] for (s, _, _, _), i in zip(o, where[c], strict=True))
        z = stat / math.sqrt(null_var) if null_var > 0 else 0.0
        r["_mc"] = len(o) >= cfg.min_support and null_var > 0 and neff * min(e, 1 - e) < cfg.mc_below
        r["_s"], r["_stat"], r["_null_var"] = [s for s, _, _, _ in o], stat, null_var
        denom = 1 + zq * zq / neff
        center = (chi + zq * zq / (2 * neff)) / denom
        half = zq / denom * math.sqrt(max(chi * (1 - chi), 0.0) / neff + zq * zq / (4 * neff * neff))
        r.update(
            chi_model=chi,
            expected=e,
            n_eff=neff,
            z=z,
            p_weak=float(norm.cdf(z)),
            p_strong=float(norm.sf(z)),
            ci_low=min(max(center - half, 0.0), 1.0),
            ci_high=min(max(center + half, 0.0), 1.0),
        )
        recs.append(r)
    return recs


def _p_min(
    r: dict[str, Any],
    y: dict[str, float],
    ybar: dict[Any, float],
    group: dict[str, Any],
    ids: list[str],
    resamples: int,
) -> float:
    """The smallest two-sided p-value the record's items allow (Tarone): every item at its group's
    lowest (highest) score, under the normal approximation, or for a Monte Carlo record the
    probability of drawing exactly that, at least 1 / (R + 1)."""
    pool: dict[Any, list[float]] = {}
    for i in ids:
        pool.setdefault(group[i], []).append(y[i])
    t_lo = t_hi = 0.0
    pr_lo = pr_hi = 1.0
    for s, i in zip(r["_s"], r["_where"], strict=True):
        vals = pool[group[i]]
        lo, hi = min(vals), max(vals)
        t_lo += s * (lo - ybar[group[i]])
        t_hi += s * (hi - ybar[group[i]])
        pr_lo *= sum(1 for v in vals if v == lo) / len(vals)
        pr_hi *= sum(1 for v in vals if v == hi) / len(vals)
    if r["_mc"]:
        return min(1.0, 2 * max(min(pr_lo, pr_hi), 1 / (resamples + 1)))
    if r["_null_var"] <= 0:
        return 1.0
    sd = math.sqrt(r["_null_var"])
    return min(1.0, 2 * min(float(norm.cdf(t_lo / sd)), float(norm.sf(t_hi / sd))))


def reference_tarone(p_min: list[float], alpha: float) -> list[bool]:
    """Tarone's rule (Gilbert 2005) by its definition: the first K = 1, 2, ... with at most K
    hypotheses whose p_min <= alpha / K; those are kept."""
    k = 1
    while sum(1 for p in p_min if p <= alpha / k) > k:
        k += 1
    return [p <= alpha / k for p in p_min]


def reference_scores(
    items: pd.DataFrame, saliency: pd.DataFrame, n_concepts: int, cfg: RunConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The concepts and overlap tables of :func:`cgaps.scoring.stage.compute_scores`, by plain loops: the
    themes of :func:`reference_themes`, tested with the concepts, numbered as shown."""
    themes = reference_themes(items, saliency, n_concepts, cfg)
    concepts, _, overlap = reference_tables(items, saliency, n_concepts, cfg, themes=themes, number=True)
    return concepts, overlap


def reference_tables(
    items: pd.DataFrame,
    saliency: pd.DataFrame,
    n_concepts: int,
    cfg: RunConfig,
    themes: list[list[int]] | None = None,
    number: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame]:
    """The concepts table, the themes' test table (given the ``themes``' members) and the overlap
    table of :func:`cgaps.scoring.core.score_tables` and :func:`~cgaps.scoring.core.overlap_table`,
    by plain loops; ``number``: the themes renumbered as shown (gap themes by q in ALL, then
    strength themes, then the rest by support, ties in the given order)."""
    ids = [str(i) for i in items["item_id"]]
    y = {i: float(s) for i, s in zip(ids, items["score"], strict=True)}
    bench = {i: str(b) for i, b in zip(ids, items["benchmark"], strict=True)}
    # the group an item's expected score comes from (adjust_by)
    group: dict[str, Any]
    if cfg.adjust_by == "benchmark":
        group = dict(bench)
    elif cfg.adjust_by == "none":
        group = {i: "" for i in ids}
    else:
        cats = ["" if not isinstance(c, str) else c for c in items["category"]]
        group = {i: (bench[i], c) for i, c in zip(ids, cats, strict=True)}
    sal: dict[str, dict[int, float]] = {i: {} for i in ids}
    for i, c, v in zip(saliency["item_id"], saliency["concept"], saliency["value"], strict=True):
        sal[str(i)][int(c)] = float(v)
    colmax = [0.0] * n_concepts
    for i in ids:
        for c, v in sal[i].items():
            colmax[c] = max(colmax[c], v)
    for i in ids:  # presence: fainter activations count as 0
        sal[i] = {c: v for c, v in sal[i].items() if v >= cfg.presence * colmax[c]}
    theme_list = themes or []
    # a theme's saliency: the sum of its members' s_hat; its scale: the largest over the items
    tsal: dict[str, dict[int, float]] = {i: {} for i in ids}
    for i in ids:
        for t, cs in enumerate(theme_list):
            v = sum(min(sal[i][c] / colmax[c], 1.0) for c in cs if c in sal[i])
            if v > 0:
                tsal[i][t] = v
    tmax = [max([tsal[i].get(t, 0.0) for i in ids]) for t in range(len(theme_list))]
    theme_of = [-1] * n_concepts
    for t, cs in enumerate(theme_list):
        for c in cs:
            theme_of[c] = t
    benches = sorted(set(bench.values()))
    keys = sorted(set(group.values()))
    ybar = {g: sum(y[i] for i in ids if group[i] == g) / sum(1 for i in ids if group[i] == g) for g in keys}
    vb = {
        g: sum((y[i] - ybar[g]) ** 2 for i in ids if group[i] == g) / sum(1 for i in ids if group[i] == g)
        for g in keys
    }
    row = {i: r for r, i in enumerate(ids)}
    scopes = [*benches, "ALL"]

    rows: list[dict[str, Any]] = []
    theme_rows: list[dict[str, Any]] = []
    per_scope: dict[str, list[dict[str, Any]]] = {}
    for scope in scopes:
        members = [i for i in ids if scope == "ALL" or bench[i] == scope]
        recs = _records(scope, "concept", n_concepts, members, sal, colmax, y, ybar, vb, group, cfg)
        trecs = _records(scope, "theme", len(theme_list), members, tsal, tmax, y, ybar, vb, group, cfg)
        scope_no = scopes.index(scope)
        tested = [r for r in recs + trecs if r["support"] >= cfg.min_support]
        total = cfg.mc_resamples
        if total is None:
            total = max(20_000, math.ceil(2 * len(tested) / cfg.fdr))
        for r in tested:
            r["p_min"] = _p_min(r, y, ybar, group, ids, total)
        for r, keep in zip(tested, reference_tarone([r["p_min"] for r in tested], cfg.fdr), strict=True):
            r["_kept"] = keep
        # Monte Carlo p-values for the kept records: concepts on streams 0..K, themes K+1..2K+1
        for part, stream in ((recs, scope_no), (trecs, scope_no + len(scopes))):
            for r in part:
                r["_rows"] = [row[i] for i in r["_where"]]

            def draws_for(rws: list[int], total_: int, stage: int, stream: int = stream) -> np.ndarray:
                return reference_draws(rws, ids, y, group, cfg.seed, stream, stage, total_)

            active = [r for r in part if r.get("_mc") and r.get("_kept")]
            size, stage = MC_FIRST_PASS, 0
            while active:  # passes of 1,000, 20,000, ... up to total draws, each a fresh sample
                _mc_p(active, lambda rws, n, st=stage: draws_for(rws, n, st), size)
                active = [r for r in active if min(r["p_weak"], r["p_strong"]) * (1 + size) <= 10]
                if size >= total:
                    break
                size, stage = min(total, size * 20), stage + 1
        kept = [r for r in tested if r["_kept"]]
        qs = reference_bh([min(1.0, 2 * min(r["p_weak"], r["p_strong"])) for r in kept])
        for part in (recs, trecs):
            present = [r for r in part if r["support"] > 0]
            vals = [round(r["chi_bench"], 12) for r in present]
            for r in part:
                r["status"], r["gap"], r["q_value"], r["p_value"] = "missing", "", math.nan, math.nan
                r.setdefault("p_min", math.nan)
            for r, (less, eq) in zip(present, _less_equal(vals), strict=True):
                pct = 100.0 * (less + 0.5 * eq) / len(vals)
                r["status"] = "under" if pct < cfg.under_pct else ("over" if pct > cfg.over_pct else "normal")
        for r, q in zip(kept, qs, strict=True):
            r["q_value"] = q
            r["p_value"] = min(1.0, 2 * min(r["p_weak"], r["p_strong"]))
            if r["z"] != 0 and q <= cfg.fdr:
                r["gap"] = "weak" if r["z"] < 0 else "strong"
        for r in recs:
            r["theme"] = theme_of[r["concept"]]
        per_scope[scope] = recs
        rows.extend(recs)
        theme_rows.extend(trecs)
    if number:
        in_all = [r for r in theme_rows if r["scope"] == "ALL"]
        rank = {"weak": 0, "strong": 1}
        order = sorted(
            in_all,
            key=lambda r: (
                rank.get(r["gap"], 2),
                2.0 if math.isnan(r["q_value"]) else r["q_value"],
                -r["support"],
                r["theme"],
            ),
        )
        new_id = {r["theme"]: i for i, r in enumerate(order)}
        for r in theme_rows:
            r["theme"] = new_id[r["theme"]]
        for r in rows:
            r["theme"] = new_id.get(r["theme"], -1) if r["theme"] >= 0 else -1
        theme_rows.sort(key=lambda r: (scopes.index(r["scope"]), r["theme"]))
    concepts = pd.DataFrame(rows)[[*CONCEPT_COLUMNS, *CONCEPT_EXTRA_COLUMNS]]
    theme_table = None
    if themes is not None:
        theme_table = pd.DataFrame(theme_rows, columns=["theme", "scope", *TEST_COLUMNS])

    pairs = []
    for ai, a in enumerate(benches):
        for b in benches[ai + 1 :]:
            ra, rb = per_scope[a], per_scope[b]
            sa = {r["concept"] for r in ra if r["support"] > 0}
            sb = {r["concept"] for r in rb if r["support"] > 0}
            shared = sorted(sa & sb)
            pairs.append(
                {
                    "a": a,
                    "b": b,
                    "jaccard": len(sa & sb) / len(sa | sb) if sa | sb else math.nan,
                    "spearman_chi_model": _spearman(
                        [ra[c]["chi_model"] for c in shared], [rb[c]["chi_model"] for c in shared]
                    ),
                    "spearman_chi_bench": _spearman(
                        [ra[c]["chi_bench"] for c in shared], [rb[c]["chi_bench"] for c in shared]
                    ),
                }
            )
    return concepts, theme_table, pd.DataFrame(pairs, columns=list(OVERLAP_COLUMNS))


def assert_same_tables(fast: pd.DataFrame, ref: pd.DataFrame, key: list[str]) -> None:
    """Same columns and keys; text columns equal, numbers within 1e-6 (NaN where NaN)."""
    assert list(fast.columns) == list(ref.columns)
    assert fast[key].astype(str).values.tolist() == ref[key].astype(str).values.tolist()
    for col in fast.columns:
        if col in key:
            continue
        if fast[col].dtype == object or pd.api.types.is_string_dtype(fast[col]):
            assert fast[col].tolist() == ref[col].tolist(), col
        else:
            np.testing.assert_allclose(
                fast[col].to_numpy(float),
                ref[col].to_numpy(float),
                rtol=0,
                atol=1e-6,
                equal_nan=True,
                err_msg=col,
            )


def reference_themes(
    items: pd.DataFrame,
    saliency: pd.DataFrame,
    n_concepts: int,
    cfg: RunConfig,
    w_dec: np.ndarray | None = None,
    limit: int = 8192,
) -> list[list[int]]:
    """The themes of :func:`cgaps.scoring.themes.theme_structure` by their definition: the concepts
    with ALL support >= min_support (the ``limit`` rarest), the distance (1 - rho)(1 - kappa) of
    their s_hat columns (and decoder rows), clusters merged pair by pair at the smallest average
    member distance while it is <= theme_cut; clusters of two or more, by support (largest
    first, then smallest member)."""
    ids = [str(i) for i in items["item_id"]]
    sal: dict[str, dict[int, float]] = {i: {} for i in ids}
    for i, c, v in zip(saliency["item_id"], saliency["concept"], saliency["value"], strict=True):
        sal[str(i)][int(c)] = float(v)
    colmax = [0.0] * n_concepts
    for i in ids:
        for c, v in sal[i].items():
            colmax[c] = max(colmax[c], v)
    shat = {c: [0.0] * len(ids) for c in range(n_concepts)}
    for r, i in enumerate(ids):
        for c, v in sal[i].items():
            if v >= cfg.presence * colmax[c]:
                shat[c][r] = min(v / colmax[c], 1.0)
    support = {c: sum(1 for v in shat[c] if v > 0) for c in range(n_concepts)}
    eligible = [c for c in range(n_concepts) if support[c] >= cfg.min_support]
    chosen = sorted(sorted(eligible, key=lambda c: (support[c], c))[:limit])

    def cosine(a: list[float], b: list[float]) -> float:
        na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
        return sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb)

    dist: dict[tuple[int, int], float] = {}
    for ai, a in enumerate(chosen):
        for b in chosen[ai + 1 :]:
            d = 1.0 - min(max(cosine(shat[a], shat[b]), 0.0), 1.0)
            if w_dec is not None:
                d *= 1.0 - min(max(cosine(list(map(float, w_dec[a])), list(map(float, w_dec[b]))), 0.0), 1.0)
            dist[(a, b)] = dist[(b, a)] = d
    clusters = [[c] for c in chosen]
    while len(clusters) > 1:
        best, pair = math.inf, (0, 0)
        for x in range(len(clusters)):
            for z in range(x + 1, len(clusters)):
                avg = sum(dist[(a, b)] for a in clusters[x] for b in clusters[z]) / (
                    len(clusters[x]) * len(clusters[z])
                )
                if avg < best:
                    best, pair = avg, (x, z)
        if best > cfg.theme_cut:
            break
        x, z = pair
        clusters[x] = sorted(clusters[x] + clusters[z])
        del clusters[z]
    themes = [c for c in clusters if len(c) > 1]

    def theme_support(cs: list[int]) -> int:
        return sum(1 for r in range(len(ids)) if any(shat[c][r] > 0 for c in cs))

    return sorted(themes, key=lambda cs: (-theme_support(cs), cs[0]))
