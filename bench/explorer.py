"""Measure the explorer (``cgaps serve``) at the paper's scale, in real headless Chromium.

    .venv/bin/python bench/explorer.py [--out /tmp/explorer_bench] [--concepts 65536]
        [--benchmarks 10] [--items 100000] [--per-item 64] [--repeats 5] [--load] [--threads N]
        [--floor] [--baseline REF]

A benchmark script, not a timed test. It writes a synthetic run directory once (reused
when its ``run.json`` says the same sizes), starts ``cgaps serve`` on it in a child process
on 127.0.0.1, drives Chromium (``/usr/bin/chromium``) with Playwright and measures, each as
the median of ``--repeats`` tries:

- ``first_render_ms``: from navigation start to the first page of the concept list on screen
  (the app's own ``performance.mark``, set after the rows are in the DOM);
- ``search_ms``: from typing a query into the search box (once the page has settled: no request
  for 500 ms) to the filtered rows on screen;
- ``detail_ms``: from clicking a concept to its detail view (bars, contexts, examples,
  nearest concepts) on screen;
- ``server_gb``: the server process's peak resident memory (``VmHWM``) after all of the above.

``--load`` measures with other work on the machine: a second process spins on one core (a
busy Python loop, not niced) from before the server starts until the measurements end.

``--floor`` then measures the same interactions again against a server whose concept list
answers from memory: the same app and HTTP stack, with every list request the page will make
computed once beforehand. Its ``search_ms`` is what the page, Chromium and the HTTP round trip
cost on their own under the same load (``search_floor_ms``): the part of the search no work on
the server's query can take away.

``--baseline REF`` then measures the search **paired**: this checkout's server and one running
the ``src/`` of ``REF`` (a commit, branch or tag) are up at once, and each repeat types the same
word into a fresh context of each, in alternating order, in one Chromium. Run to run, the
machine's other jobs move the search's time by tens of ms; paired, they slow both alike.
Printed: both medians, the median of the paired differences and how many pairs this checkout
won (``baseline_search_ms``, ``paired_diff_ms``, ``pairs_faster`` in the last line).

The synthetic run is sparse and made in seconds: every item fires on ``--per-item`` concepts
(half drawn from a suite-wide Zipf-like popularity, half from its benchmark's own), saliency is
the long table of docs/method.md §6 (item × firing concept), 50 planted concepts (each firing on 0.1-1%
of the items) lower the score of the items they fire on, and ``concepts.parquet`` / ``overlap.parquet`` come from the
real scoring stage (``cgaps.scoring.stage.score_run``). Contexts and labels are made from a
small vocabulary. The last line printed is

    first_render_ms=A search_ms=B detail_ms=C server_gb=D [search_floor_ms=E with --floor]
    [baseline_search_ms=F paired_diff_ms=G pairs_faster=H with --baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _common
import numpy as np
import pandas as pd

BENCHMARKS = ["gsm8k", "math", "agieval", "logicbench", "siqa", "winogrande", "bbq", "crows", "vectara", "nq"]
GENERATOR = 2  # bump when the synthetic run changes: a kept run of another version is remade
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

    sizes = {
        "generator": GENERATOR,
        "n_concepts": n_concepts,
        "n_benchmarks": n_benchmarks,
        "n_items": n_items,
        "per_item": per_item,
    }
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


def _peak_rss_gb(pid: int) -> float:
    """The peak resident memory of a process (VmHWM), in GB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def _start_server(
    run: Path, threads: int | None = None, src: Path | None = None
) -> tuple[subprocess.Popen[str], str, float]:
    """``cgaps serve`` on ``run`` in a child process (the code of ``src`` where given)."""
    t0 = time.perf_counter()
    extra = [] if threads is None else ["--threads", str(threads)]
    env = {**os.environ, "CGAPS_NO_PROGRESS": "1"}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cgaps", "serve", str(run), "--port", "0", *extra],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()  # printed once the tables are loaded and the port is bound
    if not url.startswith("http://"):
        proc.kill()
        raise SystemExit(f"cgaps serve did not start (got {url!r})")
    return proc, url, time.perf_counter() - t0


