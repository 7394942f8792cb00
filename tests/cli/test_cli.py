"""The command line: options generated from the config dataclasses, one-line errors with exit 2,
one output rule (status on stderr, results on stdout), the run.json schema, ``--force``.

Usage errors go through Typer's ``CliRunner`` (the click group formats them); user errors
(:class:`~cgaps.errors.CGapsError`) through :func:`cgaps.cli.main.main` in-process; one
subprocess test checks the exit codes of the installed ``cgaps`` script itself.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.core import TyperGroup
from typer.main import get_command
from typer.testing import CliRunner

from cgaps import rundir
from cgaps.cli._common import options_from
from cgaps.cli.main import COMMANDS, app, main
from cgaps.config import ReportConfig, RunConfig
from cgaps.errors import CGapsError
from cgaps.robustness.config import RobustnessConfig
from helpers import write_run

SRC = Path(__file__).resolve().parents[2] / "src" / "cgaps"


def _group():
    return get_command(app)


def _params(command: str) -> dict:
    return {p.name: p for p in _group().commands[command].params}


# ---------------------------------------------------------------- options from dataclasses


@pytest.mark.parametrize(
    ("command", "cls", "overrides"),
    [
        ("items", RunConfig, False),
        ("evaluate", RunConfig, True),
        ("extract", RunConfig, True),
        ("score", RunConfig, True),
        ("run", RunConfig, True),
        ("report", ReportConfig, True),
        ("robustness", RobustnessConfig, True),
    ],
)
def test_options_are_the_dataclass_fields(command, cls, overrides):
    """Each option of a field has the field's help; its default is the field's (or None: 'not given')."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    params = _params(command)
    generated = [name for name, p in params.items() if name in fields and p.param_type_name == "option"]
    assert generated, f"{command} exposes no {cls.__name__} field"
    for name in generated:
        p, f = params[name], fields[name]
        assert p.help == f.metadata["help"], name
        assert p.default == (None if overrides else f.default), name
    if cls is not RunConfig:  # report and robustness expose every config field of their options
        assert set(fields) <= set(params)
    if command == "run":  # every field can override the YAML file, a section's as --SECTION-FIELD
        sections = [f for f in fields.values() if f.metadata.get("section")]
        assert {f.name for f in fields.values() if f not in sections} <= set(params)
        for f in sections:
            sub = {g.name for g in dataclasses.fields(f.default_factory())}
            assert {f"{f.name}_{g}" for g in sub} <= set(params), f.name


def test_boolean_fields_get_their_flag_names():
    extract = _params("extract")["skip_special"]
    assert extract.opts == ["--skip-special"] and extract.secondary_opts == ["--keep-special"]
    cot = _params("items")["chain_of_thought"]
    assert cot.opts == ["--chain-of-thought"] and cot.secondary_opts == ["--no-chain-of-thought"]


