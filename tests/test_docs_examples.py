"""Every example in the documentation is executed (issue 14).

- Every ``cgaps ...`` command the docs (docs/*.md, and README.md's code blocks) show, inline or
  in a code block, is parsed by the real command line: the command exists, every option it uses
  exists and every value has the right type. Placeholders (RUN_DIR, N, ...) get concrete values;
  optional parts in ``[...]`` are dropped; an elided command (``cgaps train-sae ...``) is
  checked for its name only.
- The commands that need no model run for real, on a small synthetic run.
- The spec-file example of docs/benchmarks.md loads, with data shaped as it describes.
- The commands that need the evaluated model (items, evaluate, extract on the embedded
  SmolLM2) run in a slow test.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer._click.exceptions import BadOptionUsage, MissingParameter
from typer.core import TyperGroup
from typer.main import get_command

from cgaps import rundir
from cgaps.cli.main import app, main
from helpers import make_suite, write_run

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`(cgaps [^`]+)`")


def fenced_blocks(path: Path) -> list[tuple[str, str]]:
    """(language, text) of every fenced code block of a Markdown file."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(path.read_text(encoding="utf-8"))]


def documented_commands() -> list[tuple[str, str]]:
    """(where, command line) of every `cgaps` command in docs/*.md (inline and in code blocks)
    and in README.md's code blocks."""
    found: list[tuple[str, str]] = []
    for path in [*DOCS, ROOT / "README.md"]:
        text = path.read_text(encoding="utf-8")
        if path.parent.name == "docs":
            found += [(path.name, m.group(1)) for m in INLINE.finditer(FENCE.sub("", text))]
        for lang, block in fenced_blocks(path):
            if lang not in ("bash", "sh", ""):
                continue
            for line in block.replace("\\\n", " ").splitlines():
                for part in line.split("#")[0].split("&&"):  # comments; chained commands
                    if part.strip().startswith("cgaps "):
                        found.append((path.name, " ".join(part.split())))
    return sorted(set(found))


COMMANDS = documented_commands()


@pytest.fixture
def places(tmp_path):
    """Concrete values for the placeholders the docs use (run directories exist and are scored)."""
    run = write_run(tmp_path / "run")
    other = write_run(tmp_path / "other")
    responses = tmp_path / "answers.jsonl"
    items = pd.read_parquet(run / rundir.ITEMS)
    responses.write_text(
        "".join(json.dumps({"item_id": i, "response": "x"}) + "\n" for i in items["item_id"])
    )
    config = tmp_path / "config.yaml"
    config.write_text("suite: probes\n")
    values = {
        "RUN_DIR": run,
        "R": run,
        "RUN_A": run,
        "RUN_B": other,
        "OTHER_RUN_DIR": other,
        "runs/demo": run,
        "SUITE": "probes",
        "FILE.jsonl": responses,
        "F.jsonl": responses,
        "answers.jsonl": responses,
        "CONFIG.yaml": config,
        "DIR": tmp_path / "out",
        "D": "float32",
        "N": "3",
        "S": "1",
        "P": "loglik",
        "T": "0.3",
        "NAME": "x",
        "VAR": "MY_KEY",
    }
    return {k: str(v) for k, v in values.items()}


def concrete(command: str, places: dict[str, str]) -> list[str]:
    """The arguments of a documented command line, optional parts dropped, placeholders filled."""
    command = re.sub(r"\s*\[[^\]]*\]", "", command)  # optional parts
    args = shlex.split(command)[1:]
    return [places.get(a, a) for a in args]


def parse(args: list[str]) -> None:
    """Parse ``args`` as the real `cgaps` would, without running the command (click raises a
    UsageError or BadParameter for an unknown command or option or a value of the wrong type)."""
    group = get_command(app)
    command, rest = group, list(args)
    while isinstance(command, TyperGroup):
        name, rest = rest[0], rest[1:]
        assert name in command.commands, f"no command {name!r}"
        command = command.commands[name]
    try:
        command.make_context(command.name or "cgaps", rest)
    except (MissingParameter, BadOptionUsage):
        # a mention in prose (`cgaps run --force`, `cgaps grade --responses`): the options it
        # names must exist
        known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        unknown = [a for a in rest if a.startswith("--") and a.split("=")[0] not in known]
        assert not unknown, f"no option(s) {unknown} in `cgaps {' '.join(args)}`"


def test_the_docs_have_commands():
    assert len(COMMANDS) >= 30
    assert any(c.startswith("cgaps items capitals.yaml") for _, c in COMMANDS)


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[f"{w}:{c}" for w, c in COMMANDS])
def test_every_documented_command_parses(where, command, places):
    args = concrete(command, places)
    if "..." in args or len(args) == 1:  # elided, or the bare name: the command must exist
        parse_name = args[0]
        assert parse_name in get_command(app).commands, f"{where}: `{command}` names no command"
        return
    parse(args)