def _serve_from_memory(run: Path) -> None:
    """``--floor``'s server (run in a child process): ``cgaps serve``'s app on 127.0.0.1, with the
    store's concept list memoised. The parent fills the memo by requesting each page beforehand."""
    import socket

    import uvicorn

    from cgaps.serve.app import create_app
    from cgaps.serve.store import Store

    memo: dict[str, dict] = {}
    compute = Store.concepts

    def remembered(self: Store, run_: object, **kw: object) -> dict:
        key = repr(sorted(kw.items()))
        if key not in memo:
            memo[key] = compute(self, run_, **kw)
        return memo[key]

    Store.concepts = remembered  # type: ignore[method-assign]
    app = create_app(Store([run]))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(f"http://127.0.0.1:{sock.getsockname()[1]}/", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])


def _start_memory_server(run: Path, repeats: int) -> tuple[subprocess.Popen[str], str]:
    import urllib.request

    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-from-memory", str(run)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    # the list requests measure() will make, in the page's own words (app.js: sort, order, page, per_page)
    words = [""] + [VOCAB[(3 * k + 1) % len(VOCAB)] for k in range(repeats)]
    for w in words:
        q = f"q={w}&" if w else ""
        for _ in range(100):
            try:
                urllib.request.urlopen(
                    f"{url}api/concepts?{q}sort=q_value&order=asc&page=1&per_page=25"
                ).read()
                break
            except OSError:
                time.sleep(0.1)
    return proc, url


def _paired_figures(this: list[float], baseline: list[float]) -> str:
    """The paired search's figures for the last line: the baseline's median, the median of the
    differences (this - baseline) and the pairs this checkout was faster in."""
    diff = [a - b for a, b in zip(this, baseline, strict=True)]
    return (
        f" baseline_search_ms={statistics.median(baseline):.0f} paired_diff_ms={statistics.median(diff):.0f}"
        f" pairs_faster={sum(d < 0 for d in diff)}/{len(diff)}"
    )