def test_no_literal_defaults_in_the_commands():
    """A field's default lives in its dataclass only: no command repeats one as a literal."""
    defaults = {
        repr(f.default)
        for cls in (RunConfig, ReportConfig, RobustnessConfig)
        for f in dataclasses.fields(cls)
        if isinstance(f.default, int | float | str) and not isinstance(f.default, bool)
    }
    for name in ("evaluate", "extract", "items", "report", "robustness", "run", "score"):
        tree = ast.parse((SRC / "cli" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "Option" and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and first.value not in (None, Ellipsis, False):
                    assert repr(first.value) not in defaults, f"cli/{name}.py repeats default {first.value!r}"


@dataclasses.dataclass
class _Toy:
    n: int = dataclasses.field(default=3, metadata={"help": "A number."})
    name: str | None = dataclasses.field(default=None, metadata={"help": "A name."})
    loud: bool = dataclasses.field(default=True, metadata={"help": "Shout.", "flags": "--loud/--quiet"})


def _toy_app(**kw):
    seen = {}

    @options_from(_Toy, **kw)
    def toy(word: str = typer.Argument(...), *, options: dict) -> None:
        seen.update(options, word=word)

    toy_app = typer.Typer()
    toy_app.command()(toy)
    return toy_app, seen


def test_options_from_passes_what_was_given():
    # overriding a stored config: only what the command line gave
    toy_app, seen = _toy_app(over="run.json")
    result = CliRunner().invoke(toy_app, ["hi", "--n", "5", "--quiet"])
    assert result.exit_code == 0, result.output
    assert seen == {"word": "hi", "n": 5, "loud": False}
    # filling the dataclass: every field, defaults included
    toy_app, seen = _toy_app()
    result = CliRunner().invoke(toy_app, ["hi", "--name", "x"])
    assert result.exit_code == 0, result.output
    assert seen == {"word": "hi", "n": 3, "name": "x", "loud": True}
    CliRunner().invoke(toy_app, ["hi"])
    assert seen["name"] is None  # every field, its default included
    help_text = CliRunner().invoke(toy_app, ["--help"], env={"COLUMNS": "200"}).output
    assert "A number." in help_text and "--quiet" in help_text


def test_options_from_refuses_what_it_cannot_map():
    with pytest.raises(TypeError, match="no field"):
        options_from(_Toy, "nope")

    @dataclasses.dataclass
    class Listy:
        xs: list = dataclasses.field(default_factory=list, metadata={"help": "?"})

    with pytest.raises(TypeError, match="cannot be a command-line option"):
        options_from(Listy)(lambda *, options: None)
    with pytest.raises(TypeError, match="keyword parameter 'options'"):
        options_from(_Toy)(lambda: None)

    @dataclasses.dataclass
    class Required:
        n: int = dataclasses.field(metadata={"help": "?"})

    with pytest.raises(TypeError, match="plain default"):
        options_from(Required)(lambda *, options: None)
    options_from(Required, over="run.json")(lambda *, options: None)  # None: not given


def test_score_options_override_run_json_and_are_saved(tmp_path):
    run = write_run(tmp_path, meta={"n_concepts": 200, "config": {"min_support": 7, "fdr": 0.2}})
    result = CliRunner().invoke(app, ["score", str(run), "--fdr", "0.1"])
    assert result.exit_code == 0, result.output
    config = rundir.read_run_json(run)["config"]
    assert config["fdr"] == 0.1 and config["min_support"] == 7  # given vs kept


# ---------------------------------------------------------------- usage errors: one line, exit 2


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["score", "RUN", "--bogus"], "No such option: --bogus"),
        (["items", "probes", "--out", "RUN", "--limit", "x"], "'--limit'"),
        (["items", "probes"], "Missing option '--out'"),
        (["scroe", "RUN"], "No such command 'scroe'"),
        (["score", "FILE"], "is a file"),
        (["grade", "FILE"], "is a file"),
        (["run", "FILE", "--out", "FILE"], "is a file"),
        (["report", "RUN", "--top", "1.5"], "'--top'"),
        (["score"], "Missing argument"),
    ],
)
def test_usage_errors_are_one_line(tmp_path, args, fragment):
    (tmp_path / "FILE").write_text("not a directory")
    args = [str(tmp_path / a) if a in ("RUN", "FILE") else a for a in args]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0]
    assert "--help" in lines[0]  # where to look next
    assert not (tmp_path / "RUN").exists()  # nothing ran


def test_cgaps_alone_shows_the_help():
    result = CliRunner().invoke(app, [])
    assert result.exit_code == 2 and "Usage: cgaps" in result.stdout and "extract" in result.stdout
    assert result.stderr == ""


# ---------------------------------------------------------------- user errors through main()


def _main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["cgaps", *args])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


GOOD = pd.DataFrame(
    {
        "item_id": ["a", "b"],
        "benchmark": ["x", "x"],
        "prompt": ["p", "q"],
        "reference": ["1", "2"],
        "response": ["1", "3"],
        "score": [1.0, 0.0],
    }
)


