"""A fuzz corpus of malformed inputs (issue 14): every one is a one-line error with exit 2.

Each case builds one bad input (a spec file, a data file, a responses file, a run table, an
SAE folder, a config or command-line arguments) beside a good run directory, runs the
``cgaps`` entry point in-process (:func:`cgaps.cli.main.main`) and checks that

- it exits with status 2,
- stderr ends with exactly one ``error: ...`` line, no traceback, nothing on stdout,
- the run directory is byte-for-byte what it was (no completed work lost, nothing half-written),
  and nothing at all was written anywhere else: no file or folder appeared or changed under the
  case's folder (a command that refuses writes nothing, issue 23).

Some cases start from a run that was scored, labelled and reported (``env.scored()``), so a
command that failed after rewriting a table would be caught; others point a command's output
into a run it does not own (``compare --out RUN``, ``report --out OTHER/...``), which must be
refused before anything is read.

No case loads a real model: the ones that need a reader use a tiny random model and SAE
(tests/helpers.py), and the rest must fail before any model would load.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from cgaps import rundir
from helpers import TINY_HIDDEN, save_random_sae, save_tiny_model, write_run

GOOD_ITEMS = pd.DataFrame(
    {
        "item_id": [f"t/{k}" for k in range(6)],
        "benchmark": ["x", "x", "x", "y", "y", "y"],
        "prompt": [f"What is {k} + {k}?" for k in range(6)],
        "reference": [str(2 * k) for k in range(6)],
        "response": [str(2 * k) if k % 2 else "no idea" for k in range(6)],
        "score": [0.0, 1.0, 0.0, 1.0, 0.0, 1.0],
        "answer_type": ["number"] * 6,
    }
)
GOOD_SAL = pd.DataFrame({"item_id": GOOD_ITEMS["item_id"], "concept": [0, 1, 2, 0, 1, 2], "value": 1.0})


@dataclass
class Env:
    """What a case builds its bad input in: ``tmp`` (a folder), ``run`` (a good run directory),
    ``model`` and ``sae`` (a tiny reader model and a matching SAE folder, for extraction)."""

    tmp: Path
    run: Path
    model: Path
    sae: Path

    def write(self, name: str, text: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path

    def table(self, name: str, df: pd.DataFrame) -> None:
        """Replace a table of the run directory (before the snapshot is taken)."""
        df.to_parquet(self.run / name, index=False)

    def meta(self, meta: dict) -> None:
        (self.run / rundir.RUN_JSON).write_text(json.dumps(meta))

    def sae_copy(self, name: str = "bad_sae") -> Path:
        import shutil

        return Path(shutil.copytree(self.sae, self.tmp / name))

    scored_template: Path | None = None

    def scored(self) -> Path:
        """Make ``run`` a run that was scored, labelled and reported (concepts, overlap, labels,
        themes, report, run.json with every record); returns it."""
        import shutil

        assert self.scored_template is not None
        shutil.rmtree(self.run)
        shutil.copytree(self.scored_template, self.run)
        return self.run

    def other(self) -> Path:
        """A second run directory (a copy of the good run), another command's."""
        import shutil

        return Path(shutil.copytree(self.run, self.tmp / "other_run"))


Case = Callable[[Env], list[str]]  # builds the bad input, returns the arguments of `cgaps`
CASES: dict[str, tuple[Case, str]] = {}  # id -> (case, a fragment of the expected message)


def case(name: str, fragment: str) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        assert name not in CASES, name
        CASES[name] = (fn, fragment)
        return fn

    return register


def spec(env: Env, body: str, data: str | bytes | None = None, data_name: str = "data.jsonl") -> list[str]:
    """`cgaps items SPEC --out RUN` for a spec file ``body`` (and its data file)."""
    if data is not None:
        env.write(data_name, data)
    return ["items", str(env.write("bench.yaml", body)), "--out", str(env.run)]


GOOD_DATA = '{"q": "Capital of France?", "a": "Paris", "id": "c1"}\n{"q": "2+2?", "a": "4", "id": "c2"}\n'
GOOD_SPEC = "name: caps\npath: data.jsonl\nanswer_type: short\nfields: {question: q, answer: a}\n"

# ---------------------------------------------------------------- command-line arguments

