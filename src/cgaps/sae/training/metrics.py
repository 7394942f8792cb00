"""Quality metrics of an SAE on cached residuals and inside the model.

- FVU: fraction of variance unexplained, sum ||x - x_hat||^2 / sum ||x - mean x||^2, on held-out
  conversations (outliers already excluded by the cache's recorded rule);
- L0: mean number of active latents per token;
- dead fraction: latents that never fire on the given tokens;
- CE increase: next-token cross-entropy on content tokens when the reconstruction replaces the
  residual after block L on the content tokens (those within the norm limit), minus the clean CE;
  a mean-ablation splice gives the scale ("CE loss recovered").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cgaps.sae.training.cache import render


def reconstruction_metrics(sae: Any, acts: Any, batch_size: int = 4096) -> dict[str, float]:
    import torch

    sq_err = 0.0
    l0 = 0.0
    n = len(acts)
    mean = acts.float().mean(0)
    var = 0.0
    with torch.no_grad():
        for i in range(0, n, batch_size):
            x = acts[i : i + batch_size].float()
            f = sae.encode(x)
            x_hat = sae.decode(f)
            sq_err += float((x - x_hat).pow(2).sum())
            var += float((x - mean).pow(2).sum())
            l0 += float((f > 0).sum())
    return {"fvu": sq_err / var, "l0": l0 / n, "tokens": n}


def firing_counts(sae: Any, acts: Any, batch_size: int = 4096) -> Any:
    """How many of ``acts`` each latent fires on."""
    import torch

    counts = torch.zeros(sae.cfg.d_sae, dtype=torch.long)
    with torch.no_grad():
        for i in range(0, len(acts), batch_size):
            counts += (sae.encode(acts[i : i + batch_size].float()) > 0).sum(0)
    return counts


def ce_increase(
    backend: Any,
    sae: Any,
    conversations: Sequence[dict[str, Any]],
    layer: int,
    *,
    max_norm: float | None,
    max_length: int = 512,
    batch_size: int = 8,
    mean_act: Any = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Clean vs spliced next-token CE (nats/token) over the content tokens of ``conversations``."""
    import torch
    import torch.nn.functional as F

    tok = backend.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    block = backend.decoder_layers()[layer]
    rows = [render(tok, c["messages"], max_length) for c in conversations]
    totals = {"clean": 0.0, "sae": 0.0, "mean_ablation": 0.0}
    n_targets = 0
    mode: dict[str, Any] = {"kind": None, "keep": None}

    def hook(_m: Any, _i: Any, out: Any) -> Any:
        if mode["kind"] is None:
            return out
        h = out[0] if isinstance(out, tuple) else out
        keep = mode["keep"]
        if max_norm is not None:
            keep = keep & (h.norm(dim=-1) <= max_norm)
        h = h.clone()
        sel = h[keep]
        if mode["kind"] == "sae":
            h[keep] = sae.decode(sae.encode(sel.float())).to(h.dtype)
        else:
            h[keep] = mean_act.to(h.dtype).expand_as(sel)
        return (h, *out[1:]) if isinstance(out, tuple) else h

    handle = block.register_forward_hook(hook)
    kinds = ["clean", "sae"] + (["mean_ablation"] if mean_act is not None else [])
    try:
        for b in range(0, len(rows), batch_size):
            chunk = rows[b : b + batch_size]
            width = max(len(r[0]) for r in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            keep = torch.zeros(ids.shape, dtype=torch.bool)
            for r, (i, k) in enumerate(chunk):
                ids[r, : len(i)] = torch.tensor(i)
                mask[r, : len(i)] = 1
                keep[r, : len(i)] = torch.tensor(k)
            # predict token t+1 from position t, where t+1 is a content token
            target_mask = keep[:, 1:]
            targets = ids[:, 1:][target_mask]
            n_targets += len(targets)
            for kind in kinds:
                mode.update(kind=None if kind == "clean" else kind, keep=keep.to(backend.device))
                with torch.no_grad():
                    logits = (
                        backend.model(
                            input_ids=ids.to(backend.device),
                            attention_mask=mask.to(backend.device),
                            use_cache=False,
                        )
                        .logits[:, :-1]
                        .float()
                        .cpu()
                    )
                totals[kind] += float(F.cross_entropy(logits[target_mask], targets, reduction="sum"))
            if progress:
                progress(len(chunk))
    finally:
        handle.remove()
    out = {f"ce_{k}": totals[k] / n_targets for k in kinds}
    out["ce_increase"] = out["ce_sae"] - out["ce_clean"]
    if mean_act is not None:
        out["ce_loss_recovered"] = 1 - out["ce_increase"] / (out["ce_mean_ablation"] - out["ce_clean"])
    out["ce_tokens"] = n_targets
    return out