@pytest.mark.parametrize(
    ("items", "fragment"),
    [
        (GOOD.drop(columns="reference"), "missing column(s) reference"),
        (GOOD.assign(extra=1), "unknown column(s) extra"),
        (GOOD.assign(item_id=["a", "a"]), "'item_id' has duplicates"),
        (GOOD.assign(score=[1.0, 1.5]), "field 'score'"),
        (GOOD.assign(score=[1.0, float("nan")]), "field 'score'"),
        (GOOD.iloc[:0], "empty"),
    ],
)
def test_bad_items_get_one_line_errors(tmp_path, monkeypatch, capsys, items, fragment):
    run = write_run(tmp_path / "run", items, meta={"n_concepts": 4})
    code, _, err = _main(monkeypatch, capsys, "score", str(run))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert "items.parquet" in lines[0] and fragment in lines[0]


def test_old_schema_and_missing_width_get_one_line_errors(tmp_path, monkeypatch, capsys):
    run = write_run(tmp_path / "run", GOOD, meta={"n_concepts": 4})
    (run / rundir.RUN_JSON).write_text(json.dumps({"schema_version": 0, "n_concepts": 4}))
    code, _, err = _main(monkeypatch, capsys, "score", str(run))
    assert code == 2 and "schema_version" in err and "run.json" in err
    (run / rundir.RUN_JSON).write_text(json.dumps({"config": {}}))
    code, _, err = _main(monkeypatch, capsys, "score", str(run))
    assert code == 2 and "n_concepts" in err


@pytest.mark.integration
def test_installed_entry_point_exit_codes(tmp_path):
    """The real `cgaps` script: 0 for --help, 2 for a usage error, 2 for a CGapsError; one line each."""
    script = Path(sys.executable).with_name("cgaps")
    assert script.exists(), f"{script}: install the package (pip install -e .)"

    def cgaps(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(script), *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)

    ok = cgaps("--help")
    assert ok.returncode == 0 and "extract" in ok.stdout
    for proc, fragment in (
        (cgaps("score", str(tmp_path), "--bogus"), "No such option"),
        (cgaps("score", str(tmp_path)), "run.json: no such file"),  # a CGapsError
    ):
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: ") and fragment in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""


@pytest.mark.integration
def test_help_is_fast(tmp_path):
    import time

    def cgaps(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *args, "-m", "cgaps", "--help"], capture_output=True, text=True, cwd=tmp_path
        )

    t = time.perf_counter()
    proc = cgaps()
    assert proc.returncode == 0 and "extract" in proc.stdout
    # generous bound for a loaded CI machine; measured ~0.2 s (heavy imports are deferred)
    assert time.perf_counter() - t < 5
    out = cgaps("-X", "importtime")
    heavy = {"torch", "transformers", "pandas", "sae_lens", "scipy"}
    imported = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert not heavy & imported


# ---------------------------------------------------------------- one output rule


