"""load_sae: local sae-lens folders (TopK, JumpReLU), the hub spec, and every user error."""

from __future__ import annotations

import json

import pytest
import torch

from cgaps.errors import CGapsError
from cgaps.sae import hook_layer, load_sae
from helpers import random_sae, save_random_sae

# the SAE these tests load: d_in 16, width 32, layer 3
SAE = dict(d_in=16, d_sae=32, layer=3, k=4, threshold=0.05)


@pytest.mark.parametrize("architecture", ["topk", "jumprelu"])
def test_load_local_folder(tmp_path, architecture):
    ref = random_sae(architecture, **SAE)
    ref.save_model(tmp_path / "sae")
    loaded = load_sae(str(tmp_path / "sae"), hidden_size=16, n_layers=6)
    assert (loaded.layer, loaded.width, loaded.hook_name) == (3, 32, "blocks.3.hook_resid_post")
    assert type(loaded.sae).__name__ == type(ref).__name__
    x = torch.randn(5, 16)
    torch.testing.assert_close(loaded.sae.encode(x), ref.encode(x))
    assert load_sae(str(tmp_path / "sae"), hidden_size=16, n_layers=6, layer=3).layer == 3


def test_wrong_layer_names_the_fix(tmp_path):
    save_random_sae(tmp_path / "sae", **SAE)
    with pytest.raises(CGapsError, match=r"trained on layer 3 .* pass --layer 3"):
        load_sae(str(tmp_path / "sae"), hidden_size=16, n_layers=6, layer=5)


def test_hidden_size_mismatch(tmp_path):
    save_random_sae(tmp_path / "sae", **SAE)
    with pytest.raises(
        CGapsError, match=r"d_in=16 but model has hidden size 64; pass an SAE trained on this model"
    ):
        load_sae(str(tmp_path / "sae"), hidden_size=64, n_layers=6)


def test_layer_beyond_depth(tmp_path):
    save_random_sae(tmp_path / "sae", **SAE)
    with pytest.raises(CGapsError, match=r"layer 3 is beyond the model's depth 2; pass"):
        load_sae(str(tmp_path / "sae"), hidden_size=16, n_layers=2)


def test_non_residual_hook_rejected(tmp_path):
    save_random_sae(tmp_path / "sae", hook_name="blocks.3.hook_mlp_out", **SAE)
    with pytest.raises(CGapsError, match=r"blocks.3.hook_mlp_out.*only residual-stream SAEs"):
        load_sae(str(tmp_path / "sae"), hidden_size=16, n_layers=6)
    assert hook_layer("blocks.12.hook_resid_post", "x") == 12


def test_folder_without_weights(tmp_path):
    (tmp_path / "sae").mkdir()
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps({"architecture": "topk"}))
    with pytest.raises(CGapsError, match="sae_weights.safetensors"):
        load_sae(str(tmp_path / "sae"), hidden_size=16, n_layers=6)


@pytest.mark.integration
def test_missing_path_and_unknown_release():
    with pytest.raises(CGapsError, match="no such folder"):
        load_sae("./nowhere", hidden_size=16, n_layers=6)
    with pytest.raises(CGapsError, match="Did you mean 'gemma-scope-2b-pt-res-canonical'"):
        load_sae("gemma-scope-2b-pt-res-canonicl/layer_20/width_16k/canonical", hidden_size=16, n_layers=6)
    with pytest.raises(CGapsError, match="has no SAE"):
        load_sae("gemma-scope-2b-pt-res-canonical/layer_99/width_16k/canonical", hidden_size=16, n_layers=6)


def test_embedded_missing_says_pass_sae(monkeypatch, tmp_path):
    import cgaps.sae as sae_mod

    monkeypatch.setattr(sae_mod, "ASSETS_DIR", tmp_path / "none")
    with pytest.raises(CGapsError, match="pass --sae"):
        load_sae("embedded", hidden_size=576, n_layers=30)


