"""Connecting to Ray, and the pool of actors that run a stage's chunks (:class:`ActorPool`).

Ray is imported only here, only when a command is given ``--ray``: a missing Ray is the one-line
error naming the extra. Every Ray call of the project goes through this module, so the settings
that keep a local cluster quiet (no dashboard, no usage statistics) are set once.

Joining a cluster gives up within a stated time (``--ray-timeout``, :func:`reach`): left to
itself, ``ray.init(address=...)`` retries an address nothing answers for more than ten minutes
(20 attempts of ~40 s). The address is first tried with a plain TCP connection (nothing
listening: an error at once; a host that drops packets: after the timeout), and Ray's own
connection waits are set to fit in the timeout, for a port that accepts but is no Ray.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from cgaps.console import info
from cgaps.errors import CGapsError
from cgaps.scaleout.config import RayConfig

# A worker that dies (killed, out of memory, a lost node) is restarted and its task run again
# this many times before the stage stops with an error (the completed shards are kept).
RETRIES = 3
# Tasks queued per actor: one computing, one waiting, so a worker never idles on the driver.
IN_FLIGHT = 2


def import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise CGapsError("--ray needs Ray, which is not installed: pip install 'competency-gaps[ray]'") from e
    return ray


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _host_port(address: str) -> tuple[str, int] | None:
    """HOST and PORT of a ``--ray-address`` (``HOST:PORT`` or ``ray://HOST:PORT``); None for
    ``auto`` (Ray finds the local cluster itself, and says at once when there is none)."""
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def bound_ray_waits(timeout: float) -> None:
    """Ray's own connection waits, set to fit in ``timeout`` seconds: one attempt (its Python
    loop makes 20) of three waits (its C++ client's, read when Ray is imported, so this runs
    before). A variable the user set is left alone."""
    each = str(max(1, round(timeout / 3)))
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "1")
    os.environ.setdefault("RAY_py_gcs_connect_timeout_s", each)
    os.environ.setdefault("RAY_gcs_rpc_server_connect_timeout_s", each)


def reach(address: str, timeout: float) -> None:
    """A one-line error, within ``timeout`` seconds, when nothing accepts a TCP connection at
    ``address`` (module docstring)."""
    import socket

    target = _host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except OSError as e:
        why = f"no answer within {timeout:g} s" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise CGapsError(
            f"--ray-address {address}: cannot connect ({why}); is the cluster running there (`ray start "
            "--head` prints its address)? Or drop --ray-address to start a local cluster"
        ) from None


@contextmanager
def cluster(opts: RayConfig) -> Iterator[Any]:
    """Ray, initialised for ``opts`` (a local cluster or the one at ``opts.ray_address``); yields the
    ``ray`` module. Reentrant: inside another ``cluster`` block the running connection is reused,
    and only the outermost block shuts it down."""
    if opts.ray_address is not None:
        bound_ray_waits(opts.ray_timeout)
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    # no usage report leaves the machine (Ray asks on start-up unless told)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
    if opts.ray_address is None:
        kw["num_cpus"] = max(opts.ray_workers or 0, _cores())
        info(f"starting a local Ray cluster ({kw['num_cpus']} CPU slots)")
    else:
        kw["address"] = opts.ray_address
        info(f"connecting to the Ray cluster at {opts.ray_address} (giving up after {opts.ray_timeout:g} s)")
        reach(opts.ray_address, opts.ray_timeout)
    try:
        ray.init(**kw)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = " ".join(str(e).split())[:300]
        raise CGapsError(
            f"--ray: could not start or reach a Ray cluster ({first}); check --ray-address (or a longer --ray-timeout)"
        ) from e
    try:
        yield ray
    finally:
        ray.shutdown()


def worker_resources(ray: Any, opts: RayConfig, device: str) -> tuple[int, dict[str, float]]:
    """How many workers, and what each one reserves: one GPU per worker where the cluster has GPUs
    and ``device`` allows one, else one CPU core."""
    total = ray.cluster_resources()
    gpus, cpus = int(total.get("GPU", 0)), int(total.get("CPU", 1))
    each: dict[str, float] = {"num_cpus": 1}
    kind, have = "CPU core", cpus
    if gpus and device not in ("cpu", "mps"):
        each, kind, have = {"num_gpus": 1, "num_cpus": 1}, "GPU", gpus
    n = opts.ray_workers or max(1, have)
    if n > have:  # the extra actors would wait for resources forever
        raise CGapsError(f"--ray-workers {n}, but the Ray cluster has {have} {kind}(s); give at most {have}")
    return n, each


def worker_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """A worker's copy of the run config: Ray shows a worker only the GPU it reserved (as
    ``cuda:0``), so a config naming ``cuda:N`` means "a GPU" there."""
    from cgaps.config import from_dict

    out = dict(cfg)
    if str(out.get("device", "")).startswith("cuda:"):
        out["device"] = "cuda"
    return from_dict(out).to_dict()


class Worker:
    """A Ray actor: loads a stage's model once (``load(cfg)``, the stage's own function), then runs
    chunk after chunk on it (``work(model, *job)``, the stage's own function, sent by name).

    The worker's config is :func:`worker_config`'s; it shows no progress bars (the driver shows
    the progress). A CGapsError while loading (a model that is not there, a layer out of range) is
    kept and raised by :meth:`describe`, the first call the driver makes: it reaches the driver
    as the one line it is, where an exception in the actor's constructor would kill the actor, be
    retried, and surface as an actor death."""

    def __init__(self, cfg: dict[str, Any], load: Callable[[Any], Any]):
        from cgaps.config import from_dict

        os.environ["CGAPS_NO_PROGRESS"] = "1"
        self.cfg = from_dict(worker_config(cfg))
        self.failed: CGapsError | None = None
        try:
            self.model = load(self.cfg)
        except CGapsError as e:
            self.failed = e

    def describe(self, describe: Callable[[Any], Any]) -> Any:
        """What the driver needs to know of the loaded model: ``describe(model)``."""
        if self.failed is not None:
            raise self.failed
        return describe(self.model)

    def run(self, index: int, work: Callable[..., Any], *job: Any) -> Any:
        """Chunk ``index`` of the stage: ``work(model, *job)``."""
        return work(self.model, *job)


def task_error(ray: Any, e: Exception, what: str) -> Exception:
    """The error a failed Ray task becomes on the driver: the worker's own CGapsError as it was,
    a worker that kept dying as a one-line CGapsError."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, CGapsError):
        return cause
    if isinstance(e, ray.exceptions.RayActorError | ray.exceptions.WorkerCrashedError):
        return CGapsError(
            f"a Ray worker died {RETRIES + 1} times {what}; the completed work is kept, rerun to resume "
            f"({type(e).__name__})"
        )
    return e


class ActorPool:
    """``n`` actors of ``cls`` (each built with ``args``) that run a stage's chunks.

    Actors restart after a death and their tasks are run again (``max_restarts``,
    ``max_task_retries``: :data:`RETRIES`); :meth:`map` hands out the chunks as workers free up
    and yields each result as it completes, in whatever order.
    """

    def __init__(self, ray: Any, cls: type, args: tuple[Any, ...], n: int, resources: dict[str, float]):
        self.ray = ray
        remote = ray.remote(max_restarts=RETRIES, max_task_retries=RETRIES, **resources)(cls)
        self.actors = [remote.remote(*args) for _ in range(n)]

    def each(self, method: str, *args: Any) -> list[Any]:
        """``method(*args)`` of every actor (once its model is loaded): what the driver needs to
        know, and whether the workers agree on it."""
        try:
            return list(self.ray.get([getattr(a, method).remote(*args) for a in self.actors]))
        except self.ray.exceptions.RayError as e:
            raise task_error(self.ray, e, "while loading the model") from e

    def map(
        self, method: str, jobs: Sequence[tuple[Any, ...]], what: Callable[[int], str]
    ) -> Iterator[tuple[int, Any]]:
        """``(index, result)`` of ``method(index, *job)`` for every job, as they complete."""
        ray = self.ray
        queue = list(range(len(jobs)))[::-1]
        running: dict[Any, tuple[int, int]] = {}  # object ref -> (job, actor)

        def submit(actor: int) -> None:
            if queue:
                j = queue.pop()
                running[getattr(self.actors[actor], method).remote(j, *jobs[j])] = (j, actor)

        for _ in range(IN_FLIGHT):
            for a in range(len(self.actors)):
                submit(a)
        while running:
            [ref], _ = ray.wait(list(running), num_returns=1)
            j, actor = running.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as e:
                raise task_error(ray, e, what(j)) from e
            submit(actor)
            yield j, result

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