for _name, _args, _frag in [
    ("cli-unknown-option", ["score", "RUN", "--bogus"], "No such option: --bogus"),
    ("cli-bad-integer", ["items", "probes", "--out", "RUN", "--limit", "x"], "'--limit'"),
    (
        "cli-negative-seed",
        ["items", "probes", "--out", "RUN", "--seed", "-1", "--limit", "2"],
        "'seed' must be >= 0",
    ),
    ("cli-missing-out", ["items", "probes"], "Missing option '--out'"),
    ("cli-unknown-command", ["scroe", "RUN"], "No such command 'scroe'"),
    ("cli-run-dir-is-a-file", ["score", "FILE"], "is a file"),
    ("cli-bad-float", ["score", "RUN", "--fdr", "lots"], "'--fdr'"),
    ("cli-report-top-float", ["report", "RUN", "--top", "1.5"], "'--top'"),
    ("cli-missing-argument", ["score"], "Missing argument"),
    ("cli-report-out-is-a-folder", ["report", "RUN", "--out", "RUN"], "is a directory"),
    ("cli-grade-responses-folder", ["grade", "RUN", "--responses", "RUN"], "is a directory"),
    ("cli-run-config-missing", ["run", "NOFILE", "--out", "RUN"], "no such config file"),
    ("cli-status-no-run", ["status", "NOFILE"], "no such run directory"),
]:

    def _cli(env: Env, args: list[str] = _args) -> list[str]:
        (env.tmp / "FILE").write_text("a file")
        names = {"RUN": str(env.run), "FILE": str(env.tmp / "FILE"), "NOFILE": str(env.tmp / "nofile")}
        return [names.get(a, a) for a in args]

    case(_name, _frag)(_cli)


for _name, _args, _frag in [
    ("opt-fdr-out-of-range", ["score", "RUN", "--fdr", "2"], "'fdr' must be in (0, 1)"),
    ("opt-presence-negative", ["score", "RUN", "--presence", "-0.1"], "'presence'"),
    ("opt-min-support-zero", ["score", "RUN", "--min-support", "0"], "'min_support'"),
    ("opt-device-tpu", ["evaluate", "RUN", "--device", "tpu"], "'device'"),
    ("opt-extract-span", ["extract", "RUN", "--span", "middle"], "'span'"),
    ("opt-extract-pool", ["extract", "RUN", "--pool", "median"], "'pool'"),
    ("opt-batch-size-zero", ["evaluate", "RUN", "--batch-size", "0"], "'batch_size'"),
    ("opt-robustness-repeats", ["robustness", "RUN", "--repeats", "0"], "repeats"),
    ("opt-robustness-drop", ["robustness", "RUN", "--drop", "1.5"], "drop"),
    ("opt-report-bins-zero", ["report", "RUN", "--bins", "0"], "bins"),
    ("opt-context-overflow", ["evaluate", "RUN", "--context-overflow", "cut"], "'context_overflow'"),
]:

    def _opt(env: Env, args: list[str] = _args) -> list[str]:
        return [str(env.run) if a == "RUN" else a for a in args]

    case(_name, _frag)(_opt)


# ---------------------------------------------------------------- configs (cgaps run CONFIG.yaml)

for _name, _yaml, _frag in [
    ("config-invalid-yaml", "model: [embedded\n", "invalid YAML"),
    ("config-not-a-mapping", "- a\n- b\n", "expected a mapping"),
    ("config-unknown-key", "modle: embedded\n", "Did you mean 'model'"),
    ("config-bool-as-string", 'skip_special: "no"\n', "'skip_special'"),
    ("config-int-as-word", "batch_size: big\n", "'batch_size'"),
    ("config-str-as-int", "pool: 5\n", "'pool'"),
    ("config-float-for-int", "max_new_tokens: 1.5\n", "'max_new_tokens'"),
    ("config-limit-zero", "limit: 0\n", "'limit'"),
    ("config-duplicate-key", "presence: 0.3\npresence: 0.5\n", "'presence' is given twice"),
    ("config-negative-seed", "seed: -1\n", "'seed' must be >= 0"),
    ("config-section-unknown-key", "label:\n  enrich_pp: 0.3\n", "Did you mean 'enrich_p'"),
    ("config-section-not-a-mapping", "report: 3\n", "section 'report' must be a mapping"),
    ("config-model-name-escape", 'model: "' + "m" * 10_000 + '\\e[31m"\n', "at most 1000 printable"),
    ("config-layer-negative", "layer: -1\n", "'layer'"),
    ("config-fdr-string", "fdr: small\n", "'fdr'"),
    ("config-list-value", "model: [a, b]\n", "'model'"),
    ("config-not-utf8", b"model: \xff\xfe\n", "UTF-8"),
]:

    def _config(env: Env, text: str | bytes = _yaml) -> list[str]:
        return ["run", str(env.write("config.yaml", text)), "--out", str(env.run)]

    case(_name, _frag)(_config)


