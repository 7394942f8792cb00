"""SAE training on a tiny random Llama: cache -> train -> save -> sae-lens load -> reconstruct."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cgaps.errors import CGapsError
from cgaps.sae.training.cache import build_cache, load_layer, load_manifest, render
from cgaps.sae.training.train import TrainConfig, save_sae, to_sae, train_sae
from helpers import embedded_tokenizer, save_tiny_model

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

    folder = save_tiny_model(tmp_path_factory.mktemp("tiny") / "llama")
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


@pytest.mark.parametrize("damage", [b'{"settings": ', b"\xff\xfe", b"[]"])
def test_damaged_cache_manifest_is_a_one_line_error(backend, tmp_path, damage):
    from cgaps.errors import CGapsError

    build_cache(backend, CONVS[:8], tmp_path / "c", [1], shard_size=8)
    (tmp_path / "c" / "manifest.json").write_bytes(damage)
    with pytest.raises(CGapsError, match=r"manifest.json: .*delete .* to rebuild"):
        build_cache(backend, CONVS[:8], tmp_path / "c", [1], shard_size=8)
    with pytest.raises(CGapsError, match=r"manifest.json: .*delete .* to rebuild"):
        load_manifest(tmp_path / "c")


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
        matmul_dtype="float32",  # the exact path; test_bf16_matmuls_train_like_fp32 compares the two
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
    # what a kill during a checkpoint write leaves: the temporary file, removed at the next start
    stale = tmp_path / "resumed" / ".checkpoint.pt.12345.tmp"
    stale.write_bytes(b"half a checkpoint")
    resumed = train_sae(acts, tmp_path / "resumed", cfg)
    assert not stale.exists()
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


def _reference_ce(model, sae, conversations, layer, max_norm, mean_act):
    """Per conversation, no padding: CE on content targets with the splice written out token by token."""
    import torch.nn.functional as F

    totals = {"clean": 0.0, "sae": 0.0, "mean_ablation": 0.0}
    n_targets = 0
    spliced = []
    block = model.model.layers[layer]
    for c in conversations:
        ids, keep = render(embedded_tokenizer(), c["messages"], 512)
        targets = torch.tensor(ids[1:])[torch.tensor(keep[1:])]
        n_targets += len(targets)
        for kind in totals:

            def hook(_module, _inputs, out, kind=kind, keep=keep):
                h = (out[0] if isinstance(out, tuple) else out).clone()
                for t in range(h.shape[1]):
                    if keep[t] and (max_norm is None or float(h[0, t].norm()) <= max_norm):
                        spliced.append(kind)
                        if kind == "sae":
                            h[0, t] = sae.decode(sae.encode(h[0, t : t + 1]))[0]
                        else:
                            h[0, t] = mean_act
                return (h, *out[1:]) if isinstance(out, tuple) else h

            handle = block.register_forward_hook(hook) if kind != "clean" else None
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
            if handle is not None:
                handle.remove()
            totals[kind] += float(F.cross_entropy(logits[torch.tensor(keep[1:])], targets, reduction="sum"))
    return {f"ce_{k}": v / n_targets for k, v in totals.items()}, n_targets, spliced.count("sae")


@pytest.mark.integration
@pytest.mark.parametrize("limit", [False, True])
def test_ce_increase_matches_plain_reference(backend, cache, tmp_path, limit):
    """Batched, padded, spliced through the reader's logits_with_edit vs one conversation at a time."""
    from cgaps.sae.training.metrics import ce_increase, reconstruction_metrics

    acts = load_layer(cache, 1)
    cfg = _cfg()
    sae = to_sae(train_sae(acts, tmp_path / "run", cfg), cfg, layer=1, model_name="tiny")
    mean_act = acts.float().mean(0)
    # with a limit at the median norm, about half the content tokens keep their clean residual
    max_norm = float(acts.float().norm(dim=1).median()) if limit else None
    convs = CONVS[::7]  # lengths differ, so batches are padded
    m = ce_increase(backend, sae, convs, 1, max_norm=max_norm, batch_size=4, mean_act=mean_act)
    want, n_targets, spliced = _reference_ce(backend.model, sae, convs, 1, max_norm, mean_act)
    assert m["ce_tokens"] == n_targets > 50 and m["ce_clean"] > 0
    for key, value in want.items():
        assert m[key] == pytest.approx(value, rel=1e-6), key
    n_content = sum(sum(render(embedded_tokenizer(), c["messages"], 512)[1]) for c in convs)
    assert 0 < spliced <= n_content and (spliced < n_content) == limit
    assert m["ce_mean_ablation"] > m["ce_sae"] > m["ce_clean"]
    # float noise of batching is ~1e-6 nats; a splice on the wrong tokens moves this much more
    assert m["ce_increase"] == pytest.approx(want["ce_sae"] - want["ce_clean"], abs=1e-5)
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


