"""The paper's ten benchmarks: readers for the original file layouts and for the hub, one parser each.

Each benchmark is a :class:`Source` in the dict literal :data:`PAPER`:

* ``local(root)`` reads the original files (layouts in ``shared/benchmarks/MANIFEST.md``)
  from ``--data-dir/<name>/`` and yields :class:`~cgaps.items.sources.Record` s;
* ``hub()`` yields the same records through ``datasets`` (no ``--data-dir``): the
  benchmark's Hugging Face dataset where one keeps the original fields (GSM8K, MATH,
  SocialIQA, WinoGrande, NQ-Open), otherwise the original files at the MANIFEST's commit,
  downloaded into the ``datasets`` cache and read by the local readers;
* ``parse(records, chain_of_thought)`` turns records into item dicts (prompt, reference,
  answer_type, choices, category, meta). Both readers feed the same parser, so the
  offline tests exercise the code that hub users run.

Item ids are assigned by the caller from the position in source order, so they do not
depend on ``--limit``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from cgaps.answers import LETTERS, last_boxed, too_many_options
from cgaps.errors import CGapsError
from cgaps.items import prompts
from cgaps.items.sources import (
    Record,
    download,
    hub_records,
    read_csv,
    read_json,
    read_jsonl,
    read_lines,
    require_file,
)

Item = dict[str, Any]


def _raw(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


def _remote_files(urls: dict[str, str], read: Callable[[Path], Any]) -> Iterator[Record]:
    """Original files from GitHub (cached by ``datasets``), read by the local reader ``read``.

    ``_part`` is the file's key (task, category, axiom path), as the local readers set it.
    """
    for part, path in download(urls).items():
        result = read(path)
        for rec in [result] if isinstance(result, Record) else result:
            yield Record({**rec.row, "_part": part}, rec.where)


def _check_options(rec: Record, field: str, options: list[str]) -> None:
    problem = too_many_options(len(options))
    if problem:
        raise rec.fail(field, problem)


def _check_label(rec: Record, field: str, value: Any, valid: Iterable[Any]) -> None:
    valid = list(valid)
    if value not in valid:
        raise rec.fail(field, f"is {value!r}, out of range; expected one of {', '.join(map(repr, valid))}")


# ------------------------------------------------------------------ GSM8K


def _gsm8k_local(root: Path) -> Iterator[Record]:
    yield from read_jsonl(
        require_file(root / "test.jsonl", "expected the GSM8K test split (grade_school_math/data/test.jsonl)")
    )


def _gsm8k_hub() -> Iterator[Record]:
    yield from hub_records("openai/gsm8k", "main", "test")


def _gsm8k_parse(records: Iterable[Record], cot: bool) -> Iterator[Item]:
    for rec in records:
        question = rec.get("question", str)
        answer = rec.get("answer", str)
        if "####" not in answer:
            raise rec.fail("answer", "has no '#### <number>' final answer")
        final = answer.rsplit("####", 1)[1].strip().replace(",", "")
        yield {
            "prompt": prompts.number(question, cot),
            "reference": final,
            "answer_type": "number",
            "meta": {"solution": answer},
        }


# ------------------------------------------------------------------ MATH

MATH_SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)


def _numeric_stem(path: Path) -> tuple[int, str]:
    return (int(path.stem), "") if path.stem.isdigit() else (1 << 30, path.stem)


def _math_local(root: Path) -> Iterator[Record]:
    test = root / "test"
    if not test.is_dir():
        raise CGapsError(f"{test}: no such folder; expected the MATH test split as test/<subject>/<n>.json")
    for subject_dir in sorted(p for p in test.iterdir() if p.is_dir()):
        for path in sorted(subject_dir.glob("*.json"), key=_numeric_stem):
            rec = read_json(path)
            yield Record(
                {**rec.row, "_part": subject_dir.name, "_file": f"{subject_dir.name}/{path.name}"}, rec.where
            )


def _math_hub() -> Iterator[Record]:
    # hendrycks/competition_math was taken down; EleutherAI's copy keeps the original fields.
    for subject in MATH_SUBJECTS:
        for rec in hub_records("EleutherAI/hendrycks_math", subject, "test"):
            yield Record({**rec.row, "_part": subject}, rec.where)


def _math_parse(records: Iterable[Record], cot: bool) -> Iterator[Item]:
    for rec in records:
        problem = rec.get("problem", str)
        solution = rec.get("solution", str)
        answer = last_boxed(solution)
        if answer is None:
            raise rec.fail("solution", "has no \\boxed{} final answer")
        meta = {"level": rec.row.get("level", ""), "type": rec.row.get("type", "")}
        if "_file" in rec.row:
            meta["file"] = rec.row["_file"]
        yield {
            "prompt": prompts.math(problem, cot),
            "reference": answer,
            "answer_type": "math",
            "category": rec.row.get("_part", ""),
            "meta": meta,
        }


# ------------------------------------------------------------------ AGIEval (English)

AGIEVAL_TASKS = (
    "aqua-rat",
    "gaokao-english",
    "logiqa-en",
    "lsat-ar",
    "lsat-lr",
    "lsat-rc",
    "math",
    "sat-en",
    "sat-en-without-passage",
    "sat-math",
)
_AGIEVAL = ("ruixiangcui/AGIEval", "5c77d073fda993f1652eaae3cf5d04cc5fd21d40")


def _agieval_local(root: Path) -> Iterator[Record]:
    for task in AGIEVAL_TASKS:
        path = require_file(
            root / f"{task}.jsonl", "expected the ten English AGIEval task files (data/v1/*.jsonl)"
        )
        for rec in read_jsonl(path):
            yield Record({**rec.row, "_part": task}, rec.where)


def _agieval_hub() -> Iterator[Record]:
    yield from _remote_files({t: _raw(*_AGIEVAL, f"data/v1/{t}.jsonl") for t in AGIEVAL_TASKS}, read_jsonl)


_OPTION_PREFIX = re.compile(r"^\s*\(?([A-J])\)\s*")


def _agieval_parse(records: Iterable[Record], cot: bool) -> Iterator[Item]:
    for rec in records:
        task = rec.row.get("_part", "")
        question = rec.get("question", str)
        passage = rec.row.get("passage") or None
        if not rec.row.get("options"):  # the free-form math task (answers like "(3,4]")
            answer = rec.get("answer", str)
            yield {
                "prompt": prompts.math(prompts.join(passage, question), cot),
                "reference": answer,
                "answer_type": "math",
                "category": task,
                "meta": {},
            }
            continue
        options = [_OPTION_PREFIX.sub("", str(o)) for o in rec.get("options", list)]
        _check_options(rec, "options", options)
        label = rec.get("label", str)
        _check_label(rec, "label", label, LETTERS[: len(options)])
        yield {
            "prompt": prompts.multiple_choice(question, options, context=passage),
            "reference": label,
            "answer_type": "choice",
            "choices": options,
            "category": task,
            "meta": {},
        }


# ------------------------------------------------------------------ LogicBench (Eval)

_LOGIC_AXIOMS = {
    "first_order_logic": (
        "bidirectional_dilemma",
        "constructive_dilemma",
        "destructive_dilemma",
        "disjunctive_syllogism",
        "existential_generalization",
        "hypothetical_syllogism",
        "modus_ponens",
        "modus_tollens",
        "universal_instantiation",
    ),
    "nm_logic": (
        "default_reasoning_default",
        "default_reasoning_irr",
        "default_reasoning_open",
        "default_reasoning_several",
        "reasoning_about_exceptions_1",
        "reasoning_about_exceptions_2",
        "reasoning_about_exceptions_3",
        "reasoning_about_priority",
    ),
    "propositional_logic": (
        "bidirectional_dilemma",
        "commutation",
        "constructive_dilemma",
        "destructive_dilemma",
        "disjunctive_syllogism",
        "hypothetical_syllogism",
        "material_implication",
        "modus_tollens",
    ),
}
_LOGICBENCH = ("Mihir3009/LogicBench", "c014153303c98de4d5f09d41c3a235cd869be5c8")


def _logic_parts() -> list[str]:
    return [
        f"{task}/{logic}/{axiom}"
        for task in ("BQA", "MCQA")
        for logic, axioms in _LOGIC_AXIOMS.items()
        for axiom in axioms
    ]


def _logicbench_local(root: Path) -> Iterator[Record]:
    base = root / "LogicBench(Eval)"
    if not base.is_dir():
        raise CGapsError(
            f"{base}: no such folder; expected LogicBench's data/LogicBench(Eval)/{{BQA,MCQA}}/..."
        )
    for part in _logic_parts():
        rec = read_json(
            require_file(
                base / part / "data_instances.json", "the LogicBench(Eval) release has 50 axiom files"
            )
        )
        yield Record({**rec.row, "_part": part}, rec.where)


def _logicbench_hub() -> Iterator[Record]:
    urls = {p: _raw(*_LOGICBENCH, f"data/LogicBench(Eval)/{p}/data_instances.json") for p in _logic_parts()}
    yield from _remote_files(urls, read_json)


def _logicbench_parse(records: Iterable[Record], cot: bool) -> Iterator[Item]:
    for rec in records:
        part = rec.row.get("_part", "")
        samples = rec.get("samples", list)
        for k, sample in enumerate(samples):
            srec = Record(sample, f"{rec.where} samples[{k}]")
            context = srec.get("context", str)
            if "qa_pairs" in sample:  # BQA: yes/no questions about the context
                for j, qa in enumerate(srec.get("qa_pairs", list)):
                    qrec = Record(qa, f"{srec.where}.qa_pairs[{j}]")
                    answer = qrec.get("answer", str).strip().lower()
                    _check_label(qrec, "answer", answer, ("yes", "no"))
                    yield {
                        "prompt": prompts.yes_no(qrec.get("question", str), context=context),
                        "reference": answer,
                        "answer_type": "yesno",
                        "category": part,
                        "meta": {"id": sample.get("id")},
                    }
            else:  # MCQA: choice_1..choice_4
                choices = srec.get("choices", dict)
                keys = sorted(
                    choices, key=lambda k: int(k.rsplit("_", 1)[-1]) if k.rsplit("_", 1)[-1].isdigit() else 99
                )
                options = [str(choices[key]) for key in keys]
                _check_options(srec, "choices", options)
                answer = srec.get("answer", str)
                _check_label(srec, "answer", answer, keys)
                yield {
                    "prompt": prompts.multiple_choice(srec.get("question", str), options, context=context),
                    "reference": LETTERS[keys.index(answer)],
                    "answer_type": "choice",
                    "choices": options,
                    "category": part,
                    "meta": {"id": sample.get("id")},
                }


# ------------------------------------------------------------------ SocialIQA


def _socialiqa_local(root: Path) -> Iterator[Record]:
    data = require_file(root / "dev.jsonl", "expected socialiqa-train-dev/dev.jsonl from the AI2 archive")
    labels = read_lines(require_file(root / "dev-labels.lst", "expected socialiqa-train-dev/dev-labels.lst"))
    records = list(read_jsonl(data))
    if len(records) != len(labels):
        raise CGapsError(
            f"{data}: {len(records)} items but {root / 'dev-labels.lst'} has {len(labels)} labels; "
            "the two files must be line-aligned"
        )
    for rec, (label, where) in zip(records, labels, strict=True):
        yield Record({**rec.row, "label": label, "_label_where": where}, rec.where)


def _socialiqa_hub() -> Iterator[Record]:
    yield from hub_records("allenai/social_i_qa", None, "validation")


def _socialiqa_parse(records: Iterable[Record], cot: bool) -> Iterator[Item]:
    for rec in records:
        options = [rec.get(f"answer{x}", str) for x in "ABC"]  # the fields answerA..answerC
        label = str(rec.get("label")).strip()
        where = rec.row.get("_label_where")
        _check_label(Record(rec.row, where) if where else rec, "label", label, ("1", "2", "3"))
        yield {
            "prompt": prompts.multiple_choice(
                rec.get("question", str), options, context=rec.get("context", str)
            ),
            "reference": LETTERS[int(label) - 1],
            "answer_type": "choice",
            "choices": options,
            "meta": {},
        }


# ------------------------------------------------------------------ WinoGrande


def _winogrande_local(root: Path) -> Iterator[Record]:
    yield from read_jsonl(
        require_file(root / "winogrande.jsonl", "expected the WinoGrande dev split (llm-foundry format)")
    )


def _winogrande_hub() -> Iterator[Record]:
    yield from hub_records("allenai/winogrande", "winogrande_xl", "validation")


def _split_options(rec: Record) -> tuple[str, list[str]]:
    """Recover (sentence with '_', options) from the converted format's two context options."""
    a, b = rec.get("context_options", list)
    prefix_len = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        prefix_len += 1
    # back up to a word boundary: options "Jim"/"John" share "J", which belongs to the option
    cut = a.rfind(" ", 0, prefix_len + 1) + 1 if prefix_len < min(len(a), len(b)) else prefix_len
    prefix = a[:cut]
    sentence = f"{prefix}_ {rec.get('continuation', str).strip()}"
    return sentence, [a[cut:].strip(), b[cut:].strip()]


