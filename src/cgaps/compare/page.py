"""``DIR/report.html`` of ``cgaps compare``: one self-contained page, styled like the report.

Per scope: the items, each model's mean score, Δ = B − A and how many concepts each call names
(:func:`cgaps.compare.summary`, the same counts the command prints and the explorer shows); then
the concepts where B is better and where A is better (by q-value, then |Δ|), and the same against
the benchmarks' mean Δ, each with run A's label (the reader and SAE are the same, so are the
labels). It renders through the report's Jinja environment
(:func:`cgaps.report.build.jinja_env`: autoescape on, control characters made visible) with the
report's stylesheet, so benchmark and label text is escaped on every path into the page.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import pandas as pd

from cgaps.runtables import RunTables

TOP = 25  # rows per list


def _labels(run: RunTables) -> dict[int, str]:
    from cgaps import rundir

    path = run.path / rundir.LABELS
    if not path.exists():
        return {}
    df = pd.read_parquet(path)
    # the labels stage's phrase, when it wrote one, reads better than the evidence label
    words = (
        df["phrase"].where(df["phrase"].notna() & (df["phrase"] != ""), df["label"])
        if "phrase" in df
        else df["label"]
    )
    return {int(c): str(w) for c, w in zip(df["concept"], words, strict=True) if isinstance(w, str) and w}


def _records(df: pd.DataFrame, labels: dict[int, str]) -> list[dict[str, Any]]:
    return [{**r, "label": labels.get(int(r["concept"]), "")} for r in df.head(TOP).to_dict("records")]


def compare_page(
    table: pd.DataFrame, a: RunTables, b: RunTables, record: dict[str, Any], scopes: list[dict[str, Any]]
) -> str:
    """The page's HTML for the paired ``table``, its ``record`` and its :func:`cgaps.compare.summary` rows."""
    from cgaps.report.build import jinja_env, report_css

    labels = _labels(a)
    shown = []
    for s in scopes:
        rows = table[table["scope"] == s["scope"]]
        raw = rows.assign(abs_delta=rows["delta"].abs()).sort_values(
            ["q_value", "abs_delta", "concept"], ascending=[True, False, True], kind="stable"
        )
        adj = rows.assign(abs_delta=(rows["delta"] - rows["delta_expected"]).abs()).sort_values(
            ["q_adjusted", "abs_delta", "concept"], ascending=[True, False, True], kind="stable"
        )
        lists = {
            "b_better": _records(raw[raw["call"] == "b_better"], labels),
            "a_better": _records(raw[raw["call"] == "a_better"], labels),
            "b_beyond": _records(adj[adj["call_adjusted"] == "b_better"], labels),
            "a_beyond": _records(adj[adj["call_adjusted"] == "a_better"], labels),
        }
        more = max(s["b_better"], s["a_better"], s["b_beyond"], s["a_beyond"]) > TOP
        shown.append({**s, "rows": lists, "more": more})
    source = resources.files("cgaps.report").joinpath("compare.html.j2").read_text(encoding="utf-8")
    return (
        jinja_env()
        .from_string(source)
        .render(
            css=report_css(),
            record=record,
            name_a=a.path.resolve().name,
            name_b=b.path.resolve().name,
            scopes=shown,
            top=TOP,
        )
    )
