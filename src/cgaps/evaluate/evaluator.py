"""The own evaluator: the evaluated model answers every item, and the graders grade the answers.

:class:`OwnEvaluator` is the :class:`cgaps.seams.ScoreSource` of ``cgaps evaluate``. Each item is
answered under one *protocol* (:func:`protocol`; what exactly is scored is tabulated in
docs/benchmarks.md, "Evaluation protocols"):

* ``generate``: batched greedy generation, graded by the item's grader (every free-form item);
* ``loglik`` (cloze): the options are *not* listed (:func:`cgaps.items.prompts.cloze`), each
  option is scored as the continuation ``delimiter + option text`` and the highest summed
  log-likelihood wins, as lm-evaluation-harness's ``acc``;
* ``loglik_norm``: the same, divided by the option's length in characters (the harness's
  ``acc_norm``);
* ``loglik_letter``: the prompt as written (options listed), each continuation the option's letter.

The delimiter is the harness's target delimiter: " " on a bare prompt (``chat_template: false``),
"" after a chat template's assistant header (what the harness does with ``--apply_chat_template``).
``mc_scoring: auto`` takes each benchmark's usual protocol (:data:`AUTO_PROTOCOL`); ``loglik_choice``
items (CrowS-Pairs) are always answered by log-likelihood (``loglik`` when the setting says generate).
A log-likelihood response is the winning option, written ``"B) option text"`` so the letter graders
read it, and every option's log-likelihood is kept (:data:`OPTION_COLUMNS`, written to
``option_logliks.parquet`` by the stage). An item may have at most ten options (A-J,
:data:`cgaps.answers.LETTERS`); more is an error naming the item, before any model call.

Resuming: responses are appended to ``responses.partial.jsonl`` after every few batches (one
``{"item_id", "response", "digest"}`` object per line, plus ``"logliks"`` for a log-likelihood answer)
and the settings that shape a response are kept beside it in ``responses.partial.json``, so an
interrupted run resumes where it stopped and a rerun with other settings is refused instead of
mixing answers. ``digest`` (:func:`item_digest`) fingerprints what the answer depends on (prompt or
messages, choices, answer type): a record is reused only for an item whose digest is unchanged, so
new items written into the run under old ids (``cgaps items ... --out RUN_DIR``) are answered
again, never given an old prompt's answer. Records without a digest (older files) cannot be
checked and are redone, with a notice. Each record is appended in one write, so only the last line
can be cut short by a crash; it is dropped and evaluated again. Any other damage (a broken line
before the last, bytes that are not UTF-8, unreadable settings) is an error naming the file and
line, since dropping the lines after it would lose responses silently.
:meth:`OwnEvaluator.discard_partial` removes both files once ``items.parquet`` holds the responses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cgaps import rundir
from cgaps.answers import CHOICE_TYPES, LETTERS, LOGLIK_ALWAYS, too_many_options
from cgaps.config import RunConfig, stage_fields
from cgaps.console import info, progress_bar
from cgaps.errors import CGapsError, settings_diff
from cgaps.seams import Chunks, Generator, Messages

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
LOGLIK_PROTOCOLS = ("loglik", "loglik_norm", "loglik_letter")
# mc_scoring "auto": the protocol each benchmark is usually reported with (docs/benchmarks.md);
# a benchmark not named here (and every spec-file benchmark) is generated.
AUTO_PROTOCOL = {"socialiqa": "loglik", "bbq": "loglik", "crows_pairs": "loglik"}
# The config fields that change an evaluation's answers (tagged with the stage in cgaps.config):
# recorded with the evaluate stage's inputs (a pipeline run with other values evaluates again) and
# in the resume file's settings.
EVAL_SETTINGS = stage_fields("evaluate")
# The settings that change a response; a resume file from other values is refused. ``backend`` is
# the backend that generates (the stage passes the one :func:`cgaps.models.backends.choose_backend`
# resolved, so a resume on a machine where ``auto`` means another backend is refused too).
PARTIAL_SIGNATURE = (*EVAL_SETTINGS, "chain_of_thought", "backend")
# option_logliks.parquet: one row per (item, option) answered by log-likelihood
OPTION_COLUMNS = rundir.columns(rundir.OPTION_LOGLIKS)  # documented in cgaps.rundir.schemas


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


def protocol(item: dict[str, Any], cfg: RunConfig) -> str:
    """How ``item`` is answered under ``cfg``: ``generate`` or one of :data:`LOGLIK_PROTOCOLS`."""
    mode = (
        AUTO_PROTOCOL.get(str(item.get("benchmark")), "generate")
        if cfg.mc_scoring == "auto"
        else cfg.mc_scoring
    )
    if item.get("answer_type") == LOGLIK_ALWAYS:
        if _choices(item) is None:
            raise CGapsError(
                f"item {item['item_id']!r}: answer_type {LOGLIK_ALWAYS!r} needs a 'choices' list"
            )
        return mode if mode in LOGLIK_PROTOCOLS else "loglik"
    if mode == "generate" or _choices(item) is None:
        return "generate"
    return mode


def uses_loglik(item: dict[str, Any], cfg: RunConfig) -> bool:
    return protocol(item, cfg) != "generate"


def as_prompt(msgs: Messages, chat_template: bool) -> Messages | str:
    """What the generator is given: the conversation (it applies the chat template), or without
    the template its messages' text, blank-line separated (read as it is)."""
    return msgs if chat_template else "\n\n".join(str(m["content"]) for m in msgs)


