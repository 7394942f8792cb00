"""``cgaps import table`` and nested field paths (also in benchmark spec files).

The ARC lines are AI2 ARC as published (``ARC-Challenge-Test.jsonl``: ``question.stem``,
``question.choices[].{text,label}``, ``answerKey`` naming a label, which is sometimes a digit);
they load with no flattening by hand.
"""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from typer.testing import CliRunner

from cgaps import rundir
from cgaps.cli.main import app
from cgaps.errors import CGapsError
from cgaps.importers import write_imported_run
from cgaps.importers.table import parse_map, read_table_import
from cgaps.items import load_suite
from cgaps.items.custom import field_path
from cgaps.items.sources import Record

# three lines of ARC-Challenge-Test.jsonl in the published layout (the last one keyed by digits)
ARC = [
    {
        "id": "Mercury_7175875",
        "question": {
            "stem": "An astronomer observes that a planet rotates faster after a meteorite impact. Which is the "
            "most likely effect of this increase in rotation?",
            "choices": [
                {"text": "Planetary density will decrease.", "label": "A"},
                {"text": "Planetary years will become longer.", "label": "B"},
                {"text": "Planetary days will become shorter.", "label": "C"},
                {"text": "Planetary gravity will become stronger.", "label": "D"},
            ],
        },
        "answerKey": "C",
    },
    {
        "id": "Mercury_SC_409171",
        "question": {
            "stem": "A group of engineers wanted to know how different building designs would respond during an "
            "earthquake. They made several models of buildings and tested each for its ability to withstand "
            "earthquake conditions. Which will most likely result from testing different building designs?",
            "choices": [
                {"text": "buildings will be built faster", "label": "A"},
                {"text": "buildings will be made safer", "label": "B"},
                {"text": "building designs will look nicer", "label": "C"},
                {"text": "building materials will be cheaper", "label": "D"},
            ],
        },
        "answerKey": "B",
    },
    {
        "id": "NYSEDREGENTS_2015_4_8",
        "question": {
            "stem": "Which object is the best conductor of electricity?",
            "choices": [
                {"text": "a wax crayon", "label": "1"},
                {"text": "a plastic spoon", "label": "2"},
                {"text": "a rubber eraser", "label": "3"},
                {"text": "an iron nail", "label": "4"},
            ],
        },
        "answerKey": "4",
    },
]

ARC_SPEC = """name: arc
path: ARC-Challenge-Test.jsonl
answer_type: choice
fields:
  question: question.stem
  choices: question.choices[].text
  choice_labels: question.choices[].label
  answer: answerKey
  id: id
"""


@pytest.fixture
def arc_file(tmp_path):
    path = tmp_path / "ARC-Challenge-Test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ARC))
    return path


def test_field_paths():
    rec = Record(ARC[2], "f:3")
    assert field_path(rec, "question.stem") == ARC[2]["question"]["stem"]
    assert field_path(rec, "question.choices[].label") == ["1", "2", "3", "4"]
    assert field_path(rec, "question.choices[3].text") == "an iron nail"
    assert field_path(rec, "answerKey") == "4"
    assert field_path(Record({"a.b": 1}, "f:1"), "a.b") == 1  # a dotted column name wins
    assert field_path(rec, "question.nope", required=False) is None
    with pytest.raises(
        CGapsError, match=r"^f:3: field 'question.stm' has no 'question.stm' \(there: stem, choices\)$"
    ):
        field_path(rec, "question.stm")
    with pytest.raises(
        CGapsError, match=r"^f:3: missing field 'qestion.stem'; fields present: id, question, answerKey$"
    ):
        field_path(rec, "qestion.stem")
    with pytest.raises(CGapsError, match=r"has no element 9 at 'question.choices'"):
        field_path(rec, "question.choices[9].text")
    with pytest.raises(CGapsError, match=r"expects a list at 'question.stem'"):
        field_path(rec, "question.stem[0]")


def test_arc_loads_as_published(arc_file):
    spec = arc_file.with_name("arc.yaml")
    spec.write_text(ARC_SPEC)
    items = load_suite(str(spec))
    assert items["item_id"].tolist() == [
        "arc/Mercury_7175875",
        "arc/Mercury_SC_409171",
        "arc/NYSEDREGENTS_2015_4_8",
    ]
    # answerKey "4" names the label "4", the fourth option (not the 0-based index 4)
    assert items["reference"].tolist() == ["C", "B", "D"]
    assert json.loads(items["choices"].iloc[2]) == [
        "a wax crayon",
        "a plastic spoon",
        "a rubber eraser",
        "an iron nail",
    ]
    assert "Which object is the best conductor of electricity?" in items["prompt"].iloc[2]
    assert "D) an iron nail" in items["prompt"].iloc[2]
    # without choice_labels the digit key would be read as a 0-based index: refused, not mislabelled
    spec.write_text(ARC_SPEC.replace("  choice_labels: question.choices[].label\n", ""))
    with pytest.raises(CGapsError, match=r"ARC-Challenge-Test.jsonl:3: field 'answerKey' is 4, out of range"):
        load_suite(str(spec))


def test_spec_path_errors(arc_file):
    spec = arc_file.with_name("arc.yaml")
    spec.write_text(ARC_SPEC.replace("question.choices[].label", "question.choices[x].label"))
    with pytest.raises(
        CGapsError, match=r"arc.yaml: fields.choice_labels: field path .* segment 'choices\[x\]'"
    ):
        load_suite(str(spec))
    spec.write_text(ARC_SPEC.replace("answer: answerKey", "answer: question.stem"))
    with pytest.raises(
        CGapsError,
        match=r"ARC-Challenge-Test.jsonl:1: field 'question.stem' is 'An astronomer.*none of the choice labels",
    ):
        load_suite(str(spec))


