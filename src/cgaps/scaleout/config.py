"""The Ray options of ``cgaps evaluate``, ``cgaps extract`` and ``cgaps run`` (:class:`RayConfig`).

Import-light (the standard library and :mod:`cgaps.config` only), so ``cgaps --help`` reads the
fields without importing Ray. The options are not part of :class:`~cgaps.config.RunConfig` on
purpose: where a stage ran changes nothing it writes, so they are not stored in ``run.json``'s
config, not part of any stage's recorded inputs, and a run finished on Ray is never stale for a
run without it (or the other way round).
"""

from __future__ import annotations

from dataclasses import dataclass

from cgaps.config_fields import check_field_types, documented
from cgaps.errors import CGapsError


@dataclass(frozen=True)
class RayConfig:
    """Whether and where a stage spreads its work over Ray workers (docs/scaling.md, "Ray")."""

    ray: bool = documented(
        False,
        "Spread the stage over Ray workers (one per GPU, else one per CPU core): a local cluster "
        "started here, or the one --ray-address names. Needs Ray (the package's 'ray' extra).",
        flags="--ray",
    )
    ray_address: str | None = documented(
        None,
        "Ray cluster to connect to (HOST:PORT, ray://HOST:10001, or 'auto' for the one `ray start` "
        "runs on this machine); implies --ray. Default: start a local cluster.",
    )
    ray_workers: int | None = documented(
        None,
        "Ray workers (each loads the model once). Default: the cluster's GPUs, else its CPU cores "
        "(a local cluster: this machine's cores).",
    )
    ray_timeout: float = documented(
        30.0,
        "Seconds to wait for the Ray cluster at --ray-address to answer: an address nothing listens "
        "on is an error at once, one that does not answer after about this long.",
    )

    def __post_init__(self) -> None:
        check_field_types(self, "ray options")
        if not self.ray_timeout > 0:
            raise CGapsError(f"ray option 'ray_timeout' (--ray-timeout) must be > 0, got {self.ray_timeout}")
        if self.ray_workers is not None and self.ray_workers < 1:
            raise CGapsError(f"ray option 'ray_workers' (--ray-workers) must be >= 1, got {self.ray_workers}")
        if self.ray_workers is not None and not self.enabled:
            raise CGapsError("--ray-workers needs --ray (or --ray-address)")

    @property
    def enabled(self) -> bool:
        return self.ray or self.ray_address is not None


def ray_options(values: dict[str, object]) -> RayConfig | None:
    """The options a command received (:func:`cgaps.cli._common.options_from`), None without --ray."""
    opts = RayConfig(**values)  # type: ignore[arg-type]
    return opts if opts.enabled else None