# ---------------------------------------------------------------- spec files (cgaps items SPEC)

for _name, _body, _frag in [
    ("spec-invalid-yaml", "name: [x\n", "bench.yaml"),
    ("spec-not-a-mapping", "- name\n", "bench.yaml"),
    ("spec-unknown-key", GOOD_SPEC + "promt_template: x\n", "prompt_template"),
    ("spec-no-fields", "name: caps\npath: data.jsonl\nanswer_type: short\n", "fields"),
    ("spec-unknown-field", GOOD_SPEC.replace("answer: a}", "answer: a, anwser: b}"), "anwser"),
    ("spec-unknown-answer-type", GOOD_SPEC.replace("short", "essay"), "essay"),
    ("spec-answer-type-a-number", GOOD_SPEC.replace("answer_type: short", "answer_type: 5"), "got 5 (int)"),
    ("spec-missing-data-file", GOOD_SPEC.replace("data.jsonl", "nowhere.jsonl"), "nowhere.jsonl"),
    ("spec-template-unclosed", GOOD_SPEC + 'prompt_template: "Q: {q\\nA:"\n', "prompt_template"),
    ("spec-template-attribute", GOOD_SPEC + 'prompt_template: "Q: {q.upper}"\n', "prompt_template"),
    ("spec-template-unknown-column", GOOD_SPEC + 'prompt_template: "Q: {nope}"\n', "nope"),
    ("spec-bad-field-path", GOOD_SPEC.replace("question: q", "question: 'q..x'"), "q..x"),
    ("spec-path-and-hub", GOOD_SPEC + "hub: org/data\n", "hub"),
    ("spec-name-too-long", GOOD_SPEC.replace("name: caps", "name: " + "n" * 100_000), "name"),
    ("spec-name-control-chars", GOOD_SPEC.replace("name: caps", 'name: "ca\\u001b[31mps"'), "name"),
    ("spec-name-reserved", GOOD_SPEC.replace("name: caps", "name: ALL"), "ALL"),
    ("spec-unknown-format", GOOD_SPEC.replace("data.jsonl", "data.txt"), "data.txt"),
]:

    def _spec(env: Env, body: str = _body) -> list[str]:
        env.write("data.txt", "x")
        return spec(env, body, GOOD_DATA)

    case(_name, _frag)(_spec)


@case("spec-not-utf8", "UTF-8")
def _spec_not_utf8(env: Env) -> list[str]:
    env.write("data.jsonl", GOOD_DATA)
    return ["items", str(env.write("bench.yaml", b"name: \xff\xfe\n")), "--out", str(env.run)]


@case("suite-unknown", "unknown benchmark or suite")
def _suite_unknown(env: Env) -> list[str]:
    return ["items", "nosuchsuite", "--out", str(env.run)]


# ---------------------------------------------------------------- data files of a spec

for _name, _data, _frag in [
    (
        "data-broken-jsonl-line",
        '{"q": "a", "a": "b"}\n{"q": "c", "a": \n{"q": "e", "a": "f"}\n',
        "data.jsonl",
    ),
    ("data-not-utf8", b'{"q": "\xff", "a": "b"}\n', "data.jsonl"),
    ("data-missing-column", '{"question": "a", "a": "b"}\n', "'q'"),
    ("data-empty", "", "no rows"),
    ("data-line-not-object", '["q", "a"]\n', "data.jsonl"),
    ("data-duplicate-ids", '{"q": "a", "a": "b", "id": "1"}\n{"q": "c", "a": "d", "id": "1"}\n', "duplicate"),
    ("data-null-question", '{"q": null, "a": "b"}\n', "'q'"),
]:

    def _data(env: Env, data: str | bytes = _data) -> list[str]:
        body = GOOD_SPEC.replace("answer: a}", "answer: a, id: id}") if "id" in str(data) else GOOD_SPEC
        return spec(env, body, data)

    case(_name, _frag)(_data)


