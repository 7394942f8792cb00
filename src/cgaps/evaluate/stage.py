"""Evaluation stage: the evaluated model's responses and their grades.

Free-form items are answered by batched greedy generation with the chat template.
Multiple-choice items are scored by option log-likelihood when ``mc_scoring: loglik``
(and always for ``loglik_choice`` items such as CrowS-Pairs); their response is the
chosen option, written ``"B) option text"`` so the letter graders read it.

Progress is appended to ``responses.partial.jsonl`` after every batch, so an interrupted
run resumes where it stopped; the file is removed once ``items.parquet`` holds the
graded responses.
"""

from __future__ import annotations

import json
import string
import time
from pathlib import Path
from typing import Any

import pandas as pd

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.console import info, progress_bar
from cgaps.errors import CGapsError
from cgaps.models import ModelBackend, conversation

LOGLIK_ALWAYS = "loglik_choice"
# Generation is checkpointed every this many batches.
_CHUNK_BATCHES = 2
# New-token budget by answer type (capped by max_new_tokens): a letter, yes/no or a few
# words need far fewer tokens than a worked answer, and a batch runs until its longest
# member stops, so short-answer items are batched with short-answer items.
ANSWER_BUDGET = {"choice": 32, "yesno": 32, "short": 32, "text": 32, "refusal": 64, "hold": 64}
# Log-likelihood scoring of yes/no items compares these two continuations.
YESNO_CHOICES = ["yes", "no"]
PARTIAL_SIGNATURE = ("model", "mc_scoring", "max_new_tokens", "chain_of_thought")


def budget(item: dict[str, Any], cfg: RunConfig) -> int:
    return min(cfg.max_new_tokens, ANSWER_BUDGET.get(str(item.get("answer_type")), cfg.max_new_tokens))


def _choices(item: dict[str, Any]) -> list[str] | None:
    raw = item.get("choices")
    if not isinstance(raw, str) or not raw.strip():
        return YESNO_CHOICES if item.get("answer_type") == "yesno" else None
    try:
        opts = json.loads(raw)
    except json.JSONDecodeError as e:
        raise CGapsError(f"item {item['item_id']!r}: field 'choices' is not valid JSON ({e.msg})") from e
    if not isinstance(opts, list) or len(opts) < 2 or len(opts) > len(string.ascii_uppercase):
        raise CGapsError(
            f"item {item['item_id']!r}: field 'choices' must be a JSON list of 2 to 26 option strings"
        )
    return [str(o) for o in opts]


def uses_loglik(item: dict[str, Any], cfg: RunConfig) -> bool:
    if item.get("answer_type") == LOGLIK_ALWAYS:
        if _choices(item) is None:
            raise CGapsError(
                f"item {item['item_id']!r}: answer_type {LOGLIK_ALWAYS!r} needs a 'choices' list"
            )
        return True
    return cfg.mc_scoring == "loglik" and _choices(item) is not None


def _read_partial(path: Path) -> dict[str, str]:
    done: dict[str, str] = {}
    if not path.exists():
        return done
    lines = path.read_text().splitlines()
    for n, line in enumerate(lines):
        try:
            rec = json.loads(line)
            done[rec["item_id"]] = rec["response"]
        except (json.JSONDecodeError, KeyError, TypeError):
            # a line cut by a crash: keep what came before it, and drop the rest so new
            # records are not appended to a broken line
            path.write_text("".join(x + "\n" for x in lines[:n]))
            break
    return done


def _append(path: Path, records: list[tuple[str, str]]) -> None:
    with path.open("a") as f:
        for item_id, response in records:
            f.write(json.dumps({"item_id": item_id, "response": response}) + "\n")


def respond(items: pd.DataFrame, backend: ModelBackend, cfg: RunConfig, partial: Path) -> dict[str, str]:
    """Responses for every item, resuming from ``partial``."""
    signature = {k: v for k, v in cfg.to_dict().items() if k in PARTIAL_SIGNATURE}
    sig_path = partial.with_suffix(".json")
    if partial.exists() and sig_path.exists():
        old = json.loads(sig_path.read_text())
        if old != signature:
            raise CGapsError(
                f"{partial}: responses from other settings ({old}); delete it to start the evaluation over"
            )
    rundir.write_json(signature, sig_path)
    done = _read_partial(partial)
    if done:
        info(f"resuming evaluation: {len(done)} of {len(items)} responses already in {partial.name}")
    todo = [r for r in items.to_dict("records") if r["item_id"] not in done]
    # option lists parsed once; None marks the items answered by generation
    options = {r["item_id"]: _choices(r) if uses_loglik(r, cfg) else None for r in todo}
    loglik = [r for r in todo if options[r["item_id"]] is not None]
    generate = [r for r in todo if options[r["item_id"]] is None]
    chunk = cfg.batch_size * _CHUNK_BATCHES

    if generate:
        by_budget: dict[int, list[dict[str, Any]]] = {}
        for r in generate:
            by_budget.setdefault(budget(r, cfg), []).append(r)
        with progress_bar("generating", len(generate)) as advance:
            for max_new, group in sorted(by_budget.items()):
                for start in range(0, len(group), chunk):
                    batch = group[start : start + chunk]
                    out = backend.generate([conversation(r) for r in batch], max_new, cfg.batch_size, advance)
                    recs = [(r["item_id"], o) for r, o in zip(batch, out, strict=True)]
                    _append(partial, recs)
                    done.update(recs)

    if loglik:
        with progress_bar("option log-likelihoods", len(loglik)) as advance:
            for start in range(0, len(loglik), chunk):
                batch = loglik[start : start + chunk]
                requests = [(conversation(r), opt) for r in batch for opt in options[r["item_id"]] or []]
                scores = backend.loglikelihood(requests, cfg.batch_size)
                recs, offset = [], 0
                for r in batch:
                    opts = options[r["item_id"]] or []
                    mine = scores[offset : offset + len(opts)]
                    offset += len(opts)
                    best = max(range(len(opts)), key=mine.__getitem__)
                    recs.append((r["item_id"], f"{string.ascii_uppercase[best]}) {opts[best]}"))
                _append(partial, recs)
                done.update(recs)
                advance(len(batch))
    return done


def evaluate_run(run_dir: str | Path, cfg: RunConfig, backend: ModelBackend | None = None) -> pd.DataFrame:
    """Generate (or resume) responses, grade them and write them into items.parquet."""
    from cgaps.evaluate.grade import grade_items
    from cgaps.models import load_backend

    run_dir = Path(run_dir)
    items = rundir.read_items(run_dir)
    t0 = time.perf_counter()
    if backend is None:
        info(f"loading model {cfg.model}")
        backend = load_backend(cfg.model, cfg.device, cfg.dtype)
    partial = run_dir / rundir.RESPONSES_PARTIAL
    responses = respond(items, backend, cfg, partial)
    items["response"] = items["item_id"].map(responses).fillna("")
    items["score"] = grade_items(items)
    rundir.validate_items(items, run_dir / rundir.ITEMS, scored=True)
    rundir.write_table(items, run_dir / rundir.ITEMS)
    partial.unlink(missing_ok=True)
    partial.with_suffix(".json").unlink(missing_ok=True)
    acc = items.groupby("benchmark")["score"].agg(["count", "mean"])
    rundir.update_run_json(
        run_dir,
        config=cfg.to_dict(),
        model={"evaluated": backend.name},
        counts={"scored_items": int(len(items))},
        accuracy={b: {"n": int(r["count"]), "mean": float(r["mean"])} for b, r in acc.iterrows()},
        timings={"evaluate_s": round(time.perf_counter() - t0, 2)},
    )
    return items
