"""The SAE-swap check of docs/method.md §4: the same items and scores read through a second SAE.

The paper's third robustness check asks whether the findings belong to the model and the
benchmarks or to one particular dictionary of concepts. Two runs are compared: this run and
``--against OTHER_RUN``, whose items and scores must be the same (the check refuses anything
else, naming the first difference) but whose saliency came from another SAE (another width,
seed or layer, or another model's SAE). Each run is scored by its own ``cgaps score``; this
module reads their ``concepts.parquet`` tables and compares:

* **Distributions** (per scope: ``ALL`` and each benchmark): the two-sample Kolmogorov–Smirnov
  statistic (scipy's ``ks_2samp``) and the 5/25/50/75/95 % quantiles of χ_model over the
  concepts with support >= ``min_support`` and of χ_bench over all concepts, plus the missing
  share (status ``missing``). Widths differ, so shapes are compared, not concept by concept.
* **Missing-share order**: the Spearman correlation, across benchmarks, of the two runs'
  missing shares: the paper's claim that benchmark coverage findings survive a new SAE is
  about this order more than about the absolute shares, which depend on the SAE's width.
* **Matched latents** (only when both SAEs read the same residual width, i.e. SAEs of one
  model): every latent of this run's SAE is matched to the latent of the other SAE whose
  decoder direction is closest (cosine, :func:`cgaps.sae.decoder_directions`). Reported: the
  cosine quantiles, the share of latents with a close match (cosine >= ``CLOSE``), and the
  Spearman correlation of matched χ_model in ``ALL`` over pairs where both concepts have
  support >= ``min_support`` — for all pairs and for close pairs only. A random pairing of
  the same eligible concepts (seeded) gives the correlation expected by chance.
* **Matched by saliency** (any two SAEs, also of different models): every latent of this run
  is matched to the other run's latent whose per-item saliency correlates best with its own
  over the shared items (Pearson, on the sparse matrices: ``X_a^T X_b / n - mean_a mean_b^T``,
  in chunks of this run's concepts). Two SAEs rarely share a decoder direction exactly, but a
  concept that both capture fires on the same items in both runs. Reported like the decoder
  matching: correlation quantiles, the share with r >= ``CLOSE``, and the Spearman
  correlation of matched χ_model.
* **Top and bottom concepts** side by side: the ``TOP`` eligible concepts of each run with
  the highest and the lowest χ_model in ``ALL``, with their labels when ``labels.parquet``
  exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from cgaps import rundir
from cgaps.errors import CGapsError
from cgaps.runtables import RunTables
from cgaps.scoring.core import item_rows

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
CLOSE = 0.7  # cosine from which a matched pair counts as the same direction
TOP = 10
_CHUNK = 2048  # rows of the cosine matrix computed at once (2048 x F_b float32)


def check_same_items(a: RunTables, b: RunTables) -> None:
    """Refuse two runs whose items or scores differ, naming the first difference."""
    ia = a.items.set_index("item_id")
    ib = b.items.set_index("item_id")
    only_a = ia.index.difference(ib.index)
    only_b = ib.index.difference(ia.index)
    if len(only_a) or len(only_b):
        first = only_a[0] if len(only_a) else only_b[0]
        where = a.path if len(only_a) else b.path
        raise CGapsError(
            f"SAE swap: {len(only_a)} item(s) only in {a.path} and {len(only_b)} only in {b.path} "
            f"(first: {first!r} in {where}); the check needs one set of items read by two SAEs — "
            f"copy items.parquet from {a.path} into the other run and rerun `cgaps extract` and `cgaps score`"
        )
    ib = ib.loc[ia.index]
    for col in ("benchmark", "prompt", "response"):
        if col in ia.columns and col in ib.columns:
            differs = ia[col].fillna("").astype(str) != ib[col].fillna("").astype(str)
            if differs.any():
                raise CGapsError(
                    f"SAE swap: item {differs.idxmax()!r} has another {col} in {b.path} than in {a.path}; "
                    "the check compares two SAEs on the same items and responses"
                )
    sa, sb = ia["score"].to_numpy(float), ib["score"].to_numpy(float)
    differs = ~np.isclose(sa, sb, rtol=0, atol=1e-9)
    if differs.any():
        first = ia.index[int(np.argmax(differs))]
        raise CGapsError(
            f"SAE swap: item {first!r} has score {sa[differs][0]} in {a.path} but {sb[differs][0]} in "
            f"{b.path}; the check compares two SAEs on the same scores"
        )


def _quantiles(x: np.ndarray) -> dict[str, float] | None:
    x = x[np.isfinite(x)]
    if not len(x):
        return None
    return {
        f"q{round(100 * q):02d}": float(v) for q, v in zip(QUANTILES, np.quantile(x, QUANTILES), strict=True)
    }


def _compare(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    out: dict[str, Any] = {
        "n_a": len(x),
        "n_b": len(y),
        "quantiles_a": _quantiles(x),
        "quantiles_b": _quantiles(y),
    }
    if len(x) and len(y):
        ks = stats.ks_2samp(x, y)
        out.update(ks=float(ks.statistic), ks_p=float(ks.pvalue))
    else:
        out.update(ks=None, ks_p=None)
    return out


def _spearman(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return {"rho": None, "p": None, "pairs": int(len(x))}
    r = stats.spearmanr(x, y)
    return {"rho": float(r.statistic), "p": float(r.pvalue), "pairs": int(len(x))}


def distributions(ca: pd.DataFrame, cb: pd.DataFrame, min_support: int) -> dict[str, Any]:
    """Per scope: KS statistic and quantiles of chi_model (eligible concepts) and chi_bench, missing shares."""
    out: dict[str, Any] = {}
    for scope in dict.fromkeys(ca["scope"]):
        a, b = ca[ca["scope"] == scope], cb[cb["scope"] == scope]
        if b.empty:
            continue
        ea, eb = a[a["support"] >= min_support], b[b["support"] >= min_support]
        out[scope] = {
            "chi_model": _compare(ea["chi_model"].to_numpy(float), eb["chi_model"].to_numpy(float)),
            "chi_bench": _compare(a["chi_bench"].to_numpy(float), b["chi_bench"].to_numpy(float)),
            "missing_share_a": float((a["status"] == "missing").mean()),
            "missing_share_b": float((b["status"] == "missing").mean()),
        }
    return out


def best_matches(dec_a: np.ndarray, dec_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``dec_a`` (unit rows [F_a, d]), the index of the closest row of ``dec_b``
    and their cosine (chunked: the full F_a x F_b matrix is never held)."""
    idx = np.empty(len(dec_a), dtype=np.int64)
    cos = np.empty(len(dec_a), dtype=np.float32)
    for start in range(0, len(dec_a), _CHUNK):
        sims = dec_a[start : start + _CHUNK] @ dec_b.T
        idx[start : start + len(sims)] = sims.argmax(axis=1)
        cos[start : start + len(sims)] = sims.max(axis=1)
    return idx, cos


