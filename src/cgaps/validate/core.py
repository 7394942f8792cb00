"""Checks that the gap calls of a run can be trusted, on the run's own saliency matrix.

Three checks, all with the run's own scoring knobs (presence, concept scale, min_support,
fdr, Monte Carlo settings), written to ``validation.json``:

* **Null calibration.** The run's scores are permuted within each benchmark (so every
  benchmark keeps its accuracy, but no score depends on any concept) ``null_draws`` times and
  the run is rescored. The method promises that at most 1 run in 20 calls any gap or strength
  on such data (docs/method.md §3); the share of draws that called something is reported.
* **Planted power curve.** Scores are drawn afresh: accuracy ``base_accuracy`` everywhere,
  lowered by an effect size on the items where one of ``planted_concepts`` randomly chosen
  concepts of a support bin is present. Recall is the share of planted concepts called
  ``weak`` in the ALL scope, per (support bin, effect size); support stops at 100 items, since
  planting a concept that fires on most items lowers every concept alike. Concepts that fire on the same
  items as a planted one share its lowered scores, so some of them are called too: they are
  counted as "other weak calls", not as errors of the test.
* **Probe-family alignment** (suites with a ``category`` per item, such as the probe suite):
  where the saliency mass of the concepts called weak lands, as the mass-weighted accuracy of
  the families, against the same figure for random sets of as many tested concepts
  (``shuffles`` of them). If the method works, gaps sit in failing families and strengths in
  passing ones, beyond what any set of concepts would show.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.runtables import load_run
from cgaps.scoring.core import SuiteMatrix, build_matrix, concept_table
from cgaps.scoring.stage import concept_scale
from cgaps.validate.options import ValidateOptions

SUPPORT_BINS: tuple[tuple[int, int | None], ...] = ((5, 10), (10, 20), (20, 50), (50, 100))
EFFECTS = (0.2, 0.35, 0.5)


def permuted_scores(m: SuiteMatrix, rng: np.random.Generator) -> np.ndarray:
    """The run's scores shuffled within each benchmark: the same accuracies, no link to any concept."""
    y = m.scores.copy()
    for b in range(len(m.benchmarks)):
        idx = np.flatnonzero(m.bench == b)
        y[idx] = rng.permutation(y[idx])
    return y


def _calls(m: SuiteMatrix, y: np.ndarray, cfg: RunConfig) -> Any:
    table = concept_table(m.with_scores(y), cfg)
    return table[table["gap"] != ""]


def null_calibration(m: SuiteMatrix, cfg: RunConfig, opts: ValidateOptions, rng: np.random.Generator) -> dict:
    per_draw = []
    for r in range(opts.null_draws):
        called = _calls(m, permuted_scores(m, rng), cfg.replace(seed=cfg.seed + 1 + r))
        per_draw.append(
            {"weak": int((called["gap"] == "weak").sum()), "strong": int((called["gap"] == "strong").sum())}
        )
    with_calls = sum(1 for d in per_draw if d["weak"] + d["strong"] > 0)
    return {
        "draws": opts.null_draws,
        "draws_with_calls": with_calls,
        "share_with_calls": with_calls / opts.null_draws,
        "promise": "at most 1 draw in 20 (0.05) calls anything",
        "calls_per_draw": per_draw,
    }


def _bin_name(lo: int, hi: int | None) -> str:
    return f"{lo}+" if hi is None else f"{lo}-{hi - 1}"


def planted_power(
    m: SuiteMatrix, cfg: RunConfig, opts: ValidateOptions, rng: np.random.Generator
) -> list[dict]:
    support = np.diff(m.saliency.tocsc().indptr)  # ALL-scope support of each concept
    rows = []
    draw = 0
    for lo, hi in SUPPORT_BINS:
        candidates = np.flatnonzero((support >= lo) & ((support < hi) if hi is not None else True))
        for effect in EFFECTS:
            found = planted_n = others = draws = 0
            for _ in range(opts.planted_repeats):
                if len(candidates) < opts.planted_concepts:
                    break
                planted = rng.choice(candidates, size=opts.planted_concepts, replace=False)
                hit = np.asarray(m.saliency[:, planted].sum(axis=1)).ravel() > 0
                p = np.where(hit, opts.base_accuracy - effect, opts.base_accuracy)
                y = (rng.random(len(p)) < p).astype(np.float64)
                draw += 1
                called = _calls(m, y, cfg.replace(seed=cfg.seed + 10_000 + draw))
                weak = set(
                    called.loc[(called["scope"] == rundir.ALL_SCOPE) & (called["gap"] == "weak"), "concept"]
                )
                found += len(weak & set(planted.tolist()))
                others += len(weak - set(planted.tolist()))
                planted_n += len(planted)
                draws += 1
            rows.append(
                {
                    "support": _bin_name(lo, hi),
                    "effect": effect,
                    "candidates": int(len(candidates)),
                    "planted": planted_n,
                    "recall": found / planted_n if planted_n else None,
                    "other_weak_calls_per_draw": others / draws if draws else None,
                }
            )
    return rows


