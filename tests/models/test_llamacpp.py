"""The llama.cpp backend: errors without a model, greedy answers against transformers, prefix
reuse against the plain path."""

from __future__ import annotations

import pytest

from cgaps.errors import CGapsError
from cgaps.models.llamacpp import LlamaCppBackend, llamacpp_available

# measured: 16 of the 24 probe items of per_family=2 give identical answers (docs/results.md,
# "Speed and scale"); a backend that read the wrong tokens or logits would agree on ~none
AGREE_AT_LEAST = 0.5


def test_only_gguf_files_and_no_loglikelihood():
    with pytest.raises(CGapsError, match="GGUF"):
        LlamaCppBackend.load("org/not-a-gguf")
    backend = LlamaCppBackend.__new__(LlamaCppBackend)  # no model needed to refuse log-likelihoods
    with pytest.raises(CGapsError, match="transformers backend"):
        backend.loglikelihood([([{"role": "user", "content": "x"}], "y")], 1)


@pytest.mark.slow
@pytest.mark.skipif(not llamacpp_available(), reason="llama-cpp-python is not installed (extra 'llamacpp')")
def test_probe_answers_agree_with_transformers(smollm):
    """The GGUF's quantised weights through llama.cpp against their float32 de-quantisation in
    transformers: the same prompts, token ids and greedy rule, so answers differ only where a
    near-tie falls the other way. One item per probe family, the evaluator's budgets."""
    from cgaps.config import RunConfig
    from cgaps.evaluate.evaluator import budget
    from cgaps.items.probes import load_probes
    from cgaps.models import conversation

    items = load_probes(per_family=1)
    convs = [conversation(r) for r in items]
    budgets = [budget(r, RunConfig()) for r in items]
    want = smollm.generate(convs, budgets, 8)
    got = LlamaCppBackend.load("embedded").generate(convs, budgets, 8)
    same = sum(a == b for a, b in zip(want, got, strict=True))
    assert all(g.strip() for g in got)  # real answers, not empty strings
    assert same >= AGREE_AT_LEAST * len(items), list(zip(want, got, strict=True))


needs_llamacpp = pytest.mark.skipif(
    not llamacpp_available(), reason="llama-cpp-python is not installed (extra 'llamacpp')"
)


def test_common_prefix():
    from cgaps.models.llamacpp import common_prefix

    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([1, 2], [1, 2]) == 2


@pytest.mark.slow
@needs_llamacpp
def test_prefix_reuse_gives_the_plain_path_s_answers():
    """The plain reference: each prompt evaluated from an empty cache. Reusing the previous
    prompt's cache for the shared prefix gives the same answers."""
    from cgaps.config import RunConfig
    from cgaps.evaluate.evaluator import budget
    from cgaps.items.probes import load_probes
    from cgaps.models import conversation

    items = load_probes(per_family=1)
    convs = [conversation(r) for r in items]
    budgets = [budget(r, RunConfig(max_new_tokens=48)) for r in items]
    backend = LlamaCppBackend.load("embedded")
    backend.reuse_prefix = False
    plain = backend.generate(convs, budgets, 1)
    backend.reuse_prefix = True
    assert backend.generate(convs, budgets, 1) == plain
    assert all(a.strip() for a in plain)