def _spin() -> subprocess.Popen[bytes]:
    """A process that keeps one core busy until it is killed (``--load``)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


TYPE = """w => { const s = document.getElementById('search'); const t = performance.now();
    s.value = w; s.dispatchEvent(new Event('input', {bubbles: true})); return t; }"""


def measure_paired(urls: dict[str, str], repeats: int, chromium: str) -> dict[str, list[float]]:
    """Search times (ms) against each server in ``urls``: every repeat types the same word into
    a fresh context of each, in alternating order (A B, B A, ...), in one Chromium."""
    from playwright.sync_api import sync_playwright

    out: dict[str, list[float]] = {name: [] for name in urls}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        for k in range(repeats):
            word = VOCAB[(3 * k + 1) % len(VOCAB)]
            for name in list(urls) if k % 2 == 0 else list(urls)[::-1]:
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                page.goto(urls[name] + "concepts")
                page.wait_for_function("() => window.__cgaps && window.__cgaps.lists >= 1", timeout=60_000)
                page.wait_for_load_state("networkidle")
                t0 = page.evaluate(TYPE, word)
                page.wait_for_function("() => window.__cgaps.lists >= 2", timeout=60_000)
                out[name].append(page.evaluate("() => window.__cgaps.lastList") - t0)
                context.close()
        browser.close()
    return out


def measure(url: str, repeats: int, chromium: str) -> dict[str, list[float]]:
    """Times (ms) of the three interactions in Chromium, ``repeats`` each, each in a fresh context."""
    from playwright.sync_api import sync_playwright

    out: dict[str, list[float]] = {
        "first_render_ms": [],
        "search_ms": [],
        "search_request_ms": [],
        "detail_ms": [],
    }
    wait = "n => window.__cgaps && window.__cgaps.{} >= n"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        for k in range(repeats):
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.goto(url + "concepts")
            page.wait_for_function(wait.format("lists"), arg=1, timeout=60_000)
            out["first_render_ms"].append(
                page.evaluate("() => performance.getEntriesByName('cgaps:list')[0].startTime")
            )
            # a settled page before typing (no request for 500 ms: the icon a fresh context fetches
            # after the first paint included), so the search is timed alone, as a reader types it
            page.wait_for_load_state("networkidle")
            word = VOCAB[(3 * k + 1) % len(VOCAB)]
            t0 = page.evaluate(TYPE, word)
            page.wait_for_function(wait.format("lists"), arg=2, timeout=60_000)
            done = page.evaluate("() => window.__cgaps")
            out["search_ms"].append(done["lastList"] - t0)
            # where the time went: the request (server and network), then the page (DOM, layout, paint)
            out["search_request_ms"].append(done["lastFetch"] - t0)
            t0 = page.evaluate(
                """k => { const links = document.querySelectorAll('#concepts tbody tr td:nth-child(2) a');
                const t = performance.now(); links[k % links.length].click(); return t; }""",
                k,
            )
            page.wait_for_function(wait.format("details"), arg=1, timeout=60_000)
            out["detail_ms"].append(page.evaluate("() => window.__cgaps.lastDetail") - t0)
            context.close()
        browser.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out", type=Path, default=Path("/tmp/explorer_bench"), help="where the synthetic run is kept"
    )
    ap.add_argument("--concepts", type=int, default=65536)
    ap.add_argument("--benchmarks", type=int, default=10)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument(
        "--per-item", type=int, default=64, help="firing concepts per item (saliency rows per item)"
    )
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--load", action="store_true", help="a second process spinning on one core meanwhile")
    ap.add_argument("--threads", type=int, help="cgaps serve --threads (default: serve's own)")
    ap.add_argument(
        "--floor",
        action="store_true",
        help="then the same against a server whose concept list answers from memory (search_floor_ms)",
    )
    ap.add_argument(
        "--baseline",
        metavar="REF",
        help="then the search paired against a server running REF's src/ (a commit, branch or tag)",
    )
    ap.add_argument("--serve-from-memory", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_from_memory:
        _serve_from_memory(args.serve_from_memory)
        return
    t0 = time.perf_counter()
    run = make_synthetic_run(
        args.out,
        n_concepts=args.concepts,
        n_benchmarks=args.benchmarks,
        n_items=args.items,
        per_item=args.per_item,
    )
    sal_rows = len(pd.read_parquet(run / "saliency.parquet", columns=["concept"]))
    print(
        f"run {run}: {args.concepts} concepts x {args.benchmarks} benchmarks x {args.items} items, "
        f"{sal_rows} saliency rows (ready in {time.perf_counter() - t0:.0f} s)"
    )
    spinner = _spin() if args.load else None
    try:
        proc, url, start_s = _start_server(run, args.threads)
        try:
            print(f"server {url} up in {start_s:.1f} s")
            times = measure(url, args.repeats, args.chromium)
            gb = _peak_rss_gb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        if args.floor:
            mem, mem_url = _start_memory_server(run, args.repeats)
            try:
                floor = measure(mem_url, args.repeats, args.chromium)
            finally:
                mem.send_signal(signal.SIGTERM)
                mem.wait(timeout=30)
            times["search_floor_ms"] = floor["search_ms"]
            times["search_floor_request_ms"] = floor["search_request_ms"]
        if args.baseline:
            base_src = _common.source_at(args.baseline, args.out.parent / f"{args.out.name}_baseline")
            servers = {
                "this": _start_server(run, args.threads),
                "baseline": _start_server(run, args.threads, base_src),
            }
            try:
                paired = measure_paired({k: v[1] for k, v in servers.items()}, args.repeats, args.chromium)
            finally:
                for proc_, _, _ in servers.values():
                    proc_.send_signal(signal.SIGTERM)
                    proc_.wait(timeout=30)
            times["paired_search_ms"] = paired["this"]
            times["baseline_search_ms"] = paired["baseline"]
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    for name, values in times.items():
        print(
            f"{name}: " + " ".join(f"{v:.0f}" for v in values) + f" (median {statistics.median(values):.0f})"
        )
    print(
        f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        + (" (with a spinning process: --load)" if args.load else "")
    )
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"first_render_ms={med['first_render_ms']:.0f} search_ms={med['search_ms']:.0f} "
        f"detail_ms={med['detail_ms']:.0f} server_gb={gb:.2f}"
        + (f" search_floor_ms={med['search_floor_ms']:.0f}" if args.floor else "")
        + (_paired_figures(times["paired_search_ms"], times["baseline_search_ms"]) if args.baseline else "")
    )


if __name__ == "__main__":
    main()
