"""The fill and confirm results of a run, shaped once for the report and the explorer.

- :func:`fill_results`: every ``RUN_DIR/fill/*/fill.json`` (written by ``cgaps fill`` with its
  default ``--out``), with the first chosen items and what each covers;
- :func:`confirm_results`: ``RUN_DIR/confirmation.parquet`` (``cgaps confirm``): the replication
  rates per family and one row per re-tested call, marked stale when the ``concepts.parquet``
  it tested has changed since;
- :func:`section`: both as one HTML section of ``report.html``, rendered by its own small Jinja
  template with autoescape on (every label, id and benchmark name is benchmark text).

Shaping returns plain dicts and lists (JSON-safe: NaN as None), so the explorer's routes
(:mod:`cgaps.serve.fill_confirm`) send them as they are.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from cgaps import rundir
from cgaps.errors import CGapsError

MAX_ROWS = 50  # calls listed per family in the report
MAX_ITEMS = 10  # chosen items listed per filled benchmark


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def fill_results(run_dir: str | Path) -> list[dict[str, Any]]:
    """One entry per filled benchmark under ``RUN_DIR/fill/`` (damaged folders are skipped with a note)."""
    from cgaps.fill.stage import FILL_DIR, FILL_JSON, SELECTION

    out: list[dict[str, Any]] = []
    for path in sorted((Path(run_dir) / FILL_DIR).glob(f"*/{FILL_JSON}")):
        try:
            summary = rundir.read_json_file(path, "rerun `cgaps fill`")
            items: list[dict[str, Any]] = []
            sel = path.parent / SELECTION
            if sel.is_file():
                for line in sel.read_text(encoding="utf-8").splitlines()[:MAX_ITEMS]:
                    rec = json.loads(line)
                    covers = rec.get("covers", [])
                    items.append(
                        {
                            "id": str(rec.get("id", "")),
                            "from": str(rec.get("meta", {}).get("fill", {}).get("from_benchmark", "")),
                            "gain": _num(rec.get("gain")),
                            "missing": sum(1 for c in covers if c.get("target") == "missing"),
                            "under": sum(1 for c in covers if c.get("target") == "under"),
                            "labels": [
                                str(c.get("label") or f"concept {c.get('concept')}") for c in covers[:5]
                            ],
                        }
                    )
        except (CGapsError, json.JSONDecodeError, AttributeError, TypeError) as e:
            out.append({"benchmark": path.parent.name, "error": f"{path}: unreadable ({e})"})
            continue
        arms = {}
        for arm, rec in summary.get("arms", {}).items():
            fig = rec.get("measured") or rec.get("predicted") or {}
            arms[arm] = {
                "missing": _num(fig.get("missing")),
                "under": _num(fig.get("under")),
                "measured": "measured" in rec,
            }
        before = summary.get("verify", {}).get("before") or summary.get("before", {})
        out.append(
            {
                "benchmark": str(summary.get("benchmark", path.parent.name)),
                "folder": path.parent.name,
                "budget": summary.get("budget"),
                "selected": summary.get("selected"),
                "pool_items": summary.get("pool_items"),
                "targets": summary.get("targets", {}),
                "before": {"missing": _num(before.get("missing")), "under": _num(before.get("under"))},
                "arms": arms,
                "generated": summary.get("generated"),
                "chosen": items,
            }
        )
    return out


def confirm_results(run_dir: str | Path) -> dict[str, Any] | None:
    """The confirmation of the run's calls (None without ``confirmation.parquet``)."""
    from cgaps.confirm.stage import CONFIRMATION, CONFIRMATION_COLUMNS

    path = Path(run_dir) / CONFIRMATION
    if not path.is_file():
        return None
    table = rundir.read_table(path, "rerun `cgaps confirm RUN_DIR`")
    missing = [c for c in CONFIRMATION_COLUMNS if c not in table.columns]
    if missing:
        raise CGapsError(f"{path}: missing column(s) {', '.join(missing)}; rerun `cgaps confirm RUN_DIR`")
    scoring_config = rundir.read_table_config(path) or {}
    info = scoring_config.get("confirm", {})
    stale = scoring_config.get("concepts_digest") != rundir.file_digest(Path(run_dir) / rundir.CONCEPTS)
    rows = []
    for r in table.sort_values(["kind", "role", "q_fresh"], na_position="last").itertuples(index=False):
        rows.append(
            {
                "kind": str(r.kind),
                "id": int(r.id),
                "role": str(r.role),
                "matched_to": int(r.matched_to),
                "label": str(r.label or ""),
                "call": str(r.call),
                "support_run": int(r.support_run),
                "chi_model_run": _num(r.chi_model_run),
                "expected_run": _num(r.expected_run),
                "drawn": int(r.drawn),
                "support_fresh": int(r.support_fresh),
                "chi_model_fresh": _num(r.chi_model_fresh),
                "expected_fresh": _num(r.expected_fresh),
                "q_fresh": _num(r.q_fresh),
                "tested": bool(r.tested),
                "replicated": bool(r.replicated),
            }
        )
    return {
        "fresh_items": info.get("fresh_items"),
        "pool": info.get("pool"),
        # who answered the fresh items: the model, or the responses file that was graded
        "answered_by": f"the responses in {info['responses']}"
        if info.get("responses")
        else info.get("model"),
        "scope": info.get("scope", rundir.ALL_SCOPE),
        "rates": info.get("rates", {}),
        "fdr": scoring_config.get("fdr"),
        "stale": stale,
        "rows": rows,
    }