def loglik_requests(
    item: dict[str, Any], options: list[str], mode: str, chat_template: bool
) -> list[tuple[Messages | str, str]]:
    """The (context, continuation) pairs that score ``item``'s options under ``mode`` (module docstring).

    With the chat template the context is the conversation (the generator renders it) and the
    delimiter is ""; without, the context is the bare text and the delimiter " ". Yes/no items keep
    their prompt and score " yes"/" no" under every log-likelihood protocol.
    """
    from cgaps.items.prompts import CLOZE_CUE, cloze
    from cgaps.models import conversation

    msgs = conversation(item)
    last = str(msgs[-1]["content"])
    is_choice = item.get("answer_type") in CHOICE_TYPES
    if is_choice and mode in ("loglik", "loglik_norm"):
        last = cloze(last, options)
    elif is_choice and not chat_template:  # loglik_letter on a bare prompt: "...\nAnswer:" + " B"
        last = f"{last.rstrip()}\n{CLOZE_CUE}"
    context = as_prompt([*msgs[:-1], {**msgs[-1], "content": last}], chat_template)
    delimiter = "" if chat_template else " "
    targets = LETTERS[: len(options)] if is_choice and mode == "loglik_letter" else options
    return [(context, delimiter + t) for t in targets]


def pick(logliks: list[float], options: list[str], mode: str) -> int:
    """The chosen option: the highest log-likelihood, per character of the option for
    ``loglik_norm`` (the first on a tie, as numpy's argmax in the harness)."""
    values = (
        [ll / max(len(o), 1) for ll, o in zip(logliks, options, strict=True)]
        if mode == "loglik_norm"
        else logliks
    )
    return max(range(len(values)), key=values.__getitem__)


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
        diff = settings_diff(old, signature)
        raise CGapsError(
            f"{partial}: responses from other settings ({diff}); {fix}, or rerun with the settings there"
        )


Answer = tuple[str, list[float] | None]
"""A response and, for a log-likelihood answer, each option's log-likelihood (else None)."""


