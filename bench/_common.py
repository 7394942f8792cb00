"""Shared pieces of the benchmarks: timing, the suite they run on, random-weight stand-ins.

Timings on a shared machine are noisy, so every benchmark runs the things it compares in one
process, interleaved batch by batch (A B C, B C A, C A B, ...), and reports *ratios*: a burst
of load from another process then slows all of them alike instead of one.

Nothing here imports sae-lens, gguf or datasets: ``bench/gpu.sh`` runs these scripts on a
machine with only torch, transformers, safetensors, pyarrow, pandas, scipy, typer and rich.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# spinning OpenMP threads collapse under shared cores (as cgaps.cli.main sets it)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

HERE = Path(__file__).resolve().parent
CONFIGS = HERE / "model_configs.json"

WORDS = [
    "the",
    "model",
    "reads",
    "each",
    "question",
    "carefully",
    "and",
    "answers",
    "with",
    "a",
    "short",
    "explanation",
    "before",
    "the",
    "final",
    "number",
    "so",
    "that",
    "the",
    "grader",
    "can",
    "find",
    "it",
    "at",
    "the",
    "end",
    "of",
    "the",
    "response",
    "while",
    "the",
    "reader",
    "keeps",
    "every",
    "token",
    "of",
    "it",
]


def sync(device: str) -> None:
    """Wait for queued GPU work, so a timer measures the work and not its launch."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def interleaved(
    tasks: dict[str, Callable[[Any], Any]], units: Sequence[Any], device: str, rounds: int = 1
) -> dict[str, float]:
    """Seconds spent by each task over all ``units``, the tasks run one after another on each
    unit in a rotating order (see the module docstring)."""
    names = list(tasks)
    spent = dict.fromkeys(names, 0.0)
    k = 0
    for _ in range(rounds):
        for unit in units:
            order = names[k % len(names) :] + names[: k % len(names)]
            k += 1
            for name in order:
                sync(device)
                t0 = time.perf_counter()
                tasks[name](unit)
                sync(device)
                spent[name] += time.perf_counter() - t0
    return spent


def probe_items(n: int, max_words: int, seed: int = 0) -> Any:
    """``n`` probe-suite items with synthetic responses of 0..max_words words (mixed lengths)."""
    import pandas as pd

    from cgaps.items.probes import load_probes

    probes = load_probes(seed=seed)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(probes), size=min(n, len(probes)), replace=False)
    items = pd.DataFrame([probes[i] for i in sorted(pick)])
    items["response"] = [
        " ".join(rng.choice(WORDS, size=int(rng.integers(0, max_words + 1)))) for _ in range(len(items))
    ]
    return items


def model_config(name: str, tiny: bool = False) -> dict[str, Any]:
    """A real model's config (``model_configs.json``); ``tiny``: narrow and shallow, with the real
    vocabulary (``--tiny``, a CPU smoke test of the same code)."""
    cfg = dict(json.loads(CONFIGS.read_text())[name])
    if tiny:
        cfg.update(
            hidden_size=64,
            intermediate_size=128,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            num_hidden_layers=4,
        )
    return cfg


def synthetic_dtype(dtype: str, device: str) -> str:
    """The dtype of a random-weight model: ``auto`` is bfloat16 on CUDA, float32 elsewhere."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if device.startswith("cuda") else "float32"


def random_model(config: dict[str, Any], device: str, dtype: str) -> Any:
    """A random-weight causal LM from a config dict (the weights' values do not change speed)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    hf_cfg = AutoConfig.for_model(**cfg)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(hf_cfg, dtype=getattr(torch, dtype))
    return model.eval()


class PlainSAE:
    """A random TopK SAE in plain torch (no sae-lens), as an :class:`cgaps.seams.SAEEncoder`:
    the encoder matmul and top-k selection of sae-lens's TopK SAE."""

    def __init__(self, d_in: int, width: int, layer: int, device: str, dtype: Any, k: int = 64):
        import torch

        gen = torch.Generator().manual_seed(1)
        self.W_enc = (torch.randn(d_in, width, generator=gen) / d_in**0.5).to(device=device, dtype=dtype)
        self.b_enc = torch.zeros(width, device=device, dtype=dtype)
        self.b_dec = torch.zeros(d_in, device=device, dtype=dtype)
        self.k, self.width, self.layer = k, width, layer
        self.sae_id, self.hook_name = f"random-topk-{width}", f"blocks.{layer}.hook_resid_post"
        self.fingerprint = "random"

    def encode(self, residuals: Any) -> Any:
        import torch

        with torch.no_grad():
            pre = (residuals.to(self.W_enc.dtype) - self.b_dec) @ self.W_enc + self.b_enc
            top = torch.topk(pre, self.k, dim=-1)
            out = torch.zeros_like(pre).scatter_(-1, top.indices, torch.relu(top.values))
        return out.float().clamp(min=0)

    def decode(self, codes: Any) -> Any:
        raise NotImplementedError


def source_at(ref: str, into: Path) -> Path:
    """The ``src/`` folder of this repository at ``ref`` (a commit, branch or tag), extracted under
    ``into``: a baseline's code to run beside this checkout's (``--baseline REF``)."""
    import subprocess

    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(HERE.parent), "archive", "--format=tar", ref, "src"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def last_line(**figures: float) -> str:
    """The figures line every benchmark ends with: ``key=value`` pairs, 3 significant digits."""
    return " ".join(f"{k}={v:.3g}" for k, v in figures.items())
