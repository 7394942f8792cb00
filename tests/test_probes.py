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


def test_probe_answers_are_exact():
    df = load_suite("probes")
    for row in df.itertuples():
        if row.category in ("add_no_carry", "add_carry", "multiply"):
            a, op, b = re.search(r"What is (\d+) ([+*]) (\d+)\?", row.prompt).groups()
            assert int(row.reference) == (int(a) + int(b) if op == "+" else int(a) * int(b))
        elif row.category == "add_no_carry":
            pass
        elif row.category == "date_add":
            days, start = re.search(r"date (\d+) days after (\S+)\?", row.prompt).groups()
            assert row.reference == (dt.date.fromisoformat(start) + dt.timedelta(days=int(days))).isoformat()
        elif row.category == "reverse_word":
            word = re.search(r"word '(\w+)'", row.prompt).group(1)
            assert row.reference == word[::-1]
        elif row.category == "letter_count":
            letter, word = re.search(r"letter '(\w)' appear in the word '(\w+)'", row.prompt).groups()
            assert int(row.reference) == word.count(letter)
    carries = df[df["category"] == "add_no_carry"]["prompt"].str.extract(r"(\d+) \+ (\d+)").astype(int)
    assert all(all(x // 10**k % 10 + y // 10**k % 10 < 10 for k in range(3)) for x, y in carries.to_numpy())


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
