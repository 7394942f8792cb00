"""The test factories against what they stand in for (helpers.py)."""

from __future__ import annotations

import pytest

from cgaps.models import format_chat
from helpers import embedded_tokenizer


@pytest.mark.slow
def test_embedded_tokenizer_is_the_converted_models(smollm):
    """The fast tests' tokenizer (GGUF metadata only) tokenizes like the converted SmolLM2 folder's."""
    fast, ref = embedded_tokenizer(), smollm.tokenizer
    assert fast.get_vocab() == ref.get_vocab()
    assert fast.all_special_ids == ref.all_special_ids
    assert (fast.bos_token_id, fast.eos_token_id, fast.pad_token_id) == (
        ref.bos_token_id,
        ref.eos_token_id,
        ref.pad_token_id,
    )
    assert fast.chat_template == ref.chat_template
    msgs = [{"role": "user", "content": "Ünïcode, digits 12345 and\ttabs: what is 2+2?"}]
    text = format_chat(ref, msgs, "It is 4 <b>bold</b>.").text
    assert format_chat(fast, msgs, "It is 4 <b>bold</b>.").text == text
    got = fast(text, return_offsets_mapping=True, add_special_tokens=False)
    want = ref(text, return_offsets_mapping=True, add_special_tokens=False)
    assert got["input_ids"] == want["input_ids"] and got["offset_mapping"] == want["offset_mapping"]
