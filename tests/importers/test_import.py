"""``cgaps import lm-eval``: logs written by lm-evaluation-harness itself, and bad logs.

The slow tests run the real harness offline (``lm_eval`` with ``--log_samples``) on local
JSONL tasks of each output type with the embedded SmolLM2 saved as safetensors, import what it
wrote and check the per-item scores against the harness's own per-sample metric values and
the means of its ``results_*.json``; then extract, score and report on the import. The fast
tests feed hand-made sample lines of the same layout through every bad-input path and check
that the run directory is left untouched.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cgaps import rundir
from cgaps.cli.main import app
from cgaps.errors import CGapsError
from cgaps.importers import write_imported_run
from cgaps.importers.lmeval import read_lm_eval

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/harness.py, as test_protocols.py imports it
import harness  # noqa: E402

MC_DOCS = [
    {
        "id": "q1",
        "question": "What color is the sky on a clear day?",
        "choices": ["green", "blue", "red"],
        "label": 1,
    },
    {"id": "q2", "question": "How many legs does a dog have?", "choices": ["four", "two", "six"], "label": 0},
    {
        "id": "q3",
        "question": "Which of these is a fruit?",
        "choices": ["carrot", "potato", "apple"],
        "label": 2,
    },
    {"id": "q4", "question": "What is frozen water called?", "choices": ["ice", "steam", "sand"], "label": 0},
    {"id": "q5", "question": "Which animal says moo?", "choices": ["cat", "cow", "duck", "owl"], "label": 1},
    {"id": "q6", "question": "What do bees make?", "choices": ["honey", "milk", "silk"], "label": 0},
]
GEN_DOCS = [
    {"id": "g1", "question": "What is 2 + 2?", "answer": "4"},
    {"id": "g2", "question": "What is the capital of France?", "answer": "Paris"},
    {"id": "g3", "question": "What is 3 + 5?", "answer": "8"},
    {"id": "g4", "question": "What color is grass?", "answer": "Green"},
]
LL_DOCS = [
    {"text": "The cat sat on the", "next": " mat"},
    {"text": "One, two, three,", "next": " four"},
    {"text": "Good morning, how are", "next": " you"},
]

TASKS = {
    "tiny_mc": (MC_DOCS, None),  # written by harness.write_mc_task (metrics acc, acc_norm)
    "tiny_gen": (
        GEN_DOCS,
        """output_type: generate_until
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_target: answer
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - metric: exact_match
    ignore_case: true
    ignore_punctuation: true
    regexes_to_ignore: [" "]
""",
    ),
    "tiny_ll": (
        LL_DOCS,
        """output_type: loglikelihood
doc_to_text: "{{text}}"
doc_to_target: "{{next}}"
metric_list:
  - metric: acc
  - metric: perplexity
""",
    ),
}


def run_lm_eval(folder: Path, tasks: dict = TASKS, limit: int | None = None) -> Path:
    """Run lm-evaluation-harness offline on local JSONL tasks (tests/harness.py); return its --output_path.

    The multiple-choice task is written by :func:`harness.write_mc_task`, the others as task
    YAML of the same layout (the harness helper writes multiple choice only)."""
    task_dir = folder / "tasks"
    task_dir.mkdir(parents=True, exist_ok=True)
    for name, (docs, body) in tasks.items():
        if name == "tiny_mc":
            harness.write_mc_task(
                task_dir, name, docs, "Question: {{question}}\nAnswer:", "{{choices}}", "{{label}}"
            )
            continue
        data = task_dir / f"{name}.jsonl"
        data.write_text("".join(json.dumps(d) + "\n" for d in docs))
        (task_dir / f"{name}.yaml").write_text(
            f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
            f"test_split: test\n{body}"
        )
    return harness.run_harness(
        task_dir, ",".join(tasks), folder / "lm_eval_out", batch_size=4, timeout=900, limit=limit
    )


@pytest.fixture(scope="module")
def lm_eval_logs(tmp_path_factory):
    """lm-eval's own --log_samples output for one task of each output type (~40 s on 2 cores)."""
    return run_lm_eval(tmp_path_factory.mktemp("lmeval"))


