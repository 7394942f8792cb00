"""Generated items, verified by activation: drafts from a served model, kept only where they work.

For each targeted concept (a missing concept for ``cgaps fill``, a call for ``cgaps confirm``)
the generator (``--generator openai://HOST:PORT/v1/MODEL``, any OpenAI-compatible server,
through :class:`cgaps.models.openai.OpenAIGenerator`) is asked ``drafts`` times for one test
question in which the concept's phrase appears: its label and its top activating contexts from
``contexts.parquet``, the firing token marked ``<<like this>>``. The client decodes greedily, so
the drafts differ by their request: draft k shows the contexts rotated by k and says which
variant it is.

A draft is **kept** only when both checks pass:

1. *a checkable answer*: the reply parses (a JSON object ``{"question", "answer",
   "answer_type"}``, ``Question: ... Answer: ...`` lines, or the sentence small chat models
   write instead, ``The answer to the question "Q" is "A"``), the question has at least three
   words and is not its own answer, the answer type is ``number``, ``yesno`` or ``short``, and
   the reference passes its own grader
   (:func:`cgaps.evaluate.grade.grade_one`, the rule every benchmark's references follow): a
   ``number`` answer holds a number, a ``yesno`` answer says yes or no;
2. *the target concept is present* (docs/method.md §2) on the item's prompt, formatted as any
   item of that answer type (:func:`cgaps.items.prompts.by_answer_type`), read by the run's
   reader and SAE through the extraction stage, on the command's fixed concept scale.

The yield (kept / asked) is part of the result: with a small generator most drafts fail,
and the filter is the point. Replies are appended to ``drafts.jsonl`` in the working folder
keyed by (concept, draft, a hash of the request and model), so a rerun asks only what it has
not asked yet; the working folder is an ordinary run directory whose extraction resumes.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.console import info, progress_bar
from cgaps.pools.config import PoolConfig
from cgaps.pools.coverage import (
    Covered,
    Reader,
    empty_saliency,
    presence_matrix,
    prompt_coverage,
    wanted_signature,
)

DRAFTS = "drafts.jsonl"
GENERATED_JSON = "generated.json"
BENCHMARK = "generated"
TYPES = ("number", "yesno", "short")
MAX_QUESTION = 1500  # characters
MIN_QUESTION_WORDS = 3
MAX_ANSWER = 80
MAX_NEW_TOKENS = 200
CONTEXTS_SHOWN = 4
SYSTEM = (
    "You write test questions for evaluating language models. Each question has one short answer "
    "that can be checked."
)


def request(label: str, contexts: list[tuple[str, str, str]], k: int, n: int) -> list[dict[str, str]]:
    """The chat request for draft ``k`` of ``n`` about one concept (module docstring)."""
    shown = contexts[k % len(contexts) :] + contexts[: k % len(contexts)] if contexts else []
    lines = [
        f"{i + 1}. …{left}<<{token}>>{right}…"
        for i, (left, token, right) in enumerate(shown[:CONTEXTS_SHOWN])
    ]
    about = f"Write one new test question about: {label}.\n" if label else "Write one new test question.\n"
    body = (
        about
        + (
            "Texts where this appears (the key part is marked <<like this>>):\n" + "\n".join(lines) + "\n"
            if lines
            else ""
        )
        + "The question must use the marked key part. Its answer must be a number, yes or no, or a few words.\n"
        'Reply with JSON only: {"question": "...", "answer": "...", "answer_type": "number"} '
        f"(answer_type is number, yesno or short). This is variant {k + 1} of {n}; make it differ from the others."
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": body}]


_QA = re.compile(
    r"question\s*[:：]\s*(?P<q>.+?)\s*\n+\s*answer\s*[:：]\s*(?P<a>.+)", re.IGNORECASE | re.DOTALL
)
# what small chat models write when asked for JSON: The answer to the question "Q" is "A".
_SENTENCE = re.compile(
    r'the answer to the question\s*"(?P<q>[^"]+)"\s*is:?\s*(?P<a>"[^"\n]+"|[^"\n.]+)', re.IGNORECASE
)


def parse(reply: str) -> dict[str, str] | None:
    """The draft in a reply (a JSON object, else ``Question:``/``Answer:`` lines), or None."""
    start, end = reply.find("{"), reply.rfind("}")
    if 0 <= start < end:
        try:
            obj = json.loads(reply[start : end + 1])
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and obj.get("question") and obj.get("answer") is not None:
            return {
                "question": str(obj["question"]).strip(),
                "answer": str(obj["answer"]).strip(),
                "answer_type": str(obj.get("answer_type") or _infer_type(str(obj["answer"]))).strip().lower(),
            }
    m = _QA.search(reply)
    if m:
        answer = m.group("a").strip().splitlines()[0].strip()
        return {"question": m.group("q").strip(), "answer": answer, "answer_type": _infer_type(answer)}
    m = _SENTENCE.search(reply)
    if m:
        answer = m.group("a").strip().strip('"').strip()
        return {"question": m.group("q").strip(), "answer": answer, "answer_type": _infer_type(answer)}
    return None


_NUMERIC = re.compile(r"[-+$]?[\d,]*\.?\d+\s*%?")  # "12", "-3.5", "$1,000", "40 %"


def _infer_type(answer: str) -> str:
    from cgaps.evaluate.grade import extract_number

    a = answer.strip().lower().rstrip(".")
    if a in ("yes", "no", "true", "false"):
        return "yesno"
    return "number" if _NUMERIC.fullmatch(a) and extract_number(a) is not None else "short"


def checkable(draft: dict[str, str]) -> str | None:
    """Why a parsed draft has no checkable answer (None: it has one)."""
    from cgaps.evaluate.grade import grade_one

    if draft["answer_type"] not in TYPES:
        return f"answer type {draft['answer_type']!r}"
    if len(draft["question"].split()) < MIN_QUESTION_WORDS or len(draft["question"]) > MAX_QUESTION:
        return "question too short or too long"
    if draft["answer"].strip().lower() == draft["question"].strip().lower():
        return "the answer repeats the question"
    if not draft["answer"] or len(draft["answer"]) > MAX_ANSWER:
        return "answer empty or too long"
    if grade_one(draft["answer_type"], draft["answer"], draft["answer"]) != 1.0:
        return "the answer fails its own grader"
    return None


def _contexts(run_dir: Path) -> dict[int, list[tuple[str, str, str]]]:
    path = run_dir / rundir.CONTEXTS
    if not path.is_file():
        return {}
    df = rundir.read_table(path, "rerun `cgaps extract RUN_DIR`").sort_values(["concept", "rank"])
    out: dict[int, list[tuple[str, str, str]]] = {}
    for c, left, token, right in zip(df["concept"], df["left"], df["token"], df["right"], strict=True):
        out.setdefault(int(c), []).append((str(left), str(token), str(right)))
    return out


def _read_cache(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
            out[str(rec["key"])] = str(rec["reply"])
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut by a kill: asked again
    return out


def generate_pool(
    run_dir: Path,
    concepts: np.ndarray,
    pool_opts: PoolConfig,
    work: Path,
    reader: Reader,
    cfg: RunConfig,
    scale: np.ndarray,
    labels: dict[int, str],
    *,
    seed: int = 0,
) -> tuple[Covered, dict[str, Any]]:
    """The kept drafts for the first ``generate_concepts`` of ``concepts`` (module docstring), with
    their prompt-span saliency, and the yield figures (also written to ``generated.json``)."""
    from cgaps.items import prompts
    from cgaps.models.openai import OpenAIGenerator

    assert pool_opts.generator is not None
    chosen = [int(c) for c in np.asarray(concepts)[: pool_opts.generate_concepts]]
    n = pool_opts.drafts
    contexts = _contexts(run_dir)
    gen = OpenAIGenerator(pool_opts.generator, seed=seed)
    asks = []
    for c in chosen:
        for k in range(n):
            messages = request(labels.get(c, ""), contexts.get(c, []), k, n)
            key = hashlib.sha256(json.dumps([gen.endpoint.model, messages]).encode()).hexdigest()[:16]
            asks.append((c, k, f"{c}/{k}/{key}", messages))
    work.mkdir(parents=True, exist_ok=True)
    cache_path = work / DRAFTS
    cache = _read_cache(cache_path)
    todo = [a for a in asks if a[2] not in cache]
    t0 = time.perf_counter()
    if todo:
        info(f"asking {gen.endpoint.model} for {len(todo)} drafts ({len(asks) - len(todo)} already asked)")
    try:
        with (
            progress_bar("drafting items", len(todo), unit="drafts") as advance,
            cache_path.open("a", encoding="utf-8") as f,
        ):
            step = max(1, gen.endpoint.concurrency)
            for start in range(0, len(todo), step):
                part = todo[start : start + step]
                replies = gen.generate([a[3] for a in part], MAX_NEW_TOKENS, step)
                for a, reply in zip(part, replies, strict=True):
                    cache[a[2]] = reply
                    f.write(
                        json.dumps(
                            {"key": a[2], "concept": a[0], "draft": a[1], "reply": reply}, ensure_ascii=False
                        )
                        + "\n"
                    )
                f.flush()
                advance(len(part))
    finally:
        gen.close()
    gen_s = time.perf_counter() - t0
    rows: list[dict[str, Any]] = []
    row_target: list[int] = []
    reasons = {"unparsed": 0}
    for c, k, key, _ in asks:
        draft = parse(cache[key])
        if draft is None:
            reasons["unparsed"] += 1
            continue
        why = checkable(draft)
        if why is not None:
            reasons[why] = reasons.get(why, 0) + 1
            continue
        rows.append(
            {
                "item_id": f"{BENCHMARK}/c{c}/d{k}",
                "benchmark": BENCHMARK,
                "prompt": prompts.by_answer_type(draft["answer_type"], draft["question"]),
                "reference": draft["answer"],
                "answer_type": draft["answer_type"],
                "choices": None,
                "category": f"concept {c}",
                "meta": json.dumps({"target_concept": c, "generator": gen.endpoint.model}),
                "messages": None,
            }
        )
        row_target.append(c)
    kept_rows: list[int] = []
    empty = empty_saliency()
    covered = Covered(
        pd.DataFrame(
            rows,
            columns=list(rundir.ITEM_REQUIRED) + ["answer_type", "choices", "category", "meta", "messages"],
        ),
        empty,
        work,
    )
    if rows:
        covered = prompt_coverage(
            pd.DataFrame(rows), work, reader, want=wanted_signature(run_dir), what="generated drafts"
        )
        shat = presence_matrix(covered.items, covered.saliency, len(scale), cfg.presence, scale)
        kept_rows = [i for i, c in enumerate(row_target) if shat[i, c] > 0]
        reasons["target concept absent"] = len(rows) - len(kept_rows)
    kept_items = covered.items.iloc[kept_rows].reset_index(drop=True)
    kept_ids = set(kept_items["item_id"])
    stats = {
        "generator": pool_opts.generator.split("?")[0],
        "concepts": len(chosen),
        "asked": len(asks),
        "checkable": len(rows),
        "kept": len(kept_items),
        "yield": len(kept_items) / len(asks) if asks else None,
        "rejected": reasons,
        "generation_s": round(gen_s, 2),
        "per_concept": {
            str(c): int(sum(1 for i in kept_ids if i.startswith(f"{BENCHMARK}/c{c}/"))) for c in chosen
        },
    }
    rundir.write_json(stats, work / GENERATED_JSON)
    info(
        f"generated items: {stats['kept']} of {stats['asked']} drafts kept ({stats['checkable']} with a checkable "
        f"answer; the target concept present on {stats['kept']})"
    )
    sal = (
        covered.saliency[covered.saliency["item_id"].isin(kept_ids)].reset_index(drop=True)
        if len(covered.saliency)
        else empty
    )
    return Covered(kept_items, sal, work), stats
