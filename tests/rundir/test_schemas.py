"""The typed table schemas (cgaps.rundir.schemas): what the writers produce, what the writers and
readers check, ``cgaps schema``, and docs/method.md §6 against them."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cgaps import rundir
from cgaps.cli.main import app, main
from cgaps.errors import CGapsError
from cgaps.rundir import schemas
from cgaps.runtables import load_run
from cgaps.scoring.stage import score_run
from helpers import make_suite, write_run

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- the schemas themselves


def test_every_column_is_documented():
    for table in schemas.TABLES.values():
        assert table.file.endswith(".parquet") and table.row and table.written_by
        assert len(set(table.schema.names)) == len(table.schema.names), table.file
        for field in table.schema:
            d = schemas.doc(field)
            assert d["description"].strip(), (table.file, field.name)
            assert d["presence"] in schemas.PRESENCE and d["written_by"], (table.file, field.name)
            assert field.nullable  # what pandas writes; required means "present", not "no NaN"
            # only the types the writers produce
            t = field.type
            assert t in (
                pa.large_string(),
                pa.string(),
                pa.float64(),
                pa.float32(),
                pa.int64(),
                pa.int32(),
                pa.int16(),
                pa.bool_(),
            )
            if d.get("json") == "true":
                assert t == pa.large_string()
    # "scored" is the items table's own presence (what evaluation adds)
    assert {
        schemas.doc(f)["presence"]
        for t in schemas.TABLES.values()
        if t.file != rundir.ITEMS
        for f in t.schema
    } <= {
        "required",
        "optional",
    }


def test_every_run_file_is_described():
    """`cgaps schema` can say something about every file the stages write."""
    for name in schemas.file_names():
        assert (name in schemas.TABLES) != (name in schemas.OTHER_FILES), name
    assert set(schemas.TABLES) <= set(schemas.file_names())
    assert set(schemas.OTHER_FILES) <= set(rundir.RUN_FILES)
    keys = schemas.run_json_keys()
    assert [k for k, _, _ in keys] == list(rundir.RUN_JSON_KEYS)
    assert all(d and not re.search(r":[a-z]+:`", d) and "``" not in d for _, _, d in keys)  # plain text
    assert dict((k, t) for k, t, _ in keys)["n_concepts"] == "integer"


def test_column_tuples_come_from_the_schemas():
    """The names callers use are the schemas' columns, in the order the writers write them."""
    from cgaps.compare import core as compare_core
    from cgaps.evaluate.evaluator import OPTION_COLUMNS
    from cgaps.labels import evidence, themes
    from cgaps.labels.stage import EVIDENCE_COLUMNS, LABELS_TABLE_COLUMNS, OTHER_SOURCE_COLUMNS

    assert rundir.ITEM_REQUIRED == ("item_id", "benchmark", "prompt", "reference")
    assert rundir.ITEM_SCORED == ("response", "score")
    assert rundir.ITEM_OPTIONAL == ("messages", "answer_type", "choices", "category", "meta")
    assert rundir.ITEM_COLUMNS == rundir.ITEM_REQUIRED + rundir.ITEM_SCORED + rundir.ITEM_OPTIONAL
    assert rundir.SALIENCY_COLUMNS == ("item_id", "concept", "value")
    assert rundir.LABEL_COLUMNS == ("concept", "label", "source")
    assert list(rundir.CONCEPT_COLUMNS) == [
        n for n in schemas.TABLES[rundir.CONCEPTS].schema.names if n not in ("p_value", "p_min", "theme")
    ]
    # what `cgaps score` writes: the required columns, then the test's (issue 19)
    from cgaps.scoring.core import CONCEPT_EXTRA_COLUMNS, TEST_COLUMNS
    from cgaps.scoring.themes import THEME_TEST_COLUMNS

    assert (*rundir.CONCEPT_COLUMNS, *CONCEPT_EXTRA_COLUMNS) == schemas.CONCEPT_TABLE_COLUMNS
    assert rundir.columns(rundir.THEME_TESTS) == THEME_TEST_COLUMNS
    assert (*rundir.CONCEPT_COLUMNS[2:], "p_value", "p_min") == TEST_COLUMNS
    assert (*rundir.LABEL_COLUMNS, *EVIDENCE_COLUMNS, *OTHER_SOURCE_COLUMNS) == LABELS_TABLE_COLUMNS
    assert (
        evidence.ENRICH_COLUMNS
        == rundir.ENRICH_COLUMNS
        == tuple(c for c in LABELS_TABLE_COLUMNS if c.startswith("enrich_"))
    )
    assert rundir.columns(rundir.THEMES) == themes.THEME_TABLE_COLUMNS
    after_scope = rundir.CONCEPT_COLUMNS[2:]
    assert themes.THEME_COLUMNS[-len(after_scope) :] == after_scope
    assert (
        compare_core.COMPARE == rundir.names.COMPARE
        and rundir.columns("compare") == compare_core.COMPARE_COLUMNS
    )
    assert rundir.columns(rundir.OPTION_LOGLIKS) == OPTION_COLUMNS


