"""Own benchmarks without code: a YAML/JSON spec maps any table onto items.

Example (``my_bench.yaml``)::

    name: capitals              # benchmark name (default: the spec file's stem)
    path: capitals.jsonl        # JSONL, JSON list, CSV or Parquet; relative to the spec file
    # hub: org/dataset          # ...or a hub dataset instead of `path`
    # config: default           # hub config (optional)
    # split: test               # hub split (default: test)
    answer_type: short          # number | math | choice | loglik_choice | yesno | short | text | refusal
    fields:
      question: q               # required: the question text
      answer: a                 # required: the gold answer
      choices: options          # choice types: a list column, or a list of columns
      choice_labels: labels     # optional: the options' own labels, which the answer names
      aliases: other_answers    # optional: more gold answers (short)
      category: topic           # optional
      id: qid                   # optional: use the table's own ids in item_id
      answer_type: kind         # optional: a per-row answer type (overrides the spec's)
      meta: extra               # optional: a JSON object of metadata (grader aliases, groups...)
      messages: turns           # optional: a conversation, a list of {role, content}
    prompt_template: "Q: {q}\nA:"   # optional; {column} placeholders, plus {options}

For choice types the answer may be a letter ("B"), a 0-based index (1), or the option's
text; it is stored as the letter. With ``choice_labels`` the answer is matched against the
labels instead (AI2 ARC's ``answerKey`` is "C" or "3" for labels A-E or 1-4).

Fields are **paths** into the row (:func:`field_path`), so files load as their authors
published them: ``question.stem`` (a key of an object), ``question.choices[].text`` (that
key of every element of a list), ``choices[0]`` (one element). AI2 ARC as published::

    answer_type: choice
    fields: {question: question.stem, choices: question.choices[].text,
             choice_labels: question.choices[].label, answer: answerKey, id: id}

A column whose name itself contains a dot is found first by its exact name.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any

import yaml

from cgaps.answers import ANSWER_TYPES, CHOICE_TYPES, LETTERS, too_many_options
from cgaps.errors import CGapsError, did_you_mean
from cgaps.items import prompts
from cgaps.items.sources import Record, hub_records, read_table_file
from cgaps.rundir import read_json_file

SPEC_KEYS = ("name", "path", "hub", "config", "split", "answer_type", "fields", "prompt_template")
FIELD_KEYS = (
    "question",
    "answer",
    "choices",
    "choice_labels",
    "aliases",
    "category",
    "id",
    "answer_type",
    "meta",
    "messages",
)
SPEC_SUFFIXES = (".yaml", ".yml", ".json")

_SEGMENT = re.compile(r"(?P<name>[^.\[\]]+)(?P<index>\[\d*\])?")
_MISSING = object()


def split_path(path: str) -> list[tuple[str, str | None]]:
    """``question.choices[].text`` -> [("question", None), ("choices", ""), ("text", None)]."""
    parts = []
    for seg in path.split("."):
        m = _SEGMENT.fullmatch(seg)
        if m is None:
            raise CGapsError(
                f"field path {path!r}: segment {seg!r} is not NAME, NAME[] or NAME[N] "
                "(e.g. question.stem, question.choices[].text, choices[0])"
            )
        index = m.group("index")
        parts.append((m.group("name"), None if index is None else index[1:-1]))
    return parts


def field_path(rec: Record, path: str, *, required: bool = True) -> Any:
    """The value at ``path`` in a record (see the module docstring); None when absent and not
    ``required``, else an error naming the record's file and line, the path and what is there.

    Parquet list cells (numpy arrays) count as lists; ``NAME[]`` maps the rest of the path over
    a list and gives a list.
    """
    if path in rec.row:  # a plain column, or one whose name holds a dot
        value = rec.row[path]
        if value is None and required:
            raise rec.fail(path, "is empty")
        return value

    def walk(value: Any, parts: list[tuple[str, str | None]], done: str) -> Any:
        if not parts:
            return value
        (name, index), rest = parts[0], parts[1:]
        here = f"{done}.{name}" if done else name
        if not isinstance(value, dict) or value.get(name) is None:
            if not required:
                return _MISSING
            keys = ", ".join(map(str, value)) if isinstance(value, dict) else type(value).__name__
            if not done:  # the same words as Record.get for a plain column
                raise CGapsError(f"{rec.where}: missing field {path!r}; fields present: {keys}")
            raise rec.fail(path, f"has no {here!r} (there: {keys})")
        value = value[name]
        if index is None:
            return walk(value, rest, here)
        if not isinstance(value, list | tuple) and hasattr(value, "tolist"):
            value = value.tolist()
        if not isinstance(value, list | tuple):
            raise rec.fail(path, f"expects a list at {here!r}, got {type(value).__name__}")
        if index == "":
            return [walk(v, rest, f"{here}[{i}]") for i, v in enumerate(value)]
        if int(index) >= len(value):
            if not required:
                return _MISSING
            raise rec.fail(path, f"has no element {index} at {here!r} (it has {len(value)})")
        return walk(value[int(index)], rest, f"{here}[{index}]")

    found = walk(rec.row, split_path(path), "")
    return None if found is _MISSING else found


def is_spec(suite: str) -> bool:
    return suite.lower().endswith(SPEC_SUFFIXES)


def read_spec(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise CGapsError(f"{path}: no such benchmark spec file")
    if path.suffix.lower() == ".json":
        spec = read_json_file(path, "fix the spec file")
    else:
        try:
            spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise CGapsError(f"{path}: not UTF-8 text ({e.reason}); save the spec file as UTF-8") from e
        except yaml.YAMLError as e:
            raise CGapsError(f"{path}: not a valid YAML file ({' '.join(str(e).split())})") from e
    if not isinstance(spec, dict):
        raise CGapsError(f"{path}: expected a mapping with keys {', '.join(SPEC_KEYS)}")
    for key in spec:
        if key not in SPEC_KEYS:
            raise CGapsError(
                f"{path}: unknown key {key!r}.{did_you_mean(str(key), SPEC_KEYS)} Known keys: {', '.join(SPEC_KEYS)}"
            )
    fields = spec.get("fields")
    if not isinstance(fields, dict) or "question" not in fields or "answer" not in fields:
        raise CGapsError(f"{path}: 'fields' must map at least 'question' and 'answer' to column names")
    for key in fields:
        if key not in FIELD_KEYS:
            raise CGapsError(
                f"{path}: unknown key fields.{key}.{did_you_mean(str(key), FIELD_KEYS)} Known: {', '.join(FIELD_KEYS)}"
            )
    atype = spec.get("answer_type", "short")
    if not isinstance(atype, str):
        raise CGapsError(
            f"{path}: answer_type must be one of {', '.join(ANSWER_TYPES)}, got {atype!r} ({type(atype).__name__})"
        )
    if atype not in ANSWER_TYPES:
        raise CGapsError(
            f"{path}: answer_type {atype!r}.{did_you_mean(atype, ANSWER_TYPES)} Valid: {', '.join(ANSWER_TYPES)}"
        )
    if atype in CHOICE_TYPES and "choices" not in fields:
        raise CGapsError(
            f"{path}: answer_type {atype!r} needs fields.choices (a list column or a list of columns)"
        )
    if isinstance(fields.get("choices"), list):
        problem = too_many_options(len(fields["choices"]))
        if problem:
            raise CGapsError(f"{path}: fields.choices {problem}")
    for key, value in fields.items():  # a malformed path is reported before any row is read
        for one in value if isinstance(value, list) else [value]:
            if not isinstance(one, str):
                raise CGapsError(f"{path}: fields.{key} must be a column name or path, got {one!r}")
            try:
                split_path(one)
            except CGapsError as e:
                raise CGapsError(f"{path}: fields.{key}: {e}") from e
    if "choice_labels" in fields and "choices" not in fields:
        raise CGapsError(f"{path}: fields.choice_labels needs fields.choices (the options they label)")
    _check_template(path, spec.get("prompt_template"))
    if ("path" in spec) == ("hub" in spec):
        raise CGapsError(f"{path}: give exactly one of 'path' (a local file) or 'hub' (a hub dataset id)")
    return {
        **spec,
        "answer_type": atype,
        "name": str(spec.get("name") or path.stem),
        "_dir": path.parent,
        "_file": str(path),
    }


def _check_template(path: Path, template: Any) -> None:
    """A prompt template is a string whose placeholders are plain column names (or ``options``):
    no attribute or index (``{q.upper}`` would insert a method's repr), no unclosed brace."""
    if template is None:
        return
    if not isinstance(template, str):
        raise CGapsError(f"{path}: prompt_template must be a string, got {type(template).__name__}")
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise CGapsError(
            f"{path}: prompt_template is not a valid template ({e}); write a literal brace as {{{{ or }}}}"
        ) from e
    for name in names:
        if not name or name.isdigit() or any(c in name for c in ".[]"):
            raise CGapsError(
                f"{path}: prompt_template placeholder {{{name}}} must name a column (no attribute, index "
                "or position); write a literal brace as {{ or }}"
            )


def _records(spec: dict[str, Any]) -> list[Record]:
    if "hub" in spec:
        return list(hub_records(spec["hub"], spec.get("config"), spec.get("split", "test")))
    data = Path(spec["path"])
    if not data.is_absolute():
        data = spec["_dir"] / data
    if not data.exists():
        raise CGapsError(f"{spec['_file']}: field 'path': {data} does not exist")
    return list(read_table_file(data))


def _choices(rec: Record, column: str | list[str]) -> list[str]:
    if isinstance(column, list):  # its length was checked with the spec
        return [str(field_path(rec, c)) for c in column]
    value = field_path(rec, column)
    if isinstance(value, str):  # a CSV cell holding a JSON list
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise rec.fail(column, "should be a list of options (a JSON list in CSV cells)") from e
    if not isinstance(value, list | tuple) and hasattr(value, "tolist"):
        value = value.tolist()  # parquet list columns arrive as numpy arrays
    if not isinstance(value, list | tuple) or len(value) < 2:
        raise rec.fail(column, "should be a list of at least two options")
    problem = too_many_options(len(value))
    if problem:
        raise rec.fail(column, problem)
    return [str(v) for v in value]


def _letter(
    rec: Record, column: str, answer: Any, options: list[str], labels: list[str] | None = None
) -> str:
    if labels is not None:  # the answer names an option by its own label
        if len(labels) != len(options):
            raise rec.fail(column, f"has {len(labels)} choice labels for {len(options)} options")
        key = str(answer).strip()
        if key not in labels:
            raise rec.fail(column, f"is {answer!r}, which is none of the choice labels {labels!r:.80}")
        return LETTERS[labels.index(key)]
    if isinstance(answer, int | float) and not isinstance(answer, bool) and float(answer).is_integer():
        index = int(answer)
    elif str(answer).strip().isdigit():
        index = int(str(answer).strip())
    elif str(answer).strip().upper() in LETTERS[: len(options)] and len(str(answer).strip()) == 1:
        return str(answer).strip().upper()
    elif str(answer) in options:
        index = options.index(str(answer))
    else:
        raise rec.fail(
            column, f"is {answer!r}: not a letter, 0-based index or option text of {options!r:.80}"
        )
    if not 0 <= index < len(options):
        raise rec.fail(column, f"is {index}, out of range for {len(options)} options (0-based index)")
    return LETTERS[index]


def _row_type(rec: Record, fields: dict[str, Any], default: str) -> str:
    """The row's answer type: its ``fields.answer_type`` value when the spec maps one, else the spec's."""
    if "answer_type" not in fields:
        return default
    value = field_path(rec, fields["answer_type"], required=False)
    if value is None or str(value).strip() == "":
        return default
    if str(value) not in ANSWER_TYPES:
        raise rec.fail(
            fields["answer_type"],
            f"is {value!r}.{did_you_mean(str(value), ANSWER_TYPES)} Valid: {', '.join(ANSWER_TYPES)}",
        )
    return str(value)


def _json_field(rec: Record, fields: dict[str, Any], key: str, kind: type) -> Any:
    """An optional field holding a JSON object (``meta``) or list (``messages``), or the same as text."""
    if key not in fields:
        return None
    value = field_path(rec, fields[key], required=False)
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else None
        except json.JSONDecodeError as e:
            raise rec.fail(fields[key], f"is not valid JSON ({e.msg})") from e
    if value is not None and not isinstance(value, list | tuple) and hasattr(value, "tolist"):
        value = value.tolist()
    if value is not None and not isinstance(value, kind):
        raise rec.fail(fields[key], f"should be a JSON {'object' if kind is dict else 'list'}")
    return value


def load_custom(spec_path: str | Path, chain_of_thought: bool = False) -> tuple[str, list[dict[str, Any]]]:
    """(benchmark name, items) from a spec file; item ids come from fields.id or the row position."""
    spec = read_spec(spec_path)
    fields = spec["fields"]
    template = spec.get("prompt_template")
    items = []
    for i, rec in enumerate(_records(spec)):
        question = str(field_path(rec, fields["question"]))
        answer = field_path(rec, fields["answer"])
        atype = _row_type(rec, fields, spec["answer_type"])
        options = None
        if "choices" in fields and (
            atype in CHOICE_TYPES
            or isinstance(fields["choices"], list)
            or field_path(rec, fields["choices"], required=False) is not None
        ):
            options = _choices(rec, fields["choices"])
        elif atype in CHOICE_TYPES:
            raise rec.fail(
                fields.get("answer_type", "answer_type"), f"is {atype!r}, which needs fields.choices"
            )
        labels = None
        if "choice_labels" in fields and options is not None:
            labels = [str(v).strip() for v in _choices(rec, fields["choice_labels"])]
        meta: dict[str, Any] = _json_field(rec, fields, "meta", dict) or {}
        messages = _json_field(rec, fields, "messages", list)
        if atype in CHOICE_TYPES:
            reference = _letter(rec, fields["answer"], answer, options or [], labels)
        else:
            reference = str(answer)
        if "aliases" in fields:
            aliases = field_path(rec, fields["aliases"], required=False) or []
            if isinstance(aliases, str):
                try:
                    aliases = json.loads(aliases) if aliases.startswith("[") else [aliases]
                except json.JSONDecodeError as e:
                    raise CGapsError(
                        f"{rec.where}: field {fields['aliases']!r} starts like a JSON list but is not one "
                        f"({e.msg} at character {e.pos}); write a JSON list of strings or one answer"
                    ) from e
            if not isinstance(aliases, list):
                aliases = [aliases]
            meta["answers"] = [reference, *map(str, aliases)]
        if template:
            try:
                # {options} is the formatted block even when the row has a column of that name
                row = {k: v for k, v in rec.row.items() if isinstance(k, str)}
                prompt = template.format_map({**row, "options": prompts.options_block(options or [])})
            except (KeyError, IndexError) as e:
                raise CGapsError(
                    f"{spec['_file']}: prompt_template uses {e}, which is not a column of {rec.where}"
                ) from e
        else:
            prompt = prompts.by_answer_type(atype, question, options, chain_of_thought)
        item_key = str(field_path(rec, fields["id"])) if "id" in fields else f"{i:05d}"
        items.append(
            {
                "item_id": f"{spec['name']}/{item_key}",
                "prompt": prompt,
                "reference": reference,
                "answer_type": atype,
                "choices": options,
                "category": str(field_path(rec, fields["category"], required=False) or "")
                if "category" in fields
                else "",
                "meta": meta,
                **({"messages": messages} if messages else {}),
            }
        )
    if not items:
        raise CGapsError(f"{spec['_file']}: the data file has no rows")
    return spec["name"], items