@case("data-aliases-not-json", "starts like a JSON list but is not one")
def _aliases_not_json(env: Env) -> list[str]:
    body = GOOD_SPEC.replace("answer: a}", "answer: a, aliases: al}")
    return spec(env, body, '{"q": "2+2?", "a": "4", "al": "[\\"four\\", "}\n')


CHOICE_SPEC = (
    "name: caps\npath: data.jsonl\nanswer_type: choice\nfields: {question: q, answer: a, choices: o}\n"
)

for _name, _data, _frag in [
    ("data-choices-not-a-list", '{"q": "a", "a": "B", "o": "x"}\n', "'o'"),
    ("data-answer-beyond-options", '{"q": "a", "a": "F", "o": ["x", "y"]}\n', "'F'"),
    (
        "data-too-many-options",
        '{"q": "a", "a": "A", "o": ' + json.dumps(list("abcdefghijklm")) + "}\n",
        "options",
    ),
]:

    def _choice(env: Env, data: str = _data) -> list[str]:
        return spec(env, CHOICE_SPEC, data)

    case(_name, _frag)(_choice)


@case("data-aliases-malformed", "other")
def _aliases(env: Env) -> list[str]:
    body = GOOD_SPEC.replace("answer: a}", "answer: a, aliases: other}")
    return spec(env, body, '{"q": "a", "a": "b", "other": {"x": 1}}\n')


@case("data-csv-bad-list-cell", "o")
def _csv_list(env: Env) -> list[str]:
    body = CHOICE_SPEC.replace("data.jsonl", "data.csv")
    return spec(env, body, 'q,a,o\nwhat,A,"[x, y"\n', "data.csv")


@case("data-parquet-garbage", "data.parquet")
def _parquet_garbage(env: Env) -> list[str]:
    return spec(env, GOOD_SPEC.replace("data.jsonl", "data.parquet"), b"PAR1 not really", "data.parquet")


@case("data-json-object", "JSON list")
def _json_object(env: Env) -> list[str]:
    return spec(env, GOOD_SPEC.replace("data.jsonl", "data.json"), '{"q": "a"}', "data.json")


# ---------------------------------------------------------------- responses (cgaps grade --responses)

ALL_RESPONSES = "".join(json.dumps({"item_id": i, "response": "1"}) + "\n" for i in GOOD_ITEMS["item_id"])

for _name, _text, _frag in [
    ("responses-unknown-id", ALL_RESPONSES + '{"item_id": "t/99", "response": "x"}\n', "t/99"),
    ("responses-repeated-id", ALL_RESPONSES + '{"item_id": "t/0", "response": "x"}\n', "t/0"),
    ("responses-bad-json", ALL_RESPONSES.replace('"t/3", ', '"t/3" '), "answers.jsonl"),
    ("responses-not-utf8", ALL_RESPONSES.encode() + b'{"item_id": "t/0", "response": "\xff"}\n', "UTF-8"),
    ("responses-missing-item", "".join(ALL_RESPONSES.splitlines(True)[:-1]), "t/5"),
    (
        "responses-not-a-string",
        ALL_RESPONSES.replace('"response": "1"}\n', '"response": {"text": 1}}\n', 1),
        "response",
    ),
    ("responses-empty", "", "answers.jsonl"),
    ("responses-no-item-id", ALL_RESPONSES + '{"id": "t/0", "response": "x"}\n', "item_id"),
]:

    def _responses(env: Env, text: str | bytes = _text) -> list[str]:
        return ["grade", str(env.run), "--responses", str(env.write("answers.jsonl", text))]

    case(_name, _frag)(_responses)


@case("responses-missing-file", "no such file")
def _responses_missing(env: Env) -> list[str]:
    return ["grade", str(env.run), "--responses", str(env.tmp / "nowhere.jsonl")]


# ---------------------------------------------------------------- run tables


def _run_case(name: str, fragment: str, command: str = "score") -> Callable[[Callable[[Env], None]], Case]:
    def register(mutate: Callable[[Env], None]) -> Case:
        def build(env: Env) -> list[str]:
            mutate(env)
            return [command, str(env.run)]

        return case(name, fragment)(build)

    return register


@_run_case("table-items-garbage", "not a readable Parquet file")
def _items_garbage(env: Env) -> None:
    (env.run / rundir.ITEMS).write_bytes(b"PAR1garbage")