def test_table_names_and_near_misses():
    assert schemas.table_schema("items") is schemas.table_schema("items.parquet") is schemas.ITEMS_TABLE
    with pytest.raises(CGapsError, match="Did you mean 'concepts'"):
        schemas.table_schema("concept")
    assert (
        schemas.find_file("run") == "run.json" and schemas.find_file("saliency_shards") == "saliency_shards"
    )
    with pytest.raises(CGapsError, match="Did you mean 'labels'"):
        schemas.find_file("lables")


# ---------------------------------------------------------------- writers


def _same_as_pandas(df: pd.DataFrame, tmp_path: Path, name: str, **kw) -> None:
    """write_table writes exactly the bytes of DataFrame.to_parquet (config aside)."""
    ours, theirs = tmp_path / "a" / name, tmp_path / "b" / name
    theirs.parent.mkdir(parents=True, exist_ok=True)
    rundir.write_table(df, ours, **kw)
    df.to_parquet(theirs, index=False)
    assert ours.read_bytes() == theirs.read_bytes()


def test_write_table_bytes_are_unchanged(tmp_path):
    items, sal = make_suite(0)
    _same_as_pandas(items, tmp_path, rundir.ITEMS)
    _same_as_pandas(sal, tmp_path, rundir.SALIENCY)
    _same_as_pandas(sal.assign(peak_start=np.int32(0)), tmp_path, "shard-00000.parquet")  # not a table
    attrs = items.copy()
    attrs.attrs = {"source": "x"}
    _same_as_pandas(attrs, tmp_path, rundir.ITEMS)


def test_scoring_writes_the_schema_types_exactly(tmp_path):
    """What the scoring stage writes is the schema, type for type (no column is null here)."""
    run = write_run(tmp_path / "r")
    score_run(run)
    for name in (rundir.CONCEPTS, rundir.OVERLAP):
        got = pq.read_schema(run / name)
        want = schemas.TABLES[name].schema
        assert got.names == want.names
        assert [f.type for f in got] == [f.type for f in want], name


def test_writers_refuse_what_the_schema_does_not_declare(tmp_path):
    items, _ = make_suite(0)
    path = tmp_path / rundir.ITEMS
    rundir.write_table(items, path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match=r"unknown column\(s\) extra"):
        rundir.write_table(items.assign(extra=1), path)
    with pytest.raises(TypeError, match="score is large_string, not double"):
        rundir.write_table(items.assign(score=items["score"].astype(str)), path)
    with pytest.raises(TypeError, match=r"missing column\(s\) reference"):
        rundir.write_table(items.drop(columns="reference"), path)
    concepts = pd.DataFrame({c: [0.0] for c in rundir.CONCEPT_COLUMNS})  # every column float64
    with pytest.raises(
        TypeError, match="concept is double, not int32; scope is double, not large_string; support is double"
    ):
        rundir.write_table(concepts, tmp_path / rundir.CONCEPTS, scoring_config={"x": 1})
    assert path.read_bytes() == before and not (tmp_path / rundir.CONCEPTS).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [rundir.ITEMS]  # no temporary left
    # an explicit schema checks a file of any name
    with pytest.raises(TypeError, match="unknown column"):
        rundir.write_table(items.assign(extra=1), tmp_path / "x.parquet", schema=schemas.ITEMS_TABLE)


def test_writers_allow_columns_without_values(tmp_path):
    """An empty table, or an optional column no item uses, is Arrow null: pandas cannot tell its type."""
    rundir.write_table(pd.DataFrame(columns=list(rundir.columns(rundir.THEMES))), tmp_path / rundir.THEMES)
    assert pq.read_schema(tmp_path / rundir.THEMES).field("theme").type == pa.null()
    items, _ = make_suite(0)
    rundir.write_table(items.assign(choices=None), tmp_path / rundir.ITEMS)
    # the same kind of value at another width: a dtype variation, not a bug
    rundir.write_table(items.astype({"prompt": object}), tmp_path / rundir.ITEMS)
    _, sal = make_suite(0)
    rundir.write_table(sal.astype({"concept": "int64", "value": "float64"}), tmp_path / rundir.SALIENCY)
    assert pq.read_schema(tmp_path / rundir.SALIENCY).field("concept").type == pa.int64()  # written as it is


