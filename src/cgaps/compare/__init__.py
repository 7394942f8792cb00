"""``cgaps compare RUN_A RUN_B --out DIR``: where does model B beat model A, concept by concept.

Reads two scored-and-extracted run directories (:func:`cgaps.runtables.load_run`), refuses
pairs that are not comparable (other items, another reader model, another SAE or other
extraction settings, naming which), computes the paired table of :mod:`cgaps.compare.core`
and writes ``DIR/compare.parquet`` (the config in its schema metadata) and ``DIR/report.html``
(:mod:`cgaps.compare.page`). ``DIR`` is the command's own folder, under its writer lock; a
folder inside a run directory is refused before anything is read (its ``report.html`` would
replace the run's).

One compare, three views: :func:`paired` computes the table and :func:`summary` its counts per
scope; the command's lines, its page and the explorer's Compare view (``cgaps serve RUN_A RUN_B``)
all show those, with one sign convention: Δ = B − A, a call is "B better" or "A better".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd

from cgaps import rundir
from cgaps.compare.core import COMPARE, COMPARE_REPORT, common_scale, paired_table
from cgaps.config import RunConfig
from cgaps.console import info
from cgaps.errors import CGapsError
from cgaps.runtables import RunTables, load_run

# extraction settings that change the saliency: both runs must share them
EXTRACTION_KNOBS = ("span", "pool", "skip_special", "max_norm_ratio", "max_length", "layer", "top_k")
ITEM_TEXT = ("prompt", "messages", "choices")

__all__ = [
    "COMPARE",
    "COMPARE_REPORT",
    "check_comparable",
    "compare_runs",
    "paired",
    "summary",
    "summary_line",
]


def _item_texts(run: RunTables) -> pd.DataFrame:
    return run.items.set_index("item_id").reindex(columns=list(ITEM_TEXT)).sort_index()


def check_comparable(a: RunTables, b: RunTables) -> None:
    """Raise a one-line error naming the first thing that makes A and B incomparable."""
    ids_a, ids_b = set(a.items["item_id"]), set(b.items["item_id"])
    if ids_a != ids_b:
        only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)
        example = f"{only_a[0]!r} only in A" if only_a else f"{only_b[0]!r} only in B"
        raise CGapsError(
            f"{b.path}: other items than {a.path} ({len(only_a)} only in A, {len(only_b)} only in B, e.g. "
            f"{example}); compare runs of the same items"
        )
    ta, tb = _item_texts(a), _item_texts(b)
    for col in ITEM_TEXT:
        differ = ~((ta[col] == tb[col]) | (ta[col].isna() & tb[col].isna()))
        if differ.any():
            raise CGapsError(
                f"{b.path}: item {differ[differ].index[0]!r} has another {col!r} than in {a.path} "
                f"({int(differ.sum())} items differ); compare runs of the same items"
            )
    reader_a, reader_b = a.meta.get("model", {}).get("reader"), b.meta.get("model", {}).get("reader")
    if reader_a != reader_b:
        raise CGapsError(
            f"{b.path}: read by reader model {reader_b!r}, {a.path} by {reader_a!r}; extract both with the "
            "same --reader (`cgaps extract RUN --reader NAME`)"
        )
    sae_a, sae_b = a.meta.get("sae", {}), b.meta.get("sae", {})
    for key in ("id", "fingerprint", "layer"):
        if sae_a.get(key) != sae_b.get(key):
            raise CGapsError(
                f"{b.path}: SAE {key} {sae_b.get(key)!r}, {a.path} has {sae_a.get(key)!r}; extract both with "
                "the same --sae"
            )
    if a.n_concepts != b.n_concepts:
        raise CGapsError(
            f"{b.path}: n_concepts {b.n_concepts}, {a.path} has {a.n_concepts}; the same SAE width is needed"
        )
    cfg_a, cfg_b = a.meta.get("config", {}), b.meta.get("config", {})
    for key in EXTRACTION_KNOBS:
        if cfg_a.get(key) != cfg_b.get(key):
            raise CGapsError(
                f"{b.path}: extracted with {key}={cfg_b.get(key)!r}, {a.path} with {cfg_a.get(key)!r}; "
                f"extract both with the same settings"
            )


def paired(
    a: RunTables, b: RunTables, overrides: dict[str, Any] | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The paired table of two loaded runs (:func:`cgaps.compare.core.paired_table`) and the record
    of how it was made (the config, both runs, the concept scale); refuses incomparable runs.
    ``cgaps compare`` writes what this returns; the explorer's Compare view shows it."""
    from cgaps.scoring.core import build_matrix
    from cgaps.scoring.stage import concept_scale

    check_comparable(a, b)
    cfg: RunConfig = a.config().replace(**(overrides or {}))
    items_a = a.items.sort_values("item_id", kind="stable").reset_index(drop=True)
    items_b = b.items.set_index("item_id").loc[items_a["item_id"]].reset_index()
    scale, scale_source = concept_scale(a, cfg)
    if scale is None:  # one scale for both: the larger suite max
        scale = common_scale(a.saliency, b.saliency, a.n_concepts)
        scale_source = "max of both suites"
    ma = build_matrix(items_a, a.saliency, a.n_concepts, presence=cfg.presence, scale=scale)
    mb = build_matrix(items_b, b.saliency, b.n_concepts, presence=cfg.presence, scale=scale)
    table = paired_table(ma, mb, cfg)
    record = {
        "run_a": str(a.path),
        "run_b": str(b.path),
        "evaluated_a": a.meta.get("model", {}).get("evaluated"),
        "evaluated_b": b.meta.get("model", {}).get("evaluated"),
        "reader": a.meta.get("model", {}).get("reader"),
        "sae": a.meta.get("sae", {}).get("id"),
        "presence": cfg.presence,
        "min_support": cfg.min_support,
        "fdr": cfg.fdr,
        "mc_below": cfg.mc_below,
        "seed": cfg.seed,
        "concept_scale": scale_source,
        "n_items": len(items_a),
    }
    return table, record


