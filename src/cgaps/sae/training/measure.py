"""Measure a trained SAE: the numbers ``cgaps train-sae`` writes and the recipe's model card reports.

:func:`measure_sae` is the one measurement of an SAE after training, used by both the CLI and
``scripts/train_shipped_sae.py``; it combines the primitives of :mod:`~cgaps.sae.training.metrics`:

- ``fvu``, ``l0``, ``tokens``: reconstruction of held-out cached residuals (outliers already
  excluded by the cache's recorded rule);
- ``dead_frac``, ``dead_tokens_checked``: latents that never fire on the given training tokens;
- ``ce_clean``, ``ce_sae``, ``ce_increase`` (and, with a mean activation, ``ce_mean_ablation`` and
  ``ce_loss_recovered``), ``ce_tokens``: next-token cross-entropy with the reconstruction spliced
  in after block L, on held-out conversations.

The helpers below it serve the recipe's pilot and model card and any later inspection of an SAE:
the top activations of every latent over cached tokens (in one streaming pass), how much a
latent's top contexts are one token, and a readable context around a cached token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from cgaps.sae import as_encoder
from cgaps.sae.training.metrics import ce_increase, firing_counts, reconstruction_metrics

if TYPE_CHECKING:
    import torch
    from sae_lens import SAE

    from cgaps.seams import ResidualReader, SAEEncoder


def measure_sae(
    sae: SAEEncoder | SAE,
    heldout_acts: torch.Tensor,
    *,
    dead_acts: torch.Tensor | None = None,
    reader: ResidualReader | None = None,
    conversations: Sequence[dict[str, Any]] = (),
    layer: int | None = None,
    max_norm: float | None = None,
    max_length: int = 512,
    mean_act: torch.Tensor | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """FVU and L0 on ``heldout_acts``; dead fraction on ``dead_acts``; CE increase on ``conversations``.

    ``sae`` encodes and decodes raw residuals (an :class:`~cgaps.seams.SAEEncoder`, or a bare
    sae-lens SAE, wrapped by :func:`cgaps.sae.as_encoder`). The dead fraction is measured when ``dead_acts`` is given, the CE splice when
    ``reader`` (a :class:`~cgaps.seams.ResidualReader`), ``conversations`` and ``layer`` are;
    ``max_norm`` keeps outlier tokens out of the splice as the cache kept them out of training,
    ``mean_act`` adds the mean-ablation reference. ``progress`` is called with the number of
    conversations of each CE batch done (the splice is the slow part: two or three forward passes).
    """
    out: dict[str, Any] = dict(reconstruction_metrics(sae, heldout_acts))
    if dead_acts is not None:
        counts = firing_counts(sae, dead_acts)
        out["dead_frac"] = float((counts == 0).float().mean())
        out["dead_tokens_checked"] = len(dead_acts)
    if reader is not None and conversations:
        if layer is None:
            raise ValueError("measure_sae: the CE splice needs the SAE's layer")
        out.update(
            ce_increase(
                reader,
                sae,
                conversations,
                layer,
                max_norm=max_norm,
                max_length=max_length,
                mean_act=mean_act,
                progress=progress,
            )
        )
    return out


def top_activations(
    sae: SAEEncoder | SAE, acts: torch.Tensor, top: int, batch_size: int = 8192
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``top`` largest activations of every latent over ``acts``: values and row indices [F, top].

    Sorted in decreasing order per latent; a latent whose first value is 0 never fired (dead).
    One streaming pass in chunks, so memory stays at [F, chunk] whatever the number of tokens.
    """
    import torch

    if not len(acts):
        raise ValueError("top_activations: no tokens given")
    enc = as_encoder(sae)
    best_v = torch.zeros(enc.width, top)
    best_i = torch.zeros(enc.width, top, dtype=torch.long)
    for i in range(0, len(acts), batch_size):
        f = enc.encode(acts[i : i + batch_size].float()).cpu().T  # [F, b]
        v, j = f.topk(min(top, f.shape[1]), dim=1)
        cat_v = torch.cat([best_v, v], 1)
        cat_i = torch.cat([best_i, j + i], 1)
        keep = cat_v.topk(top, dim=1).indices
        best_v, best_i = cat_v.gather(1, keep), cat_i.gather(1, keep)
    order = best_v.argsort(dim=1, descending=True)
    return best_v.gather(1, order), best_i.gather(1, order)


def token_concentration(vals: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor) -> float:
    """Mean over latents that fire of the share of their top contexts that are one token id.

    ``vals``, ``rows`` come from :func:`top_activations`; ``tokens`` are the cached token ids.
    1.0 means a latent is a token detector; lower means its strongest contexts differ in surface
    form (a rough proxy for more abstract concepts).
    """
    import torch

    alive = vals[:, -1] > 0
    toks = tokens[rows[alive]]
    share = torch.tensor([float(torch.bincount(t).max()) / len(t) for t in toks])
    return float(share.mean())


def token_context(
    tokenizer: Any,
    messages: list[dict[str, str]],
    pos: int,
    *,
    before: int = 12,
    after: int = 4,
    max_length: int = 512,
) -> str:
    """The cached token at ``pos`` of a conversation as ``left[[token]]right``, on one Markdown-safe line.

    The conversation is rendered exactly as the cache rendered it, so ``pos`` (the cache's
    ``pos`` metadata) points at the same token.
    """
    from cgaps.sae.training.cache import render

    ids, _ = render(tokenizer, messages, max_length)
    left = tokenizer.decode(ids[max(0, pos - before) : pos])
    right = tokenizer.decode(ids[pos + 1 : pos + 1 + after])
    text = f"{left}[[{tokenizer.decode([ids[pos]])}]]{right}"
    return text.replace("\n", "\\n").replace("|", "\\|")