def test_the_fingerprint_is_the_weights_whatever_dtype_computes():
    """Extraction reads in bfloat16 where the CPU has it while labels, fill and confirm load the
    SAE in float32: one SAE has one fingerprint (`cgaps demo` refused its own run before), and a
    float32 load hashes as it always did (runs extracted before keep theirs); other weights
    have another fingerprint."""
    import hashlib

    from cgaps.sae import sae_folder

    def plain(sae) -> str:  # the fingerprint of earlier versions: the float32 load's bytes
        h = hashlib.sha1()
        for name, tensor in sorted(sae.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    prints = {
        dtype: load_sae("embedded", hidden_size=576, n_layers=30, dtype=dtype)
        for dtype in ("float32", "bfloat16", None)
    }
    assert prints["bfloat16"].dtype == torch.bfloat16 and prints["float32"].dtype == torch.float32
    assert len({s.fingerprint for s in prints.values()}) == 1
    assert prints["float32"].fingerprint == plain(prints["float32"].sae)
    # the bfloat16 load computes as sae-lens' own bfloat16 load of the folder
    from sae_lens import SAE as SaeLens

    direct = SaeLens.load_from_disk(sae_folder("embedded"), device="cpu", dtype="bfloat16")
    x = torch.randn(5, 576) * 4
    with torch.no_grad():
        torch.testing.assert_close(
            prints["bfloat16"].encode(x), direct.encode(x.to(torch.bfloat16)).float(), rtol=0, atol=0
        )
    other = load_sae("embedded", hidden_size=576, n_layers=30)
    with torch.no_grad():
        other.sae.W_enc[0, 0] += 1.0
    other.__dict__.pop("fingerprint")
    assert other.fingerprint != prints["float32"].fingerprint


@pytest.mark.parametrize("architecture", ["topk", "jumprelu"])
def test_loaded_sae_is_an_encoder_in_any_dtype(tmp_path, architecture):
    """encode takes residuals in any float dtype and gives float32 codes >= 0; decode gives float32."""
    from cgaps.sae import LoadedSAE, as_encoder
    from cgaps.seams import SAEEncoder

    ref = random_sae(architecture, **SAE)
    ref.save_model(tmp_path / "sae")
    loaded = load_sae(str(tmp_path / "sae"), hidden_size=16, n_layers=6, dtype="bfloat16")
    assert isinstance(loaded, SAEEncoder)
    x = torch.randn(7, 16) * 3
    ref_bf16 = ref.to(torch.bfloat16)
    with torch.no_grad():
        want_codes = ref_bf16.encode(x.to(torch.bfloat16)).float()
        want_recon = ref_bf16.decode(want_codes.to(torch.bfloat16)).float()
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        codes = loaded.encode(x.to(dtype))
        assert codes.dtype == torch.float32 and codes.shape == (7, 32) and (codes >= 0).all()
        torch.testing.assert_close(codes, want_codes, rtol=0, atol=0 if dtype != torch.float16 else 0.1)
    assert (want_codes > 0).any()
    recon = loaded.decode(want_codes)
    assert recon.dtype == torch.float32
    torch.testing.assert_close(recon, want_recon)
    # a bare sae-lens SAE (just trained, say) becomes an encoder of its own hook layer
    bare = as_encoder(ref)
    assert isinstance(bare, LoadedSAE) and (bare.layer, bare.width) == (3, 32)
    assert as_encoder(loaded) is loaded


@pytest.mark.slow
def test_embedded_sae_reconstructs_smollm2_residuals(smollm):
    from cgaps.models import format_chat
    from cgaps.sae import ASSETS_DIR

    assert any(ASSETS_DIR.glob("*/cfg.json")), f"no SAE shipped in {ASSETS_DIR}"
    loaded = load_sae("embedded", hidden_size=smollm.hidden_size, n_layers=smollm.n_layers)
    assert loaded.width == 8192 and loaded.sae_id.startswith("embedded:smollm2-135m-instruct")
    msgs = [
        {
            "role": "user",
            "content": "Natalia sold clips to 48 of her friends in April. How many did she sell in May?",
        }
    ]
    text = format_chat(smollm.tokenizer, msgs, "She sold half as many clips in May, so 48 / 2 = 24.").text
    enc = smollm.tokenizer(text, return_tensors="pt", add_special_tokens=False)
    h = smollm.residuals(enc["input_ids"], enc["attention_mask"], loaded.layer)[0, 1:]  # skip position 0
    h = h[h.norm(dim=-1) < 10 * h.norm(dim=-1).median()]
    x_hat = loaded.decode(loaded.encode(h))
    fvu = float((h - x_hat).pow(2).sum() / (h - h.mean(0)).pow(2).sum())
    assert fvu < 0.4, fvu