@_run_case("table-items-missing-column", "missing column(s) reference")
def _items_missing(env: Env) -> None:
    env.table(rundir.ITEMS, GOOD_ITEMS.drop(columns="reference"))


@_run_case("table-items-duplicate-ids", "duplicates")
def _items_dup(env: Env) -> None:
    env.table(rundir.ITEMS, GOOD_ITEMS.assign(item_id=["a"] * 6))


@_run_case("table-items-string-score", "field 'score'")
def _items_string_score(env: Env) -> None:
    env.table(rundir.ITEMS, GOOD_ITEMS.assign(score=["right", "1", "0", "1", "0", "1"]))


@_run_case("table-items-score-out-of-range", "field 'score'")
def _items_score_range(env: Env) -> None:
    env.table(rundir.ITEMS, GOOD_ITEMS.assign(score=[0.0, 1.0, 2.0, 1.0, 0.0, 1.0]))


@_run_case("table-items-id-control-chars", "item_id")
def _items_id_controls(env: Env) -> None:
    env.table(rundir.ITEMS, GOOD_ITEMS.assign(item_id=[f"t\x00/{k}" for k in range(6)]))
    env.table(rundir.SALIENCY, GOOD_SAL.assign(item_id=[f"t\x00/{k}" for k in range(6)]))


@_run_case("table-saliency-concept-out-of-range", "outside 0..7")
def _sal_range(env: Env) -> None:
    env.table(rundir.SALIENCY, GOOD_SAL.assign(concept=[0, 1, 2, 0, 1, 99]))


@_run_case("table-saliency-negative", "field 'value'")
def _sal_negative(env: Env) -> None:
    env.table(rundir.SALIENCY, GOOD_SAL.assign(value=[1.0, -1.0, 1.0, 1.0, 1.0, 1.0]))


@_run_case("table-saliency-unknown-item", "not in items.parquet")
def _sal_unknown(env: Env) -> None:
    env.table(rundir.SALIENCY, GOOD_SAL.assign(item_id=["zz"] + list(GOOD_SAL["item_id"][1:])))


@_run_case("table-saliency-string-concept", "field 'concept'")
def _sal_string(env: Env) -> None:
    env.table(rundir.SALIENCY, GOOD_SAL.assign(concept=["a", "b", "c", "a", "b", "c"]))


@_run_case("runjson-invalid", "invalid JSON")
def _runjson_invalid(env: Env) -> None:
    (env.run / rundir.RUN_JSON).write_text('{"n_concepts": ')


@_run_case("runjson-unknown-key", "Did you mean 'n_concepts'")
def _runjson_unknown(env: Env) -> None:
    env.meta({"n_concept": 8})


@_run_case("runjson-old-schema", "schema_version")
def _runjson_schema(env: Env) -> None:
    env.meta({"schema_version": 0, "n_concepts": 8})


@_run_case("runjson-no-width", "n_concepts")
def _runjson_width(env: Env) -> None:
    env.meta({"config": {}})


@_run_case("runjson-bad-config-value", "'fdr'")
def _runjson_config(env: Env) -> None:
    env.meta({"n_concepts": 8, "config": {"fdr": "tiny"}})


@_run_case("runjson-not-utf8", "UTF-8")
def _runjson_utf8(env: Env) -> None:
    (env.run / rundir.RUN_JSON).write_bytes(b'{"n_concepts": 8, "x": "\xff"}')


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # a copy that stopped halfway


@_run_case("table-items-truncated", "not a readable Parquet file")
def _items_truncated(env: Env) -> None:
    _truncated(env.run / rundir.ITEMS)


@_run_case("table-saliency-truncated", "not a readable Parquet file")
def _sal_truncated(env: Env) -> None:
    _truncated(env.run / rundir.SALIENCY)


@_run_case("runjson-config-not-an-object", "key 'config' must be a JSON object")
def _runjson_config_list(env: Env) -> None:
    env.meta({"n_concepts": 8, "config": [1, 2]})


@_run_case("runjson-n-concepts-a-string", "field 'n_concepts' must be a positive integer")
def _runjson_width_string(env: Env) -> None:
    env.meta({"n_concepts": "many"})


# ---------------------------------------------------------------- a scored run: nothing is rewritten
# (issue 23: `cgaps score` on a string score column rewrote concepts, overlap and run.json, then failed)


