"""Chat formatting and the one rule for which tokens are *content*.

:func:`format_chat` renders a conversation with the tokenizer's chat template and records
where each message's content lies in the text (character spans). :func:`content_mask` then
decides which tokens carry content; extraction (``cgaps extract``), the SAE activation cache
and the SAE metrics all apply this one rule, so an SAE is trained on the same kind of tokens
it is later asked to encode (docs/method.md §2).

A token is content when

- its characters lie *fully* inside a content span (a token straddling a span's edge mixes
  content with scaffold),
- it covers at least one character (byte-fallback pieces of one character after the first
  have an empty span),
- it is not a special token (BOS, ``<|im_start|>``...), and
- it is not at position 0, whose residual is an attention sink (~100x the median norm on
  SmolLM2) whatever the token is.

The template's scaffold (role markers, special tokens, the default system prompt) is never
content: :class:`Formatted` spans cover message contents only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cgaps.errors import CGapsError
from cgaps.seams import Messages

Span = tuple[int, int]

CONTENT_RULE = "fully inside a content span, non-empty, not special, not position 0"
"""The rule of :func:`content_mask` in words; resumable outputs record it, so work done under
another rule is never mixed in."""


@dataclass
class Formatted:
    """A conversation rendered with the chat template, and which characters are content.

    ``prompt_spans`` / ``response_spans`` are (start, end) character ranges of message
    contents (user/assistant turns before the response; the response itself). The
    template's scaffold (role markers, special tokens, default system prompt) lies outside.
    """

    text: str
    prompt_spans: list[Span]
    response_spans: list[Span]


def conversation(item: dict[str, Any]) -> Messages:
    """The chat messages of an item: its ``messages`` JSON if given, else one user turn."""
    raw = item.get("messages")
    if isinstance(raw, str) and raw.strip():
        msgs = json.loads(raw)
        if not isinstance(msgs, list) or not all(
            isinstance(m, dict) and "role" in m and "content" in m for m in msgs
        ):
            raise CGapsError(
                f"item {item.get('item_id')!r}: field 'messages' must be a JSON list of {{role, content}}"
            )
        return msgs
    return [{"role": "user", "content": str(item["prompt"])}]


def format_chat(tokenizer: Any, messages: Messages, response: str | None = None) -> Formatted:
    """Render ``messages`` (+ the model's ``response``) and locate each content span."""
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if has_template:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages) + "Assistant:"
    prompt_spans: list[Span] = []
    cursor = 0
    for m in messages:
        content = m["content"]
        if not content:
            continue
        start = text.find(content, cursor)
        if start < 0:  # a template that rewrites content: fall back to "everything is prompt"
            prompt_spans = [(0, len(text))]
            break
        if m["role"] != "system":
            prompt_spans.append((start, start + len(content)))
        cursor = start + len(content)
    response_spans: list[Span] = []
    if response is not None:
        if not has_template:
            text += " "
        start = len(text)
        text += response
        response_spans.append((start, len(text)))
    return Formatted(text, prompt_spans, response_spans)


def prompt_text(tokenizer: Any, prompt: Messages | str) -> str:
    """The text a model reads for a prompt: a conversation through the chat template
    (:func:`format_chat`), a plain string as it is (``chat_template: false``). Every generation
    backend (transformers, llama.cpp, vLLM) reads this text, tokenised by :func:`prompt_ids`."""
    return prompt if isinstance(prompt, str) else format_chat(tokenizer, prompt).text


def prompt_ids(tokenizer: Any, prompt: Messages | str) -> list[int]:
    """The token ids every generation backend feeds the model for a prompt: :func:`prompt_text`
    tokenised by the Hugging Face tokenizer without added special tokens (the template has them)."""
    return list(tokenizer(prompt_text(tokenizer, prompt), add_special_tokens=False)["input_ids"])


def content_mask(offsets: Sequence[Span], spans: Sequence[Span], special: np.ndarray) -> np.ndarray:
    """The content rule (module docstring): which tokens, given their character ``offsets``, are content.

    ``special[t]`` says whether token t is a special token. Returns a bool array, one per token.
    """
    n = len(offsets)
    if n == 0:
        return np.zeros(0, dtype=bool)
    off = np.asarray(offsets, dtype=np.int64).reshape(n, 2)
    starts, ends = off[:, 0], off[:, 1]
    inside = np.zeros(n, dtype=bool)
    for a, b in spans:
        inside |= (starts >= a) & (ends <= b)
    mask = inside & (ends > starts) & ~np.asarray(special, dtype=bool)
    mask[0] = False
    return mask


@dataclass
class ChatTokens:
    """A rendered conversation as tokens, with each token's character span and the content mask."""

    input_ids: list[int]
    offsets: list[Span]
    content: np.ndarray
    """bool per token: :func:`content_mask` of the chosen spans."""
    cut: int = 0
    """Tokens dropped at the end by ``max_length`` (extraction counts the items with any)."""


def tokenize_content(
    tokenizer: Any, text: str, spans: Sequence[Span], max_length: int | None = None
) -> ChatTokens:
    """Tokenise a formatted ``text`` (no special tokens added: the template has them), keep the
    first ``max_length`` tokens and mark the content tokens of ``spans``."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"][:max_length])
    offsets = [(int(a), int(b)) for a, b in enc["offset_mapping"][: len(ids)]]
    special_ids = set(tokenizer.all_special_ids)
    special = np.array([i in special_ids for i in ids], dtype=bool)
    cut = len(enc["input_ids"]) - len(ids)
    return ChatTokens(ids, offsets, content_mask(offsets, spans, special), cut)
