"""``DIR/report.html`` of ``cgaps compare``: one self-contained page, every text escaped.

Per scope: the items, each model's mean score and how many concepts were called either way;
then the concepts where B is better and where A is better (by q-value, then |delta|), each
with run A's label (the reader and SAE are the same, so are the labels) and the numbers
behind the call. Item and label text comes from benchmark files and models: everything
passes through :func:`html.escape`.
"""

from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd

from cgaps.rundir import ALL_SCOPE
from cgaps.runtables import RunTables

TOP = 25  # rows per table


def _num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e-3 and x != 0 else f"{x:.{digits}f}"
    return html.escape(str(x))


def _labels(run: RunTables) -> dict[int, str]:
    from cgaps import rundir

    path = run.path / rundir.LABELS
    if not path.exists():
        return {}
    df = pd.read_parquet(path, columns=["concept", "label"])
    return {int(c): str(label) for c, label in zip(df["concept"], df["label"], strict=True) if label}


def _rows(df: pd.DataFrame, labels: dict[int, str]) -> str:
    if df.empty:
        return "<p class='none'>none</p>"
    head = "<tr><th>concept</th><th>label</th><th>χ_model A</th><th>χ_model B</th><th>Δ (B − A)</th><th>q</th><th>support</th><th>discordant</th></tr>"
    body = "".join(
        f"<tr><td>{int(r.concept)}</td><td>{html.escape(labels.get(int(r.concept), ''))}</td>"
        f"<td>{_num(r.chi_model_a)}</td><td>{_num(r.chi_model_b)}</td><td>{_num(r.delta)}</td>"
        f"<td>{_num(r.q_value)}</td><td>{int(r.support)}</td><td>{int(r.discordant)}</td></tr>"
        for r in df.itertuples()
    )
    return f"<table>{head}{body}</table>"


def compare_page(table: pd.DataFrame, a: RunTables, b: RunTables, record: dict[str, Any]) -> str:
    labels = _labels(a)
    items_a = a.items.set_index("item_id")["score"]
    items_b = b.items.set_index("item_id")["score"].reindex(items_a.index)
    bench = a.items.set_index("item_id")["benchmark"]
    scopes = [*sorted(set(bench)), ALL_SCOPE]
    summary, sections = [], []
    for scope in scopes:
        ids = items_a.index if scope == ALL_SCOPE else bench.index[bench == scope]
        rows = table[table["scope"] == scope]
        n_b = int((rows["call"] == "b_better").sum())
        n_a = int((rows["call"] == "a_better").sum())
        adj_b = int((rows["call_adjusted"] == "b_better").sum())
        adj_a = int((rows["call_adjusted"] == "a_better").sum())
        summary.append(
            f"<tr><td>{html.escape(scope)}</td><td>{len(ids)}</td><td>{_num(float(items_a[ids].mean()))}</td>"
            f"<td>{_num(float(items_b[ids].mean()))}</td><td>{n_b}</td><td>{n_a}</td><td>{adj_b}</td><td>{adj_a}</td></tr>"
        )
        order = rows.assign(abs_delta=rows["delta"].abs()).sort_values(
            ["q_value", "abs_delta"], ascending=[True, False]
        )
        sections.append(
            f"<h2>{html.escape(scope)}</h2><h3>B better ({n_b})</h3>"
            + _rows(order[order["call"] == "b_better"].head(TOP), labels)
            + f"<h3>A better ({n_a})</h3>"
            + _rows(order[order["call"] == "a_better"].head(TOP), labels)
        )
    esc = {k: html.escape(str(v)) for k, v in record.items()}
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cgaps compare</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 70em; }}
table {{ border-collapse: collapse; margin: .5em 0 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: .2em .5em; text-align: left; }}
.none {{ color: #777; }}
</style></head><body>
<h1>Competency gaps: A vs B</h1>
<p><b>A</b>: {esc["run_a"]} (evaluated model {esc["evaluated_a"]})<br>
<b>B</b>: {esc["run_b"]} (evaluated model {esc["evaluated_b"]})<br>
Reader {esc["reader"]}, SAE {esc["sae"]}, {esc["n_items"]} items; presence {esc["presence"]},
min_support {esc["min_support"]}, fdr {esc["fdr"]}, concept scale: {esc["concept_scale"]}.</p>
<p>Per concept and scope, χ_model of each model with the pair's common saliency weights, Δ = B − A,
and a paired sign-flip test (Benjamini–Hochberg per scope); see <code>cgaps.compare.core</code>.</p>
<p>“Beyond” columns: the concept's paired difference against its benchmarks' own mean difference
(the scoring stage's score test on the differences), so a change that moves every item alike calls nothing there.</p>
<table><tr><th>scope</th><th>items</th><th>mean score A</th><th>mean score B</th><th>B better</th><th>A better</th><th>B better beyond</th><th>A better beyond</th></tr>
{"".join(summary)}</table>
{"".join(sections)}
</body></html>
"""
