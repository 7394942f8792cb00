"""Models: loading, chat formatting, batching and the transformers backend.

- :mod:`~cgaps.models.loading`: hub id, local folder, GGUF (de-quantised once into the cache
  directory) or the embedded SmolLM2; device and dtype choice (the one dtype-name map);
- :mod:`~cgaps.models.chat`: chat-template rendering with content spans, and the one rule for
  which tokens are content (extraction, the SAE cache and the SAE metrics share it);
- :mod:`~cgaps.models.batching`: length-sorted batches and right padding with an attention mask;
- :mod:`~cgaps.models.hf`: :class:`HFBackend`, a transformers causal LM as both a
  :class:`~cgaps.seams.Generator` and a :class:`~cgaps.seams.ResidualReader`.

The stages see a model only through those two protocols (:mod:`cgaps.seams`).
"""

from __future__ import annotations

from cgaps.models.batching import length_batches, pad_batch, right_pad
from cgaps.models.chat import (
    CONTENT_RULE,
    ChatTokens,
    Formatted,
    content_mask,
    conversation,
    format_chat,
    tokenize_content,
)
from cgaps.models.hf import HFBackend, load_backend
from cgaps.models.loading import (
    DTYPES,
    EMBEDDED_GGUF,
    EMBEDDED_NAME,
    EMBEDDED_PACKAGE,
    cache_dir,
    convert_gguf,
    embedded_gguf,
    pick_device,
    pick_dtype,
    resolve_model,
    torch_dtype,
)

__all__ = [
    "CONTENT_RULE",
    "DTYPES",
    "EMBEDDED_GGUF",
    "EMBEDDED_NAME",
    "EMBEDDED_PACKAGE",
    "ChatTokens",
    "Formatted",
    "HFBackend",
    "cache_dir",
    "content_mask",
    "conversation",
    "convert_gguf",
    "embedded_gguf",
    "format_chat",
    "length_batches",
    "load_backend",
    "pad_batch",
    "pick_device",
    "pick_dtype",
    "resolve_model",
    "right_pad",
    "tokenize_content",
    "torch_dtype",
]
