"""Measure the explorer (``cgaps serve``) at the paper's scale, in real headless Chromium.

    .venv/bin/python bench/explorer.py [--out /tmp/explorer_bench] [--concepts 65536]
        [--benchmarks 10] [--items 100000] [--per-item 64] [--repeats 5]

A benchmark script, not a timed test. It writes a synthetic run directory once (reused
when its ``run.json`` says the same sizes), starts ``cgaps serve`` on it in a child process
on 127.0.0.1, drives Chromium (``/usr/bin/chromium``) with Playwright and measures, each as
the median of ``--repeats`` tries:

- ``first_render_ms``: from navigation start to the first page of the concept list on screen
  (the app's own ``performance.mark``, set after the rows are in the DOM);
- ``search_ms``: from typing a query into the search box to the filtered rows on screen;
- ``detail_ms``: from clicking a concept to its detail view (bars, contexts, examples,
  nearest concepts) on screen;
- ``server_gb``: the server process's peak resident memory (``VmHWM``) after all of the above.

The synthetic run is sparse and made in seconds: every item fires on ``--per-item`` concepts
(half drawn from a suite-wide Zipf-like popularity, half from its benchmark's own), saliency is
the long table of docs/method.md §6 (item × firing concept), 50 planted concepts (each firing on 0.1-1%
of the items) lower the score of the items they fire on, and ``concepts.parquet`` / ``overlap.parquet`` come from the
real scoring stage (``cgaps.scoring.stage.score_run``). Contexts and labels are made from a
small vocabulary. The last line printed is

    first_render_ms=A search_ms=B detail_ms=C server_gb=D
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

BENCHMARKS = ["gsm8k", "math", "agieval", "logicbench", "siqa", "winogrande", "bbq", "crows", "vectara", "nq"]
PLANTED = 50  # concepts with a planted model gap
VOCAB = [
    "the",
    "number",
    "apple",
    "river",
    "seven",
    "Tuesday",
    "doctor",
    "refuses",
    "because",
    "answer",
    "proof",
    "triangle",
    "justice",
    "friend",
    "angry",
    "train",
    "twelve",
    "paper",
    "mirror",
    "judge",
    "kitchen",
    "winter",
    "sum",
    "prime",
    "ratio",
    "nurse",
    "soldier",
    "election",
    "planet",
    "ocean",
    "bias",
    "unfair",
    "polite",
    "sorry",
    "maybe",
    "never",
    "always",
    "green",
    "capital",
    "Paris",
]


def make_synthetic_run(
    out: Path, *, n_concepts: int, n_benchmarks: int, n_items: int, per_item: int, seed: int = 0
) -> Path:
    """Write a scored synthetic run directory (see the module docstring); return it."""
    from cgaps import rundir
    from cgaps.scoring.stage import score_run

    sizes = {"n_concepts": n_concepts, "n_benchmarks": n_benchmarks, "n_items": n_items, "per_item": per_item}
    marker = out / "bench_sizes.json"
    if marker.exists() and json.loads(marker.read_text()) == sizes and (out / rundir.CONCEPTS).exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = (BENCHMARKS * (n_benchmarks // len(BENCHMARKS) + 1))[:n_benchmarks]
    names = [n if i < len(BENCHMARKS) else f"{n}{i}" for i, n in enumerate(names)]
    bench = np.sort(rng.integers(0, n_benchmarks, n_items))
    pos = np.arange(n_items) - np.searchsorted(bench, bench)
    item_ids = np.array([f"{names[b]}/{p}" for b, p in zip(bench, pos, strict=True)])

    # which concepts fire: half from a suite-wide popularity, half from the benchmark's own
    pop = 1 / np.arange(1, n_concepts + 1) ** 0.9
    pop /= pop.sum()
    half = per_item // 2
    cols = np.empty((n_items, per_item), dtype=np.int64)
    cols[:, :half] = rng.permutation(n_concepts)[rng.choice(n_concepts, size=(n_items, half), p=pop)]
    for b in range(n_benchmarks):
        rows = np.flatnonzero(bench == b)
        own = rng.permutation(n_concepts)
        cols[rows, half:] = own[rng.choice(n_concepts, size=(len(rows), per_item - half), p=pop)]
    key = np.unique((np.arange(n_items)[:, None] * n_concepts + cols).ravel())
    item_idx, concept = key // n_concepts, (key % n_concepts).astype(np.int32)
    value = (rng.gamma(2.0, 1.5, len(key)) + 1e-3).astype(np.float32)

    # planted gaps: concepts firing on 0.1-1% of the items, on which the model is much worse
    fires = np.bincount(concept, minlength=n_concepts)
    middle = np.flatnonzero((fires >= n_items // 1000) & (fires <= n_items // 100))
    planted = rng.choice(middle, min(PLANTED, len(middle)), replace=False)
    hit = np.zeros(n_items, dtype=bool)
    hit[item_idx[np.isin(concept, planted)]] = True
    acc = rng.uniform(0.4, 0.85, n_benchmarks)[bench] - 0.35 * hit
    score = (rng.random(n_items) < acc).astype(np.float64)

    words = np.array(VOCAB)
    text = [" ".join(words[rng.integers(0, len(words), 12)]) for _ in range(min(n_items, 5000))]
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "benchmark": np.array(names)[bench],
            "prompt": [f"Question {i}: {text[i % len(text)]}?" for i in range(n_items)],
            "reference": [f"answer {i % 7}" for i in range(n_items)],
            "response": [f"I think {text[(i * 7) % len(text)]}" for i in range(n_items)],
            "score": score,
        }
    )
    items.to_parquet(out / rundir.ITEMS, index=False)
    sal = pd.DataFrame({"item_id": item_ids[item_idx], "concept": concept, "value": value})
    sal.to_parquet(out / rundir.SALIENCY, index=False)
    (out / rundir.RUN_JSON).write_text(json.dumps({"schema_version": 1, "n_concepts": n_concepts}))

    # top 8 contexts per concept, highest saliency first, and a label from their tokens
    order = np.lexsort((-value, concept))
    c_sorted = concept[order]
    starts = np.searchsorted(c_sorted, c_sorted)
    rank = np.arange(len(order)) - starts
    keep = order[rank < 8]
    tok = words[(concept[keep].astype(np.int64) * 7 + rank[rank < 8]) % len(words)]
    contexts = pd.DataFrame(
        {
            "concept": concept[keep],
            "rank": rank[rank < 8].astype(np.int32),
            "item_id": item_ids[item_idx[keep]],
            "value": value[keep],
            "left": "the question before ",
            "token": tok,
            "right": " and the rest of it",
        }
    )
    contexts.to_parquet(out / rundir.CONTEXTS, index=False)
    firing = np.unique(concept)
    labels = pd.DataFrame(
        {
            "concept": firing,
            "label": [f"{words[c % len(words)]} · {words[(c * 7) % len(words)]}" for c in firing],
            "source": "synthetic",
        }
    )
    labels.to_parquet(out / rundir.LABELS, index=False)
    score_run(out)
    marker.write_text(json.dumps(sizes))
    return out