# ---------------------------------------------------------------- readers


def test_string_scores_fail_before_anything_is_written(tmp_path, monkeypatch, capsys):
    """A score column of text was a traceback in `cgaps score`, after concepts.parquet was rewritten."""
    items, sal = make_suite(0)
    run = write_run(tmp_path / "r", items, sal)
    score_run(run)
    written = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    items.assign(score=items["score"].astype(str)).to_parquet(run / rundir.ITEMS, index=False)
    written[rundir.ITEMS] = (run / rundir.ITEMS).read_bytes()
    monkeypatch.setattr(sys, "argv", ["cgaps", "score", str(run)])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"{run / rundir.ITEMS}: field 'score' is large_string" in err and "numbers" in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == written


@pytest.mark.parametrize(
    ("table", "change", "fragment"),
    [
        (rundir.ITEMS, lambda d: d.assign(choices=[["a", "b"]] * len(d)), "field 'choices' is list<"),
        (rundir.ITEMS, lambda d: d.assign(prompt=[b"x"] * len(d)), "field 'prompt' is binary"),
        (
            rundir.SALIENCY,
            lambda d: d.assign(concept=d["concept"].astype(str)),
            "field 'concept' is large_string",
        ),
        (rundir.SALIENCY, lambda d: d.assign(value=d["value"].astype(str)), "field 'value' is large_string"),
    ],
)
def test_readers_refuse_types_they_cannot_convert(tmp_path, table, change, fragment):
    items, sal = make_suite(0)
    frames = {rundir.ITEMS: items, rundir.SALIENCY: sal}
    frames[table] = change(frames[table])
    run = write_run(tmp_path / "r", frames[rundir.ITEMS], frames[rundir.SALIENCY])
    for coded in (False, True):
        with pytest.raises(CGapsError) as e:
            load_run(run, coded=coded)
        msg = str(e.value)
        assert msg.startswith(f"{run / table}: ") and fragment in msg and "store" in msg
        assert "\n" not in msg


def test_results_tables_are_type_checked(tmp_path):
    run = write_run(tmp_path / "r")
    score_run(run)
    labels = pd.DataFrame({"concept": [str(c) for c in range(200)], "label": "x", "source": "s"})
    labels.to_parquet(run / rundir.LABELS, index=False)
    with pytest.raises(CGapsError, match=r"labels.parquet: field 'concept' is large_string, .* integers"):
        load_run(run, results=True)
    # a labels table another tool wrote with more columns and int64 concepts is fine
    labels.assign(concept=np.arange(200), note="n").to_parquet(run / rundir.LABELS, index=False)
    assert load_run(run, results=True).labels is not None
    concepts = pd.read_parquet(run / rundir.CONCEPTS)
    concepts.assign(chi_model=concepts["chi_model"].astype(str)).to_parquet(
        run / rundir.CONCEPTS, index=False
    )
    with pytest.raises(CGapsError, match="concepts.parquet: field 'chi_model' is large_string"):
        load_run(run, results=True)


def test_readers_take_what_they_convert(tmp_path):
    """What the readers converted before the schemas still reads: numbers as ids and references,
    integer or boolean scores, float concepts, float64 values, dictionary-encoded ids."""
    items, sal = make_suite(0)
    codes = {iid: k for k, iid in enumerate(items["item_id"])}
    items = items.assign(
        item_id=items["item_id"].map(codes), reference=7, score=items["score"] >= 0.5, category=None
    )
    sal = sal.assign(
        item_id=pd.Categorical(sal["item_id"].map(codes).astype(str)),
        concept=sal["concept"].astype("float64"),
        value=sal["value"].astype("float64"),
    )
    run = write_run(tmp_path / "r", items, sal)
    run_tables = load_run(run)
    assert run_tables.items["score"].dtype == np.float64 and set(run_tables.items["score"]) == {0.0, 1.0}
    assert run_tables.items["reference"].iloc[0] == "7"
    assert len(run_tables.saliency) == len(sal) and run_tables.saliency["concept"].dtype == np.int32


