"""Family purity of a run's gap themes and its upper bound (issue 10), as one line of figures.

    python scripts/theme_purity.py RUN_DIR [--facet category]

A theme's purity is the share of its members' summed thresholded saliency ŝ' that falls on its
largest group of ``--facet`` (default the items' ``category``, the probe family); the figure is
the mean over the ALL-scope gap themes weighted by that summed mass. The bound: the same
mass-weighted purity over the gap themes' member concepts one by one — no grouping of them can
exceed it, since max_f Σ_c m_cf ≤ Σ_c max_f m_cf (``bound_gap_concepts``: the same over every
concept called a gap, the themes' members or not). Also printed: the purity weighted by member
count and the share of the gap themes' mass on themes whose largest group holds under half of it.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd

from cgaps import rundir, runtables
from cgaps.labels.evidence import group_indicator
from cgaps.labels.stage import thresholded_matrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--facet", default="category", help="items column naming each item's group")
    args = parser.parse_args()
    run = runtables.load_run(args.run_dir, results=True)
    m = thresholded_matrix(run)
    shat = m.shat_matrix()
    items = run.items.set_index(run.items["item_id"].astype(str))
    # items without a group form one group of their own ("")
    ind, _ = group_indicator(items.loc[list(m.item_ids), args.facet].fillna("").astype(str))
    fam = np.asarray((ind @ shat).todense())  # groups x concepts
    assert run.concepts is not None  # results=True reads it or raises
    all_c = run.concepts[run.concepts["scope"] == rundir.ALL_SCOPE]
    gaps = all_c.loc[all_c["gap"] == "weak", "concept"].to_numpy(np.int64)
    bound_gaps = float(fam[:, gaps].max(axis=0).sum() / fam[:, gaps].sum())
    themes = pd.read_parquet(f"{args.run_dir}/{rundir.THEMES}")
    gap_t = themes[(themes["scope"] == rundir.ALL_SCOPE) & (themes["gap"] == "weak")]
    top, mass, n_members, spread_mass = [], [], [], 0.0
    for members in gap_t["members"]:
        f = fam[:, json.loads(members)].sum(axis=1)
        top.append(f.max())
        mass.append(f.sum())
        n_members.append(len(json.loads(members)))
        spread_mass += f.sum() if f.max() < 0.5 * f.sum() else 0.0
    member_ids = np.array([c for ms in gap_t["members"] for c in json.loads(ms)], dtype=np.int64)
    bound = float(fam[:, member_ids].max(axis=0).sum() / fam[:, member_ids].sum())
    top_a, mass_a, n_a = np.array(top), np.array(mass), np.array(n_members)
    purity = float(top_a.sum() / mass_a.sum())
    by_count = float((top_a / mass_a * n_a).sum() / n_a.sum())
    print(
        f"gap_themes={len(gap_t)} members={len(member_ids)} gap_concepts={len(gaps)} purity_mass={purity:.3f} "
        f"bound={bound:.3f} bound_gap_concepts={bound_gaps:.3f} "
        f"purity_members={by_count:.3f} spread_mass_share={spread_mass / mass_a.sum():.3f}"
    )


if __name__ == "__main__":
    main()
