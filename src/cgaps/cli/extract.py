"""``cgaps extract RUN_DIR``: SAE concept saliency of every item (sparse, sharded, resumable)."""

from __future__ import annotations

from pathlib import Path

import typer

from cgaps.cli._common import RunDirArg, run_config


def extract(
    run_dir: Path = RunDirArg,
    reader: str = typer.Option(None, help="Reader model (default: the evaluated model)."),
    sae: str = typer.Option(None, help="'embedded', a local sae-lens folder, or RELEASE/SAE_ID."),
    layer: int = typer.Option(None, help="Residual layer; default: the SAE's hook layer."),
    span: str = typer.Option(None, help="prompt, response or both."),
    pool: str = typer.Option(None, help="max, mean or sum."),
    skip_special: bool = typer.Option(None, "--skip-special/--keep-special", help="Skip BOS/template tokens."),
    top_k: int = typer.Option(None, help="Keep only the top-k concepts per item."),
    batch_size: int = typer.Option(None, help="Items per forward batch."),
    device: str = typer.Option(None, help="auto, cpu, cuda, cuda:N, mps."),
) -> None:
    """Encode the residual stream after layer L with the SAE and pool it per item."""
    from cgaps.activations import extract_run

    cfg = run_config(run_dir, reader=reader, sae=sae, layer=layer, span=span, pool=pool,
                     skip_special=skip_special, top_k=top_k, batch_size=batch_size, device=device)
    sal = extract_run(run_dir, cfg)
    typer.echo(f"wrote {len(sal)} saliency rows for {sal['item_id'].nunique()} items")
