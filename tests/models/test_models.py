"""cgaps.models: batching helpers, the dtype map, and HFBackend as both seams, on a tiny random model."""

from __future__ import annotations

import pytest
import torch

from cgaps.errors import CGapsError
from cgaps.models import HFBackend, length_batches, pad_batch, pick_dtype, right_pad, torch_dtype
from helpers import embedded_tokenizer, tiny_causal_lm


@pytest.fixture(scope="module")
def tiny():
    return HFBackend(tiny_causal_lm("llama", n_layers=3, hidden=32), embedded_tokenizer(), "tiny", "cpu")


def test_length_batches_sort_stably():
    lengths = [5, 2, 5, 1, 2, 9, 5]
    assert length_batches(lengths, 3) == [[3, 1, 4], [0, 2, 6], [5]]
    # longest first keeps ties in input order too (like sorting on the negated length)
    assert length_batches(lengths, 3, longest_first=True) == [[5, 0, 2], [6, 1, 4], [3]]
    assert length_batches([], 4) == []


def test_pad_batch_against_a_plain_loop():
    rows = [[4, 5, 6], [7], [8, 9]]
    ids, mask = pad_batch(rows, pad_id=0)
    want_ids = torch.zeros(3, 3, dtype=torch.long)
    want_mask = torch.zeros(3, 3, dtype=torch.long)
    for r, row in enumerate(rows):
        want_ids[r, : len(row)] = torch.tensor(row)
        want_mask[r, : len(row)] = 1
    assert torch.equal(ids, want_ids) and torch.equal(mask, want_mask)
    assert torch.equal(pad_batch(rows, pad_id=None)[0], want_ids)
    assert pad_batch(rows, pad_id=3)[0][1].tolist() == [7, 3, 3]
    keep = right_pad([[True, False], [True]], False, torch.bool)
    assert keep.dtype == torch.bool and keep.tolist() == [[True, False], [True, False]]


def test_dtype_names():
    assert torch_dtype("bfloat16") is torch.bfloat16 and torch_dtype("float16") is torch.float16
    assert pick_dtype("auto", "cpu") is torch.float32 and pick_dtype("auto", "cuda:0") is torch.bfloat16
    with pytest.raises(CGapsError, match="unknown dtype 'fp16'; valid: auto, float32, bfloat16, float16"):
        pick_dtype("fp16", "cpu")
    with pytest.raises(CGapsError, match="valid: float32, bfloat16, float16"):
        torch_dtype("half")


def test_backend_satisfies_both_seams(tiny):
    from cgaps.seams import Generator, ResidualReader

    assert isinstance(tiny, Generator) and isinstance(tiny, ResidualReader)
    assert tiny.dtype is torch.float32


def test_logits_with_edit_against_the_model(tiny):
    ids, mask = pad_batch([[1, 500, 600, 700], [1, 800]], tiny.tokenizer.pad_token_id)
    with torch.no_grad():
        clean = tiny.model(input_ids=ids, attention_mask=mask).logits.float()
    torch.testing.assert_close(tiny.logits_with_edit(ids, mask, 1, None), clean)
    torch.testing.assert_close(tiny.logits_with_edit(ids, mask, 1, lambda h: h), clean)
    # an edit of the last block's output: the logits are the LM head of the edited, normed residual
    last = tiny.n_layers - 1
    h = tiny.residuals(ids, mask, last)
    with torch.no_grad():
        want = tiny.model.lm_head(tiny.model.model.norm(2 * h)).float()
    got = tiny.logits_with_edit(ids, mask, last, lambda x: 2 * x)
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, clean)
    with pytest.raises(CGapsError, match="beyond model tiny"):
        tiny.logits_with_edit(ids, mask, 3, None)


def test_generate_with_one_budget_per_conversation(tiny):
    convs = [[{"role": "user", "content": "Hello there"}], [{"role": "user", "content": "Hello again"}]]
    both = tiny.generate(convs, [2, 6], batch_size=2)
    full = tiny.generate(convs, 6, batch_size=2)
    assert both[1] == full[1] and full[0].startswith(both[0])
    ids = [tiny.tokenizer(t, add_special_tokens=False)["input_ids"] for t in (both[0], full[0])]
    assert len(ids[0]) <= 2 < len(ids[1])
    with pytest.raises(ValueError, match="2 token budgets for 1 conversations"):
        tiny.generate(convs[:1], [2, 6], batch_size=2)