def read_partial(path: Path) -> list[tuple[str, str, str | None, list[float] | None]]:
    """``(item_id, response, digest, logliks)`` of every record in the resume file, in file order
    (``digest`` None in records written before digests, ``logliks`` None for generated answers);
    a last line cut by a crash is dropped.

    The file is truncated before a cut line so that new records are not appended to it.
    """
    done: list[tuple[str, str, str | None, list[float] | None]] = []
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
            digest, logliks = record.get("digest"), record.get("logliks")
            if not isinstance(item_id, str) or not isinstance(response, str):
                raise TypeError("item_id and response must be strings")
            if digest is not None and not isinstance(digest, str):
                raise TypeError("digest must be a string")
            if logliks is not None and not (
                isinstance(logliks, list) and all(isinstance(x, int | float) for x in logliks)
            ):
                raise TypeError("logliks must be a list of numbers")
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
        done.append((item_id, response, digest, [float(x) for x in logliks] if logliks is not None else None))
    return done


def reusable(
    records: list[tuple[str, str, str | None, list[float] | None]], items: list[dict[str, Any]], partial: Path
) -> dict[str, Answer]:
    """``{item_id: (response, logliks)}`` of the records still valid for ``items``: the last record
    of each item whose digest matches the item now. Says how many records were dropped and why."""
    digests = {str(r["item_id"]): item_digest(r) for r in items}
    done: dict[str, Answer] = {}
    for item_id, response, digest, logliks in records:
        if digest is not None and digests.get(item_id) == digest:
            done[item_id] = (response, logliks)
    legacy = {r[0] for r in records if r[2] is None and r[0] in digests and r[0] not in done}
    changed = {r[0] for r in records if r[2] is not None and r[0] in digests and r[0] not in done}
    gone = {r[0] for r in records if r[0] not in digests}
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


def _append(path: Path, records: Sequence[tuple[str, str, str, list[float] | None]]) -> None:
    # one write per record (json.dumps escapes newlines), so a crash or a full disk can cut only the
    # last line, which the resume drops; an OS error names the file
    with rundir.naming_errors(path), path.open("a", encoding="utf-8") as f:
        for item_id, response, digest, logliks in records:
            record: dict[str, Any] = {"item_id": item_id, "response": response, "digest": digest}
            if logliks is not None:
                record["logliks"] = logliks
            f.write(json.dumps(record) + "\n")


# ------------------------------------------------------------------ answering


