"""Do CG's weak concepts fall in the probe families the model fails? (validation on the probe suite)

    python scripts/validate_probes.py RUN_DIR

For every concept called a model gap (`weak`) or strength (`strong`) in scope ALL, the
items it fires on are split by probe family (the `category` column), weighted by saliency.
The script prints each family's accuracy and the share of the gap / strength saliency
mass that lands in it, then the accuracy of the families "where the gaps are" (the
gap-mass-weighted mean of family accuracy) against the same figure for the strengths and
for all firing concepts. If the method works, gaps sit in low-accuracy families and
strengths in high-accuracy ones.
"""

from __future__ import annotations

import argparse

import pandas as pd

from cgaps import rundir
from cgaps.runtables import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    args = parser.parse_args()
    run = load_run(args.run_dir, results=True)
    meta, items, sal, concepts = run.meta, run.items, run.saliency, run.concepts
    assert concepts is not None  # results=True reads it or raises
    if "category" not in items.columns:
        raise SystemExit("the run's items have no 'category' column (run the probes suite)")
    concepts = concepts[concepts["scope"] == rundir.ALL_SCOPE]
    family = items.set_index("item_id")["category"]
    acc = items.groupby("category")["score"].mean()
    sal = sal.assign(family=sal["item_id"].map(family))

    def mass(ids: pd.Index) -> pd.Series:
        rows = sal[sal["concept"].isin(ids)]
        m = rows.groupby("family")["value"].sum()
        return (m / m.sum()).reindex(acc.index).fillna(0.0)

    weak = concepts.loc[concepts["gap"] == "weak", "concept"]
    strong = concepts.loc[concepts["gap"] == "strong", "concept"]
    every = concepts.loc[concepts["support"] > 0, "concept"]
    table = pd.DataFrame(
        {
            "accuracy": acc,
            "n": items.groupby("category").size(),
            "gap mass": mass(weak),
            "strength mass": mass(strong),
            "all mass": mass(every),
        }
    )
    print(
        f"{len(weak)} weak and {len(strong)} strong concepts (scope ALL, FDR {meta['config'].get('fdr', 0.05)})\n"
    )
    print(table.sort_values("accuracy").round(3).to_string())
    for name, col in (
        ("gaps", "gap mass"),
        ("strengths", "strength mass"),
        ("all firing concepts", "all mass"),
    ):
        if table[col].sum() > 0:
            print(
                f"accuracy of the families where the {name} are: {(table[col] * table['accuracy']).sum():.3f}"
            )


if __name__ == "__main__":
    main()
