"""Print a run's accuracy per benchmark (and per category with --by-category) as a Markdown table.

    python scripts/accuracy_table.py RUN_DIR [--by-category]

Columns: n, mean score, 95% Wilson interval (:func:`cgaps.stats.mean_interval`), and the chance level (1/#options for
multiple choice, 1/2 for yes/no, 0 for free-form answers, averaged over the items). A run with BBQ items also gets
BBQ's two bias scores (:mod:`cgaps.evaluate.bias`: s_DIS on disambiguated contexts, s_AMB on ambiguous ones; 0 is
unbiased, +1 always the stereotype, -1 always against it).
"""

from __future__ import annotations

import argparse
import json

from cgaps import rundir
from cgaps.evaluate.bias import bbq_bias_scores
from cgaps.stats import mean_interval


def chance(row: dict) -> float:
    choices = row.get("choices")
    if isinstance(choices, str) and choices.strip():
        return 1 / len(json.loads(choices))
    return 0.5 if row.get("answer_type") == "yesno" else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--by-category", action="store_true")
    args = parser.parse_args()
    items = rundir.read_items(args.run_dir, scored=True)
    items["chance"] = [chance(r) for r in items.to_dict("records")]
    key = "category" if args.by_category else "benchmark"
    print(f"| {key} | n | mean | 95% CI | chance |")
    print("| --- | ---: | ---: | --- | ---: |")
    groups = list(items.groupby(key, sort=True)) + [("**all**", items)]
    for name, grp in groups:
        n, mean = len(grp), float(grp["score"].mean())
        lo, hi = mean_interval(grp["score"].to_numpy())
        print(f"| {name} | {n} | {mean:.3f} | [{lo:.3f}, {hi:.3f}] | {grp['chance'].mean():.3f} |")
    bbq = items[items["benchmark"] == "bbq"]
    if len(bbq):
        bias = bbq_bias_scores(bbq)
        print("\n| BBQ bias score | n | score |")
        print("| --- | ---: | ---: |")
        print(f"| disambiguated (s_DIS) | {bias['n_disambig']} | {bias['s_dis']:+.3f} |")
        print(f"| ambiguous (s_AMB) | {bias['n_ambig']} | {bias['s_amb']:+.3f} |")


if __name__ == "__main__":
    main()
