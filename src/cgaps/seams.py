"""The seams of the pipeline: one small interface per moving part.

Each stage talks to its moving parts only through these protocols, so a new backend (vLLM,
llama.cpp, an API), a new SAE family, an imported harness log, a new label source or another
way to spread work over machines plugs in without touching the stages. A protocol carries
everything its callers need (what a generator is, an SAE's decoder rows, a reader's
unembedding), so no caller reaches behind it with ``getattr`` or ``isinstance``.
Implementations in this package:

| protocol | used by | implementations |
| --- | --- | --- |
| :class:`Generator` | ``cgaps evaluate`` | :class:`cgaps.models.HFBackend`, :class:`~cgaps.models.backends.Routed` (llama.cpp, vLLM), :class:`~cgaps.models.openai.OpenAIGenerator`, :class:`~cgaps.evaluate.stage.GeneratorDescription` (workers' model, seen from the driver) |
| :class:`ResidualReader` | ``cgaps extract``, ``cgaps label``, the SAE activation cache, SAE metrics | :class:`cgaps.models.HFBackend`, :class:`~cgaps.extract.stage.ReaderDescription` |
| :class:`SAEEncoder` | ``cgaps extract``, ``cgaps label``, SAE metrics | :class:`cgaps.sae.LoadedSAE` (any sae-lens SAE), :class:`~cgaps.extract.stage.SAEDescription` |
| :class:`ScoreSource` | ``cgaps evaluate`` / ``grade`` / ``import`` | the own evaluator, a responses file, an imported log |
| :class:`LabelSource` | ``cgaps label`` | top activating contexts, imported labels |
| :class:`ChunkRunner` | ``cgaps evaluate``, ``cgaps extract`` | :class:`cgaps.runner.InProcess`, :class:`cgaps.scaleout.RayRunner` |

**Chunk runners.** Evaluation and extraction plan their work as numbered chunks and write every
result themselves (the resume file, the shards); only the model's work on a chunk is handed to
a :class:`ChunkRunner`. The stage gives the runner three plain functions: ``load(cfg)`` (the
model, loaded once per worker), ``describe(model)`` (what the driver needs to know of a model
it does not hold: a stand-in that satisfies the same protocol but computes nothing) and, per
chunk, ``work(model, *job)``. The runner decides where they run: in this process
(:class:`cgaps.runner.InProcess`) or on Ray workers (:mod:`cgaps.scaleout`). The functions are
module-level, so a runner that ships them to other processes sends them by name. Stages
never import a runner's implementation: the command line picks one and passes it in.

Torch and pandas types are named only for type checkers: importing this module is free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from cgaps.config import RunConfig

Messages = list[dict[str, str]]
"""A conversation: chat messages ``{"role": ..., "content": ...}``."""

Progress = Callable[[int], None]
"""Called with the number of units (items, tokens) just finished; drives a progress bar."""


@runtime_checkable
class Generator(Protocol):
    """The evaluated model: greedy responses and option log-likelihoods, and what it is."""

    name: str
    context_overflow: str
    """What to do with a prompt longer than the context less the new-token budget: ``truncate``
    (cut from the left, counted in :attr:`prompts_truncated`) or ``refuse`` (an error naming it).
    The evaluate stage sets it from the config. A generator that cannot cut a prompt itself
    (llama.cpp, a server) refuses such a prompt either way."""

    @property
    def backend(self) -> str:
        """What generates: ``transformers``, ``llamacpp``, ``vllm``, ``served`` (the names of
        :mod:`cgaps.models.backends`), or another name for a generator of one's own (recorded
        with the evaluation, never compared when deciding staleness)."""
        ...

    @property
    def generation_dtype(self) -> str | None:
        """The dtype it generates in when that is not the model's own (transformers generating
        from a bfloat16 copy of float32 weights); None otherwise."""
        ...

    @property
    def prompts_truncated(self) -> int:
        """How many prompts it has cut to fit its context so far (``context_overflow``)."""
        ...

    @property
    def loaded(self) -> dict[str, Any] | None:
        """What was really loaded (``run.json`` ``model.evaluated_loaded``: the file, its
        quantisation, the dtype and device), or None where it is not known (yet)."""
        ...

    def generate(
        self,
        conversations: Sequence[Messages | str],
        max_new_tokens: int | Sequence[int],
        batch_size: int,
        progress: Progress | None = None,
    ) -> list[str]:
        """One greedy response per conversation (the chat template applied by the generator; a
        plain string is read as it is, without the template)."""
        ...

    def loglikelihood(
        self,
        requests: Sequence[tuple[Messages | str, str]],
        batch_size: int,
        progress: Progress | None = None,
    ) -> list[float]:
        """Sum of the log-probabilities of each continuation after its context: a conversation
        (formatted with the chat template) or a plain string (read as it is)."""
        ...


@runtime_checkable
class ResidualReader(Protocol):
    """The reader model: its tokenizer and the residual stream after given blocks."""

    name: str
    n_layers: int
    hidden_size: int
    device: str
    tokenizer: Any
    """A transformers tokenizer (chat template, offsets, pad token)."""

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model computes in (residuals come back in it)."""
        ...

    @property
    def loaded(self) -> dict[str, Any] | None:
        """What was really loaded (``run.json`` ``model.reader_loaded``), None where not known."""
        ...

    def check_layer(self, layer: int) -> None:
        """Raise a CGapsError naming the valid range when ``layer`` is beyond the model."""
        ...

    def residuals_at(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layers: Sequence[int]
    ) -> dict[int, torch.Tensor]:
        """Residual stream after each block of ``layers`` ([batch, seq, d] each); later blocks never run."""
        ...

    def logits_with_edit(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        layer: int,
        edit: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> torch.Tensor:
        """Full-model logits ([batch, seq, vocab], float32, on CPU) with the residual after block
        ``layer`` replaced by ``edit(residual)`` (None: the clean forward)."""
        ...

    def unembed(self) -> tuple[torch.Tensor | None, torch.Tensor] | None:
        """What turns a direction of the residual stream into logits: ``(g, W_U)``, with ``g`` [d]
        the final norm's effective scale (None for a model without one) and ``W_U`` [V, d] the
        unembedding, so a direction ``v`` promotes the tokens of ``(v * g) @ W_U.T`` (the logit
        lens, without the norm's division, which only rescales). The model family's rules (Gemma's
        norm multiplies by 1 + weight) are the reader's to apply. None for a reader without an
        LM head."""
        ...


@runtime_checkable
class SAEEncoder(Protocol):
    """A sparse autoencoder of one residual layer, seen as concept activations."""

    sae_id: str
    width: int
    """F, the number of latents (concepts)."""
    layer: int
    hook_name: str

    @property
    def fingerprint(self) -> str:
        """A short hash of the weights (tells apart two SAEs behind one id)."""
        ...

    def encode(self, residuals: torch.Tensor) -> torch.Tensor:
        """Concept activations f >= 0 ([n, F], float32) of residuals [n, d] in any float dtype."""
        ...

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Reconstructed residuals [n, d] (float32) from codes [n, F]."""
        ...

    @property
    def W_dec(self) -> torch.Tensor:  # sae-lens calls it so
        """The decoder rows [F, d]: the direction each latent writes into the residual stream
        (in the SAE's dtype, on its device)."""
        ...


@runtime_checkable
class ScoreSource(Protocol):
    """Where an item's response and score y(x) come from: the own evaluator, or another system."""

    name: str

    def score(self, items: pd.DataFrame) -> pd.DataFrame:
        """Columns ``item_id``, ``response`` (str) and ``score`` (float in [0, 1]) for every item."""
        ...


@runtime_checkable
class LabelSource(Protocol):
    """Words for concepts: from the top contexts, imported, or written by a language model."""

    name: str
    """The ``source`` value its rows carry in ``labels.parquet``."""

    def labels(self, n_concepts: int) -> pd.DataFrame:
        """Columns ``concept`` (every id 0..F-1), ``label`` ('' when it has none) and ``source``."""
        ...


Model = TypeVar("Model")
Result = TypeVar("Result")


class Chunks(Protocol[Model]):
    """A stage's model, loaded where a :class:`ChunkRunner` runs it, and the way to run chunks on it."""

    name: str
    """The runner's name (``local``, ``ray``): run.json ``timings`` records ``{stage}_{name}_workers``."""
    workers: int | None
    """How many workers compute the chunks; None in this process."""
    models: list[Model]
    """What the driver sees of each worker's model: the model itself in this process, else its
    description (``describe(model)``), one per worker, so the stage can check that they agree."""

    @property
    def model(self) -> Model:
        """The first of :attr:`models`."""
        ...

    def map(
        self, work: Callable[..., Result], jobs: Sequence[tuple[Any, ...]]
    ) -> Iterator[tuple[int, Result]]:
        """``(index, work(model, *jobs[index]))`` for every job, each as it completes (in any
        order; in this process, in order). ``work`` is a module-level function."""
        ...


@runtime_checkable
class ChunkRunner(Protocol):
    """Where a stage's chunks are computed (see the module docstring).

    Entering a runner (``with runner:``) lets it keep what it starts (a Ray cluster) for every
    stage run inside the block; without it each :meth:`start` starts and stops its own.
    """

    def __enter__(self) -> ChunkRunner: ...

    def __exit__(self, *exc: object) -> None: ...

    def start(
        self,
        task: str,
        cfg: RunConfig,
        load: Callable[[RunConfig], Model],
        describe: Callable[[Model], Model],
    ) -> AbstractContextManager[Chunks[Model]]:
        """The stage's model loaded by ``load(cfg)`` wherever this runner computes (``task``
        names the stage in its messages: "evaluation", "extraction"); released on leaving the block."""
        ...