@pytest.mark.integration
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
    assert (sae.cfg.d_sae, sae.cfg.k) == (64, 4)  # the generated --width / --k flags reached TrainConfig
    # latent statistics beside the weights: the max activation of each latent over the training
    # cache, which scoring reads as the concept scale
    from cgaps.sae import load_sae, read_latent_scale
    from cgaps.sae.training.metrics import latent_stats

    scale, source = read_latent_scale(str(out), 64)
    acts = load_layer(out.with_name(out.name + ".work") / "cache_train", 1)
    ref = latent_stats(load_sae(str(out), hidden_size=backend.hidden_size, n_layers=backend.n_layers), acts)
    np.testing.assert_allclose(scale, ref["max"].numpy(), rtol=1e-6)
    assert scale.max() > 0 and "tokens" in source
    with pytest.raises(CGapsError, match="one per latent"):
        read_latent_scale(str(out), 65)


# ---------------------------------------------------------------- one source of training defaults


def test_train_config_defaults_are_the_shipped_sae():
    """TrainConfig's defaults are the settings the shipped SAE was trained with (cfg, metrics, card)."""
    from cgaps.sae import ASSETS_DIR

    (folder,) = [p for p in ASSETS_DIR.iterdir() if p.is_dir()]
    sae_cfg = json.loads((folder / "cfg.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    card = " ".join((folder / "MODEL_CARD.md").read_text().split())
    cfg = TrainConfig()
    assert (cfg.width, cfg.k, cfg.epochs) == (sae_cfg["d_sae"], sae_cfg["k"], metrics["epochs"])
    assert metrics["steps"] == int(cfg.epochs * (metrics["train_tokens"] // cfg.batch_size))
    assert (
        f"batch {cfg.batch_size} tokens, Adam lr {cfg.lr:g} (warm-up {cfg.warmup_steps} steps, linear decay "
        f"over the last {cfg.decay_fraction:.0%}), AuxK (k_aux = {cfg.aux_k}, coefficient {cfg.aux_coef:g}, "
        f"dead after {cfg.dead_tokens:,} tokens), seed {cfg.seed}, large matmuls in {cfg.matmul_dtype}."
    ) in card


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"k": 0}, "k"),
        ({"width": 64, "k": 64}, "k"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"decay_fraction": 1.5}, "decay_fraction"),
        ({"lr": -1e-3}, "lr"),
        ({"matmul_dtype": "bfloat"}, "matmul_dtype"),
    ],
)
def test_train_config_errors_name_the_field(bad, field):
    from cgaps.errors import CGapsError

    with pytest.raises(CGapsError, match=f"field '{field}'") as e:
        TrainConfig(**bad)
    if field == "matmul_dtype":
        assert "bfloat16" in str(e.value)  # did you mean


