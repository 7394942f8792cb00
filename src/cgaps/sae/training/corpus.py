"""The SAE training text mix: benchmark-style chat conversations plus generic English as chat turns.

Each conversation is ``{"source": str, "messages": [{role, content}, ...]}``; the last message is
an assistant turn when the source has a reference answer or a text to answer with. Readers take
files directly from the benchmark folders' original layouts (``../shared/benchmarks``) and from
Debian's ``wordnet-base``, ``fortunes`` and ``debian-reference-en``; a missing source is skipped
with a warning, so the recipe still runs where one is absent. Everything is seeded.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Conversation = dict[str, Any]


def _chat(source: str, user: str, assistant: str | None = None) -> Conversation:
    msgs = [{"role": "user", "content": user.strip()}]
    if assistant:
        msgs.append({"role": "assistant", "content": assistant.strip()})
    return {"source": source, "messages": msgs}


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open() as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def gsm8k(root: Path) -> Iterator[Conversation]:
    for row in _jsonl(root / "gsm8k" / "test.jsonl"):
        solution = re.sub(r"<<[^>]*>>", "", row["answer"]).replace("####", "The answer is")
        yield _chat("gsm8k", row["question"], solution)


def math(root: Path) -> Iterator[Conversation]:
    for path in sorted((root / "math" / "test").glob("*/*.json")):
        row = json.loads(path.read_text())
        yield _chat("math", row["problem"], row["solution"])


def agieval(root: Path) -> Iterator[Conversation]:
    for path in sorted((root / "agieval").glob("*.jsonl")):
        for row in _jsonl(path):
            parts = [row.get("passage") or "", row.get("question") or "", "\n".join(row.get("options") or [])]
            user = "\n\n".join(p for p in parts if p)
            other = row.get("other") or {}
            solution = other.get("solution") if isinstance(other, dict) else None
            answer = solution or (f"The answer is {row['label']}." if row.get("label") else row.get("answer"))
            yield _chat("agieval", user, str(answer) if answer else None)


def logicbench(root: Path) -> Iterator[Conversation]:
    for path in sorted((root / "logicbench").glob("*/*/*/*/data_instances.json")):
        data = json.loads(path.read_text())
        for s in data["samples"]:
            if "qa_pairs" in s:
                for qa in s["qa_pairs"]:
                    yield _chat(
                        "logicbench", f"{s['context']}\n\n{qa['question']}", qa["answer"].capitalize() + "."
                    )
            else:
                opts = "\n".join(f"{k}: {v}" for k, v in s["choices"].items())
                yield _chat(
                    "logicbench",
                    f"{s['context']}\n\n{s['question']}\n{opts}",
                    f"The answer is {s['answer']}.",
                )


def socialiqa(root: Path) -> Iterator[Conversation]:
    labels = (root / "socialiqa" / "dev-labels.lst").read_text().split()
    for row, label in zip(_jsonl(root / "socialiqa" / "dev.jsonl"), labels, strict=False):
        opts = [row["answerA"], row["answerB"], row["answerC"]]
        user = f"{row['context']}\n{row['question']}\nA. {opts[0]}\nB. {opts[1]}\nC. {opts[2]}"
        yield _chat("socialiqa", user, f"{'ABC'[int(label) - 1]}. {opts[int(label) - 1]}")


def bbq(root: Path) -> Iterator[Conversation]:
    for path in sorted((root / "bbq").glob("*.jsonl")):
        for row in _jsonl(path):
            user = (
                f"{row['context']}\n{row['question']}\nA. {row['ans0']}\nB. {row['ans1']}\nC. {row['ans2']}"
            )
            yield _chat("bbq", user, f"{'ABC'[row['label']]}. {row['ans' + str(row['label'])]}")


def winogrande(root: Path) -> Iterator[Conversation]:
    for row in _jsonl(root / "winogrande" / "winogrande.jsonl"):
        a, b = row["context_options"]
        user = f"Which ending fits best?\n1. {a} {row['continuation']}\n2. {b} {row['continuation']}"
        yield _chat("winogrande", user, f"Option {row['gold'] + 1}.")


def crows_pairs(root: Path) -> Iterator[Conversation]:
    with (root / "crows_pairs" / "crows_pairs_anonymized.csv").open() as f:
        for row in csv.DictReader(f):
            yield _chat(
                "crows_pairs", f"Which sentence is more likely?\n1. {row['sent_more']}\n2. {row['sent_less']}"
            )


def vectara(root: Path) -> Iterator[Conversation]:
    with (root / "vectara" / "FaithBench.csv").open() as f:
        for row in csv.DictReader(f):
            yield _chat("vectara", f"Summarize the following passage.\n\n{row['source']}", row["summary"])


def nq_open(root: Path) -> Iterator[Conversation]:
    for row in _jsonl(root / "nq_open" / "NQ-open.dev.jsonl"):
        yield _chat("nq_open", row["question"].capitalize() + "?", f"The answer is {row['answer'][0]}.")


BENCHMARK_READERS: dict[str, Callable[[Path], Iterator[Conversation]]] = {
    "gsm8k": gsm8k,
    "math": math,
    "agieval": agieval,
    "logicbench": logicbench,
    "socialiqa": socialiqa,
    "bbq": bbq,
    "winogrande": winogrande,
    "crows_pairs": crows_pairs,
    "vectara": vectara,
    "nq_open": nq_open,
}

WORDNET = Path("/usr/share/wordnet")
FORTUNES = Path("/usr/share/games/fortunes")
DEBIAN_REFERENCE = Path("/usr/share/debian-reference/debian-reference.en.txt.gz")


def wordnet(rng: random.Random, per_chat: int = 6) -> Iterator[Conversation]:
    """Glosses (with their example sentences) of random words, a few per conversation."""
    entries = []
    for pos in ("noun", "verb", "adj", "adv"):
        path = WORDNET / f"data.{pos}"
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


def fortunes(rng: random.Random) -> Iterator[Conversation]:
    texts = []
    for path in sorted(FORTUNES.glob("*")):
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


def debian_reference(rng: random.Random, chunk_chars: int = 1200) -> Iterator[Conversation]:
    """Paragraphs of the Debian Reference manual, as a request to explain or summarise them."""
    text = gzip.decompress(DEBIAN_REFERENCE.read_bytes()).decode(errors="replace")
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


def build_mix(benchmarks_dir: Path, caps: dict[str, int], seed: int = 0) -> list[Conversation]:
    """Up to ``caps[source]`` conversations per source (a seeded sample), shuffled together."""
    rng = random.Random(seed)
    generic: dict[str, Callable[[], Iterator[Conversation]]] = {
        "wordnet": lambda: wordnet(rng),
        "fortunes": lambda: fortunes(rng),
        "debian_reference": lambda: debian_reference(rng),
    }
    out: list[Conversation] = []
    for source, cap in caps.items():
        try:
            if source in BENCHMARK_READERS:
                rows = list(BENCHMARK_READERS[source](benchmarks_dir))
            elif source in generic:
                rows = list(generic[source]())
            else:
                raise KeyError(source)
        except FileNotFoundError as e:
            log.warning("text mix: skipping %s (%s)", source, e)
            continue
        rng.shuffle(rows)
        out += rows[:cap]
    rng.shuffle(out)
    return out


def write_jsonl(path: Path, conversations: list[Conversation]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for c in conversations:
            f.write(json.dumps(c) + "\n")


def read_jsonl(path: Path) -> list[Conversation]:
    return list(_jsonl(Path(path)))
