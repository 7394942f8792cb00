"""Never silently wrong (issue 14): stale stages rerun, one writer per run, no stray temporaries,
tables that carry the config that made them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pandas as pd
import pytest

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.errors import CGapsError

ITEMS = pd.DataFrame(
    {
        "item_id": ["a", "b", "c"],
        "benchmark": ["x", "x", "x"],
        "prompt": ["1+1?", "2+2?", "3+3?"],
        "reference": ["2", "4", "6"],
        "response": ["2", "4", "5"],
        "score": [1.0, 1.0, 0.0],
    }
)


# ---------------------------------------------------------------- the pipeline reruns stale stages


@pytest.fixture
def fake_stages(monkeypatch):
    """Replace every stage the pipeline runs with one that records its call and, like the real
    ones, writes its output and records its inputs; returns the list of calls."""
    import cgaps.chance
    import cgaps.evaluate.stage
    import cgaps.extract.stage
    import cgaps.labels.stage
    import cgaps.models
    import cgaps.report.build
    import cgaps.scoring

    calls: list[str] = []

    def evaluate_run(run_dir, cfg, backend=None):
        calls.append("evaluate")
        items = rundir.read_items(run_dir)
        rundir.update_run_json(run_dir, inputs={"evaluate": rundir.stage_record(items, "evaluate")})
        return items  # like the real one: the table it wrote

    def extract_run(run_dir, cfg, backend=None):
        calls.append("extract")
        rundir.write_table(
            pd.DataFrame({"item_id": ["a"], "concept": [0], "value": [1.0]}), run_dir / rundir.SALIENCY
        )
        # stand-in tables are not the schemas' (write_table would refuse them): plain pandas
        pd.DataFrame({"concept": [0]}).to_parquet(run_dir / rundir.CONTEXTS)
        rundir.update_run_json(
            run_dir,
            inputs={"extract": rundir.stage_record(rundir.read_items(run_dir), "extract", run_dir=run_dir)},
        )

    def writes(stage, *files):
        def run(run_dir, *args, **kwargs):
            calls.append(stage)
            items = rundir.read_items(run_dir)
            cfg = args[0] if args and isinstance(args[0], RunConfig) else RunConfig()
            for name in files:  # like the real ones: the output follows the scores and the config
                if name.endswith(".parquet"):
                    made = {"stage": [stage], "scores": [items["score"].sum()], "presence": [cfg.presence]}
                    pd.DataFrame(made).to_parquet(run_dir / name)  # a stand-in: not write_table
                else:
                    (run_dir / name).write_text(stage)
            record = rundir.stage_record(items, stage, run_dir=run_dir, config=cfg)
            rundir.update_run_json(run_dir, inputs={stage: record})

        return run

    monkeypatch.setattr(cgaps.evaluate.stage, "evaluate_run", evaluate_run)
    monkeypatch.setattr(cgaps.extract.stage, "extract_run", extract_run)
    monkeypatch.setattr(cgaps.models, "load_backend", lambda name, *a, **k: SimpleNamespace(name=name))
    monkeypatch.setattr(cgaps.scoring, "score_run", writes("score", rundir.CONCEPTS, rundir.OVERLAP))
    # the score step's count of strengths at chance reads real tables: nothing to count in stand-ins
    monkeypatch.setattr(cgaps.chance, "record_strengths_at_chance", lambda *a, **k: None)
    monkeypatch.setattr(cgaps.labels.stage, "label_run", writes("label", rundir.LABELS, rundir.THEMES))
    monkeypatch.setattr(cgaps.report.build, "build_report", writes("report", rundir.REPORT))
    return calls


def test_pipeline_reruns_only_stages_whose_inputs_changed(tmp_path, fake_stages):
    """Staleness is by content: a stage runs again only when what it read changed."""
    from cgaps.pipeline import run_pipeline

    cfg = RunConfig()
    rundir.write_table(ITEMS, tmp_path / rundir.ITEMS)
    # graded by `cgaps grade`, which records the evaluation's inputs
    rundir.update_run_json(
        tmp_path, config=cfg.to_dict(), inputs={"evaluate": rundir.stage_record(ITEMS, "evaluate")}
    )
    run_pipeline(cfg, tmp_path)  # no saliency yet
    assert fake_stages == ["extract", "score", "label", "report"]
    fake_stages.clear()
    run_pipeline(cfg, tmp_path)  # everything current: nothing runs
    assert fake_stages == []
    # other responses (`cgaps grade --responses`): extraction is stale; it writes the same saliency,
    # so scoring stays current; labels (their words) and the report read the responses: run again
    rundir.write_table(ITEMS.assign(response=["two", "four", "six"]), tmp_path / rundir.ITEMS)
    run_pipeline(cfg, tmp_path)
    assert fake_stages == ["extract", "label", "report"]
    fake_stages.clear()
    # scored items whose prompts changed since evaluation: every stage that reads the prompts
    rundir.write_table(ITEMS.assign(prompt=["9+9?", "2+2?", "3+3?"]), tmp_path / rundir.ITEMS)
    run_pipeline(cfg, tmp_path)
    assert fake_stages == ["evaluate", "extract", "label", "report"]
    fake_stages.clear()
    # one score changed: scoring, then what reads the concepts (labels, the report); nothing else
    items = rundir.read_items(tmp_path)
    rundir.write_table(items.assign(score=[1.0, 0.0, 0.0]), tmp_path / rundir.ITEMS)
    run_pipeline(cfg, tmp_path)
    assert fake_stages == ["score", "label", "report"]
    fake_stages.clear()
    # another scoring config: scoring and its readers again
    run_pipeline(cfg.replace(presence=0.3), tmp_path)
    assert fake_stages == ["score", "label", "report"]


def test_extraction_without_recorded_inputs_is_redone(tmp_path, fake_stages):
    from cgaps.pipeline import run_pipeline

    cfg = RunConfig()
    rundir.write_table(ITEMS, tmp_path / rundir.ITEMS)
    rundir.write_table(
        pd.DataFrame({"item_id": ["a"], "concept": [0], "value": [1.0]}), tmp_path / rundir.SALIENCY
    )
    # a cgaps extraction from before digests
    rundir.update_run_json(tmp_path, config=cfg.to_dict(), sae={"id": "s", "width": 8})
    run_pipeline(cfg, tmp_path)
    assert fake_stages == ["extract", "score", "label", "report"]


def test_imported_saliency_is_trusted(tmp_path, fake_stages):
    from cgaps.pipeline import run_pipeline

    cfg = RunConfig()
    rundir.write_table(ITEMS, tmp_path / rundir.ITEMS)
    rundir.write_table(
        pd.DataFrame({"item_id": ["a"], "concept": [0], "value": [1.0]}), tmp_path / rundir.SALIENCY
    )
    rundir.update_run_json(tmp_path, config=cfg.to_dict(), n_concepts=8)  # no `sae`: another tool's
    run_pipeline(cfg, tmp_path)
    assert fake_stages == ["score", "label", "report"]


def test_a_first_extraction_killed_before_run_json_is_stale(tmp_path):
    """saliency.parquet in place, run.json not updated, the shard folder left: stale, not done."""
    from cgaps.runstate import run_status

    rundir.write_table(ITEMS, tmp_path / rundir.ITEMS)
    rundir.update_run_json(tmp_path, inputs={"evaluate": rundir.stage_record(ITEMS, "evaluate")})
    rundir.write_table(
        pd.DataFrame({"item_id": ["a"], "concept": [0], "value": [1.0]}), tmp_path / rundir.SALIENCY
    )
    (tmp_path / rundir.SALIENCY_SHARDS).mkdir()
    state = {s.stage: s for s in run_status(tmp_path)}["extract"]
    assert state.state == "stale" and "stopped before it recorded its inputs" in state.reason


def test_stages_record_the_digest_of_their_inputs(tmp_path):
    from cgaps.evaluate.stage import grade_run

    rundir.write_table(ITEMS, tmp_path / rundir.ITEMS)
    grade_run(tmp_path)
    items = rundir.read_items(tmp_path)
    cols = ["item_id", "prompt", "messages", "choices", "answer_type"]
    assert rundir.read_run_json(tmp_path)["inputs"]["evaluate"] == {
        "columns": cols,
        "digest": rundir.items_digest(items, "evaluate"),
        "by_column": {c: rundir.items_digest(items, "evaluate", (c,)) for c in cols},
    }
    assert rundir.stage_is_current(tmp_path, "evaluate", items) is True
    assert rundir.stage_is_current(tmp_path, "extract", items) is None
    assert rundir.stage_is_current(tmp_path, "evaluate", items.assign(prompt="other")) is False


def test_items_digest_against_a_plain_rendering():
    # the digest covers exactly the stage's columns, in row order, NaN and a missing column as null
    import hashlib
    import json

    items = ITEMS.assign(messages=[None, '[{"role": "user", "content": "hi"}]', float("nan")])
    lines = "".join(
        json.dumps(
            [
                r["item_id"],
                r["prompt"],
                r["messages"] if isinstance(r["messages"], str) else None,
                r["response"],
            ]
        )
        + "\n"
        for r in items.to_dict("records")
    )
    assert rundir.items_digest(items, "extract") == hashlib.sha256(lines.encode()).hexdigest()[:16]
    assert rundir.items_digest(items.assign(reference="x", score=0.5), "extract") == rundir.items_digest(
        items, "extract"
    )
    assert rundir.items_digest(items.iloc[::-1], "extract") != rundir.items_digest(items, "extract")
    assert rundir.items_digest(items.assign(response="x"), "evaluate") == rundir.items_digest(
        items, "evaluate"
    )


# ---------------------------------------------------------------- one writer, no stray temporaries


def test_stale_temporaries_are_removed_when_a_stage_starts(tmp_path):
    from cgaps.evaluate.stage import grade_run

    rundir.write_table(ITEMS, tmp_path / rundir.ITEMS)
    (tmp_path / rundir.SALIENCY_SHARDS).mkdir()
    stale = [
        tmp_path / ".concepts.parquet.abc123.tmp",
        tmp_path / rundir.SALIENCY_SHARDS / ".shard-00000.parquet.x9.tmp",
    ]
    for path in stale:
        path.write_bytes(b"half")
    keep = tmp_path / "notes.tmp"  # not the atomic writes' pattern
    keep.write_text("mine")
    grade_run(tmp_path)
    assert not any(p.exists() for p in stale) and keep.exists()


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    from cgaps.evaluate.stage import grade_run

    rundir.write_table(ITEMS, tmp_path / rundir.ITEMS)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from cgaps import rundir\n"
            "with rundir.writing(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        before = (tmp_path / rundir.ITEMS).read_bytes()
        with pytest.raises(CGapsError, match=rf"another cgaps process \(pid {holder.pid}\) is writing") as e:
            grade_run(tmp_path)
        assert "\n" not in str(e.value)
        assert (tmp_path / rundir.ITEMS).read_bytes() == before
    finally:
        holder.kill()
        holder.wait()
    grade_run(tmp_path)  # the lock went with its holder


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    with rundir.writing(tmp_path), rundir.writing(tmp_path):
        pass
    with rundir.writing(tmp_path):  # released: taken again
        assert (tmp_path / rundir.LOCK).read_text() == f"{os.getpid()}\n"


def test_a_run_directory_that_is_a_file_is_a_one_line_error(tmp_path):
    (tmp_path / "r").write_text("")
    with pytest.raises(CGapsError, match="cannot be used as a run directory"), rundir.writing(tmp_path / "r"):
        pass


# ---------------------------------------------------------------- tables carry their scoring config


@pytest.fixture
def scorable(tmp_path):
    """A small run ready for `cgaps score`: two benchmarks, 40 items, 8 concepts."""
    import numpy as np

    rng = np.random.default_rng(0)
    n = 40
    items = pd.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(n)],
            "benchmark": ["x", "y"] * (n // 2),
            "prompt": [f"q{k}" for k in range(n)],
            "reference": ["r"] * n,
            "response": ["r"] * n,
            "score": rng.integers(0, 2, n).astype(float),
        }
    )
    rows = [(f"i{k}", c, float(rng.random() + 0.1)) for k in range(n) for c in range(8) if rng.random() < 0.6]
    rundir.write_table(items, tmp_path / rundir.ITEMS)
    rundir.write_table(
        pd.DataFrame(rows, columns=["item_id", "concept", "value"]), tmp_path / rundir.SALIENCY
    )
    rundir.update_run_json(tmp_path, n_concepts=8, config=RunConfig(min_support=2).to_dict())
    return tmp_path


def test_score_stores_its_config_in_both_tables(scorable):
    from cgaps.config import SCORING_FIELDS
    from cgaps.scoring import score_run

    score_run(scorable, RunConfig(fdr=0.2, min_support=2))
    stored = rundir.read_run_json(scorable)["config"]
    want = {k: stored[k] for k in (*SCORING_FIELDS, "seed")}
    assert want["fdr"] == 0.2
    assert rundir.read_table_config(scorable / rundir.CONCEPTS) == want
    assert rundir.read_table_config(scorable / rundir.OVERLAP) == want
    # the metadata does not change what the table reads back as
    back = pd.read_parquet(scorable / rundir.CONCEPTS)
    assert list(back.columns) == [*rundir.CONCEPT_COLUMNS, "p_value", "p_min", "theme"] and len(back) == 8 * 3
    assert rundir.read_table_config(scorable / rundir.THEME_TESTS) == want


def test_score_killed_before_run_json_never_mislabels_the_report(scorable, monkeypatch):
    from cgaps.report.build import report_context
    from cgaps.scoring import score_run

    score_run(scorable, RunConfig(fdr=0.05, min_support=2))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rundir, "update_run_json", killed)
    with pytest.raises(KeyboardInterrupt):
        score_run(scorable, RunConfig(fdr=0.2, min_support=3))
    monkeypatch.undo()
    assert rundir.read_run_json(scorable)["config"]["fdr"] == 0.05  # run.json is one score behind
    ctx = report_context(scorable)
    assert ctx["fdr"] == 0.2 and ctx["min_support"] == 3  # what the tables were made with
    headline = dict(ctx["header"]["headline"])
    assert headline["fdr"] == "0.2" and headline["min_support"] == "3"


def test_tables_from_two_score_runs_are_refused(scorable, monkeypatch):
    from cgaps.report.build import report_context
    from cgaps.scoring import score_run

    score_run(scorable, RunConfig(fdr=0.05, min_support=2))
    real = rundir.write_table

    def killed_before_concepts(df, path, scoring_config=None):
        if path.name == rundir.CONCEPTS:
            raise KeyboardInterrupt
        real(df, path, scoring_config)

    monkeypatch.setattr(rundir, "write_table", killed_before_concepts)
    with pytest.raises(KeyboardInterrupt):
        score_run(scorable, RunConfig(fdr=0.2, min_support=2))
    monkeypatch.undo()
    with pytest.raises(
        CGapsError, match=r"overlap.parquet: computed with other scoring config .*fdr 0.2 there, 0.05"
    ):
        report_context(scorable)


def test_report_falls_back_to_run_json_for_tables_without_config(scorable):
    from cgaps.report.build import report_context
    from cgaps.scoring import score_run

    score_run(scorable, RunConfig(fdr=0.1, min_support=2))
    for name in (rundir.CONCEPTS, rundir.OVERLAP):  # as an older cgaps wrote them
        rundir.write_table(pd.read_parquet(scorable / name), scorable / name)
        assert rundir.read_table_config(scorable / name) is None
    assert report_context(scorable)["fdr"] == 0.1


def test_score_refuses_saliency_extracted_from_other_texts(scorable):
    from cgaps.errors import CGapsError
    from cgaps.scoring import score_run

    items = rundir.read_items(scorable)
    rundir.update_run_json(scorable, inputs={"extract": rundir.stage_record(items, "extract")})
    score_run(scorable)  # extracted from these very texts: scores
    # `cgaps grade --responses` replaced a response after extraction
    rundir.write_table(items.assign(response=["r"] * (len(items) - 1) + ["changed"]), scorable / rundir.ITEMS)
    with pytest.raises(CGapsError, match="cgaps extract"):
        score_run(scorable)


# ---------------------------------------------------------------- cgaps status


def _status(run):
    from typer.testing import CliRunner

    from cgaps.cli.main import app

    result = CliRunner().invoke(app, ["status", str(run)])
    rows = {}
    for line in result.stdout.splitlines():
        if (
            not line.strip()
        ):  # what the data could have found follows (test_status_says_what_the_data_could_have_found)
            break
        stage, state, reason = line.split(None, 2)
        rows[stage] = (state, reason)
    return result.exit_code, rows


def test_status_names_each_stage_state_and_why(scorable):
    from cgaps.evaluate.stage import grade_run
    from cgaps.labels.stage import label_run
    from cgaps.report.build import build_report
    from cgaps.scoring import score_run

    code, rows = _status(scorable)
    assert code == 1
    assert rows["items"][0] == "done" and rows["items"][1].startswith("40 items (x 20, y 20)")
    assert rows["evaluate"][0] == "done"  # scored before digests: trusted, like the pipeline does
    assert rows["extract"][0] == "done"  # saliency from another tool (no `sae` record)
    assert rows["score"] == ("missing", f"no concepts.parquet  -> cgaps score {scorable}")
    assert rows["label"][0] == "missing" and rows["report"][0] == "missing"
    grade_run(scorable)
    score_run(scorable)
    label_run(scorable)
    build_report(scorable)
    code, rows = _status(scorable)
    assert {s: r[0] for s, r in rows.items()} == {
        "items": "done",
        "evaluate": "done",
        "extract": "done",
        "score": "done",
        "label": "done",
        "robustness": "missing",
        "validate": "missing",
        "confirm": "missing",
        "report": "done",
    }
    assert code == 0  # robustness, validate and confirm are optional
    # other scores (`cgaps grade --responses`): scoring and what follows it are stale
    items = rundir.read_items(scorable)
    rundir.write_table(items.assign(score=1.0 - items["score"]), scorable / rundir.ITEMS)
    code, rows = _status(scorable)
    assert code == 1
    assert rows["score"][0] == "stale" and "column(s) score of items.parquet changed" in rows["score"][1]
    assert rows["label"] == ("stale", f"depends on score, which is stale  -> cgaps label {scorable}")
    assert rows["report"] == ("stale", f"depends on score, which is stale  -> cgaps report {scorable}")
    assert rows["evaluate"][0] == rows["extract"][0] == "done"
    # other prompts: the evaluation is stale, and names the column
    rundir.write_table(items.assign(prompt="new"), scorable / rundir.ITEMS)
    _, rows = _status(scorable)
    assert rows["evaluate"][0] == "stale" and "column(s) prompt of items.parquet" in rows["evaluate"][1]
    assert rows["score"][0] == "stale" and "depends on evaluate" in rows["score"][1]
    # the same items again: by content, every stage is current again (file times do not count)
    rundir.write_table(items, scorable / rundir.ITEMS)
    code, rows = _status(scorable)
    assert code == 0 and rows["score"][0] == rows["label"][0] == rows["report"][0] == "done"
    # a changed saliency file makes the score stale (its digest is recorded)
    sal = pd.read_parquet(scorable / rundir.SALIENCY)
    rundir.write_table(sal.iloc[1:], scorable / rundir.SALIENCY)
    _, rows = _status(scorable)
    assert rows["score"][0] == "stale" and "saliency.parquet changed since it ran" in rows["score"][1]


@pytest.mark.integration
def test_status_says_what_the_data_could_have_found(tmp_path):
    """After `cgaps score`: the score line counts strengths at chance as the report does
    (run.json counts.strengths_at_chance), and the power sentences of run.json follow the stages."""
    import numpy as np
    from typer.testing import CliRunner

    from cgaps.chance import run_chance, strengths_at_chance
    from cgaps.cli.main import app
    from cgaps.runtables import load_run
    from cgaps.scoring.power import summary_sentences

    # yes/no items (chance 50%) at 10% accuracy; concept 0 on 40 items with 22 right (a strength
    # against 10%, at chance against 50%), concept 1 on 40 others with 38 right (above chance)
    rng = np.random.default_rng(1)
    n = 200
    score = (rng.random(n) < 0.1).astype(float)
    score[:40] = (np.arange(40) < 22).astype(float)
    score[40:80] = (np.arange(40) < 38).astype(float)
    items = pd.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(n)],
            "benchmark": "x",
            "prompt": [f"q{k}" for k in range(n)],
            "reference": "yes",
            "response": "yes",
            "answer_type": "yesno",
            "score": score,
        }
    )
    rows = [(f"i{k}", 0, 1.0) for k in range(40)] + [(f"i{k}", 1, 1.0) for k in range(40, 80)]
    rows += [
        (f"i{k}", c, float(rng.random() + 0.1)) for k in range(n) for c in range(2, 8) if rng.random() < 0.3
    ]
    rundir.write_table(items, tmp_path / rundir.ITEMS)
    rundir.write_table(
        pd.DataFrame(rows, columns=["item_id", "concept", "value"]), tmp_path / rundir.SALIENCY
    )
    rundir.update_run_json(tmp_path, n_concepts=8, config=RunConfig(presence=0.0).to_dict())
    assert CliRunner().invoke(app, ["score", str(tmp_path)]).exit_code == 0  # the command writes the count
    meta = json.loads((tmp_path / rundir.RUN_JSON).read_text())
    run = load_run(tmp_path, results=True)
    want = strengths_at_chance(run.concepts, run_chance(run))
    counts = meta["counts"]
    assert counts["gaps_strong"] == 2 and counts["strengths_at_chance"] == want == 1
    _, rows_ = _status(tmp_path)
    assert rows_["score"] == ("done", f"{counts['gaps_weak']} gaps, 2 strengths (1 at chance)")
    out = CliRunner().invoke(app, ["status", str(tmp_path)]).stdout.splitlines()
    notes = out[out.index("") + 1 :]
    calls = sum(counts[k] for k in ("gaps_weak", "gaps_strong", "theme_gaps_weak", "theme_gaps_strong"))
    assert notes == summary_sentences(meta["power"], calls) and len(notes) == 1
    assert notes[0].startswith("With these items, a concept firing on 30 items")
    # a stale score says nothing about what it could have found
    rundir.write_table(items.assign(score=1.0 - items["score"]), tmp_path / rundir.ITEMS)
    out = CliRunner().invoke(app, ["status", str(tmp_path)]).stdout.splitlines()
    assert "" not in out


def test_status_by_content_a_copied_run_is_current_and_a_rescore_reaches_its_readers(scorable, tmp_path):
    import shutil
    import time

    from cgaps.evaluate.stage import grade_run
    from cgaps.labels.stage import label_run
    from cgaps.report.build import build_report
    from cgaps.scoring import score_run

    grade_run(scorable)
    score_run(scorable)
    label_run(scorable)
    build_report(scorable)
    time.sleep(0.01)
    copy = tmp_path / "copy"
    shutil.copytree(scorable, copy)  # new file times, the same content
    (copy / rundir.ITEMS).touch()
    code, rows = _status(copy)
    assert code == 0 and all(state == "done" for state, _ in (rows[s] for s in ("score", "label", "report")))
    # a rescore that changes concepts.parquet makes the labels and the report stale, nothing else
    score_run(copy, RunConfig(min_support=2, fdr=0.2))
    _, rows = _status(copy)
    assert rows["score"][0] == "done"
    assert rows["label"][0] == "stale" and "concepts.parquet changed since it ran" in rows["label"][1]
    assert rows["report"][0] == "stale"
    assert rows["evaluate"][0] == rows["extract"][0] == "done"
    # a rewritten output is not what its stage wrote
    concepts = pd.read_parquet(copy / rundir.CONCEPTS)
    rundir.write_table(concepts.iloc[::-1], copy / rundir.CONCEPTS)
    _, rows = _status(copy)
    assert rows["score"][0] == "stale" and "is not what `cgaps score` wrote" in rows["score"][1]


def test_status_flags_a_score_killed_before_run_json(scorable, monkeypatch):
    from cgaps.scoring import score_run

    score_run(scorable, RunConfig(fdr=0.05, min_support=2))
    monkeypatch.setattr(rundir, "update_run_json", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        score_run(scorable, RunConfig(fdr=0.2, min_support=2))
    monkeypatch.undo()
    _, rows = _status(scorable)
    assert rows["score"][0] == "stale" and "fdr 0.2 there, 0.05 in run.json" in rows["score"][1]


def test_status_of_interrupted_stages_and_bad_input(tmp_path):
    rundir.write_table(ITEMS.drop(columns=["response", "score"]), tmp_path / rundir.ITEMS)
    (tmp_path / rundir.RESPONSES_PARTIAL).write_text('{"item_id": "a", "response": "2"}\n')
    (tmp_path / rundir.SALIENCY_SHARDS).mkdir()
    (tmp_path / rundir.SALIENCY_SHARDS / "shard-00000.json").write_text('{"item_ids": ["a", "b"]}')
    _, rows = _status(tmp_path)
    assert rows["evaluate"][0] == "missing" and "interrupted: 1 response(s)" in rows["evaluate"][1]
    assert (
        rows["extract"][0] == "missing" and "interrupted: 2 item(s) in saliency_shards/" in rows["extract"][1]
    )
    (tmp_path / rundir.ITEMS).write_bytes(b"not parquet")
    code, rows = _status(tmp_path)
    assert code == 1 and rows["items"][0] == "stale" and "not a readable Parquet file" in rows["items"][1]


# ---------------------------------------------------------------- new items into an existing run


@pytest.fixture
def suite(monkeypatch):
    """`cgaps items` loads whatever table this holds (``suite["items"]``)."""
    import cgaps.items

    holder = {"items": ITEMS.drop(columns=["response", "score"])}
    monkeypatch.setattr(cgaps.items, "load_suite", lambda *a, **k: holder["items"].copy())
    return holder


def _tree(folder):
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != rundir.LOCK
    }


def test_new_items_into_a_run_with_later_stages_need_force(tmp_path, suite):
    from cgaps.evaluate.stage import grade_run
    from cgaps.pipeline import items_run

    cfg = RunConfig(suite="toy")
    items_run(tmp_path, cfg)
    rundir.write_table(ITEMS, tmp_path / rundir.ITEMS)  # responses, then graded
    grade_run(tmp_path)
    rundir.write_table(
        pd.DataFrame({"item_id": ["a"], "concept": [0], "value": [1.0]}), tmp_path / rundir.SALIENCY
    )
    before = _tree(tmp_path)
    # the same items again: kept with their scores
    kept = items_run(tmp_path, cfg)
    assert "score" in kept.columns and _tree(tmp_path) == before
    # other items: refused, naming what would be lost, nothing written
    suite["items"] = suite["items"].assign(prompt=["5+5?", "2+2?", "3+3?"])
    with pytest.raises(
        CGapsError,
        match=r"drop the responses and scores of 3 items; make stale saliency.parquet\. Pass --force",
    ) as e:
        items_run(tmp_path, cfg)
    assert "\n" not in str(e.value) and _tree(tmp_path) == before
    # --force: written, and the stages that depended on the old items are marked stale
    items_run(tmp_path, cfg, force=True)
    assert rundir.read_items(tmp_path)["prompt"].iloc[0] == "5+5?"
    inputs = rundir.read_run_json(tmp_path)["inputs"]
    assert (
        inputs["evaluate"]
        == inputs["extract"]
        == {"stale": "new items were written by `cgaps items --force`"}
    )
    _, rows = _status(tmp_path)
    assert rows["evaluate"][0] == "missing"  # its scores went with the old items
    assert rows["extract"] == (
        "stale",
        f"new items were written by `cgaps items --force`  -> cgaps extract {tmp_path}",
    )


def test_items_cli_refusal_is_one_line_and_exit_2(tmp_path, suite, monkeypatch, capsys):
    from cgaps.cli.main import main
    from cgaps.pipeline import items_run

    items_run(tmp_path, RunConfig(suite="toy"))
    rundir.write_table(ITEMS, tmp_path / rundir.ITEMS)
    suite["items"] = suite["items"].assign(reference="x")
    before = _tree(tmp_path)
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["cgaps", "items", "toy", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err == ["loading toy ...", err[-1]] and "Traceback" not in err[-1]
    assert err[-1].startswith(f"error: {tmp_path}: holds later stages") and "--force" in err[-1]
    assert _tree(tmp_path) == before
    monkeypatch.setattr(sys, "argv", ["cgaps", "items", "toy", "--out", str(tmp_path), "--force"])
    main_rc = None
    try:
        main()
    except SystemExit as x:
        main_rc = x.code
    assert main_rc in (None, 0) and rundir.read_items(tmp_path)["reference"].eq("x").all()


# ---------------------------------------------------------------- every writing command holds the lock


@pytest.mark.integration
@pytest.mark.parametrize("command", ["report", "robustness", "validate", "train-sae"])
def test_every_writing_command_refuses_a_second_writer(tmp_path, command):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from cgaps import rundir\n"
            "with rundir.writing(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)",
            str(run),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    args = {
        "report": ["report", str(run)],
        "robustness": ["robustness", str(run)],
        "validate": ["validate", str(run)],
        "train-sae": ["train-sae", str(tmp_path / "conv.jsonl"), "--out", str(run), "--layer", "0"],
    }[command]
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        proc = subprocess.run(
            [sys.executable, "-m", "cgaps", *args], capture_output=True, text=True, timeout=120
        )
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        f"error: {run}: another cgaps process (pid {holder.pid}) is writing this run directory; "
        "wait for it to finish, or use another --out"
    )


# ---------------------------------------------------------------- progress off a terminal


def test_progress_lines_when_stderr_is_not_a_terminal(monkeypatch, capsys):
    import re
    import time

    from cgaps.console import progress_bar, progress_line

    monkeypatch.delenv("CGAPS_NO_PROGRESS")
    monkeypatch.setenv("CGAPS_PROGRESS_EVERY", "0.05")
    with progress_bar("extracting", 4) as advance:
        for _ in range(4):
            time.sleep(0.06)
            advance(1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 3  # ticks while working, and the last line
    pattern = r"extracting: \d/4 items \(\d+%\), [\d.]+ items/s, (\S+ left, )?\d+s elapsed"
    assert all(re.fullmatch(pattern, line) for line in lines), lines
    assert lines[-1].startswith("extracting: 4/4 items (100%)")
    assert (
        progress_line("x", 30, 120, "items", 10.0)
        == "x: 30/120 items (25%), 3 items/s, 30s left, 10s elapsed"
    )
    assert progress_line("x", 7, None, "tokens", 3700.0) == "x: 7 tokens, 0.00189 tokens/s, 1h01m elapsed"
    monkeypatch.setenv("CGAPS_NO_PROGRESS", "1")
    with progress_bar("quiet", 2) as advance:
        time.sleep(0.1)
        advance(2)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- what was really loaded


def _write_gguf(path, file_type):
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_file_type(file_type)
    writer.add_tensor("a.weight", np.zeros((4, 4), dtype=np.float32))
    writer.add_tensor("b.weight", np.ones(8, dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_source_names_file_quantisation_and_dequantisation(tmp_path, monkeypatch):
    import gguf

    from cgaps.models import loading

    monkeypatch.setenv("CGAPS_CACHE", str(tmp_path / "cache"))
    path = _write_gguf(tmp_path / "m.Q4_1.gguf", gguf.LlamaFileType.MOSTLY_Q4_1)
    record = loading.gguf_source(path)
    assert record == {
        "file": "m.Q4_1.gguf",
        "bytes": path.stat().st_size,
        "dequantised_to": "float32",
        "quantisation": "Q4_1",
        "tensor_types": {"F32": 1, "F16": 1},
    }
    # kept beside the converted folder, so later loads do not read the GGUF again
    folder = loading._gguf_cache_folder(path)
    folder.mkdir(parents=True)
    loading.gguf_source(path)
    assert json.loads((folder / loading.GGUF_SOURCE).read_text()) == record
    full = loading.describe_load(str(path), str(folder), "m.Q4_1", "torch.float32", "cpu")
    assert full == {
        "argument": str(path),
        "id": "m.Q4_1",
        "gguf": record,
        "dtype": "float32",
        "device": "cpu",
    }


@pytest.mark.integration
def test_a_loaded_backend_says_what_it_loaded(tmp_path):
    from cgaps.models import load_backend
    from cgaps.models.loading import loaded_record
    from helpers import save_tiny_model

    folder = save_tiny_model(tmp_path / "tiny")
    backend = load_backend(str(folder), device="cpu", dtype="float32")
    want = {
        "argument": str(folder),
        "id": "tiny",
        "path": str(folder.resolve()),
        "dtype": "float32",
        "device": "cpu",
    }
    assert backend.loaded == want
    assert loaded_record(backend, "reader") == {"reader": "tiny", "reader_loaded": want}
    from helpers import FakeGenerator

    assert loaded_record(FakeGenerator(), "evaluated") == {"evaluated": "fake"}  # loaded: None


# ---------------------------------------------------------------- prompts past the context


@pytest.fixture
def short_context():
    from cgaps.models.hf import HFBackend
    from helpers import embedded_tokenizer, tiny_causal_lm

    return HFBackend(tiny_causal_lm(max_positions=64), embedded_tokenizer(), "tiny", "cpu")


def test_long_prompts_are_cut_from_the_left_and_counted(short_context):
    import torch

    b = short_context
    long = [{"role": "user", "content": "word " * 100}]
    short = [{"role": "user", "content": "hi"}]
    out = b.generate([long, short], 8, 2)
    assert b.prompts_truncated == 1
    # the reference: greedy generation from the prompt's last 64 - 8 tokens, by hand
    from cgaps.models import format_chat

    ids = b.tokenizer(format_chat(b.tokenizer, long).text, add_special_tokens=False)["input_ids"]
    assert len(ids) > 64
    gen = b.model.generate(
        torch.tensor([ids[-56:]]), max_new_tokens=8, do_sample=False, pad_token_id=b.tokenizer.pad_token_id
    )
    assert out[0] == b.tokenizer.decode(gen[0, 56:], skip_special_tokens=True).strip()
    # log-likelihood: one prompt counted once, whatever its number of options
    b.loglikelihood([(long, "yes"), (long, "no"), (short, "yes")], 2)
    assert b.prompts_truncated == 2


def test_long_prompts_refused_on_request(short_context):
    b = short_context
    b.context_overflow = "refuse"
    long = [{"role": "user", "content": "word " * 100}]
    with pytest.raises(
        CGapsError,
        match=r"a prompt of \d+ tokens \('word word.*context of 64 tokens with 8 more.*context_overflow",
    ) as e:
        b.generate([long], 8, 1)
    assert "\n" not in str(e.value) and b.prompts_truncated == 0
    with pytest.raises(CGapsError, match="context_overflow"):
        RunConfig(context_overflow="cut")


def test_extraction_counts_what_max_length_cut():
    from cgaps.extract.stage import encode_items
    from helpers import embedded_tokenizer

    items = ITEMS.assign(prompt=["a " * 200, "2+2?", "3+3?"])
    encoded = encode_items(items, embedded_tokenizer(), RunConfig(max_length=64, span="prompt"))
    full = encode_items(items, embedded_tokenizer(), RunConfig(max_length=100_000, span="prompt"))
    assert [len(e.input_ids) for e in encoded] == [64, len(full[1].input_ids), len(full[2].input_ids)]
    assert [e.cut for e in encoded] == [len(full[0].input_ids) - 64, 0, 0]


# ---------------------------------------------------------------- control characters never reach output


def test_control_characters_never_reach_the_report(tmp_path):
    import re

    from cgaps.report.build import build_report
    from cgaps.scoring import score_run
    from helpers import make_suite, write_run

    items, sal = make_suite(0)
    items["prompt"] = items["prompt"] + "\x00 NUL \x1b[31m ESC \x7f DEL \x85"
    items["response"] = "x\x1b]0;title\x07"
    run = write_run(tmp_path, items, sal)
    score_run(run)
    html = build_report(run).read_text(encoding="utf-8")
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", html)
    assert "␀ NUL ␛[31m ESC ␡ DEL \ufffd" in html and "x␛]0;title␇" in html
    # names and ids with control characters are refused before anything prints them
    items["benchmark"] = items["benchmark"].replace({"bias": "bi\x1bas"})
    with pytest.raises(CGapsError, match=r"field 'benchmark' holds a control character \('bi\?as'\)"):
        score_run(write_run(tmp_path / "named", items, sal))


def test_control_characters_and_huge_lines_never_reach_the_terminal(capsys):
    import time

    from cgaps.console import MAX_LINE, error, info, visible_controls

    assert visible_controls("a\x00b\x1b[0mc\x7f\x85\td\ne\r") == "a␀b␛[0mc␡\ufffd\td\ne␍"
    t = time.perf_counter()
    error("benchmark " + "x" * 10_000_000 + " \x1b[2J")
    info("[bold]ok[/bold] \x1b]0;title\x07")
    assert time.perf_counter() - t < 5  # a 10 MB name used to hang the terminal
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: benchmark xxx") and err[0].endswith(
        f"... ({10_000_015 - MAX_LINE:,} more characters)"
    )
    assert err[1] == "ok ␛]0;title␇" and len(err) == 2