def matching(
    ca: pd.DataFrame,
    cb: pd.DataFrame,
    dec_a: np.ndarray,
    dec_b: np.ndarray,
    min_support: int,
    seed: int,
) -> dict[str, Any]:
    """Match latents by decoder cosine; rank correlation of matched chi_model in ALL."""
    idx, cos = best_matches(dec_a, dec_b)
    chi_a, chi_b, pair = _matched(ca, cb, idx, min_support)
    close = pair & (cos >= CLOSE)
    all_b = cb[cb["scope"] == rundir.ALL_SCOPE].set_index("concept")
    # chance level: the same eligible concepts of A paired with eligible concepts of B at random
    eligible_b = all_b.index[all_b["support"].to_numpy(float) >= min_support].to_numpy()
    rng = np.random.default_rng(seed)
    random_rho: dict[str, Any] = {"rho": None, "p": None, "pairs": 0}
    if pair.any() and len(eligible_b):
        shuffled = all_b.loc[rng.choice(eligible_b, size=int(pair.sum())), "chi_model"].to_numpy(float)
        random_rho = _spearman(chi_a[pair], shuffled)
    return {
        "method": "each latent of this run's SAE matched to the other SAE's latent of highest decoder cosine",
        "close_cosine": CLOSE,
        "cosine_quantiles": _quantiles(cos.astype(float)),
        "close_share": float((cos >= CLOSE).mean()),
        "distinct_matches": int(len(np.unique(idx))),
        "spearman_chi_model": _spearman(chi_a[pair], chi_b[pair]),
        "spearman_chi_model_close": _spearman(chi_a[close], chi_b[close]),
        "spearman_random_pairing": random_rho,
    }


