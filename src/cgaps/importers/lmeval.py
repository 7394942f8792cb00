"""lm-evaluation-harness ``--log_samples`` output as a run directory (``cgaps import lm-eval``).

What the harness writes (0.4.x): per task a ``samples_<task>_<timestamp>.jsonl`` and, per run,
a ``results_<timestamp>.json`` (both under ``OUTPUT_PATH/<model>/``). Each sample line holds
``doc_id``, ``doc`` (the dataset row), ``target``, ``arguments`` (the requests: ``gen_args_i``
objects of ``arg_0`` = the context sent, ``arg_1`` = a continuation or the generation
settings), ``resps`` / ``filtered_resps`` (log-likelihoods are written as strings such as
``"-4.509"``), ``filter``, ``metrics`` (the names) and one key per metric with its value.

One item per sample and filter choice:

* ``benchmark`` = the task (from the file name), ``item_id`` = ``TASK/DOC_ID``;
* ``prompt`` = the context of the first request (``arg_0``), exactly as the harness sent it;
* ``response``: by output type, recognised from the requests --
  *generate_until* (``arg_1`` holds generation settings): the filtered generation;
  *multiple_choice* (several continuations): the option with the highest log-likelihood
  (by ``acc_norm``, the highest per character, as the harness scores it);
  *loglikelihood* (one continuation): that continuation (the log-likelihood and whether it
  is the greedy one go into ``meta``). ``loglikelihood_rolling`` (perplexity) has no per-item
  score in [0, 1] and is refused;
* ``score`` = the chosen metric's per-sample value (``--metric``, default the task's first
  metric), which must be a number in [0, 1];
* ``reference`` = the target (for multiple choice with an index target, that option's text);
* ``meta`` = ``{"doc", "doc_id", "target", "filter", "metrics": every metric's value}``.

A task logged with several filters (GSM8K's ``strict-match`` and ``flexible-extract``) has one
line per document and filter; ``--filter`` picks one (default: the first in the file). When the
run's ``results_*.json`` is found beside the samples, its per-task mean of the chosen metric is
recorded next to ours (``run.json`` ``imported.harness_mean``) and a difference is reported.

What the model saw is recorded with each task, not this tool's defaults (issue 23):

* ``generation``: the generation settings the harness sent with a *generate_until* task's
  requests (``arg_1``: ``until``, ``max_gen_toks``, ``do_sample``, ``temperature``...), as
  logged; ``max_gen_toks`` also becomes ``config.max_new_tokens`` (the largest over the tasks,
  when they differ), so the run does not claim our default of 256;
* ``subset``: a ``--limit`` run (``results_*.json`` ``config.limit``) or one whose logged samples
  are fewer than the task's documents (``n-samples``: ``effective`` < ``original``) is a subset
  chosen by position, not the task: recorded (``limit``, ``samples_in_task``,
  ``samples_logged``) and warned about. Without the results file this cannot be known
  (``subset_known`` false).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cgaps.console import info
from cgaps.errors import CGapsError, did_you_mean
from cgaps.importers import Imported, check_score, meta_json
from cgaps.items.sources import Record, read_jsonl
from cgaps.rundir import read_json_file

_STAMP = r"\d{4}-\d{2}-\d{2}T[\d\-.]+"
SAMPLES_NAME = re.compile(rf"samples_(?P<task>.+)_(?P<stamp>{_STAMP})\.jsonl")
RESULTS_NAME = re.compile(rf"results_(?P<stamp>{_STAMP})\.json")

# The keys a sample line may have besides its metrics (lm-eval 0.4.x, EvaluationTracker).
SAMPLE_KEYS = (
    "doc_id",
    "doc",
    "target",
    "arguments",
    "resps",
    "filtered_resps",
    "filter",
    "metrics",
    "doc_hash",
    "prompt_hash",
    "target_hash",
)
REQUIRED_KEYS = ("doc_id", "arguments", "filtered_resps")

OUTPUT_TYPES = ("generate_until", "multiple_choice", "loglikelihood")


@dataclass(frozen=True)
class SamplesFile:
    task: str
    path: Path
    stamp: str
    results: Path | None  # the results_*.json of the same run, when found beside it


def find_logs(paths: list[Path]) -> list[SamplesFile]:
    """The samples files named by ``paths`` (files, or folders searched recursively), one per task."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.rglob("samples_*.jsonl"))
            if not found:
                raise CGapsError(
                    f"{path}: no samples_<task>_<timestamp>.jsonl inside; run lm_eval with --log_samples "
                    "--output_path and pass that folder or the samples files"
                )
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise CGapsError(f"{path}: no such file or folder")
    out: dict[str, SamplesFile] = {}
    for f in files:
        m = SAMPLES_NAME.fullmatch(f.name)
        if m is None:
            raise CGapsError(
                f"{f}: not an lm-eval samples file (expected samples_<task>_<timestamp>.jsonl, "
                "as written by --log_samples)"
            )
        task, stamp = m.group("task"), m.group("stamp")
        if task in out and out[task].path != f:
            raise CGapsError(
                f"{f}: task {task!r} is also logged in {out[task].path} (another run); "
                "pass the samples files of one run only"
            )
        results = f.with_name(f"results_{stamp}.json")
        out[task] = SamplesFile(task, f, stamp, results if results.is_file() else None)
    return list(out.values())


