"""Extraction on Ray: workers that hold the reader model and the SAE, and what the driver sees of them.

:func:`cgaps.extract.stage.extract_run` plans the chunks exactly as in one process (the items
not in a reusable shard, sorted by length, cut every ``SHARD_ITEMS``) and numbers their shards;
:class:`ExtractionPool` sends each chunk to a worker, where
:func:`cgaps.extract.stage.extract_chunk` computes it as it would in one process, and the driver
writes the shard and its sidecar as it always does. The driver never loads the model: it takes
the tokenizer and the model's and SAE's description from the first worker (:class:`RemoteReader`,
:class:`RemoteSAE`), which is all the planning and the shard manifest need.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cgaps.config import RunConfig
from cgaps.console import info
from cgaps.errors import CGapsError
from cgaps.scaleout.cluster import ActorPool, Worker, cluster, worker_resources
from cgaps.scaleout.options import RayOptions


def _remote_only(*_: Any, **__: Any) -> Any:
    raise CGapsError("on Ray the model runs on the workers; this driver-side copy only describes it")


@dataclass
class RemoteReader:
    """The reader model as the driver sees it (:class:`cgaps.seams.ResidualReader`): the first
    worker's tokenizer and description; its forward passes run on the workers only."""

    name: str
    n_layers: int
    hidden_size: int
    device: str
    tokenizer: Any
    dtype: Any
    loaded: dict[str, Any] | None

    def check_layer(self, layer: int) -> None:  # checked by each worker as it loads
        pass

    residuals_at = _remote_only
    logits_with_edit = _remote_only


@dataclass
class RemoteSAE:
    """The SAE as the driver sees it (:class:`cgaps.seams.SAEEncoder`): its description only."""

    sae_id: str
    width: int
    layer: int
    hook_name: str
    fingerprint: str

    encode = _remote_only
    decode = _remote_only


class ExtractWorker(Worker):
    """A Ray actor: loads the reader and the SAE once (:func:`cgaps.extract.stage.load_reader`),
    then extracts chunk after chunk."""

    def load(self) -> None:
        from cgaps.extract.stage import load_reader

        self.reader, self.sae = load_reader(self.cfg)

    def description(self) -> tuple[RemoteReader, RemoteSAE]:
        r, s = self.reader, self.sae
        return (
            RemoteReader(
                r.name, r.n_layers, r.hidden_size, r.device, r.tokenizer, r.dtype, getattr(r, "loaded", None)
            ),
            RemoteSAE(s.sae_id, s.width, s.layer, s.hook_name, s.fingerprint),
        )

    def extract(self, n: int, chunk: list[Any], layer: int) -> tuple[int, Any, Counter, dict[str, Counter]]:
        from cgaps.extract.stage import extract_one

        for e in chunk:  # Ray hands arrays over read-only (zero-copy); torch wants them writable
            e.mask = e.mask.copy()
        return (n, *extract_one(self.reader, self.sae, layer, chunk, self.cfg))


class ExtractionPool:
    """Extraction workers on a Ray cluster (:mod:`cgaps.scaleout`); use :func:`extraction_pool`."""

    def __init__(self, ray: Any, cfg: RunConfig, opts: RayOptions, worker: type = ExtractWorker):
        n, resources = worker_resources(ray, opts, cfg.device)
        info(f"extraction on {n} Ray worker(s), each loading {cfg.reader_model} and the SAE")
        self.workers = n
        self.actors = ActorPool(ray, worker, (cfg.to_dict(),), n, resources)
        described: list[tuple[RemoteReader, RemoteSAE]] = self.actors.each("describe")
        kinds = {(r.name, str(r.dtype), s.fingerprint) for r, s in described}
        if len(kinds) > 1:  # nodes that resolve `auto` differently would extract differently
            raise CGapsError(
                f"the Ray workers loaded the reader or the SAE differently ({sorted(kinds)}); "
                "give --dtype explicitly, or use nodes of one kind"
            )
        self.reader, self.sae = described[0]

    def extract(
        self, chunks: list[list[Any]], layer: int
    ) -> Iterator[tuple[int, Any, Counter, dict[str, Counter]]]:
        jobs = [(n, c, layer) for n, c in enumerate(chunks)]
        for _, result in self.actors.map("extract", jobs, lambda j: f"extracting chunk {j}"):
            yield result


# The worker class extraction pools are made of (a test replaces it with one that dies).
WORKER: type = ExtractWorker


@contextmanager
def extraction_pool(cfg: RunConfig, opts: RayOptions) -> Iterator[ExtractionPool]:
    """Workers for one extraction on the cluster of ``opts``; stopped on leaving the block."""
    with cluster(opts) as ray:
        pool = ExtractionPool(ray, cfg, opts, WORKER)
        try:
            yield pool
        finally:
            pool.actors.close()
