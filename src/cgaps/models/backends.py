"""Which backend generates the evaluated model's answers, and the rule that picks it.

Three generators answer alike (the same prompt text and token ids, :func:`cgaps.models.chat.prompt_ids`;
the same new-token budgets, :func:`cgaps.models.batching.token_budgets`; the same end-of-sequence
ids; greedy decoding) but run on different machinery:

========================  ==========================================  =============================
backend                   what runs                                   where it is the fastest
========================  ==========================================  =============================
``transformers``          :class:`~cgaps.models.hf.HFBackend`: the    anywhere (the reference);
                          model in ``dtype``, batched greedy decoding  in bfloat16 on a CPU with
                          with early exit                             native bfloat16
``llamacpp``              :class:`~cgaps.models.llamacpp.LlamaCppBackend`:  a GGUF model on the CPU
                          the GGUF file as it is (quantised kernels)  (extra ``llamacpp``)
``vllm``                  :class:`~cgaps.models.vllm.VLLMBackend`:    a CUDA GPU (extra ``vllm``)
                          paged attention, continuous batching
========================  ==========================================  =============================

``backend: auto`` (:func:`choose_backend`) is deterministic and printed, the first that fits:
vLLM when a CUDA GPU is used and ``vllm`` imports; transformers generating from a bfloat16 copy
of the weights on a CPU that computes bfloat16 natively (``avx512_bf16``/AMX) with ``dtype:
auto`` (measured faster than llama.cpp there: docs/scaling.md, Generation); llama.cpp when the
model is a GGUF file (or the embedded one), the device is the CPU and ``llama_cpp`` imports;
transformers otherwise. A named backend that cannot run is an error naming what is missing,
never a silent fallback.

The backend actually used is recorded with the evaluation's inputs (``backend_used`` in
``run.json`` ``inputs.evaluate.settings``): answers differ between backends on a fraction of the
items (quantised weights, other kernels: near-ties fall the other way), so a pipeline run that
would generate with another backend evaluates again (:func:`backend_change`).

Option log-likelihoods (the ``loglik*`` protocols) are always computed by transformers:
:class:`Routed` sends ``generate`` to the chosen backend and ``loglikelihood`` to an
:class:`~cgaps.models.hf.HFBackend` (the pipeline's reader when it is the evaluated model, else
loaded on first use).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cgaps.config import BACKENDS, EMBEDDED
from cgaps.console import info
from cgaps.errors import CGapsError
from cgaps.models.loading import cpu_bf16_native
from cgaps.seams import Messages, Progress

if TYPE_CHECKING:
    from cgaps.config import RunConfig
    from cgaps.models.hf import HFBackend
    from cgaps.seams import Generator

# display names, for the messages
LABELS = {"transformers": "transformers", "llamacpp": "llama.cpp", "vllm": "vLLM", "served": "the server"}
SERVED = "served"  # an openai:// model: the server generates, no local backend


@dataclass(frozen=True)
class Choice:
    """The backend that generates (one of :data:`cgaps.config.BACKENDS` less ``auto``, or
    ``served``), why it was picked (printed: ``generating with llama.cpp (auto: GGUF on CPU)``),
    and for transformers the dtype it generates in when not the model's (``gen_dtype``)."""

    name: str
    reason: str
    gen_dtype: str | None = None

    @property
    def recorded(self) -> str:
        """What run.json records as the backend that generated: ``transformers:bfloat16`` when
        transformers generates in another dtype than the model's."""
        return self.name if self.gen_dtype is None else f"{self.name}:{self.gen_dtype}"

    def describe(self) -> str:
        where = f" in {self.gen_dtype}" if self.gen_dtype else ""
        return f"generating with {LABELS.get(self.name, self.name)}{where} ({self.reason})"


