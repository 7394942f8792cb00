"""Scale-out on Ray: ``--ray`` spreads evaluation and extraction over workers (docs/scaling.md, "Ray").

Design. ``--ray`` makes the command line pass a :class:`RayRunner` (a
:class:`cgaps.seams.ChunkRunner`) to the stage instead of the in-process one; the stages never
import this package. The driver (the ``cgaps`` process) does everything it does in one process
except the model's work: it reads the run, plans the same chunks, owns the resume files, writes
every shard and table, and shows the progress. Each worker is a Ray actor that loads the model
(and the SAE) once with the stage's own loader and computes whole chunks with the very functions
one process uses (:func:`cgaps.extract.stage.extract_one`,
:func:`cgaps.evaluate.evaluator.generate_chunk` and :func:`~cgaps.evaluate.evaluator.loglik_chunk`).
Hence:

- **the same tables**: a chunk is cut exactly as in one process (extraction's outlier limit is a
  per-batch median, and a generation batch's padding is set by its members, so the chunks and
  their batches must not be regrouped), and computed by the same code on the same kind of device;
- **the same shards and resume files**: each extraction chunk keeps the shard number it was
  planned with, whatever the order the workers finish in, and the driver writes it through the
  same atomic write and sidecar; evaluation answers are appended to ``responses.partial.jsonl``
  as chunks arrive. An interrupted Ray run resumes with or without Ray, and the other way round;
- **a worker that dies is retried**: actors restart (``max_restarts``) and their pending chunks
  run again (``max_task_retries``), :data:`cluster.RETRIES` times, before the stage stops with a
  one-line error; completed chunks are on disk either way;
- **no shared file system needed**: only chunks (token ids, prompts) and their results travel;
  each node needs the model and the SAE where the config names them (a hub id in its cache, or
  the same path).

Where a stage ran is recorded in ``run.json`` ``timings`` (``extract_ray_workers``,
``evaluate_ray_workers``), never in the config or the stage's recorded inputs, so running on
Ray does not make a finished run stale. Ray is imported only when ``--ray`` is given
(:func:`cluster.import_ray`: a missing Ray names the ``ray`` extra). One worker per GPU where the
cluster has GPUs, else one per CPU core.

Modules: :mod:`.options` (:class:`RayConfig`, the command-line fields), :mod:`.cluster`
(connecting, the generic worker actor, the actor pool with retries), :mod:`.runner`
(:class:`RayRunner`). Importing this package imports neither Ray nor torch.
"""

from __future__ import annotations

from cgaps.scaleout.config import RayConfig, ray_options
from cgaps.scaleout.runner import RayRunner


def ray_runner(values: dict[str, object]) -> RayRunner | None:
    """The runner a command's Ray options ask for (:func:`cgaps.cli._common.options_from`), None
    without ``--ray`` (the stage then runs in this process)."""
    opts = ray_options(values)
    return RayRunner(opts) if opts is not None else None


__all__ = ["RayConfig", "RayRunner", "ray_options", "ray_runner"]
