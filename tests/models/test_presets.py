"""The paper's presets (configs/*.yaml): valid configs, and their SAE formats work end to end on tiny stand-ins."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cgaps.config import load_yaml
from helpers import TINY_HIDDEN, make_standin, preset_standin_spec

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PRESETS = {
    "gemma2-2b-it.yaml": ("gemma2", "jumprelu", 20),
    "llama31-8b-instruct.yaml": ("llama", "standard", 19),
}


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_is_a_valid_config_of_a_known_release(name):
    import yaml

    cfg = load_yaml(CONFIGS / name)
    assert cfg.dtype == "bfloat16" and cfg.device == "auto"
    spec = preset_standin_spec(yaml.safe_load((CONFIGS / name).read_text()))
    assert (spec["architecture"], spec["sae_format"], spec["layer"]) == PRESETS[name]
    assert cfg.layer == spec["layer"]


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_standin_runs_load_sae_capture_encode(name, tmp_path):
    from sae_lens import JumpReLUSAE, StandardSAE

    from cgaps.models import format_chat, load_backend
    from cgaps.sae import load_sae

    cfg = load_yaml(CONFIGS / name)
    model_dir, sae_dir = make_standin(CONFIGS / name, tmp_path)
    backend = load_backend(str(model_dir), device="cpu", dtype="float32")
    assert backend.hidden_size == TINY_HIDDEN and backend.n_layers == cfg.layer + 1
    loaded = load_sae(
        str(sae_dir), hidden_size=backend.hidden_size, n_layers=backend.n_layers, layer=cfg.layer
    )
    assert loaded.layer == cfg.layer
    assert isinstance(loaded.sae, JumpReLUSAE if PRESETS[name][1] == "jumprelu" else StandardSAE)
    assert loaded.sae.cfg.apply_b_dec_to_input is False
    text = format_chat(
        backend.tokenizer, [{"role": "user", "content": "What is two plus two?"}], "Four."
    ).text
    enc = backend.tokenizer(text, return_tensors="pt", add_special_tokens=False)
    h = backend.residuals(enc["input_ids"], enc["attention_mask"], loaded.layer)
    assert h.shape == (1, enc["input_ids"].shape[1], TINY_HIDDEN)
    f = loaded.sae.encode(h[0])
    assert f.shape == (h.shape[1], loaded.width) and (f >= 0).all() and (f > 0).any()
    # the stand-in SAE encodes as its architecture says (plain reference)
    s = loaded.sae
    pre = h[0] @ s.W_enc + s.b_enc
    ref = pre * (pre > s.threshold) if PRESETS[name][1] == "jumprelu" else torch.relu(pre)
    torch.testing.assert_close(f, ref)
