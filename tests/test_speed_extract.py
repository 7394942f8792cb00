"""The fast extraction path (sparse pooling on the device, background shard writes) against the
plain one it replaced (:mod:`cgaps.extract.reference`): the same rows, bit for bit, for every
pooling, span, top_k and outlier setting, and with the full-model forward of the naive pipeline."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest
import torch

from cgaps.config import RunConfig
from cgaps.extract import reference
from cgaps.extract.stage import encode_items, extract_chunk, pool_batch
from helpers import loaded_sae
from test_extract import ITEMS


def _items(n_copies: int = 4) -> pd.DataFrame:
    # several copies with longer responses: batches of mixed lengths, several batches per chunk
    parts = []
    for i in range(n_copies):
        part = ITEMS.assign(item_id=ITEMS["item_id"] + str(i))
        part["response"] = part["response"] + " and more" * (3 * i)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize(
    "cfg",
    [
        RunConfig(pool="max", batch_size=3),
        RunConfig(pool="mean", batch_size=3, span="response"),
        RunConfig(pool="sum", batch_size=4, span="prompt", max_norm_ratio=None),
        RunConfig(pool="max", batch_size=3, top_k=4),
        RunConfig(pool="sum", batch_size=5, top_k=2, skip_special=False, max_norm_ratio=2.0),
    ],
    ids=["max", "mean-response", "sum-prompt", "max-topk", "sum-topk-all-tokens"],
)
def test_fast_chunk_equals_the_plain_path(tiny_backend, cfg):
    spec = loaded_sae(tiny_backend.hidden_size, width=64, k=6)
    chunk = encode_items(_items(), tiny_backend.tokenizer, cfg)
    fast_stats: Counter = Counter()
    ref_stats: Counter = Counter()
    fast = extract_chunk(tiny_backend, spec, spec.layer, chunk, cfg, fast_stats)
    ref = reference.dense_chunk(tiny_backend, spec, spec.layer, chunk, cfg, ref_stats)
    assert len(fast) >= 40  # 20 items (top_k=2 keeps 40)
    pd.testing.assert_frame_equal(fast, ref)  # exact: same floats, same peak tokens, same row order
    assert fast_stats == ref_stats
    # the naive pipeline (whole model, output_hidden_states) reads the same residuals
    naive = reference.dense_chunk(tiny_backend, spec, spec.layer, chunk, cfg, Counter(), full_forward=True)
    pd.testing.assert_frame_equal(fast, naive, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pool", ["max", "mean", "sum"])
def test_sparse_pooling_equals_dense_pooling_with_ties(pool):
    # many exact ties (small integers) and whole rows of zeros: the peak token must break ties alike
    gen = torch.Generator().manual_seed(0)
    acts = torch.randint(0, 3, (40, 12), generator=gen).float() * (torch.rand(40, 12, generator=gen) < 0.3)
    token_item = torch.sort(torch.randint(0, 5, (40,), generator=gen)).values
    value, peak = pool_batch(acts, token_item, 6, pool)  # item 5 has no tokens
    ref_value, ref_peak = reference.pool_dense(acts, token_item, 6, pool)
    torch.testing.assert_close(value, ref_value, rtol=0, atol=0)
    assert torch.equal(peak, ref_peak)
    assert (peak[5] == -1).all() and (value[5] == 0).all()