def _harness_samples(out: Path, task: str) -> list[dict]:
    (path,) = out.rglob(f"samples_{task}_*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_lm_eval_import_matches_the_harness(lm_eval_logs, tmp_path):
    run = tmp_path / "run"
    items = write_imported_run(run, read_lm_eval([lm_eval_logs]), name="logs")
    (results_path,) = lm_eval_logs.rglob("results_*.json")
    results = json.loads(results_path.read_text())["results"]
    assert sorted(items["benchmark"].unique()) == sorted(TASKS)
    for task, metric in (("tiny_mc", "acc"), ("tiny_gen", "exact_match"), ("tiny_ll", "acc")):
        samples = _harness_samples(lm_eval_logs, task)
        mine = items[items["benchmark"] == task].set_index("item_id")
        assert len(mine) == len(samples) == len(TASKS[task][0])
        for s in samples:
            row = mine.loc[f"{task}/{s['doc_id']}"]
            assert row["score"] == float(s[metric])  # identical, not close
            assert row["prompt"] == s["arguments"]["gen_args_0"]["arg_0"]
            assert json.loads(row["meta"])["doc"] == s["doc"]
        assert mine["score"].mean() == pytest.approx(results[task][f"{metric},none"], abs=1e-12)
    # multiple choice: the response is the option with the highest log-likelihood
    for s in _harness_samples(lm_eval_logs, "tiny_mc"):
        lls = [float(r[0]) for r in s["filtered_resps"]]
        best = lls.index(max(lls))
        row = items.set_index("item_id").loc[f"tiny_mc/{s['doc_id']}"]
        assert row["response"] == MC_DOCS[s["doc_id"]]["choices"][best]
        assert row["reference"] == MC_DOCS[s["doc_id"]]["choices"][MC_DOCS[s["doc_id"]]["label"]]
        assert row["score"] == float(best == MC_DOCS[s["doc_id"]]["label"])
    # generation: the response is the harness's filtered generation, verbatim
    for s in _harness_samples(lm_eval_logs, "tiny_gen"):
        assert items.set_index("item_id").loc[f"tiny_gen/{s['doc_id']}", "response"] == s["filtered_resps"][0]
    meta = rundir.read_run_json(run)
    assert meta["imported"]["tasks"]["tiny_mc"]["harness_mean"] == results["tiny_mc"]["acc,none"]
    assert meta["model"]["evaluated"].endswith(Path(resolve_embedded()).name)
    assert meta["config"]["reader"] == "embedded"
    # acc_norm chooses by log-likelihood per character, as the harness does
    norm = write_imported_run(
        tmp_path / "norm", read_lm_eval([lm_eval_logs], metric="tiny_mc=acc_norm"), name="logs"
    )
    mc = norm[norm["benchmark"] == "tiny_mc"]
    assert mc["score"].mean() == pytest.approx(results["tiny_mc"]["acc_norm,none"], abs=1e-12)
    for s in _harness_samples(lm_eval_logs, "tiny_mc"):
        choices = MC_DOCS[s["doc_id"]]["choices"]
        per_char = [float(r[0]) / len(" " + c) for r, c in zip(s["filtered_resps"], choices, strict=True)]
        assert (
            mc.set_index("item_id").loc[f"tiny_mc/{s['doc_id']}", "response"]
            == choices[per_char.index(max(per_char))]
        )


def resolve_embedded() -> str:
    from cgaps.models import resolve_model

    return resolve_model("embedded")[0]


@pytest.mark.slow
def test_lm_eval_import_then_extract_score_report(lm_eval_logs, tmp_path, smollm):
    from cgaps.config import config_from_run
    from cgaps.extract.stage import extract_run
    from cgaps.report.build import build_report
    from cgaps.scoring import score_run

    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["import", "lm-eval", str(lm_eval_logs), "--out", str(run)])
    assert result.exit_code == 0, result.output
    cfg = config_from_run(rundir.read_run_json(run), run)
    sal = extract_run(run, cfg, backend=smollm)
    assert set(sal["item_id"]) == set(pd.read_parquet(run / rundir.ITEMS)["item_id"])
    concepts, _ = score_run(run)
    assert set(concepts["scope"]) == {*TASKS, rundir.ALL_SCOPE}
    html = build_report(run).read_text()
    assert (run / rundir.REPORT).exists() and "tiny_mc" in html
    meta = rundir.read_run_json(run)
    # the reader is recorded beside the evaluated model
    assert meta["model"]["reader"] == smollm.name
    assert "evaluated" in meta["model"]


# ---------------------------------------------------------------- bad logs (hand-made lines)


