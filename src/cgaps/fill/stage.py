"""``cgaps fill``: read the run and the pool, select, write the selection; ``--verify`` measures it.

The output folder (``--out``, default ``RUN_DIR/fill/BENCHMARK``, where the report and the
explorer find it) holds:

* ``selection.jsonl`` and ``selection.yaml``: the chosen items as a benchmark spec file that
  ``cgaps items`` reads (benchmark ``BENCHMARK_fill``; prompts kept verbatim through
  ``prompt_template: "{prompt}"``, each row's own answer type, choices, category, metadata and
  messages), each line with its ``covers`` evidence: the targets it was the first to cover,
  with their labels;
* ``coverage.parquet``: one row per target concept, what the selection is predicted to do to it
  (and, after ``--verify``, what it measurably did);
* ``fill.json``: the summary: targets, weights, budget, the concept scale, and per arm (fill,
  random, group) the predicted and, after ``--verify``, the measured missing and under shares;
* working run directories, each written by the extraction stage and resumable: ``base/`` (the
  run's prompts, when the run was not extracted with span = prompt), ``reference/``, ``pool/``,
  ``generated/`` and ``verify/`` (the benchmark with the three arms' items, extracted again).

The rules are in :mod:`cgaps.fill.core` and docs/method.md §7.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from cgaps import rundir
from cgaps.config import RunConfig, config_from_run
from cgaps.console import info, progress_bar
from cgaps.errors import CGapsError, did_you_mean
from cgaps.fill import core
from cgaps.fill.config import BUDGET_SHARE, FillConfig
from cgaps.pools.config import PoolConfig
from cgaps.pools.coverage import (
    Covered,
    Reader,
    distinct_ids,
    empty_saliency,
    exclude_known,
    fixed_scale,
    load_pool,
    presence_matrix,
    prompt_coverage,
    wanted_signature,
)

if TYPE_CHECKING:
    from cgaps.seams import ResidualReader, SAEEncoder

FILL_JSON = "fill.json"
SELECTION = "selection.jsonl"
SELECTION_SPEC = "selection.yaml"
COVERAGE = "coverage.parquet"
FILL_DIR = "fill"  # RUN_DIR/fill/BENCHMARK: the default output, where the report and explorer look
COVERAGE_COLUMNS = (
    "concept",
    "label",
    "target",
    "support",
    "chi_bench",
    "deficit",
    "added_support",
    "chi_bench_after",
    "covered",
    "first_item",
    "support_measured",
    "chi_bench_measured",
    "covered_measured",
)


def default_out(run_dir: Path, benchmark: str) -> Path:
    """``RUN_DIR/fill/BENCHMARK`` (a benchmark name made safe as a folder name)."""
    return run_dir / FILL_DIR / (re.sub(r"[^A-Za-z0-9._-]+", "_", benchmark).strip("._") or "benchmark")


def concept_labels(run_dir: Path) -> dict[int, str]:
    """Each concept's label from the run's labels.parquet (empty when there is none)."""
    path = run_dir / rundir.LABELS
    if not path.is_file():
        return {}
    labels = rundir.read_table(path, "`cgaps extract` or `cgaps label`")
    return {int(c): str(v) for c, v in zip(labels["concept"], labels["label"], strict=True)}


def _read_run(run_dir: Path) -> tuple[dict[str, Any], RunConfig, int, pd.DataFrame]:
    if not run_dir.is_dir():
        raise CGapsError(
            f"{run_dir}: not a directory; pass a run directory written by `cgaps run` or `cgaps extract`"
        )
    meta = rundir.read_run_json(run_dir)
    if "sae" not in meta:
        raise CGapsError(
            f"{run_dir / rundir.RUN_JSON}: no extraction recorded; fill reads new items with the run's "
            "reader and SAE, so run `cgaps extract RUN_DIR` first"
        )
    return meta, config_from_run(meta, run_dir), rundir.n_concepts(meta, run_dir), rundir.read_items(run_dir)


def fill_run(
    run_dir: str | Path,
    opts: FillConfig,
    pool_opts: PoolConfig,
    out: str | Path | None = None,
    *,
    backend: ResidualReader | None = None,
    sae: SAEEncoder | None = None,
) -> dict[str, Any]:
    """Select pool items that cover what ``opts.benchmark`` misses; write them (module docstring).

    ``backend`` and ``sae`` are the run's reader model and SAE when the caller has them loaded
    (else they load when an extraction first needs them). Returns the summary written to ``fill.json``.
    Holds the output folder's writer lock."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else default_out(run_dir, opts.benchmark)
    if pool_opts.pool is None and pool_opts.generator is None:
        raise CGapsError("fill needs items to choose from: give --pool (and/or --generator)")
    meta, cfg, width, items = _read_run(run_dir)  # before the output folder exists
    names = list(dict.fromkeys(items["benchmark"]))
    if opts.benchmark not in names:
        raise CGapsError(
            f"--benchmark {opts.benchmark!r} is not a benchmark of {run_dir}.{did_you_mean(opts.benchmark, names)} "
            f"Its benchmarks: {', '.join(names)}"
        )
    out.mkdir(parents=True, exist_ok=True)
    with rundir.writing(out):
        return _fill(run_dir, out, meta, cfg, width, items, opts, pool_opts, Reader(cfg, backend, sae))