def _requests(rec: Record) -> list[tuple[str, Any]]:
    """The sample's requests as (context, second argument) pairs, in order."""
    args = rec.row["arguments"]
    if isinstance(args, dict):  # 0.4.x: {"gen_args_0": {"arg_0": ..., "arg_1": ...}, ...}
        keys = sorted(args, key=lambda k: int(k.rsplit("_", 1)[-1]) if k.rsplit("_", 1)[-1].isdigit() else -1)
        pairs = []
        for k in keys:
            a = args[k]
            if not isinstance(a, dict) or "arg_0" not in a:
                raise rec.fail("arguments", f"entry {k!r} has no 'arg_0' (the context sent to the model)")
            pairs.append((a["arg_0"], a.get("arg_1")))
    elif isinstance(args, list):  # older versions: [[context, continuation], ...]
        pairs = [(a[0], a[1] if len(a) > 1 else None) for a in args if isinstance(a, list) and a]
    else:
        raise rec.fail("arguments", "should be an object of requests (gen_args_0, ...) or a list")
    if not pairs:
        raise rec.fail("arguments", "holds no request")
    if not isinstance(pairs[0][0], str):
        raise rec.fail("arguments", "has a context (arg_0) that is not text")
    return pairs


def output_type(rec: Record, pairs: list[tuple[str, Any]]) -> str:
    second = pairs[0][1]
    if isinstance(second, dict):
        return "generate_until"
    if second is None:
        raise rec.fail(
            "arguments",
            "has a context and no continuation (loglikelihood_rolling: perplexity has no per-item score "
            "in [0, 1]); import a task with acc, exact_match or another per-item metric",
        )
    return "multiple_choice" if len(pairs) > 1 else "loglikelihood"


def _loglik(rec: Record, value: Any) -> tuple[float, bool | None]:
    """One (log-likelihood, is_greedy) from a filtered response: ``["-4.5", "False"]``, ``-4.5``..."""
    greedy = None
    if isinstance(value, list) and value:
        if len(value) > 1:
            greedy = str(value[1]) == "True"
        value = value[0]
    try:
        ll = float(value)
    except (TypeError, ValueError):
        raise rec.fail("filtered_resps", f"holds {value!r:.40}, not a log-likelihood") from None
    if math.isnan(ll):
        raise rec.fail("filtered_resps", "holds a NaN log-likelihood")
    return ll, greedy


def _generation(rec: Record) -> str:
    value = rec.row["filtered_resps"]
    while isinstance(value, list):  # [" 4"] (or [[" 4"]] for some filters): the first generation
        if not value:
            raise rec.fail("filtered_resps", "is empty; the sample has no generation")
        value = value[0]
    if not isinstance(value, str):
        raise rec.fail("filtered_resps", f"holds {type(value).__name__} {value!r:.40}, not a generation")
    return value


