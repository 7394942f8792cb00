"""Robustness checks of docs/method.md §4: subsampling and adversarial ablation.

Both work on row subsets of the suite's CSR matrix and compute what
:func:`~cgaps.scoring.core.chi_tables` would on the subset without copying it: a subsample
from the full suite's sums less those of the rows it leaves out (:class:`_SubsetSums`,
within 1e-12), the ablation's chi_model from the kept rows' nonzeros (:func:`chi_model_all`,
bit for bit); ``tests/scoring/test_speed_scoring.py`` checks both against ``chi_tables`` of
:meth:`SuiteMatrix.subset`. The run is read with item ids as codes
(``load_run(coded=True)``). A subset keeps the full suite's concept scale m_c
(``SuiteMatrix.scale``: the reference max shipped with the SAE, or the full suite's max), so
chi_bench values of a subset are on the same scale as the full run's (renormalising by a
subset's own max would add variance that is not the benchmark's).

Choices where the method is open:

* **Concepts summarised**: those with n_c(S) >= min_support in the full suite (per scope);
  rarer ones have chi values that are mostly noise and would dominate the means.
* **Subsampling**: each repeat keeps round((1 - drop) * |B|) items of every benchmark B,
  drawn without replacement from ``numpy.random.default_rng(seed)``. Per concept the std
  over repeats (ddof = 0, repeats where the concept does not fire skipped for chi_model);
  reported: the mean of those stds over the concepts, per scope.
* **Ablation**: best / worst = the ``top`` eligible concepts (ALL scope) with the highest /
  lowest chi_model (ties by concept index). Alignment of an item = the sum of s_hat over
  those concepts; the floor(max_delete * |suite|) most aligned items with alignment > 0 are
  deleted (at least one). The median chi_model over the eligible concepts (ALL scope,
  NaN-skipping) is recomputed; the change is reported in points and relative to before.
* The SAE-swap check compares this run with a second run on the same items read through
  another SAE (``against``); it lives in :mod:`cgaps.robustness.swap`.

The config of both checks live in one documented dataclass,
:class:`~cgaps.robustness.config.RobustnessConfig` (re-exported here): its defaults are the
only ones, its ``__post_init__`` the only validation, and the command line
(``cgaps robustness``) takes its flags from its fields.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.robustness.config import RobustnessConfig
from cgaps.runtables import load_run
from cgaps.scoring.core import ChiTables, SuiteMatrix, build_matrix, chi_tables
from cgaps.scoring.stage import concept_scale

__all__ = ["RobustnessConfig", "ablation", "robustness_run", "subsample_rows", "subsampling"]


def subsample_rows(m: SuiteMatrix, rng: np.random.Generator, drop: float) -> np.ndarray:
    """Rows kept by one subsampling repeat: (1 - drop) of every benchmark, sorted."""
    kept = []
    for b in range(len(m.benchmarks)):
        rows = np.flatnonzero(m.bench == b)
        kept.append(rng.choice(rows, size=int(round((1 - drop) * len(rows))), replace=False))
    return np.sort(np.concatenate(kept))


def subsampling(
    m: SuiteMatrix, cfg: RunConfig, opts: RobustnessConfig, full: ChiTables | None = None
) -> dict[str, Any]:
    """Per-concept std of chi_model and chi_bench over ``opts.repeats`` seeded subsamples, averaged
    per scope; ``full``: ``chi_tables(m)`` when the caller has it."""
    repeats, drop = opts.repeats, opts.drop
    full = chi_tables(m) if full is None else full
    rng = np.random.default_rng(cfg.seed)
    shape = full.chi_model.shape
    # Welford running moments: memory stays at a few (scopes x F) arrays whatever the number
    # of repeats, and identical draws give a std of exactly 0 (no sum-of-squares cancellation).
    model, bench = _Moments(shape), _Moments(shape)
    sums = _SubsetSums(m)
    for _ in range(repeats):
        chi_model, chi_bench = sums.chi(subsample_rows(m, rng, drop))  # on m's concept scale
        model.add(chi_model)  # NaN (not firing in this subsample) is skipped
        bench.add(chi_bench)
    std_model, std_bench = model.std(), bench.std()
    scopes = {}
    for k, scope in enumerate([*m.benchmarks, rundir.ALL_SCOPE]):
        eligible = full.support[k] >= cfg.min_support
        scopes[scope] = {
            "concepts": int(eligible.sum()),
            "mean_std_chi_model": _nanmean(std_model[k, eligible]),
            "mean_std_chi_bench": _nanmean(std_bench[k, eligible]),
        }
    return {"repeats": repeats, "drop": drop, "seed": cfg.seed, **scopes[rundir.ALL_SCOPE], "scopes": scopes}


class _SubsetSums:
    """chi_model and chi_bench of row subsets of one suite, without rebuilding the matrix.

    A subsample needs only three per-(benchmark, concept) sums (s, s y, s_hat), the support and
    the items per scope. They are kept for the full suite once; a subset's sums are the full
    ones less those of the rows it leaves out (a 20% drop touches a fifth of the nonzeros, where
    :func:`chi_tables` on the subset would copy and multiply the other four fifths eight times),
    or, when it leaves out more than half, the sums of the rows it keeps. One ``bincount`` per sum
    over the nonzeros of those rows, keyed by benchmark x F + concept; ``ALL`` is the sum over
    benchmarks. Supports are counts (exact in float64), so "fires in the subset" is decided
    exactly; the sums differ from a recomputation only by float rounding of a subtraction
    (``tests/scoring/test_speed_scoring.py`` checks them against :func:`chi_tables` on the subset).
    """

    def __init__(self, m: SuiteMatrix) -> None:
        s = m.saliency
        self.m = m
        self.n_bench, self.f = len(m.benchmarks), s.shape[1]
        rows = np.repeat(np.arange(s.shape[0]), np.diff(s.indptr))
        key_dtype = np.int32 if self.n_bench * self.f < 2**31 else np.int64
        self.key = (m.bench[rows] * self.f + s.indices).astype(key_dtype)
        self.weights = (s.data, s.data * m.scores[rows], m.shat_data())
        self.full = [self._sums(self.key, slice(None), w) for w in (None, *self.weights)]

    def _sums(self, key: np.ndarray, nz: slice | np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        """Per-(benchmark, concept) sums of ``weights`` over the nonzeros ``nz`` (``key``: their keys)."""
        w = None if weights is None else weights[nz]
        return np.bincount(key, weights=w, minlength=self.n_bench * self.f).reshape(self.n_bench, self.f)

    def chi(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(chi_model, chi_bench) of the subset ``rows``, (K + 1) x F like :class:`ChiTables`'."""
        n = self.m.saliency.shape[0]
        kept = np.zeros(n, dtype=bool)
        kept[rows] = True
        subtract = 2 * len(rows) >= n  # then sum the left-out rows and subtract them
        nz = _row_nonzeros(self.m.saliency.indptr, np.flatnonzero(~kept if subtract else kept))
        key = self.key[nz]  # gathered once for the four sums
        parts = [self._sums(key, nz, w) for w in (None, *self.weights)]
        if subtract:
            parts = [full - part for full, part in zip(self.full, parts, strict=True)]
        support, sum_s, sum_sy, sum_shat = (np.vstack([p, p.sum(axis=0)]) for p in parts)
        n_items = np.bincount(self.m.bench[kept], minlength=self.n_bench).astype(np.float64)
        n_items = np.append(n_items, n_items.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            chi_model = np.where(support > 0, sum_sy / sum_s, np.nan)
            chi_bench = sum_shat / n_items[:, None]
        return chi_model, chi_bench


def _row_nonzeros(indptr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Positions in the CSR data (``indptr``) of every nonzero of ``rows``, row by row."""
    starts, lengths = indptr[rows], np.diff(indptr)[rows]
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return offsets + np.arange(int(lengths.sum()))


class _Moments:
    """Element-wise running mean and std (Welford), skipping NaN."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.n, self.mean, self.m2 = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        self._delta, self._step = np.empty(shape), np.empty(shape)  # reused: (scopes x F) each

    def add(self, x: np.ndarray) -> None:
        # in place into two reused buffers (at F = 65,536 the temporaries of the np.where form
        # cost more than the sums): the same operations on the same values, skipped cells set
        # to +0.0 as np.where(ok, ..., 0.0) set them (tests/scoring/test_speed_scoring.py, bit for bit)
        skip = np.isnan(x)
        self.n += ~skip
        delta, step = self._delta, self._step
        np.subtract(x, self.mean, out=delta)
        np.copyto(delta, 0.0, where=skip)
        np.maximum(self.n, 1, out=step)
        np.divide(delta, step, out=step)  # a skipped cell: 0 / max(n, 1) = +0.0
        self.mean += step
        np.subtract(x, self.mean, out=step)
        step *= delta
        np.copyto(step, 0.0, where=skip)
        self.m2 += step

    def std(self) -> np.ndarray:
        """Population std (ddof = 0); NaN where fewer than two values were seen."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n >= 2, np.sqrt(self.m2 / self.n), np.nan)


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if len(x) else float("nan")


def _median(vals: np.ndarray) -> float:
    vals = vals[~np.isnan(vals)]
    return float(np.median(vals)) if len(vals) else float("nan")


def chi_model_all(m: SuiteMatrix, keep: np.ndarray) -> np.ndarray:
    """chi_model over all items of the row subset ``keep`` (sorted): ``chi_tables(m.subset(keep))
    .chi_model[-1]`` bit for bit, from two ``bincount``s over the kept rows' nonzeros instead of a
    copy of the matrix and eight sparse products. Same sums in the same order: the ``ALL`` row of
    the scope indicator visits the items in row order, as the nonzeros are visited here, and
    both add each s (or s y) to a running sum from 0."""
    s = m.saliency
    nz = _row_nonzeros(s.indptr, keep)
    data, concept = s.data[nz], s.indices[nz]
    y = np.repeat(m.scores[keep], np.diff(s.indptr)[keep])
    sum_s = np.bincount(concept, weights=data, minlength=s.shape[1])
    sum_sy = np.bincount(concept, weights=data * y, minlength=s.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sum_s > 0, sum_sy / sum_s, np.nan)


def ablation(
    m: SuiteMatrix, cfg: RunConfig, opts: RobustnessConfig, full: ChiTables | None = None
) -> dict[str, Any]:
    """Delete the items most aligned with the best (worst) concepts; report the median chi_model
    shift; ``full``: ``chi_tables(m)`` when the caller has it."""
    top, max_frac = opts.top, opts.max_delete
    full = chi_tables(m) if full is None else full
    eligible = np.flatnonzero(full.support[-1] >= cfg.min_support)
    before = _median(full.chi_model[-1, eligible])
    shat = m.shat_matrix().tocsc()
    n_delete = max(1, int(max_frac * m.saliency.shape[0]))
    out: dict[str, Any] = {
        "top": top,
        "max_frac": max_frac,
        "concepts": len(eligible),
        "median_before": before,
    }
    # Rank by chi_model, ties by concept index (lexsort: the last key is the primary one).
    chi = full.chi_model[-1, eligible]
    best = eligible[np.lexsort((eligible, -chi))][:top]
    worst = eligible[np.lexsort((eligible, chi))][:top]
    for name, chosen in (("best", best), ("worst", worst)):
        align = np.asarray(shat[:, chosen].sum(axis=1)).ravel()
        ranked = np.lexsort((np.arange(len(align)), -align))  # most aligned first, ties by row
        deleted = ranked[:n_delete]
        deleted = deleted[align[deleted] > 0]
        keep = np.setdiff1d(np.arange(len(align)), deleted)
        after = _median(chi_model_all(m, keep)[eligible])
        out[name] = {
            "concepts": len(chosen),
            "deleted_items": len(deleted),
            "median_after": after,
            "change": after - before,
            "change_rel": (after - before) / before if before else float("nan"),
        }
    return out


def robustness_run(
    run_dir: str | Path,
    config: RunConfig | None = None,
    options: RobustnessConfig | None = None,
    against: str | Path | None = None,
) -> dict[str, Any]:
    """Run the checks on a run directory and write ``robustness.json``: subsampling and
    ablation always, the SAE swap when ``against`` names a second run on the same items."""
    opts = options if options is not None else RobustnessConfig()
    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    # the swap reads this run's concepts too; item ids as codes: the matrix is built from arrays
    run = load_run(run_dir, results=against is not None, coded=True)
    cfg = run.config(config)
    scale, _ = concept_scale(run, cfg)
    m = build_matrix(run.items, run.saliency, run.n_concepts, presence=cfg.presence, scale=scale)
    swap = None  # the third check needs a second run (another SAE on the same items)
    if against is not None:  # first: a run that does not match fails before minutes of subsampling
        from cgaps.robustness.swap import run_decoders, sae_swap

        other = load_run(against, results=True, coded=True)
        swap = sae_swap(
            run, other, min_support=cfg.min_support, seed=cfg.seed, decoders=run_decoders(run, other)
        )
    full = chi_tables(m)  # once for both checks
    result = {
        "subsampling": subsampling(m, cfg, opts, full),
        "ablation": ablation(m, cfg, opts, full),
        "sae_swap": swap,
    }
    rundir.write_json(result, run_dir / rundir.ROBUSTNESS)
    rundir.record_completion(
        run_dir,
        "robustness",
        cfg.replace(robustness=opts),
        run.items,
        timings={"robustness_s": round(time.perf_counter() - t0, 3)},
    )
    return result
