"""Evaluation on Ray: workers that hold the evaluated model, and the driver's resumable loop.

:func:`respond` is :func:`cgaps.evaluate.evaluator.respond` with its chunks spread over workers:
the same resume file (read, checked and appended on the driver only), the same chunks (grouped
by new-token budget, ``generation_batch x _CHUNK_BATCHES`` items each, log-likelihood items apart), and
each chunk answered by one worker's ``generate`` / ``loglikelihood`` exactly as one process would
answer it, so the answers do not depend on which worker took which chunk. Chunks complete in any
order; each is appended to the resume file as it arrives, so an interrupted run resumes with
every answered chunk. ``tests/test_scaleout.py`` checks the tables against one process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cgaps.config import RunConfig
from cgaps.console import info, progress_bar
from cgaps.errors import CGapsError
from cgaps.evaluate import evaluator as ev
from cgaps.scaleout.cluster import ActorPool, Worker, cluster, worker_resources
from cgaps.scaleout.options import RayOptions
from cgaps.seams import Messages


@dataclass
class RemoteGenerator:
    """The evaluated model as the driver sees it: its name, what was loaded, the backend that
    generates (as the stage records it), and the prompts the workers truncated (added up as
    chunks complete)."""

    name: str
    loaded: dict[str, Any] | None
    backend: str
    prompts_truncated: int = 0


class EvalWorker(Worker):
    """A Ray actor: loads the evaluated model once (:func:`cgaps.evaluate.stage.load_generator`),
    then answers chunk after chunk; each call also returns the prompts it truncated."""

    def load(self) -> None:
        from cgaps.evaluate.stage import load_generator

        self.generator = load_generator(self.cfg)

    def description(self) -> RemoteGenerator:
        g = self.generator
        return RemoteGenerator(g.name, getattr(g, "loaded", None), str(getattr(g, "backend", "given")))

    def _truncated(self) -> int:
        return int(getattr(self.generator, "prompts_truncated", 0))

    def generate(self, n: int, prompts: list[Messages | str], max_new: int) -> tuple[int, list[str], int]:
        before = self._truncated()
        out = self.generator.generate(prompts, max_new, self.cfg.generation_batch)
        return n, out, self._truncated() - before

    def loglikelihood(
        self, n: int, requests: list[tuple[Messages | str, str]]
    ) -> tuple[int, list[float], int]:
        before = self._truncated()
        out = self.generator.loglikelihood(requests, self.cfg.batch_size)
        return n, [float(x) for x in out], self._truncated() - before


def respond(items: pd.DataFrame, pool: EvaluationPool, cfg: RunConfig, partial: Path) -> dict[str, ev.Answer]:
    """Answers for every item, resuming from ``partial``: :func:`cgaps.evaluate.evaluator.respond`
    with the chunks answered by the pool's workers (module docstring)."""
    from cgaps.models import conversation

    signature = {k: v for k, v in cfg.to_dict().items() if k in ev.PARTIAL_SIGNATURE}
    if partial.exists() and ev._settings_path(partial).exists():
        ev._check_settings(partial, signature)
    records = items.to_dict("records")
    done = ev.reusable(ev.read_partial(partial), records, partial)
    ev.rundir.write_json(signature, ev._settings_path(partial))
    if done:
        info(f"resuming evaluation: {len(done)} of {len(items)} responses already in {partial.name}")
    todo = [r for r in records if r["item_id"] not in done]
    modes = {r["item_id"]: ev.protocol(r, cfg) for r in todo}
    options = {r["item_id"]: ev._choices(r) or [] for r in todo if modes[r["item_id"]] != "generate"}
    loglik = [r for r in todo if modes[r["item_id"]] != "generate"]
    generate = [r for r in todo if modes[r["item_id"]] == "generate"]
    chunk = cfg.batch_size * ev._CHUNK_BATCHES

    def prompt(r: dict[str, Any]) -> Messages | str:
        msgs = conversation(r)
        return msgs if cfg.chat_template else "\n\n".join(str(m["content"]) for m in msgs)

    # the chunks of the one-process loop, in its order: by budget, then every `chunk` items
    by_budget: dict[int, list[dict[str, Any]]] = {}
    for r in generate:
        by_budget.setdefault(ev.budget(r, cfg), []).append(r)
    gen_chunk = cfg.generation_batch * ev._CHUNK_BATCHES
    gen_chunks = [
        (max_new, group[start : start + gen_chunk])
        for max_new, group in sorted(by_budget.items())
        for start in range(0, len(group), gen_chunk)
    ]
    if gen_chunks:
        jobs: list[tuple[Any, ...]] = [
            (n, [prompt(r) for r in batch], max_new) for n, (max_new, batch) in enumerate(gen_chunks)
        ]
        with progress_bar("generating", len(generate)) as advance:
            for n, out in pool.run("generate", jobs):
                batch = gen_chunks[n][1]
                recs: list[tuple[str, str, str, list[float] | None]] = [
                    (r["item_id"], o, ev.item_digest(r), None) for r, o in zip(batch, out, strict=True)
                ]
                ev._append(partial, recs)
                done.update((i, (o, None)) for i, o, _, _ in recs)
                advance(len(batch))

    ll_chunks = [loglik[start : start + chunk] for start in range(0, len(loglik), chunk)]
    if ll_chunks:
        jobs = [
            (
                n,
                [
                    req
                    for r in batch
                    for req in ev.loglik_requests(
                        r, options[r["item_id"]], modes[r["item_id"]], cfg.chat_template
                    )
                ],
            )
            for n, batch in enumerate(ll_chunks)
        ]
        with progress_bar("option log-likelihoods", len(loglik)) as advance:
            for n, logliks in pool.run("loglikelihood", jobs):
                batch = ll_chunks[n]
                recs, offset = [], 0
                for r in batch:
                    opts = options[r["item_id"]]
                    mine = [float(x) for x in logliks[offset : offset + len(opts)]]
                    offset += len(opts)
                    best = ev.pick(mine, opts, modes[r["item_id"]])
                    recs.append((r["item_id"], f"{ev.LETTERS[best]}) {opts[best]}", ev.item_digest(r), mine))
                ev._append(partial, recs)
                done.update((i, (o, ll)) for i, o, _, ll in recs)
                advance(len(batch))
    return done


