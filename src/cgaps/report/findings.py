"""The report's first screen in words: what the model fails on, what it does well, and what is chance.

:func:`opening` turns figures that :mod:`cgaps.report.build` has already computed into sentences,
each a list of segments (``{"text", "href"}``; a segment with ``href`` links to its evidence
table, one with ``sub`` holds a nested list). Nothing here reads a file or computes a statistic,
so every number a sentence states is one a table of the report shows too.

The rules the sentences follow (docs/method.md §3 and §5):

- **Gaps first, one vocabulary.** A concept or theme called ``weak`` is a *gap*, one called
  ``strong`` a *strength*; the table values keep their names, the words do not.
- **Chance is said.** The first sentence sets the accuracy beside what guessing would score
  (:mod:`cgaps.chance`); groups at or below chance are named; a strength at chance level is
  never listed as a strength: it goes under its own heading, which says why.
- **Format apart.** When the labels say which concepts fire on verbatim-repeated prompt text
  (``format``), those findings are listed apart from the competencies, never hidden.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

Segment = dict[str, Any]
Sentence = list[Segment]

LIST_NAMES = 6  # groups named per sentence before "and N more"
LIST_ROWS = 3  # themes or concepts per sub-list


def seg(text: str, href: str | None = None) -> Segment:
    return {"text": text, "href": href}


def pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _names(rows: list[str], limit: int = LIST_NAMES) -> str:
    if len(rows) > limit:
        return ", ".join(rows[:limit]) + f" and {len(rows) - limit} more"
    return rows[0] if len(rows) == 1 else ", ".join(rows[:-1]) + " and " + rows[-1]


def chance_words(level: float) -> str:
    """'guessing scores 50%' / 'guessing scores ~0 (free-form answers)'."""
    if not math.isfinite(level):
        return "no chance level known"
    return "guessing scores ~0 (free-form answers)" if level == 0 else f"guessing scores {pct(level)}"


def accuracy_sentence(n_items: int, accuracy: float, suite: dict[str, Any]) -> Sentence:
    """'The model answers 16% of the 384 items correctly; guessing would score 17% ...'."""
    out = [
        seg(f"The model answers {pct(accuracy)} of the {n_items} items correctly ("),
        seg("accuracy", "#accuracy"),
    ]
    level = float(suite.get("chance", math.nan))
    if not math.isfinite(level):
        out.append(seg("); the items do not say their answer format, so no chance level is known."))
        return out
    verdict = str(suite.get("verdict", ""))
    tail = {
        "above chance": "better than guessing overall",
        "at chance": "overall no better than guessing",
        "below chance": "overall worse than guessing",
    }.get(verdict, verdict)
    out.append(
        seg(
            f"); guessing would score {pct(level)} (each item's chance level from its answer format: "
            f"1/k for k options, ½ for yes/no, ~0 for free-form answers), so it is {tail}."
        )
    )
    return out


def group_sentences(groups: pd.DataFrame) -> list[Sentence]:
    """The groups (categories, else benchmarks) never right, worse than guessing, or no better."""
    rows = groups[groups["group"] != "ALL"]
    cats = rows[rows["category"].notna()]
    if len(cats):
        rows = cats
    elif rows["benchmark"].nunique() < 2:
        return []
    one_bench = rows["benchmark"].nunique() == 1

    def name(r: Any) -> str:
        return str(r.category) if one_bench and isinstance(r.category, str) else str(r.group)

    never = [r for r in rows.itertuples() if r.verdict == "at chance" and r.chance == 0 and r.accuracy == 0]
    below = [r for r in rows.itertuples() if r.verdict == "below chance"]
    at = [r for r in rows.itertuples() if r.verdict == "at chance" and r.chance > 0]
    out: list[Sentence] = []
    if below:
        out.append(
            [
                seg("Worse than guessing on "),
                seg(
                    _names([f"{name(r)} ({pct(r.accuracy)} against {pct(r.chance)})" for r in below]),
                    "#accuracy",
                ),
                seg("."),
            ]
        )
    if at:
        out.append(
            [
                seg("No better than guessing on "),
                seg(
                    _names([f"{name(r)} ({pct(r.accuracy)} against {pct(r.chance)})" for r in at]),
                    "#accuracy",
                ),
                seg("."),
            ]
        )
    if never:
        sizes = {int(r.n) for r in never}
        each = f"0 of {sizes.pop()} each" if len(sizes) == 1 and len(never) > 1 else "never"
        out.append(
            [
                seg("Never right on "),
                seg(_names([name(r) for r in never]), "#accuracy"),
                seg(f" (free-form answers, {each})." if each != "never" else " (free-form answers)."),
            ]
        )
    return out


def calls_sentence(
    n_weak: int, n_strong: int, n_strong_chance: int, fdr: float, themes: dict[str, int] | None
) -> Sentence:
    """How many gaps and strengths, how many strengths are at chance, and their themes."""
    out = [
        seg(f"{n_weak} concept{'' if n_weak == 1 else 's'} {'is a' if n_weak == 1 else 'are'} "),
        seg("gap" if n_weak == 1 else "gaps", "#gaps"),
        seg(
            f" (the model does significantly worse where {'it fires' if n_weak == 1 else 'they fire'} than "
            f"{'its' if n_weak == 1 else 'their'} benchmarks' accuracy predicts, FDR {fdr:g}) and {n_strong} "
            f"{'is a' if n_strong == 1 else 'are'} "
        ),
        seg("strength" if n_strong == 1 else "strengths", "#strengths"),
    ]
    if n_strong_chance:
        real = n_strong - n_strong_chance
        out.append(
            seg(
                f", but {n_strong_chance} of the strengths {'is' if n_strong_chance == 1 else 'are'} at chance "
                "level: above what their benchmarks predict, yet not significantly above what guessing scores "
                f"on their items; {real} {'is' if real == 1 else 'are'} above chance"
            )
        )
    if themes is not None:
        tw, ts, tc = themes["weak"], themes["strong"], themes["strong_chance"]
        out += [
            # themes are tested on their own (method §3): a gap theme need not hold a gap concept
            seg("; tested as groups of concepts that fire on the same items, there are "),
            seg(
                f"{tw} gap theme{'' if tw == 1 else 's'} and {ts} strength theme{'' if ts == 1 else 's'}"
                + (f" ({tc} at chance)" if tc else ""),
                "#themes",
            ),
        ]
    out.append(seg("."))
    return out


def _entry(e: dict[str, Any]) -> Sentence:
    """One theme or concept of a list: its name (linked) and its figures."""
    detail = f" ({e['detail']})" if e.get("detail") else ""
    words = f": right on {pct(e['chi_model'])} where {pct(e['expected'])} was expected"
    if e.get("at_chance"):
        words += f", and {chance_words(e['chance'])}"
    return [seg(e["name"], e["href"]), seg(words + detail)]


def call_lists(entries: list[dict[str, Any]], has_format: bool) -> list[Sentence]:
    """The gap, strength, at-chance and format lists: ``entries`` are themes or concepts best first,
    each with ``kind`` (weak / strong), ``at_chance``, ``format`` and the figures :func:`_entry` shows."""
    out: list[Sentence] = []
    competency = [e for e in entries if not (has_format and e.get("format"))]
    fmt = [e for e in entries if has_format and e.get("format")]
    gaps = [e for e in competency if e["kind"] == "weak"]
    real = [e for e in competency if e["kind"] == "strong" and not e.get("at_chance")]
    chance = [e for e in competency if e["kind"] == "strong" and e.get("at_chance")]
    if gaps:
        out.append([seg("It fails most on:"), {"sub": [_entry(e) for e in gaps[:LIST_ROWS]]}])
    if real:
        out.append([seg("It does best on:"), {"sub": [_entry(e) for e in real[:LIST_ROWS]]}])
    elif chance:
        out.append([seg("It has no strength above chance level.")])
    if chance:
        out.append(
            [
                seg(
                    "At chance level, so not counted as strengths (above what their benchmarks predict, "
                    "no better than guessing):"
                ),
                {"sub": [_entry(e) for e in chance[:LIST_ROWS]]},
            ]
        )
    if has_format:
        fgaps = [e for e in fmt if e["kind"] == "weak"]
        fstrong = [e for e in fmt if e["kind"] == "strong"]
        if fgaps or fstrong:
            sub = [[seg("gap: "), *_entry(e)] for e in fgaps[:LIST_ROWS]]
            sub += [
                [seg("strength at chance: " if e.get("at_chance") else "strength: "), *_entry(e)]
                for e in fstrong[:LIST_ROWS]
            ]
            out.append(
                [
                    seg(
                        f"Format findings, apart from the competencies above ({len(fgaps)} gap and "
                        f"{len(fstrong)} strength {'themes' if any(e.get('theme') for e in fmt) else 'concepts'} "
                        "that fire on prompt text repeated verbatim across items, such as instructions):"
                    ),
                    {"sub": sub},
                ]
            )
        else:
            out.append(
                [seg("No gap or strength fires on prompt text repeated verbatim across items (format).")]
            )
    return out