def is_gguf(model: str) -> bool:
    """Whether ``model`` names a GGUF file (the embedded SmolLM2 is one)."""
    return model == EMBEDDED or Path(model).suffix == ".gguf"


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def choose_backend(
    model: str,
    device: str,
    backend: str = "auto",
    dtype: str = "auto",
    *,
    has_cuda: Callable[[], bool] = cuda_available,
    importable: Callable[[str], bool] = _importable,
    bf16_native: Callable[[], bool] = cpu_bf16_native,
) -> Choice:
    """The backend that generates ``model`` on ``device`` for the setting ``backend`` (module
    docstring). ``has_cuda`` and ``importable`` are the probes of the machine (tests pass fakes).

    ``device`` is the config's (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``): ``auto`` means
    the GPU when there is one, as :func:`cgaps.models.loading.pick_device` decides. ``dtype`` is
    the config's model dtype: with ``auto`` on a CPU that computes bfloat16 natively,
    transformers generates in bfloat16 (a copy of the weights; option log-likelihoods and the
    residuals extraction reads stay in float32), and ``auto`` prefers that to llama.cpp.
    """
    if backend not in BACKENDS:
        from cgaps.errors import did_you_mean

        raise CGapsError(
            f"unknown backend {backend!r}.{did_you_mean(backend, BACKENDS)} Valid: {', '.join(BACKENDS)}"
        )
    if model.startswith("openai://"):
        if backend in ("llamacpp", "vllm"):
            raise CGapsError(
                f"backend {backend!r} runs a local model, but model {model!r} is served; "
                "pass --backend auto (the server generates)"
            )
        return Choice(SERVED, "a served model")
    cuda: list[bool] = []  # asked once, and only when needed (it imports torch)

    def on_cuda() -> bool:
        if device != "auto":
            return device.startswith("cuda")
        if not cuda:
            cuda.append(has_cuda())
        return cuda[0]

    def on_cpu() -> bool:
        return device == "cpu" or (device == "auto" and not on_cuda())

    def fast_bf16() -> bool:  # transformers generates in bfloat16 on such a CPU (docstring)
        return dtype == "auto" and on_cpu() and bf16_native()

    if backend == "transformers":
        return Choice("transformers", "--backend transformers", "bfloat16" if fast_bf16() else None)

    if backend == "vllm":
        if not importable("vllm"):
            raise CGapsError(
                "backend 'vllm' needs the vllm package: pip install 'competency-gaps[vllm]' on a machine "
                "with a CUDA GPU (or pass --backend auto)"
            )
        if not on_cuda() or not has_cuda():
            raise CGapsError(
                f"backend 'vllm' needs a CUDA GPU, but the device is {device!r}"
                + ("" if has_cuda() else " and torch sees no GPU")
                + "; pass --backend auto"
            )
        return Choice("vllm", "--backend vllm")
    if backend == "llamacpp":
        if not is_gguf(model):
            raise CGapsError(
                f"backend 'llamacpp' reads GGUF files, and model {model!r} is not one; pass 'embedded' or a "
                ".gguf path as the model, or --backend auto"
            )
        if not importable("llama_cpp"):
            raise CGapsError(
                "backend 'llamacpp' needs llama-cpp-python: pip install 'competency-gaps[llamacpp]' "
                "(or pass --backend auto)"
            )
        if not on_cpu():
            raise CGapsError(
                f"backend 'llamacpp' runs on the CPU, but the device is {device!r}; pass --device cpu, "
                "or --backend auto"
            )
        return Choice("llamacpp", "--backend llamacpp")
    # auto: the first that fits, in this order
    if importable("vllm") and on_cuda():
        return Choice("vllm", "auto: CUDA GPU and vllm installed")
    if fast_bf16():
        return Choice("transformers", "auto: CPU with native bfloat16", "bfloat16")
    if is_gguf(model) and importable("llama_cpp") and on_cpu():
        return Choice("llamacpp", "auto: GGUF on CPU")
    if on_cuda():
        why = "GPU, vllm not installed"
    elif not on_cpu():
        why = f"device {device}"
    elif not is_gguf(model):
        why = "not a GGUF model"
    else:
        why = "GGUF on CPU, llama-cpp-python not installed"
    return Choice("transformers", f"auto: {why}")


def choose(cfg: RunConfig) -> Choice:
    """:func:`choose_backend` for a run's config."""
    return choose_backend(cfg.model, cfg.device, cfg.backend, cfg.dtype)


class Routed:
    """A :class:`~cgaps.seams.Generator` that generates with one backend and computes option
    log-likelihoods with transformers (module docstring). Both are loaded on first use
    (``make`` the generator, ``scorer`` the :class:`~cgaps.models.hf.HFBackend`), so a stage
    that finds its work done, or a run without log-likelihood items, loads only what it needs."""

    def __init__(self, make: Callable[[], Any], scorer: Callable[[], HFBackend], backend: str, name: str):
        self._make = make
        self._generator: Any = None
        self._scorer = scorer
        self._loaded_scorer: HFBackend | None = None
        self.backend = backend
        self.name = name
        self.generation_dtype: str | None = None  # llama.cpp and vLLM run the model as loaded
        self.prompts_truncated = 0
        self._context_overflow = "truncate"

    @property
    def context_overflow(self) -> str:
        """The transformers scorer cuts (or refuses) long contexts by it; llama.cpp and vLLM refuse
        a prompt past their context whatever it says."""
        return self._context_overflow

    @context_overflow.setter
    def context_overflow(self, value: str) -> None:
        self._context_overflow = value
        if self._loaded_scorer is not None:
            self._loaded_scorer.context_overflow = value

    @property
    def generator(self) -> Any:
        if self._generator is None:
            self._generator = self._make()
        return self._generator

    @property
    def loaded(self) -> dict[str, Any] | None:
        """What generated (run.json ``model.evaluated_loaded``); None before any answer."""
        return None if self._generator is None else self._generator.loaded

    def generate(
        self,
        conversations: Sequence[Messages | str],
        max_new_tokens: int | Sequence[int],
        batch_size: int,
        progress: Progress | None = None,
    ) -> list[str]:
        return list(self.generator.generate(conversations, max_new_tokens, batch_size, progress))

    def loglikelihood(
        self,
        requests: Sequence[tuple[Messages | str, str]],
        batch_size: int,
        progress: Progress | None = None,
    ) -> list[float]:
        if self._loaded_scorer is None:
            info(
                f"option log-likelihoods with transformers ({LABELS[self.backend]} generates only; "
                "docs/scaling.md, Generation)"
            )
            self._loaded_scorer = self._scorer()
            self._loaded_scorer.context_overflow = self._context_overflow
        before = self._loaded_scorer.prompts_truncated
        out = self._loaded_scorer.loglikelihood(requests, batch_size, progress)
        self.prompts_truncated += self._loaded_scorer.prompts_truncated - before
        return out