def test_table_import_jsonl_csv_parquet(tmp_path):
    rows = [
        {"id": "a1", "q": {"text": "2+2?"}, "out": "4", "ok": 1, "bench": "math", "gold": "4"},
        {
            "id": "a2",
            "q": {"text": "Capital of France?"},
            "out": "Lyon",
            "ok": 0,
            "bench": "geo",
            "gold": "Paris",
        },
        {"id": "a3", "q": {"text": "3+3?"}, "out": "6", "ok": 1, "bench": "math", "gold": "6"},
    ]
    jsonl = tmp_path / "res.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = "item_id=id,prompt=q.text,response=out,score=ok,benchmark=bench,reference=gold"
    imported = read_table_import(jsonl, m, "my-api-model")
    items = write_imported_run(tmp_path / "run", imported, name=str(jsonl))
    assert items["item_id"].tolist() == ["a1", "a2", "a3"]
    assert items["prompt"].tolist() == ["2+2?", "Capital of France?", "3+3?"]
    assert items["score"].tolist() == [1.0, 0.0, 1.0]
    assert items["benchmark"].tolist() == ["math", "geo", "math"]
    assert json.loads(items["meta"].iloc[1])["row"]["gold"] == "Paris"
    meta = rundir.read_run_json(tmp_path / "run")
    assert meta["model"]["evaluated"] == "my-api-model"
    assert meta["accuracy"]["math"] == {"n": 2, "mean": 1.0}
    # the same rows flat in CSV (true/false scores) and Parquet give the same items
    flat = pd.DataFrame(
        [
            {
                "id": r["id"],
                "question": r["q"]["text"],
                "out": r["out"],
                "ok": bool(r["ok"]),
                "bench": r["bench"],
            }
            for r in rows
        ]
    )
    csv = tmp_path / "res.csv"
    flat.to_csv(csv, index=False)
    pq = tmp_path / "res.parquet"
    flat.to_parquet(pq)
    for path in (csv, pq):
        got = read_table_import(path, "item_id=id,prompt=question,response=out,score=ok,benchmark='suite'")
        assert [r["score"] for r in got.rows] == [1.0, 0.0, 1.0]
        assert {r["benchmark"] for r in got.rows} == {"suite"}
        assert [r["prompt"] for r in got.rows] == items["prompt"].tolist()


def test_table_import_arc_with_scores(arc_file, tmp_path):
    # an external system's graded responses stored beside ARC's own fields
    lines = [{**r, "model_answer": "C", "correct": r["answerKey"] == "C"} for r in ARC]
    path = tmp_path / "graded.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    got = read_table_import(
        path, "item_id=id,prompt=question.stem,response=model_answer,score=correct,reference=answerKey"
    )
    assert [r["score"] for r in got.rows] == [1.0, 0.0, 0.0]
    assert got.rows[0]["prompt"].startswith("An astronomer")


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ("item_id=id,prompt=q,response=r", r"--map: no score; required"),
        ("item_id=id,prompt=q,response=r,score=s,bench=b", r"unknown key 'bench'. Did you mean 'benchmark'"),
        ("item_id=id,prompt=q,response=r,score=s,score=t", r"key 'score' is given twice"),
        (
            "item_id=id,prompt='q',response=r,score=s",
            r"--map prompt: a quoted name is only allowed for benchmark",
        ),
        ("item_id=id,prompt q,response=r,score=s", r"'prompt q' is not KEY=PATH"),
    ],
)
def test_bad_maps(mapping, message):
    with pytest.raises(CGapsError, match=message):
        parse_map(mapping)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [{"id": 1, "q": "a", "r": "x", "s": 1}, {"id": 1, "q": "b", "r": "y", "s": 0}],
            r"t.jsonl:2: field 'id' \(--map item_id\) '1' appears twice \(first at .*t.jsonl:1\)",
        ),
        ([{"id": 1, "q": "a", "r": "x", "s": 1.5}], r"t.jsonl:1: field 's' is 1.5, outside \[0, 1\]"),
        ([{"id": 1, "q": "a", "r": "x", "s": "NaN"}], r"t.jsonl:1: field 's' is NaN"),
        ([{"id": 1, "q": "a", "r": "x"}], r"t.jsonl:1: missing field 's'"),
        (
            [{"id": 1, "q": ["a"], "r": "x", "s": 1}],
            r"t.jsonl:1: field 'q' \(--map prompt\) is a list, not text",
        ),
        ([{"id": 1, "q": "a", "r": "x", "s": 1}, '{"id": 2, "q": "b", "r'], r"t.jsonl:2: invalid JSON"),
    ],
    ids=["dup", "range", "nan", "missing", "list", "truncated"],
)
def test_bad_tables_one_line_error_nothing_written(tmp_path, rows, message):
    path = tmp_path / "t.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    run = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["import", "table", str(path), "--map", "item_id=id,prompt=q,response=r,score=s", "--out", str(run)],
    )
    assert isinstance(result.exception, CGapsError), result.output
    assert "\n" not in str(result.exception)
    assert re.search(message, str(result.exception)), str(result.exception)
    assert not (run / rundir.ITEMS).exists() and not (run / rundir.RUN_JSON).exists()