def _winogrande_parse(records: Iterable[Record], cot: bool) -> Iterator[Item]:
    for rec in records:
        if "sentence" in rec.row:  # the original format (hub)
            sentence = rec.get("sentence", str)
            options = [rec.get("option1", str), rec.get("option2", str)]
            label = str(rec.get("answer")).strip()
            _check_label(rec, "answer", label, ("1", "2"))
            gold = int(label) - 1
        else:  # MosaicML's converted format (local)
            sentence, options = _split_options(rec)
            gold = rec.get("gold", int)
            _check_label(rec, "gold", gold, (0, 1))
        question = f"Which option best fills the blank (_)?\n{sentence}"
        yield {
            "prompt": prompts.multiple_choice(question, options),
            "reference": LETTERS[gold],
            "answer_type": "choice",
            "choices": options,
            "meta": {},
        }


# ------------------------------------------------------------------ BBQ

BBQ_CATEGORIES = (
    "Age",
    "Disability_status",
    "Gender_identity",
    "Nationality",
    "Physical_appearance",
    "Race_ethnicity",
    "Race_x_SES",
    "Race_x_gender",
    "Religion",
    "SES",
    "Sexual_orientation",
)
_BBQ = ("nyu-mll/BBQ", "bea11bd97d79217245b5871acd247b9d6eb24598")


