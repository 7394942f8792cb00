"""Evaluation on Ray: workers that hold the evaluated model, and the driver's resumable loop.

:func:`respond` is :func:`cgaps.evaluate.evaluator.respond` with its chunks spread over workers:
the same resume file (read, checked and appended on the driver only), the same chunks (one
:class:`cgaps.evaluate.evaluator.Plan` cuts them for both), and
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
    with the chunks of its :class:`~cgaps.evaluate.evaluator.Plan` answered by the pool's workers."""
    plan = ev.Plan(items, cfg, partial)
    if plan.generate_chunks:
        jobs: list[tuple[Any, ...]] = [
            (n, plan.prompts(batch), max_new) for n, (max_new, batch) in enumerate(plan.generate_chunks)
        ]
        with progress_bar("generating", plan.n_generate) as advance:
            for n, out in pool.run("generate", jobs):
                batch = plan.generate_chunks[n][1]
                plan.record_generated(batch, out)
                advance(len(batch))
    if plan.loglik_chunks:
        jobs = [(n, plan.requests(batch)) for n, batch in enumerate(plan.loglik_chunks)]
        with progress_bar("option log-likelihoods", plan.n_loglik) as advance:
            for n, logliks in pool.run("loglikelihood", jobs):
                plan.record_logliks(plan.loglik_chunks[n], logliks)
                advance(len(plan.loglik_chunks[n]))
    return plan.done


class RayEvaluator(ev.OwnEvaluator):
    """:class:`cgaps.evaluate.evaluator.OwnEvaluator` whose answers come from the pool's workers."""

    def __init__(self, pool: EvaluationPool, cfg: RunConfig, partial: str | Path):
        super().__init__(pool.generator, cfg, partial)  # type: ignore[arg-type]  # describes, never runs
        self.pool = pool

    def respond(self, items: pd.DataFrame) -> dict[str, ev.Answer]:
        return respond(items, self.pool, self.cfg, self.partial)


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