def test_check_read_on_arrow_types():
    """The reader's rule, type by type."""
    t = schemas.ITEMS_TABLE

    def ok(col: str, typ: pa.DataType) -> bool:
        try:
            schemas.check_read(pa.schema([pa.field(col, typ)]), t, "f")
            return True
        except CGapsError:
            return False

    assert (
        ok("prompt", pa.string())
        and ok("prompt", pa.int64())
        and ok("prompt", pa.dictionary(pa.int32(), pa.string()))
    )
    assert not ok("meta", pa.int64()) and ok("meta", pa.null())  # JSON columns hold text only
    assert ok("score", pa.int8()) and ok("score", pa.bool_()) and ok("score", pa.float32())
    assert not ok("score", pa.string()) and not ok("score", pa.list_(pa.float64()))
    s = schemas.SALIENCY_TABLE
    schemas.check_read(pa.schema([pa.field("concept", pa.float32())]), s, "f")
    with pytest.raises(CGapsError, match="store it as integers"):
        schemas.check_read(pa.schema([pa.field("concept", pa.bool_())]), s, "f")
    schemas.check_read(pa.schema([pa.field("other", pa.list_(pa.int8()))]), s, "f")  # presence: not here


# ---------------------------------------------------------------- cgaps schema


def _cli(*args: str):
    return CliRunner().invoke(app, ["schema", *args])


def test_cgaps_schema_lists_every_file():
    result = _cli()
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines[1:]] == list(schemas.file_names())
    assert "one row per item; 11 columns" in lines[2]


@pytest.mark.parametrize("name", ["items", "items.parquet", "labels", "themes", "compare", "option_logliks"])
def test_cgaps_schema_prints_every_column(name):
    table = schemas.table_schema(name)
    lines = _cli(name).stdout.strip().splitlines()
    assert lines[0].startswith(f"{table.file}: one row per {table.row}")
    rows = [line.split(None, 3) for line in lines[2:]]  # column, type, presence..., rest
    assert [r[0] for r in rows] == table.schema.names
    assert [r[1] for r in rows] == [str(f.type) for f in table.schema]
    for line, field in zip(lines[2:], table.schema, strict=True):
        assert line.endswith(schemas.doc(field)["description"])
    if name.startswith("items"):
        assert "after evaluation" in lines[2 + table.schema.names.index("score")]


def test_cgaps_schema_json_and_run_json():
    data = json.loads(_cli("concepts", "--json").stdout)
    assert data["file"] == rundir.CONCEPTS and [c["name"] for c in data["columns"]] == list(
        schemas.CONCEPT_TABLE_COLUMNS
    )
    assert {c["type"] for c in data["columns"]} == {"int32", "large_string", "int64", "double"}
    every = json.loads(_cli("--json").stdout)
    assert [d["file"] for d in every] == list(schemas.file_names())
    run_json = _cli("run.json").stdout
    for key in rundir.RUN_JSON_KEYS:
        assert f"\n{key} " in run_json


def test_cgaps_schema_unknown_name(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["cgaps", "schema", "concept"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Did you mean 'concepts'?" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- docs/method.md §6


def _section6_rows() -> dict[str, str]:
    text = (ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    section = text[text.index("## §6 Run directory") :]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| `([\w.]+)`[^|]*\|[^|]*\|[^|]*\| (.*) \|$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def test_method_section6_names_every_column():
    """docs/method.md §6's table of files names every column of every schema, and no other."""
    rows = _section6_rows()
    for file, table in schemas.TABLES.items():
        assert file in rows, f"docs/method.md §6: no row for {file}"
        named = set(re.findall(r"`(\w+)`", rows[file]))  # `concepts.parquet`, `[a, b]` are not names
        assert sorted(named - set(table.schema.names)) == [], f"{file}: named in the docs, not in the schema"
        assert sorted(set(table.schema.names) - named) == [], f"{file}: in the schema, not named in the docs"
    for file in ("run.json", "robustness.json", "validation.json", "report.html"):
        assert file in rows


def test_writers_agree_with_the_stage_graph():
    """Who writes what, as the schemas say it, is what cgaps.stages declares."""
    from cgaps import stages

    for stage in stages.STAGES:
        for file in stage.writes:
            if file in schemas.TABLES:
                assert stage.name in schemas.TABLES[file].written_by, (stage.name, file)
        for col in stage.writes_columns:
            field = schemas.ITEMS_TABLE.schema.field(col)
            assert schemas.doc(field)["presence"] == "scored"
            assert {stage.name, *stage.also_written_by} <= set(schemas.doc(field)["written_by"].split(", "))
    scored = {c for s in stages.STAGES for c in s.writes_columns}
    assert scored == set(rundir.ITEM_SCORED)
