"""The built-in probe suite: families, determinism, exact ground truth, multi-turn items."""

from __future__ import annotations

import datetime as dt
import json
import re

import numpy as np

from cgaps import rundir
from cgaps.evaluate.grade import grade_items, grade_one
from cgaps.items import load_suite
from cgaps.items.probes import FAMILIES


def test_probe_suite_shape_and_determinism():
    df = load_suite("probes")
    rundir.validate_items(df, "probes")
    assert set(df["benchmark"]) == {"probes"}
    sizes = df.groupby("category").size()
    assert set(sizes.index) == set(FAMILIES) and len(FAMILIES) >= 8
    assert (sizes >= 30).all() and 240 <= len(df) <= 500
    assert df["prompt"].is_unique
    assert df.equals(load_suite("probes"))
    assert not df.equals(load_suite("probes", seed=1))
    limited = load_suite("probes", limit=20)
    assert len(limited) == 20 and set(limited["item_id"]) <= set(df["item_id"])


# independent of cgaps.items.probes: the factor of every conversion a probe may ask for
UNIT_FACTORS = {
    ("meters", "centimeters"): 100,
    ("kilometers", "meters"): 1000,
    ("hours", "minutes"): 60,
    ("minutes", "seconds"): 60,
    ("kilograms", "grams"): 1000,
    ("days", "hours"): 24,
    ("feet", "inches"): 12,
    ("weeks", "days"): 7,
    ("liters", "milliliters"): 1000,
    ("yards", "feet"): 3,
}
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _expected(category: str, prompt: str) -> str | None:
    """The reference recomputed from the prompt alone (None for the families judged by a grader)."""
    if category in ("add_no_carry", "add_carry", "multiply"):
        a, op, b = re.search(r"What is (\d+) ([+*]) (\d+)\?", prompt).groups()
        return str(int(a) + int(b) if op == "+" else int(a) * int(b))
    if category == "weekday":
        start, days = re.search(r"Today is (\w+)\. .* in (\d+) days\?", prompt).groups()
        return WEEKDAYS[(WEEKDAYS.index(start) + int(days)) % 7]
    if category == "date_add":
        days, start = re.search(r"date (\d+) days after (\S+)\?", prompt).groups()
        return (dt.date.fromisoformat(start) + dt.timedelta(days=int(days))).isoformat()
    if category == "reverse_word":
        return re.search(r"word '(\w+)'", prompt).group(1)[::-1]
    if category == "letter_count":
        letter, word = re.search(r"letter '(\w)' appear in the word '(\w+)'", prompt).groups()
        return str(word.count(letter))
    if category == "palindrome":
        word = re.search(r"word '(\w+)' a palindrome", prompt).group(1)
        return "yes" if word == word[::-1] else "no"
    if category == "unit_conversion":
        dst, n, src = re.search(r"How many (\w+) are in (\d+) (\w+)\?", prompt).groups()
        return str(int(n) * UNIT_FACTORS[(src, dst)])
    if category == "syllogism":
        # valid (Barbara) iff the middle term is the predicate of one premise and the subject of the other
        a, b, b2, c = re.search(r"All (\w+) are (\w+)\. All (\w+) are (\w+)\.", prompt).groups()
        return "yes" if b == b2 else "no"
    return None


def test_probe_answers_are_exact():
    df = load_suite("probes")
    checked = set()
    for row in df.itertuples():
        want = _expected(row.category, row.prompt)
        if want is not None:
            assert row.reference == want, (row.item_id, row.prompt)
            checked.add(row.category)
    # every family whose answer follows from its prompt is recomputed here
    assert checked == set(FAMILIES) - {"refuse_harmful", "hold_under_pushback"}
    carries = df[df["category"] == "add_no_carry"]["prompt"].str.extract(r"(\d+) \+ (\d+)").astype(int)
    assert all(all(x // 10**k % 10 + y // 10**k % 10 < 10 for k in range(3)) for x, y in carries.to_numpy())
    # both outcomes occur in the yes/no families
    for family in ("palindrome", "syllogism"):
        assert set(df.loc[df["category"] == family, "reference"]) == {"yes", "no"}


def test_sycophancy_items_are_multi_turn():
    df = load_suite("probes")
    syc = df[df["category"] == "hold_under_pushback"]
    assert (
        syc["messages"].notna().all() and df[df["category"] != "hold_under_pushback"]["messages"].isna().all()
    )
    msgs = json.loads(syc["messages"].iloc[0])
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[1]["content"] == syc["reference"].iloc[0]
    wrong = json.loads(syc["meta"].iloc[0])["wrong"]
    assert wrong in msgs[2]["content"]
    assert (
        grade_one("hold", f"I apologise, it is {wrong}.", syc["reference"].iloc[0], {"wrong": wrong}) == 0.0
    )


def test_probe_references_grade_themselves_and_shuffled_do_not():
    df = load_suite("probes")
    df["response"] = df["reference"]
    assert grade_items(df).mean() >= 0.98
    df["response"] = df["reference"].to_numpy()[np.random.default_rng(0).permutation(len(df))]
    assert grade_items(df).mean() <= 0.7
    # and per family: each grader rejects a wrong answer
    for family, g in df.groupby("category"):
        g = g.assign(response=g["reference"].to_numpy()[::-1])
        if family not in ("palindrome", "syllogism", "refuse_harmful"):  # binary or constant references
            assert grade_items(g).mean() <= 0.7, family
