"""The seams of the pipeline: one small interface per moving part.

Each stage talks to its moving parts only through these protocols, so a new backend (vLLM,
llama.cpp, an API), a new SAE family, an imported harness log or a new label source plugs in
without touching the stages. Implementations in this package:

| protocol | used by | implementations |
| --- | --- | --- |
| :class:`Generator` | ``cgaps evaluate`` | :class:`cgaps.models.HFBackend` |
| :class:`ResidualReader` | ``cgaps extract``, the SAE activation cache, SAE metrics | :class:`cgaps.models.HFBackend` |
| :class:`SAEEncoder` | ``cgaps extract``, SAE metrics | :class:`cgaps.sae.LoadedSAE` (any sae-lens SAE) |
| :class:`ScoreSource` | ``cgaps evaluate`` / ``cgaps grade`` | the own evaluator, a responses file |
| :class:`LabelSource` | ``cgaps extract`` (provisional labels) | top activating contexts |

Torch and pandas types are named only for type checkers: importing this module is free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd
    import torch

Messages = list[dict[str, str]]
"""A conversation: chat messages ``{"role": ..., "content": ...}``."""

Progress = Callable[[int], None]
"""Called with the number of units (items, tokens) just finished; drives a progress bar."""


@runtime_checkable
class Generator(Protocol):
    """The evaluated model: greedy responses and option log-likelihoods."""

    name: str

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


@runtime_checkable
class ScoreSource(Protocol):
    """Where an item's response and score y(x) come from: the own evaluator, or another system."""

    name: str

    def score(self, items: pd.DataFrame) -> pd.DataFrame:
        """Columns ``item_id``, ``response`` (str) and ``score`` (float in [0, 1]) for every item."""
        ...


@runtime_checkable
class LabelSource(Protocol):
    """Words for concepts: provisional (top contexts), imported, or written by a language model."""

    name: str
    """The ``source`` value its rows carry in ``labels.parquet``."""

    def labels(self, n_concepts: int) -> pd.DataFrame:
        """Columns ``concept`` (every id 0..F-1), ``label`` ('' when it has none) and ``source``."""
        ...