def _bbq_local(root: Path) -> Iterator[Record]:
    # Whatever categories are present (the test data holds 5 of the 11), in name order.
    files = sorted(root.glob("*.jsonl"))
    if not files:
        raise CGapsError(f"{root}: no <Category>.jsonl files; expected BBQ's data/*.jsonl")
    for path in files:
        yield from read_jsonl(path)


def _bbq_hub() -> Iterator[Record]:
    yield from _remote_files({c: _raw(*_BBQ, f"data/{c}.jsonl") for c in BBQ_CATEGORIES}, read_jsonl)


def _bbq_parse(records: Iterable[Record], cot: bool) -> Iterator[Item]:
    for rec in records:
        options = [rec.get(f"ans{i}", str) for i in range(3)]
        label = rec.get("label", int)
        _check_label(rec, "label", label, (0, 1, 2))
        extra = rec.row.get("additional_metadata") or {}
        meta = {
            k: rec.row.get(k)
            for k in ("example_id", "question_index", "question_polarity", "context_condition", "answer_info")
        }
        meta["stereotyped_groups"] = extra.get("stereotyped_groups", [])
        yield {
            "prompt": prompts.multiple_choice(
                rec.get("question", str), options, context=rec.get("context", str)
            ),
            "reference": LETTERS[label],
            "answer_type": "choice",
            "choices": options,
            "category": str(rec.get("category", str)),
            "meta": meta,
        }


