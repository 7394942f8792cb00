"""Generation throughput: the evaluator's answers per second against the bare batched forward.

    .venv/bin/python bench/generate.py [--quick]                 # probe suite, embedded SmolLM2, CPU
    .venv/bin/python bench/generate.py --quick --dtype float32 --gen-dtype bfloat16
    .venv/bin/python bench/generate.py --quick --backend llamacpp
    PYTHONPATH=src python bench/generate.py --synthetic Gemma-2-2B --device cuda

Real mode: the probe suite's items, in the evaluator's own batches (grouped by new-token budget,
then length-sorted, ``cfg.batch_size`` at a time). For each batch, interleaved
(``bench/_common.py``):

* **evaluator**: :func:`cgaps.evaluate.evaluator.respond` on the batch (chat template,
  tokenisation, batched greedy generation, decoding, the resume file);
* **bare**: ``model.generate`` on the same prompts already tokenised and left-padded, with
  the batch's budget: the forward passes the evaluator is built on and nothing else.

``--synthetic NAME`` (``bench/gpu.sh``): a random-weight model from ``bench/model_configs.json``
and random prompts of 32-256 tokens, no tokenizer; compares length-bucketed batches (the
project's batching) with batches in input order (no bucketing), both through ``model.generate``
with a fixed budget (random weights never emit EOS).

``--backend llamacpp``: the evaluator answers through :class:`cgaps.models.llamacpp.LlamaCppBackend`
(the GGUF file as it is), against the same transformers bare forward and, interleaved in the same
run, the evaluator through transformers (the path ``--backend transformers`` takes); it prints how
many answers are identical and each backend's probe accuracy. ``--gen-dtype bfloat16``: the same
comparison with the evaluator generating from a bfloat16 copy of the weights (what ``dtype:
auto`` does on a CPU with native bfloat16) against the float32 transformers evaluator.

Last line: ``answers_s=A ratio_vs_bare=R`` (R = bare time / evaluator time: 1.0 means the
evaluator adds nothing to the forward passes); with ``--backend llamacpp`` also
``ratio_vs_transformers`` (wall), ``cpu_ratio_vs_transformers`` (CPU seconds of the process) and
``agree`` (share of identical answers).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import numpy as np


def real(args: argparse.Namespace) -> str:
    import pandas as pd
    import torch

    from cgaps.config import RunConfig
    from cgaps.evaluate.evaluator import budget, respond
    from cgaps.evaluate.grade import grade_items
    from cgaps.items.probes import load_probes
    from cgaps.models import conversation, format_chat, length_batches, load_backend
    from cgaps.runner import Local

    t0 = time.perf_counter()
    backend = load_backend(args.model, device=args.device, dtype=args.dtype)
    generators: dict[str, Any] = {"evaluator": backend}
    if args.backend == "llamacpp":  # the evaluator answers through llama.cpp; bare stays transformers
        from cgaps.models.llamacpp import LlamaCppBackend

        generators = {"evaluator": LlamaCppBackend.load(args.model), "transformers": backend}
    elif args.gen_dtype:  # the evaluator generates with a copy in gen_dtype; the reference in dtype
        fast = load_backend(args.model, device=args.device, dtype=args.dtype)
        fast.generate_in(args.gen_dtype)
        generators = {"evaluator": fast, "transformers": backend}
    cfg = RunConfig(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    items = pd.DataFrame(load_probes(per_family=args.per_family))
    records = items.to_dict("records")
    # the evaluator's batches: by budget, then length-sorted prompts
    by_budget: dict[int, list[int]] = {}
    for i, r in enumerate(records):
        by_budget.setdefault(budget(r, cfg), []).append(i)
    texts = [format_chat(backend.tokenizer, conversation(r)).text for r in records]
    batches = []
    for max_new, group in sorted(by_budget.items()):
        for b in length_batches([len(texts[i]) for i in group], cfg.batch_size):
            batches.append((max_new, [group[j] for j in b]))
    tok = backend.tokenizer
    work = Path(tempfile.mkdtemp(prefix="cgaps-bench-gen-"))
    answers: dict[str, dict[str, Any]] = {name: {} for name in generators}
    cpu: dict[str, float] = {}

    def answering(name: str) -> Any:
        def task(unit: tuple[int, list[int]]) -> None:
            _, idx = unit
            partial = work / f"{name}{idx[0]}.jsonl"
            answers[name].update(respond(items.iloc[idx], Local(generators[name]), cfg, partial).done)
            partial.unlink()

        return task

    def bare(unit: tuple[int, list[int]]) -> None:
        max_new, idx = unit
        enc = encoded[idx[0]]
        with torch.no_grad():
            backend.model.generate(
                **{k: v.to(backend.device) for k, v in enc.items()},
                max_new_tokens=max_new,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )

    def timed(name: str, task: Any) -> Any:  # CPU seconds of this process (llama.cpp's threads too)
        def run(unit: Any) -> None:
            c0 = time.process_time()
            task(unit)
            cpu[name] = cpu.get(name, 0.0) + time.process_time() - c0

        return run

    encoded = {  # tokenised outside the timer: the bare side pays for the forward passes only
        idx[0]: tok.pad(
            {"input_ids": [tok(texts[i], add_special_tokens=False)["input_ids"] for i in idx]},
            return_tensors="pt",
            padding=True,
            padding_side="left",
        )
        for _, idx in batches
    }
    bare(batches[0])  # warm-up
    tasks = {name: timed(name, answering(name)) for name in generators} | {"bare": timed("bare", bare)}
    spent = _common.interleaved(tasks, batches, args.device)
    print(
        f"{backend.name} ({args.backend}) on {args.device}: {len(records)} probe items in {len(batches)} batches "
        f"of {cfg.batch_size}; setup {time.perf_counter() - t0 - sum(spent.values()):.1f} s; "
        + ", ".join(f"{k} {spent[k]:.1f} s wall / {cpu[k]:.1f} s CPU" for k in spent)
    )
    extra: dict[str, float] = {}
    if "transformers" in generators:  # the same items through both backends: agreement and accuracy
        ids = [r["item_id"] for r in records]
        same = sum(answers["evaluator"][i][0] == answers["transformers"][i][0] for i in ids)
        for name in generators:
            graded = items.assign(response=[answers[name][i][0] for i in ids])
            acc = float(grade_items(graded).mean())
            extra[f"acc_{name}"] = acc
        print(
            f"identical answers {same}/{len(ids)}; accuracy {args.gen_dtype or args.backend} {extra['acc_evaluator']:.3f}, "
            f"transformers {extra['acc_transformers']:.3f}"
        )
        extra = {
            "ratio_vs_transformers": spent["transformers"] / spent["evaluator"],
            "cpu_ratio_vs_transformers": cpu["transformers"] / cpu["evaluator"],
            "agree": same / len(ids),
        }
    return _common.last_line(
        answers_s=len(answers["evaluator"]) / spent["evaluator"],
        ratio_vs_bare=spent["bare"] / spent["evaluator"],
        **extra,
    )


def synthetic(args: argparse.Namespace) -> str:
    import torch

    from cgaps.models import length_batches

    conf = _common.model_config(args.synthetic, tiny=args.tiny)
    dtype = _common.synthetic_dtype(args.dtype, args.device)
    t0 = time.perf_counter()
    model = _common.random_model(conf, args.device, dtype)
    rng = np.random.default_rng(0)
    prompts = [
        rng.integers(3, conf["vocab_size"], size=int(rng.integers(32, 257))).tolist()
        for _ in range(args.items)
    ]
    pad = conf["pad_token_id"]

    def left_pad(rows: list[list[int]]) -> dict[str, Any]:
        n = max(map(len, rows))
        ids = torch.tensor([[pad] * (n - len(r)) + r for r in rows], device=args.device)
        att = torch.tensor([[0] * (n - len(r)) + [1] * len(r) for r in rows], device=args.device)
        return {"input_ids": ids, "attention_mask": att}

    def run(batch: list[int]) -> None:
        with torch.no_grad():
            model.generate(
                **left_pad([prompts[i] for i in batch]),
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                do_sample=False,
                pad_token_id=pad,
            )

    bucketed = length_batches([len(p) for p in prompts], args.batch_size)
    in_order = [
        list(range(i, min(i + args.batch_size, len(prompts))))
        for i in range(0, len(prompts), args.batch_size)
    ]
    run(bucketed[0])  # warm-up
    spent = _common.interleaved({"bucketed": run}, bucketed, args.device)
    spent.update({"in_order": _common.interleaved({"x": run}, in_order, args.device)["x"]})
    print(
        f"random {args.synthetic} on {args.device} {dtype}: {len(prompts)} prompts of 32-256 tokens, {args.new_tokens} new tokens, "
        f"batches of {args.batch_size}; setup {time.perf_counter() - t0 - sum(spent.values()):.1f} s; "
        f"bucketed {spent['bucketed']:.2f} s, input order {spent['in_order']:.2f} s; "
        f"{len(prompts) * args.new_tokens / spent['bucketed']:.0f} new tokens/s"
    )
    return _common.last_line(
        answers_s=len(prompts) / spent["bucketed"], ratio_vs_unbucketed=spent["in_order"] / spent["bucketed"]
    )


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 items per probe family: under 2 minutes here")
    ap.add_argument("--per-family", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=48, help="the budget cap (cgaps demo's: 48)")
    ap.add_argument("--model", default="embedded")
    ap.add_argument(
        "--backend",
        choices=["transformers", "llamacpp"],
        default="transformers",
        help="the evaluator's generator (bare is always transformers' model.generate)",
    )
    ap.add_argument(
        "--gen-dtype",
        choices=["bfloat16", "float16", "float32"],
        help="the evaluator generates with a copy of the weights in this dtype (HFBackend.generate_in), "
        "against the transformers evaluator in --dtype, interleaved",
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--synthetic", metavar="NAME", help="random weights from bench/model_configs.json")
    ap.add_argument("--tiny", action="store_true", help="with --synthetic: a tiny version (CPU smoke test)")
    ap.add_argument("--items", type=int, default=256, help="with --synthetic: prompts")
    ap.add_argument(
        "--new-tokens", type=int, default=32, help="with --synthetic: tokens generated per prompt"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.per_family = 4
    line = synthetic(args) if args.synthetic else real(args)
    print(line)
    return line


if __name__ == "__main__":
    main(sys.argv[1:])