class RayEvaluator(ev.OwnEvaluator):
    """:class:`cgaps.evaluate.evaluator.OwnEvaluator` whose answers come from the pool's workers."""

    def __init__(self, pool: EvaluationPool, cfg: RunConfig, partial: str | Path):
        super().__init__(pool.generator, cfg, partial)  # type: ignore[arg-type]  # describes, never runs
        self.pool = pool

    def score(self, items: pd.DataFrame) -> pd.DataFrame:
        from cgaps.evaluate.grade import grade_items

        answers = respond(items, self.pool, self.cfg, self.partial)
        self.options = ev.option_table(items, answers, self.cfg)
        graded = items.copy()
        graded["response"] = items["item_id"].map({i: a[0] for i, a in answers.items()}).fillna("")
        graded["score"] = grade_items(graded)
        return graded[["item_id", "response", "score"]]


class EvaluationPool:
    """Evaluation workers on a Ray cluster (:mod:`cgaps.scaleout`); use :func:`evaluation_pool`."""

    def __init__(self, ray: Any, cfg: RunConfig, opts: RayOptions, worker: type = EvalWorker):
        n, resources = worker_resources(ray, opts, cfg.device)
        info(f"evaluation on {n} Ray worker(s), each loading {cfg.model}")
        self.cfg = cfg
        self.workers = n
        self.actors = ActorPool(ray, worker, (cfg.to_dict(),), n, resources)
        described: list[RemoteGenerator] = self.actors.each("describe")
        kinds = {(d.name, d.backend, str((d.loaded or {}).get("dtype"))) for d in described}
        if len(kinds) > 1:  # nodes that resolve `auto` differently would answer differently
            raise CGapsError(
                f"the Ray workers loaded the model differently ({sorted(kinds)}); "
                "give --backend and --dtype explicitly, or use nodes of one kind"
            )
        self.generator = described[0]

    def run(self, method: str, jobs: list[tuple[Any, ...]]) -> Iterator[tuple[int, Any]]:
        """``(chunk, answers)`` of every job as it completes; counts the truncated prompts."""
        for _, (n, out, truncated) in self.actors.map(method, jobs, lambda j: f"answering chunk {j}"):
            self.generator.prompts_truncated += truncated
            yield n, out

    def evaluator(self, cfg: RunConfig, partial: str | Path) -> RayEvaluator:
        """The score source; ``cfg`` as the resume file records it (the backend resolved)."""
        return RayEvaluator(self, cfg, partial)


# The worker class evaluation pools are made of (a test may replace it).
WORKER: type = EvalWorker


@contextmanager
def evaluation_pool(cfg: RunConfig, opts: RayOptions) -> Iterator[EvaluationPool]:
    """Workers for one evaluation on the cluster of ``opts``; stopped on leaving the block."""
    with cluster(opts) as ray:
        pool = EvaluationPool(ray, cfg, opts, WORKER)
        try:
            yield pool
        finally:
            pool.actors.close()
