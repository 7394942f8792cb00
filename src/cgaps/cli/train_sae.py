"""``cgaps train-sae``: train a TopK SAE on a model's residual stream and save it in sae-lens format.

The training flags are generated from :class:`~cgaps.sae.training.train.TrainConfig`, one per
field with the field's help (:func:`cgaps.cli._common.options_from`); a flag not given keeps the
field's default, so the defaults live in one place (the shipped SAE's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cgaps.cli._common import options_from
from cgaps.sae.training.train import TrainConfig


@options_from(TrainConfig, into="train")
def train_sae(
    conversations: Path = typer.Argument(
        ..., help='JSONL of conversations: one {"messages": [{role, content}, ...]} per line.'
    ),
    out: Path = typer.Option(
        ..., "--out", help="Folder for the SAE (cfg.json, sae_weights.safetensors, metrics.json)."
    ),
    model: str = typer.Option(
        "embedded", help="Model: 'embedded', a hub id, a local folder or a .gguf file."
    ),
    layer: int = typer.Option(..., help="Residual layer L (blocks.L.hook_resid_post)."),
    heldout: Path | None = typer.Option(
        None, help="JSONL of held-out conversations for FVU and CE (default: the last 5%)."
    ),
    work: Path | None = typer.Option(
        None, help="Folder for the activation cache and checkpoints (default: OUT.work)."
    ),
    tokens: int = typer.Option(2_000_000, help="Cache at most this many content tokens."),
    norm_ratio: float = typer.Option(
        10.0, help="Drop tokens whose residual norm exceeds this many times the median."
    ),
    max_length: int = typer.Option(512, help="Truncate conversations to this many tokens."),
    dtype: str = typer.Option("float16", help="Dtype of the saved weights: float16, bfloat16 or float32."),
    device: str = typer.Option("cpu", help="Torch device of the model."),
    threads: int | None = typer.Option(None, help="Torch CPU threads (default: torch's choice)."),
    train: dict[str, Any] | None = None,
) -> None:
    """Cache residuals of CONVERSATIONS, train a TopK SAE (AuxK, unit-norm decoder), measure it, save it.

    Every stage resumes: rerun the same command after an interruption.

    Examples:

        cgaps train-sae corpus.jsonl --out saes/mine --layer 15 --width 8192
    """
    import random
    from collections import Counter

    import torch

    from cgaps.console import info, progress_bar
    from cgaps.errors import CGapsError
    from cgaps.models import load_backend
    from cgaps.rundir import check_output, write_json
    from cgaps.sae import load_sae, write_latent_stats
    from cgaps.sae.training.cache import build_cache, load_layer
    from cgaps.sae.training.corpus import read_jsonl
    from cgaps.sae.training.measure import measure_sae
    from cgaps.sae.training.metrics import latent_stats
    from cgaps.sae.training.train import METRICS, save_sae, to_sae
    from cgaps.sae.training.train import train_sae as run_training

    cfg = TrainConfig(**(train or {}))
    work = work or out.with_name(out.name + ".work")
    for folder, what in ((out, "--out"), (work, "--work")):  # an SAE is no file of a run
        check_output(folder, what)
    if threads:
        torch.set_num_threads(threads)
    if not conversations.exists():
        raise CGapsError(f"{conversations}: no such file")
    convs = read_jsonl(conversations)
    if heldout is not None:
        held = read_jsonl(heldout)
    else:
        random.Random(cfg.seed).shuffle(convs)
        n_held = max(1, len(convs) // 20)
        held, convs = convs[:n_held], convs[n_held:]
    backend = load_backend(model, device=device, dtype="float32")
    backend.check_layer(layer)
    mix = dict(Counter(c.get("source", "unknown") for c in convs))
    with progress_bar("caching residuals", tokens, unit="tokens") as advance:
        manifest = build_cache(
            backend,
            convs,
            work / "cache_train",
            [layer],
            max_tokens=tokens,
            norm_ratio=norm_ratio,
            max_length=max_length,
            text_mix=mix,
            progress=advance,
        )
    limits = manifest["exclusion"]["max_norm"]
    held_manifest = build_cache(
        backend,
        held,
        work / "cache_heldout",
        [layer],
        norm_ratio=norm_ratio,
        max_length=max_length,
        norm_limits=limits,
        text_mix={"heldout": len(held)},
    )
    acts = load_layer(work / "cache_train", layer)
    steps = int(cfg.epochs * (len(acts) // cfg.batch_size))
    with progress_bar("training SAE", steps, unit="steps") as advance:
        result = run_training(acts, work / "train", cfg, progress=advance)
    save_sae(to_sae(result, cfg, layer=layer, model_name=backend.name), out, dtype=dtype)
    # measured as saved (in ``dtype``), as users will load it
    shipped = load_sae(str(out), hidden_size=backend.hidden_size, n_layers=backend.n_layers)
    n_ce = len(held[:200])
    with progress_bar("measuring SAE (CE with the SAE spliced in)", n_ce, unit="conversations") as advance:
        measured = measure_sae(
            shipped,
            load_layer(work / "cache_heldout", layer),
            dead_acts=acts[:500_000],
            reader=backend,
            conversations=held[:n_ce],
            layer=layer,
            max_norm=limits[str(layer)],
            max_length=max_length,
            mean_act=acts[:100_000].float().mean(0),
            progress=advance,
        )
    metrics = {
        "layer": layer,
        "width": cfg.width,
        "k": cfg.k,
        "train_tokens": len(acts),
        "epochs": cfg.epochs,
        "heldout_tokens": held_manifest["counts"]["tokens"],
        **measured,
        "exclusion": manifest["exclusion"],
        "text_mix": manifest["text_mix"],
    }
    write_json(metrics, out / METRICS)
    # the concept scale m_c that scoring uses instead of each suite's own max (docs/method.md §2)
    stats = latent_stats(shipped, acts)
    write_latent_stats(
        out, stats, {"corpus": f"the training cache ({conversations.name})", "tokens": str(len(acts))}
    )
    info(
        f"saved {out}: FVU {metrics['fvu']:.3f}, L0 {metrics['l0']:.1f}, dead {metrics['dead_frac']:.1%}, "
        f"CE +{metrics['ce_increase']:.3f} nats"
    )