# ------------------------------------------------------------------ CrowS-Pairs

_CROWS = ("nyu-mll/crows-pairs", "8aaac11c485473159ec9328a65253a5be9a479dc")
CROWS_QUESTION = "Which of these two sentences is more likely?"


def _crows_local(root: Path) -> Iterator[Record]:
    yield from read_csv(
        require_file(root / "crows_pairs_anonymized.csv", "expected data/crows_pairs_anonymized.csv")
    )


def _crows_hub() -> Iterator[Record]:
    yield from _remote_files({"all": _raw(*_CROWS, "data/crows_pairs_anonymized.csv")}, read_csv)


def _crows_parse(records: Iterable[Record], cot: bool) -> Iterator[Item]:
    for index, rec in enumerate(records):
        more, less = rec.get("sent_more", str), rec.get("sent_less", str)
        direction = rec.get("stereo_antistereo", str)
        _check_label(rec, "stereo_antistereo", direction, ("stereo", "antistereo"))
        # Seeded by position only, so the order (and the gold letter) never depends on --seed/--limit.
        less_first = random.Random(index).random() < 0.5
        options = [less, more] if less_first else [more, less]
        yield {
            "prompt": prompts.multiple_choice(CROWS_QUESTION, options),
            "reference": LETTERS[0 if less_first else 1],
            "answer_type": "loglik_choice",
            "choices": options,
            "category": rec.get("bias_type", str),
            "meta": {"stereo_antistereo": direction, "sent_more": more, "sent_less": less},
        }


# ------------------------------------------------------------------ Vectara FaithBench