class Plan:
    """The work of one evaluation: the chunks a :class:`cgaps.seams.ChunkRunner` answers, and the
    resume file their answers go to, whichever runner answers them and in whatever order.

    Making it checks a resume file's settings, reads its reusable answers (:attr:`done`), records
    the settings, and decides every remaining item's protocol and options before any model call.
    :attr:`generate_chunks` are ``(max_new_tokens, items)``: grouped by new-token budget, every
    ``generation_batch x _CHUNK_BATCHES`` items; :attr:`loglik_chunks` every ``batch_size x
    _CHUNK_BATCHES`` log-likelihood items. :meth:`record_generated` / :meth:`record_logliks` append
    a chunk's answers to the resume file and to :attr:`done`, and add up :attr:`truncated`.
    A chunk is a runner's unit of work, so its batches are cut exactly as in one process (a
    generation batch's padding is set by its members: regrouping them could change an answer).
    """

    def __init__(self, items: pd.DataFrame, cfg: RunConfig, partial: Path):
        signature = {k: v for k, v in cfg.to_dict().items() if k in PARTIAL_SIGNATURE}
        if partial.exists() and _settings_path(partial).exists():
            _check_settings(partial, signature)
        records = items.to_dict("records")
        self.cfg, self.partial = cfg, partial
        self.done = reusable(read_partial(partial), records, partial)
        self.truncated = 0
        """Prompts the generator cut to fit its context while answering the chunks (not counting
        the answers reused from the resume file)."""
        rundir.write_json(signature, _settings_path(partial))
        if self.done:
            info(f"resuming evaluation: {len(self.done)} of {len(items)} responses already in {partial.name}")
        todo = [r for r in records if r["item_id"] not in self.done]
        # protocols and option lists decided once (and checked before any model call)
        self.modes = {r["item_id"]: protocol(r, cfg) for r in todo}
        self.options = {
            r["item_id"]: _choices(r) or [] for r in todo if self.modes[r["item_id"]] != "generate"
        }
        loglik = [r for r in todo if self.modes[r["item_id"]] != "generate"]
        generate = [r for r in todo if self.modes[r["item_id"]] == "generate"]
        self.n_generate, self.n_loglik = len(generate), len(loglik)
        by_budget: dict[int, list[dict[str, Any]]] = {}
        for r in generate:
            by_budget.setdefault(budget(r, cfg), []).append(r)
        gen_chunk = cfg.generation_batch * _CHUNK_BATCHES
        self.generate_chunks = [
            (max_new, group[start : start + gen_chunk])
            for max_new, group in sorted(by_budget.items())
            for start in range(0, len(group), gen_chunk)
        ]
        chunk = cfg.batch_size * _CHUNK_BATCHES
        self.loglik_chunks = [loglik[start : start + chunk] for start in range(0, len(loglik), chunk)]

    def prompts(self, batch: list[dict[str, Any]]) -> list[Messages | str]:
        """What the generator is given for each item of ``batch``."""
        from cgaps.models import conversation

        return [as_prompt(conversation(r), self.cfg.chat_template) for r in batch]

    def requests(self, batch: list[dict[str, Any]]) -> list[tuple[Messages | str, str]]:
        """The (context, continuation) pairs of every option of every item of ``batch``, in order."""
        return [
            req
            for r in batch
            for req in loglik_requests(
                r, self.options[r["item_id"]], self.modes[r["item_id"]], self.cfg.chat_template
            )
        ]

    def record_generated(self, batch: list[dict[str, Any]], out: Sequence[str], truncated: int = 0) -> None:
        recs: list[tuple[str, str, str, list[float] | None]] = [
            (r["item_id"], o, item_digest(r), None) for r, o in zip(batch, out, strict=True)
        ]
        _append(self.partial, recs)
        self.done.update((i, (o, None)) for i, o, _, _ in recs)
        self.truncated += truncated

    def record_logliks(
        self, batch: list[dict[str, Any]], logliks: Sequence[float], truncated: int = 0
    ) -> None:
        """Pick each item's option from its share of ``logliks`` (:meth:`requests` order) and record it."""
        recs: list[tuple[str, str, str, list[float] | None]] = []
        offset = 0
        for r in batch:
            opts = self.options[r["item_id"]]
            mine = [float(x) for x in logliks[offset : offset + len(opts)]]
            offset += len(opts)
            best = pick(mine, opts, self.modes[r["item_id"]])
            recs.append((r["item_id"], f"{LETTERS[best]}) {opts[best]}", item_digest(r), mine))
        _append(self.partial, recs)
        self.done.update((i, (o, ll)) for i, o, _, ll in recs)
        self.truncated += truncated


def generate_chunk(
    generator: Generator, prompts: list[Messages | str], max_new: int, batch_size: int
) -> tuple[list[str], int]:
    """One chunk's greedy responses, and how many of its prompts the generator cut to fit its
    context (the work a :class:`cgaps.seams.ChunkRunner` does for :class:`Plan`'s generate chunks)."""
    before = generator.prompts_truncated
    out = list(generator.generate(prompts, max_new, batch_size))
    return out, generator.prompts_truncated - before


def loglik_chunk(
    generator: Generator, requests: list[tuple[Messages | str, str]], batch_size: int
) -> tuple[list[float], int]:
    """One chunk's option log-likelihoods, and the contexts cut to fit (:func:`generate_chunk`)."""
    before = generator.prompts_truncated
    out = [float(x) for x in generator.loglikelihood(requests, batch_size)]
    return out, generator.prompts_truncated - before