def saliency_matrix(run: RunTables, item_ids: pd.Index) -> sp.csc_matrix:
    """The run's saliency as a sparse items x concepts matrix, rows in ``item_ids`` order."""
    rows = item_rows(run.saliency["item_id"], item_ids)
    return sp.csc_matrix(
        (run.saliency["value"].to_numpy(np.float64), (rows, run.saliency["concept"].to_numpy())),
        shape=(len(item_ids), run.n_concepts),
    )


def correlation_matches(xa: sp.csc_matrix, xb: sp.csc_matrix) -> tuple[np.ndarray, np.ndarray]:
    """For each column of ``xa``, the column of ``xb`` whose values over the rows correlate best
    (Pearson) and that correlation (NaN for a column that is constant, e.g. never fires)."""
    n = xa.shape[0]
    mean_a = np.asarray(xa.mean(axis=0)).ravel()
    mean_b = np.asarray(xb.mean(axis=0)).ravel()
    sd_a = np.sqrt(np.maximum(np.asarray(xa.multiply(xa).mean(axis=0)).ravel() - mean_a**2, 0))
    sd_b = np.sqrt(np.maximum(np.asarray(xb.multiply(xb).mean(axis=0)).ravel() - mean_b**2, 0))
    inv_b = np.divide(1.0, sd_b, out=np.zeros_like(sd_b), where=sd_b > 0)
    xb_t = xb.T.tocsr()
    idx = np.zeros(xa.shape[1], dtype=np.int64)
    best = np.full(xa.shape[1], np.nan)
    for start in range(0, xa.shape[1], _CHUNK):
        stop = min(start + _CHUNK, xa.shape[1])
        cov = (xb_t @ xa[:, start:stop]).toarray().T / n - np.outer(mean_a[start:stop], mean_b)
        corr = cov * inv_b[None, :]
        idx[start:stop] = corr.argmax(axis=1)
        top = corr[np.arange(stop - start), idx[start:stop]]
        sd = sd_a[start:stop]
        best[start:stop] = np.where(sd > 0, top / np.where(sd > 0, sd, 1.0), np.nan)
    return idx, best


def saliency_matching(a: RunTables, b: RunTables, min_support: int) -> dict[str, Any]:
    """Match latents by the correlation of their per-item saliency; Spearman of matched chi_model."""
    assert a.concepts is not None and b.concepts is not None
    item_ids = pd.Index(a.items["item_id"])
    idx, corr = correlation_matches(saliency_matrix(a, item_ids), saliency_matrix(b, item_ids))
    chi_a, chi_b, pair = _matched(a.concepts, b.concepts, idx, min_support)
    fired = np.isfinite(corr)
    close = pair & fired & (corr >= CLOSE)
    return {
        "method": "each latent of this run matched to the other run's latent whose per-item saliency "
        "correlates best (Pearson over the shared items)",
        "close_correlation": CLOSE,
        "correlation_quantiles": _quantiles(corr[fired]),
        "close_share": float((corr[fired] >= CLOSE).mean()) if fired.any() else None,
        "spearman_chi_model": _spearman(chi_a[pair], chi_b[pair]),
        "spearman_chi_model_close": _spearman(chi_a[close], chi_b[close]),
    }


