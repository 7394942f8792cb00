"""The own evaluator: the evaluated model answers every item, and the graders grade the answers.

:class:`OwnEvaluator` is the :class:`cgaps.seams.ScoreSource` of ``cgaps evaluate``. Free-form
items are answered by batched greedy generation with the chat template (any
:class:`cgaps.seams.Generator`). Multiple-choice items are answered by option log-likelihood
when ``mc_scoring: loglik`` (and always for ``loglik_choice`` items such as CrowS-Pairs): the
response is the most likely option, written ``"B) option text"`` so the letter graders read it.
An item may therefore have at most ten options (A-J, :data:`cgaps.answers.LETTERS`); more is an
error naming the item, before any model call.

Resuming: responses are appended to ``responses.partial.jsonl`` after every few batches (one
``{"item_id", "response", "digest"}`` object per line) and the settings that shape a response are
kept beside it in ``responses.partial.json``, so an interrupted run resumes where it stopped and a
rerun with other settings is refused instead of mixing answers. ``digest`` (:func:`item_digest`)
fingerprints what the answer depends on (prompt or messages, choices, answer type): a record is
reused only for an item whose digest is unchanged, so new items written into the run under old
ids (``cgaps items ... --out RUN_DIR``) are answered again, never given an old prompt's answer.
Records without a digest (older files) cannot be checked and are redone, with a notice. Each record is appended in one
write, so only the last line can be cut short by a crash; it is dropped and evaluated again. Any
other damage (a broken line before the last, bytes that are not UTF-8, unreadable settings) is
an error naming the file and line, since dropping the lines after it would lose responses
silently. :meth:`OwnEvaluator.discard_partial` removes both files once ``items.parquet`` holds
the responses.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cgaps import rundir
from cgaps.answers import LETTERS, LOGLIK_ALWAYS, too_many_options
from cgaps.config import RunConfig
from cgaps.console import info, progress_bar
from cgaps.errors import CGapsError
from cgaps.seams import Generator

if TYPE_CHECKING:
    import pandas as pd

# Generation is checkpointed every this many batches.
_CHUNK_BATCHES = 2
# New-token budget by answer type (capped by max_new_tokens): a letter, yes/no or a few
# words need far fewer tokens than a worked answer, and a batch runs until its longest
# member stops, so short-answer items are batched with short-answer items.
ANSWER_BUDGET = {"choice": 32, "yesno": 32, "short": 32, "text": 32, "refusal": 64, "hold": 64}
# Log-likelihood answers of yes/no items compare these two continuations.
YESNO_CHOICES = ["yes", "no"]
# The settings that change a response; a resume file from other values is refused.
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
    if not isinstance(opts, list) or len(opts) < 2:
        raise CGapsError(
            f"item {item['item_id']!r}: field 'choices' must be a JSON list of 2 to {len(LETTERS)} option strings"
        )
    problem = too_many_options(len(opts))
    if problem:
        raise CGapsError(f"item {item['item_id']!r}: field 'choices' {problem}")
    return [str(o) for o in opts]


def uses_loglik(item: dict[str, Any], cfg: RunConfig) -> bool:
    if item.get("answer_type") == LOGLIK_ALWAYS:
        if _choices(item) is None:
            raise CGapsError(
                f"item {item['item_id']!r}: answer_type {LOGLIK_ALWAYS!r} needs a 'choices' list"
            )
        return True
    return cfg.mc_scoring == "loglik" and _choices(item) is not None


def check_options(items: pd.DataFrame, cfg: RunConfig) -> None:
    """Raise the error of the first item whose options cannot be answered by log-likelihood
    (cheap: run before the model loads)."""
    for item in items.to_dict("records"):
        uses_loglik(item, cfg)


# ------------------------------------------------------------------ the resume file

# The item fields an answer depends on (the reference only grades it; the id only names it).
# what an answer depends on: the evaluate stage's recorded inputs, less the id
DIGEST_FIELDS = tuple(c for c in rundir.STAGE_INPUTS["evaluate"] if c != "item_id")


def item_digest(item: dict[str, Any]) -> str:
    """A short fingerprint of :data:`DIGEST_FIELDS` of one item (a missing or NaN field is null)."""
    fields = {k: item.get(k) if isinstance(item.get(k), str) else None for k in DIGEST_FIELDS}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _settings_path(partial: Path) -> Path:
    return partial.with_suffix(".json")


def _check_settings(partial: Path, signature: dict[str, Any]) -> None:
    """Refuse a resume file written with other settings (or whose settings cannot be read)."""
    path = _settings_path(partial)
    fix = f"delete {partial.name} to start the evaluation over"
    old = rundir.read_json_file(path, fix)
    if not isinstance(old, dict):
        raise CGapsError(f"{path}: expected a JSON object of settings, got {type(old).__name__}; {fix}")
    if old != signature:
        diff = ", ".join(
            f"{k} {old.get(k)!r} there, {signature.get(k)!r} now"
            for k in sorted(set(old) | set(signature))
            if old.get(k) != signature.get(k)
        )
        raise CGapsError(
            f"{partial}: responses from other settings ({diff}); {fix}, or rerun with the settings there"
        )


def read_partial(path: Path) -> list[tuple[str, str, str | None]]:
    """``(item_id, response, digest)`` of every record in the resume file, in file order
    (``digest`` None in records written before digests); a last line cut by a crash is dropped.

    The file is truncated before a cut line so that new records are not appended to it.
    """
    done: list[tuple[str, str, str | None]] = []
    if not path.exists():
        return done
    lines = path.read_bytes().split(b"\n")
    if lines[-1] == b"":  # the newline that ends the last record
        lines.pop()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
            item_id, response = record["item_id"], record["response"]
            digest = record.get("digest")
            if not isinstance(item_id, str) or not isinstance(response, str):
                raise TypeError("item_id and response must be strings")
            if digest is not None and not isinstance(digest, str):
                raise TypeError("digest must be a string")
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
            if lineno == len(lines):  # cut short by a crash: resume from the records before it
                path.write_bytes(b"".join(x + b"\n" for x in lines[: lineno - 1]))
                break
            if isinstance(e, UnicodeDecodeError):
                problem = f"not UTF-8 text ({e.reason} at byte {e.start})"
            elif isinstance(e, json.JSONDecodeError):
                problem = f"invalid JSON ({e.msg} at column {e.colno})"
            else:
                problem = 'expected {"item_id": "...", "response": "..."}'
            raise CGapsError(
                f"{path}:{lineno}: {problem}; delete that line (its item is evaluated again) "
                "or the whole file to start the evaluation over"
            ) from e
        done.append((item_id, response, digest))
    return done


def reusable(
    records: list[tuple[str, str, str | None]], items: list[dict[str, Any]], partial: Path
) -> dict[str, str]:
    """``{item_id: response}`` of the records still valid for ``items``: the last record of each
    item whose digest matches the item now. Says how many records were dropped and why."""
    digests = {str(r["item_id"]): item_digest(r) for r in items}
    done: dict[str, str] = {}
    for item_id, response, digest in records:
        if digest is not None and digests.get(item_id) == digest:
            done[item_id] = response
    legacy = {i for i, _, d in records if d is None and i in digests and i not in done}
    changed = {i for i, _, d in records if d is not None and i in digests and i not in done}
    gone = {i for i, _, _ in records if i not in digests}
    if legacy:
        info(
            f"{partial.name}: {len(legacy)} response(s) without a content digest (written by an older "
            "cgaps) cannot be checked against the items; evaluating them again"
        )
    if changed:
        info(
            f"{partial.name}: {len(changed)} response(s) were for items that changed since; evaluating them again"
        )
    if gone:
        info(f"{partial.name}: {len(gone)} response(s) are for items no longer in the run; ignored")
    return done


def _append(path: Path, records: list[tuple[str, str, str]]) -> None:
    # one write per record (json.dumps escapes newlines), so a crash can cut only the last line
    with path.open("a", encoding="utf-8") as f:
        for item_id, response, digest in records:
            f.write(json.dumps({"item_id": item_id, "response": response, "digest": digest}) + "\n")


# ------------------------------------------------------------------ answering


def respond(items: pd.DataFrame, generator: Generator, cfg: RunConfig, partial: Path) -> dict[str, str]:
    """Responses for every item, resuming from ``partial``."""
    from cgaps.models import conversation

    signature = {k: v for k, v in cfg.to_dict().items() if k in PARTIAL_SIGNATURE}
    if partial.exists() and _settings_path(partial).exists():
        _check_settings(partial, signature)
    records = items.to_dict("records")
    done = reusable(read_partial(partial), records, partial)
    rundir.write_json(signature, _settings_path(partial))
    if done:
        info(f"resuming evaluation: {len(done)} of {len(items)} responses already in {partial.name}")
    todo = [r for r in records if r["item_id"] not in done]
    # option lists parsed once (and checked before any model call); None marks generated items
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
                    out = generator.generate(
                        [conversation(r) for r in batch], max_new, cfg.batch_size, advance
                    )
                    recs = [(r["item_id"], o, item_digest(r)) for r, o in zip(batch, out, strict=True)]
                    _append(partial, recs)
                    done.update((i, o) for i, o, _ in recs)

    if loglik:
        with progress_bar("option log-likelihoods", len(loglik)) as advance:
            for start in range(0, len(loglik), chunk):
                batch = loglik[start : start + chunk]
                requests = [(conversation(r), opt) for r in batch for opt in options[r["item_id"]] or []]
                logliks = generator.loglikelihood(requests, cfg.batch_size)
                recs, offset = [], 0
                for r in batch:
                    opts = options[r["item_id"]] or []
                    mine = logliks[offset : offset + len(opts)]
                    offset += len(opts)
                    best = max(range(len(opts)), key=mine.__getitem__)
                    recs.append((r["item_id"], f"{LETTERS[best]}) {opts[best]}", item_digest(r)))
                _append(partial, recs)
                done.update((i, o) for i, o, _ in recs)
                advance(len(batch))
    return done


class OwnEvaluator:
    """:class:`cgaps.seams.ScoreSource`: ``generator`` answers the items, the graders grade them.

    ``partial`` is the resume file (``RUN_DIR/responses.partial.jsonl``); call
    :meth:`discard_partial` once the scores are stored.
    """

    def __init__(self, generator: Generator, cfg: RunConfig, partial: str | Path):
        self.generator = generator
        self.cfg = cfg
        self.partial = Path(partial)
        self.name = f"the evaluated model {generator.name}"

    def score(self, items: pd.DataFrame) -> pd.DataFrame:
        from cgaps.evaluate.grade import grade_items

        responses = respond(items, self.generator, self.cfg, self.partial)
        graded = items.copy()
        graded["response"] = items["item_id"].map(responses).fillna("")
        graded["score"] = grade_items(graded)
        return graded[["item_id", "response", "score"]]

    def discard_partial(self) -> None:
        """Remove the resume file and its settings (after items.parquet holds the responses)."""
        self.partial.unlink(missing_ok=True)
        _settings_path(self.partial).unlink(missing_ok=True)
