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
