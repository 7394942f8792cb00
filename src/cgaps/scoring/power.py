"""What a run could have found: the smallest detectable effect by support (docs/method.md §3,
"What the data could have found"), and the sentences the report and ``cgaps status`` show.

For a scope S with mean score ȳ and null variance v per item (the mean over its items of their
group's score variance, ``adjust_by``), a concept that fires with equal saliency on n items
has z = (χ_model − e) · √n / √v under the score test. It is called if its two-sided p-value is
at most the bar fdr · max(R, 1) / M, M the hypotheses of that scope that Tarone's rule keeps and
R the calls (concepts and themes) the run made there: the bar Benjamini–Hochberg reached, so a
concept with that p-value ranks among the discoveries. With R = 0 it is the bar of a lone call;
with many calls, the lone-call bar would say that a concept on 30 items can never be called in
a run that calls dozens like it. Hence the smallest drop that is called:

- normal approximation (expected minority count n · min(ȳ, 1 − ȳ) ≥ ``mc_below``):
  δ = Φ⁻¹(1 − bar / 2) · √(v / n);
- below it (the Monte Carlo test, 0/1 scores): the accuracy k / n of the largest k with
  2 · max(P(Binomial(n, ȳ) ≤ k), 1 / (D + 1)) ≤ bar (D the Monte Carlo draws), δ = ȳ − k / n (the binomial tail is what
  redrawing n scores from a pool of mean ȳ gives);
- none when even accuracy 0 is not enough (δ would exceed ȳ). Rises (strengths) likewise.

The effect is the *observed* one: a concept whose true drop equals δ is called about half the
time. :func:`items_needed` inverts the formula: the items per benchmark at which a topic
holding a given share of a benchmark's items, with a given drop, reaches the bar.

Everything here is a pure function of the numbers in ``run.json`` ``power`` (written by
``cgaps score``), so the report and ``cgaps status`` print the same sentences.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

SUPPORTS = (5, 10, 20, 30, 50, 100, 200, 500, 1000, 5000)
TOPIC_SHARE = 0.1  # the topic of the "what would be needed" sentence: a tenth of a benchmark
TOPIC_DROP = 0.2  # ... 20 points below expected


def _binary(scores: np.ndarray) -> bool:
    return bool(np.isin(scores, (0.0, 1.0)).all())


def detectable(
    n: int, mean: float, var: float, bar: float, *, mc_below: float, floor: float, binary: bool
) -> tuple[float | None, float | None]:
    """(drop, rise): the smallest observed accuracy change below / above expected at which a
    concept on ``n`` equally weighted items is called (module docstring); None: not reachable."""
    if var <= 0 or bar <= 0 or n < 1:
        return None, None
    if n * min(mean, 1 - mean) >= mc_below or not binary:
        d = float(stats.norm.isf(bar / 2) * math.sqrt(var / n))
        return (d if d <= mean else None), (d if d <= 1 - mean else None)
    if 2 * floor > bar:
        return None, None
    ks = np.arange(n + 1)
    low = 2 * np.maximum(stats.binom.cdf(ks, n, mean), floor) <= bar  # k correct or fewer
    high = 2 * np.maximum(stats.binom.sf(ks - 1, n, mean), floor) <= bar  # k correct or more
    drop = mean - ks[low].max() / n if low.any() else None
    rise = ks[high].min() / n - mean if high.any() else None
    return (None if drop is None or drop <= 0 else float(drop)), (
        None if rise is None or rise <= 0 else float(rise)
    )


def scope_power(
    scores: np.ndarray, null_var: np.ndarray, hypotheses: int, cfg: Any, resamples: int, calls: int = 0
) -> dict[str, Any]:
    """The ``power`` entry of one scope: its items' ``scores`` and per-item null variances
    (their group's score variance), the number of hypotheses Tarone's rule kept and the calls
    (gaps and strengths, concepts and themes) the run made there."""
    n_items = len(scores)
    mean = float(np.mean(scores)) if n_items else float("nan")
    var = float(np.mean(null_var)) if n_items else float("nan")
    bar = min(1.0, cfg.fdr * max(calls, 1) / max(hypotheses, 1))
    rows = []
    for n in SUPPORTS:
        if n > n_items:
            break
        drop, rise = detectable(
            n, mean, var, bar, mc_below=cfg.mc_below, floor=1.0 / (1 + resamples), binary=_binary(scores)
        )
        rows.append({"support": n, "drop": drop, "rise": rise})
    return {
        "items": n_items,
        "mean": mean,
        "variance": var,
        "hypotheses": int(hypotheses),
        "calls": int(calls),
        "bar": bar,
        "detectable": rows,
    }


def items_needed(drop: float, share: float, var: float, bar: float) -> int | None:
    """Items per benchmark at which a topic holding ``share`` of them with an observed ``drop``
    is called (normal approximation, the bar unchanged); None when there is no variance."""
    if var <= 0 or drop <= 0 or share <= 0:
        return None
    n_topic = var * (stats.norm.isf(bar / 2) / drop) ** 2
    return int(math.ceil(n_topic / share))


def run_power(m: Any, cfg: Any, concepts: Any, theme_tests: Any = None) -> dict[str, Any]:
    """``run.json`` ``power``: :func:`scope_power` for every scope of a scored suite matrix ``m``
    (:class:`cgaps.scoring.core.SuiteMatrix`), with the hypotheses its calls kept (the q-values
    that are not NaN in ``concepts`` and ``theme_tests``)."""
    from cgaps.rundir import ALL_SCOPE
    from cgaps.scoring.core import benchmark_moments, mc_resamples

    _, var_g = benchmark_moments(m)
    item_var = var_g[m.adjust]
    tables = [concepts] + ([theme_tests] if theme_tests is not None else [])
    kept: dict[str, int] = {}
    tested: dict[str, int] = {}
    for table in tables:
        for scope, q in table.groupby("scope", sort=False)["q_value"]:
            kept[scope] = kept.get(scope, 0) + int(q.notna().sum())
        for scope, sup in table.groupby("scope", sort=False)["support"]:
            tested[scope] = tested.get(scope, 0) + int((sup >= cfg.min_support).sum())
    called = scope_calls(*tables)
    scopes = {}
    for k, name in enumerate([*m.benchmarks, ALL_SCOPE]):
        rows = np.ones(len(m.scores), dtype=bool) if name == ALL_SCOPE else m.bench == k
        scopes[name] = scope_power(
            m.scores[rows],
            item_var[rows],
            kept.get(name, 0),
            cfg,
            mc_resamples(cfg, tested.get(name, 0)),
            called.get(name, 0),
        )
    per_bench = np.bincount(m.bench, minlength=len(m.benchmarks))
    return {
        "fdr": cfg.fdr,
        "items_per_benchmark": int(np.median(per_bench)) if len(per_bench) else 0,
        "scopes": scopes,
    }


# ---------------------------------------------------------------- sentences


def _points(x: float) -> str:
    return f"{round(100 * x)} points"


def calls_words(calls: int) -> str:
    return "" if calls <= 1 else f", {calls} calls"


def detectable_sentence(scope: dict[str, Any], support: int | None = None) -> str:
    """What a concept on ``support`` items (default 30, else the largest tabulated support below
    it) must show to be called, gaps first (a gap is *below* expected), e.g. "With these items, a
    concept firing on 30 items is called a gap when its accuracy is 25 points below expected (a
    strength when 21 points above)." When no drop on that many items can pass the bar, the
    sentence says so and names the smallest support at which one can."""
    rows = scope.get("detectable") or []
    if not rows:
        return "These items are too few for any concept to be tested."
    want = 30 if support is None else support
    r = ([x for x in rows if x["support"] <= want] or rows[:1])[-1]
    n = r["support"]
    head = f"With these items, a concept firing on {n} items"
    if r["drop"] is not None:
        text = f"{head} is called a gap when its accuracy is {_points(r['drop'])} below expected"
        if r["rise"] is not None:
            text += f" (a strength when {_points(r['rise'])} above)"
        return text + "."
    # no drop on n items passes the bar: even none of them right is too likely under the null
    text = (
        f"{head} cannot be called a gap whatever its accuracy: even none of them right, "
        f"{_points(scope['mean'])} below the mean, does not pass this run's bar (p ≤ {scope['bar']:.1e}, "
        f"{scope['hypotheses']} tests{calls_words(scope.get('calls', 0))})"
    )
    larger = [x for x in rows if x["support"] > n and x["drop"] is not None]
    if larger:
        text += (
            f"; one firing on {larger[0]['support']} items is called a gap when its accuracy is "
            f"{_points(larger[0]['drop'])} below expected"
        )
    elif rows[-1]["support"] > n:
        text += f", nor on up to {rows[-1]['support']} items"
    text += "."
    if r["rise"] is not None:
        text += (
            f" A strength on {n} items is called when its accuracy is {_points(r['rise'])} above expected."
        )
    return text


def needed_sentence(
    scope: dict[str, Any], per_benchmark: int, share: float = TOPIC_SHARE, drop: float = TOPIC_DROP
) -> str:
    """What would be needed: "A topic holding 10% of a benchmark's items, 20 points below expected,
    would be called with about 160 items per benchmark (this run has 30)." """
    n = items_needed(drop, share, scope["variance"], scope["bar"])
    topic = f"A topic holding {round(100 * share)}% of a benchmark's items, {_points(drop)} below expected,"
    if n is None:
        return f"{topic} cannot be told apart here: the scores do not vary."
    if scope["mean"] < drop:
        return f"{topic} cannot occur here: the mean accuracy is {round(100 * scope['mean'])}%."
    if n <= per_benchmark:
        return f"{topic} would be called with these {per_benchmark} items per benchmark."
    return f"{topic} would be called with about {n} items per benchmark (this run has {per_benchmark})."


def summary_sentences(power: dict[str, Any], calls: int, scope: str = "ALL") -> list[str]:
    """The lines about power of one scope (default ``ALL``: the report's first screen and
    ``cgaps status``): that nothing was called when ``calls`` (its gaps and strengths, concepts
    and themes) is 0, what a concept on 30 items must show, and, when nothing was called, the
    items per benchmark a topic would need (a benchmark's scope: its own items)."""
    entry = power.get("scopes", {}).get(scope)
    if entry is None:
        return []
    where = "" if scope == "ALL" else f" in {scope}"
    lines = []
    if calls == 0:
        lines.append(f"Nothing was called a gap or a strength{where}.")
    lines.append(detectable_sentence(entry))
    if calls == 0:
        per_benchmark = power.get("items_per_benchmark", entry["items"]) if scope == "ALL" else entry["items"]
        lines.append(needed_sentence(entry, per_benchmark))
    return lines


def scope_calls(*tables: Any) -> dict[str, int]:
    """Gaps and strengths per scope over ``tables`` (``concepts.parquet``, ``theme_tests.parquet``:
    anything with ``scope`` and ``gap`` columns; None is skipped)."""
    out: dict[str, int] = {}
    for table in tables:
        if table is None or not len(table):
            continue
        called = table["gap"].isin(["weak", "strong"])
        for scope, n in called.groupby(table["scope"].astype(str), sort=False).sum().items():
            out[str(scope)] = out.get(str(scope), 0) + int(n)
    return out


def all_sentences(power: dict[str, Any]) -> dict[str, list[str]]:
    """:func:`summary_sentences` of every scope of ``power`` (:func:`run_power`'s, which counts each
    scope's ``calls``), for ``validation.json`` ``power.sentences``."""
    return {
        scope: summary_sentences(power, int(entry.get("calls", 0)), scope)
        for scope, entry in power.get("scopes", {}).items()
    }
