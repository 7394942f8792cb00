"""Throughput of SAE training relative to the model's bare forward pass, on this machine.

Measures, back to back on the same random tokens: the full forward pass of the embedded model
(float32 and bfloat16), the cache extraction forward (stopping after block L), and one optimiser
step of the SAE trainer (width F, k, batch B). Prints tokens/s and the ratios as JSON.

    nice -n 10 .venv/bin/python bench/sae_training.py --layer 18 --width 8192 --k 64
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time

import torch


def rate(fn, tokens: int, repeat: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return tokens * repeat / (time.perf_counter() - t0)


def main() -> None:
    from cgaps.sae.training.train import TrainConfig, train_sae

    defaults = TrainConfig()  # the shipped SAE's settings
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layer", type=int, default=18)
    ap.add_argument("--width", type=int, default=defaults.width)
    ap.add_argument("--k", type=int, default=defaults.k)
    ap.add_argument("--batch-size", type=int, default=defaults.batch_size)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from cgaps.models import load_backend

    backend = load_backend("embedded", device="cpu", dtype="float32")
    ids = torch.randint(100, 40000, (8, 256))
    mask = torch.ones_like(ids)
    out: dict[str, float] = {}
    for dtype in (torch.float32, torch.bfloat16):
        backend.model.to(dtype)
        name = str(dtype).removeprefix("torch.")
        out[f"forward_{name}_tok_s"] = rate(
            lambda: backend.model(input_ids=ids, attention_mask=mask), ids.numel(), args.repeat
        )
        out[f"extract_{name}_tok_s"] = rate(
            lambda: backend.residuals_at(ids, mask, [args.layer]), ids.numel(), args.repeat
        )
    backend.model.to(torch.float32)
    acts = torch.randn(args.batch_size * (args.repeat + 1), backend.hidden_size).half()
    for mm in ("float32", "bfloat16"):
        cfg = dataclasses.replace(
            defaults,
            width=args.width,
            k=args.k,
            batch_size=args.batch_size,
            epochs=1.0,
            warmup_steps=1,
            checkpoint_every=10**9,
            matmul_dtype=mm,
        )
        with tempfile.TemporaryDirectory() as tmp:
            train_sae(acts, tmp, cfg, max_steps=1)
            t0 = time.perf_counter()
            train_sae(acts, tmp + "/b", cfg, max_steps=args.repeat + 1)
            out[f"train_{mm}_tok_s"] = (args.repeat + 1) * args.batch_size / (time.perf_counter() - t0)
    out["train_bf16_over_forward_fp32"] = out["train_bfloat16_tok_s"] / out["forward_float32_tok_s"]
    out["train_bf16_over_extract_bf16"] = out["train_bfloat16_tok_s"] / out["extract_bfloat16_tok_s"]
    print(json.dumps({k: round(v, 3) for k, v in out.items()}, indent=1))


if __name__ == "__main__":
    main()