def _scored_case(name: str, fragment: str, command: str) -> Callable[[Callable[[Env], None]], Case]:
    def register(mutate: Callable[[Env], None]) -> Case:
        def build(env: Env) -> list[str]:
            env.scored()
            mutate(env)
            return [command, str(env.run)]

        return case(name, fragment)(build)

    return register


@_scored_case("scored-items-string-score", "field 'score'", "score")
def _scored_string_score(env: Env) -> None:
    items = pd.read_parquet(env.run / rundir.ITEMS)
    env.table(rundir.ITEMS, items.assign(score=["right", "1", "0", "1", "0", "1"]))


@_scored_case("scored-saliency-truncated", "not a readable Parquet file", "score")
def _scored_sal_truncated(env: Env) -> None:
    _truncated(env.run / rundir.SALIENCY)


@_scored_case("scored-saliency-string-value", "field 'value'", "label")
def _scored_sal_string(env: Env) -> None:
    env.table(rundir.SALIENCY, GOOD_SAL.assign(value=["a", "b", "c", "d", "e", "f"]))


@_scored_case("scored-concepts-truncated-label", "concepts.parquet", "label")
def _scored_concepts_label(env: Env) -> None:
    _truncated(env.run / rundir.CONCEPTS)


@_scored_case("scored-concepts-truncated-report", "concepts.parquet", "report")
def _scored_concepts_report(env: Env) -> None:
    _truncated(env.run / rundir.CONCEPTS)


@_scored_case("scored-labels-garbage-report", "labels.parquet", "report")
def _scored_labels(env: Env) -> None:
    (env.run / rundir.LABELS).write_bytes(b"PAR1 not a table")


@_scored_case("scored-themes-truncated-report", "themes.parquet", "report")
def _scored_themes(env: Env) -> None:
    _truncated(env.run / rundir.THEMES)


@_scored_case("scored-runjson-model-a-number", "key 'model' must be a JSON object", "report")
def _scored_runjson_model(env: Env) -> None:
    meta = json.loads((env.run / rundir.RUN_JSON).read_text())
    env.meta({**meta, "model": 5})


@_scored_case("scored-runjson-not-json", "invalid JSON", "robustness")
def _scored_runjson_garbage(env: Env) -> None:
    (env.run / rundir.RUN_JSON).write_text('{"config": {"fdr": ')


# ---------------------------------------------------------------- outputs into a run the command does not own


for _name, _args, _frag in [
    ("place-compare-out-is-a-run", ["compare", "RUN", "RUN", "--out", "RUN"], "is the run directory"),
    ("place-compare-out-inside-a-run", ["compare", "RUN", "RUN", "--out", "RUN/cmp"], "lies inside the run"),
    ("place-report-out-another-run", ["report", "RUN", "--out", "OTHER/report.html"], "lies inside the run"),
    ("place-report-out-over-items", ["report", "RUN", "--out", "RUN/items.parquet"], "is a file of run"),
    ("place-export-out-another-run", ["export", "RUN", "-o", "OTHER/gaps.csv"], "lies inside the run"),
    ("place-export-out-over-run-json", ["export", "RUN", "-o", "RUN/run.json"], "is a file of run"),
    (
        "place-train-sae-out-a-run",
        ["train-sae", "CONV", "--out", "RUN", "--layer", "0"],
        "is the run directory",
    ),
    (
        "place-fill-out-another-run",
        ["fill", "RUN", "--benchmark", "x", "--pool", "probes", "--out", "OTHER/fill"],
        "lies inside the run",
    ),
]:

    def _place(env: Env, args: list[str] = _args) -> list[str]:
        other = env.other() if any("OTHER" in a for a in args) else env.tmp
        conv = env.write("conv.jsonl", '{"messages": [{"role": "user", "content": "hi"}]}\n')
        names = {"RUN": str(env.run), "OTHER": str(other), "CONV": str(conv)}
        return [names.get(a.split("/")[0], a.split("/")[0]) + a[len(a.split("/")[0]) :] for a in args]

    case(_name, _frag)(_place)


# ---------------------------------------------------------------- connections: a stated time, configurable

