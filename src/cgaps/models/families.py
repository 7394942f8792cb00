"""What differs between model families, in one place (the stages never ask which family a model is).

Today one rule: how the final norm before the LM head scales the residual stream, which the
logit lens of a direction needs (:meth:`cgaps.models.hf.HFBackend.unembed`, used for the labels'
output tokens, docs/method.md §5). Llama, Mistral, Qwen and SmolLM's RMSNorm multiply by
``weight``; Gemma's (all its generations) by ``1 + weight``, its weights being stored as offsets
from one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# model_type values (transformers) whose RMSNorm multiplies by 1 + weight
_NORM_PLUS_ONE = "gemma"  # gemma, gemma2, gemma3, gemma3_text...


def final_norm_scale(model: Any) -> torch.Tensor | None:
    """The effective scale [d] of a transformers causal LM's final norm (the one before its LM head),
    or None where the model has none (or it is not where decoder-only models keep it, ``model.norm``)."""
    inner = getattr(model, "model", None)
    norm = getattr(inner, "norm", None)
    if norm is None:  # multimodal wrappers keep the text model one level down
        norm = getattr(getattr(inner, "language_model", None), "norm", None)
    scale = getattr(norm, "weight", None)
    if scale is not None and _NORM_PLUS_ONE in str(getattr(model.config, "model_type", "")):
        scale = scale + 1
    return scale