_TEMPLATE = """
{%- macro share(x) -%}{{ '–' if x is none else '%.1f%%' % (100 * x) }}{%- endmacro -%}
{%- macro num(x) -%}{{ '–' if x is none else '%.3f' % x }}{%- endmacro -%}
<div id="fill-confirm"></div>
{% if confirm %}
<section id="confirm">
<h2>Confirmed on {{ confirm.fresh_items }} fresh items</h2>
{% if confirm.stale %}<p class="meta">Made from an earlier <code>concepts.parquet</code>: rerun <code>cgaps confirm RUN_DIR</code>.</p>{% endif %}
<p>Each call of {{ confirm.scope }} tested again with the same score test on items the run never saw (pool {{ confirm.pool }}, answered by {{ confirm.answered_by }}), one-sided in the called direction, Benjamini–Hochberg at q ≤ {{ confirm.fdr }} over each family.</p>
<table><thead><tr><th>re-tested</th><th class="num">calls</th><th class="num">tested</th><th class="num">replicated</th><th class="num">rate</th></tr></thead><tbody>
{% for name, r in confirm.rates.items() if r.calls %}<tr><td>{{ {'concepts': 'called concepts', 'controls': 'random concepts, matched support', 'themes': 'themes'}[name] }}</td><td class="num">{{ r.calls }}</td><td class="num">{{ r.tested }}</td><td class="num">{{ r.replicated }}</td><td class="num">{{ '–' if r.rate is none else ('%.0f%%' if r.rate >= 0.1 else '%.1f%%') % (100 * r.rate) }}</td></tr>
{% endfor %}</tbody></table>
<details><summary>every called concept and theme</summary>
<table><thead><tr><th></th><th>call</th><th>label</th><th class="num">support (run / fresh)</th><th class="num">χ_model run vs expected</th><th class="num">χ_model fresh vs expected</th><th class="num">q fresh</th><th></th></tr></thead><tbody>
{% for r in called %}<tr><td>{{ r.kind }} {{ r.id }}</td><td>{{ r.call }}</td><td>{{ r.label }}</td><td class="num">{{ r.support_run }} / {{ r.support_fresh }}</td><td class="num">{{ num(r.chi_model_run) }} vs {{ num(r.expected_run) }}</td><td class="num">{{ num(r.chi_model_fresh) }} vs {{ num(r.expected_fresh) }}</td><td class="num">{{ num(r.q_fresh) }}</td><td>{{ 'replicated' if r.replicated else ('not tested' if not r.tested else '') }}</td></tr>
{% endfor %}{% if more %}<tr><td colspan="8">… and {{ more }} more (confirmation.parquet)</td></tr>{% endif %}</tbody></table></details>
</section>
{% endif %}
{% if fills %}
<section id="fill">
<h2>Filling what the benchmarks miss</h2>
<table><thead><tr><th>benchmark</th><th class="num">chosen</th><th class="num">missing before</th><th class="num">+ fill</th><th class="num">+ random</th><th class="num">+ by group</th><th class="num">under before → + fill</th></tr></thead><tbody>
{% for f in fills %}{% if f.error is defined %}<tr><td colspan="7">{{ f.error }}</td></tr>{% else %}<tr><td>{{ f.benchmark }}</td><td class="num">{{ f.selected }} of {{ f.pool_items }}</td><td class="num">{{ share(f.before.missing) }}</td>{% for arm in ('fill', 'random', 'group') %}<td class="num">{% if arm in f.arms %}{{ share(f.arms[arm].missing) }}{{ '' if f.arms[arm].measured else ' (predicted)' }}{% else %}–{% endif %}</td>{% endfor %}<td class="num">{{ share(f.before.under) }} → {{ share(f.arms.fill.under) if 'fill' in f.arms else '–' }}</td></tr>{% endif %}
{% endfor %}</tbody></table>
{% for f in fills if f.error is not defined and f.chosen %}<details><summary>{{ f.benchmark }}: the first {{ f.chosen|length }} chosen items</summary><ol>
{% for i in f.chosen %}<li><code>{{ i.id }}</code> ({{ i.from }}): covers {{ i.missing }} missing{% if i.under %} and lifts {{ i.under }} under-represented{% endif %} concepts{% if i.labels %}, e.g. {{ i.labels|join('; ') }}{% endif %}</li>
{% endfor %}</ol></details>{% endfor %}
<p class="meta">Shares of all concepts on one fixed concept scale; "measured" after <code>cgaps fill --verify</code> extracted the augmented benchmark again. The selections are spec files in <code>RUN_DIR/fill/BENCHMARK/selection.yaml</code>.</p>
</section>
{% endif %}
"""


def _env() -> Any:
    from jinja2 import Environment, StrictUndefined

    return Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def section(run_dir: str | Path) -> Any:
    """The report's HTML for the run's fill and confirm results (an empty ``Markup`` without any)."""
    from markupsafe import Markup

    fills = fill_results(run_dir)
    confirm = confirm_results(run_dir)
    if not fills and confirm is None:
        return Markup("")
    called = [r for r in (confirm or {}).get("rows", []) if r["role"] == "called"]
    html = (
        _env()
        .from_string(_TEMPLATE)
        .render(fills=fills, confirm=confirm, called=called[:MAX_ROWS], more=max(0, len(called) - MAX_ROWS))
    )
    return Markup(html)
