"""A vLLM backend for CUDA GPUs (``vllm``, optional extra; imported only when used).

:class:`VLLMBackend` is a :class:`~cgaps.seams.Generator`: the model's greedy answers through
vLLM's engine (paged attention, continuous batching), which on a GPU keeps the device busy where
transformers' padded batches idle on finished rows.

What it shares with the other backends, so the three answer alike: the prompt token ids
(:func:`cgaps.models.chat.prompt_ids`: the Hugging Face tokenizer's chat template, tokenised by
that tokenizer and handed to vLLM as token ids, so vLLM's own tokenisation never enters), the
new-token budgets (:func:`cgaps.models.batching.token_budgets`), the end-of-sequence ids (the
model's generation config, as stop token ids) and greedy decoding (``temperature=0``: vLLM takes
the argmax; no repetition penalty). The answer is the generated ids decoded by the same
tokenizer, special tokens skipped, stripped, as :meth:`cgaps.models.hf.HFBackend.generate` does.

**Untested on a GPU in this project** (docs/scaling.md, "Generation"): vLLM pulls a CUDA build
of torch and cannot be installed beside the project's CPU torch, and no GPU test has run it. The
parts that do not need vLLM (the requests built from the prompts and budgets, the decoding of
the outputs, the errors) are tested with a stand-in engine in ``tests/models/test_backends.py``.

Option log-likelihoods are not implemented here: :class:`cgaps.models.backends.Routed` sends
them to the transformers backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cgaps.errors import CGapsError
from cgaps.models.batching import token_budgets
from cgaps.models.chat import prompt_ids
from cgaps.seams import Messages, Progress


def sampling_args(budgets: Sequence[int], eos_ids: Sequence[int]) -> list[dict[str, Any]]:
    """The keyword arguments of vLLM's ``SamplingParams`` for each budget: greedy
    (``temperature=0``), at most the budget's new tokens, stopping at (and keeping, then skipping
    when decoding) an end-of-sequence id, nothing else changed (no penalties)."""
    return [
        {
            "temperature": 0.0,
            "max_tokens": int(b),
            "stop_token_ids": [int(i) for i in eos_ids],
            "repetition_penalty": 1.0,
            "seed": 0,
        }
        for b in budgets
    ]


class VLLMBackend:
    """Greedy generation with vLLM on a CUDA GPU (see the module docstring)."""

    backend = "vllm"  # the generation backend's name (cgaps.models.backends)
    generation_dtype: str | None = None  # the engine runs the dtype it was loaded in
    # vLLM refuses a prompt past its context whatever this says: nothing is cut here
    context_overflow = "truncate"
    prompts_truncated = 0

    def __init__(
        self,
        llm: Any,
        tokenizer: Any,
        eos_ids: Sequence[int],
        name: str,
        params: Callable[..., Any] | None = None,
    ):
        self.llm = llm
        self.tokenizer = tokenizer
        self.eos_ids = [int(i) for i in eos_ids]
        self.name = name
        self.loaded: dict[str, Any] | None = None
        if params is None:
            from vllm import SamplingParams

            params = SamplingParams
        self._params = params

    @classmethod
    def load(cls, name: str, device: str = "auto", dtype: str = "auto") -> VLLMBackend:
        """The model ``name`` (hub id, folder, .gguf or ``embedded``, resolved as the transformers
        backend resolves it) in vLLM's engine; ``dtype`` ``auto`` is bfloat16 (GPU only)."""
        try:
            from vllm import LLM
        except ImportError as e:
            raise CGapsError(
                "the vLLM backend needs vllm: pip install 'competency-gaps[vllm]' on a machine with a "
                "CUDA GPU (or pass --backend auto)"
            ) from e
        from transformers import AutoTokenizer

        from cgaps.models.loading import describe_load, eos_ids, resolve_model

        path, display = resolve_model(name)
        vllm_dtype = "bfloat16" if dtype == "auto" else dtype
        tok = AutoTokenizer.from_pretrained(path)
        stop = eos_ids(path, tok)
        llm = LLM(model=path, tokenizer=path, dtype=vllm_dtype, seed=0)
        backend = cls(llm, tok, stop, display)
        backend.loaded = {**describe_load(name, path, display, vllm_dtype, device), "backend": "vllm"}
        return backend

    def requests(
        self, conversations: Sequence[Messages | str], max_new_tokens: int | Sequence[int]
    ) -> tuple[list[dict[str, Any]], list[Any]]:
        """The prompts (as token ids) and sampling parameters vLLM is given for ``conversations``."""
        budgets = token_budgets(max_new_tokens, len(conversations))
        prompts = [{"prompt_token_ids": prompt_ids(self.tokenizer, c)} for c in conversations]
        return prompts, [self._params(**kw) for kw in sampling_args(budgets, self.eos_ids)]

    def generate(
        self,
        conversations: Sequence[Messages | str],
        max_new_tokens: int | Sequence[int],
        batch_size: int,
        progress: Progress | None = None,
    ) -> list[str]:
        """One greedy response per conversation; vLLM schedules its own batches (``batch_size``
        is ignored)."""
        prompts, params = self.requests(conversations, max_new_tokens)
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        out = [
            self.tokenizer.decode(list(o.outputs[0].token_ids), skip_special_tokens=True).strip()
            for o in outputs
        ]
        if progress:
            progress(len(out))
        return out

    def loglikelihood(
        self,
        requests: Sequence[tuple[Messages | str, str]],
        batch_size: int,
        progress: Progress | None = None,
    ) -> list[float]:
        raise CGapsError(
            "the vLLM backend generates only; option log-likelihoods are computed by the transformers "
            "backend (cgaps.models.backends.Routed)"
        )