for _name, _args, _frag in [
    ("opt-ray-timeout-zero", ["extract", "RUN", "--ray-timeout", "0"], "'ray_timeout'"),
    ("opt-llm-timeout-zero", ["label", "RUN", "--llm-timeout", "0"], "'llm_timeout'"),
    (
        "opt-openai-timeout-zero",
        ["evaluate", "RUN", "--model", "openai://127.0.0.1:9/v1/m?timeout=0"],
        "timeout > 0",
    ),
]:

    def _conn(env: Env, args: list[str] = _args) -> list[str]:
        return [str(env.run) if a == "RUN" else a for a in args]

    case(_name, _frag)(_conn)


@case("import-lmeval-results-not-json", "results_2026-01-01T00-00-00.000001.json")
def _lmeval_results(env: Env) -> list[str]:
    stamp = "2026-01-01T00-00-00.000001"
    line = {
        "doc_id": 0,
        "arguments": {"gen_args_0": {"arg_0": "Q: 2+2?\nA:", "arg_1": {"until": ["\n"], "max_gen_toks": 8}}},
        "filtered_resps": [" 4"],
        "metrics": ["exact_match"],
        "exact_match": 1.0,
    }
    env.write(f"logs/samples_t_{stamp}.jsonl", json.dumps(line) + "\n")
    env.write(f"logs/results_{stamp}.json", '{"results": ')
    return ["import", "lm-eval", str(env.tmp / "logs"), "--out", str(env.tmp / "imported")]


@_run_case("report-concepts-garbage", "not a readable Parquet file", command="report")
def _report_concepts(env: Env) -> None:
    (env.run / rundir.CONCEPTS).write_bytes(b"garbage")


@_run_case("report-without-scores", "concepts.parquet", command="report")
def _report_unscored(env: Env) -> None:
    pass  # the good run has no concepts.parquet: report says to score first


@_run_case("robustness-without-saliency", "saliency.parquet", command="robustness")
def _robust_nosal(env: Env) -> None:
    (env.run / rundir.SALIENCY).unlink()


# ---------------------------------------------------------------- SAE folders (cgaps extract --sae)


def _sae_case(name: str, fragment: str) -> Callable[[Callable[[Path], None]], Case]:
    def register(mutate: Callable[[Path], None]) -> Case:
        def build(env: Env) -> list[str]:
            folder = env.sae_copy()
            mutate(folder)
            return [
                "extract",
                str(env.run),
                "--reader",
                str(env.model),
                "--sae",
                str(folder),
                "--device",
                "cpu",
            ]

        return case(name, fragment)(build)

    return register


@_sae_case("sae-no-cfg", "cfg.json")
def _sae_nocfg(folder: Path) -> None:
    (folder / "cfg.json").unlink()


@_sae_case("sae-cfg-invalid-json", "Expecting value")
def _sae_cfg_json(folder: Path) -> None:
    (folder / "cfg.json").write_text('{"d_in": ')


@_sae_case("sae-truncated-weights", "sae_weights.safetensors")
def _sae_truncated(folder: Path) -> None:
    path = folder / "sae_weights.safetensors"
    path.write_bytes(path.read_bytes()[:200])


@_sae_case("sae-d-in-disagrees-with-weights", "d_in")
def _sae_d_in(folder: Path) -> None:
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["d_in"] = TINY_HIDDEN * 2
    (folder / "cfg.json").write_text(json.dumps(cfg))


@_sae_case("sae-layer-beyond-model", "layer")
def _sae_layer(folder: Path) -> None:
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["metadata"]["hook_name"] = "blocks.7.hook_resid_post"
    (folder / "cfg.json").write_text(json.dumps(cfg))


@_sae_case("sae-unknown-architecture", "quantum")
def _sae_arch(folder: Path) -> None:
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["architecture"] = "quantum"
    (folder / "cfg.json").write_text(json.dumps(cfg))


@_sae_case("sae-missing-weights", "sae_weights.safetensors")
def _sae_noweights(folder: Path) -> None:
    (folder / "sae_weights.safetensors").unlink()


@_sae_case("sae-no-such-folder", "needs cfg.json")
def _sae_nowhere(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder)
    folder.with_name("nowhere").mkdir()
    (folder.with_name("nowhere") / "x").write_text("")
    folder.symlink_to(folder.with_name("nowhere"))


# ---------------------------------------------------------------- resume files of interrupted stages


