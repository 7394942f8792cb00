"""``cgaps extract RUN_DIR``: SAE concept saliency of every item (sparse, sharded, resumable)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cgaps.cli._common import RunDirArg, options_from, run_config
from cgaps.config import RunConfig, command_fields
from cgaps.scaleout.config import RayConfig


@options_from(RunConfig, *command_fields("extract"), over="run.json")
@options_from(RayConfig, into="ray_opts")
def extract(run_dir: Path = RunDirArg, *, options: dict[str, Any], ray_opts: dict[str, Any]) -> None:
    """Encode the residual stream after layer L with the SAE and pool it per item.

    Examples:

        cgaps extract runs/p

        cgaps extract runs/p --span prompt --pool mean

        cgaps extract runs/p --sae gemma-scope-2b-pt-res-canonical/layer_20/width_16k/canonical
    """
    from cgaps.console import result
    from cgaps.extract.stage import extract_run
    from cgaps.scaleout import ray_runner

    sal = extract_run(run_dir, run_config(run_dir, options), runner=ray_runner(ray_opts))
    result(f"wrote {len(sal)} saliency rows for {sal['item_id'].nunique()} items")