def mc_line(doc_id: int, acc: float = 1.0, **extra) -> dict:
    """One multiple-choice sample line in lm-eval 0.4's layout (as written by the slow test's run)."""
    line = {
        "doc_id": doc_id,
        "doc": {"question": f"q{doc_id}", "choices": ["a", "b"], "label": 0},
        "target": "0",
        "arguments": {
            "gen_args_0": {"arg_0": f"Question: q{doc_id}\nAnswer:", "arg_1": " a"},
            "gen_args_1": {"arg_0": f"Question: q{doc_id}\nAnswer:", "arg_1": " bb"},
        },
        "resps": [[["-1.0", "False"]], [["-2.0", "False"]]],
        "filtered_resps": [["-1.0", "False"], ["-1.5", "False"]],
        "filter": "none",
        "metrics": ["acc", "acc_norm"],
        "doc_hash": "x",
        "prompt_hash": "y",
        "target_hash": "z",
        "acc": acc,
        "acc_norm": 0.0,
    }
    line.update(extra)
    return line


def gen_line(doc_id: int, em: float = 0.0, filt: str = "none", resp: str = " 4") -> dict:
    return {
        "doc_id": doc_id,
        "doc": {"question": "2+2?"},
        "target": "4",
        "arguments": {"gen_args_0": {"arg_0": "Q: 2+2?\nA:", "arg_1": {"until": ["\n"], "max_gen_toks": 8}}},
        "resps": [[resp]],
        "filtered_resps": [resp],
        "filter": filt,
        "metrics": ["exact_match"],
        "exact_match": em,
    }


def write_log(folder: Path, task: str, lines: list, stamp: str = "2026-01-01T00-00-00.000001") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"samples_{task}_{stamp}.jsonl"
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return path


def test_hand_made_log_imports(tmp_path):
    path = write_log(tmp_path / "logs", "mc", [mc_line(0, 1.0), mc_line(1, 0.0)])
    items = write_imported_run(tmp_path / "run", read_lm_eval([path]), name="x")
    assert items["score"].tolist() == [1.0, 0.0]
    assert items["response"].tolist() == ["a", "a"]  # -1.0 > -1.5
    assert items["reference"].tolist() == ["a", "a"]
    # acc_norm: per character -1.0/2 = -0.5 vs -1.5/3 = -0.5 -> tie goes to the first; make b win
    lines = [mc_line(0, filtered_resps=[["-1.0", "False"], ["-1.2", "False"]])]
    path2 = write_log(tmp_path / "logs2", "mc", lines)
    norm = read_lm_eval([path2], metric="acc_norm")
    assert norm.rows[0]["response"] == "bb" and norm.rows[0]["score"] == 0.0


def test_filters_pick_one_line_per_doc(tmp_path):
    lines = [
        gen_line(0, 0.0, "strict"),
        gen_line(0, 1.0, "flex", "4"),
        gen_line(1, 1.0, "strict"),
        gen_line(1, 0.0, "flex"),
    ]
    path = write_log(tmp_path, "gsm", lines)
    assert [r["score"] for r in read_lm_eval([path]).rows] == [0.0, 1.0]  # default: the first filter
    flex = read_lm_eval([path], filt="flex")
    assert [r["score"] for r in flex.rows] == [1.0, 0.0]
    assert flex.rows[0]["response"] == "4"
    with pytest.raises(CGapsError, match=r"no sample has filter 'flx'. Did you mean 'flex'"):
        read_lm_eval([path], filt="flx")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([mc_line(0), mc_line(1, bogus=1)], r"samples_t_.*\.jsonl:2: unknown field 'bogus'"),
        (
            [mc_line(0), gen_line(1)],
            r":2: field 'metrics' is \['exact_match'\] \(generate_until\) but the file began",
        ),
        ([mc_line(0), {k: v for k, v in mc_line(1).items() if k != "acc"}], r":2: field 'acc' is missing"),
        ([mc_line(0), mc_line(1, acc=float("nan"))], r":2: field 'acc' is NaN"),
        ([mc_line(0), mc_line(1, acc=2.0)], r":2: field 'acc' is 2.0, outside \[0, 1\]"),
        ([mc_line(0), mc_line(0)], r":2: field 'doc_id' 0 appears twice for filter 'none' \(first at .*:1\)"),
        ([mc_line(0), json.dumps(mc_line(1))[:80]], r":2: invalid JSON"),
        ([mc_line(0), mc_line(1, acc=[1, 2])], r":2: field 'acc' is list .*not a per-item score"),
        ([{k: v for k, v in mc_line(0).items() if k != "arguments"}], r":1: field 'arguments' is missing"),
        (
            [
                {
                    **{k: v for k, v in mc_line(0).items() if k not in ("acc", "acc_norm")},
                    "arguments": {"gen_args_0": {"arg_0": "some text"}},
                    "metrics": ["word_perplexity"],
                    "word_perplexity": [-3.2, 2],
                }
            ],
            r":1: field 'arguments' has a context and no continuation \(loglikelihood_rolling",
        ),
    ],
    ids=[
        "unknown",
        "mixed",
        "missing",
        "nan",
        "range",
        "dup",
        "truncated",
        "not-score",
        "no-args",
        "rolling",
    ],
)
def test_bad_logs_one_line_error_nothing_written(tmp_path, lines, message):
    path = write_log(tmp_path / "logs", "t", lines)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["import", "lm-eval", str(path), "--out", str(run)])
    assert isinstance(result.exception, CGapsError)
    msg = str(result.exception)
    assert "\n" not in msg
    assert str(path) in msg
    assert re.search(message, msg), msg
    assert not (run / rundir.ITEMS).exists() and not (run / rundir.RUN_JSON).exists()