@case("partial-responses-damaged", "responses.partial.jsonl:1")
def _partial_damaged(env: Env) -> list[str]:
    env.table(rundir.ITEMS, GOOD_ITEMS.drop(columns=["response", "score"]))
    (env.run / rundir.RESPONSES_PARTIAL).write_bytes(
        b'{"item_id": "t/0", "resp\n{"item_id": "t/1", "response": "2"}\n'
    )
    return ["evaluate", str(env.run), "--model", str(env.model), "--device", "cpu"]


# a damaged extraction shard or sidecar is redone, not an error (tests/extract/test_extract.py); shards
# made with other settings are refused, naming each setting that differs (issue 23)
@case("shard-other-settings", "pool 'sum' there, 'max' now")
def _shard_settings(env: Env) -> list[str]:
    shards = env.run / rundir.SALIENCY_SHARDS
    shards.mkdir()
    GOOD_SAL.assign(peak_start=0, peak_end=1).to_parquet(shards / "shard-00000.parquet")
    (shards / "shard-00000.json").write_text(json.dumps({"item_ids": list(GOOD_SAL["item_id"])}))
    (shards / "manifest.json").write_text(json.dumps({"signature": {"pool": "sum", "span": "both"}}))
    return ["extract", str(env.run), "--reader", str(env.model), "--sae", str(env.sae), "--device", "cpu"]


@case("train-sae-missing-conversations", "no such file")
def _train_missing(env: Env) -> list[str]:
    return ["train-sae", str(env.tmp / "nope.jsonl"), "--out", str(env.tmp / "sae_out"), "--layer", "0"]


@case("train-sae-bad-conversations", "conv.jsonl")
def _train_bad(env: Env) -> list[str]:
    conv = env.write("conv.jsonl", '{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": \n{}\n')
    return ["train-sae", str(conv), "--out", str(env.tmp / "sae_out"), "--layer", "0"]


# ---------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def tiny_reader(tmp_path_factory):
    root = tmp_path_factory.mktemp("reader")
    model = save_tiny_model(root / "model", n_layers=2)
    sae = save_random_sae(root / "sae", d_in=TINY_HIDDEN, d_sae=8, layer=1)
    return model, sae


@pytest.fixture(scope="module")
def scored_template(tmp_path_factory):
    """The good run, scored, labelled and reported by the commands themselves (every record)."""
    from _pytest.monkeypatch import MonkeyPatch

    from cgaps.cli.main import main

    run = write_run(tmp_path_factory.mktemp("scored") / "run", GOOD_ITEMS, GOOD_SAL, meta={"n_concepts": 8})
    mp = MonkeyPatch()
    try:
        for args in (["score", run, "--min-support", "1"], ["label", run], ["report", run]):
            mp.setattr(sys, "argv", ["cgaps", *map(str, args)])
            with pytest.raises(SystemExit) as done:
                main()
            assert done.value.code in (0, None), args
    finally:
        mp.undo()
    for name in (rundir.CONCEPTS, rundir.OVERLAP, rundir.LABELS, rundir.THEMES, rundir.REPORT):
        assert (run / name).exists(), name
    return run


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` (lock files aside) and the sha256 of each file's bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
        for p in sorted(folder.rglob("*"))
        if p.name != rundir.LOCK
    }


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 60
    kinds = {name.split("-")[0] for name in CASES}
    assert {
        "cli",
        "opt",
        "config",
        "spec",
        "data",
        "responses",
        "table",
        "runjson",
        "sae",
        "scored",
        "place",
    } <= kinds


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_input_is_one_line_and_changes_nothing(
    name, tmp_path, tiny_reader, scored_template, monkeypatch, capsys
):
    from cgaps.cli.main import main

    build, fragment = CASES[name]
    model, sae = tiny_reader
    run = write_run(tmp_path / "run", GOOD_ITEMS, GOOD_SAL, meta={"n_concepts": 8})
    env = Env(tmp=tmp_path, run=run, model=model, sae=sae)
    env.scored_template = scored_template
    args = build(env)
    before = tree_digest(tmp_path)  # the run and everything the case built beside it
    monkeypatch.setattr(sys, "argv", ["cgaps", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out = capsys.readouterr()
    assert exit_info.value.code == 2, out.err
    assert "Traceback" not in out.err and out.out == ""
    lines = out.err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], out.err
    assert fragment in errors[0], errors[0]
    assert len(errors[0]) < 2100  # a huge name is cut, never printed whole
    assert tree_digest(tmp_path) == before  # nothing written, in the run or anywhere beside it