def summary(table: pd.DataFrame, items_a: pd.DataFrame, items_b: pd.DataFrame) -> list[dict[str, Any]]:
    """Per scope (benchmarks, then ALL): items, each model's mean score, Δ = B − A, and how many
    concepts each call names (``b_better`` / ``a_better``, and against the benchmarks' own mean
    difference). The CLI's lines, the page's table and the explorer's summary are these rows;
    ``items_a`` / ``items_b`` need ``item_id``, ``benchmark`` and ``score``."""
    score_a = items_a.set_index("item_id")["score"]
    score_b = items_b.set_index("item_id")["score"].reindex(score_a.index)
    bench = items_a.set_index("item_id")["benchmark"].astype(str)
    out = []
    for scope in [*sorted(set(bench)), rundir.ALL_SCOPE]:
        ids = score_a.index if scope == rundir.ALL_SCOPE else bench.index[bench == scope]
        rows = table[table["scope"] == scope]
        mean_a, mean_b = float(score_a[ids].mean()), float(score_b[ids].mean())
        out.append(
            {
                "scope": scope,
                "n_items": len(ids),
                "mean_a": mean_a,
                "mean_b": mean_b,
                "delta": mean_b - mean_a,
                "tested": int(rows["q_value"].notna().sum()),
                "b_better": int((rows["call"] == "b_better").sum()),
                "a_better": int((rows["call"] == "a_better").sum()),
                "b_beyond": int((rows["call_adjusted"] == "b_better").sum()),
                "a_beyond": int((rows["call_adjusted"] == "a_better").sum()),
            }
        )
    return out


def summary_line(row: dict[str, Any]) -> str:
    """One scope's :func:`summary` in words (the CLI prints one per scope)."""
    return (
        f"{row['scope']}: {row['n_items']} items, mean score A {row['mean_a']:.3f}, B {row['mean_b']:.3f} "
        f"(Δ = B − A = {row['delta']:+.3f}); of {row['tested']} concepts tested, B better on {row['b_better']}, "
        f"A better on {row['a_better']}; against the benchmarks' mean Δ, B better on {row['b_beyond']}, "
        f"A better on {row['a_beyond']}"
    )


def compare_runs(
    run_a: str | Path, run_b: str | Path, out: str | Path, overrides: dict[str, Any] | None = None
) -> pd.DataFrame:
    """Write ``out/compare.parquet`` and ``out/report.html``; return the table.

    ``overrides``: ``presence``, ``min_support``, ``fdr`` (default: run A's run.json config).
    ``out`` must lie outside every run directory (:func:`cgaps.rundir.check_output`: its
    ``report.html`` would replace the run's own) and is written under its writer lock.
    """
    from cgaps.compare.page import compare_page

    t0 = time.perf_counter()
    rundir.check_output(out, "--out")
    a, b = load_run(run_a), load_run(run_b)
    table, record = paired(a, b, overrides)
    rows = summary(table, a.items, b.items)
    out = Path(out)
    with rundir.writing(out):
        rundir.write_table(table, out / COMPARE, scoring_config=record)
        rundir.write_text(compare_page(table, a, b, record, rows), out / COMPARE_REPORT)
    info(f"compared {record['n_items']} items in {time.perf_counter() - t0:.1f} s -> {out / COMPARE_REPORT}")
    return table
