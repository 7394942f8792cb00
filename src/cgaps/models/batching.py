"""Batching token sequences: length-sorted batches, right padding with an attention mask.

Every forward pass over many sequences (option log-likelihoods, extraction, the SAE cache,
the SAE metrics) batches them the same way:

- :func:`length_batches` sorts by length before cutting batches, so a batch pads little;
  ties keep their input order, so the batches (and so the floating-point results) are the
  same on every run;
- :func:`pad_batch` pads on the **right**, so every real token keeps its position 0..n-1 and,
  under a causal mask, never sees a pad token: a padded row computes what it would alone.

Generation pads on the left instead (new tokens must follow every prompt directly); it asks
the tokenizer for that with ``padding_side="left"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def token_budgets(max_new_tokens: int | Sequence[int], n: int) -> list[int]:
    """One new-token budget per conversation from a :class:`~cgaps.seams.Generator`'s
    ``max_new_tokens`` (one budget for all, or one each); a count that does not match is an error."""
    budgets = [max_new_tokens] * n if isinstance(max_new_tokens, int) else [int(b) for b in max_new_tokens]
    if len(budgets) != n:
        raise ValueError(f"{len(budgets)} token budgets for {n} conversations")
    return budgets


def length_batches(
    lengths: Sequence[int], batch_size: int, *, longest_first: bool = False
) -> list[list[int]]:
    """Indices into ``lengths`` in batches of ``batch_size``, shortest first (or longest first).

    Longest first puts the largest batch first, so a batch too big for memory fails at once.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=longest_first)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def right_pad(rows: Sequence[Any], value: Any = 0, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Stack 1-d rows (lists, arrays or tensors) of different lengths into [len(rows), longest],
    padded on the right with ``value``."""
    import torch
    from torch.nn.utils.rnn import pad_sequence

    tensors = [torch.as_tensor(r, dtype=dtype) for r in rows]
    return pad_sequence(tensors, batch_first=True, padding_value=value)


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [batch, longest] right-padded with ``pad_id`` (0 when the tokenizer has none),
    and the attention mask (1 on real tokens, 0 on padding)."""
    import torch

    ids = right_pad(rows, pad_id if pad_id is not None else 0, torch.long)
    mask = right_pad([torch.ones(len(r), dtype=torch.long) for r in rows], 0, torch.long)
    return ids, mask


def greedy_generate(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    pad_id: int | None = None,
) -> torch.Tensor:
    """Greedy continuation ([batch, max_new_tokens], on the CPU) of a left-padded batch, in which a
    row leaves the batch as soon as it has emitted an end-of-sequence token.

    ``model.generate`` keeps every row in the batch until the last one finishes, so a batch of
    short answers with one long one pays for the long one on every row; here the finished rows
    are dropped from the inputs and the KV cache (``DynamicCache.batch_select_indices``), so each
    decoding step costs what the unfinished rows need. The tokens are those of
    ``model.generate(do_sample=False)``: the same positions (``cumsum(mask) - 1``), the same
    argmax, the end-of-sequence token kept and the rest of a finished row filled with the pad id
    (checked against ``generate`` in ``tests/models/test_speed_generate.py``).
    """
    import torch
    from transformers import DynamicCache

    gen_cfg = model.generation_config
    eos = gen_cfg.eos_token_id
    eos_ids = torch.tensor([eos] if isinstance(eos, int) else list(eos or []), device=input_ids.device)
    pad_id = (
        gen_cfg.pad_token_id if gen_cfg.pad_token_id is not None else (int(eos_ids[0]) if len(eos_ids) else 0)
    )
    batch = input_ids.shape[0]
    out = torch.full((batch, max_new_tokens), int(pad_id), dtype=torch.long)
    rows = torch.arange(batch)  # which output row each row of the shrinking batch writes
    cache = DynamicCache(config=model.config)
    ids, att = input_ids, attention_mask
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        for step in range(max_new_tokens):
            logits = model(
                input_ids=ids,
                attention_mask=att,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1]
            nxt = logits.argmax(dim=-1)
            out[rows, step] = nxt.cpu()
            if step == max_new_tokens - 1:
                break
            last = positions[:, -1:]
            done = torch.isin(nxt, eos_ids)
            if done.any():
                keep = (~done).nonzero(as_tuple=True)[0]
                if len(keep) == 0:
                    break
                cache.batch_select_indices(keep)
                rows, att, nxt, last = rows[keep.cpu()], att[keep], nxt[keep], last[keep]
            ids = nxt.unsqueeze(1)
            att = torch.cat([att, torch.ones_like(att[:, :1])], dim=1)
            positions = last + 1
    return out
