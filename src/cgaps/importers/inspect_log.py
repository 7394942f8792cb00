"""inspect-ai eval logs as a run directory (``cgaps import inspect LOG``).

The log (``.eval`` or ``.json``) is read by inspect's own reader
(:func:`inspect_ai.log.read_eval_log`), so every log format inspect writes or will write is
read the way inspect reads it. One item per sample and epoch:

* ``benchmark`` = the task name, ``item_id`` = ``TASK/SAMPLE_ID`` (``#EPOCH`` appended when the
  eval ran several epochs);
* ``prompt`` and ``messages`` = **what the evaluated model saw**: the sample's message history
  before the model's final answer (``sample.messages``), so a system prompt and the text a
  solver built (a multiple-choice template with its listed options, a chain-of-thought
  instruction) are kept; ``prompt`` is the last user message and ``messages`` the whole list
  when there is more than that one user turn, which the reader model then reads;
* ``response`` = the model's final completion (``output.completion``);
* ``score`` = the chosen scorer's value (``--scorer``, default the first), turned into a
  number by inspect's own :func:`inspect_ai.scorer.value_to_float` (C = 1, I = 0, P = 0.5,
  N = 0, booleans, numbers); it must lie in [0, 1];
* ``reference`` = the target; ``meta`` = the sample's id, epoch, metadata, the scorer's
  extracted answer and every scorer's value.

An eval that did not finish (status other than ``success``) is refused: its samples are a
subset chosen by where it stopped, not the task. A sample that errored has no score: it is
named, and only ``skip_errors`` imports the others (the count is recorded). inspect's headline
mean of the scorer (``accuracy`` or ``mean``) is recorded beside ours in ``run.json``
``imported``, with what the log says of how the samples were made: the generation config
(``max_tokens`` also becomes ``config.max_new_tokens``), the epochs, and whether the samples
are a subset of the task (``--limit`` or ``--sample-id``: ``imported.subset``).
"""

from __future__ import annotations

import math
from pathlib import Path

from cgaps.errors import CGapsError, did_you_mean
from cgaps.importers import Imported, check_score, meta_json

# the string values inspect's value_to_float reads (anything else would silently become 0)
_KNOWN_STRINGS = {"c", "i", "p", "n", "yes", "no", "true", "false", "correct", "incorrect"}


def _seen_by_model(s: object) -> tuple[str, list[dict[str, str]] | None]:
    """The prompt and the conversation the model answered: the sample's messages before its final
    assistant message (the input alone when the log kept no messages)."""
    messages = list(getattr(s, "messages", None) or [])
    while messages and str(messages[-1].role) == "assistant":
        messages.pop()
    if not messages:
        raw = getattr(s, "input", "")
        if isinstance(raw, str):
            return raw, None
        messages = list(raw)
    msgs = [{"role": str(m.role), "content": m.text} for m in messages]
    users = [m["content"] for m in msgs if m["role"] == "user"]
    prompt = users[-1] if users else (msgs[-1]["content"] if msgs else "")
    return prompt, (msgs if len(msgs) > 1 else None)


def _generation(log: object) -> dict[str, object]:
    """The generation config the eval ran with (the model's and the plan's, the fields it set)."""
    out: dict[str, object] = {}
    for config in (getattr(log.eval, "model_generate_config", None), getattr(log.plan, "config", None)):  # type: ignore[attr-defined]
        if config is not None:
            out.update(config.model_dump(exclude_none=True))
    return {k: v for k, v in out.items() if k not in ("max_connections", "max_retries", "timeout")}


