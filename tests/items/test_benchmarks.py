"""The ten paper benchmarks from their original files: counts, ids, limits, graders, bad files, specs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cgaps import rundir
from cgaps.errors import CGapsError
from cgaps.evaluate.grade import grade_items
from cgaps.items import BENCHMARKS, PAPER10, SUITES, load_suite

MANIFEST_COUNTS = {
    "gsm8k": 1319,
    "math": 5000,
    "agieval": 3852,
    "logicbench": 2020,
    "socialiqa": 1954,
    "winogrande": 1267,
    "bbq": 8876,
    "crows_pairs": 1508,
    "vectara": 800,
    "nq_open": 3610,
}


@pytest.fixture(scope="module")
def paper(benchmarks_dir):
    return load_suite("paper10", data_dir=str(benchmarks_dir))


def test_suite_names():
    assert set(SUITES["paper10"]) == set(MANIFEST_COUNTS) == set(PAPER10)
    assert "probes" in BENCHMARKS


@pytest.mark.integration
def test_counts_match_manifest(paper):
    assert paper.groupby("benchmark").size().to_dict() == MANIFEST_COUNTS
    assert list(paper.columns) == [
        "item_id",
        "benchmark",
        "prompt",
        "reference",
        "answer_type",
        "choices",
        "category",
        "meta",
        "messages",
    ]
    rundir.validate_items(paper, "paper10")


@pytest.mark.integration
def test_items_are_well_formed(paper):
    assert paper["item_id"].iloc[0] == "gsm8k/00000"
    assert (paper["prompt"].str.len() > 0).all() and (paper["reference"].str.len() > 0).all()
    for meta in paper["meta"]:
        assert isinstance(json.loads(meta), dict)
    mc = paper[paper["choices"].notna()]
    assert set(mc["answer_type"]) == {"choice", "loglik_choice"}
    for prompt, choices in zip(mc["prompt"].head(2000), mc["choices"].head(2000), strict=True):
        options = json.loads(choices)
        assert all(f"{letter}) {text}" in prompt for letter, text in zip("ABCDE", options, strict=False))
    crows = paper[paper["benchmark"] == "crows_pairs"]
    assert set(crows["answer_type"]) == {"loglik_choice"}
    # the less stereotyping sentence is the reference, in a seeded order (both letters occur)
    for ref, choices, meta in zip(crows["reference"], crows["choices"], crows["meta"], strict=True):
        assert json.loads(choices)["AB".index(ref)] == json.loads(meta)["sent_less"]
    assert 0.4 < (crows["reference"] == "A").mean() < 0.6
    nq = paper[paper["benchmark"] == "nq_open"]
    assert all(ref in json.loads(m)["answers"] for ref, m in zip(nq["reference"], nq["meta"], strict=True))


@pytest.mark.integration
def test_limit_is_seeded_sample_in_source_order_with_stable_ids(benchmarks_dir, paper):
    small = load_suite("gsm8k,vectara", data_dir=str(benchmarks_dir), limit=25, seed=3)
    assert small.groupby("benchmark").size().to_dict() == {"gsm8k": 25, "vectara": 25}
    again = load_suite("gsm8k,vectara", data_dir=str(benchmarks_dir), limit=25, seed=3)
    pd.testing.assert_frame_equal(small, again)
    for _, g in small.groupby("benchmark"):
        assert list(g["item_id"]) == sorted(g["item_id"])
    full = paper.set_index("item_id")
    for row in small.itertuples():  # same id, same item, whatever the limit
        assert full.loc[row.item_id, "prompt"] == row.prompt
    other = load_suite("gsm8k", data_dir=str(benchmarks_dir), limit=25, seed=4)
    assert set(other["item_id"]) != set(small[small["benchmark"] == "gsm8k"]["item_id"])


def test_chain_of_thought_changes_math_prompts_only(benchmarks_dir):
    plain = load_suite("gsm8k", data_dir=str(benchmarks_dir), limit=3)
    cot = load_suite("gsm8k", data_dir=str(benchmarks_dir), limit=3, chain_of_thought=True)
    assert "step by step" in cot["prompt"].iloc[0] and "step by step" not in plain["prompt"].iloc[0]


def _self_and_shuffled(df: pd.DataFrame, max_shuffled: int = 300) -> tuple[float, float]:
    df = df.copy()
    df["response"] = df["reference"]
    own = grade_items(df).mean()
    # math-verify is slow on non-matching answers: a seeded sample keeps the test fast
    sample = df.sample(min(len(df), max_shuffled), random_state=0) if len(df) > max_shuffled else df
    rng = np.random.default_rng(0)
    sample = sample.assign(response=sample["reference"].to_numpy()[rng.permutation(len(sample))])
    return own, grade_items(sample).mean()


@pytest.mark.integration
@pytest.mark.parametrize("bench", sorted(MANIFEST_COUNTS))
def test_reference_grades_itself_and_shuffled_does_not(paper, bench):
    own, shuffled = _self_and_shuffled(paper[paper["benchmark"] == bench])
    assert own >= 0.98, f"{bench}: references grade {own:.3f} against themselves"
    assert shuffled <= 0.7, f"{bench}: shuffled references grade {shuffled:.3f}"


def test_unknown_benchmark_suggests():
    with pytest.raises(CGapsError, match="Did you mean 'gsm8k'"):
        load_suite("gsm8kk", data_dir="/nonexistent")


def test_missing_folder_says_what_to_do(tmp_path):
    with pytest.raises(CGapsError, match="no such folder"):
        load_suite("gsm8k", data_dir=str(tmp_path))


# ------------------------------------------------------------------ malformed files


def test_bad_json_line_names_file_and_line(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    good = json.dumps({"question": "1+1?", "answer": "2\n#### 2"})
    (tmp_path / "gsm8k" / "test.jsonl").write_text(f"{good}\n{good}\n{{not json\n")
    with pytest.raises(CGapsError, match=r"test\.jsonl:3: invalid JSON"):
        load_suite("gsm8k", data_dir=str(tmp_path))


def test_file_that_is_not_utf8_is_an_error_naming_it(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    good = json.dumps({"question": "1+1?", "answer": "2\n#### 2"}).encode()
    (tmp_path / "gsm8k" / "test.jsonl").write_bytes(good + b"\n" + good.replace(b"1+1", b"1\xe9+1") + b"\n")
    with pytest.raises(
        CGapsError, match=r"test\.jsonl:2: not UTF-8 text \(.* at column 16\); save the file as UTF-8"
    ):
        load_suite("gsm8k", data_dir=str(tmp_path))
    (tmp_path / "vectara").mkdir()
    (tmp_path / "vectara" / "FaithBench.csv").write_bytes(
        b"source,summary,LLM,worst-label,best-label\ns\xe9,t,m,Consistent,Consistent\n"
    )
    with pytest.raises(CGapsError, match=r"FaithBench\.csv: not UTF-8 text"):
        load_suite("vectara", data_dir=str(tmp_path))
    (tmp_path / "math" / "test" / "algebra").mkdir(parents=True)
    (tmp_path / "math" / "test" / "algebra" / "1.json").write_bytes(b'{"problem": "x\xe9"}')
    with pytest.raises(CGapsError, match=r"1\.json: not UTF-8 text"):
        load_suite("math", data_dir=str(tmp_path))


def test_missing_field_names_file_line_and_field(tmp_path):
    (tmp_path / "nq_open").mkdir()
    lines = [json.dumps({"question": "who?", "answer": ["me"]}), json.dumps({"question": "what?"})]
    (tmp_path / "nq_open" / "NQ-open.dev.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(CGapsError, match=r"NQ-open\.dev\.jsonl:2: missing field 'answer'"):
        load_suite("nq_open", data_dir=str(tmp_path))


def test_label_out_of_range(tmp_path):
    (tmp_path / "bbq").mkdir()
    row = {
        "context": "c",
        "question": "q",
        "ans0": "a",
        "ans1": "b",
        "ans2": "c",
        "label": 3,
        "category": "Age",
    }
    (tmp_path / "bbq" / "Age.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(CGapsError, match=r"Age\.jsonl:1: field 'label' is 3, out of range"):
        load_suite("bbq", data_dir=str(tmp_path))


def test_socialiqa_label_file_out_of_range_names_label_file(tmp_path):
    (tmp_path / "socialiqa").mkdir()
    row = {"context": "c", "question": "q", "answerA": "a", "answerB": "b", "answerC": "c"}
    (tmp_path / "socialiqa" / "dev.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    (tmp_path / "socialiqa" / "dev-labels.lst").write_text("1\n4\n")
    with pytest.raises(CGapsError, match=r"dev-labels\.lst:2: field 'label' is '4'"):
        load_suite("socialiqa", data_dir=str(tmp_path))


def test_bad_csv_label(tmp_path):
    (tmp_path / "vectara").mkdir()
    (tmp_path / "vectara" / "FaithBench.csv").write_text(
        "source,summary,LLM,worst-label,best-label\ns,t,m,Consistent,Consistent\ns,t,m,Awful,Consistent\n"
    )
    with pytest.raises(CGapsError, match=r"FaithBench\.csv:3: field 'worst-label' is 'Awful'"):
        load_suite("vectara", data_dir=str(tmp_path))


# ------------------------------------------------------------------ custom specs

ROWS = [
    {
        "qid": "q1",
        "q": "Capital of France?",
        "a": "Paris",
        "opts": ["London", "Paris", "Rome"],
        "topic": "geo",
    },
    {"qid": "q2", "q": "2 + 2?", "a": 2, "opts": ["3", "5", "4"], "topic": "math"},
    {"qid": "q3", "q": "Largest ocean?", "a": "A", "opts": ["Pacific", "Atlantic", "Indian"], "topic": "geo"},
]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_custom_spec_round_trip(tmp_path, fmt):
    if fmt == "jsonl":
        (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    else:
        pd.DataFrame([{**r, "opts": json.dumps(r["opts"])} for r in ROWS]).to_csv(
            tmp_path / "data.csv", index=False
        )
    spec = tmp_path / "mine.yaml"
    spec.write_text(
        f"name: trivia\npath: data.{fmt}\nanswer_type: choice\n"
        "fields: {question: q, answer: a, choices: opts, category: topic, id: qid}\n"
    )
    df = load_suite(str(spec))
    assert list(df["item_id"]) == ["trivia/q1", "trivia/q2", "trivia/q3"]
    assert list(df["reference"]) == ["B", "C", "A"]
    assert list(df["category"]) == ["geo", "math", "geo"]
    assert "B) Paris" in df["prompt"].iloc[0]
    df["response"] = df["reference"]
    assert grade_items(df).tolist() == [1.0, 1.0, 1.0]
    # through the run directory and back
    rundir.write_table(df.drop(columns=["response"]), tmp_path / "run" / rundir.ITEMS)
    back = rundir.read_items(tmp_path / "run")
    pd.testing.assert_frame_equal(back, df.drop(columns=["response"]))


def test_custom_spec_template_and_errors(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"question": "Who?", "answer": "Ada"}) + "\n")
    spec = tmp_path / "s.json"
    spec.write_text(
        json.dumps(
            {
                "path": "d.jsonl",
                "answer_type": "short",
                "fields": {"question": "question", "answer": "answer"},
                "prompt_template": "Q: {question}\nA:",
            }
        )
    )
    df = load_suite(str(spec))
    assert df["prompt"].iloc[0] == "Q: Who?\nA:" and df["item_id"].iloc[0] == "s/00000"
    spec.write_text(json.dumps({"path": "d.jsonl", "answer_typ": "short", "fields": {}}))
    with pytest.raises(CGapsError, match="Did you mean 'answer_type'"):
        load_suite(str(spec))
    (tmp_path / "bad.yaml").write_text(
        "path: d.jsonl\nanswer_type: short\nfields: {question: question, answer: nope}\n"
    )
    with pytest.raises(CGapsError, match=r"d\.jsonl:1: missing field 'nope'"):
        load_suite(str(tmp_path / "bad.yaml"))


# ------------------------------------------------------------------ CLI


@pytest.mark.integration
def test_cli_items_and_grade(tmp_path, benchmarks_dir):
    from typer.testing import CliRunner

    from cgaps.cli.main import app

    out = tmp_path / "run"
    runner = CliRunner()
    res = runner.invoke(
        app, ["items", "gsm8k,bbq", "--data-dir", str(benchmarks_dir), "--out", str(out), "--limit", "5"]
    )
    assert res.exit_code == 0, res.output
    meta = rundir.read_run_json(out)
    assert meta["counts"]["items"] == {"gsm8k": 5, "bbq": 5}
    assert meta["config"]["limit"] == 5 and meta["config"]["suite"] == "gsm8k,bbq"
    items = rundir.read_items(out)
    lines = [
        json.dumps({"item_id": i, "response": r})
        for i, r in zip(items["item_id"], items["reference"], strict=True)
    ]
    (tmp_path / "resp.jsonl").write_text("\n".join(lines) + "\n")
    res = runner.invoke(app, ["grade", str(out), "--responses", str(tmp_path / "resp.jsonl")])
    assert res.exit_code == 0, res.output
    assert rundir.read_items(out, scored=True)["score"].tolist() == [1.0] * 10
    # an unknown id is an error naming file and line
    (tmp_path / "bad.jsonl").write_text(
        lines[0] + "\n" + json.dumps({"item_id": "gsm8k/99999", "response": "1"}) + "\n"
    )
    res = runner.invoke(app, ["grade", str(out), "--responses", str(tmp_path / "bad.jsonl")])
    assert isinstance(res.exception, CGapsError) and "bad.jsonl:2" in str(res.exception)
    (tmp_path / "short.jsonl").write_text(lines[0] + "\n")
    res = runner.invoke(app, ["grade", str(out), "--responses", str(tmp_path / "short.jsonl")])
    assert isinstance(res.exception, CGapsError) and "no response for 9 item(s)" in str(res.exception)


# ------------------------------------------------------------------ the hub path, without a network


@pytest.mark.integration
def test_hub_path_shares_the_parsers(monkeypatch, benchmarks_dir, paper):
    """No download here: the fetchers are stubbed with the local files, the rest runs as for hub users."""
    import cgaps.items.paper as paper_mod
    from cgaps.items.sources import Record, read_jsonl

    def fake_download(urls):
        assert all(u.startswith("https://raw.githubusercontent.com/") for u in urls.values())
        return {part: benchmarks_dir / "vectara" / "FaithBench.csv" for part in urls}

    monkeypatch.setattr(paper_mod, "download", fake_download)
    assert len(paper_mod.load_paper("vectara", None)) == MANIFEST_COUNTS["vectara"]

    def fake_hub(repo, config, split, **kw):
        assert (repo, config, split) == ("allenai/winogrande", "winogrande_xl", "validation")
        # the hub's original WinoGrande fields, not the converted local format
        yield Record(
            {
                "sentence": "Sarah was better than Maria so _ got easy cases.",
                "option1": "Sarah",
                "option2": "Maria",
                "answer": "2",
            },
            "hf://allenai/winogrande/validation:0",
        )

    monkeypatch.setattr(paper_mod, "hub_records", fake_hub)
    [item] = paper_mod.load_paper("winogrande", None)
    assert item["reference"] == "B" and item["choices"] == ["Sarah", "Maria"]

    def fake_gsm8k(repo, config, split, **kw):
        yield from read_jsonl(benchmarks_dir / "gsm8k" / "test.jsonl")

    monkeypatch.setattr(paper_mod, "hub_records", fake_gsm8k)
    hub_items = paper_mod.load_paper("gsm8k", None)
    local = paper[paper["benchmark"] == "gsm8k"]
    assert [i["reference"] for i in hub_items] == local["reference"].tolist()


# ------------------------------------------------------------------ answer formats shared with grading


@pytest.mark.integration
def test_items_do_not_import_the_evaluate_stage():
    """Data flows items -> evaluate: the loaders read letters and answer types from cgaps.answers."""
    import subprocess
    import sys

    code = (
        "import sys, cgaps.items, cgaps.items.paper, cgaps.items.custom, cgaps.items.probes;"
        "cgaps.items.load_suite('probes', limit=2);"
        "print(sorted(m for m in sys.modules if m.startswith('cgaps.evaluate')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_item_has_a_known_answer_type_and_at_most_ten_options(paper):
    from cgaps.answers import ANSWER_TYPES, MAX_OPTIONS

    assert set(paper["answer_type"]) <= set(ANSWER_TYPES)
    n_options = paper["choices"].dropna().map(lambda c: len(json.loads(c)))
    assert n_options.min() >= 2 and n_options.max() <= MAX_OPTIONS


def test_more_than_ten_options_is_an_error_at_load_time(tmp_path):
    """Options beyond J could be neither shown (A-J) nor graded: the loader names the row."""
    many = [f"option {k}" for k in range(11)]
    (tmp_path / "d.jsonl").write_text(
        json.dumps({"q": "Pick", "a": 0, "opts": many[:10]})
        + "\n"
        + json.dumps({"q": "Pick", "a": 0, "opts": many})
        + "\n"
    )
    spec = tmp_path / "s.yaml"
    spec.write_text("path: d.jsonl\nanswer_type: choice\nfields: {question: q, answer: a, choices: opts}\n")
    with pytest.raises(CGapsError, match=r"d\.jsonl:2: field 'opts' has 11 options, but at most 10 \(A-J\)"):
        load_suite(str(spec))
    columns = [f"c{k}" for k in range(11)]
    spec.write_text(
        f"path: d.jsonl\nanswer_type: choice\nfields: {{question: q, answer: a, choices: {columns}}}\n"
    )
    with pytest.raises(CGapsError, match=r"s\.yaml: fields\.choices has 11 options"):
        load_suite(str(spec))
    # the paper loaders check too (AGIEval's option lists come from the data)
    (tmp_path / "agieval").mkdir()
    row = {"question": "q", "options": [f"({c}) x" for c in "ABCDEFGHIJK"], "label": "A", "passage": None}
    from cgaps.items.paper import AGIEVAL_TASKS

    for task in AGIEVAL_TASKS:
        (tmp_path / "agieval" / f"{task}.jsonl").write_text(
            json.dumps(row) + "\n" if task == "lsat-ar" else ""
        )
    with pytest.raises(CGapsError, match=r"lsat-ar\.jsonl:1: field 'options' has 11 options"):
        load_suite("agieval", data_dir=str(tmp_path))
    # and a prompt can never list an option without a letter
    from cgaps.items import prompts

    assert prompts.options_block(many[:10]).splitlines()[-1] == "J) option 9"
    with pytest.raises(CGapsError, match="at most 10"):
        prompts.options_block(many)
