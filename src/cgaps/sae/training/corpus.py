"""The SAE training text: benchmark-style chat conversations, generic English as chat turns, and
the model's own responses.

Each conversation is ``{"source": str, "messages": [{role, content}, ...]}``; the last message is
an assistant turn when the source has a reference answer or a text to answer with.

- The ten benchmarks are read by the benchmark loaders of :mod:`cgaps.items.paper` (one reader
  per original file layout, under ``data_dir/<name>/``); only the turning of a record into a
  *training* conversation lives here: the question as the user turn and the worked solution or
  gold answer as the assistant turn, unlike the evaluation prompt of an item. A source's
  records are taken in file-name order (then line), the order the shipped SAE's mix was drawn in.
- Generic English comes from three Debian packages, ``wordnet-base`` (the WordNet database
  folder), ``fortunes`` (the fortune files) and ``debian-reference-en`` (the gzipped plain-text
  manual), read at the paths the caller passes: the recipe's options, whose defaults are where
  Debian installs them.
- :func:`own_responses` adds the model's own greedy answers to benchmark prompts.

A missing source (no benchmark folder, no path given, or the path absent) is skipped with a
warning, so the recipe still runs where one is absent. Everything is seeded.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cgaps.items.sources import Record
    from cgaps.seams import Generator, Messages

log = logging.getLogger(__name__)

Conversation = dict[str, Any]


def _chat(source: str, user: str, assistant: str | None = None) -> Conversation:
    msgs = [{"role": "user", "content": user.strip()}]
    if assistant:
        msgs.append({"role": "assistant", "content": assistant.strip()})
    return {"source": source, "messages": msgs}


# ---------------------------------------------------------------- benchmark records -> chat turns


def _gsm8k(rec: Record) -> Iterator[Conversation]:
    solution = re.sub(r"<<[^>]*>>", "", rec.get("answer", str)).replace("####", "The answer is")
    yield _chat("gsm8k", rec.get("question", str), solution)


def _math(rec: Record) -> Iterator[Conversation]:
    yield _chat("math", rec.get("problem", str), rec.get("solution", str))


def _agieval(rec: Record) -> Iterator[Conversation]:
    row = rec.row
    parts = [row.get("passage") or "", row.get("question") or "", "\n".join(row.get("options") or [])]
    user = "\n\n".join(p for p in parts if p)
    other = row.get("other") or {}
    solution = other.get("solution") if isinstance(other, dict) else None
    answer = solution or (f"The answer is {row['label']}." if row.get("label") else row.get("answer"))
    yield _chat("agieval", user, str(answer) if answer else None)


def _logicbench(rec: Record) -> Iterator[Conversation]:
    for s in rec.get("samples", list):
        if "qa_pairs" in s:
            for qa in s["qa_pairs"]:
                yield _chat(
                    "logicbench", f"{s['context']}\n\n{qa['question']}", qa["answer"].capitalize() + "."
                )
        else:
            opts = "\n".join(f"{k}: {v}" for k, v in s["choices"].items())
            yield _chat(
                "logicbench", f"{s['context']}\n\n{s['question']}\n{opts}", f"The answer is {s['answer']}."
            )


def _socialiqa(rec: Record) -> Iterator[Conversation]:
    opts = [rec.get(f"answer{x}", str) for x in "ABC"]
    label = int(rec.get("label"))
    user = f"{rec.get('context', str)}\n{rec.get('question', str)}\nA. {opts[0]}\nB. {opts[1]}\nC. {opts[2]}"
    yield _chat("socialiqa", user, f"{'ABC'[label - 1]}. {opts[label - 1]}")


def _bbq(rec: Record) -> Iterator[Conversation]:
    row = rec.row
    label = rec.get("label", int)
    user = f"{row['context']}\n{row['question']}\nA. {row['ans0']}\nB. {row['ans1']}\nC. {row['ans2']}"
    yield _chat("bbq", user, f"{'ABC'[label]}. {row['ans' + str(label)]}")


def _winogrande(rec: Record) -> Iterator[Conversation]:
    a, b = rec.get("context_options", list)
    end = rec.get("continuation", str)
    user = f"Which ending fits best?\n1. {a} {end}\n2. {b} {end}"
    yield _chat("winogrande", user, f"Option {rec.get('gold', int) + 1}.")


def _crows_pairs(rec: Record) -> Iterator[Conversation]:
    yield _chat(
        "crows_pairs",
        f"Which sentence is more likely?\n1. {rec.get('sent_more', str)}\n2. {rec.get('sent_less', str)}",
    )


def _vectara(rec: Record) -> Iterator[Conversation]:
    yield _chat(
        "vectara", f"Summarize the following passage.\n\n{rec.get('source', str)}", rec.get("summary", str)
    )


def _nq_open(rec: Record) -> Iterator[Conversation]:
    yield _chat(
        "nq_open", rec.get("question", str).capitalize() + "?", f"The answer is {rec.get('answer', list)[0]}."
    )


BENCHMARK_CHATS: dict[str, Callable[[Record], Iterator[Conversation]]] = {
    "gsm8k": _gsm8k,
    "math": _math,
    "agieval": _agieval,
    "logicbench": _logicbench,
    "socialiqa": _socialiqa,
    "bbq": _bbq,
    "winogrande": _winogrande,
    "crows_pairs": _crows_pairs,
    "vectara": _vectara,
    "nq_open": _nq_open,
}
"""How a record of each benchmark (as :mod:`cgaps.items.paper` reads it) becomes training chat turns."""


def _file_order(rec: Record) -> tuple[str, int]:
    """(file, line) of a record; a whole-file record (MATH, LogicBench) has line 0."""
    path, _, line = rec.where.rpartition(":")
    return (path, int(line)) if path and line.isdigit() else (rec.where, 0)


def benchmark_conversations(name: str, data_dir: str | Path) -> list[Conversation]:
    """Training conversations of benchmark ``name`` from its original files in ``data_dir/<name>/``."""
    from cgaps.items.paper import PAPER

    records = sorted(PAPER[name].local(Path(data_dir) / name), key=_file_order)
    return [c for rec in records for c in BENCHMARK_CHATS[name](rec)]


# ---------------------------------------------------------------- generic English (Debian packages)


def wordnet(folder: Path, rng: random.Random, per_chat: int = 6) -> Iterator[Conversation]:
    """Glosses (with their example sentences) of random words, a few per conversation.

    ``folder`` is WordNet's database folder (``data.noun``, ``data.verb``, ``data.adj``, ``data.adv``).
    """
    entries = []
    for pos in ("noun", "verb", "adj", "adv"):
        path = folder / f"data.{pos}"
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue
            word = line.split()[4].replace("_", " ")
            entries.append((re.sub(r"\(.*?\)", "", word), line.split("|", 1)[1].strip()))
    rng.shuffle(entries)
    for i in range(0, len(entries) - per_chat, per_chat):
        group = entries[i : i + per_chat]
        user = "What do these words mean: " + ", ".join(w for w, _ in group) + "?"
        yield _chat("wordnet", user, "\n".join(f"- {w}: {g}" for w, g in group))


def fortunes(folder: Path, rng: random.Random) -> Iterator[Conversation]:
    """Quotations of the ``fortune`` databases in ``folder`` (offensive ``off*`` files left out)."""
    texts = []
    for path in sorted(folder.glob("*")):
        if path.suffix or path.is_dir() or path.name.startswith("off"):
            continue
        texts += [
            t.strip() for t in path.read_text(errors="replace").split("\n%\n") if 20 < len(t.strip()) < 1200
        ]
    rng.shuffle(texts)
    asks = [
        "Tell me a quotation.",
        "Share a saying you like.",
        "Give me something witty to read.",
        "Do you know a good quote?",
    ]
    for t in texts:
        yield _chat("fortunes", rng.choice(asks), t)


def debian_reference(path: Path, rng: random.Random, chunk_chars: int = 1200) -> Iterator[Conversation]:
    """Paragraphs of the Debian Reference manual (its gzipped plain text), as requests to explain them."""
    text = gzip.decompress(path.read_bytes()).decode(errors="replace")
    paras = [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", text)]
    paras = [p for p in paras if len(p) > 200 and not re.match(r"^[\d.]+ ", p)]
    chunks, cur = [], ""
    for p in paras:
        cur = f"{cur}\n\n{p}" if cur else p
        if len(cur) > chunk_chars:
            chunks.append(cur)
            cur = ""
    asks = ["Explain this passage in simple words.", "Summarize this.", "What is this text about?"]
    for c in chunks:
        if rng.random() < 0.5:
            yield _chat("debian_reference", f"{rng.choice(asks)}\n\n{c}")
        else:
            yield _chat("debian_reference", "Tell me about this topic from the Debian manual.", c)


GENERIC: dict[str, Callable[[Path, random.Random], Iterator[Conversation]]] = {
    "wordnet": wordnet,
    "fortunes": fortunes,
    "debian_reference": debian_reference,
}
"""The generic-English sources: each reads a path the caller gives (see the module docstring)."""


def build_mix(
    data_dir: str | Path | None,
    caps: dict[str, int],
    *,
    generic: dict[str, Path | None] | None = None,
    seed: int = 0,
) -> list[Conversation]:
    """Up to ``caps[source]`` conversations per source (a seeded sample), shuffled together.

    Benchmarks are read from ``data_dir/<name>/``, generic-English sources from ``generic[name]``;
    a source whose folder or path is absent (or not given) is skipped with a warning.
    """
    from cgaps.errors import unknown_choice

    rng = random.Random(seed)
    generic = generic or {}
    out: list[Conversation] = []
    for source, cap in caps.items():
        if source in BENCHMARK_CHATS:
            if data_dir is None or not (Path(data_dir) / source).is_dir():
                log.warning("text mix: skipping %s (no folder %s/%s)", source, data_dir, source)
                continue
            rows = benchmark_conversations(source, data_dir)
        elif source in GENERIC:
            path = generic.get(source)
            if path is None or not Path(path).exists():
                log.warning(
                    "text mix: skipping %s (%s)", source, "no path given" if path is None else f"no {path}"
                )
                continue
            rows = list(GENERIC[source](Path(path), rng))
        else:
            raise unknown_choice("text-mix source", source, [*BENCHMARK_CHATS, *GENERIC])
        rng.shuffle(rows)
        out += rows[:cap]
    rng.shuffle(out)
    return out


def user_turns(conversations: Sequence[Conversation], n: int, seed: int) -> list[Messages]:
    """The user turns of ``n`` benchmark conversations (a seeded sample; generic English left out)."""
    pool = [c for c in conversations if c["source"] not in GENERIC]
    return [
        [m for m in c["messages"] if m["role"] == "user"]
        for c in random.Random(seed).sample(pool, min(n, len(pool)))
    ]


def own_responses(
    generator: Generator,
    prompts: Sequence[Messages],
    path: Path,
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    chunk: int = 64,
    log_progress: Callable[[str], None] | None = None,
) -> None:
    """Append the generator's greedy answers to ``prompts`` to JSONL ``path`` (source ``own_responses``).

    Written ``chunk`` conversations at a time, so a killed run resumes after the last chunk
    written: the conversations already in ``path`` are the first prompts' answers.
    """
    import time

    done = len(read_jsonl(path)) if path.exists() else 0
    t0, made = time.time(), 0
    for start in range(done, len(prompts), chunk):
        part = list(prompts[start : start + chunk])
        answers = generator.generate(part, max_new_tokens=max_new_tokens, batch_size=batch_size)
        with path.open("a") as f:
            for user, answer in zip(part, answers, strict=True):
                conv = {
                    "source": "own_responses",
                    "messages": [*user, {"role": "assistant", "content": answer}],
                }
                f.write(json.dumps(conv) + "\n")
        made += len(part)
        if log_progress:
            log_progress(
                f"{path.name}: {start + len(part)} / {len(prompts)} responses ({(time.time() - t0) / made:.1f} s each)"
            )


def write_jsonl(path: Path, conversations: Iterable[Conversation]) -> None:
    """Write conversations one JSON object per line, atomically."""
    from cgaps.rundir import atomic_path

    with atomic_path(path) as tmp, tmp.open("w") as f:
        for c in conversations:
            f.write(json.dumps(c) + "\n")


def read_jsonl(path: str | Path) -> list[Conversation]:
    """Conversations of a JSONL file; a line without a ``messages`` list is an error naming it."""
    from cgaps.errors import CGapsError
    from cgaps.items.sources import read_jsonl as read_records

    out = []
    for rec in read_records(Path(path)):
        if not isinstance(rec.row.get("messages"), list):
            raise CGapsError(f"{rec.where}: expected a 'messages' list of {{role, content}} turns")
        out.append(rec.row)
    return out
