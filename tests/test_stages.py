"""The stage graph is declared once (cgaps.stages) and everything else agrees with it."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from cgaps import stages
from cgaps.config import RunConfig, stage_config, stage_fields

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "cgaps"


def test_every_run_file_has_one_writer_and_run_files_are_their_union():
    writers: dict[str, list[str]] = {}
    for s in stages.STAGES:
        for f in (*s.writes, *s.working):
            writers.setdefault(f, []).append(s.name)
    assert {f: w for f, w in writers.items() if len(w) > 1} == {}
    assert set(stages.RUN_FILES) == set(writers) | {stages.RUN_JSON}


def test_the_edges_are_what_the_stages_read():
    assert stages.upstream("score") == ("items", "evaluate", "extract")
    # it reads concepts.parquet, and the item text (its words) which holds evaluation's responses
    assert stages.upstream("label") == ("items", "evaluate", "extract", "score")
    # an extraction of the prompts alone does not read the responses
    assert "evaluate" not in stages.upstream("extract", ("item_id", "prompt", "messages"))
    # validate reads the calls (where they land) and the theme tests (what the run could have found)
    assert stages.downstream("score") == ("label", "validate", "confirm", "report")
    assert stages.downstream("label") == ("confirm", "report")  # confirm reads the labels it names


def test_every_stage_is_a_command_with_a_cli_module_and_a_pipeline_runner():
    from cgaps.cli.main import COMMANDS, LOCKED
    from cgaps.pipeline import RUNNERS

    names = [c[0] for c in COMMANDS]
    for s in stages.STAGES:
        assert s.name in names and (SRC / "cli" / f"{s.name}.py").exists()
        assert s.name in LOCKED  # every stage command holds the writer lock
    assert set(RUNNERS) == set(stages.BY_NAME)


@pytest.mark.integration
def test_no_second_list_of_stages_in_the_package():
    """A tuple or list literal naming three or more stages outside stages.py is a second list (a
    config field's ``stages=`` tag names the stages that read it, which is not a list of stages)."""
    names = set(stages.BY_NAME)
    found = []
    for path in SRC.rglob("*.py"):
        if path.name == "stages.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        tags = {id(k.value) for k in ast.walk(tree) if isinstance(k, ast.keyword) and k.arg == "stages"}
        for node in ast.walk(tree):
            if id(node) in tags:
                continue
            if isinstance(node, ast.Tuple | ast.List | ast.Set):
                words = {
                    e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)
                }
                if len(words & names) >= 3:
                    found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert found == []


def test_the_readme_stage_table_is_the_graph():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `cgaps (\w[\w-]*)[^|]*\| ([^|]*) \|", text, re.M)
    table = {}
    for name, writes in rows:
        if name in stages.BY_NAME and name not in table:
            table[name] = re.findall(r"`([^`]+)`", writes)
    assert list(table) == [s.name for s in stages.STAGES]
    for s in stages.STAGES:
        assert table[s.name] == [*s.writes_columns, *s.writes], s.name


def test_each_config_field_names_stages_that_exist():
    for f in dataclasses.fields(RunConfig):
        assert set(f.metadata.get("stages", ())) <= set(stages.BY_NAME), f.name


def test_stage_config_records_what_the_stage_follows_and_not_speed():
    cfg = RunConfig(batch_size=3, presence=0.3)
    assert "batch_size" not in stage_config("extract", cfg)  # speed only: never makes a run stale
    assert stage_config("score", cfg)["presence"] == 0.3
    assert stage_config("label", cfg)["presence"] == 0.3  # labels read the thresholded matrix
    assert stage_config("label", cfg)["label"]["enrich_p"] == cfg.label.enrich_p
    assert "label" not in stage_fields("score")


def test_yaml_sections_and_prefixed_options_reach_their_stage(tmp_path):
    from cgaps.config import load_yaml
    from cgaps.errors import CGapsError

    path = tmp_path / "c.yaml"
    path.write_text("presence: 0.3\nlabel:\n  enrich_p: 0.25\nreport:\n  top: 7\n")
    cfg = load_yaml(path)
    assert cfg.presence == 0.3 and cfg.label.enrich_p == 0.25 and cfg.report.top == 7
    # a command-line option changes only its own field of a section
    assert cfg.replace(label={"tokens": 3}).label.enrich_p == 0.25
    path.write_text("label:\n  enrich_pp: 0.25\n")
    with pytest.raises(CGapsError, match="section 'label': unknown key 'enrich_pp'. Did you mean 'enrich_p'"):
        load_yaml(path)
    path.write_text("also_run: robustnes\n")
    with pytest.raises(CGapsError, match="'robustnes'. Did you mean 'robustness'"):
        load_yaml(path)


def test_run_takes_flags_only_and_sections_as_prefixed_flags(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import cgaps.pipeline
    from cgaps.cli.main import app

    seen = {}
    monkeypatch.setattr(cgaps.pipeline, "run_pipeline", lambda cfg, out, **kw: seen.update(cfg=cfg) or {})
    result = CliRunner().invoke(
        app, ["run", "--out", str(tmp_path / "r"), "--suite", "gsm8k", "--label-enrich-p", "0.3"]
    )
    assert result.exit_code == 0, result.output
    assert seen["cfg"].suite == "gsm8k" and seen["cfg"].label.enrich_p == 0.3
