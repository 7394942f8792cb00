"""The in-process chunk runner: a stage's chunks computed one after the other in this process.

:class:`InProcess` is the :class:`cgaps.seams.ChunkRunner` every stage uses unless the command
line picks another (``--ray``: :class:`cgaps.scaleout.RayRunner`). It loads the model here and
hands it to the stage itself (never a description of it), so the stage reads what the model
did (its truncated prompts, what it loaded) from the model; :meth:`Local.map` runs the chunks in
their planned order, lazily, so the stage writes each chunk's results before the next is
computed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from cgaps.config import RunConfig

Model = TypeVar("Model")
Result = TypeVar("Result")


class Local(Generic[Model]):
    """:class:`cgaps.seams.Chunks` of a model in this process."""

    name = "local"
    workers: int | None = None

    def __init__(self, model: Model):
        self.models = [model]

    @property
    def model(self) -> Model:
        return self.models[0]

    def map(
        self, work: Callable[..., Result], jobs: Sequence[tuple[Any, ...]]
    ) -> Iterator[tuple[int, Result]]:
        for index, job in enumerate(jobs):
            yield index, work(self.model, *job)


class InProcess:
    """:class:`cgaps.seams.ChunkRunner` that computes every chunk in this process."""

    def __enter__(self) -> InProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    @contextmanager
    def start(
        self,
        task: str,
        cfg: RunConfig,
        load: Callable[[RunConfig], Model],
        describe: Callable[[Model], Model],
    ) -> Iterator[Local[Model]]:
        yield Local(load(cfg))


if TYPE_CHECKING:
    from cgaps.seams import ChunkRunner, Chunks

    def _satisfies_seams(runner: InProcess, chunks: Local[int]) -> tuple[ChunkRunner, Chunks[int]]:
        return runner, chunks  # where mypy checks both against their protocols