def _fill(
    run_dir: Path,
    out: Path,
    meta: dict[str, Any],
    cfg: RunConfig,
    width: int,
    items: pd.DataFrame,
    opts: FillConfig,
    pool_opts: PoolConfig,
    reader: Reader,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    want = wanted_signature(run_dir)
    bench_items = items[items["benchmark"] == opts.benchmark].reset_index(drop=True)
    # the whole suite, also with --reference: its max is the concept scale when the SAE ships none
    base = prompt_coverage(items, out / "base", reader, want=want, source=run_dir, what="run")
    budget = opts.budget or max(1, math.ceil(BUDGET_SHARE * len(bench_items)))

    ref: Covered | None = None
    if opts.reference is not None:
        ref_dir = Path(opts.reference)
        ref_meta, _, ref_width, ref_items = _read_run(ref_dir)
        if ref_width != width or ref_meta["sae"].get("fingerprint") != meta["sae"].get("fingerprint"):
            raise CGapsError(
                f"--reference {ref_dir}: extracted with another SAE ({ref_meta['sae'].get('id')}, "
                f"{ref_width} concepts) than {run_dir} ({meta['sae'].get('id')}, {width}); give a run of the same SAE"
            )
        ref = prompt_coverage(
            ref_items, out / "reference", reader, want=want, source=ref_dir, what="reference"
        )

    pool = Covered(
        pd.DataFrame(columns=["item_id", "benchmark", "prompt", "reference"]), empty_saliency(), out
    )
    excluded = 0
    pool_source = None
    if pool_opts.pool is not None:
        pool_items, pool_src = load_pool(
            pool_opts.pool, data_dir=pool_opts.data_dir, limit=pool_opts.pool_limit, seed=opts.seed
        )
        pool_items, excluded = exclude_known(pool_items, bench_items)
        if not len(pool_items):
            raise CGapsError(
                f"--pool {pool_opts.pool}: every item of the pool is an item of {opts.benchmark}"
            )
        pool = prompt_coverage(pool_items, out / "pool", reader, want=want, source=pool_src, what="pool")
        # the benchmark's items and the chosen ones share the verify run directory: one id each
        renamed = distinct_ids(pool.items, bench_items)
        new_id = dict(zip(pool.items["item_id"], renamed["item_id"], strict=True))
        pool = Covered(
            renamed, pool.saliency.assign(item_id=pool.saliency["item_id"].map(new_id)), pool.where
        )
        pool_source = pool_opts.pool

    scale, scale_source = fixed_scale(
        meta, cfg, width, base.saliency, *([pool.saliency] if len(pool.items) else [])
    )
    bench_sal = base.saliency[base.saliency["item_id"].isin(set(bench_items["item_id"]))]
    cov = core.coverage(bench_items, bench_sal, width, cfg, scale)
    # which concepts count: a reference run, else the run's suite; a run of this one benchmark
    # says nothing about what it misses, so then the pool does (what it could cover)
    if ref is not None:
        reference, ref_name = ref, str(opts.reference)
    elif items["benchmark"].nunique() > 1:
        reference, ref_name = base, "the run's suite"
    elif len(pool.items):
        reference, ref_name = pool, "the pool (the run holds no other benchmark)"
        info(f"{opts.benchmark} is the run's only benchmark: its missing concepts are those the pool covers")
    else:
        raise CGapsError(
            f"{opts.benchmark} is the only benchmark of {run_dir}: give --pool or --reference RUN, which say "
            "what it misses"
        )
    ref_shat = presence_matrix(reference.items, reference.saliency, width, cfg.presence, scale)
    ref_support = np.asarray((ref_shat > 0).sum(axis=0)).ravel()
    ref_present = ref_support > 0
    tg = core.targets(cov, ref_present, budget, cfg.under_pct)
    labels = concept_labels(run_dir)

    generated: dict[str, Any] | None = None
    if pool_opts.generator is not None:
        from cgaps.pools.generated import generate_pool

        by_reach = tg.missing[np.argsort(-ref_support[tg.missing], kind="stable")]  # commonest first
        gen, generated = generate_pool(
            run_dir, by_reach, pool_opts, out / "generated", reader, cfg, scale, labels, seed=opts.seed
        )
        gen_items = distinct_ids(exclude_known(gen.items, bench_items)[0], bench_items)
        pool = Covered(
            pd.concat([pool.items, gen_items], ignore_index=True),
            pd.concat([pool.saliency, gen.saliency], ignore_index=True),
            out,
        )
    if not len(pool.items):
        raise CGapsError("no pool items to choose from: the generator kept no draft; give --pool as well")

    pool_shat = presence_matrix(pool.items, pool.saliency, width, cfg.presence, scale)
    info(
        f"{opts.benchmark}: {len(tg.missing)} missing and {len(tg.under)} under-represented concepts to cover "
        f"from {len(pool.items)} pool items ({excluded} left out as items of the benchmark)"
    )
    with progress_bar(f"selecting {budget} items", budget) as advance:
        sel = core.select(
            pool_shat[:, tg.missing],
            pool_shat[:, tg.under],
            tg.deficit,
            budget,
            w_missing=opts.missing_weight,
            w_under=opts.under_weight,
            progress=advance,
        )
    if len(sel.rows) < budget:
        info(f"[yellow]only {len(sel.rows)} pool items add coverage; the selection stops there")
    elif sel.swaps or not sel.converged:
        info(
            f"{sel.swaps} exchange(s) of a greedy pick for another pool item raised the objective"
            + ("" if sel.converged else "; the search for more stopped at its work limit")
        )
    arms: dict[str, list[int]] = {
        "fill": sel.rows,
        "random": core.random_selection(len(pool.items), budget, opts.seed),
    }
    group_col = core.group_column(pool.items)
    if group_col is not None:
        arms["group"] = core.group_selection(pool.items[group_col], budget, opts.seed)

    summary: dict[str, Any] = {
        "run": str(run_dir),
        "benchmark": opts.benchmark,
        "pool": pool_source,
        "pool_items": len(pool.items),
        "pool_excluded": excluded,
        "generated": generated,
        "reference": ref_name,
        "budget": budget,
        "selected": len(sel.rows),
        "benchmark_items": len(bench_items),
        "n_concepts": width,
        "presence": cfg.presence,
        "under_pct": cfg.under_pct,
        "concept_scale": scale_source,
        "coverage_span": "prompt",
        "under_threshold": tg.theta,
        "targets": {"missing": len(tg.missing), "under": len(tg.under)},
        "objective": {
            "missing_weight": opts.missing_weight,
            "under_weight": opts.under_weight,
            "value": float(sum(sel.gains)),
            "swaps": sel.swaps,
            "swaps_converged": sel.converged,
        },
        "seed": opts.seed,
        "group_column": group_col,
        "before": core.shares(cov.support, cov.chi_bench, tg.theta),
        "arms": {},
    }
    for arm, rows in arms.items():
        _, _, pred = core.predicted(cov, pool_shat, rows, tg.theta)
        summary["arms"][arm] = {
            "items": [str(pool.items["item_id"].iloc[r]) for r in rows],
            "predicted": pred,
        }
    coverage_table = _coverage_table(cov, tg, pool, pool_shat, sel, labels)
    _write_selection(out, opts.benchmark, pool.items, sel, tg, labels)
    rundir.write_table(coverage_table, out / COVERAGE)
    summary["timings"] = {"select_s": round(time.perf_counter() - t0, 2)}
    rundir.write_json(summary, out / FILL_JSON)
    if opts.verify:
        summary = verify(out, summary, bench_items, pool, reader, want, cfg, width, scale, tg, coverage_table)
    return summary


def _coverage_table(
    cov: core.Coverage,
    tg: core.Targets,
    pool: Covered,
    pool_shat: Any,
    sel: core.Selection,
    labels: dict[int, str],
) -> pd.DataFrame:
    """One row per target concept: its coverage before and as predicted after the selection."""
    concepts = np.concatenate([tg.missing, tg.under]).astype(np.int32)
    kind = ["missing"] * len(tg.missing) + ["under"] * len(tg.under)
    support, chi, _ = core.predicted(cov, pool_shat, sel.rows, tg.theta)
    first = {}
    for row, new in zip(sel.rows, sel.covers, strict=True):
        for pos in new:
            first[int(tg.missing[pos])] = str(pool.items["item_id"].iloc[row])
    for row, filled in zip(sel.rows, sel.fills, strict=True):
        for pos in filled:
            first.setdefault(int(tg.under[pos]), str(pool.items["item_id"].iloc[row]))
    deficit = np.concatenate([np.full(len(tg.missing), np.nan), tg.deficit])
    after = chi[concepts]
    covered = np.where(
        np.arange(len(concepts)) < len(tg.missing),
        support[concepts] > 0,
        np.round(after, core.ROUND) >= tg.theta,
    )
    return pd.DataFrame(
        {
            "concept": concepts,
            "label": [labels.get(int(c), "") for c in concepts],
            "target": kind,
            "support": cov.support[concepts].astype(np.int64),
            "chi_bench": cov.chi_bench[concepts],
            "deficit": deficit,
            "added_support": (support[concepts] - cov.support[concepts]).astype(np.int64),
            "chi_bench_after": after,
            "covered": covered.astype(bool),
            "first_item": [first.get(int(c), "") for c in concepts],
            "support_measured": pd.array([None] * len(concepts), dtype="Int64"),
            "chi_bench_measured": np.full(len(concepts), np.nan),
            "covered_measured": pd.array([None] * len(concepts), dtype="boolean"),
        },
        columns=list(COVERAGE_COLUMNS),
    )


def _loads(value: Any) -> Any:
    if isinstance(value, str) and value.strip():
        return json.loads(value)
    return None


def _write_selection(
    out: Path,
    benchmark: str,
    pool_items: pd.DataFrame,
    sel: core.Selection,
    tg: core.Targets,
    labels: dict[int, str],
) -> None:
    """``selection.jsonl`` (the items with their evidence) and ``selection.yaml`` (the spec reading it)."""
    lines = []
    for rank, (row, gain, new, filled) in enumerate(
        zip(sel.rows, sel.gains, sel.covers, sel.fills, strict=True)
    ):
        item = pool_items.iloc[row]
        covers = [
            {"concept": int(tg.missing[p]), "label": labels.get(int(tg.missing[p]), ""), "target": "missing"}
            for p in new
        ]
        covers += [
            {"concept": int(tg.under[p]), "label": labels.get(int(tg.under[p]), ""), "target": "under"}
            for p in filled
        ]
        meta = _loads(item.get("meta")) or {}
        meta["fill"] = {
            "from_benchmark": str(item["benchmark"]),
            "from_item": str(item["item_id"]),
            "rank": rank,
        }
        lines.append(
            json.dumps(
                {
                    "id": str(item["item_id"]),
                    "prompt": str(item["prompt"]),
                    "reference": str(item["reference"]),
                    "answer_type": str(item.get("answer_type") or "short"),
                    "choices": _loads(item.get("choices")),
                    "category": str(item.get("category") or ""),
                    "meta": meta,
                    "messages": _loads(item.get("messages")),
                    "rank": rank,
                    "gain": gain,
                    "covers": covers,
                },
                ensure_ascii=False,
            )
        )
    rundir.write_text("".join(line + "\n" for line in lines), out / SELECTION)
    spec = {
        "name": f"{benchmark}_fill",
        "path": SELECTION,
        "answer_type": "short",  # each row names its own (fields.answer_type)
        "prompt_template": "{prompt}",  # the pool item's prompt, verbatim
        "fields": {
            "question": "prompt",
            "answer": "reference",
            "answer_type": "answer_type",
            "choices": "choices",
            "category": "category",
            "meta": "meta",
            "messages": "messages",
            "id": "id",
        },
    }
    header = (
        f"# {len(lines)} items chosen by `cgaps fill` to cover what {benchmark} misses "
        f"({len(tg.missing)} missing, {len(tg.under)} under-represented concepts targeted).\n"
        "# Load with: cgaps items selection.yaml --out RUN_DIR\n"
    )
    rundir.write_text(
        header + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), out / SELECTION_SPEC
    )