def _metrics(rec: Record) -> list[str]:
    names = rec.row.get("metrics")
    if names is None:  # older versions: every key that is not a known one
        return [k for k in rec.row if k not in SAMPLE_KEYS]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise rec.fail("metrics", "should be a list of metric names")
    return names


class _ResultsFiles:
    """The ``results_*.json`` files of one import, each read once: every task of a harness run
    shares its run's file, which the import consults per task (model name, metric order, mean)."""

    def __init__(self) -> None:
        self._read: dict[Path, Any] = {}

    def __call__(self, path: Path) -> Any:
        if path not in self._read:
            self._read[path] = read_json_file(
                path, "restore the file, or import the samples files without it"
            )
        return self._read[path]


def _results_mean(
    results: Path | None, task: str, metric: str, filt: str, read: _ResultsFiles
) -> float | None:
    if results is None:
        return None
    data = read(results)
    value = (data.get("results", {}).get(task) or {}).get(f"{metric},{filt}")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _config_metrics(sf: SamplesFile, read: _ResultsFiles) -> list[str]:
    """The task's metrics in its config's order (results_*.json ``configs``), when that file is there."""
    if sf.results is None:
        return []
    data = read(sf.results)
    metric_list = ((data.get("configs") or {}).get(sf.task) or {}).get("metric_list") or []
    return [str(m["metric"]) for m in metric_list if isinstance(m, dict) and "metric" in m]


def _subset(sf: SamplesFile, read: _ResultsFiles) -> dict[str, Any] | None:
    """How the task's logged samples were chosen, when they are not the whole task (module
    docstring); None when they are, or when there is no results file to say."""
    if sf.results is None:
        return None
    data = read(sf.results)
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    limit = config.get("limit")
    counts = (data.get("n-samples") or {}).get(sf.task) if isinstance(data.get("n-samples"), dict) else None
    counts = counts if isinstance(counts, dict) else {}
    original, effective = counts.get("original"), counts.get("effective")
    fewer = isinstance(original, int) and isinstance(effective, int) and effective < original
    if limit is None and not fewer:
        return None
    return {"limit": limit, "samples_in_task": original, "samples_logged": effective}