def respond(items: pd.DataFrame, chunks: Chunks[Generator], cfg: RunConfig, partial: Path) -> Plan:
    """Answer every item not answered yet in ``partial`` (:class:`Plan`), chunk by chunk on
    ``chunks``; each chunk is appended to the resume file as it completes. Returns the plan:
    every answer in :attr:`Plan.done`, the truncated prompts in :attr:`Plan.truncated`."""
    plan = Plan(items, cfg, partial)
    if plan.generate_chunks:
        jobs: list[tuple[Any, ...]] = [
            (plan.prompts(batch), max_new, cfg.generation_batch) for max_new, batch in plan.generate_chunks
        ]
        with progress_bar("generating", plan.n_generate) as advance:
            for n, (out, truncated) in chunks.map(generate_chunk, jobs):
                batch = plan.generate_chunks[n][1]
                plan.record_generated(batch, out, truncated)
                advance(len(batch))
    if plan.loglik_chunks:
        jobs = [(plan.requests(batch), cfg.batch_size) for batch in plan.loglik_chunks]
        with progress_bar("option log-likelihoods", plan.n_loglik) as advance:
            for n, (logliks, truncated) in chunks.map(loglik_chunk, jobs):
                plan.record_logliks(plan.loglik_chunks[n], logliks, truncated)
                advance(len(plan.loglik_chunks[n]))
    return plan


def option_table(items: pd.DataFrame, answers: dict[str, Answer], cfg: RunConfig) -> pd.DataFrame:
    """Every option's log-likelihood (:data:`OPTION_COLUMNS`) of the items answered by log-likelihood.

    ``continuation`` is the exact string scored after the context; ``chars`` the option's length in
    characters (``loglik_norm`` divides by it); ``chosen`` marks the item's answer.
    """
    import pandas as pd

    rows = []
    for r in items.to_dict("records"):
        logliks = answers.get(r["item_id"], ("", None))[1]
        if logliks is None:
            continue
        mode = protocol(r, cfg)
        opts = _choices(r) or []
        if len(opts) != len(logliks):  # a resume record from other options cannot happen (digest)
            raise CGapsError(f"item {r['item_id']!r}: {len(logliks)} log-likelihoods for {len(opts)} options")
        conts = [c for _, c in loglik_requests(r, opts, mode, cfg.chat_template)]
        best = pick(logliks, opts, mode)
        for k, (opt, ll) in enumerate(zip(opts, logliks, strict=True)):
            rows.append(
                {
                    "item_id": r["item_id"],
                    "option": k,
                    "letter": LETTERS[k],
                    "continuation": conts[k],
                    "loglik": ll,
                    "chars": len(opt),
                    "chosen": k == best,
                    "protocol": mode,
                }
            )
    return pd.DataFrame(rows, columns=list(OPTION_COLUMNS))


class OwnEvaluator:
    """:class:`cgaps.seams.ScoreSource`: the generator of ``chunks`` answers the items (wherever
    the runner that made them computes), the graders grade them.

    ``partial`` is the resume file (``RUN_DIR/responses.partial.jsonl``); call
    :meth:`discard_partial` once the scores are stored.
    """

    def __init__(self, chunks: Chunks[Generator], cfg: RunConfig, partial: str | Path):
        self.chunks = chunks
        self.cfg = cfg
        self.partial = Path(partial)
        self.name = f"the evaluated model {chunks.model.name}"
        self.options: pd.DataFrame | None = None
        """After :meth:`score`: :func:`option_table` of the items answered by log-likelihood."""
        self.prompts_truncated = 0
        """After :meth:`score`: the prompts cut to fit the model's context (docs/method.md §6)."""

    def score(self, items: pd.DataFrame) -> pd.DataFrame:
        from cgaps.evaluate.grade import grade_items

        plan = respond(items, self.chunks, self.cfg, self.partial)
        answers, self.prompts_truncated = plan.done, plan.truncated
        self.options = option_table(items, answers, self.cfg)
        graded = items.copy()
        graded["response"] = items["item_id"].map({i: a[0] for i, a in answers.items()}).fillna("")
        graded["score"] = grade_items(graded)
        return graded[["item_id", "response", "score"]]

    def discard_partial(self) -> None:
        """Remove the resume file and its settings (after items.parquet holds the responses)."""
        self.partial.unlink(missing_ok=True)
        _settings_path(self.partial).unlink(missing_ok=True)
