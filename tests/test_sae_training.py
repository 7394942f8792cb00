"""SAE training on a tiny random Llama: cache -> train -> save -> sae-lens load -> reconstruct."""

from __future__ import annotations

import json

import pytest
import torch

from cgaps.sae.training.cache import build_cache, load_layer, load_manifest, render
from cgaps.sae.training.train import TrainConfig, save_sae, to_sae, train_sae
from standins import embedded_tokenizer, tiny_model

CONVS = [
    {
        "source": "t",
        "messages": [
            {"role": "user", "content": f"Question {i}: what is {i} plus {i + 1}?"},
            {"role": "assistant", "content": f"It is {2 * i + 1}, because {i} and {i + 1} add up."},
        ],
    }
    for i in range(40)
]


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    from cgaps.models import load_backend

    folder = tiny_model(tmp_path_factory.mktemp("tiny") / "llama")
    return load_backend(str(folder), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def cache(backend, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache")
    build_cache(
        backend, CONVS, folder, [0, 1], shard_size=8, batch_size=4, norm_ratio=10.0, text_mix={"t": 40}
    )
    return folder


def test_render_keeps_content_only():
    tok = embedded_tokenizer()
    ids, keep = render(tok, CONVS[3]["messages"], 512)
    kept = tok.decode([i for i, k in zip(ids, keep, strict=True) if k])
    assert not keep[0]
    assert "Question 3" in kept and "It is 7" in kept
    assert "im_start" not in kept and "SmolLM" not in kept and "assistant" not in kept


def test_cache_manifest_and_resume(backend, cache, tmp_path):
    manifest = load_manifest(cache)
    assert manifest["complete"] and manifest["settings"]["layers"] == [0, 1]
    assert manifest["exclusion"]["K"] == 10.0 and set(manifest["exclusion"]["max_norm"]) == {"0", "1"}
    assert manifest["text_mix"] == {"t": 40} and len(manifest["shards"]) == 5
    acts, meta = load_layer(cache, 1, with_meta=True)
    assert acts.dtype == torch.float16 and acts.shape == (manifest["counts"]["tokens"], 64)
    assert (meta["pos"] > 0).all()
    # a run killed after two shards restarts at the next missing shard and ends identical
    partial = tmp_path / "partial"
    build_cache(
        backend, CONVS, partial, [0, 1], shard_size=8, batch_size=4, max_tokens=None, text_mix={"t": 40}
    )
    (partial / "shard_00003.safetensors").unlink()
    (partial / "shard_00004.safetensors").unlink()
    m = json.loads((partial / "manifest.json").read_text())
    m["shards"] = m["shards"][:3]
    m["complete"] = False
    (partial / "manifest.json").write_text(json.dumps(m))
    build_cache(backend, CONVS, partial, [0, 1], shard_size=8, batch_size=4, text_mix={"t": 40})
    torch.testing.assert_close(load_layer(partial, 1), acts)


def test_finished_cache_extended_after_a_kill(backend, cache, tmp_path):
    """A cache finished at a small max_tokens, extended, killed while extending, rerun: it completes."""
    full = load_layer(cache, 0)
    folder = tmp_path / "grow"
    small = build_cache(backend, CONVS, folder, [0, 1], shard_size=8, batch_size=4, max_tokens=1)
    assert small["complete"] and len(small["shards"]) == 1

    def killed_after_next_shard(n):
        if len(load_manifest(folder)["shards"]) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_cache(
            backend, CONVS, folder, [0, 1], shard_size=8, batch_size=4, progress=killed_after_next_shard
        )
    again = build_cache(backend, CONVS, folder, [0, 1], shard_size=8, batch_size=4)
    assert again["complete"] and len(again["shards"]) == 5
    assert again["counts"]["tokens"] == load_manifest(cache)["counts"]["tokens"]
    torch.testing.assert_close(load_layer(folder, 0), full)


def test_outliers_excluded_by_recorded_rule(backend, tmp_path):
    build_cache(backend, CONVS[:8], tmp_path / "c", [1], shard_size=8, norm_ratio=1.05)
    m = load_manifest(tmp_path / "c")
    acts = load_layer(tmp_path / "c", 1).float()
    assert m["counts"]["outliers"] > 0
    assert acts.norm(dim=1).max() <= m["exclusion"]["max_norm"]["1"] * 1.001


def _cfg(**kw):
    base = dict(
        width=128,
        k=4,
        batch_size=64,
        lr=3e-3,
        warmup_steps=5,
        epochs=3,
        aux_k=16,
        dead_tokens=500,
        checkpoint_every=1000,
    )
    return TrainConfig(**{**base, **kw})


def test_train_save_load_roundtrip(cache, tmp_path):
    from sae_lens import SAE, TopKSAE

    acts = load_layer(cache, 1)
    cfg = _cfg()
    result = train_sae(acts, tmp_path / "run", cfg)
    assert result["done"]
    sae = to_sae(result, cfg, layer=1, model_name="tiny")
    save_sae(sae, tmp_path / "sae", metrics={"fvu": 0.0})
    loaded = SAE.load_from_disk(tmp_path / "sae")
    assert isinstance(loaded, TopKSAE) and loaded.cfg.k == 4
    assert loaded.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
    x = acts[:200].float()
    with torch.no_grad():
        x_hat = loaded.decode(loaded.encode(x))
    fvu = float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    assert fvu < 0.6  # raw residuals: the input scale is folded into the weights
    # the same fit in the trainer's scaled units: folding changes nothing but the units
    s = result["scale"]
    p = result["params"]
    from cgaps.sae.training.train import topk_forward

    recon_scaled = topk_forward({k: v for k, v in p.items()}, x * s, cfg.k)[0]
    torch.testing.assert_close(x_hat, recon_scaled / s, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(loaded.W_dec.norm(dim=1), torch.ones(128))


def test_topk_encode_matches_plain_reference(cache, tmp_path):
    from sae_lens import SAE

    acts = load_layer(cache, 0)
    cfg = _cfg(epochs=1)
    save_sae(
        to_sae(train_sae(acts, tmp_path / "run", cfg), cfg, layer=0, model_name="tiny"), tmp_path / "sae"
    )
    sae = SAE.load_from_disk(tmp_path / "sae")
    x = acts[:50].float()
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    top = pre.topk(cfg.k, dim=-1)
    reference = torch.zeros_like(pre).scatter(1, top.indices, torch.relu(top.values))
    torch.testing.assert_close(sae.encode(x), reference)


def test_resume_gives_same_weights(cache, tmp_path):
    acts = load_layer(cache, 1)
    cfg = _cfg(checkpoint_every=7)
    full = train_sae(acts, tmp_path / "full", cfg)
    killed = train_sae(acts, tmp_path / "resumed", cfg, max_steps=11)
    assert not killed["done"] and killed["step"] == 11
    resumed = train_sae(acts, tmp_path / "resumed", cfg)
    assert resumed["done"]
    # the record says where it resumed, and its time adds the killed run's kept steps
    assert full["resumed_at"] == [] and killed["resumed_at"] == [] and resumed["resumed_at"] == [11]
    assert 0 < killed["seconds"] < resumed["seconds"]
    for key in full["params"]:
        torch.testing.assert_close(resumed["params"][key], full["params"][key])


def test_checkpoint_of_other_run_rejected(cache, tmp_path):
    from cgaps.errors import CGapsError

    acts = load_layer(cache, 1)
    train_sae(acts, tmp_path / "run", _cfg(), max_steps=2)
    with pytest.raises(CGapsError, match="checkpoint of another run"):
        train_sae(acts, tmp_path / "run", _cfg(seed=1))


def test_ce_increase_splice(backend, cache, tmp_path):
    from cgaps.sae.training.metrics import ce_increase, reconstruction_metrics

    acts = load_layer(cache, 1)
    cfg = _cfg()
    sae = to_sae(train_sae(acts, tmp_path / "run", cfg), cfg, layer=1, model_name="tiny")
    m = ce_increase(backend, sae, CONVS[:6], 1, max_norm=None, mean_act=acts.float().mean(0))
    assert m["ce_tokens"] > 50 and m["ce_clean"] > 0
    assert abs(m["ce_increase"] - (m["ce_sae"] - m["ce_clean"])) < 1e-9
    r = reconstruction_metrics(sae, acts)
    assert r["l0"] <= cfg.k and 0 <= r["fvu"] < 1


def test_bf16_matmuls_train_like_fp32(cache, tmp_path):
    from cgaps.sae.training.metrics import reconstruction_metrics

    acts = load_layer(cache, 1)
    fvu = {}
    for mm in ("float32", "bfloat16"):
        cfg = _cfg(matmul_dtype=mm)
        fvu[mm] = reconstruction_metrics(
            to_sae(train_sae(acts, tmp_path / mm, cfg), cfg, layer=1, model_name="t"), acts
        )["fvu"]
    assert abs(fvu["float32"] - fvu["bfloat16"]) < 0.05, fvu


def test_custom_backward_matches_autograd_reference():
    from cgaps.sae.training.train import topk_forward

    gen = torch.Generator().manual_seed(0)
    p = {
        "W_enc": torch.randn(32, 8, generator=gen),
        "b_enc": torch.randn(32, generator=gen) * 0.1,
        "W_dec": torch.randn(32, 8, generator=gen),
        "b_dec": torch.randn(8, generator=gen),
    }
    x = torch.randn(10, 8, generator=gen)
    with torch.enable_grad():
        fast = {k: v.clone().requires_grad_() for k, v in p.items()}
        (x - topk_forward(fast, x, 3)[0]).pow(2).sum().backward()
        ref = {k: v.clone().requires_grad_() for k, v in p.items()}
        pre = (x - ref["b_dec"]) @ ref["W_enc"].T + ref["b_enc"]
        top = pre.topk(3, dim=-1)
        acts = torch.zeros_like(pre).scatter(1, top.indices, torch.relu(top.values))
        (x - (acts @ ref["W_dec"] + ref["b_dec"])).pow(2).sum().backward()
    for key in p:
        torch.testing.assert_close(fast[key].grad, ref[key].grad)


def test_cli_train_sae_end_to_end(backend, tmp_path):
    from sae_lens import SAE
    from typer.testing import CliRunner

    from cgaps.cli.main import app

    model_dir = tmp_path / "model"
    backend.model.save_pretrained(model_dir)
    backend.tokenizer.save_pretrained(model_dir)
    data = tmp_path / "convs.jsonl"
    data.write_text("".join(json.dumps(c) + "\n" for c in CONVS))
    out = tmp_path / "sae"
    result = CliRunner().invoke(
        app,
        [
            "train-sae",
            str(data),
            "--out",
            str(out),
            "--model",
            str(model_dir),
            "--layer",
            "1",
            "--width",
            "64",
            "--k",
            "4",
            "--batch-size",
            "64",
            "--epochs",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"fvu", "l0", "dead_frac", "ce_increase", "ce_loss_recovered"} <= set(metrics)
    sae = SAE.load_from_disk(out)
    assert sae.cfg.metadata.hook_name == "blocks.1.hook_resid_post" and sae.cfg.dtype == "float16"
