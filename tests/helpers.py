"""Tiny random-weight stand-ins of real models and SAEs, saved to disk like the real ones.

``tiny_model`` builds a transformers causal LM of a given architecture with the embedded
SmolLM2 tokenizer (its chat template included); ``make_standin`` reads a preset YAML
(configs/*.yaml) and builds a stand-in of the preset's model architecture plus a random SAE in
the preset SAE's sae-lens format, with d_in = the tiny hidden size and the preset's hook layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

TINY_HIDDEN = 64


def embedded_tokenizer() -> Any:
    from transformers import AutoTokenizer

    from cgaps.errors import CGapsError
    from cgaps.models import resolve_model

    try:
        path, _ = resolve_model("embedded")
    except CGapsError as e:
        pytest.skip(f"no embedded tokenizer: {e}")
    return AutoTokenizer.from_pretrained(path)


def tiny_model(
    folder: Path, architecture: str = "llama", n_layers: int = 2, hidden: int = TINY_HIDDEN, seed: int = 0
) -> Path:
    """Save a random-weight causal LM (llama or gemma2) with the SmolLM2 tokenizer to ``folder``."""
    import torch
    from transformers import AutoModelForCausalLM, Gemma2Config, LlamaConfig

    tok = embedded_tokenizer()
    common = dict(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    if architecture == "llama":
        cfg = LlamaConfig(**common)
    elif architecture == "gemma2":
        cfg = Gemma2Config(**common, head_dim=hidden // 4, sliding_window=64)
    else:
        raise ValueError(architecture)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def random_sae(
    folder: Path,
    architecture: str,
    d_in: int,
    d_sae: int,
    layer: int,
    *,
    model_name: str = "tiny",
    apply_b_dec_to_input: bool = True,
    k: int = 8,
    seed: int = 0,
) -> Path:
    """Save a random sae-lens SAE (topk, jumprelu or standard) reading blocks.{layer}.hook_resid_post."""
    import torch
    from sae_lens import (
        JumpReLUSAE,
        JumpReLUSAEConfig,
        StandardSAE,
        StandardSAEConfig,
        TopKSAE,
        TopKSAEConfig,
    )

    kinds = {
        "topk": (TopKSAE, TopKSAEConfig, {"k": k}),
        "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig, {}),
        "standard": (StandardSAE, StandardSAEConfig, {}),
    }
    cls, cfg_cls, extra = kinds[architecture]
    cfg = cfg_cls(d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=apply_b_dec_to_input, **extra)
    cfg.metadata["hook_name"] = f"blocks.{layer}.hook_resid_post"
    cfg.metadata["model_name"] = model_name
    sae = cls(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name == "threshold":
                p.fill_(0.01)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    sae.save_model(folder)
    return folder


def preset_standin_spec(preset: dict[str, Any]) -> dict[str, Any]:
    """Architecture, SAE format and layer of a preset's real model and SAE (from sae-lens's own registry)."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    release, sae_id = preset["sae"].split("/", 1)
    lookup = get_pretrained_saes_directory()[release]
    model = preset["model"].lower()
    architecture = "gemma2" if "gemma-2" in model else "llama"
    # sae-lens's loaders: Gemma Scope -> jumprelu, Goodfire -> standard; both without b_dec on the input
    sae_format = "jumprelu" if release.startswith("gemma-scope") else "standard"
    return {
        "architecture": architecture,
        "sae_format": sae_format,
        "layer": int(preset["layer"]),
        "apply_b_dec_to_input": False,
        "release": release,
        "sae_id": sae_id,
        "repo_id": lookup.repo_id,
    }


def make_standin(preset_path: str | Path, tmp_path: Path) -> tuple[Path, Path]:
    """(model_dir, sae_dir): a tiny model of the preset's architecture deep enough for its layer, and a
    random SAE in the preset SAE's format at that layer with d_in = the tiny hidden size."""
    import yaml

    preset = yaml.safe_load(Path(preset_path).read_text())
    spec = preset_standin_spec(preset)
    model_dir = tiny_model(tmp_path / "model", spec["architecture"], n_layers=spec["layer"] + 1)
    sae_dir = random_sae(
        tmp_path / "sae",
        spec["sae_format"],
        TINY_HIDDEN,
        128,
        spec["layer"],
        model_name=preset["model"],
        apply_b_dec_to_input=spec["apply_b_dec_to_input"],
    )
    return model_dir, sae_dir
