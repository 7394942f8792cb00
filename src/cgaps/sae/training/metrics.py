"""Quality metrics of an SAE on cached residuals and inside the model.

- FVU: fraction of variance unexplained, sum ||x - x_hat||^2 / sum ||x - mean x||^2, on held-out
  conversations (outliers already excluded by the cache's recorded rule);
- L0: mean number of active latents per token;
- dead fraction: latents that never fire on the given tokens;
- CE increase: next-token cross-entropy on content tokens when the reconstruction replaces the
  residual after block L on the content tokens (those within the norm limit), minus the clean CE;
  a mean-ablation splice gives the scale ("CE loss recovered").

Every function takes the SAE as a :class:`~cgaps.seams.SAEEncoder` (a bare sae-lens SAE is
wrapped by :func:`cgaps.sae.as_encoder`) and the model as a :class:`~cgaps.seams.ResidualReader`;
content tokens are those of :func:`cgaps.sae.training.cache.render`, the rule the cache and
extraction share.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from cgaps.models import pad_batch, right_pad
from cgaps.sae import as_encoder
from cgaps.sae.training.cache import render
from cgaps.seams import ResidualReader, SAEEncoder

if TYPE_CHECKING:
    import torch
    from sae_lens import SAE


def reconstruction_metrics(
    sae: SAEEncoder | SAE, acts: torch.Tensor, batch_size: int = 4096
) -> dict[str, float]:
    """FVU, L0 and the token count of ``acts`` [n, d] (any float dtype; measured in float32)."""
    enc = as_encoder(sae)
    sq_err = 0.0
    l0 = 0.0
    n = len(acts)
    mean = acts.float().mean(0)
    var = 0.0
    for i in range(0, n, batch_size):
        x = acts[i : i + batch_size].float()
        f = enc.encode(x)
        x_hat = enc.decode(f)
        sq_err += float((x - x_hat).pow(2).sum())
        var += float((x - mean).pow(2).sum())
        l0 += float((f > 0).sum())
    return {"fvu": sq_err / var, "l0": l0 / n, "tokens": n}


def latent_stats(sae: SAEEncoder | SAE, acts: torch.Tensor, batch_size: int = 4096) -> dict[str, Any]:
    """Per-latent ``max`` activation and firing ``frequency`` ([F] float32 each) over ``acts`` [n, d]."""
    import torch

    enc = as_encoder(sae)
    top = torch.zeros(enc.width)
    fired = torch.zeros(enc.width)
    for i in range(0, len(acts), batch_size):
        f = enc.encode(acts[i : i + batch_size].float()).cpu()
        top = torch.maximum(top, f.max(dim=0).values)
        fired += (f > 0).sum(0)
    return {"max": top, "frequency": fired / max(len(acts), 1), "tokens": len(acts)}


def firing_counts(sae: SAEEncoder | SAE, acts: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """How many of ``acts`` [n, d] each latent fires on ([F], int64)."""
    import torch

    enc = as_encoder(sae)
    counts = torch.zeros(enc.width, dtype=torch.long)
    for i in range(0, len(acts), batch_size):
        counts += (enc.encode(acts[i : i + batch_size].float()) > 0).sum(0).cpu()
    return counts


def ce_increase(
    reader: ResidualReader,
    sae: SAEEncoder | SAE,
    conversations: Sequence[dict[str, Any]],
    layer: int,
    *,
    max_norm: float | None,
    max_length: int = 512,
    batch_size: int = 8,
    mean_act: torch.Tensor | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Clean vs spliced next-token CE (nats/token) over the content tokens of ``conversations``.

    ``conversations`` are dicts with ``messages``; the splice replaces the residual after block
    ``layer`` on content tokens whose norm is at most ``max_norm`` (None: all content tokens)
    by the SAE's reconstruction, and, given ``mean_act`` [d], by that mean (mean ablation).
    Returns ``ce_clean``, ``ce_sae``, ``ce_increase``, ``ce_tokens`` and, with ``mean_act``,
    ``ce_mean_ablation`` and ``ce_loss_recovered``.
    """
    import torch
    import torch.nn.functional as F

    enc = as_encoder(sae)
    tok = reader.tokenizer
    rows = [render(tok, c["messages"], max_length) for c in conversations]
    kinds = ["clean", "sae"] + (["mean_ablation"] if mean_act is not None else [])
    totals = dict.fromkeys(kinds, 0.0)
    n_targets = 0

    def splice(kind: str, keep: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor] | None:
        if kind == "clean":
            return None

        def edit(h: torch.Tensor) -> torch.Tensor:
            sel = keep.to(h.device)
            if max_norm is not None:
                sel = sel & (h.norm(dim=-1) <= max_norm)
            h = h.clone()
            if kind == "sae":
                h[sel] = enc.decode(enc.encode(h[sel])).to(h.device, h.dtype)
            else:
                assert mean_act is not None
                h[sel] = mean_act.to(h.device, h.dtype).expand(int(sel.sum()), -1)
            return h

        return edit

    for start in range(0, len(rows), batch_size):
        idx = range(start, min(start + batch_size, len(rows)))
        ids, mask = pad_batch([rows[i][0] for i in idx], tok.pad_token_id)
        keep = right_pad([rows[i][1] for i in idx], False, torch.bool)
        # predict token t+1 from position t, where t+1 is a content token
        target_mask = keep[:, 1:]
        targets = ids[:, 1:][target_mask]
        n_targets += len(targets)
        for kind in kinds:
            logits = reader.logits_with_edit(ids, mask, layer, splice(kind, keep))[:, :-1]
            totals[kind] += float(F.cross_entropy(logits[target_mask], targets, reduction="sum"))
        if progress:
            progress(len(idx))
    out = {f"ce_{k}": totals[k] / n_targets for k in kinds}
    out["ce_increase"] = out["ce_sae"] - out["ce_clean"]
    if mean_act is not None:
        out["ce_loss_recovered"] = 1 - out["ce_increase"] / (out["ce_mean_ablation"] - out["ce_clean"])
    out["ce_tokens"] = n_targets
    return out
