"""``cgaps import inspect``: logs written by inspect-ai itself with its offline mock model.

inspect runs the tasks in-process with ``mockllm/model`` and fixed outputs (each with its token
usage set, so the mock never reaches for a tokenizer download); the importer reads the log back
through inspect's own reader, and the test compares with the scores inspect wrote.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cgaps import rundir
from cgaps.cli.main import app
from cgaps.errors import CGapsError
from cgaps.importers import write_imported_run
from cgaps.importers.inspect_log import read_inspect


def run_inspect(log_dir, samples, outputs, scorers, solver=None, epochs=1):
    """Run an inspect-ai task on the offline mock model; return the log's path."""
    from inspect_ai import Task, eval
    from inspect_ai.model import ModelOutput, ModelUsage, get_model
    from inspect_ai.solver import generate

    outs = []
    for text in outputs * epochs:
        out = ModelOutput.from_content("mockllm/model", text)
        out.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)
        outs.append(out)
    model = get_model("mockllm/model", custom_outputs=outs)
    task = Task(dataset=samples, solver=solver or generate(), scorer=scorers, name="tiny_qa")
    (log,) = eval(task, model=model, log_dir=str(log_dir), display="none", max_connections=1, epochs=epochs)
    assert log.status == "success"
    return log.location


@pytest.fixture(scope="module")
def qa_log(tmp_path_factory):
    from inspect_ai.dataset import Sample
    from inspect_ai.model import ChatMessageSystem, ChatMessageUser
    from inspect_ai.scorer import includes, match

    samples = [
        Sample(input="What is 2+2?", target="4", id="a", metadata={"topic": "math"}),
        Sample(input="Capital of France?", target="Paris", id="b"),
        Sample(
            input=[ChatMessageSystem(content="Answer briefly."), ChatMessageUser(content="What is 3+3?")],
            target="6",
            id="c",
        ),
        Sample(input="Largest planet?", target="Jupiter", id="d"),
    ]
    return run_inspect(
        tmp_path_factory.mktemp("inspect"),
        samples,
        ["4", "Lyon", "six", "It is Jupiter"],
        [match(), includes()],
    )


@pytest.mark.integration
def test_inspect_import_matches_inspect_scores(qa_log, tmp_path):
    from inspect_ai.log import read_eval_log

    log = read_eval_log(qa_log)
    imported = read_inspect(qa_log)
    items = write_imported_run(tmp_path / "run", imported, name=qa_log).set_index("item_id")
    assert list(items.index) == ["tiny_qa/a", "tiny_qa/b", "tiny_qa/c", "tiny_qa/d"]
    # match() compares the end of the completion: "It is Jupiter" is correct, "six" is not
    assert items["score"].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert items["score"].tolist() == [{"C": 1.0, "I": 0.0}[s.scores["match"].value] for s in log.samples]
    assert items["response"].tolist() == ["4", "Lyon", "six", "It is Jupiter"]
    assert items.loc["tiny_qa/c", "prompt"] == "What is 3+3?"
    assert json.loads(items.loc["tiny_qa/c", "messages"]) == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is 3+3?"},
    ]
    assert json.loads(items.loc["tiny_qa/a", "meta"])["metadata"] == {"topic": "math"}
    (match_score,) = [s for s in log.results.scores if s.name == "match"]
    assert items["score"].mean() == pytest.approx(match_score.metrics["accuracy"].value, abs=1e-12)
    inc = read_inspect(qa_log, scorer="includes")
    assert [r["score"] for r in inc.rows] == [1.0, 0.0, 0.0, 1.0]
    assert inc.source["inspect_mean"] == pytest.approx(0.5)
    assert imported.source["inspect_mean"] == pytest.approx(0.5) and imported.source["mean"] == 0.5
    meta = rundir.read_run_json(tmp_path / "run")
    assert meta["model"]["evaluated"] == "mockllm/model"
    assert meta["imported"]["scorer"] == "match"


@pytest.mark.integration
def test_inspect_epochs_and_partial_credit(tmp_path):
    from inspect_ai.dataset import Sample
    from inspect_ai.scorer import Score, Target, accuracy, scorer
    from inspect_ai.solver import TaskState

    @scorer(metrics=[accuracy()])
    def half():
        async def score(state: TaskState, target: Target) -> Score:
            return Score(value="P" if state.output.completion == "meh" else "C")

        return score

    path = run_inspect(tmp_path, [Sample(input="x?", target="y", id=1)], ["meh"], [half()], epochs=2)
    imported = read_inspect(path)
    assert [r["item_id"] for r in imported.rows] == ["tiny_qa/1#1", "tiny_qa/1#2"]
    assert [r["score"] for r in imported.rows] == [0.5, 0.5]


