"""Measure how readable a run's concept labels are (issue 21; figures in docs/results.md).

    python scripts/label_quality.py RUN_DIR [--top 50] [--groups GROUPS.csv --planted-top 20]

Two measurements, each computed from the run's tables with rules of its own (plain ``\\w+``
words), not with the labelling code it checks:

- **Whole words.** The words of the labels of the ``--top`` (50) strongest gap concepts
  (``gap`` = weak in ``ALL``, by q): every ``\\w+`` run inside the label's quoted parts (its
  distinctive words, output tokens and phrase; the enrichment tag is metadata, not text). A
  word is whole when it is a ``\\w+`` run of the run's own text (prompts, messages and
  responses). Printed: the share of whole words, and of labels whose words are all whole.
- **Planted topics** (``--groups``): a CSV with columns ``item_id``, ``group``, ``planted``
  (1 for the groups made to fail). The *typical words* of each planted group are the
  ``--typical`` (20) words of largest log-odds ratio δ of the group's prompt words against
  the rest's, with an informative Dirichlet prior (Monroe, Colaresi & Quinn 2008; prior 100
  pseudo-words spread by the words' overall rates; lower case), among the words with
  z ≥ 1.96 that occur in at least 3 of the group's items. Printed: the share of the ``--planted-top`` (20)
  strongest gap concepts whose label (quoted parts, lower case) carries a typical word, the
  same for the strongest gaps not marked format (the competency list) and for gap themes.
  With ``--uncalled`` the ranking takes every tested concept whose
  χ_model is below its expected accuracy, called or not (for runs too small to call 20).

Also printed: the share of gap concepts (and of their saliency mass, Σ χ_bench over ALL)
marked format, when the labels table has a ``format`` column.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import Counter
from pathlib import Path

import pandas as pd

WORD = re.compile(r"\w+")
QUOTED = re.compile(r"“([^”]*)”")


def label_words(label: str) -> list[str]:
    """The ``\\w+`` runs inside a label's quoted parts."""
    return [w for part in QUOTED.findall(label or "") for w in WORD.findall(part)]


def item_texts(items: pd.DataFrame, response: bool = True) -> list[str]:
    """Each item's text: its messages' contents (else its prompt), and its response."""
    out = []
    for row in items.to_dict("records"):
        parts = []
        raw = row.get("messages")
        if isinstance(raw, str) and raw.strip():
            parts += [str(m.get("content", "")) for m in json.loads(raw)]
        else:
            parts.append(str(row["prompt"]))
        if response and isinstance(row.get("response"), str):
            parts.append(row["response"])
        out.append("\n".join(parts))
    return out