@pytest.mark.parametrize("architecture", ["llama", "gemma2"])
def test_unembed_is_the_logit_lens_of_the_models_own_norm_and_head(architecture):
    """(v * g) @ W_U.T is the model's own final norm and LM head applied to v, up to the norm's
    1 / rms(v): with g = weight for Llama's RMSNorm and 1 + weight for Gemma's."""
    model = tiny_causal_lm(architecture, n_layers=1, hidden=32)
    norm = model.model.norm
    with torch.no_grad():  # random scales (Gemma's start at zero, which would hide a missing + 1)
        norm.weight.copy_(torch.randn(norm.weight.shape, generator=torch.Generator().manual_seed(3)))
    backend = HFBackend(model, embedded_tokenizer(), "tiny", "cpu")
    got = backend.unembed()
    assert got is not None
    scale, head = got
    assert head is model.get_output_embeddings().weight
    v = torch.randn(5, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        eps = getattr(norm, "eps", None) or norm.variance_epsilon  # gemma2 and llama name it differently
        want = model.lm_head(norm(v)) * torch.sqrt(v.pow(2).mean(-1, keepdim=True) + eps)
        torch.testing.assert_close((v * scale) @ head.T, want, rtol=1e-4, atol=1e-4)
    # Gemma's norm multiplies by 1 + weight: the rule lives in cgaps.models.families
    plus_one = architecture == "gemma2"
    torch.testing.assert_close(scale, norm.weight + 1 if plus_one else norm.weight)


# ---------------------------------------------------------------- the reader's dtype (issue 24)


def test_reader_dtype_rules(monkeypatch):
    from cgaps.models.loading import cpu_bf16_native, reader_dtype

    assert reader_dtype("auto", "cpu", lambda: True) == "bfloat16"
    assert reader_dtype("auto", "cpu", lambda: False) == "float32"
    assert reader_dtype("auto", "cuda:0", lambda: False) == "bfloat16"
    assert reader_dtype("auto", "mps", lambda: True) == "float32"
    assert reader_dtype("float32", "cpu", lambda: True) == "float32"
    assert reader_dtype("float16", "cuda", lambda: True) == "float16"
    with pytest.raises(CGapsError, match="unknown dtype 'half'"):
        reader_dtype("half", "cpu")
    # the probe is looked up when called, and the environment pins it (the suite runs with 0)
    monkeypatch.setenv("CGAPS_CPU_BF16", "1")
    assert cpu_bf16_native() and reader_dtype("auto", "cpu") == "bfloat16"
    monkeypatch.setenv("CGAPS_CPU_BF16", "0")
    assert not cpu_bf16_native() and reader_dtype("auto", "cpu") == "float32"


@pytest.mark.integration
@pytest.mark.parametrize("architecture", ["llama", "gemma2"])
def test_reading_in_bfloat16_equals_a_bfloat16_load(tmp_path, architecture):
    from helpers import save_tiny_model

    folder = save_tiny_model(tmp_path / "m", architecture, n_layers=3, hidden=32)
    loaded32 = HFBackend.load(str(folder), device="cpu", dtype="float32")
    loaded16 = HFBackend.load(str(folder), device="cpu", dtype="bfloat16")
    reader = loaded32.reading_in("bfloat16")
    assert reader.dtype is torch.bfloat16 and loaded32.dtype is torch.float32  # the model is untouched
    assert reader.loaded == loaded16.loaded and reader.loaded["dtype"] == "bfloat16"
    assert loaded32.reading_in("bfloat16") is reader and loaded32.reading_in("float32") is loaded32
    ids, mask = pad_batch([[1, 500, 600, 700, 800, 900], [1, 800, 5]], loaded32.tokenizer.pad_token_id)
    # bit for bit: parameters rounded alike, buffers (the rotary frequencies) kept in float32
    for layer in (0, 2):
        assert torch.equal(reader.residuals(ids, mask, layer), loaded16.residuals(ids, mask, layer)), (
            f"layer {layer}"
        )
    buffers = dict(reader.model.named_buffers())
    assert all(b.dtype == dict(loaded16.model.named_buffers())[n].dtype for n, b in buffers.items())
    # model.to(bfloat16), what the generation copy is, rounds the rotary frequencies too
    if architecture == "llama":
        assert any(b.dtype == torch.float32 for b in buffers.values())
    tied = reader.model.get_output_embeddings().weight is reader.model.get_input_embeddings().weight
    assert tied == (
        loaded32.model.get_output_embeddings().weight is loaded32.model.get_input_embeddings().weight
    )


@pytest.mark.integration
def test_reading_in_shares_the_generation_copy(tmp_path):
    from helpers import save_tiny_model

    folder = save_tiny_model(tmp_path / "m", n_layers=2, hidden=32)
    backend = HFBackend.load(str(folder), device="cpu", dtype="float32")
    backend.generate_in("bfloat16")
    reader = backend.reading_in("bfloat16")
    ours = dict(reader.model.named_parameters())
    for name, p in backend.gen_model.named_parameters():
        assert ours[name] is p  # no second copy of the weights
    assert "generation_dtype" not in reader.loaded and reader.loaded["dtype"] == "bfloat16"
    fresh = HFBackend.load(str(folder), device="cpu", dtype="bfloat16")
    ids, mask = pad_batch([[1, 500, 600, 700]], backend.tokenizer.pad_token_id)
    assert torch.equal(reader.residuals(ids, mask, 1), fresh.residuals(ids, mask, 1))


def test_reading_in_refuses_a_copy_that_does_not_fit(tiny, monkeypatch):
    from cgaps.models import hf

    fresh = HFBackend(tiny.model, tiny.tokenizer, "tiny", "cpu")
    monkeypatch.setattr(hf, "available_memory", lambda: 1000)
    with pytest.raises(
        CGapsError, match=r"reading residuals in bfloat16 needs a .* GB copy.*--dtype float32"
    ):
        fresh.reading_in("bfloat16")


def test_a_dtype_change_makes_extraction_stale(monkeypatch):
    from cgaps.models.loading import reader_dtype_change

    meta = {
        "config": {"dtype": "auto", "device": "cpu"},
        "model": {"reader_loaded": {"dtype": "float32", "device": "cpu"}},
    }
    monkeypatch.setenv("CGAPS_CPU_BF16", "0")
    assert reader_dtype_change(meta) is None
    monkeypatch.setenv("CGAPS_CPU_BF16", "1")
    assert reader_dtype_change(meta) == (
        "the residuals were read in another dtype (reader_dtype 'float32' there, 'bfloat16' now)"
    )
    pinned = {**meta, "config": {"dtype": "float32", "device": "cpu"}}
    assert reader_dtype_change(pinned) is None  # --dtype float32 reads in float32 on any CPU
    assert reader_dtype_change({"config": {}, "model": {"reader": "x"}}) is None  # nothing recorded