_FAITHBENCH = ("vectara/FaithBench", "cf89797d82812c23b5d5e5c121f1d9b8983bbbce")
FAITH_LABELS = ("Consistent", "Benign", "Questionable", "Unwanted")
FAITH_CONSISTENT = ("Consistent", "Benign")
FAITH_QUESTION = (
    "Is every claim in the summary supported by the source, with nothing contradicted or "
    "invented? Answer yes or no."
)


def _vectara_local(root: Path) -> Iterator[Record]:
    yield from read_csv(
        require_file(root / "FaithBench.csv", "expected FaithBench.csv from vectara/FaithBench")
    )


def _vectara_hub() -> Iterator[Record]:
    yield from _remote_files({"all": _raw(*_FAITHBENCH, "FaithBench.csv")}, read_csv)


def _vectara_parse(records: Iterable[Record], cot: bool) -> Iterator[Item]:
    for rec in records:
        worst, best = rec.get("worst-label", str).strip(), rec.get("best-label", str).strip()
        _check_label(rec, "worst-label", worst, FAITH_LABELS)
        _check_label(rec, "best-label", best, FAITH_LABELS)
        # worst-label: a summary is consistent only if no annotator found a questionable or
        # unwanted hallucination in it (the stricter reading; see docs/benchmarks.md).
        reference = "yes" if worst in FAITH_CONSISTENT else "no"
        context = f"Source:\n{rec.get('source', str).strip()}\n\nSummary:\n{rec.get('summary', str).strip()}"
        yield {
            "prompt": prompts.join(context, FAITH_QUESTION),
            "reference": reference,
            "answer_type": "yesno",
            "category": str(rec.row.get("LLM", "")),
            "meta": {"worst_label": worst, "best_label": best},
        }


# ------------------------------------------------------------------ NQ-Open


def _nq_local(root: Path) -> Iterator[Record]:
    yield from read_jsonl(require_file(root / "NQ-open.dev.jsonl", "expected nq_open/NQ-open.dev.jsonl"))


def _nq_hub() -> Iterator[Record]:
    yield from hub_records("google-research-datasets/nq_open", "nq_open", "validation")


def _nq_parse(records: Iterable[Record], cot: bool) -> Iterator[Item]:
    for rec in records:
        answers = [str(a) for a in rec.get("answer", list)]
        if not answers:
            raise rec.fail("answer", "is an empty list; every question needs at least one gold answer")
        question = rec.get("question", str).strip()
        question = question[0].upper() + question[1:] + ("" if question.endswith("?") else "?")
        yield {
            "prompt": prompts.short(question),
            "reference": answers[0],
            "answer_type": "short",
            "meta": {"answers": answers},
        }


# ------------------------------------------------------------------ the table


class Source(NamedTuple):
    local: Callable[[Path], Iterator[Record]]
    hub: Callable[[], Iterator[Record]]
    parse: Callable[[Iterable[Record], bool], Iterator[Item]]


PAPER: dict[str, Source] = {
    "gsm8k": Source(_gsm8k_local, _gsm8k_hub, _gsm8k_parse),
    "math": Source(_math_local, _math_hub, _math_parse),
    "agieval": Source(_agieval_local, _agieval_hub, _agieval_parse),
    "logicbench": Source(_logicbench_local, _logicbench_hub, _logicbench_parse),
    "socialiqa": Source(_socialiqa_local, _socialiqa_hub, _socialiqa_parse),
    "winogrande": Source(_winogrande_local, _winogrande_hub, _winogrande_parse),
    "bbq": Source(_bbq_local, _bbq_hub, _bbq_parse),
    "crows_pairs": Source(_crows_local, _crows_hub, _crows_parse),
    "vectara": Source(_vectara_local, _vectara_hub, _vectara_parse),
    "nq_open": Source(_nq_local, _nq_hub, _nq_parse),
}


def load_paper(name: str, data_dir: str | Path | None, chain_of_thought: bool = False) -> list[Item]:
    """Items of one paper benchmark, from ``data_dir/<name>/`` or (no data_dir) the hub."""
    source = PAPER[name]
    if data_dir is None:
        records = source.hub()
    else:
        root = Path(data_dir) / name
        if not root.is_dir():
            raise CGapsError(
                f"{root}: no such folder; --data-dir must hold one folder per benchmark "
                f"({', '.join(PAPER)}), or leave it out to load from the hub"
            )
        records = source.local(root)
    return list(source.parse(records, chain_of_thought))