def typical_words(
    texts: list[str], in_group: list[bool], k: int, prior: float = 100.0
) -> list[tuple[str, float]]:
    """The k words of largest log-odds ratio δ of the group's texts against the rest's, among those
    more frequent in the group at the 5 % level (z ≥ 1.96)."""
    grp: Counter[str] = Counter()
    rest: Counter[str] = Counter()
    docs: Counter[str] = Counter()
    for text, g in zip(texts, in_group, strict=True):
        words = [w.lower() for w in WORD.findall(text)]
        (grp if g else rest).update(words)
        if g:
            docs.update(set(words))
    n_g, n_r = sum(grp.values()), sum(rest.values())
    total = n_g + n_r
    scored = []
    for w, y in grp.items():
        if docs[w] < 3:
            continue
        a = prior * (y + rest[w]) / total
        r = rest[w]
        d = math.log((y + a) / (n_g + prior - y - a)) - math.log((r + a) / (n_r + prior - r - a))
        z = d / math.sqrt(1 / (y + a) + 1 / (r + a))
        if z >= 1.96:
            scored.append((d, w))
    scored.sort(key=lambda t: (-t[0], t[1]))
    return [(w, round(d, 2)) for d, w in scored[:k]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--top", type=int, default=50, help="gap concepts whose label words are checked")
    parser.add_argument("--groups", type=Path, help="CSV item_id,group,planted (planted-topic check)")
    parser.add_argument("--planted-top", type=int, default=20, help="gap concepts checked for planted words")
    parser.add_argument("--typical", type=int, default=20, help="typical words per planted group")
    parser.add_argument("--show", type=int, default=10, help="labels printed")
    parser.add_argument(
        "--uncalled", action="store_true", help="rank every tested concept below expected by q, called or not"
    )
    args = parser.parse_args()
    run = args.run_dir
    items = pd.read_parquet(run / "items.parquet")
    concepts = pd.read_parquet(run / "concepts.parquet")
    labels = pd.read_parquet(run / "labels.parquet").set_index("concept")
    all_scope = concepts[concepts["scope"] == "ALL"]
    gaps = all_scope[all_scope["gap"] == "weak"]
    if args.uncalled:  # every tested concept below its expected accuracy, called or not
        gaps = all_scope[all_scope["q_value"].notna() & (all_scope["chi_model"] < all_scope["expected"])]
    gaps = gaps.sort_values(["q_value", "concept"], kind="stable")
    print(
        f"run: {run}  items: {len(items)}  gap concepts: {len(gaps)}{' (called or not)' if args.uncalled else ''}"
    )

    vocab = set()
    for text in item_texts(items):
        vocab.update(WORD.findall(text))
    top = gaps.head(args.top)
    words = [(c, w) for c in top["concept"] for w in label_words(labels.loc[c, "label"])]
    whole = sum(w in vocab for _, w in words)
    labels_whole = sum(all(w in vocab for w in label_words(labels.loc[c, "label"])) for c in top["concept"])
    print(
        f"whole words in the top-{len(top)} gap labels: {whole}/{len(words)} = {whole / max(len(words), 1):.3f}; "
        f"labels all whole: {labels_whole}/{len(top)}"
    )
    not_whole = Counter(w for _, w in words if w not in vocab)
    if not_whole:
        print("  not whole:", ", ".join(f"{w}×{n}" for w, n in not_whole.most_common(15)))
    if "format" in labels.columns:
        fmt = labels["format"].fillna(False).astype(bool)
        called = gaps["concept"].to_numpy()
        mass = gaps.set_index("concept")["chi_bench"]
        share_mass = float(mass[fmt.loc[called].to_numpy()].sum() / max(mass.sum(), 1e-12))
        print(
            f"format gap concepts: {int(fmt.loc[called].sum())}/{len(called)}; "
            f"their share of the gaps' saliency mass: {share_mass:.3f}; "
            f"of the top {len(top)}: {int(fmt.loc[top['concept']].sum())}"
        )
    for c in top["concept"][: args.show]:
        print(f"  {c:>6}  {labels.loc[c, 'label']}")

    if args.groups:
        groups = pd.read_csv(args.groups, dtype={"item_id": str})
        by_id = groups.set_index("item_id")
        items = items[items["item_id"].isin(by_id.index)]
        texts = item_texts(items, response=False)
        gid = by_id.loc[items["item_id"], "group"].astype(str).tolist()
        planted = sorted(set(groups.loc[groups["planted"].astype(int) == 1, "group"].astype(str)))
        typical: set[str] = set()
        for g in planted:
            words_g = typical_words(texts, [x == g for x in gid], args.typical)
            typical.update(w for w, _ in words_g)
            print(f"typical words of {g}: " + ", ".join(w for w, _ in words_g))
        top_p = gaps.head(args.planted_top)
        carry = [
            any(w.lower() in typical for w in label_words(labels.loc[c, "label"])) for c in top_p["concept"]
        ]
        print(
            f"top-{len(top_p)} gap labels carrying a typical word of a planted group: "
            f"{sum(carry)}/{len(top_p)} = {sum(carry) / max(len(top_p), 1):.2f}"
        )
        for c, ok in zip(top_p["concept"], carry, strict=True):
            print(f"  {'+' if ok else '-'} {c:>6}  {labels.loc[c, 'label']}")
        if "format" in labels.columns:  # the competency list: the gaps not marked format
            comp = gaps[~labels.loc[gaps["concept"], "format"].fillna(False).astype(bool).to_numpy()]
            comp = comp.head(args.planted_top)
            n_comp = sum(
                any(w.lower() in typical for w in label_words(labels.loc[c, "label"]))
                for c in comp["concept"]
            )
            print(
                f"top-{len(comp)} competency (not format) gap labels carrying a typical word: "
                f"{n_comp}/{len(comp)} = {n_comp / max(len(comp), 1):.2f}"
            )
        themes_path = run / "themes.parquet"
        if themes_path.exists():
            themes = pd.read_parquet(themes_path)
            t = themes[(themes["scope"] == "ALL") & (themes["gap"] == "weak")].sort_values("q_value")
            t = t.head(args.planted_top)
            carry_t = [any(w.lower() in typical for w in label_words(lab)) for lab in t["label"]]
            print(f"gap themes carrying a typical word: {sum(carry_t)}/{len(t)}")
            for lab, ok in zip(t["label"], carry_t, strict=True):
                print(f"  {'+' if ok else '-'} {lab}")


if __name__ == "__main__":
    main()