def test_unknown_metric_and_two_runs_of_one_task(tmp_path):
    path = write_log(tmp_path / "a", "t", [mc_line(0)])
    with pytest.raises(
        CGapsError, match=r"task 't' has no metric 'ac'. Did you mean 'acc'\? Its metrics: acc, acc_norm"
    ):
        read_lm_eval([path], metric="ac")
    other = write_log(tmp_path / "a", "t", [mc_line(0)], stamp="2026-02-02T00-00-00.000001")
    with pytest.raises(CGapsError, match=r"task 't' is also logged in .* \(another run\)"):
        read_lm_eval([tmp_path / "a"])
    assert other.exists()
    stray = tmp_path / "a" / "x.jsonl"
    stray.write_text("{}\n")
    with pytest.raises(CGapsError, match=r"x.jsonl: not an lm-eval samples file"):
        read_lm_eval([stray])


def test_existing_run_is_kept_without_force(tmp_path):
    path = write_log(tmp_path / "logs", "t", [mc_line(0, 1.0)])
    run = tmp_path / "run"
    write_imported_run(run, read_lm_eval([path]), name="x")
    before = (run / rundir.ITEMS).read_bytes()
    path2 = write_log(tmp_path / "logs2", "t", [mc_line(0, 0.0)])
    with pytest.raises(CGapsError, match=r"already holds a run .*pass --force"):
        write_imported_run(run, read_lm_eval([path2]), name="x")
    assert (run / rundir.ITEMS).read_bytes() == before
    items = write_imported_run(run, read_lm_eval([path2]), name="x", force=True)
    assert items["score"].tolist() == [0.0]


def test_results_file_mean_is_recorded(tmp_path):
    stamp = "2026-01-01T00-00-00.000001"
    path = write_log(tmp_path, "t", [mc_line(0, 1.0), mc_line(1, 0.0)], stamp)
    (tmp_path / f"results_{stamp}.json").write_text(
        json.dumps(
            {"results": {"t": {"acc,none": 0.5}}, "model_name": "org/big-model", "lm_eval_version": "0.4.13"}
        )
    )
    imported = read_lm_eval([tmp_path])
    assert imported.evaluated == "org/big-model"
    assert imported.source["tasks"]["t"]["harness_mean"] == 0.5
    assert imported.source["tasks"]["t"]["mean"] == 0.5
    assert imported.source["chat_template_applied"] is False
    results = json.loads((tmp_path / f"results_{stamp}.json").read_text())
    (tmp_path / f"results_{stamp}.json").write_text(
        json.dumps({**results, "chat_template": "{{ messages }}"})
    )
    assert read_lm_eval([tmp_path]).source["chat_template_applied"] is True
    assert path.exists()


def test_default_metric_that_is_no_score_names_the_choices(tmp_path):
    line = {
        **{k: v for k, v in mc_line(0).items() if k not in ("acc", "acc_norm")},
        "arguments": {"gen_args_0": {"arg_0": "The cat sat on the", "arg_1": " mat"}},
        "filtered_resps": [["-2.5", "True"]],
        "metrics": ["perplexity", "acc"],
        "perplexity": -2.5,
        "acc": 1.0,
    }
    path = write_log(tmp_path, "ll", [line])
    with pytest.raises(
        CGapsError, match=r"field 'perplexity' is -2.5, outside .*choose one with --metric: perplexity, acc"
    ):
        read_lm_eval([path])
    (row,) = read_lm_eval([path], metric="acc").rows
    assert row["response"] == " mat" and row["score"] == 1.0
    assert json.loads(row["meta"])["is_greedy"] is True
    with pytest.raises(CGapsError, match=r"--metric: no task 'l'.*Did you mean 'll'"):
        read_lm_eval([path], metric="l=acc")
    (row,) = read_lm_eval([path], metric="ll=acc").rows
    assert row["score"] == 1.0


