"""Testing a run's calls again on fresh items: the arithmetic of ``cgaps confirm``.

Everything here works on arrays; :mod:`cgaps.confirm.stage` reads and writes the folders. The
rules (docs/method.md §7):

* **What is re-tested.** The concepts called ``weak`` or ``strong`` in the chosen scope, each in
  the direction of its call; the gap and strength themes likewise; and, as the chance level,
  **controls**: uncalled tested concepts (support ≥ ``min_support``) matched to each called
  concept by support in the run (:func:`matched_controls`: the unused candidate with the closest
  support, ties drawn at random), each tested in the direction of its own χ_model − expected.
* **The fresh items.** For every re-tested concept (and theme), up to ``per_concept`` pool items
  on whose prompt it is present (:func:`draw_items`, a seeded draw per concept); the fresh
  set is their union.
* **The test** (:func:`retest`): the scoring stage's own score test (:mod:`cgaps.scoring.core`:
  ``chi_tables`` and ``p_values``, Monte Carlo where the expected minority count is small) on
  the fresh items alone, with their own scores and their own benchmarks' means as the
  expectation, the run's presence and the run's concept scale. Only the re-tested columns are
  built, so the multiple-testing correction counts exactly them: one Benjamini–Hochberg over
  the one-sided p-values in the called direction of each family (called concepts; controls;
  themes) in ``ALL``. A call **replicates** when it is tested (fresh support ≥ ``min_support``)
  with q ≤ ``fdr`` and z on the called side. One-sided p-values are valid here because the
  direction was fixed by the first run, before the fresh items were seen.
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cgaps.config import RunConfig
from cgaps.scoring.core import SuiteMatrix, chi_tables, p_values
from cgaps.stats import bh_adjust

CALLS = ("weak", "strong")


def matched_controls(
    support: np.ndarray,
    chi_model: np.ndarray,
    expected: np.ndarray,
    gap: np.ndarray,
    called: np.ndarray,
    per_call: int,
    min_support: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Controls for the ``called`` concepts (module docstring): their ids, the called concept
    each is matched to, and the direction each is tested in. Arrays over all concepts in;
    fewer controls come out when the candidates run out."""
    rng = np.random.default_rng([seed, zlib.crc32(b"controls")])
    candidates = np.flatnonzero((support >= min_support) & ~np.isin(gap, CALLS))
    free = np.ones(len(candidates), dtype=bool)
    ids, matched = [], []
    for c in rng.permutation(np.asarray(called)):
        for _ in range(per_call):
            if not free.any():
                break
            dist = np.abs(support[candidates].astype(np.float64) - float(support[c]))
            dist[~free] = np.inf
            best = np.flatnonzero(dist == dist.min())
            pick = int(rng.choice(best))
            free[pick] = False
            ids.append(int(candidates[pick]))
            matched.append(int(c))
    ids_a = np.asarray(ids, dtype=np.int64)
    direction = np.where(chi_model[ids_a] < expected[ids_a], "weak", "strong") if len(ids_a) else np.array([])
    return ids_a, np.asarray(matched, dtype=np.int64), direction.astype(object)


def draw_items(present: sp.csc_matrix, per_column: int, seed: int, keys: np.ndarray) -> list[np.ndarray]:
    """Per column of ``present`` (pool items x tested things), up to ``per_column`` of the rows
    where it is nonzero, drawn at random with a generator seeded by (seed, the column's key)."""
    present = sp.csc_matrix(present)
    out = []
    for j in range(present.shape[1]):
        rows = present.indices[present.indptr[j] : present.indptr[j + 1]]
        rows = rows[present.data[present.indptr[j] : present.indptr[j + 1]] > 0]
        if len(rows) > per_column:
            rng = np.random.default_rng([seed, int(keys[j])])
            rows = rng.choice(np.sort(rows), size=per_column, replace=False)
        out.append(np.sort(rows).astype(np.int64))
    return out


def column_matrix(m: SuiteMatrix, cols: np.ndarray) -> SuiteMatrix:
    """The suite restricted to concept columns ``cols`` (each keeps its own scale)."""
    cols = np.asarray(cols, dtype=np.int64)
    return dataclasses.replace(m, saliency=sp.csr_matrix(m.saliency[:, cols]), scale=m.scale[cols])


def retest(m: SuiteMatrix, direction: np.ndarray, cfg: RunConfig) -> pd.DataFrame:
    """The score test of every column of ``m`` in ``ALL``, one-sided in ``direction`` (weak /
    strong per column), with one BH over the tested columns (module docstring)."""
    direction = np.asarray(direction, dtype=object)
    t = chi_tables(m)
    z, p_weak, p_strong = p_values(m, t, cfg)
    k = t.support.shape[0] - 1  # ALL
    zk = z[k]
    p = np.where(direction == "weak", p_weak[k], p_strong[k])
    tested = t.support[k] >= cfg.min_support
    q = np.full(len(direction), np.nan)
    q[tested] = bh_adjust(p[tested])
    right_side = np.where(direction == "weak", zk < 0, zk > 0)
    return pd.DataFrame(
        {
            "support_fresh": t.support[k].round().astype(np.int64),
            "chi_model_fresh": t.chi_model[k],
            "expected_fresh": t.expected[k],
            "z_fresh": zk,
            "p_fresh": np.where(tested, p, np.nan),
            "q_fresh": q,
            "tested": tested,
            "replicated": tested & (q <= cfg.fdr) & right_side,
        }
    )


def rates(table: pd.DataFrame) -> dict[str, dict[str, float | int | None]]:
    """Replication per family (called concepts, controls, themes): re-tested, replicated, and the
    rate among the re-tested."""
    out: dict[str, dict[str, float | int | None]] = {}
    for name, rows in (
        ("concepts", table[(table["kind"] == "concept") & (table["role"] == "called")]),
        ("controls", table[(table["kind"] == "concept") & (table["role"] == "control")]),
        ("themes", table[(table["kind"] == "theme") & (table["role"] == "called")]),
    ):
        tested = int(rows["tested"].sum())
        hit = int(rows["replicated"].sum())
        out[name] = {
            "calls": len(rows),
            "tested": tested,
            "replicated": hit,
            "rate": hit / tested if tested else None,
        }
    return out