def read_inspect(path: str | Path, scorer: str | None = None, *, skip_errors: bool = False) -> Imported:
    """Every sample of the inspect-ai log at ``path`` (see the module docstring)."""
    try:
        from inspect_ai.log import read_eval_log
        from inspect_ai.scorer import value_to_float
    except ImportError as e:
        raise CGapsError(
            "cgaps import inspect reads logs with inspect-ai's own reader: pip install 'competency-gaps[inspect]' "
            "(or pip install inspect-ai)"
        ) from e

    path = Path(path)
    if not path.is_file():
        raise CGapsError(
            f"{path}: no such file; give an inspect-ai log (.eval or .json, from `inspect eval`)"
        )
    try:
        log = read_eval_log(str(path))
    except Exception as e:  # inspect raises zip, JSON and validation errors of several types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CGapsError(f"{path}: not a readable inspect-ai log ({first:.200})") from e
    if log.status != "success":
        raise CGapsError(
            f"{path}: the eval's status is {log.status!r}, not 'success'; finish it (inspect eval-retry) "
            "before importing, so the samples are the whole task"
        )
    samples = log.samples or []
    if not samples:
        raise CGapsError(f"{path}: the log holds no samples (written with --no-log-samples?)")
    task = str(log.eval.task)
    names = [s.name for s in (log.results.scores if log.results else [])]
    if not names:
        names = list(samples[0].scores or {})
    if scorer is None:
        if not names:
            raise CGapsError(f"{path}: no scorer in the log; score the eval (inspect score) before importing")
        scorer = names[0]
    elif scorer not in names:
        raise CGapsError(
            f"{path}: no scorer {scorer!r}.{did_you_mean(scorer, names)} Scorers: {', '.join(names)}"
        )
    errored = [s for s in samples if s.error is not None]
    if errored and not skip_errors:
        bad = errored[0]
        message = " ".join(str(bad.error.message).split())[:120] if bad.error else ""
        raise CGapsError(
            f"{path}: {len(errored)} of {len(samples)} sample(s) errored and have no score, e.g. sample "
            f"{bad.id!r} (epoch {bad.epoch}): {message}; pass --skip-errors to import the other "
            f"{len(samples) - len(errored)}, or rerun them (inspect eval-retry)"
        )
    samples = [s for s in samples if s.error is None]
    if not samples:
        raise CGapsError(f"{path}: every sample errored; nothing to import")
    to_float = value_to_float()
    epochs = max(int(s.epoch) for s in samples) > 1
    out = Imported(rows=[], evaluated=str(log.eval.model))
    for s in samples:
        key = f"{s.id}#{s.epoch}" if epochs else str(s.id)
        where = f"{path}: sample {key!r}"
        item_id = f"{task}/{key}"
        if item_id in out.where:
            raise CGapsError(f"{where}: field 'id' appears twice; every sample needs its own id")
        out.where[item_id] = where
        score = (s.scores or {}).get(scorer)
        if score is None:
            raise CGapsError(
                f"{where}: field 'scores.{scorer}' is missing; every sample needs that scorer's value"
            )
        value = score.value
        if isinstance(value, dict | list):
            raise CGapsError(
                f"{where}: field 'scores.{scorer}' is a {type(value).__name__} {value!r:.60}, not one value; "
                "choose a scorer with one value per sample (--scorer)"
            )
        if isinstance(value, str) and value.strip().lower() not in _KNOWN_STRINGS:
            try:
                float(value)
            except ValueError:
                raise CGapsError(
                    f"{where}: field 'scores.{scorer}' is {value!r:.40}, which inspect does not read as a number"
                ) from None
        number = value if isinstance(value, float) and math.isnan(value) else to_float(value)
        y = check_score(number, where, f"scores.{scorer}")
        prompt, messages = _seen_by_model(s)
        target = s.target
        reference = target if isinstance(target, str) else " | ".join(map(str, target))
        out.rows.append(
            {
                "item_id": item_id,
                "benchmark": task,
                "prompt": prompt,
                "messages": meta_json(messages) if messages else None,
                "reference": reference,
                "response": s.output.completion if s.output is not None else "",
                "score": y,
                "choices": meta_json(list(s.choices)) if s.choices else None,
                "meta": meta_json(
                    {
                        "sample_id": s.id,
                        "epoch": s.epoch,
                        "input": s.input if isinstance(s.input, str) else None,
                        "metadata": s.metadata,
                        "answer": score.answer,
                        "scores": {k: v.value for k, v in (s.scores or {}).items()},
                    }
                ),
            }
        )
    headline = None
    for es in log.results.scores if log.results else []:
        if es.name == scorer:
            metric = es.metrics.get("accuracy") or es.metrics.get("mean")
            headline = float(metric.value) if metric is not None else None
    mean = sum(r["score"] for r in out.rows) / len(out.rows)
    generation = _generation(log)
    max_tokens = generation.get("max_tokens")
    if isinstance(max_tokens, int) and max_tokens > 0:
        out.config["max_new_tokens"] = max_tokens
    run_config = log.eval.config
    dataset_n = getattr(log.eval.dataset, "samples", None)
    logged = len({s.id for s in log.samples or []})
    subset = {
        "limit": run_config.limit,
        "sample_id": run_config.sample_id,
        "samples_in_task": dataset_n,
        "samples_logged": logged,
    }
    is_subset = (
        run_config.limit is not None
        or run_config.sample_id is not None
        or (isinstance(dataset_n, int) and logged < dataset_n)
    )
    if is_subset:
        from cgaps.console import info

        info(
            f"[yellow]{path}: the log holds {logged} of the task's "
            f"{dataset_n if dataset_n is not None else '?'} samples (limit {run_config.limit}, "
            f"sample_id {run_config.sample_id}): the run describes that subset, not the task"
        )
    out.source = {
        "format": "inspect",
        "file": str(path),
        "task": task,
        "scorer": scorer,
        "scorers": names,
        "n": len(out.rows),
        "mean": mean,
        "inspect_mean": headline,
        "inspect_version": (log.eval.packages or {}).get("inspect_ai"),
        "generate_config": generation,
        "epochs": run_config.epochs,
        "subset": subset if is_subset else None,
        "skipped_errors": [f"{s.id}#{s.epoch}" for s in errored],
    }
    return out
