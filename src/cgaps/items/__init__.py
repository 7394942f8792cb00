"""Benchmarks: from a suite name to an items table (docs/method.md §1).

``load_suite`` resolves a suite argument in this order: a spec file (``*.yaml``,
``*.yml``, ``*.json``: :mod:`cgaps.items.custom`), a suite name from :data:`SUITES`,
or comma-separated benchmark names from :data:`BENCHMARKS`. Each benchmark is loaded
whole in source order, item ids are assigned from the source position, and only then is
``limit`` applied (a seeded sample, sorted back into source order), so an item keeps its
id whatever the limit.

Modules: :mod:`~cgaps.items.paper` (the ten paper benchmarks, local files or hub),
:mod:`~cgaps.items.probes` (the generated probe suite), :mod:`~cgaps.items.custom`
(spec files), :mod:`~cgaps.items.prompts` (prompt formats), and
:mod:`~cgaps.items.sources` (file and hub readers that remember file and line).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

from cgaps.errors import CGapsError, unknown_choice

PAPER10 = (
    "gsm8k",
    "math",
    "agieval",
    "logicbench",
    "socialiqa",
    "winogrande",
    "bbq",
    "crows_pairs",
    "vectara",
    "nq_open",
)
BENCHMARKS = (*PAPER10, "probes")
SUITES: dict[str, tuple[str, ...]] = {
    "probes": ("probes",),
    "paper10": PAPER10,
}
COLUMNS = (
    "item_id",
    "benchmark",
    "prompt",
    "reference",
    "answer_type",
    "choices",
    "category",
    "meta",
    "messages",
)


def resolve_suite(suite: str) -> list[str]:
    """Benchmark names of a suite argument (not for spec files)."""
    if suite in SUITES:
        return list(SUITES[suite])
    names = [n.strip() for n in suite.split(",") if n.strip()]
    if not names:
        raise CGapsError("empty suite; give a suite name (probes, paper10), benchmark names or a spec file")
    for name in names:
        if name not in BENCHMARKS:
            raise unknown_choice("benchmark or suite", name, [*SUITES, *BENCHMARKS])
    return list(dict.fromkeys(names))


def _sample(items: list[dict[str, Any]], limit: int | None, seed: int, name: str) -> list[dict[str, Any]]:
    if limit is None or limit >= len(items):
        return items
    import numpy as np

    # The benchmark name is in the seed so two benchmarks of the same size get different positions.
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    keep = np.sort(rng.choice(len(items), size=limit, replace=False))
    return [items[i] for i in keep]


def load_benchmark(
    name: str, data_dir: str | Path | None = None, seed: int = 0, chain_of_thought: bool = False
) -> list[dict[str, Any]]:
    """All items of one benchmark (with item ids), before any limit."""
    if name == "probes":
        from cgaps.items.probes import load_probes

        return load_probes(seed=seed)
    if name not in BENCHMARKS:
        raise unknown_choice("benchmark", name, BENCHMARKS)
    from cgaps.items.paper import load_paper

    items = load_paper(name, data_dir, chain_of_thought)
    return [{**item, "item_id": f"{name}/{i:05d}"} for i, item in enumerate(items)]


def _to_frame(per_bench: dict[str, list[dict[str, Any]]]) -> Any:
    import pandas as pd

    rows = []
    for bench, items in per_bench.items():
        for item in items:
            # stripped like the prompt's option lines, so log-likelihood ranks the text shown
            choices = [str(c).strip() for c in item["choices"]] if item.get("choices") else None
            messages = item.get("messages")
            rows.append(
                {
                    "item_id": item["item_id"],
                    "benchmark": bench,
                    "prompt": item["prompt"],
                    "reference": str(item["reference"]),
                    "answer_type": item.get("answer_type", "short"),
                    "choices": json.dumps(choices, ensure_ascii=False) if choices else None,
                    "category": str(item.get("category") or ""),
                    "meta": json.dumps(item.get("meta") or {}, ensure_ascii=False, default=str),
                    "messages": json.dumps(messages, ensure_ascii=False) if messages else None,
                }
            )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def load_suite(
    suite: str,
    data_dir: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    chain_of_thought: bool = False,
) -> Any:
    """The items table of a suite (a pandas DataFrame that passes ``rundir.validate_items``).

    ``data_dir`` holds one folder per paper benchmark in its original layout; without it
    the paper benchmarks are read from the Hugging Face hub. ``seed`` drives the ``limit``
    sample and the probe generator; ``chain_of_thought`` changes the GSM8K/MATH prompts.
    """
    from cgaps.rundir import ALL_SCOPE, validate_items

    if limit is not None and limit < 1:
        raise CGapsError(f"limit must be >= 1, got {limit}")
    from cgaps.items.custom import is_spec, load_custom

    per_bench: dict[str, list[dict[str, Any]]] = {}
    if is_spec(suite):
        name, items = load_custom(suite, chain_of_thought)
        if name in BENCHMARKS or name == ALL_SCOPE:
            raise CGapsError(
                f"{suite}: benchmark name {name!r} is taken by a built-in benchmark; set 'name:' in the spec"
            )
        per_bench[name] = _sample(items, limit, seed, name)
    else:
        for name in resolve_suite(suite):
            per_bench[name] = _sample(
                load_benchmark(name, data_dir, seed, chain_of_thought), limit, seed, name
            )
    return validate_items(_to_frame(per_bench), f"suite {suite!r}")
