"""The plain extraction path that the fast one in :mod:`cgaps.extract.stage` is checked against.

This is extraction as it was before it was made fast (issue 13), kept on purpose as the
reference of ``tests/extract/test_speed_extract.py`` and the *naive* pipeline of ``bench/extract.py``:

* the forward pass runs the whole model (``output_hidden_states=True``: every block, the final
  norm and the LM head) and takes ``hidden_states[L + 1]`` — or, with ``full_forward=False``, the
  hook-stopped forward of :meth:`ResidualReader.residuals_at`;
* residuals go to the CPU in float32 before anything else;
* the SAE codes are kept dense (tokens x F) and pooled densely (:func:`pool_dense`: one
  scatter over every cell, zeros included), then the positive cells are picked per item.

The rules (which tokens count, outliers, pooling, the peak token, top_k) are those of
docs/method.md §2, applied the same way, so the fast path must give the same rows.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from cgaps.config import RunConfig
from cgaps.models import length_batches, pad_batch, right_pad
from cgaps.seams import ResidualReader, SAEEncoder


def pool_dense(acts: Any, token_item: Any, n_items: int, pool: str) -> tuple[Any, Any]:
    """Pool token activations (T x F) into item saliency (n_items x F) and the peak token per cell.

    ``token_item[t]`` is the item (row) of token t. The peak token is the largest token index
    whose value equals the cell's max (ties break the same way each run).
    """
    import torch

    n_feat = acts.shape[1]
    idx = token_item.long().unsqueeze(1).expand(-1, n_feat)
    dev = acts.device
    peak_val = torch.zeros(n_items, n_feat, dtype=acts.dtype, device=dev).scatter_reduce(
        0, idx, acts, "amax", include_self=True
    )
    is_peak = (acts == peak_val[token_item.long()]) & (acts > 0)
    tok_pos = torch.arange(acts.shape[0], device=dev).unsqueeze(1).expand(-1, n_feat)
    peak_tok = torch.full((n_items, n_feat), -1, dtype=torch.long, device=dev).scatter_reduce(
        0, idx, torch.where(is_peak, tok_pos, torch.full_like(tok_pos, -1)), "amax", include_self=True
    )
    if pool == "max":
        value = peak_val
    else:
        total = torch.zeros(n_items, n_feat, dtype=acts.dtype, device=dev).index_add(
            0, token_item.long(), acts
        )
        if pool == "sum":
            value = total
        else:
            counts = torch.bincount(token_item.long(), minlength=n_items).clamp(min=1).to(acts.dtype)
            value = total / counts.unsqueeze(1)
    return value, peak_tok


def _full_forward_residuals(reader: Any, ids: Any, att: Any, layer: int) -> Any:
    import torch

    with torch.no_grad():
        out = reader.model(
            input_ids=ids.to(reader.device), attention_mask=att.to(reader.device), output_hidden_states=True
        )
    return out.hidden_states[layer + 1]


def dense_chunk(
    reader: ResidualReader,
    sae: SAEEncoder,
    layer: int,
    chunk: list[Any],
    cfg: RunConfig,
    stats: Counter,
    *,
    full_forward: bool = False,
    on_device: bool = False,
) -> pd.DataFrame:
    """Saliency rows of ``chunk`` (a list of :class:`cgaps.extract.stage.Encoded`), the plain way.

    ``on_device`` keeps residuals, dense codes and dense pooling on the reader's device instead
    of the CPU: the naive pipeline of ``bench/extract.py`` on a GPU (dense pooling of 10k tokens
    x 65k latents on the CPU would time the CPU, not the pipeline)."""
    import torch

    rows: list[pd.DataFrame] = []
    for batch in length_batches([len(e.input_ids) for e in chunk], cfg.batch_size):
        encs = [chunk[i] for i in batch]
        ids, att = pad_batch([e.input_ids for e in encs], reader.tokenizer.pad_token_id)
        if full_forward:
            resid = _full_forward_residuals(reader, ids, att, layer).float()
        else:
            resid = reader.residuals_at(ids, att, [layer])[layer].float()
        if not on_device:
            resid = resid.cpu()
        mask = right_pad([e.mask for e in encs], False, torch.bool).to(resid.device)
        stats["tokens_analysed"] += int(mask.sum())
        if cfg.max_norm_ratio is not None and mask.any():
            norms = resid.norm(dim=-1)
            outlier = mask & (norms > cfg.max_norm_ratio * norms[mask].median())
            stats["tokens_outlier_dropped"] += int(outlier.sum())
            mask &= ~outlier
        rr, tt = mask.nonzero(as_tuple=True)
        if len(rr) == 0:
            continue
        acts = sae.encode(resid[rr, tt])
        if not on_device:
            acts = acts.cpu()
        value, peak = pool_dense(acts, rr.to(acts.device), len(encs), cfg.pool)
        value, peak, tt = value.cpu(), peak.cpu(), tt.cpu()
        for r, e in enumerate(encs):
            v = value[r]
            nz = (v > 0).nonzero(as_tuple=True)[0]
            if cfg.top_k is not None and len(nz) > cfg.top_k:
                nz = nz[torch.topk(v[nz], cfg.top_k).indices]
            if len(nz) == 0:
                continue
            offs = np.array(e.offsets)[tt[peak[r, nz]].numpy()]
            rows.append(
                pd.DataFrame(
                    {
                        "item_id": e.item_id,
                        "concept": nz.numpy().astype(np.int32),
                        "value": v[nz].numpy().astype(np.float32),
                        "peak_start": offs[:, 0].astype(np.int32),
                        "peak_end": offs[:, 1].astype(np.int32),
                    }
                )
            )
    if not rows:
        from cgaps.extract.stage import empty_shard

        return empty_shard()
    return pd.concat(rows, ignore_index=True)