def _matched(
    ca: pd.DataFrame, cb: pd.DataFrame, idx: np.ndarray, min_support: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """chi_model in ALL of each concept of A and of its match in B, and which pairs are eligible."""
    all_a = ca[ca["scope"] == rundir.ALL_SCOPE].set_index("concept")
    all_b = cb[cb["scope"] == rundir.ALL_SCOPE].set_index("concept")
    concepts = np.arange(len(idx))
    ok_a = all_a.reindex(concepts)["support"].to_numpy(float) >= min_support
    ok_b = all_b.reindex(idx)["support"].to_numpy(float) >= min_support
    chi_a = all_a.reindex(concepts)["chi_model"].to_numpy(float)
    chi_b = all_b.reindex(idx)["chi_model"].to_numpy(float)
    return chi_a, chi_b, ok_a & ok_b


def _label_map(run: RunTables) -> dict[int, str]:
    if run.labels is None:
        return {}
    return dict(zip(run.labels["concept"].astype(int), run.labels["label"].astype(str), strict=True))


def extremes(a: RunTables, b: RunTables, min_support: int) -> dict[str, list[dict[str, Any]]]:
    """The TOP highest and lowest chi_model concepts (ALL, eligible) of each run, side by side."""
    assert a.concepts is not None and b.concepts is not None
    sides = []
    for run in (a, b):
        assert run.concepts is not None
        df = run.concepts[
            (run.concepts["scope"] == rundir.ALL_SCOPE) & (run.concepts["support"] >= min_support)
        ]
        df = df[np.isfinite(df["chi_model"])]
        # ties (chi_model 0 or 1 is common on small suites) go to the better supported concept
        bottom = df.sort_values(["chi_model", "support", "concept"], ascending=[True, False, True])
        top = df.sort_values(["chi_model", "support", "concept"], ascending=[False, False, True])
        labels = _label_map(run)

        def row(r: Any, labels: dict[int, str] = labels) -> dict[str, Any]:
            c = int(r.concept)
            return {
                "concept": c,
                "label": labels.get(c, ""),
                "chi_model": float(r.chi_model),
                "support": int(r.support),
            }

        sides.append(
            {
                "top": [row(r) for r in top.head(TOP).itertuples()],
                "bottom": [row(r) for r in bottom.head(TOP).itertuples()],
            }
        )
    return {
        end: [{"a": x, "b": y} for x, y in zip(sides[0][end], sides[1][end], strict=False)]
        for end in ("top", "bottom")
    }


def sae_swap(
    a: RunTables,
    b: RunTables,
    *,
    min_support: int,
    seed: int,
    decoders: tuple[np.ndarray, np.ndarray] | None,
) -> dict[str, Any]:
    """The SAE-swap figures for run ``a`` against run ``b`` (both loaded with ``results=True``).

    ``decoders``: the two SAEs' unit decoder directions, or None when they cannot be matched
    (different residual widths); the matching is then left out, with the reason.
    """
    if a.concepts is None or b.concepts is None:
        raise CGapsError("SAE swap: both runs need concepts.parquet; run `cgaps score` on each first")
    check_same_items(a, b)
    dist = distributions(a.concepts, b.concepts, min_support)
    benchmarks = [s for s in dist if s != rundir.ALL_SCOPE]
    order = _spearman(
        np.array([dist[s]["missing_share_a"] for s in benchmarks]),
        np.array([dist[s]["missing_share_b"] for s in benchmarks]),
    )
    out: dict[str, Any] = {
        "against": str(b.path),
        "sae_a": a.meta.get("sae", {}).get("id"),
        "sae_b": b.meta.get("sae", {}).get("id"),
        "width_a": a.n_concepts,
        "width_b": b.n_concepts,
        "min_support": min_support,
        "distributions": dist,
        "missing_share_order": order,
        "extremes": extremes(a, b, min_support),
        "saliency_matching": saliency_matching(a, b, min_support),
    }
    if decoders is None:
        out["matching"] = None
        out["matching_skipped"] = "the two SAEs read residuals of different widths (different models)"
    else:
        dec_a, dec_b = decoders
        if dec_a.shape[0] != a.n_concepts or dec_b.shape[0] != b.n_concepts:
            raise CGapsError(
                f"SAE swap: the SAEs have {dec_a.shape[0]} and {dec_b.shape[0]} latents but the runs have "
                f"{a.n_concepts} and {b.n_concepts} concepts; rerun `cgaps extract` with the SAE named in run.json"
            )
        out["matching"] = matching(a.concepts, b.concepts, dec_a, dec_b, min_support, seed)
    return out


def run_decoders(a: RunTables, b: RunTables) -> tuple[np.ndarray, np.ndarray] | None:
    """The decoder directions of the SAEs the two runs' config names, None for different widths."""
    from cgaps.sae import decoder_directions

    specs = []
    for run in (a, b):
        spec = run.config().sae
        if spec is None:
            raise CGapsError(
                f"{run.path / rundir.RUN_JSON}: no SAE in the config; the SAE swap needs both SAEs"
            )
        specs.append(spec)
    dec_a, _ = decoder_directions(specs[0])
    dec_b, _ = decoder_directions(specs[1])
    if dec_a.shape[1] != dec_b.shape[1]:
        return None
    return dec_a, dec_b


def sae_swap_runs(run_a: str | Path, run_b: str | Path, *, min_support: int, seed: int) -> dict[str, Any]:
    """Load both runs and compute :func:`sae_swap` with the decoders their configs name."""
    from cgaps.runtables import load_run

    a, b = load_run(run_a, results=True, coded=True), load_run(run_b, results=True, coded=True)
    return sae_swap(a, b, min_support=min_support, seed=seed, decoders=run_decoders(a, b))
