"""Extraction throughput: the project's path against the naive pipeline and a bare forward.

    .venv/bin/python bench/extract.py [--quick]                      # SmolLM2 + the shipped SAE, CPU
    PYTHONPATH=src python bench/extract.py --synthetic Gemma-2-2B --device cuda --dtype bfloat16

On the same length-sorted batches, in one process, interleaved batch by batch
(``bench/_common.py``):

* **project**: :func:`cgaps.extract.stage.extract_chunk` in the dtype extraction reads in
  (``--dtype auto``: :func:`cgaps.models.loading.reader_dtype`, bfloat16 on a CPU that computes
  it natively) — forward stopped after block L, SAE codes and sparse pooling on the device in
  that dtype, rows for positive cells only;
* **bare**: the forward pass to block L in that same dtype and nothing else (the floor
  extraction cannot beat);
* **project_float32** and **bare_float32**: the same in float32, when extraction reads in
  another dtype (the float32 path as it was, and its floor: both floors are printed);
* **naive**: :func:`cgaps.extract.reference.dense_chunk` with ``full_forward`` in float32: the
  whole model with ``output_hidden_states``, residuals to the CPU in float32, dense codes, dense
  pooling.

The default suite is the probe suite with synthetic responses of mixed length (span both),
so batches mix lengths as a real run does. ``--synthetic NAME`` builds a random-weight model
from the real config in ``bench/model_configs.json`` and random token ids instead (no
tokenizer, no SAE file, no sae-lens: what ``bench/gpu.sh`` runs). Last line:
``ratio_vs_naive=X ratio_vs_bare=Y tok_s=Z [ratio_vs_float32=W floor_ratio=V]`` (speed-ups:
naive time / project time and bare time / project time, bare in the project's dtype; tok_s =
analysed tokens per second of the project path; ratio_vs_float32 = the float32 path's time /
the project's, i.e. its tokens per second over float32's; floor_ratio = bare float32 time /
bare time).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any

import _common
import numpy as np


def real_setup(args: argparse.Namespace) -> tuple[Any, Any, list[Any], Any, Any, Any]:
    from cgaps.config import RunConfig
    from cgaps.extract.stage import encode_items, load_reader

    cfg = RunConfig(
        model=args.model, sae=args.sae, device=args.device, dtype=args.dtype, batch_size=args.batch_size
    )
    backend, sae = load_reader(cfg)  # as extraction loads them: the SAE beside the model, in its dtype
    if str(backend.dtype) != "torch.float32":  # the float32 path, for comparison
        backend32, sae32 = load_reader(cfg.replace(dtype="float32"))
    else:
        backend32, sae32 = backend, sae
    items = _common.probe_items(args.items, args.max_words)
    return backend, sae, encode_items(items, backend.tokenizer, cfg), cfg, backend32, sae32


def synthetic_setup(args: argparse.Namespace) -> tuple[Any, Any, list[Any], Any, Any, Any]:
    import torch

    from cgaps.config import RunConfig
    from cgaps.extract.stage import Encoded
    from cgaps.models import HFBackend

    conf = _common.model_config(args.synthetic, tiny=args.tiny)
    sae_conf = {"layer": 2, "width": 512, "k": 16} if args.tiny else conf["_sae"]
    model = _common.random_model(conf, args.device, args.dtype)
    tok = SimpleNamespace(pad_token_id=conf["pad_token_id"])
    backend = HFBackend(model, tok, f"random {args.synthetic}", args.device)
    sae = _common.PlainSAE(
        backend.hidden_size, sae_conf["width"], sae_conf["layer"], args.device, backend.dtype, k=sae_conf["k"]
    )
    rng = np.random.default_rng(0)
    encoded = []
    for i in range(args.items):
        n = int(rng.integers(args.min_tokens, args.max_tokens + 1))
        ids = rng.integers(3, conf["vocab_size"], size=n).tolist()
        mask = np.ones(n, dtype=bool)
        mask[0] = False  # position 0 never counts (docs/method.md §2)
        encoded.append(Encoded(f"i{i}", "", ids, [(t, t + 1) for t in range(n)], mask))
    torch.set_grad_enabled(False)
    return backend, sae, encoded, RunConfig(batch_size=args.batch_size), backend, sae


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small suite: under 2 minutes on 2 shared cores")
    ap.add_argument("--items", type=int, default=192)
    ap.add_argument("--max-words", type=int, default=150, help="longest synthetic response (words)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=1, help="passes over the batches")
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--sae", default="embedded")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--synthetic", metavar="NAME", help="random weights from bench/model_configs.json")
    ap.add_argument("--tiny", action="store_true", help="with --synthetic: a tiny version (CPU smoke test)")
    ap.add_argument("--min-tokens", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=512)
    args = ap.parse_args(argv)
    if args.quick:
        args.items, args.max_words = 40, 40
    if args.synthetic:
        args.dtype = _common.synthetic_dtype(args.dtype, args.device)

    import torch

    from cgaps.extract.reference import dense_chunk
    from cgaps.extract.stage import extract_chunk
    from cgaps.models import length_batches, pad_batch

    t0 = time.perf_counter()
    backend, sae, encoded, cfg, backend32, sae32 = (synthetic_setup if args.synthetic else real_setup)(args)
    layer = sae.layer
    # the batches every path runs, exactly as extraction cuts them (length-sorted)
    batches = [
        [encoded[i] for i in b] for b in length_batches([len(e.input_ids) for e in encoded], cfg.batch_size)
    ]
    pad = backend.tokenizer.pad_token_id
    on_gpu = not str(backend.device).startswith("cpu")
    other = backend32 is not backend

    def bare_in(reader: Any) -> Any:
        def bare(batch: list[Any]) -> None:
            ids, att = pad_batch([e.input_ids for e in batch], pad)
            reader.residuals_at(ids, att, [layer])

        return bare

    def project_in(reader: Any, encoder: Any) -> Any:
        def project(batch: list[Any]) -> None:
            extract_chunk(reader, encoder, layer, batch, cfg, Counter())

        return project

    def naive(batch: list[Any]) -> None:
        dense_chunk(backend32, sae32, layer, batch, cfg, Counter(), full_forward=True, on_device=on_gpu)

    tasks = {"bare": bare_in(backend), "project": project_in(backend, sae)}
    if other:
        tasks |= {"bare_float32": bare_in(backend32), "project_float32": project_in(backend32, sae32)}
    tasks["naive"] = naive
    for task in tasks.values():  # warm-up: kernels, allocator, lazy imports
        task(batches[0][:2])
    with torch.no_grad():
        spent = _common.interleaved(tasks, batches, args.device, args.rounds)
    n_tokens = sum(len(e.input_ids) for e in encoded)
    padded = sum(len(b) * max(len(e.input_ids) for e in b) for b in batches)
    analysed = sum(int(e.mask.sum()) for e in encoded) * args.rounds
    dtype = str(backend.dtype).removeprefix("torch.")
    print(
        f"{backend.name} layer {layer}, SAE width {sae.width}, {args.device} {dtype} (--dtype {args.dtype}): "
        f"{len(encoded)} items, {n_tokens} tokens ({analysed // args.rounds} analysed), {len(batches)} batches, "
        f"padding {1 - n_tokens / padded:.1%} of the padded tokens; setup {time.perf_counter() - t0 - sum(spent.values()):.1f} s"
    )
    print("  ".join(f"{k} {v:.2f} s" for k, v in spent.items()))
    floors = f"bare forward to layer {layer}: {dtype} {analysed / spent['bare']:.0f} analysed tokens/s"
    if other:
        floors += f", float32 {analysed / spent['bare_float32']:.0f}"
    print(f"{floors}; load average {os.getloadavg()[0]:.1f}")
    figures = {
        "ratio_vs_naive": spent["naive"] / spent["project"],
        "ratio_vs_bare": spent["bare"] / spent["project"],
        "tok_s": analysed / spent["project"],
    }
    if other:
        figures |= {
            "ratio_vs_float32": spent["project_float32"] / spent["project"],
            "floor_ratio": spent["bare_float32"] / spent["bare"],
            "float32_ratio_vs_bare": spent["bare_float32"] / spent["project_float32"],
        }
    line = _common.last_line(**figures)
    print(line)
    return line


if __name__ == "__main__":
    main(sys.argv[1:])