def open_generator(cfg: RunConfig, choice: Choice, transformers: HFBackend | None = None) -> Generator:
    """The generator of ``choice`` for ``cfg``'s model (the choice is printed). ``transformers``:
    an :class:`~cgaps.models.hf.HFBackend` of the same model already loaded (the pipeline's), used
    as the transformers backend or for option log-likelihoods; loaded here when needed and not given."""
    import cgaps.models as models  # the package's load_backend (what tests replace)
    from cgaps.models import hf

    info(choice.describe())

    def scorer() -> HFBackend:
        model = transformers
        if model is None:
            info(f"loading model {cfg.model} (transformers)")
            model = models.load_backend(cfg.model, cfg.device, cfg.dtype)
        if isinstance(model, hf.HFBackend):  # prompts past its context: docs/method.md §6 counts
            model.context_overflow = cfg.context_overflow
        return model

    if choice.name == "transformers":
        model = scorer()
        if choice.gen_dtype is not None and isinstance(model, hf.HFBackend):
            model.generate_in(choice.gen_dtype)
        return model
    if choice.name == "llamacpp":
        from cgaps.models.llamacpp import LlamaCppBackend, display_name

        return Routed(lambda: LlamaCppBackend.load(cfg.model), scorer, "llamacpp", display_name(cfg.model))
    if choice.name == "vllm":
        from cgaps.models.loading import resolve_model
        from cgaps.models.vllm import VLLMBackend

        return Routed(
            lambda: VLLMBackend.load(cfg.model, cfg.device, cfg.dtype),
            scorer,
            "vllm",
            resolve_model(cfg.model)[1],
        )
    raise CGapsError(f"no local generator for backend {choice.name!r}")


def used_backend(generator: Generator) -> str:
    """What run.json records as the backend that generated (``inputs.evaluate.settings.backend_used``):
    the generator's ``backend``, with the dtype transformers generated in when not the model's
    (``transformers:bfloat16``, :attr:`Choice.recorded`). A name that is not one of
    :data:`cgaps.config.BACKENDS` (a generator of one's own, passed through the Python API, says
    ``given``) is recorded but never compared by :func:`backend_change`."""
    dtype = generator.generation_dtype
    return f"{generator.backend}:{dtype}" if dtype else generator.backend


def backend_change(meta: dict[str, Any]) -> str | None:
    """Why a completed evaluation is stale because the backend that would generate now is not the
    one that did (None: the same, or nothing recorded to compare). ``meta``: run.json."""
    from cgaps.config import config_from_run
    from cgaps.errors import settings_diff

    recorded = meta.get("inputs", {}).get("evaluate", {})
    settings = recorded.get("config", recorded.get("settings"))  # `settings`: runs written before
    if not isinstance(settings, dict) or "config" not in meta:
        return None  # graded responses, or an evaluation from before its config was recorded
    cfg = config_from_run(meta, "run")
    # evaluations recorded before the backend was: transformers (or the server) generated them
    fallback = SERVED if cfg.model.startswith("openai://") else "transformers"
    was = recorded.get("backend_used", settings.get("backend_used", fallback))
    if str(was).split(":")[0] not in (*BACKENDS, SERVED):
        return None  # a generator given through the Python API: nothing to compare
    try:
        now = choose(cfg).recorded
    except CGapsError as e:
        return f"its backend cannot be chosen now ({e})"
    if now == was:
        return None
    return f"the answers were generated with another backend ({settings_diff({'backend': was}, {'backend': now})})"
