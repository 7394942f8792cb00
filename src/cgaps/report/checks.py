"""The report's "Can these calls be trusted?" section: robustness.json and validation.json as tables.

Both files are optional (``cgaps robustness`` and ``cgaps validate`` write them); the section
shows what is there, in words and tables beside the paper's figures, instead of the raw JSON:

* **validation** (docs/method.md §3, ``cgaps validate``): how many null draws — scores
  independent of every concept, same per-benchmark accuracy — called anything, against the
  promise (at most 1 in 20); the planted-gap recall as a table over support and effect; the
  planted topics (failure on whole groups of a facet); and, on runs with item families (probes,
  categories), the mass-weighted accuracy of the families where the weak / strong concepts fire
  against random concept sets;
* **robustness** (docs/method.md §4, ``cgaps robustness``): subsampling stds and the
  adversarial ablation beside the paper's (Llama) figures, and the SAE swap when the run was
  compared with a second SAE (``--against``).

Every value is escaped here (``Markup.format`` escapes its arguments); the result is a :class:`Markup`
fragment the report template places as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from markupsafe import Markup

from cgaps import rundir

# The paper's robustness figures (Llama-3.1-8B, docs/method.md §4)
PAPER_STD_CHI_MODEL = 0.014
PAPER_STD_CHI_BENCH = 0.025
PAPER_ABLATION_BEST = -0.006
PAPER_ABLATION_WORST = 0.013


def _num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "–" if v != v else f"{v:.{digits}f}"


def _pct(x: Any, digits: int = 1) -> str:
    if x is None:
        return "–"
    v = float(x)
    return "–" if v != v else f"{100 * v:+.{digits}f}%"


def _table(head: list[str], rows: list[list[Any]], cls: str = "") -> Markup:
    out = [Markup('<table class="{}">').format(cls), Markup("<tr>")]
    out += [Markup("<th>{}</th>").format(h) for h in head]
    out.append(Markup("</tr>"))
    for row in rows:
        out.append(
            Markup("<tr>") + Markup("").join(Markup("<td>{}</td>").format(c) for c in row) + Markup("</tr>")
        )
    out.append(Markup("</table>"))
    return Markup("").join(out)


def _p(text: str) -> Markup:
    return Markup("<p>{}</p>").format(text)


def validation_html(v: dict[str, Any]) -> Markup:
    parts: list[Markup] = [Markup("<h3>Are the calls calibrated? (<code>cgaps validate</code>)</h3>")]
    null = v.get("null")
    if null:
        ok = null["share_with_calls"] <= 0.05 + 1e-12
        parts.append(
            _p(
                f"Null draws: in {null['draws']} draws of scores independent of every concept (each "
                f"benchmark's accuracy kept), {null['draws_with_calls']} called any gap or strength "
                f"({'within' if ok else 'OUTSIDE'} the promise: {null['promise']})."
            )
        )
    planted = v.get("planted") or []
    if planted:
        effects = sorted({r["effect"] for r in planted})
        supports = list(dict.fromkeys(r["support"] for r in planted))
        cell = {(r["support"], r["effect"]): r for r in planted}
        rows = []
        for s in supports:
            row: list[Any] = [s]
            for e in effects:
                r = cell.get((s, e))
                row.append(
                    "–" if r is None or r.get("recall") is None else f"{r['recall']:.2f} ({r['planted']})"
                )
            rows.append(row)
        parts.append(
            _p(
                "Power: weak concepts planted into the run's own saliency (their items' scores drawn with "
                "the accuracy dropped by the effect); recall of the calls (planted concepts in brackets)."
            )
        )
        parts.append(_table(["support (items)", *[f"drop {e:g}" for e in effects]], rows))
    topics = v.get("topics") or {}
    if topics.get("sizes"):
        rows = []
        for r in topics["sizes"]:
            n = r.get("n_draws", len(r.get("draws") or []))
            rows.append(
                [
                    r["per_group"],
                    r["groups"],
                    n,
                    f"{_num(r.get('weak_concepts'), 1)} + {_num(r.get('weak_themes'), 1)}",
                    _num(r.get("calls_median"), 1),
                    "–" if r.get("draws_with_5_calls") is None else f"{r['draws_with_5_calls']} of {n}",
                    _num(r.get("top_pointing"), 2),
                ]
            )
        first = topics["sizes"][0]  # the design is the same at every size
        k = first["planted_groups"]
        parts.append(
            _p(
                f"Planted topics: failure planted on {k} whole groups of the items' {topics.get('facet')} "
                f"(accuracy {first['accuracy_planted']:g} against {first['accuracy_other']:g} on the "
                f"others), the groups withheld from scoring. Each draw plants {k} random groups; which "
                "fail decides most of what a draw finds, hence the median beside the mean."
            )
        )
        parts.append(
            _table(
                [
                    "items per group",
                    "groups",
                    "draws",
                    "gap concepts + themes (mean)",
                    "median",
                    "draws with ≥ 5",
                    "top 20 on a planted group",
                ],
                rows,
            )
        )
    fam = v.get("families")
    if fam:
        rows = []
        for side, word in (("weak", "gaps"), ("strong", "strengths")):
            s = fam.get(side) or {}
            lo_hi = s.get("shuffled_95")
            rows.append(
                [
                    f"{word} ({s.get('concepts', 0)} concepts)",
                    _num(s.get("accuracy")),
                    _num(s.get("shuffled_mean")),
                    f"{_num(lo_hi[0])}–{_num(lo_hi[1])}" if lo_hi else "–",
                    _num(s.get("p_shuffled")),
                ]
            )
        parts.append(
            _p(
                "Family alignment: the accuracy of the item families (probe family or category) where the "
                "called concepts put their saliency mass, against random sets of as many tested concepts "
                f"(all tested concepts: {_num(fam.get('all_tested_concepts'))}). Gaps should sit in failing "
                "families (lower), strengths in passing ones (higher)."
            )
        )
        parts.append(_table(["called", "family accuracy", "random sets", "random 95%", "p"], rows))
    return Markup("").join(parts)


def _swap_html(s: dict[str, Any]) -> Markup:
    parts: list[Markup] = [
        _p(
            f"SAE swap: the same items and scores read through {s.get('sae_b')} ({s['width_b']} latents) "
            f"instead of {s.get('sae_a')} ({s['width_a']} latents)."
        )
    ]
    rows = []
    for scope, d in s["distributions"].items():
        qa, qb = d["chi_model"]["quantiles_a"] or {}, d["chi_model"]["quantiles_b"] or {}
        rows.append(
            [
                scope,
                _num(d["chi_model"]["ks"]),
                f"{_num(qa.get('q50'))} / {_num(qb.get('q50'))}",
                _num(d["chi_bench"]["ks"]),
                f"{100 * d['missing_share_a']:.1f}% / {100 * d['missing_share_b']:.1f}%",
            ]
        )
    parts.append(
        _table(
            ["scope", "KS χ_model", "median χ_model (this / other)", "KS χ_bench", "missing (this / other)"],
            rows,
        )
    )
    order = s["missing_share_order"]
    parts.append(
        _p(f"Order of the benchmarks by missing share, Spearman between the two SAEs: {_num(order['rho'])}.")
    )
    m = s.get("matching")
    if m:
        sp, close, rnd = m["spearman_chi_model"], m["spearman_chi_model_close"], m["spearman_random_pairing"]
        parts.append(
            _p(
                f"Latents matched by decoder cosine: median cosine {_num(m['cosine_quantiles']['q50'])}, "
                f"{100 * m['close_share']:.1f}% with cosine ≥ {m['close_cosine']:g}. Spearman of matched χ_model: "
                f"{_num(sp['rho'])} over {sp['pairs']} pairs, {_num(close['rho'])} over the {close['pairs']} close "
                f"pairs, against {_num(rnd['rho'])} for a random pairing."
            )
        )
    elif s.get("matching_skipped"):
        parts.append(_p(f"Latents not matched by decoder: {s['matching_skipped']}."))
    by_sal = s.get("saliency_matching")
    if by_sal and by_sal.get("correlation_quantiles"):
        sp = by_sal["spearman_chi_model"]
        parts.append(
            _p(
                f"Latents matched by saliency (the other SAE's concept firing on the same items): median "
                f"correlation {_num(by_sal['correlation_quantiles']['q50'])}, "
                f"{100 * (by_sal['close_share'] or 0):.1f}% with r ≥ {by_sal['close_correlation']:g}; "
                f"Spearman of matched χ_model {_num(sp['rho'])} over {sp['pairs']} pairs."
            )
        )
    for end, word in (("top", "highest"), ("bottom", "lowest")):
        pairs = s["extremes"][end]
        if pairs:
            rows = [
                [
                    f"{p['a']['concept']} {p['a']['label']}".strip(),
                    _num(p["a"]["chi_model"]),
                    f"{p['b']['concept']} {p['b']['label']}".strip(),
                    _num(p["b"]["chi_model"]),
                ]
                for p in pairs
            ]
            parts.append(_p(f"The concepts with the {word} χ_model under each SAE:"))
            parts.append(_table(["this SAE", "χ_model", "other SAE", "χ_model"], rows))
    return Markup("").join(parts)


def robustness_html(r: dict[str, Any]) -> Markup:
    parts: list[Markup] = [Markup("<h3>Are the figures stable? (<code>cgaps robustness</code>)</h3>")]
    sub, abl = r.get("subsampling"), r.get("ablation")
    rows: list[list[Any]] = []
    if sub:
        label = f"subsampling ({sub['repeats']} × keep {1 - sub['drop']:.0%}): mean std of χ_model"
        rows.append([label, _num(sub["mean_std_chi_model"], 4), _num(PAPER_STD_CHI_MODEL)])
        rows.append(
            [
                "subsampling: mean std of χ_bench",
                _num(sub["mean_std_chi_bench"], 4),
                _num(PAPER_STD_CHI_BENCH),
            ]
        )
    if abl:
        for side, paper, word in (
            ("best", PAPER_ABLATION_BEST, "best"),
            ("worst", PAPER_ABLATION_WORST, "worst"),
        ):
            a = abl[side]
            rows.append(
                [
                    f"ablation: median χ_model after deleting the {a['deleted_items']} items most aligned with "
                    f"the {a['concepts']} {word} concepts",
                    f"{_num(abl['median_before'])} → {_num(a['median_after'])} ({_pct(a['change_rel'])})",
                    _pct(paper),
                ]
            )
    if rows:
        parts.append(_table(["check", "this run", "paper (Llama)"], rows, "kv"))
    if r.get("sae_swap"):
        parts.append(_swap_html(r["sae_swap"]))
    else:
        parts.append(
            _p(
                "SAE swap: not run. Extract the same items with a second SAE into another run directory and "
                "run `cgaps robustness RUN_DIR --against OTHER_RUN_DIR`."
            )
        )
    return Markup("").join(parts)


def checks_section(run_dir: str | Path, robustness: dict[str, Any] | None) -> Markup:
    """The section's HTML (empty when neither file exists)."""
    path = Path(run_dir) / rundir.VALIDATION
    validation = rundir.read_json_file(path, fix="rerun `cgaps validate RUN_DIR`") if path.exists() else None
    parts = []
    if isinstance(validation, dict):
        parts.append(_tolerant(validation_html, validation, rundir.VALIDATION, "cgaps validate"))
    if robustness:
        parts.append(_tolerant(robustness_html, robustness, rundir.ROBUSTNESS, "cgaps robustness"))
    return Markup("").join(parts)


def _tolerant(render: Any, data: dict[str, Any], name: str, command: str) -> Markup:
    """``render(data)``, or the file's JSON as it is when another writer (an older version, another
    tool) left out a field the tables need: the report still shows what the file says."""
    try:
        return render(data)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        text = json.dumps(data, indent=2, default=str)[:20000]
        return Markup(
            "<p>{} is not in the layout this version writes ({}: {}); rerun <code>{} RUN_DIR</code> "
            "for the tables. As written:</p><pre>{}</pre>"
        ).format(name, type(e).__name__, e, command, text)


__all__ = ["checks_section", "robustness_html", "validation_html"]
