"""Checks that the gap calls of a run can be trusted, on the run's own saliency matrix.

The checks use the run's own scoring config (presence, concept scale, min_support, fdr,
Monte Carlo settings, ``adjust_by``) and the full calling procedure of docs/method.md §3
(concepts and themes, Tarone's rule, one Benjamini-Hochberg per scope), with the run's theme
structure (built from the saliency alone, so every draw reuses it); they are written to
``validation.json``. A draw "calls something" when a concept or a theme is called:

* **Null calibration.** The run's scores are permuted within each benchmark (within each
  adjustment group: ``adjust_by``) (so every group keeps its accuracy, but no score depends on
  any concept) ``null_draws`` times and
  the run is rescored. The method promises that at most 1 run in 20 calls any gap or strength
  on such data (docs/method.md §3); the share of draws that called something is reported.
* **Planted power curve.** Scores are drawn afresh: accuracy ``base_accuracy`` everywhere,
  lowered by an effect size on the items where one of ``planted_concepts`` randomly chosen
  concepts of a support bin is present. Recall is the share of planted concepts called
  ``weak`` in the ALL scope, per (support bin, effect size); support stops at 100 items, since
  planting a concept that fires on most items lowers every concept alike. Concepts that fire on the same
  items as a planted one share its lowered scores, so some of them are called too: they are
  counted as "other weak calls", not as errors of the test.
* **Planted topics** (:mod:`cgaps.validate.topics`; runs whose items have a grouping facet):
  failure planted on whole metadata groups withheld from the scoring, at 30 and 100 items per
  group: the gap concepts and themes called, and the share of the 20 strongest that point to
  a planted group.
* **What the data could have found**: the ``power`` summary of ``cgaps score`` (the smallest
  detectable effect by support, :mod:`cgaps.scoring.power`), recomputed from the run.
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
from cgaps.scoring.core import SuiteMatrix, build_matrix, score_tables
from cgaps.scoring.power import all_sentences, run_power
from cgaps.scoring.stage import concept_scale
from cgaps.scoring.themes import ThemeSet, theme_structure
from cgaps.validate.config import ValidateConfig
from cgaps.validate.topics import item_facet, planted_topics

SUPPORT_BINS: tuple[tuple[int, int | None], ...] = ((5, 10), (10, 20), (20, 50), (50, 100))
EFFECTS = (0.2, 0.35, 0.5)


def permuted_scores(m: SuiteMatrix, rng: np.random.Generator) -> np.ndarray:
    """The run's scores shuffled within each adjustment group (each benchmark by default): the same
    accuracies, no link to any concept."""
    y = m.scores.copy()
    for g in range(m.n_groups):
        idx = np.flatnonzero(m.adjust == g)
        y[idx] = rng.permutation(y[idx])
    return y


def _calls(m: SuiteMatrix, y: np.ndarray, cfg: RunConfig, themes: ThemeSet | None = None) -> tuple[Any, Any]:
    """The called concept rows and theme rows (every scope) of the suite scored with scores ``y``."""
    if themes is None:
        themes = ThemeSet((), m.n_concepts)
    table, tests = score_tables(
        m.with_scores(y), cfg, themes=themes.saliency(m.shat_matrix()), theme_of=themes.theme_of()
    )
    assert tests is not None
    return table[table["gap"] != ""], tests[tests["gap"] != ""]


def null_calibration(
    m: SuiteMatrix,
    cfg: RunConfig,
    opts: ValidateConfig,
    rng: np.random.Generator,
    themes: ThemeSet | None = None,
) -> dict:
    per_draw = []
    for r in range(opts.null_draws):
        called, called_t = _calls(m, permuted_scores(m, rng), cfg.replace(seed=cfg.seed + 1 + r), themes)
        per_draw.append(
            {
                "weak": int((called["gap"] == "weak").sum()),
                "strong": int((called["gap"] == "strong").sum()),
                "themes_weak": int((called_t["gap"] == "weak").sum()),
                "themes_strong": int((called_t["gap"] == "strong").sum()),
            }
        )
    with_calls = sum(1 for d in per_draw if sum(d.values()) > 0)
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
    m: SuiteMatrix,
    cfg: RunConfig,
    opts: ValidateConfig,
    rng: np.random.Generator,
    themes: ThemeSet | None = None,
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
                called, _ = _calls(m, y, cfg.replace(seed=cfg.seed + 10_000 + draw), themes)
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
    opts: ValidateConfig,
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


def _read_theme_tests(run_dir: Path) -> Any:
    from cgaps.scoring.themes import THEME_TESTS

    path = run_dir / THEME_TESTS
    return rundir.read_table(path, "rerun `cgaps score RUN_DIR`") if path.exists() else None


def validate_run(run_dir: str | Path, options: ValidateConfig | None = None) -> dict[str, Any]:
    """Run the three checks on a scored run and write ``validation.json``."""
    opts = options if options is not None else ValidateConfig()
    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    run = load_run(run_dir, results=True)
    cfg = run.config()
    scale, _ = concept_scale(run, cfg)
    m = build_matrix(
        run.items, run.saliency, run.n_concepts, presence=cfg.presence, scale=scale, adjust_by=cfg.adjust_by
    )
    themes = theme_structure(m, cfg)
    rng = np.random.default_rng([cfg.seed, 7])
    result: dict[str, Any] = {
        "null": null_calibration(m, cfg, opts, rng, themes),
        "planted": planted_power(m, cfg, opts, rng, themes) if opts.planted_repeats else [],
        "topics": None,
        "families": None,
    }
    groups = item_facet(run.items.set_index("item_id").loc[m.item_ids].reset_index(), opts.topic_facet)
    if opts.topic_repeats and groups is not None:
        result["topics"] = {
            "facet": opts.topic_facet,
            "sizes": planted_topics(
                m,
                groups,
                cfg,
                np.random.default_rng([cfg.seed, 8]),
                sizes=opts.sizes(),
                repeats=opts.topic_repeats,
            ),
        }
    if run.concepts is not None:
        tests = _read_theme_tests(run_dir)
        power = run_power(m, cfg, run.concepts, tests)
        # the sentences the report and `cgaps status` show, per scope, for readers of this file
        power["sentences"] = all_sentences(power)
        result["power"] = power
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
