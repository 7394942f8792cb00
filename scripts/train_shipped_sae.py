"""Reproduce the SAE shipped for SmolLM2-135M-Instruct, on CPU, from scratch.

Stages (each resumable; rerunning skips finished work):

1. ``mix``     the text mix: benchmark conversations + generic English as chat turns, and a held-out split;
2. ``own``     the model's own greedy responses to a sample of benchmark prompts (train and held-out);
3. ``cache``   residuals of the candidate layers in one forward pass (train, own-response and held-out caches);
4. ``pilot``   small SAEs per candidate layer on the first tokens, compared at the same k;
5. ``train``   the shipped SAE on the chosen layer (``--layer``, default: the pilot's choice);
6. ``card``    metrics, top contexts of 20 random latents, MODEL_CARD.md, copy into the package.

Usage: ``python scripts/train_shipped_sae.py --data-dir BENCHMARKS [--work DIR] [--stages mix,cache,...]``.
BENCHMARKS holds the ten benchmarks' original files, one folder each (as for ``cgaps run --data-dir``).
Generic English comes from three Debian packages (``apt-get install wordnet-base fortunes
debian-reference-en``); the options ``--wordnet``, ``--fortunes`` and ``--debian-reference`` default to
where Debian installs them, and a source that is absent is skipped with a warning.
Corpora and caches live in ``--work`` (default ``$CGAPS_CACHE/sae-smollm2``), never in the repository.

This file holds only the recipe: the stages, their order and their numbers. The code lives in
:mod:`cgaps.sae.training` (corpus, cache, train, measure); the training defaults are
:class:`~cgaps.sae.training.train.TrainConfig`'s, which are this SAE's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import time
from collections import Counter
from pathlib import Path

import torch

from cgaps.models import cache_dir, load_backend
from cgaps.rundir import write_json, write_text
from cgaps.sae.training import corpus
from cgaps.sae.training.cache import build_cache, load_layer, load_manifest
from cgaps.sae.training.measure import (
    measure_sae,
    token_concentration,
    token_context,
    top_activations,
)
from cgaps.sae.training.train import TrainConfig, save_sae, to_sae, train_sae

CAPS = {
    "gsm8k": 1319,
    "math": 2500,
    "agieval": 1500,
    "logicbench": 1500,
    "socialiqa": 1954,
    "bbq": 2500,
    "winogrande": 1267,
    "crows_pairs": 1508,
    "vectara": 400,
    "nq_open": 3610,
    "wordnet": 2500,
    "fortunes": 3000,
    "debian_reference": 201,
}
# where Debian's packages install the generic-English sources (the options' defaults)
DEBIAN = {
    "wordnet": ("wordnet-base", Path("/usr/share/wordnet")),
    "fortunes": ("fortunes", Path("/usr/share/games/fortunes")),
    "debian_reference": (
        "debian-reference-en",
        Path("/usr/share/debian-reference/debian-reference.en.txt.gz"),
    ),
}
CANDIDATE_LAYERS = [12, 15, 18, 21]
HELDOUT_FRACTION = 0.04
N_GENERATED = 640  # the model's own responses to training-split benchmark prompts (~2.5 s each on 2 cores)
N_GENERATED_HELDOUT = 64  # ... and to held-out prompts not used for the held-out cache
OWN_MAX_NEW_TOKENS = 160
TRAIN_TOKENS = 2_200_000
HELDOUT_CONVERSATIONS = 300
CE_CONVERSATIONS = 60
EXTRACT_BF16 = True
PILOT_TOKENS = 200_000
STATS_TOKENS = 400_000  # content tokens behind the shipped latent statistics
# the pilot differs from the final SAE (TrainConfig's defaults) only in these
PILOT = TrainConfig(width=4096, batch_size=1024, lr=5e-4, warmup_steps=30, epochs=1.0, dead_tokens=100_000)
MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"

log = logging.getLogger("train_shipped_sae")


def stage_mix(work: Path, data_dir: Path, generic: dict[str, Path | None], seed: int) -> None:
    """The text mix (benchmark conversations + generic English) and its held-out split."""
    if (work / "train.jsonl").exists():
        return
    mix = corpus.build_mix(data_dir, CAPS, generic=generic, seed=seed)
    n_held = int(len(mix) * HELDOUT_FRACTION)
    held, train = mix[:n_held], mix[n_held:]
    corpus.write_jsonl(work / "heldout.jsonl", held)
    corpus.write_jsonl(work / "train.jsonl", train)


def stage_own(
    work: Path, backend, seed: int, n_train: int = N_GENERATED, n_held: int = N_GENERATED_HELDOUT
) -> None:
    """The model's own greedy responses to benchmark prompts: closest to what CG analyses.

    Training prompts come from the training split, held-out ones from the held-out split (a second
    held-out FVU on the model's own text). Written in chunks, so a killed run resumes."""
    jobs = [
        ("own_train.jsonl", corpus.read_jsonl(work / "train.jsonl"), n_train),
        ("own_heldout.jsonl", corpus.read_jsonl(work / "heldout.jsonl")[HELDOUT_CONVERSATIONS:], n_held),
    ]
    for name, convs, n in jobs:
        corpus.own_responses(
            backend,
            corpus.user_turns(convs, n, seed),
            work / name,
            max_new_tokens=OWN_MAX_NEW_TOKENS,
            log_progress=log.info,
        )


def stage_cache(work: Path, backend, train_tokens: int = TRAIN_TOKENS) -> None:
    train = corpus.read_jsonl(work / "train.jsonl")
    held = corpus.read_jsonl(work / "heldout.jsonl")
    mix = dict(Counter(c["source"] for c in train))
    # held-out first, with the float32 model users run on CPU; it fixes the outlier rule (K x its
    # shard-0 median) that the training cache then reuses
    held = held[:HELDOUT_CONVERSATIONS]
    m2 = build_cache(
        backend,
        held,
        work / "cache_heldout",
        CANDIDATE_LAYERS,
        text_mix={"heldout": len(held)},
        progress=_ticker("cache heldout", None),
    )
    log.info("heldout cache: %s", m2["counts"])
    limits = m2["exclusion"]["max_norm"]
    own_held = corpus.read_jsonl(work / "own_heldout.jsonl")
    m3 = build_cache(
        backend,
        own_held,
        work / "cache_heldout_own",
        CANDIDATE_LAYERS,
        norm_limits=limits,
        text_mix={"own_responses": len(own_held)},
        progress=_ticker("cache heldout own", None),
    )
    log.info("heldout own-response cache: %s", m3["counts"])
    # the training caches are extracted in bfloat16 (2x faster on CPUs with AMX/AVX512-BF16) by a
    # second copy of the model, so ``backend`` stays float32 for the held-out FVU and the CE splice,
    # as users run it. The copy is cast with .to(), as the shipped SAE's cache was: that also casts
    # the rotary inv_freq buffer, which loading with dtype="bfloat16" keeps in float32 (residuals
    # then differ by ~0.3%).
    extractor = backend
    if EXTRACT_BF16:
        extractor = load_backend("embedded", device="cpu", dtype="float32")
        extractor.model.to(torch.bfloat16)
    t0 = time.time()
    m = build_cache(
        extractor,
        train,
        work / "cache_train",
        CANDIDATE_LAYERS,
        max_tokens=train_tokens,
        norm_limits=limits,
        text_mix={"conversations_available": mix},
        progress=_ticker("cache train", train_tokens),
    )
    log.info("train cache: %s in %.0fs", m["counts"], time.time() - t0)
    own = corpus.read_jsonl(work / "own_train.jsonl")
    m4 = build_cache(
        extractor,
        own,
        work / "cache_own",
        CANDIDATE_LAYERS,
        norm_limits=limits,
        text_mix={"own_responses": len(own)},
        progress=_ticker("cache own", None),
    )
    log.info("own-response cache: %s", m4["counts"])


def stage_pilot(work: Path) -> dict:
    path = work / "pilot.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for layer in CANDIDATE_LAYERS:
        if str(layer) in results:
            continue
        acts, meta = load_layer(work / "cache_train", layer, max_tokens=PILOT_TOKENS, with_meta=True)
        t0 = time.time()
        res = train_sae(acts, work / f"pilot_l{layer}", PILOT, log=log.info)
        sae = to_sae(res, PILOT, layer=layer, model_name=MODEL_NAME)
        m = measure_sae(sae, load_layer(work / "cache_heldout", layer))
        vals, rows = top_activations(sae, acts, 10)
        results[str(layer)] = {
            "heldout_fvu": m["fvu"],
            "l0": m["l0"],
            "dead_frac": float((vals[:, 0] == 0).float().mean()),
            "token_concentration_top10": token_concentration(vals, rows, meta["token"]),
            "train_tokens": len(acts),
            "seconds": time.time() - t0,
        }
        log.info("pilot layer %d: %s", layer, results[str(layer)])
        write_json(results, path)
    return results


def choose_layer(results: dict) -> int:
    """Two-thirds depth (the paper's choice) unless its pilot FVU is > 0.03 worse than the best candidate;
    then the deepest candidate within 0.03 of the best."""
    best = min(r["heldout_fvu"] for r in results.values())
    ok = [
        int(layer)
        for layer, r in results.items()
        if r["heldout_fvu"] <= best + 0.03 and r["dead_frac"] <= 0.1
    ]
    target = 20
    return min(ok, key=lambda layer: (abs(layer - target), -layer))


def training_tokens(work: Path, layer: int):
    """The training tokens (the mix's cache, then the own-response cache), their metadata with
    conversation ids into the returned list of conversations, and how many tokens are the mix's."""
    acts, meta = load_layer(work / "cache_train", layer, with_meta=True)
    n_mix = len(acts)
    convs = corpus.read_jsonl(work / "train.jsonl")
    own = work / "cache_own"
    if own.exists():
        acts2, meta2 = load_layer(own, layer, with_meta=True)
        meta2 = {**meta2, "conv": meta2["conv"] + len(convs)}
        acts = torch.cat([acts, acts2])
        meta = {k: torch.cat([meta[k], meta2[k]]) for k in meta}
        convs = convs + corpus.read_jsonl(work / "own_train.jsonl")
    return acts, meta, convs, n_mix


def stage_train(work: Path, layer: int, epochs: float) -> None:
    acts = training_tokens(work, layer)[0]
    cfg = TrainConfig(epochs=epochs)
    res = train_sae(acts, work / f"final_l{layer}", cfg, log=log.info)
    # seconds: the training time of the steps kept, over every resumed run
    torch.save(
        {"result": res, "config": dataclasses.asdict(cfg), "layer": layer, "tokens": len(acts)},
        work / f"final_l{layer}" / "result.pt",
    )
    log.info(
        "trained layer %d: %d steps in %.0fs (resumed at steps %s)",
        layer,
        res["step"],
        res["seconds"],
        res["resumed_at"],
    )


def stage_stats(work: Path, backend, layer: int, tokens: int = STATS_TOKENS) -> Path:
    """Per-latent activation statistics of the shipped SAE (max and firing frequency), beside its
    weights: the concept scale m_c that scoring uses instead of each suite's own max.

    Measured with the float32 model users run on CPU, on the first ``tokens`` content tokens of
    the training mix (the model's own responses first when the own stage has run), under
    the outlier limit the SAE was trained with (metrics.json's exclusion)."""
    from cgaps.sae import embedded_sae_dir, load_sae, write_latent_stats
    from cgaps.sae.training.metrics import latent_stats

    folder = embedded_sae_dir()
    limits = json.loads((folder / "metrics.json").read_text())["exclusion"]["max_norm"]
    own = work / "own_train.jsonl"  # the own stage's responses, when it has run
    convs = (corpus.read_jsonl(own) if own.exists() else []) + corpus.read_jsonl(work / "train.jsonl")
    manifest = build_cache(
        backend,
        convs,
        work / "cache_stats",
        [layer],
        max_tokens=tokens,
        norm_limits={str(layer): limits[str(layer)]},
        text_mix=dict(Counter(c.get("source", "own") for c in convs)),
        progress=_ticker("stats cache", tokens),
    )
    acts = load_layer(work / "cache_stats", layer, max_tokens=tokens)
    sae = load_sae("embedded", hidden_size=backend.hidden_size, n_layers=backend.n_layers)
    stats = latent_stats(sae, acts)
    n_conv = sum(s["conversations"] for s in manifest["shards"])
    path = write_latent_stats(
        folder,
        stats,
        {
            "corpus": f"the first {n_conv} conversations of the SAE's training mix"
            + (", own responses first" if own.exists() else ""),
            "tokens": str(len(acts)),
        },
    )
    log.info("wrote %s: %d tokens, %d latents never fired", path, len(acts), int((stats["max"] == 0).sum()))
    return path


def stage_card(work: Path, backend, layer: int, ship: bool = True) -> Path:
    """Save the shipped SAE (fp16), measure it as shipped, write metrics.json and MODEL_CARD.md."""
    import shutil
    import subprocess

    from cgaps.sae import load_sae

    saved = torch.load(work / f"final_l{layer}" / "result.pt", weights_only=False)
    cfg = TrainConfig(**saved["config"])
    name = f"smollm2-135m-instruct-resid-post-l{layer}-{cfg.width // 1024}k"
    folder = work / name
    train_manifest = load_manifest(work / "cache_train")
    held_manifest = load_manifest(work / "cache_heldout")
    sae = to_sae(
        saved["result"],
        cfg,
        layer=layer,
        model_name=MODEL_NAME,
        extra={
            "dataset_path": "cgaps recipe: benchmark-style chat conversations + generic English + SmolLM2's own responses (see MODEL_CARD.md)",
            "context_size": 512,
        },
    )
    save_sae(sae, folder, dtype="float16")
    shipped = load_sae(str(folder), hidden_size=backend.hidden_size, n_layers=backend.n_layers)
    held = load_layer(work / "cache_heldout", layer)
    held_own = load_layer(work / "cache_heldout_own", layer)
    acts, meta, train_convs, n_mix = training_tokens(work, layer)
    seconds = saved["result"]["seconds"]
    t0 = time.time()
    # dead latents over the mix's first 300k training tokens and every own-response token
    sub = torch.cat([torch.arange(min(300_000, n_mix)), torch.arange(n_mix, len(acts))])
    sub_acts, sub_meta = acts[sub], {k: v[sub] for k, v in meta.items()}
    # one encoding pass over these tokens gives both the top contexts and the dead latents
    # (a latent is dead when even its largest activation is 0)
    vals, rows = top_activations(shipped, sub_acts, 5)
    m = measure_sae(
        shipped,
        held,
        reader=backend,
        conversations=corpus.read_jsonl(work / "heldout.jsonl")[:HELDOUT_CONVERSATIONS][:CE_CONVERSATIONS],
        layer=layer,
        max_norm=held_manifest["exclusion"]["max_norm"][str(layer)],
        mean_act=held.float().mean(0),
    )
    own = measure_sae(shipped, held_own)
    metrics = {
        "layer": layer,
        "width": cfg.width,
        "k": cfg.k,
        "architecture": "topk",
        "train_tokens": len(acts),
        "epochs": cfg.epochs,
        "steps": saved["result"]["step"],
        "train_seconds": seconds,
        "resumed_at": saved["result"]["resumed_at"],
        "train_tokens_per_second": saved["result"]["step"] * cfg.batch_size / seconds,
        "heldout_conversations": held_manifest["counts"]["conversations"],
        "heldout_tokens": len(held),
        "heldout_fvu": m["fvu"],
        "l0": m["l0"],
        "heldout_own_fvu": own["fvu"],
        "heldout_own_l0": own["l0"],
        "heldout_own_tokens": len(held_own),
        "heldout_own_conversations": load_manifest(work / "cache_heldout_own")["counts"]["conversations"],
        "dead_frac": float((vals[:, 0] == 0).float().mean()),
        "dead_tokens_checked": len(sub_acts),
        "train_fvu_first_50k": measure_sae(shipped, acts[:50_000])["fvu"],
        **{k: v for k, v in m.items() if k.startswith("ce_")},
        "exclusion": held_manifest["exclusion"],
        "train_cache": {
            k: train_manifest[k] for k in ("settings", "counts", "text_mix") if k in train_manifest
        },
        "own_cache": {
            k: v for k, v in load_manifest(work / "cache_own").items() if k in ("settings", "counts")
        },
        "history": saved["result"]["history"],
    }
    metrics["metric_seconds"] = time.time() - t0
    write_json(metrics, folder / "metrics.json")
    log.info(
        "metrics: %s", {k: v for k, v in metrics.items() if k not in ("history", "train_cache", "exclusion")}
    )
    alive = (vals[:, 0] > 0).nonzero().squeeze(1).tolist()
    latents = sorted(random.Random(0).sample(alive, 20))
    contexts = {}
    for c in latents:
        contexts[c] = [
            (
                float(v),
                token_context(
                    backend.tokenizer,
                    train_convs[int(sub_meta["conv"][i])]["messages"],
                    int(sub_meta["pos"][i]),
                ),
                train_convs[int(sub_meta["conv"][i])]["source"],
            )
            for v, i in zip(vals[c], rows[c], strict=True)
            if v > 0
        ]
    write_json(contexts, work / "top_contexts.json")

    pilot = json.loads((work / "pilot.json").read_text())
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    src_counts: dict[str, int] = {}
    tokens_by_source: dict[str, int] = {}
    for i, n in zip(*torch.unique(meta["conv"], return_counts=True), strict=True):
        src = train_convs[int(i)]["source"]
        src_counts[src] = src_counts.get(src, 0) + 1
        tokens_by_source[src] = tokens_by_source.get(src, 0) + int(n)
    card = _card(
        name, layer, cfg, metrics, pilot, src_counts, tokens_by_source, contexts, commit, train_manifest
    )
    write_text(card, folder / "MODEL_CARD.md")
    if not ship:
        return folder
    dest = Path(__file__).resolve().parents[1] / "src" / "cgaps" / "assets" / "sae" / name
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(folder, dest)
    log.info("shipped %s", dest)
    return dest


def _card(name, layer, cfg, m, pilot, src_counts, tokens_by_source, contexts, commit, train_manifest) -> str:
    lines = [
        f"# {name}",
        "",
        f"A TopK sparse autoencoder (k = {cfg.k}, {cfg.width} latents) on the residual stream of",
        f"[SmolLM2-135M-Instruct]({'https://huggingface.co/' + MODEL_NAME}) after block {layer}",
        f"(`blocks.{layer}.hook_resid_post`, of 30 blocks), in sae-lens format: `SAE.load_from_disk(folder)`",
        "gives a `TopKSAE` whose `decode(encode(x))` reconstructs raw residuals (the training input scale is",
        "folded into the weights; decoder rows have unit norm; activations are in residual-norm units).",
        "It is the SAE `cgaps run` uses by default with the embedded model (`--sae embedded`).",
        "",
        "## Metrics (as shipped: float16 weights, evaluated in float32)",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| held-out FVU ({m['heldout_tokens']:,} content tokens of {m['heldout_conversations']} held-out conversations) | {m['heldout_fvu']:.4f} |",
        f"| held-out FVU on the model's own responses ({m['heldout_own_tokens']:,} content tokens of {m['heldout_own_conversations']} held-out prompts and SmolLM2's answers) | {m['heldout_own_fvu']:.4f} |",
        f"| FVU on the first 50k training tokens | {m['train_fvu_first_50k']:.4f} |",
        f"| L0 (mean active latents per token) | {m['l0']:.1f} |",
        f"| dead latents (never fire on {m['dead_tokens_checked']:,} training tokens: the mix's first 300k and every own-response token) | {m['dead_frac']:.2%} |",
        f"| next-token CE, clean (nats/token, {m['ce_tokens']:,} held-out content tokens) | {m['ce_clean']:.4f} |",
        f"| CE with the reconstruction spliced in at layer {layer} (content tokens) | {m['ce_sae']:.4f} |",
        f"| **CE increase** | **{m['ce_increase']:.4f}** |",
        f"| CE with the mean activation spliced in (reference) | {m['ce_mean_ablation']:.4f} |",
        f"| CE loss recovered | {m['ce_loss_recovered']:.2%} |",
        f"| training throughput | {m['train_tokens_per_second']:.0f} tokens/s ({m['steps']} steps in {m['train_seconds'] / 60:.1f} min on 2 CPU cores"
        + (
            f"; killed and resumed from the checkpoint at step {', '.join(map(str, m['resumed_at']))}"
            if m.get("resumed_at")
            else ""
        )
        + ") |",
        "",
        "Held-out and CE tokens follow the recorded exclusion rule: "
        + m["exclusion"]["rule"]
        + f"; K = {m['exclusion']['K']}, max norm at layer {layer} = {m['exclusion']['max_norm'][str(layer)]:.1f}"
        + f" (median {m['exclusion']['median_norm'][str(layer)]:.2f}).",
        "",
        "## Data",
        "",
        f"{m['train_tokens']:,} content tokens (chat scaffold, BOS and default system prompt excluded) of",
        "single-turn chat conversations rendered with SmolLM2's chat template, truncated at 512 tokens:",
        "benchmark-style conversations read from the paper's ten benchmarks' original files (question as",
        "the user turn, the worked solution or gold answer as the assistant turn) and generic English from",
        "Debian packages wrapped as chat turns (WordNet glosses, `fortunes` quotations, the Debian Reference),",
        f"plus SmolLM2's own greedy answers (up to {OWN_MAX_NEW_TOKENS} new tokens) to {N_GENERATED} benchmark prompts sampled",
        "from the training split (`own_responses`): the kind of text CG analyses.",
        "The training cache was extracted with the model in bfloat16; held-out residuals and the CE splice use float32.",
        "",
        "| source | conversations | content tokens |",
        "| --- | ---: | ---: |",
    ]
    for src in sorted(src_counts, key=lambda s: -tokens_by_source[s]):
        lines.append(f"| {src} | {src_counts[src]:,} | {tokens_by_source[src]:,} |")
    notes = []
    if m["train_tokens"] < TRAIN_TOKENS:
        notes.append(
            f"The recipe's default is {TRAIN_TOKENS:,} training tokens; this SAE saw {m['train_tokens']:,} "
            "(the extraction was cut short to fit the CPU time available when it was trained)."
        )
    if "own_responses" not in src_counts:
        notes.append("The mix holds no responses generated by SmolLM2 itself (`N_GENERATED = 0`).")
    outliers = train_manifest.get("counts", {}).get("outliers", 0)
    notes.append(
        f"The outlier rule dropped {outliers} of {m['train_tokens'] + outliers:,} training content tokens: once "
        "position 0 and the template scaffold are excluded, SmolLM2's huge-norm tokens are gone."
    )
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    lines += [
        "",
        f"Training: {cfg.epochs:g} epochs, batch {cfg.batch_size} tokens, Adam lr {cfg.lr:g} (warm-up {cfg.warmup_steps} steps,",
        f"linear decay over the last {cfg.decay_fraction:.0%}), AuxK (k_aux = {cfg.aux_k}, coefficient {cfg.aux_coef:g},",
        f"dead after {cfg.dead_tokens:,} tokens), seed {cfg.seed}, large matmuls in {cfg.matmul_dtype}.",
        "",
        "## Reproduce",
        "",
        "```",
        "apt-get install -y wordnet-base fortunes debian-reference-en",
        "nice -n 10 .venv/bin/python scripts/train_shipped_sae.py --data-dir BENCHMARKS   # all stages, CPU",
        f"# or only the final SAE on the chosen layer: --stages mix,own,cache,train,card --layer {layer}",
        "```",
        "",
        f"(code at commit {commit}). `cgaps train-sae CONVERSATIONS.jsonl --layer L --out DIR` trains one on any model.",
        "",
        "## Layer choice (pilot)",
        "",
        f"Pilot SAEs ({PILOT.width} latents, k = {PILOT.k}, {PILOT_TOKENS:,} training tokens each, same data),",
        "held-out FVU, dead fraction on the pilot tokens, and token concentration (mean share of a latent's",
        "top-10 contexts that are the same token: 1.0 = a token detector):",
        "",
        "| layer | held-out FVU | L0 | dead | token concentration |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for layer_, r in sorted(pilot.items(), key=lambda kv: int(kv[0])):
        lines.append(
            f"| {layer_} | {r['heldout_fvu']:.4f} | {r['l0']:.1f} | {r['dead_frac']:.2%} | {r['token_concentration_top10']:.3f} |"
        )
    lines += [
        "",
        "Rule: two-thirds depth (layer 20, the paper's choice for its models) unless a candidate's pilot FVU is",
        f"more than 0.03 better; then the deepest candidate within 0.03 of the best. Chosen: layer {layer}.",
        "",
        "## Top contexts of 20 random latents",
        "",
        "Firing token in `[[ ]]`, 12 tokens before and 4 after; over the mix's first 300k training tokens and every",
        "own-response token.",
        "",
    ]
    for c, ctx in contexts.items():
        lines.append(f"**latent {c}**")
        lines.append("")
        for v, text, src in ctx:
            lines.append(f"- {v:.2f} ({src}): `{text}`")
        lines.append("")
    return "\n".join(lines)


def _ticker(name: str, total: int | None):
    """A progress callback that logs the count and rate every 30 s (the recipe runs for hours)."""
    state = {"n": 0, "t0": time.time(), "last": 0.0}

    def advance(n: int) -> None:
        state["n"] += n
        now = time.time()
        if now - state["last"] > 30:
            state["last"] = now
            rate = state["n"] / max(now - state["t0"], 1e-9)
            log.info("%s: %d / %s tokens (%.0f tok/s)", name, state["n"], total, rate)

    return advance


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data-dir",
        type=Path,
        help="folder with the ten benchmarks' original files, one folder each (as for cgaps run "
        "--data-dir); needed by the mix stage",
    )
    for source, (package, path) in DEBIAN.items():
        ap.add_argument(
            "--" + source.replace("_", "-"),
            type=Path,
            default=path,
            help=f"{source} source (Debian package {package}; default: {path}); skipped when absent",
        )
    ap.add_argument("--work", type=Path, default=cache_dir() / "sae-smollm2")
    ap.add_argument("--stages", default="mix,own,cache,pilot,train,card,stats")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layer", type=int, default=None, help="skip the pilot's choice")
    ap.add_argument(
        "--train-tokens", type=int, default=TRAIN_TOKENS, help="content tokens in the training cache"
    )
    ap.add_argument(
        "--epochs", type=float, default=TrainConfig().epochs, help="passes of the final SAE over the cache"
    )
    args = ap.parse_args()
    if "mix" in args.stages.split(",") and args.data_dir is None:
        ap.error("the mix stage needs --data-dir (the benchmarks' original files)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    stages = args.stages.split(",")
    backend = load_backend("embedded", device="cpu", dtype="float32")
    if "mix" in stages:
        generic = {source: getattr(args, source) for source in DEBIAN}
        stage_mix(args.work, args.data_dir, generic, args.seed)
    if "own" in stages:
        stage_own(args.work, backend, args.seed)
    if "cache" in stages:
        stage_cache(args.work, backend, args.train_tokens)
    if "pilot" in stages:
        stage_pilot(args.work)
    layer = args.layer
    if layer is None and ("train" in stages or "card" in stages or "stats" in stages):
        pilot = json.loads((args.work / "pilot.json").read_text())
        layer = choose_layer(pilot)
        log.info("chosen layer %d", layer)
    if "train" in stages:
        stage_train(args.work, layer, args.epochs)
    if "card" in stages:
        stage_card(args.work, backend, layer)
    if "stats" in stages:
        stage_stats(args.work, backend, layer)


if __name__ == "__main__":
    main()