def test_no_stray_output_channels_in_the_cli():
    """Output goes through cgaps.console only: no echo, print or private rich console in cli/."""
    pattern = re.compile(r"typer\.(echo|secho)|(?<![.\w])print\(|\bConsole\(|click\.echo")
    for path in sorted((SRC / "cli").glob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            assert not pattern.search(line), f"{path.name}:{n}: {line.strip()}"


def test_results_on_stdout_status_on_stderr(tmp_path):
    run = write_run(tmp_path)
    result = CliRunner().invoke(app, ["score", str(run)])
    assert result.exit_code == 0, result.output
    assert "ALL" in result.stdout and "strengths" in result.stdout  # the score table
    assert "ALL" not in result.stderr


def test_log_records_reach_the_stderr_console(capsys, caplog):
    """The first-run GGUF conversion notice (INFO of cgaps.models) is visible, on stderr only."""
    from cgaps.console import setup_logging

    setup_logging()
    setup_logging()  # idempotent: one handler
    log = logging.getLogger("cgaps.models.loading")
    with caplog.at_level(logging.INFO, logger="cgaps"):
        log.info("converting %s to safetensors in %s (once)", "model.gguf", "/cache")
        log.warning("careful")
    out = capsys.readouterr()
    assert out.err.splitlines() == [
        "converting model.gguf to safetensors in /cache (once)",
        "warning: careful",
    ]
    assert out.out == ""
    assert [r.getMessage() for r in caplog.records][0].startswith("converting model.gguf")


def test_commands_show_log_records(tmp_path, monkeypatch):
    """Through the CLI: a stage's log record is printed without any setup by the caller."""
    import cgaps.items

    def fake_suite(suite, **kw):
        logging.getLogger("cgaps.items").info("fetching %s from the hub (once)", suite)
        return GOOD[["item_id", "benchmark", "prompt", "reference"]]

    logging.getLogger("cgaps").handlers.clear()  # as in a fresh process
    monkeypatch.setattr(cgaps.items, "load_suite", fake_suite)
    result = CliRunner().invoke(app, ["items", "toy", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "fetching toy from the hub (once)" in result.stderr
    assert "fetching" not in result.stdout


# ---------------------------------------------------------------- run.json schema


def test_run_json_round_trip(tmp_path):
    every = {
        "n_concepts": 8,
        "config": RunConfig().to_dict(),
        "model": {"evaluated": "m", "reader": "m"},
        "sae": {
            "id": "s",
            "fingerprint": "f",
            "width": 8,
            "layer": 1,
            "hook_name": "blocks.1.hook_resid_post",
        },
        "counts": {"items": {"x": 2}},
        "accuracy": {"x": {"n": 2, "mean": 0.5}},
        "timings": {"evaluate_s": 1.0},
        "versions": {"cgaps": "0.1.0"},
        "inputs": {"evaluate": "0123456789abcdef", "extract": "fedcba9876543210"},
        "imported": {"format": "table", "files": ["x.jsonl"]},
        "power": {"fdr": 0.05, "items_per_benchmark": 2, "scopes": {}},
    }
    assert set(every) | {"schema_version"} == set(rundir.RUN_JSON_KEYS)
    written = rundir.update_run_json(tmp_path, **every)
    read = rundir.read_run_json(tmp_path)
    assert read == written == {"schema_version": rundir.SCHEMA_VERSION, **every}
    # objects merge one level deep; scalars are replaced
    rundir.update_run_json(tmp_path, counts={"scored_items": 2}, n_concepts=16)
    read = rundir.read_run_json(tmp_path)
    assert read["counts"] == {"items": {"x": 2}, "scored_items": 2} and read["n_concepts"] == 16
    assert RunConfig(**read["config"]) == RunConfig()


def test_run_json_keys_are_documented():
    """Every key of RunJson carries a docstring (the schema's documentation)."""
    tree = ast.parse((SRC / "rundir" / "runjson.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "RunJson")
    documented = {
        a.target.id
        for a, doc in zip(cls.body, cls.body[1:], strict=False)
        if isinstance(a, ast.AnnAssign)
        and isinstance(a.target, ast.Name)
        and isinstance(doc, ast.Expr)
        and isinstance(doc.value, ast.Constant)
    }
    assert documented == set(rundir.RUN_JSON_KEYS)


def test_run_json_refuses_unknown_and_mistyped_keys(tmp_path):
    with pytest.raises(TypeError, match="RunJson"):
        rundir.update_run_json(tmp_path, n_concept=3)  # type: ignore[call-arg]
    (tmp_path / rundir.RUN_JSON).write_text(json.dumps({"n_concept": 3}))
    with pytest.raises(CGapsError, match="unknown key 'n_concept'. Did you mean 'n_concepts'"):
        rundir.read_run_json(tmp_path)
    (tmp_path / rundir.RUN_JSON).write_text(json.dumps({"config": [1]}))
    with pytest.raises(CGapsError, match="'config' must be a JSON object"):
        rundir.read_run_json(tmp_path)
    (tmp_path / rundir.RUN_JSON).write_text('{"n_concepts": ')
    with pytest.raises(CGapsError, match="invalid JSON at line 1"):
        rundir.read_run_json(tmp_path)


# ---------------------------------------------------------------- --force


def test_force_clears_every_stage_output(tmp_path):
    from cgaps.pipeline import clear_run

    # every file name constant of rundir is a run file (a new one must be added to RUN_FILES)
    names = {
        v
        for k, v in vars(rundir).items()
        if k.isupper() and isinstance(v, str) and re.fullmatch(r"[\w.]+\.(parquet|json|jsonl|html)", v)
    }
    assert names | {rundir.SALIENCY_SHARDS, rundir.CONFIRM_DIR} == set(rundir.RUN_FILES)
    assert Path(rundir.RESPONSES_PARTIAL).with_suffix(".json").name == rundir.RESPONSES_SETTINGS
    for name in rundir.RUN_FILES:
        if name in (rundir.SALIENCY_SHARDS, rundir.CONFIRM_DIR):
            (tmp_path / name).mkdir()
            (tmp_path / name / "shard-00000.parquet").write_text("x")
        else:
            (tmp_path / name).write_text("x")
    (tmp_path / "notes.txt").write_text("mine")
    clear_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_every_command_is_registered_once():
    names = [name for name, _, _ in COMMANDS]
    group = _group().commands
    assert len(names) == len(set(names)) and set(names) <= set(group)
    # the rest are groups of sub-commands (`cgaps import FORMAT`)
    assert all(isinstance(group[n], TyperGroup) for n in set(group) - set(names))


def test_config_refuses_duplicate_yaml_keys_negative_seeds_and_unprintable_names(tmp_path):
    from cgaps.config import load_yaml

    path = tmp_path / "c.yaml"
    path.write_text("presence: 0.3\nlimit: 3\npresence: 0.5\n")
    with pytest.raises(CGapsError, match=r"line 3: .*key 'presence' is given twice \(lines 1 and 3\)"):
        load_yaml(path)
    path.write_text("label:\n  tokens: 3\n  tokens: 4\n")
    with pytest.raises(CGapsError, match="key 'tokens' is given twice"):
        load_yaml(path)
    with pytest.raises(CGapsError, match="field 'seed' must be >= 0"):
        RunConfig(seed=-1)
    with pytest.raises(
        CGapsError, match="field 'model' must be at most 1000 printable characters, got 10,001"
    ):
        RunConfig(model="m" * 10_000 + "\x1b")
    with pytest.raises(CGapsError, match=r"starting 'a\?\[31m'"):
        RunConfig(sae="a\x1b[31m")


def test_os_errors_are_one_line_naming_the_file_and_the_fix(tmp_path, monkeypatch, capsys):
    import errno
    import sys

    import cgaps.scoring.stage
    from cgaps.cli.main import main
    from helpers import make_suite, write_run

    run = write_run(tmp_path, *make_suite(0))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(run / "concepts.parquet"))

    monkeypatch.setattr(cgaps.scoring.stage, "_score_run", full)
    monkeypatch.setattr(sys, "argv", ["cgaps", "score", str(run)])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 1 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert f"{run / 'concepts.parquet'}: No space left on device; free some space" in err


@pytest.mark.parametrize("where", ["parsing", "command"])
def test_ctrl_c_is_one_line_wherever_it_lands(tmp_path, monkeypatch, capsys, where):
    """Ctrl-C while typer parses the arguments (typer turns it into exit 130 without a word)
    or while the command runs: exit 130 and the one line, said once."""
    import cgaps.cli.main as cli_main
    import cgaps.runstate

    def interrupt(*_args, **_kwargs):
        raise KeyboardInterrupt

    if where == "parsing":
        monkeypatch.setattr(cli_main._Group, "make_context", interrupt)
    else:
        monkeypatch.setattr(cgaps.runstate, "run_status", interrupt)
    code, out, err = _main(monkeypatch, capsys, "status", str(tmp_path))
    assert code == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted: the work completed so far is kept"), (
        err
    )
    assert out == ""
