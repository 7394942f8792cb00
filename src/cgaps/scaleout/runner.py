"""The Ray chunk runner: a stage's chunks computed by Ray workers that each hold the model.

:class:`RayRunner` is a :class:`cgaps.seams.ChunkRunner`. A stage starts it with its own three
functions (``load``, ``describe``, and per chunk ``work``; :mod:`cgaps.seams`); the runner starts
(or joins) the cluster, makes one :class:`~cgaps.scaleout.cluster.Worker` actor per GPU (else per
CPU core), each of which loads the model with ``load``, hands the driver each worker's
``describe(model)``, and maps the stage's jobs over the actors as they free up. It knows nothing
of the stages: the functions travel by name (module-level functions of the stage's package),
and every table, shard and resume file is written by the stage on the driver.

Entered as a context manager (``with RayRunner(opts) as runner``, what ``cgaps run --ray`` does),
the runner keeps the cluster it starts for every stage inside the block; otherwise each
:meth:`RayRunner.start` starts and stops its own (a cluster already running in this process, such
as an outer :func:`~cgaps.scaleout.cluster.cluster` block's, is reused either way).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from cgaps.console import info
from cgaps.scaleout.cluster import ActorPool, Worker, cluster, worker_resources
from cgaps.scaleout.config import RayConfig

if TYPE_CHECKING:
    from cgaps.config import RunConfig

Model = TypeVar("Model")
Result = TypeVar("Result")

# The actor class the workers are made of (a test replaces it with one that dies or fails).
WORKER: type = Worker


class RayChunks(Generic[Model]):
    """:class:`cgaps.seams.Chunks` on the Ray workers of one stage."""

    name = "ray"

    def __init__(self, actors: ActorPool, described: list[Model], task: str):
        self.actors = actors
        self.models = described
        self.workers: int | None = len(described)
        self.task = task

    @property
    def model(self) -> Model:
        return self.models[0]

    def map(
        self, work: Callable[..., Result], jobs: Sequence[tuple[Any, ...]]
    ) -> Iterator[tuple[int, Result]]:
        calls = [(work, *job) for job in jobs]
        yield from self.actors.map("run", calls, lambda j: f"in {self.task} chunk {j}")


class RayRunner:
    """:class:`cgaps.seams.ChunkRunner` on a Ray cluster (module docstring); ``opts`` says which."""

    def __init__(self, opts: RayConfig):
        self.opts = opts
        self._held: ExitStack | None = None

    def __enter__(self) -> RayRunner:
        self._held = ExitStack()
        return self

    def __exit__(self, *exc: object) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.close()

    @contextmanager
    def start(
        self,
        task: str,
        cfg: RunConfig,
        load: Callable[[RunConfig], Model],
        describe: Callable[[Model], Model],
    ) -> Iterator[RayChunks[Model]]:
        with ExitStack() as own:
            # a held cluster outlives this stage; one started here stops with it
            ray = (self._held or own).enter_context(cluster(self.opts))
            n, resources = worker_resources(ray, self.opts, cfg.device)
            info(f"{task} on {n} Ray worker(s), each loading the model")
            actors = ActorPool(ray, WORKER, (cfg.to_dict(), load), n, resources)
            try:
                yield RayChunks(actors, actors.each("describe", describe), task)
            finally:
                actors.close()


if TYPE_CHECKING:
    from cgaps.seams import ChunkRunner, Chunks

    def _satisfies_seams(runner: RayRunner, chunks: RayChunks[int]) -> tuple[ChunkRunner, Chunks[int]]:
        return runner, chunks  # where mypy checks both against their protocols
