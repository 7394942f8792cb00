"""inspect-ai eval logs as a run directory (``cgaps import inspect LOG``).

The log (``.eval`` or ``.json``) is read by inspect's own reader
(:func:`inspect_ai.log.read_eval_log`), so every log format inspect writes or will write is
read the way inspect reads it. One item per sample and epoch:

* ``benchmark`` = the task name, ``item_id`` = ``TASK/SAMPLE_ID`` (``#EPOCH`` appended when the
  eval ran several epochs);
* ``prompt`` = the sample's input text; a conversation input (several messages, or a system
  prompt) is also kept whole in ``messages``, which the reader model then sees;
* ``response`` = the model's final completion (``output.completion``);
* ``score`` = the chosen scorer's value (``--scorer``, default the first), turned into a
  number by inspect's own :func:`inspect_ai.scorer.value_to_float` (C = 1, I = 0, P = 0.5,
  N = 0, booleans, numbers); it must lie in [0, 1];
* ``reference`` = the target; ``meta`` = the sample's id, epoch, metadata, the scorer's
  extracted answer and every scorer's value.

An eval that did not finish (status other than ``success``) is refused: its samples are a
subset chosen by where it stopped, not the task. inspect's headline mean of the scorer
(``accuracy`` or ``mean``) is recorded beside ours in ``run.json`` ``imported``.
"""

from __future__ import annotations

import math
from pathlib import Path

from cgaps.errors import CGapsError, did_you_mean
from cgaps.importers import Imported, check_score, meta_json

# the string values inspect's value_to_float reads (anything else would silently become 0)
_KNOWN_STRINGS = {"c", "i", "p", "n", "yes", "no", "true", "false", "correct", "incorrect"}


def read_inspect(path: str | Path, scorer: str | None = None) -> Imported:
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
        if isinstance(s.input, str):
            prompt, messages = s.input, None
        else:
            msgs = [{"role": str(m.role), "content": m.text} for m in s.input]
            users = [m["content"] for m in msgs if m["role"] == "user"]
            prompt = users[-1] if users else (msgs[-1]["content"] if msgs else "")
            messages = msgs if len(msgs) > 1 else None
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
    }
    return out