def test_cli_train_sae_flags_are_the_config_fields():
    import dataclasses

    from typer.testing import CliRunner

    from cgaps.cli.main import app

    result = CliRunner().invoke(app, ["train-sae", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    help_text = " ".join(result.output.replace("│", " ").split())  # rich's box and line wraps removed
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in help_text, f.name
        assert f.metadata["help"] in help_text, f.name


# ---------------------------------------------------------------- measure_sae and its helpers


def test_measure_sae_matches_plain_references(backend, cache, tmp_path):
    from cgaps.sae.training.measure import measure_sae
    from cgaps.sae.training.metrics import ce_increase

    acts = load_layer(cache, 1)
    cfg = _cfg(epochs=1)
    sae = to_sae(train_sae(acts, tmp_path / "run", cfg), cfg, layer=1, model_name="tiny")
    held, train = acts[:300], acts[300:]
    mean = train[:100].float().mean(0)
    m = measure_sae(
        sae, held, dead_acts=train, reader=backend, conversations=CONVS[:4], layer=1, mean_act=mean
    )
    with torch.no_grad():
        x = held.float()
        f = sae.encode(x)
        fvu = float((x - sae.decode(f)).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
        dead = float(((sae.encode(train.float()) > 0).sum(0) == 0).float().mean())
    assert m["fvu"] == pytest.approx(fvu, rel=1e-4) and m["l0"] == pytest.approx(
        float((f > 0).sum(1).float().mean())
    )
    assert m["dead_frac"] == dead and m["dead_tokens_checked"] == len(train) and m["tokens"] == len(held)
    ce = ce_increase(backend, sae, CONVS[:4], 1, max_norm=None, mean_act=mean)
    assert {k: m[k] for k in ce} == ce
    assert "ce_increase" not in measure_sae(sae, held)  # no reader: reconstruction only


def test_top_activations_match_full_topk(cache, tmp_path):
    from cgaps.sae.training.measure import token_concentration, top_activations

    acts = load_layer(cache, 1)
    cfg = _cfg(epochs=1)
    sae = to_sae(train_sae(acts, tmp_path / "run", cfg), cfg, layer=1, model_name="tiny")
    vals, rows = top_activations(sae, acts, 5, batch_size=37)  # many chunks, one ragged
    with torch.no_grad():
        ref = sae.encode(acts.float()).T.topk(5, dim=1)
    torch.testing.assert_close(vals, ref.values)
    fired = vals > 0
    assert fired[:, 0].any()
    top = sae.encode(acts.float()).T.gather(1, rows)  # the rows returned hold the values returned
    torch.testing.assert_close(top, vals)
    # every latent's top contexts on one token id -> concentration 1
    assert token_concentration(vals, rows, torch.zeros(len(acts), dtype=torch.long)) == 1.0


# ---------------------------------------------------------------- the recipe's text


def test_text_mix_from_benchmark_loaders_and_given_paths(tmp_path, caplog):
    import logging
    from collections import Counter

    from cgaps.errors import CGapsError
    from cgaps.sae.training.corpus import build_mix

    data = tmp_path / "benchmarks"
    (data / "gsm8k").mkdir(parents=True)
    rows = [
        {"question": f"What is {i} + 1?", "answer": f"{i} + 1 = <<{i}+1={i + 1}>>{i + 1}\n#### {i + 1}"}
        for i in range(5)
    ]
    (data / "gsm8k" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    wordnet = tmp_path / "wordnet"
    wordnet.mkdir()
    for pos in ("noun", "verb", "adj", "adv"):
        lines = ["  1 license text"] + [
            f"{i:08d} 03 n 01 {pos}_word_{i} 0 000 | a {pos} gloss {i}" for i in range(7)
        ]
        (wordnet / f"data.{pos}").write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="cgaps.sae.training.corpus"):
        mix = build_mix(
            data, {"gsm8k": 3, "math": 5, "wordnet": 2, "fortunes": 4}, generic={"wordnet": wordnet}
        )
    assert Counter(c["source"] for c in mix) == {"gsm8k": 3, "wordnet": 2}
    assert "skipping math" in caplog.text and "skipping fortunes (no path given)" in caplog.text
    for c in mix:
        if c["source"] == "gsm8k":
            user, answer = (m["content"] for m in c["messages"])
            i = int(user.split()[2])
            assert answer == f"{i} + 1 = {i + 1}\nThe answer is {i + 1}"
        else:
            assert c["messages"][1]["content"].count("\n- ") == 5  # six glosses per conversation
    assert mix == build_mix(
        data, {"gsm8k": 3, "math": 5, "wordnet": 2, "fortunes": 4}, generic={"wordnet": wordnet}
    )
    with pytest.raises(CGapsError, match="unknown text-mix source 'gsm8kk'"):
        build_mix(data, {"gsm8kk": 1})


def test_own_responses_resume_after_a_kill(tmp_path):
    from cgaps.sae.training.corpus import own_responses, read_jsonl, user_turns

    convs = [{"source": "gsm8k", "messages": c["messages"]} for c in CONVS[:9]]
    convs.append({"source": "wordnet", "messages": [{"role": "user", "content": "words"}]})
    prompts = user_turns(convs, 50, seed=0)
    assert len(prompts) == 9 and all(len(p) == 1 and p[0]["role"] == "user" for p in prompts)

    class Echo:
        name = "echo"
        calls = 0
        kill_at: int | None = None

        def generate(self, conversations, max_new_tokens, batch_size, progress=None):
            Echo.calls += 1
            if Echo.calls == Echo.kill_at:
                raise KeyboardInterrupt
            return ["re: " + c[0]["content"] for c in conversations]

    path = tmp_path / "own.jsonl"
    Echo.kill_at = 2
    with pytest.raises(KeyboardInterrupt):
        own_responses(Echo(), prompts, path, max_new_tokens=8, chunk=4)
    assert len(read_jsonl(path)) == 4
    Echo.kill_at = None
    own_responses(Echo(), prompts, path, max_new_tokens=8, chunk=4)
    got = read_jsonl(path)
    assert [c["messages"][0] for c in got] == [p[0] for p in prompts]
    assert all(c["messages"][1]["content"] == "re: " + c["messages"][0]["content"] for c in got)
    assert Echo.calls == 2 + 2  # the rerun generated only the two missing chunks


@pytest.mark.integration
def test_benchmark_conversations_are_the_shipped_sae_mix(benchmarks_dir):
    """Read through the item loaders, the ten benchmarks give the conversations (content and order)
    that the recipe's own file parsers gave when the shipped SAE was trained."""
    import hashlib

    from cgaps.sae.training.corpus import BENCHMARK_CHATS, benchmark_conversations

    counts, digest = {}, hashlib.sha1()
    for name in BENCHMARK_CHATS:
        convs = benchmark_conversations(name, benchmarks_dir)
        counts[name] = len(convs)
        digest.update(json.dumps(convs, sort_keys=True).encode())
    assert counts == {
        "gsm8k": 1319,
        "math": 5000,
        "agieval": 3852,
        "logicbench": 2020,
        "socialiqa": 1954,
        "bbq": 8876,
        "winogrande": 1267,
        "crows_pairs": 1508,
        "vectara": 800,
        "nq_open": 3610,
    }
    assert digest.hexdigest()[:16] == "fd5ef0c8a90bd504"
