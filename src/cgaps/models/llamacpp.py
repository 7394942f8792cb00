"""A llama.cpp backend for GGUF models on the CPU (``llama-cpp-python``, optional extra).

:class:`LlamaCppBackend` is a :class:`~cgaps.seams.Generator`. It runs the GGUF file as it is
(quantised weights and llama.cpp's CPU kernels) instead of the float32 weights the transformers
backend de-quantises it to, which is where generation on a CPU spends its time.

What it shares with the transformers backend, so the two answer alike: the prompt text (the
Hugging Face tokenizer's chat template, :func:`cgaps.models.chat.format_chat`), the token ids
(that tokenizer, not llama.cpp's own, is used to tokenise and to decode), the end-of-sequence
ids (the converted model's generation config) and greedy decoding (argmax of the last logits,
no sampler, no repetition penalty). What differs: the weights are the quantised ones, so a
logit near a tie can fall the other way; `tests/models/test_llamacpp.py` and `bench/generate.py
--backend llamacpp` measure on how many probe items the answers are identical.

One sequence at a time (llama.cpp's high-level API has no batched decoding), each prompt
evaluated in one call and then token by token; ``batch_size`` is accepted and ignored. The KV
cache of the previous prompt is kept and only the tokens after the longest common prefix are
evaluated: every chat-templated prompt starts with the same system turn (~25 tokens of ~60 on
the probe suite), and prompts are answered in the order of their token ids, so neighbours share
more. llama.cpp computes each position's keys and values from that position's row alone,
so the reused cache holds what a fresh evaluation would (answers checked identical with and
without reuse, ``tests/models/test_llamacpp.py``).
Option log-likelihoods are not implemented here: multiple-choice scoring by log-likelihood
stays with the transformers backend (:class:`cgaps.models.backends.Routed` sends them there).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cgaps.errors import CGapsError
from cgaps.models.batching import token_budgets
from cgaps.models.chat import prompt_ids
from cgaps.seams import Messages, Progress


def llamacpp_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def display_name(name: str) -> str:
    """The model name run.json and the messages show for ``embedded`` or a ``.gguf`` path."""
    from cgaps.models.loading import EMBEDDED_NAME

    return EMBEDDED_NAME if name == "embedded" else Path(name).stem


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class LlamaCppBackend:
    """Greedy generation from a GGUF file with llama.cpp (see the module docstring)."""

    backend = "llamacpp"  # the generation backend's name (cgaps.models.backends)
    generation_dtype: str | None = None  # the GGUF's own weights (run.json records their quantisation)
    # a prompt past the context is refused (_greedy) whatever this says: nothing is cut here
    context_overflow = "truncate"
    prompts_truncated = 0

    def __init__(
        self, gguf: str | Path, tokenizer: Any, eos_ids: Sequence[int], name: str, n_ctx: int = 2048
    ):
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise CGapsError(
                "the llama.cpp backend needs llama-cpp-python: pip install 'competency-gaps[llamacpp]'"
            ) from e
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        self.llm = Llama(model_path=str(gguf), n_ctx=n_ctx, n_threads=threads, verbose=False)
        self.tokenizer = tokenizer
        self.eos_ids = {int(i) for i in eos_ids}
        self.name = name
        self.n_ctx = n_ctx
        self.n_vocab = int(self.llm.n_vocab())
        self.reuse_prefix = True  # keep the KV cache of the common prefix (module docstring)
        self.loaded: dict[str, Any] | None = None  # what was really loaded (run.json), set by load()

    @classmethod
    def load(cls, name: str = "embedded", n_ctx: int = 2048) -> LlamaCppBackend:
        """``embedded`` or a ``.gguf`` path; the tokenizer and EOS ids come from the folder the
        transformers backend converts the same file to (cached, so both read the same ones)."""
        from transformers import AutoTokenizer

        from cgaps.models.loading import convert_gguf, describe_load, embedded_gguf, eos_ids, package_version

        if name == "embedded":
            gguf = embedded_gguf()
        elif name.endswith(".gguf") and Path(name).is_file():
            gguf = Path(name)
        else:
            raise CGapsError(
                f"the llama.cpp backend reads GGUF files: pass 'embedded' or a .gguf path, not {name!r}"
            )
        display = display_name(name)  # the name Routed shows before the model loads
        folder = convert_gguf(gguf)
        tok = AutoTokenizer.from_pretrained(folder)
        backend = cls(gguf, tok, eos_ids(folder, tok), display, n_ctx=n_ctx)
        record = describe_load(name, str(folder), display, "gguf", "cpu")
        record["dtype"] = record.get("gguf", {}).get("quantisation", "gguf")  # weights as in the file
        backend.loaded = {**record, "backend": "llamacpp", "llama_cpp": package_version("llama-cpp-python")}
        return backend

    def _greedy(self, ids: list[int], max_new: int) -> list[int]:
        llm = self.llm
        if len(ids) + max_new > self.n_ctx:
            raise CGapsError(
                f"a prompt of {len(ids)} tokens with {max_new} new ones does not fit llama.cpp's context of "
                f"{self.n_ctx}; raise n_ctx or shorten the prompt"
            )
        # keep the cache of the prefix shared with the previous prompt (at least one token is
        # evaluated, so the logits are this prompt's)
        keep = common_prefix(llm.input_ids[: llm.n_tokens].tolist(), ids[:-1]) if self.reuse_prefix else 0
        if keep == 0:
            llm.reset()
        llm.n_tokens = keep  # eval() drops the cache after n_tokens before it evaluates
        llm.eval(ids[keep:])
        out: list[int] = []
        for _ in range(max_new):
            # the last position's logits straight from the context: llama-cpp-python keeps
            # ``scores`` only with logits_all, which would store a row per prompt token
            nxt = int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(self.n_vocab,))))
            out.append(nxt)
            if nxt in self.eos_ids:
                break
            llm.eval([nxt])
        return out

    def generate(
        self,
        conversations: Sequence[Messages | str],
        max_new_tokens: int | Sequence[int],
        batch_size: int,
        progress: Progress | None = None,
    ) -> list[str]:
        """One greedy response per conversation (``batch_size`` is ignored: one at a time, in the
        order of the prompts' token ids, so that neighbours share the longest prefixes)."""
        budgets = token_budgets(max_new_tokens, len(conversations))
        tok = self.tokenizer
        ids = [prompt_ids(tok, conv) for conv in conversations]
        out = [""] * len(ids)
        for i in sorted(range(len(ids)), key=ids.__getitem__):
            out[i] = tok.decode(self._greedy(ids[i], budgets[i]), skip_special_tokens=True).strip()
            if progress:
                progress(1)
        return out

    def loglikelihood(
        self,
        requests: Sequence[tuple[Messages | str, str]],
        batch_size: int,
        progress: Progress | None = None,
    ) -> list[float]:
        raise CGapsError(
            "the llama.cpp backend generates only; score multiple choice by log-likelihood with the "
            "transformers backend"
        )
