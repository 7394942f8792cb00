"""The plain reference implementation of the scoring stage, kept deliberately slow and simple.

:func:`reference_scores` recomputes ``concepts.parquet`` and ``overlap.parquet`` with Python
loops over items and concepts and Python floats. It shares no code with
:mod:`cgaps.scoring.core` (it uses ``math`` and the normal cdf/quantile of scipy only), so
that the vectorised path can be checked against it: ``tests/test_scoring.py`` compares the two
on synthetic suites, and ``bench/scoring_vs_reference.py`` times them. It lives in the package, not
in the tests, so that both can import it; nothing in the pipeline calls it.

It applies the rules that :mod:`cgaps.scoring.core`'s docstring fixes where the method
(docs/method.md §3) leaves a choice open: presence drops s < tau * (the concept's suite max);
percentile = 100 * (#less + 0.5 * #equal) / m on chi_bench rounded to 12 decimals; the score
test z = sum s (y - mu) / sqrt(sum s^2 v), 0 when the null variance is 0; Monte Carlo p-values
for tested concepts with n_eff * min(e, 1 - e) < mc_below, from the same seeded draw protocol
(:func:`reference_draws` re-implements it: chunk j of scope k's pass p comes from
``default_rng([seed, k, p, j])``, only the items where the pass's concepts fire, benchmarks in
sorted order, items in table order), 1,000 draws and
then fresh passes 20x larger (up to ``mc_resamples``) for concepts with at most 9 draws as
extreme; one BH over two-sided p-values; the side of z.
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


def reference_draws(
    rows: list[int],
    ids: list[str],
    y: dict[str, float],
    bench: dict[str, str],
    seed: int,
    scope: int,
    stage: int,
    total: int,
) -> np.ndarray:
    """Centred null draws y* - ybar(B) for the items ``rows`` (len(rows) x total), by the chunked
    protocol of the module docstring."""
    size = max(1, min(MC_FIRST_PASS, 20_000_000 // max(len(rows), 1)))
    benches = sorted(set(bench.values()))
    chunks = []
    for chunk in range(-(-total // size)):
        rng = np.random.default_rng([seed, scope, stage, chunk])
        out = np.zeros((len(rows), size))
        for b in benches:
            mine = [j for j, r in enumerate(rows) if bench[ids[r]] == b]
            if not mine:
                continue
            pool = np.array([y[i] for i in ids if bench[i] == b])
            mean = sum(pool.tolist()) / len(pool)
            picks = rng.integers(0, len(pool), size=(len(mine), size))
            for j, pos in enumerate(mine):
                out[pos] = pool[picks[j]] - mean
        chunks.append(out)
    return np.concatenate(chunks, axis=1)[:, :total]


def _mc_p(recs: list[dict[str, Any]], rows_of: dict[int, list[int]], draws_for: Any, total: int) -> None:
    """Monte Carlo p-values of the concepts ``recs`` (each with its items' rows ``rows_of``)."""
    union = sorted({r for rec in recs for r in rows_of[rec["concept"]]})
    pos = {r: j for j, r in enumerate(union)}
    draws = draws_for(union, total)
    for rec in recs:
        svec = np.array(rec["_s"])
        tstar = svec @ draws[[pos[r] for r in rows_of[rec["concept"]]]]
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


def reference_scores(
    items: pd.DataFrame, saliency: pd.DataFrame, n_concepts: int, cfg: RunConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The concepts and overlap tables of :func:`cgaps.scoring.compute_scores`, by plain loops."""
    ids = [str(i) for i in items["item_id"]]
    y = {i: float(s) for i, s in zip(ids, items["score"], strict=True)}
    bench = {i: str(b) for i, b in zip(ids, items["benchmark"], strict=True)}
    sal: dict[str, dict[int, float]] = {i: {} for i in ids}
    for i, c, v in zip(saliency["item_id"], saliency["concept"], saliency["value"], strict=True):
        sal[str(i)][int(c)] = float(v)
    colmax = [0.0] * n_concepts
    for i in ids:
        for c, v in sal[i].items():
            colmax[c] = max(colmax[c], v)
    for i in ids:  # presence: fainter activations count as 0
        sal[i] = {c: v for c, v in sal[i].items() if v >= cfg.presence * colmax[c]}
    benches = sorted(set(bench.values()))
    ybar = {
        b: sum(y[i] for i in ids if bench[i] == b) / sum(1 for i in ids if bench[i] == b) for b in benches
    }
    vb = {
        b: sum((y[i] - ybar[b]) ** 2 for i in ids if bench[i] == b) / sum(1 for i in ids if bench[i] == b)
        for b in benches
    }
    row = {i: r for r, i in enumerate(ids)}
    zq = norm.ppf(0.5 + cfg.ci_level / 2)

    rows: list[dict[str, Any]] = []
    per_scope: dict[str, list[dict[str, Any]]] = {}
    for scope in [*benches, "ALL"]:
        members = [i for i in ids if scope == "ALL" or bench[i] == scope]
        obs: list[list[tuple[float, float, float, float]]] = [[] for _ in range(n_concepts)]
        where: list[list[str]] = [[] for _ in range(n_concepts)]
        for i in members:
            for c, v in sal[i].items():
                obs[c].append((v, y[i], ybar[bench[i]], v / colmax[c]))
                where[c].append(i)
        recs: list[dict[str, Any]] = []
        for c in range(n_concepts):
            o = obs[c]
            r: dict[str, Any] = {"concept": c, "scope": scope, "support": len(o)}
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
                )
                recs.append(r)
                continue
            ss = sum(s for s, _, _, _ in o)
            chi = sum(s * yy for s, yy, _, _ in o) / ss
            e = sum(s * yb for s, _, yb, _ in o) / ss
            neff = ss**2 / sum(s * s for s, _, _, _ in o)
            stat = sum(s * (yy - yb) for s, yy, yb, _ in o)
            null_var = sum(s * s * vb[bench[i]] for (s, _, _, _), i in zip(o, where[c], strict=True))
            z = stat / math.sqrt(null_var) if null_var > 0 else 0.0
            pw, ps = float(norm.cdf(z)), float(norm.sf(z))
            r["_mc"] = len(o) >= cfg.min_support and null_var > 0 and neff * min(e, 1 - e) < cfg.mc_below
            r["_s"], r["_stat"] = [s for s, _, _, _ in o], stat
            denom = 1 + zq * zq / neff
            center = (chi + zq * zq / (2 * neff)) / denom
            half = zq / denom * math.sqrt(max(chi * (1 - chi), 0.0) / neff + zq * zq / (4 * neff * neff))
            r.update(
                chi_model=chi,
                expected=e,
                n_eff=neff,
                z=z,
                p_weak=pw,
                p_strong=ps,
                ci_low=min(max(center - half, 0.0), 1.0),
                ci_high=min(max(center + half, 0.0), 1.0),
            )
            recs.append(r)
        # Monte Carlo p-values: a first pass for every flagged concept, a fresh larger one for candidates
        scope_no = len(benches) if scope == "ALL" else benches.index(scope)
        rows_of = {c: [row[i] for i in where[c]] for c in range(n_concepts)}

        def draws_for(rows: list[int], total: int, stage: int, scope_no: int = scope_no) -> np.ndarray:
            return reference_draws(rows, ids, y, bench, cfg.seed, scope_no, stage, total)

        active = [r for r in recs if r.get("_mc")]
        n_tested = sum(1 for r in recs if r["support"] >= cfg.min_support)
        total = cfg.mc_resamples
        if total is None:
            total = max(20_000, math.ceil(2 * n_tested / cfg.fdr))
        size, stage = MC_FIRST_PASS, 0
        while active:  # passes of 1,000, 20,000, ... up to total draws, each a fresh sample
            _mc_p(active, rows_of, lambda rows, n, st=stage: draws_for(rows, n, st), size)
            active = [r for r in active if min(r["p_weak"], r["p_strong"]) * (1 + size) <= 10]
            if size >= total:
                break
            size, stage = min(total, size * 20), stage + 1
        present = [r for r in recs if r["support"] > 0]
        vals = [round(r["chi_bench"], 12) for r in present]
        for r in recs:
            r["status"], r["gap"], r["q_value"] = "missing", "", math.nan
        for r, (less, eq) in zip(present, _less_equal(vals), strict=True):
            pct = 100.0 * (less + 0.5 * eq) / len(vals)
            r["status"] = "under" if pct < cfg.under_pct else ("over" if pct > cfg.over_pct else "normal")
        tested = [r for r in recs if r["support"] >= cfg.min_support]
        qs = reference_bh([min(1.0, 2 * min(r["p_weak"], r["p_strong"])) for r in tested])
        for r, q in zip(tested, qs, strict=True):
            r["q_value"] = q
            if r["z"] != 0 and q <= cfg.fdr:
                r["gap"] = "weak" if r["z"] < 0 else "strong"
        per_scope[scope] = recs
        rows.extend(recs)
    concepts = pd.DataFrame(rows)[list(CONCEPT_COLUMNS)]

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
    return concepts, pd.DataFrame(pairs, columns=list(OVERLAP_COLUMNS))


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