@pytest.mark.integration
def test_bad_inspect_logs(qa_log, tmp_path):
    from inspect_ai.dataset import Sample
    from inspect_ai.scorer import Score, Target, accuracy, scorer
    from inspect_ai.solver import TaskState

    with pytest.raises(
        CGapsError, match=r"no scorer 'matc'. Did you mean 'match'\? Scorers: match, includes"
    ):
        read_inspect(qa_log, scorer="matc")
    junk = tmp_path / "junk.eval"
    junk.write_bytes(b"not a zip")
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["import", "inspect", str(junk), "--out", str(run)])
    assert isinstance(result.exception, CGapsError) and "junk.eval: not a readable inspect-ai log" in str(
        result.exception
    )
    assert "\n" not in str(result.exception)
    assert not (run / rundir.ITEMS).exists()

    @scorer(metrics=[accuracy()])
    def graded(value):
        async def score(state: TaskState, target: Target) -> Score:
            return Score(value=value)

        return score

    for value, message in (
        (2.0, r"field 'scores.graded' is 2.0, outside \[0, 1\]"),
        ("maybe", r"field 'scores.graded' is 'maybe', which inspect does not read"),
    ):
        path = run_inspect(
            tmp_path / str(value), [Sample(input="q", target="t", id="s1")], ["r"], [graded(value)]
        )
        with pytest.raises(CGapsError, match=rf"{path}: sample 's1': {message}"):
            read_inspect(path)


@pytest.mark.integration
def test_the_import_keeps_what_the_model_saw_and_what_the_log_says(tmp_path):
    """A multiple-choice template with its options and a system_message() prompt reach the items;
    the log's generation config, limit and epochs reach run.json, never our defaults."""
    from inspect_ai import Task, eval
    from inspect_ai.dataset import Sample
    from inspect_ai.model import ModelOutput, ModelUsage, get_model
    from inspect_ai.scorer import choice
    from inspect_ai.solver import multiple_choice, system_message

    samples = [
        Sample(input="Which is a fruit?", choices=["car", "apple", "rock"], target="B", id="q1"),
        Sample(input="Which is blue?", choices=["sky", "grass"], target="A", id="q2"),
        Sample(input="Which is hot?", choices=["ice", "fire"], target="B", id="q3"),
    ]
    outs = []
    for text in ("ANSWER: B", "ANSWER: B"):
        out = ModelOutput.from_content("mockllm/model", text)
        out.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)
        outs.append(out)
    task = Task(
        dataset=samples,
        solver=[system_message("You are careful."), multiple_choice()],
        scorer=choice(),
        name="mc",
    )
    (log,) = eval(
        task,
        model=get_model("mockllm/model", custom_outputs=outs),
        log_dir=str(tmp_path / "logs"),
        display="none",
        max_connections=1,
        limit=2,
        max_tokens=16,
    )
    items = write_imported_run(tmp_path / "run", read_inspect(log.location), name=log.location)
    first = items.set_index("item_id").loc["mc/q1"]
    assert "Which is a fruit?" in first["prompt"] and "B) apple" in first["prompt"]  # the template, listed
    messages = json.loads(first["messages"])
    assert [m["role"] for m in messages] == ["system", "user"] and messages[0][
        "content"
    ] == "You are careful."
    assert json.loads(first["meta"])["input"] == "Which is a fruit?"
    meta = rundir.read_run_json(tmp_path / "run")
    assert meta["config"]["max_new_tokens"] == 16  # the log's, not our default 256
    assert meta["imported"]["generate_config"]["max_tokens"] == 16
    assert meta["imported"]["subset"] == {
        "limit": 2,
        "sample_id": None,
        "samples_in_task": 3,
        "samples_logged": 2,
    }
    assert meta["imported"]["epochs"] == 1


@pytest.mark.integration
def test_errored_samples_are_named_and_skipped_only_on_request(tmp_path):
    from inspect_ai import Task, eval
    from inspect_ai.dataset import Sample
    from inspect_ai.model import ModelOutput, ModelUsage, get_model
    from inspect_ai.scorer import includes
    from inspect_ai.solver import Generate, TaskState, generate, solver

    @solver
    def breaks_on_b():
        async def solve(state: TaskState, gen: Generate) -> TaskState:
            if state.sample_id == "b":
                raise RuntimeError("the tool server went away")
            return state

        return solve

    outs = []
    for text in ("4", "Jupiter"):
        out = ModelOutput.from_content("mockllm/model", text)
        out.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)
        outs.append(out)
    samples = [
        Sample(input="2+2?", target="4", id="a"),
        Sample(input="Capital?", target="Paris", id="b"),
        Sample(input="Largest planet?", target="Jupiter", id="c"),
    ]
    task = Task(dataset=samples, solver=[breaks_on_b(), generate()], scorer=includes(), name="tiny_qa")
    (log,) = eval(
        task,
        model=get_model("mockllm/model", custom_outputs=outs),
        log_dir=str(tmp_path / "logs"),
        display="none",
        max_connections=1,
        fail_on_error=False,
    )
    assert log.status == "success"
    with pytest.raises(
        CGapsError,
        match=r"1 of 3 sample\(s\) errored .* sample 'b' .*the tool server went away.*; pass --skip-errors to import the other 2",
    ):
        read_inspect(log.location)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["import", "inspect", log.location, "--out", str(run), "--skip-errors"])
    assert result.exit_code == 0, result.output
    items = rundir.read_items(run)
    assert items["item_id"].tolist() == ["tiny_qa/a", "tiny_qa/c"]
    assert rundir.read_run_json(run)["imported"]["skipped_errors"] == ["b#1"]