def test_what_the_model_saw_is_recorded_subset_and_generation(tmp_path):
    """Issue 23: a --limit run is recorded (and warned about) as a subset, and the harness's own
    generation settings (max_gen_toks, until...) are recorded instead of our defaults."""
    stamp = "2026-01-01T00-00-00.000001"
    write_log(tmp_path, "gsm", [gen_line(0, 1.0), gen_line(1, 0.0)], stamp)
    write_log(tmp_path, "mc", [mc_line(0, 1.0)], stamp)
    results = {
        "results": {"gsm": {"exact_match,none": 0.5}, "mc": {"acc,none": 1.0}},
        "n-samples": {"gsm": {"original": 1319, "effective": 2}, "mc": {"original": 1, "effective": 1}},
        "config": {"model": "hf", "limit": 2},
        "model_name": "org/m",
    }
    (tmp_path / f"results_{stamp}.json").write_text(json.dumps(results))
    run = tmp_path / "run"
    items = write_imported_run(run, read_lm_eval([tmp_path]), name="x")
    assert len(items) == 3
    meta = rundir.read_run_json(run)
    tasks = meta["imported"]["tasks"]
    assert tasks["gsm"]["subset"] == {"limit": 2, "samples_in_task": 1319, "samples_logged": 2}
    assert tasks["mc"]["subset"] == {"limit": 2, "samples_in_task": 1, "samples_logged": 1}  # --limit applies
    assert meta["imported"]["subset"] is True
    assert tasks["gsm"]["generation"] == {"until": ["\n"], "max_gen_toks": 8}
    assert tasks["mc"]["generation"] is None  # log-likelihoods: nothing generated
    assert meta["config"]["max_new_tokens"] == 8  # the harness's, not our default of 256
    # the whole task, no --limit: no subset; without the results file it cannot be known
    results.update({"config": {"limit": None}, "n-samples": {"gsm": {"original": 2, "effective": 2}}})
    (tmp_path / f"results_{stamp}.json").write_text(json.dumps(results))
    whole = read_lm_eval([tmp_path / f"samples_gsm_{stamp}.jsonl"])
    assert whole.source["tasks"]["gsm"]["subset"] is None and whole.source["tasks"]["gsm"]["subset_known"]
    (tmp_path / f"results_{stamp}.json").unlink()
    unknown = read_lm_eval([tmp_path / f"samples_gsm_{stamp}.jsonl"])
    assert unknown.source["tasks"]["gsm"]["subset_known"] is False


def test_generation_budgets_of_several_tasks(tmp_path):
    """Tasks generated with different max_gen_toks: config records the largest, each its own."""
    a = write_log(tmp_path / "a", "short", [gen_line(0, 1.0)])
    long_line = gen_line(0, 1.0)
    long_line["arguments"]["gen_args_0"]["arg_1"] = {
        "until": ["\n\n"],
        "max_gen_toks": 512,
        "do_sample": False,
    }
    b = write_log(tmp_path / "b", "long", [long_line])
    imported = read_lm_eval([a, b])
    assert imported.config == {"max_new_tokens": 512}
    assert imported.source["tasks"]["short"]["generation"]["max_gen_toks"] == 8
    assert imported.source["tasks"]["long"]["generation"]["do_sample"] is False


@pytest.mark.slow
def test_a_limited_harness_run_is_imported_as_a_subset_with_its_generation(tmp_path):
    """The real harness with --limit 2 on the generation task (4 documents, max_gen_toks 6): the
    import records the subset and the harness's generation settings (issue 23)."""
    out = run_lm_eval(tmp_path, {"tiny_gen": TASKS["tiny_gen"]}, limit=2)
    imported = read_lm_eval([out])
    task = imported.source["tasks"]["tiny_gen"]
    assert len(imported.rows) == 2
    assert task["subset"] == {
        "limit": 2,
        "samples_in_task": 4,
        "samples_logged": 2,
    }  # (the harness writes 2.0)
    assert task["generation"]["max_gen_toks"] == 6 and task["generation"]["until"] == ["\n"]
    assert imported.config["max_new_tokens"] == 6
