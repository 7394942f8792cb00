"""``cgaps extract RUN_DIR``: SAE concept saliency of every item (sparse, sharded, resumable)."""

from __future__ import annotations

from pathlib import Path

import typer

from cgaps.cli._common import RunDirArg, config_option, run_config


def extract(
    run_dir: Path = RunDirArg,
    reader: str = config_option("reader"),
    sae: str = config_option("sae"),
    layer: int = config_option("layer"),
    span: str = config_option("span"),
    pool: str = config_option("pool"),
    skip_special: bool = config_option("skip_special", "--skip-special/--keep-special"),
    top_k: int = config_option("top_k"),
    batch_size: int = config_option("batch_size"),
    device: str = config_option("device"),
) -> None:
    """Encode the residual stream after layer L with the SAE and pool it per item."""
    from cgaps.extract.stage import extract_run

    cfg = run_config(
        run_dir,
        reader=reader,
        sae=sae,
        layer=layer,
        span=span,
        pool=pool,
        skip_special=skip_special,
        top_k=top_k,
        batch_size=batch_size,
        device=device,
    )
    sal = extract_run(run_dir, cfg)
    typer.echo(f"wrote {len(sal)} saliency rows for {sal['item_id'].nunique()} items")