# ---------------------------------------------------------------- run the model-free ones

# Documented commands that need no model: run for real on the small run.
MODEL_FREE = ("score", "robustness", "validate", "report", "grade", "status", "compare")


def _run_cli(monkeypatch, args: list[str]) -> int:
    monkeypatch.setattr(sys, "argv", ["cgaps", *args])
    try:
        main()
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_model_free_documented_commands_run(places, monkeypatch, capsys):
    ran = []
    for where, command in COMMANDS:
        args = concrete(command, places)
        runnable = where != "README.md" and len(args) >= 2 and args[1] in places.values()
        if not runnable or "..." in args or args[0] not in MODEL_FREE or "--against" in args:
            continue
        code = _run_cli(monkeypatch, args)
        out = capsys.readouterr()
        assert code in (0, 1 if args[0] == "status" else 0), f"{where}: `{command}` exited {code}: {out.err}"
        assert "Traceback" not in out.err
        ran.append(args[0])
    assert {"score", "robustness", "validate", "report", "grade"} <= set(ran)


# ---------------------------------------------------------------- the spec-file example


def _spec_example() -> str:
    blocks = [
        b for lang, b in fenced_blocks(ROOT / "docs" / "benchmarks.md") if lang == "yaml" and "fields:" in b
    ]
    assert len(blocks) == 1
    return blocks[0]


def test_the_spec_file_example_loads(tmp_path, monkeypatch, capsys):
    import yaml

    spec = yaml.safe_load(_spec_example())
    fields = spec["fields"]
    rows = [
        {
            fields["question"]: "Capital of France?",
            fields["answer"]: "B",
            fields["choices"]: ["Lyon", "Paris", "Nice"],
            fields["aliases"]: ["paris"],
            fields["category"]: "europe",
            fields["id"]: "fr",
        },
        {
            fields["question"]: "Capital of Peru?",
            fields["answer"]: "Lima",  # the option text
            fields["choices"]: ["Cusco", "Lima"],
            fields["aliases"]: [],
            fields["category"]: "americas",
            fields["id"]: "pe",
        },
    ]
    (tmp_path / spec["path"]).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "capitals.yaml").write_text(_spec_example())
    out = tmp_path / "runs" / "capitals"
    code = _run_cli(monkeypatch, ["items", str(tmp_path / "capitals.yaml"), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    items = rundir.read_items(out)
    assert list(items["item_id"]) == ["capitals/fr", "capitals/pe"]
    assert list(items["reference"]) == ["B", "B"]
    assert items["prompt"].iloc[0] == "Q: Capital of France?\nA) Lyon\nB) Paris\nC) Nice\nAnswer:"
    assert list(items["category"]) == ["europe", "americas"]


# ---------------------------------------------------------------- the ones that need the model


@pytest.mark.slow
def test_model_documented_commands_run(tmp_path, monkeypatch, capsys):
    """The stages as the docs show them, on two probes with the embedded model; then every stage is done."""
    run = str(tmp_path / "run")
    for args in (
        ["items", "probes", "--out", run, "--limit", "2", "--seed", "1"],
        ["evaluate", run, "--max-new-tokens", "16"],
        ["extract", run],
        ["score", run, "--presence", "0.3"],
        ["label", run],
        ["report", run],
        ["status", run],
    ):
        code = _run_cli(monkeypatch, args)
        err = capsys.readouterr().err
        assert code == 0, f"`cgaps {' '.join(args)}` exited {code}: {err}"
    items, _ = make_suite(0)
    assert (tmp_path / "run" / rundir.REPORT).exists() and len(items) > 0


def _help_examples() -> list[tuple[str, str]]:
    """The example command lines of every command's `--help` (the lines after "Examples:")."""
    out = []

    def walk(command, path):
        if isinstance(command, TyperGroup):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
            return
        doc = command.help or ""
        if "Examples:" in doc:
            for line in doc.split("Examples:", 1)[1].splitlines():
                if line.strip().startswith("cgaps "):
                    out.append((" ".join(path), line.strip()))

    walk(get_command(app), [])
    return out


HELP_EXAMPLES = _help_examples()


def test_every_command_shows_an_example():
    from cgaps.cli.main import COMMANDS as CLI_COMMANDS

    shown = {where.split()[0] for where, _ in HELP_EXAMPLES}
    assert {name for name, _, _ in CLI_COMMANDS} | {"import"} <= shown


@pytest.mark.parametrize(("where", "command"), HELP_EXAMPLES, ids=[c for _, c in HELP_EXAMPLES])
def test_every_help_example_parses(where, command):
    parse(shlex.split(command)[1:])