def family_alignment(
    m: SuiteMatrix,
    categories: np.ndarray,
    concepts: Any,
    cfg: RunConfig,
    opts: ValidateOptions,
    rng: np.random.Generator,
) -> dict | None:
    """Mass-weighted family accuracy of the weak / strong concepts against random concept sets."""
    names, fam = np.unique(categories.astype(str), return_inverse=True)
    if len(names) < 2:
        return None
    counts = np.bincount(fam, minlength=len(names)).astype(np.float64)
    acc = np.bincount(fam, weights=m.scores, minlength=len(names)) / counts
    onehot = np.zeros((len(fam), len(names)))
    onehot[np.arange(len(fam)), fam] = 1.0
    mass = np.asarray(m.saliency.T @ onehot)  # concepts x families: saliency mass per family

    def accuracy_of(concept_ids: np.ndarray) -> float:
        total = mass[concept_ids].sum(axis=0)
        return float(total @ acc / total.sum()) if total.sum() > 0 else float("nan")

    all_rows = concepts[concepts["scope"] == rundir.ALL_SCOPE]
    tested = all_rows.loc[all_rows["support"] >= cfg.min_support, "concept"].to_numpy()
    out: dict[str, Any] = {
        "families": {
            str(n): {"items": int(c), "accuracy": float(a)}
            for n, c, a in zip(names, counts, acc, strict=True)
        },
        "all_tested_concepts": accuracy_of(tested),
    }
    for side in ("weak", "strong"):
        ids = all_rows.loc[all_rows["gap"] == side, "concept"].to_numpy()
        if not len(ids) or len(ids) > len(tested):
            out[side] = {"concepts": int(len(ids)), "accuracy": None}
            continue
        observed = accuracy_of(ids)
        shuffled = np.array(
            [accuracy_of(rng.choice(tested, size=len(ids), replace=False)) for _ in range(opts.shuffles)]
        )
        # how often a random set of as many concepts lands as far towards failing (weak) / passing (strong)
        extreme = (shuffled <= observed) if side == "weak" else (shuffled >= observed)
        out[side] = {
            "concepts": int(len(ids)),
            "accuracy": observed,
            "shuffled_mean": float(shuffled.mean()),
            "shuffled_95": [float(np.quantile(shuffled, 0.025)), float(np.quantile(shuffled, 0.975))],
            "p_shuffled": float((1 + extreme.sum()) / (1 + len(shuffled))),
        }
    return out


def validate_run(run_dir: str | Path, options: ValidateOptions | None = None) -> dict[str, Any]:
    """Run the three checks on a scored run and write ``validation.json``."""
    opts = options if options is not None else ValidateOptions()
    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    run = load_run(run_dir, results=True)
    cfg = run.config()
    scale, _ = concept_scale(run, cfg)
    m = build_matrix(run.items, run.saliency, run.n_concepts, presence=cfg.presence, scale=scale)
    rng = np.random.default_rng([cfg.seed, 7])
    result: dict[str, Any] = {
        "null": null_calibration(m, cfg, opts, rng),
        "planted": planted_power(m, cfg, opts, rng) if opts.planted_repeats else [],
        "families": None,
    }
    if "category" in run.items.columns and run.concepts is not None:
        categories = run.items.set_index("item_id").loc[m.item_ids, "category"].fillna("").to_numpy()
        result["families"] = family_alignment(m, categories, run.concepts, cfg, opts, rng)
    result["options"] = {k: getattr(opts, k) for k in opts.__dataclass_fields__}
    rundir.write_json(result, run_dir / rundir.VALIDATION)
    rundir.record_completion(
        run_dir,
        "validate",
        cfg.replace(validate=opts),
        run.items,
        timings={"validate_s": round(time.perf_counter() - t0, 2)},
    )
    return result