def _generation_settings(rec: Record, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """The generation settings a generate_until request carried (``arg_1``), as logged."""
    settings = pairs[0][1]
    if not isinstance(settings, dict):
        raise rec.fail("arguments", "has generation settings (arg_1) that are not an object")
    return dict(settings)


def _evaluated_name(files: list[SamplesFile], read: _ResultsFiles) -> str:
    for f in files:
        if f.results is not None:
            data = read(f.results)
            name = data.get("model_name") or (data.get("config") or {}).get("model_args")
            if name:
                return str(name)
    return f"lm-eval log {files[0].path.parent.name}"


def read_samples(
    sf: SamplesFile, metric: str | None, filt: str | None, read: _ResultsFiles
) -> tuple[list[dict[str, Any]], dict[str, str], dict[str, Any]]:
    """Item rows of one samples file, ``{item_id: file:line}``, and the task's import record."""
    rows: list[dict[str, Any]] = []
    where: dict[str, str] = {}
    seen: dict[Any, str] = {}
    first: Record | None = None
    names: list[str] = []
    kind = ""
    defaulted = False
    filters: list[str] = []
    generation: dict[str, Any] | None = None
    for rec in read_jsonl(sf.path):
        row = rec.row
        for key in REQUIRED_KEYS:
            if key not in row:
                raise rec.fail(key, "is missing; is this an lm-eval --log_samples file?")
        this_names = _metrics(rec)
        unknown = [k for k in row if k not in SAMPLE_KEYS and k not in this_names]
        if unknown:
            raise CGapsError(
                f"{rec.where}: unknown field {unknown[0]!r}.{did_you_mean(unknown[0], SAMPLE_KEYS)} "
                f"A sample has {', '.join(SAMPLE_KEYS)} and one field per metric listed in 'metrics'"
            )
        pairs = _requests(rec)
        this_kind = output_type(rec, pairs)
        this_filter = str(row.get("filter", "none"))
        if this_filter not in filters:
            filters.append(this_filter)
        if first is None:
            first, names, kind = rec, this_names, this_kind
            if metric is None:
                if not names:
                    raise rec.fail("metrics", "is empty; the sample has no metric to import")
                # the task's first metric as its config lists it (samples may list them in another order)
                metric = next((m for m in _config_metrics(sf, read) if m in names), names[0])
                defaulted = True
            elif metric not in names:
                raise CGapsError(
                    f"{rec.where}: task {sf.task!r} has no metric {metric!r}.{did_you_mean(metric, names)} "
                    f"Its metrics: {', '.join(names)}"
                )
            if filt is None:
                filt = this_filter
        elif this_names != names or this_kind != kind:
            raise CGapsError(
                f"{rec.where}: field 'metrics' is {this_names} ({this_kind}) but the file began with {names} "
                f"({kind}) at {first.where}; a samples file holds one task: pass each task's own file"
            )
        if this_filter != filt:
            continue
        doc_id = row["doc_id"]
        if doc_id in seen:
            raise CGapsError(
                f"{rec.where}: field 'doc_id' {doc_id!r} appears twice for filter {filt!r} (first at "
                f"{seen[doc_id]}); a samples file has one line per document and filter"
            )
        seen[doc_id] = rec.where
        assert metric is not None  # chosen on the first line
        if metric not in row:
            raise rec.fail(
                metric, f"is missing; this sample lists metrics {this_names} but has no value for it"
            )
        try:
            score = check_score(row[metric], rec.where, metric)
        except CGapsError as e:
            if not defaulted:
                raise
            raise CGapsError(
                f"{e} (the task's first metric; choose one with --metric: {', '.join(names)})"
            ) from e
        target = row.get("target")
        reference = "" if target is None else str(target)
        meta: dict[str, Any] = {
            "doc": row.get("doc"),
            "doc_id": doc_id,
            "target": target,
            "filter": this_filter,
            "metrics": {m: row.get(m) for m in this_names},
        }
        choices = None
        if kind == "generate_until":
            response = _generation(rec)
            if generation is None:  # the task's settings: the first request's (the harness sends one set)
                generation = _generation_settings(rec, pairs)
        else:
            resps = rec.row["filtered_resps"]
            if kind == "loglikelihood":
                ll, greedy = _loglik(
                    rec,
                    resps[0] if isinstance(resps, list) and resps and isinstance(resps[0], list) else resps,
                )
                response = str(pairs[0][1])
                meta.update(loglikelihood=ll, is_greedy=greedy)
            else:
                choices = [str(p[1]) for p in pairs]
                if not isinstance(resps, list) or len(resps) != len(choices):
                    raise rec.fail(
                        "filtered_resps", f"should hold one log-likelihood per option ({len(choices)})"
                    )
                lls = [_loglik(rec, r)[0] for r in resps]
                # acc_norm ranks by log-likelihood per character of the option, as the harness does
                ranked = (
                    [ll / max(len(c), 1) for ll, c in zip(lls, choices, strict=True)]
                    if metric == "acc_norm"
                    else lls
                )
                best = max(range(len(choices)), key=ranked.__getitem__)
                response = choices[best].strip()
                meta.update(loglikelihoods=lls, chosen=best)
                gold = target
                if isinstance(gold, str) and gold.strip().lstrip("-").isdigit():
                    gold = int(gold)
                if isinstance(gold, int) and not isinstance(gold, bool) and 0 <= gold < len(choices):
                    reference = choices[gold].strip()
        item_id = f"{sf.task}/{doc_id}"
        where[item_id] = rec.where
        rows.append(
            {
                "item_id": item_id,
                "benchmark": sf.task,
                "prompt": pairs[0][0],
                "reference": reference,
                "response": response,
                "score": score,
                "choices": meta_json([c.strip() for c in choices]) if choices else None,
                "meta": meta_json(meta),
            }
        )
    if first is None:
        raise CGapsError(f"{sf.path}: no samples (an empty file)")
    if not rows:
        raise CGapsError(
            f"{sf.path}: no sample has filter {filt!r}.{did_you_mean(str(filt), filters)} Filters: {', '.join(filters)}"
        )
    assert metric is not None and filt is not None
    mean = sum(r["score"] for r in rows) / len(rows)
    harness = _results_mean(sf.results, sf.task, metric, filt, read)
    if harness is not None and abs(harness - mean) > 1e-9:
        info(
            f"[yellow]{sf.path.name}: the mean {metric} of the samples is {mean:.6f}, the harness's "
            f"results file says {harness:.6f} (a metric not aggregated by the mean?)"
        )
    subset = _subset(sf, read)
    if subset is not None:
        info(
            f"[yellow]{sf.path.name}: the harness logged {subset['samples_logged'] or len(rows)} of the task's "
            f"{subset['samples_in_task'] if subset['samples_in_task'] is not None else '?'} documents "
            f"(--limit {subset['limit']}): the run describes that subset, not the task[/yellow]"
        )
    record = {
        "file": str(sf.path),
        "results": str(sf.results) if sf.results else None,
        "output_type": kind,
        "metric": metric,
        "filter": filt,
        "filters": filters,
        "n": len(rows),
        "mean": mean,
        "harness_mean": harness,
        "generation": generation,
        "subset": subset,
        "subset_known": sf.results is not None,
    }
    return rows, where, record


def parse_metric(metric: str | None, tasks: list[str]) -> dict[str, str]:
    """``--metric``: one name for every task (key ""), or ``TASK=METRIC,...`` per task."""
    if metric is None:
        return {}
    if "=" not in metric:
        return {"": metric.strip()}
    out = {}
    for part in metric.split(","):
        task, _, name = part.partition("=")
        task, name = task.strip(), name.strip()
        if task not in tasks:
            raise CGapsError(
                f"--metric: no task {task!r} among the logs.{did_you_mean(task, tasks)} Tasks: {', '.join(tasks)}"
            )
        if not name:
            raise CGapsError(f"--metric: {part!r} names no metric; use TASK=METRIC")
        out[task] = name
    return out


def read_lm_eval(paths: list[Path], metric: str | None = None, filt: str | None = None) -> Imported:
    """Every sample of the lm-eval logs at ``paths`` (see the module docstring)."""
    files = find_logs(paths)
    per_task = parse_metric(metric, [f.task for f in files])
    read = _ResultsFiles()
    out = Imported(rows=[], evaluated=_evaluated_name(files, read))
    tasks: dict[str, Any] = {}
    for sf in files:
        rows, where, record = read_samples(sf, per_task.get(sf.task, per_task.get("")), filt, read)
        out.rows += rows
        out.where.update(where)
        tasks[sf.task] = record
    version, templated = None, False
    for sf in files:
        if sf.results is not None:
            data = read(sf.results)  # already read for the model's name
            version = data.get("lm_eval_version")
            # --apply_chat_template: the contexts already hold the evaluated model's chat template
            templated = bool(data.get("chat_template"))
            break
    if templated:
        info(
            "[yellow]the harness applied the model's chat template (--apply_chat_template): each prompt "
            "already holds it, and the reader model will wrap it in its own template as well"
        )
    # what the model was allowed to generate, as the harness sent it (not our default)
    budgets = {
        t: r["generation"]["max_gen_toks"]
        for t, r in tasks.items()
        if isinstance(r["generation"], dict)
        and isinstance(r["generation"].get("max_gen_toks"), int)
        and not isinstance(r["generation"].get("max_gen_toks"), bool)
        and r["generation"]["max_gen_toks"] > 0
    }
    if budgets:
        out.config["max_new_tokens"] = max(budgets.values())
        if len(set(budgets.values())) > 1:
            info(
                f"the tasks generated with different max_gen_toks ({', '.join(f'{t} {n}' for t, n in budgets.items())}); "
                f"config.max_new_tokens records the largest, each task's is in run.json imported.tasks"
            )
    out.source = {
        "format": "lm-eval",
        "lm_eval_version": version,
        "chat_template_applied": templated,
        "tasks": tasks,
        "subset": any(r["subset"] is not None for r in tasks.values()),
    }
    return out