def verify(
    out: Path,
    summary: dict[str, Any],
    bench_items: pd.DataFrame,
    pool: Covered,
    reader: Reader,
    want: dict[str, Any] | None,
    cfg: RunConfig,
    width: int,
    scale: np.ndarray,
    tg: core.Targets,
    coverage_table: pd.DataFrame,
) -> dict[str, Any]:
    """Extract the benchmark and every arm's items again (one run directory, ``verify/``), score
    each augmented benchmark on the fixed scale, and record the measured shares."""
    t0 = time.perf_counter()
    by_id = pool.items.set_index("item_id", drop=False)
    chosen = list(dict.fromkeys(i for arm in summary["arms"].values() for i in arm["items"]))
    v_items = pd.concat([bench_items, by_id.loc[chosen].reset_index(drop=True)], ignore_index=True)
    v = prompt_coverage(v_items, out / "verify", reader, want=want, source=None, what="verify")
    sal = v.saliency

    def measure(ids: list[str]) -> core.Coverage:
        frame = pd.concat([bench_items, by_id.loc[ids].reset_index(drop=True)], ignore_index=True)
        return core.coverage(frame, sal[sal["item_id"].isin(set(frame["item_id"]))], width, cfg, scale)

    before = measure([])
    measured = {"before": core.shares(before.support, before.chi_bench, tg.theta)}
    fill_cov = before
    for arm, rec in summary["arms"].items():
        c = measure(rec["items"])
        rec["measured"] = core.shares(c.support, c.chi_bench, tg.theta)
        rec["measured"]["missing_reduction"] = measured["before"]["missing"] - rec["measured"]["missing"]
        rec["measured"]["under_reduction"] = measured["before"]["under"] - rec["measured"]["under"]
        if arm == "fill":
            fill_cov = c
    rand = summary["arms"]["random"]["measured"]["missing_reduction"]
    fill = summary["arms"]["fill"]["measured"]["missing_reduction"]
    summary["verify"] = {
        **measured,
        "fill_vs_random": fill / rand if rand > 0 else None,
        "extract_s": round(time.perf_counter() - t0, 2),
    }
    concepts = coverage_table["concept"].to_numpy()
    coverage_table["support_measured"] = pd.array(fill_cov.support[concepts], dtype="Int64")
    coverage_table["chi_bench_measured"] = fill_cov.chi_bench[concepts]
    is_missing = (coverage_table["target"] == "missing").to_numpy()
    covered = np.where(
        is_missing,
        fill_cov.support[concepts] > 0,
        np.round(fill_cov.chi_bench[concepts], core.ROUND) >= tg.theta,
    )
    coverage_table["covered_measured"] = pd.array(covered, dtype="boolean")
    rundir.write_table(coverage_table, out / COVERAGE)
    rundir.write_json(summary, out / FILL_JSON)
    return summary
