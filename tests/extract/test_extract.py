"""Extraction: the batched, hook-stopped, pooled fast path against a plain per-item reference."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.errors import CGapsError
from cgaps.extract.stage import extract_run
from cgaps.models import HFBackend, conversation, format_chat
from helpers import embedded_tokenizer, loaded_sae

ITEMS = pd.DataFrame(
    {
        "item_id": ["a", "b", "c", "d", "e"],
        "benchmark": ["x", "x", "y", "y", "y"],
        "prompt": [
            "What is 2+2?",
            "Name a colour.",
            "Spell 'cat' backwards, please, letter by letter.",
            "Hi",
            "Why?",
        ],
        "reference": ["4", "red", "tac", "hello", "because"],
        "response": ["4", "Blue is a colour.", "t-a-c", "Hello! How can I help you today?", ""],
        "score": [1.0, 1.0, 0.0, 1.0, 0.0],
        "messages": [
            None,
            None,
            None,
            None,
            json.dumps(
                [
                    {"role": "user", "content": "Why?"},
                    {"role": "assistant", "content": "Why not."},
                    {"role": "user", "content": "Explain."},
                ]
            ),
        ],
    }
)


def reference_saliency(backend, sae, layer, items, cfg: RunConfig) -> dict[tuple[str, int], float]:
    """One item at a time, full forward with output_hidden_states, token loop for the mask."""
    tok = backend.tokenizer
    special = set(tok.all_special_ids)
    out = {}
    for item in items.to_dict("records"):
        fmt = format_chat(tok, conversation(item), item["response"] if cfg.span != "prompt" else None)
        spans = {
            "prompt": fmt.prompt_spans,
            "response": fmt.response_spans,
            "both": fmt.prompt_spans + fmt.response_spans,
        }[cfg.span]
        enc = tok(fmt.text, return_offsets_mapping=True, add_special_tokens=False)
        keep = []
        for t, (tid, (a, b)) in enumerate(zip(enc["input_ids"], enc["offset_mapping"], strict=True)):
            # the content rule: fully inside a span, non-empty, not special, not position 0
            content = t > 0 and b > a and any(s <= a and b <= e for s, e in spans) and tid not in special
            if not cfg.skip_special or content:
                keep.append(t)
        if not keep:
            continue
        ids = torch.tensor([enc["input_ids"]])
        hs = backend.model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1][0]
        f = sae.encode(hs[keep])
        for c in range(f.shape[1]):
            col = f[:, c]
            v = {"max": col.max(), "sum": col.sum(), "mean": col.mean()}[cfg.pool].item()
            if v > 0:
                out[(item["item_id"], c)] = v
    return out


@pytest.mark.parametrize("pool", ["max", "mean", "sum"])
@pytest.mark.parametrize("span", ["prompt", "response", "both"])
def test_extraction_matches_plain_reference(tmp_path, tiny_backend, pool, span):
    spec = loaded_sae(tiny_backend.hidden_size)
    cfg = RunConfig(pool=pool, span=span, batch_size=2, max_norm_ratio=None)
    rundir.write_table(ITEMS, tmp_path / rundir.ITEMS)
    sal = extract_run(tmp_path, cfg, backend=tiny_backend, sae_spec=spec)
    got = {
        (i, int(c)): float(v) for i, c, v in zip(sal["item_id"], sal["concept"], sal["value"], strict=True)
    }
    want = reference_saliency(tiny_backend, spec.sae, spec.layer, ITEMS, cfg)
    assert set(got) == set(want)
    keys = sorted(want)
    torch.testing.assert_close(
        torch.tensor([got[k] for k in keys]), torch.tensor([want[k] for k in keys]), rtol=1e-4, atol=1e-5
    )
    meta = rundir.read_run_json(tmp_path)
    assert meta["n_concepts"] == spec.width
    # the written table passes the reader's validation and reads back as returned
    back = rundir.read_saliency(tmp_path, pd.Index(ITEMS["item_id"]), spec.width)
    pd.testing.assert_frame_equal(back.reset_index(drop=True), sal.reset_index(drop=True))


def test_keep_special_includes_scaffold_tokens(tmp_path, tiny_backend):
    spec = loaded_sae(tiny_backend.hidden_size)
    cfg = RunConfig(skip_special=False, max_norm_ratio=None)
    rundir.write_table(ITEMS, tmp_path / rundir.ITEMS)
    sal = extract_run(tmp_path, cfg, backend=tiny_backend, sae_spec=spec)
    want = reference_saliency(tiny_backend, spec.sae, spec.layer, ITEMS, cfg)
    assert len(sal) == len(want)
    meta = rundir.read_run_json(tmp_path)
    n_tokens = sum(
        len(
            tiny_backend.tokenizer(
                format_chat(tiny_backend.tokenizer, conversation(r), r["response"]).text,
                add_special_tokens=False,
            )["input_ids"]
        )
        for r in ITEMS.to_dict("records")
    )
    assert meta["counts"]["tokens_analysed"] == n_tokens


def test_top_k_and_contexts(tmp_path, tiny_backend):
    spec = loaded_sae(tiny_backend.hidden_size)
    rundir.write_table(ITEMS, tmp_path / rundir.ITEMS)
    rundir.write_table(ITEMS, tmp_path / "full" / rundir.ITEMS)
    full = extract_run(tmp_path / "full", RunConfig(max_norm_ratio=None), backend=tiny_backend, sae_spec=spec)
    sal = extract_run(tmp_path, RunConfig(top_k=3, max_norm_ratio=None), backend=tiny_backend, sae_spec=spec)
    assert sal.groupby("item_id").size().max() == 3
    for item_id, grp in sal.groupby("item_id"):
        best = full[full["item_id"] == item_id].nlargest(3, "value")
        assert sorted(grp["concept"]) == sorted(best["concept"])
    ctx = pd.read_parquet(tmp_path / "full" / rundir.CONTEXTS)
    assert list(ctx.columns) == list(rundir.CONTEXT_COLUMNS)
    # the top context of each concept is its highest-saliency item, and the token is real text
    for concept, grp in ctx.groupby("concept"):
        top = full[full["concept"] == concept]["value"].max()
        assert grp.loc[grp["rank"] == 0, "value"].iloc[0] == pytest.approx(top)
        assert (grp["token"].str.len() > 0).all()
    # the text around the firing token is a window of the reader's tokens (12 each side)
    from cgaps.extract.contexts import WINDOW_TOKENS

    for r in ctx.itertuples():
        item = ITEMS[ITEMS["item_id"] == r.item_id].iloc[0].to_dict()
        text = format_chat(tiny_backend.tokenizer, conversation(item), item["response"]).text
        enc = tiny_backend.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        starts = [a for a, _ in enc["offset_mapping"]]
        at = text.index(r.left + r.token + r.right)
        i = starts.index(at + len(r.left))
        assert at == starts[max(i - WINDOW_TOKENS, 0)]
        assert len(r.left) > 0 or i == 0
    # labels.parquet is the labels stage's alone (its top-context labels come from this table)
    assert not (tmp_path / "full" / rundir.LABELS).exists()


# ---------------------------------------------------------------- top contexts (cgaps.extract.contexts)


def _window_reference(offsets, start, end, n):
    """Plain reference for token_window: index the tokens one by one."""
    first = [i for i, (a, b) in enumerate(offsets) if a <= start < max(b, a + 1)][0]
    last = [i for i, (a, b) in enumerate(offsets) if a < end <= b][-1]
    lo = offsets[max(first - n, 0)][0]
    hi = offsets[min(last + n, len(offsets) - 1)][1]
    return min(lo, start), max(hi, end)


def test_token_window_matches_a_plain_reference():
    from cgaps.extract.contexts import token_window

    rng = __import__("random").Random(0)
    for _ in range(200):
        lengths = [rng.randint(1, 6) for _ in range(rng.randint(1, 40))]
        offsets, pos = [], 0
        for n_chars in lengths:
            offsets.append((pos, pos + n_chars))
            pos += n_chars
        i = rng.randrange(len(offsets))
        j = min(i + rng.randint(0, 2), len(offsets) - 1)  # a span over up to three tokens
        n = rng.randint(0, 15)
        a, b = offsets[i][0], offsets[j][1]
        assert token_window(offsets, a, b, n) == _window_reference(offsets, a, b, n)
    # twelve tokens each side, clipped at the text's ends
    offsets = [(k * 2, k * 2 + 2) for k in range(30)]
    assert token_window(offsets, 40, 42, 12) == (16, 60)
    assert token_window(offsets, 2, 4, 12) == (0, 28)


def test_top_contexts_keeps_a_window_of_tokens():
    from cgaps.extract.contexts import WINDOW_TOKENS, top_contexts

    words = [f"w{k:02d} " for k in range(40)]
    text = "".join(words)
    offsets = [(k * 4, k * 4 + 4) for k in range(40)]
    shards = pd.DataFrame(
        {
            "item_id": ["a", "a"],
            "concept": [0, 1],
            "value": [2.0, 1.0],
            "peak_start": [80, 4],
            "peak_end": [84, 8],
        }
    )
    ctx = top_contexts(shards, {"a": text}, offsets={"a": offsets}).set_index("concept")
    assert ctx.loc[0, "token"] == "w20 "
    assert ctx.loc[0, "left"] == "".join(words[20 - WINDOW_TOKENS : 20])
    assert ctx.loc[0, "right"] == "".join(words[21 : 21 + WINDOW_TOKENS])
    assert ctx.loc[1, "left"] == "w00 " and ctx.loc[1, "right"] == "".join(words[2 : 2 + WINDOW_TOKENS])
    # without token spans: characters
    chars = top_contexts(shards, {"a": text}).set_index("concept")
    assert chars.loc[0, "left"] == text[0:80] and chars.loc[0, "right"] == text[84:164]


@pytest.mark.integration
def test_resume_after_interruption(tmp_path, tiny_backend, monkeypatch):
    import cgaps.extract.stage as act

    spec = loaded_sae(tiny_backend.hidden_size)
    items = pd.concat([ITEMS.assign(item_id=ITEMS["item_id"] + str(i)) for i in range(3)], ignore_index=True)
    rundir.write_table(items, tmp_path / rundir.ITEMS)
    cfg = RunConfig(max_norm_ratio=None, batch_size=2)
    monkeypatch.setattr(act, "SHARD_ITEMS", 4)
    rundir.write_table(items, tmp_path / "ref" / rundir.ITEMS)
    uninterrupted = extract_run(tmp_path / "ref", cfg, backend=tiny_backend, sae_spec=spec)

    calls = {"n": 0}
    real = act.extract_chunk

    def dies_on_third(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(act, "extract_chunk", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        extract_run(tmp_path, cfg, backend=tiny_backend, sae_spec=spec)
    assert len(list((tmp_path / rundir.SALIENCY_SHARDS).glob("shard-*.json"))) == 2
    monkeypatch.setattr(act, "extract_chunk", real)
    done = {"n": 0}

    def counting(*args, **kw):
        done["n"] += len(args[3])
        return real(*args, **kw)

    monkeypatch.setattr(act, "extract_chunk", counting)
    resumed = extract_run(tmp_path, cfg, backend=tiny_backend, sae_spec=spec)
    assert done["n"] == len(items) - 8  # only the items of the missing shards were redone
    pd.testing.assert_frame_equal(resumed.reset_index(drop=True), uninterrupted.reset_index(drop=True))
    # changed settings do not silently mix with the old shards
    (tmp_path / rundir.SALIENCY).unlink()
    # (the message names the setting that differs: issue 23)
    with pytest.raises(CGapsError, match=r"other settings \(pool 'max' there, 'sum' now\)"):
        extract_run(tmp_path, cfg.replace(pool="sum"), backend=tiny_backend, sae_spec=spec)
    # so does an SAE with the same id but other weights (a folder retrained in place)
    retrained = loaded_sae(tiny_backend.hidden_size, seed=2)
    assert retrained.sae_id == spec.sae_id and retrained.fingerprint != spec.fingerprint
    with pytest.raises(
        CGapsError, match=r"other settings \(sae_fingerprint '[0-9a-f]+' there, '[0-9a-f]+' now\)"
    ):
        extract_run(tmp_path, cfg, backend=tiny_backend, sae_spec=retrained)
    assert loaded_sae(tiny_backend.hidden_size).fingerprint == spec.fingerprint  # same weights, same hash
    # and a reader in another dtype (its residuals differ): the resolved dtype is in the signature
    import copy

    half = HFBackend(
        copy.deepcopy(tiny_backend.model).to(torch.bfloat16),
        tiny_backend.tokenizer,
        tiny_backend.name,
        tiny_backend.device,
    )
    with pytest.raises(CGapsError, match=r"other settings \(reader_dtype 'float32' there, 'bfloat16' now\)"):
        extract_run(tmp_path, cfg, backend=half, sae_spec=spec)


def test_outlier_tokens_are_dropped_and_counted(tmp_path, tiny_backend):
    spec = loaded_sae(tiny_backend.hidden_size)
    rundir.write_table(ITEMS, tmp_path / rundir.ITEMS)
    extract_run(tmp_path, RunConfig(max_norm_ratio=1.2), backend=tiny_backend, sae_spec=spec)
    counts = rundir.read_run_json(tmp_path)["counts"]
    assert 0 < counts["tokens_outlier_dropped"] < counts["tokens_analysed"]


def test_layer_beyond_depth(tiny_backend):
    with pytest.raises(CGapsError, match="beyond model tiny-llama, which has 4 layers"):
        tiny_backend.residuals(torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long), 7)


def test_residual_hook_matches_hidden_states(tiny_backend):
    ids = torch.tensor([[5, 6, 7, 8]])
    h = tiny_backend.residuals(ids, torch.ones_like(ids), 1)
    ref = tiny_backend.model(input_ids=ids, output_hidden_states=True).hidden_states[2]
    torch.testing.assert_close(h, ref)


@pytest.mark.slow
def test_smollm_position_zero_is_an_outlier_and_skipped(smollm):
    tok = smollm.tokenizer
    fmt = format_chat(tok, [{"role": "user", "content": "What is the capital of France?"}], "Paris.")
    enc = tok(fmt.text, return_tensors="pt", add_special_tokens=False)
    norms = smollm.residuals(enc["input_ids"], enc["attention_mask"], 20)[0].norm(dim=-1)
    assert norms[0] > 20 * norms[1:].median()
    from cgaps.extract.stage import encode_items

    items = pd.DataFrame(
        {"item_id": ["q"], "prompt": ["What is the capital of France?"], "response": ["Paris."]}
    )
    (e,) = encode_items(items, tok, RunConfig())
    assert not e.mask[0]
    analysed = "".join(e.text[a:b] for (a, b), m in zip(e.offsets, e.mask, strict=True) if m)
    assert analysed == "What is the capital of France?Paris."


CONVERSATIONS = [
    ([{"role": "user", "content": "What is 2+2?"}], "4"),
    (
        [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "  Name a colour, please.\n"},
        ],
        "\nBlue.  ",
    ),
    (
        [
            {"role": "user", "content": "Why?"},
            {"role": "assistant", "content": "Why not."},
            {"role": "user", "content": "Explain \u00e9l\u00e8ve \U0001f600 <|im_end|> please."},
        ],
        "Because \U0001f600.",
    ),
]


def test_extraction_and_sae_cache_select_the_same_tokens():
    """The SAE is trained on the tokens extraction later encodes: one rule, same ids and mask."""
    from cgaps.extract.stage import encode_items
    from cgaps.sae.training.cache import render

    tok = embedded_tokenizer()
    items = pd.DataFrame(
        {
            "item_id": [str(i) for i in range(len(CONVERSATIONS))],
            "prompt": [msgs[-1]["content"] for msgs, _ in CONVERSATIONS],
            "response": [response for _, response in CONVERSATIONS],
            "messages": [json.dumps(msgs) for msgs, _ in CONVERSATIONS],
        }
    )
    encoded = encode_items(items, tok, RunConfig(span="both"))
    for (msgs, response), e in zip(CONVERSATIONS, encoded, strict=True):
        ids, keep = render(tok, [*msgs, {"role": "assistant", "content": response}], RunConfig().max_length)
        assert e.input_ids == ids
        assert e.mask.tolist() == keep
        assert 0 < sum(keep) < len(keep)
    # the special-token text inside a message and the system prompt are not content
    analysed = "".join(e.text[a:b] for (a, b), m in zip(e.offsets, e.mask, strict=True) if m)
    assert "<|im_end|>" not in analysed and "terse" not in "".join(
        encoded[1].text[a:b] for (a, b), m in zip(encoded[1].offsets, encoded[1].mask, strict=True) if m
    )


def test_content_mask_rule():
    """Position 0, tokens straddling a span edge, empty and special tokens are not content."""
    import numpy as np

    from cgaps.models import content_mask

    #            0: pos 0   1: in    2: straddles  3: empty  4: special  5: in    6: outside
    offsets = [(10, 12), (12, 14), (19, 22), (15, 15), (14, 16), (30, 35), (40, 41)]
    special = np.array([False, False, False, False, True, False, False])
    got = content_mask(offsets, [(10, 20), (30, 40)], special)
    assert got.tolist() == [False, True, False, False, False, True, False]
    # against a plain loop on random offsets
    rng = np.random.default_rng(0)
    starts = rng.integers(0, 60, 200)
    offsets = [(int(a), int(a + w)) for a, w in zip(starts, rng.integers(0, 4, 200), strict=True)]
    spans = [(5, 17), (20, 21), (33, 50)]
    special = rng.random(200) < 0.1
    want = [
        t > 0 and b > a and not special[t] and any(s <= a and b <= e for s, e in spans)
        for t, (a, b) in enumerate(offsets)
    ]
    assert content_mask(offsets, spans, special).tolist() == want


def _damage_sidecar_not_json(shards: Path) -> None:
    (shards / "shard-00001.json").write_text('{"item_ids": ["a", ')


def _damage_sidecar_wrong_types(shards: Path) -> None:
    (shards / "shard-00001.json").write_text('{"item_ids": "k/1", "digests": 3}')


def _damage_sidecar_unequal_lists(shards: Path) -> None:
    path = shards / "shard-00001.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "digests": meta["digests"][:-1]}))


def _damage_shard_truncated(shards: Path) -> None:
    path = shards / "shard-00001.parquet"
    path.write_bytes(path.read_bytes()[:200])  # what a full disk or a stopped copy leaves


def _damage_shard_column(shards: Path) -> None:
    path = shards / "shard-00001.parquet"
    pd.read_parquet(path).drop(columns="peak_end").to_parquet(path)


@pytest.mark.parametrize(
    "damage",
    [
        _damage_sidecar_not_json,
        _damage_sidecar_wrong_types,
        _damage_sidecar_unequal_lists,
        _damage_shard_truncated,
        _damage_shard_column,
    ],
)
def test_a_damaged_shard_is_redone_not_fatal(tmp_path, tiny_backend, monkeypatch, damage):
    """Issue 23: a damaged shard (its Parquet cut short, its sidecar not the JSON it should be)
    is deleted and only its items are extracted again; the tables equal an undamaged run's."""
    import cgaps.extract.stage as act

    monkeypatch.setattr(act, "SHARD_ITEMS", 4)
    spec = loaded_sae(tiny_backend.hidden_size)
    cfg = RunConfig(max_norm_ratio=None)
    reference = _fresh(tmp_path, "reference", ITEMS, cfg, tiny_backend, spec)
    run = tmp_path / "reference"
    shards = run / rundir.SALIENCY_SHARDS
    in_shard = json.loads((shards / "shard-00001.json").read_text())["item_ids"]
    contexts = pd.read_parquet(run / rundir.CONTEXTS)
    damage(shards)
    seen = _counting(monkeypatch)
    again = extract_run(run, cfg, backend=tiny_backend, sae_spec=spec)
    assert sorted(seen) == sorted(in_shard)  # that shard's items, and only those
    pd.testing.assert_frame_equal(again.reset_index(drop=True), reference.reset_index(drop=True))
    pd.testing.assert_frame_equal(pd.read_parquet(run / rundir.CONTEXTS), contexts)
    # the damaged shard is gone; its items are in a new, whole one
    covered = [i for f in shards.glob("shard-*.json") for i in json.loads(f.read_text())["item_ids"]]
    assert sorted(covered) == sorted(ITEMS["item_id"])


@pytest.mark.parametrize("manifest", [b"\xff\xfe", b'{"signature": ', b"[1]", None])
def test_a_damaged_or_missing_manifest_redoes_every_shard(tmp_path, tiny_backend, monkeypatch, manifest):
    """The manifest holds the shards' settings: damaged (or deleted by hand, shards left), the
    settings of the shards are unknown, so every item is extracted again."""
    import cgaps.extract.stage as act

    monkeypatch.setattr(act, "SHARD_ITEMS", 4)
    spec = loaded_sae(tiny_backend.hidden_size)
    cfg = RunConfig(max_norm_ratio=None)
    reference = _fresh(tmp_path, "run", ITEMS, cfg, tiny_backend, spec)
    path = tmp_path / "run" / rundir.SALIENCY_SHARDS / act.MANIFEST
    if manifest is None:
        path.unlink()
    else:
        path.write_bytes(manifest)
    seen = _counting(monkeypatch)
    again = extract_run(tmp_path / "run", cfg, backend=tiny_backend, sae_spec=spec)
    assert sorted(seen) == sorted(ITEMS["item_id"])
    pd.testing.assert_frame_equal(again.reset_index(drop=True), reference.reset_index(drop=True))
    assert json.loads(path.read_text())["signature"]["pool"] == cfg.pool


# ------------------------------------------------------------------ shards keyed by content (issue 14)


def _counting(monkeypatch):
    """Patch extract_chunk to count the items it extracts; returns the list of item ids seen."""
    import cgaps.extract.stage as act

    seen: list[str] = []
    real = act.extract_chunk

    def counting(*args, **kw):
        seen.extend(e.item_id for e in args[3])
        return real(*args, **kw)

    monkeypatch.setattr(act, "extract_chunk", counting)
    return seen


def _fresh(tmp_path, name, items, cfg, backend, spec):
    rundir.write_table(items, tmp_path / name / rundir.ITEMS)
    return extract_run(tmp_path / name, cfg, backend=backend, sae_spec=spec)


def _items15():
    return pd.concat([ITEMS.assign(item_id=ITEMS["item_id"] + str(i)) for i in range(3)], ignore_index=True)


def test_changed_responses_are_extracted_again(tmp_path, tiny_backend, monkeypatch, capsys):
    spec = loaded_sae(tiny_backend.hidden_size)
    cfg = RunConfig(max_norm_ratio=None, batch_size=2)
    rundir.write_table(ITEMS, tmp_path / rundir.ITEMS)
    extract_run(tmp_path, cfg, backend=tiny_backend, sae_spec=spec)
    old_contexts = pd.read_parquet(tmp_path / rundir.CONTEXTS)
    # `cgaps grade --responses other.jsonl`: two responses change
    new = ITEMS.copy()
    new.loc[0, "response"] = "The answer is four, of course."
    new.loc[2, "response"] = "c-a-t reversed is t-a-c"
    rundir.write_table(new, tmp_path / rundir.ITEMS)
    seen = _counting(monkeypatch)
    sal = extract_run(tmp_path, cfg, backend=tiny_backend, sae_spec=spec)
    assert sorted(seen) == ["a", "c"]
    assert "2 item(s) changed since they were extracted" in capsys.readouterr().err
    fresh = _fresh(tmp_path, "fresh", new, cfg, tiny_backend, spec)
    pd.testing.assert_frame_equal(sal.reset_index(drop=True), fresh.reset_index(drop=True))
    contexts = pd.read_parquet(tmp_path / rundir.CONTEXTS)
    pd.testing.assert_frame_equal(contexts, pd.read_parquet(tmp_path / "fresh" / rundir.CONTEXTS))
    assert not contexts.equals(old_contexts)
    for key in ("tokens_analysed", "saliency_rows"):
        want = rundir.read_run_json(tmp_path / "fresh")["counts"][key]
        assert rundir.read_run_json(tmp_path)["counts"][key] == want


def test_smaller_run_leaves_old_items_out_of_the_merge(tmp_path, tiny_backend, monkeypatch):
    import cgaps.extract.stage as act

    monkeypatch.setattr(act, "SHARD_ITEMS", 4)
    spec = loaded_sae(tiny_backend.hidden_size)
    cfg = RunConfig(max_norm_ratio=None, batch_size=2)
    items = _items15()
    rundir.write_table(items, tmp_path / rundir.ITEMS)
    extract_run(tmp_path, cfg, backend=tiny_backend, sae_spec=spec)
    fewer = items.iloc[:6]  # a smaller --limit
    rundir.write_table(fewer, tmp_path / rundir.ITEMS)
    seen = _counting(monkeypatch)
    sal = extract_run(tmp_path, cfg, backend=tiny_backend, sae_spec=spec)
    assert seen == []  # every item left is still valid
    monkeypatch.setattr(act, "SHARD_ITEMS", 128)
    fresh = _fresh(tmp_path, "fresh", fewer, cfg, tiny_backend, spec)
    pd.testing.assert_frame_equal(sal.reset_index(drop=True), fresh.reset_index(drop=True))
    assert (
        rundir.read_run_json(tmp_path)["counts"]["tokens_analysed"]
        == (rundir.read_run_json(tmp_path / "fresh")["counts"]["tokens_analysed"])
    )


def test_redone_shard_never_overwrites_a_complete_one(tmp_path, tiny_backend, monkeypatch):
    import cgaps.extract.stage as act

    monkeypatch.setattr(act, "SHARD_ITEMS", 4)
    spec = loaded_sae(tiny_backend.hidden_size)
    cfg = RunConfig(max_norm_ratio=None, batch_size=2)
    items = _items15()
    rundir.write_table(items, tmp_path / rundir.ITEMS)
    whole = extract_run(tmp_path, cfg, backend=tiny_backend, sae_spec=spec)
    shards = tmp_path / rundir.SALIENCY_SHARDS
    assert len(list(shards.glob("shard-*.json"))) == 4
    lost = json.loads((shards / "shard-00001.json").read_text())["item_ids"]
    (shards / "shard-00001.json").unlink()  # the completion file of one shard is gone
    seen = _counting(monkeypatch)
    sal = extract_run(tmp_path, cfg, backend=tiny_backend, sae_spec=spec)
    assert sorted(seen) == sorted(lost)
    assert sorted(p.name for p in shards.glob("shard-*.parquet")) == [
        "shard-00000.parquet",
        "shard-00002.parquet",
        "shard-00003.parquet",
        "shard-00004.parquet",
    ]
    pd.testing.assert_frame_equal(sal.reset_index(drop=True), whole.reset_index(drop=True))


def test_shards_without_digests_are_extracted_again(tmp_path, tiny_backend, monkeypatch, capsys):
    spec = loaded_sae(tiny_backend.hidden_size)
    cfg = RunConfig(max_norm_ratio=None)
    rundir.write_table(ITEMS, tmp_path / rundir.ITEMS)
    whole = extract_run(tmp_path, cfg, backend=tiny_backend, sae_spec=spec)
    (sidecar,) = (tmp_path / rundir.SALIENCY_SHARDS).glob("shard-*.json")
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({"item_ids": meta["item_ids"], "stats": meta["stats"]}))  # older cgaps
    seen = _counting(monkeypatch)
    sal = extract_run(tmp_path, cfg, backend=tiny_backend, sae_spec=spec)
    assert sorted(seen) == sorted(ITEMS["item_id"])
    assert "5 item(s) in shards without content digests" in capsys.readouterr().err
    pd.testing.assert_frame_equal(sal.reset_index(drop=True), whole.reset_index(drop=True))


@pytest.mark.parametrize(("span", "reads_response"), [("prompt", False), ("both", True)])
def test_extraction_records_the_item_columns_it_read(tmp_path, tiny_backend, span, reads_response):
    # the pipeline extracts again after `cgaps grade --responses` only when the span reads responses
    spec = loaded_sae(tiny_backend.hidden_size)
    rundir.write_table(ITEMS, tmp_path / rundir.ITEMS)
    extract_run(tmp_path, RunConfig(span=span, max_norm_ratio=None), backend=tiny_backend, sae_spec=spec)
    recorded = rundir.read_run_json(tmp_path)["inputs"]["extract"]
    assert ("response" in recorded["columns"]) is reads_response
    items = rundir.read_items(tmp_path)
    assert rundir.stage_is_current(tmp_path, "extract", items) is True
    assert rundir.stage_is_current(tmp_path, "extract", items.assign(response="other")) is not reads_response
    assert rundir.stage_is_current(tmp_path, "extract", items.assign(prompt="other")) is False


@pytest.mark.slow
def test_smollm_bfloat16_extraction_agrees_with_float32(smollm):
    """SmolLM2 and its shipped SAE read in bfloat16 against float32 on 64 probe items: the bounds
    leave room around what the demo gives (docs/scaling.md, Extraction: 96 % of the rows in both,
    values within 0.9 % at the median, each item's top-10 concepts 97.7 % the same, never under 90 %)."""
    from collections import Counter

    from cgaps.extract.stage import encode_items, extract_chunk
    from cgaps.items.probes import load_probes
    from cgaps.sae import load_sae

    probes = load_probes(seed=0)[::6][:64]
    items = pd.DataFrame(probes).assign(response=[str(p["reference"]) + " is the answer." for p in probes])
    cfg = RunConfig()
    chunk = encode_items(items, smollm.tokenizer, cfg)
    rows = {}
    for reader in (smollm, smollm.reading_in("bfloat16")):
        dtype = str(reader.dtype).removeprefix("torch.")
        sae = load_sae("embedded", hidden_size=reader.hidden_size, n_layers=reader.n_layers, dtype=dtype)
        rows[dtype] = extract_chunk(reader, sae, sae.layer, chunk, cfg, Counter())
    a, b = rows["float32"], rows["bfloat16"]
    both = a.merge(b, on=["item_id", "concept"], how="outer", indicator=True)
    common = both[both["_merge"] == "both"]
    assert len(common) / len(both) >= 0.93
    rel = (common["value_y"] - common["value_x"]).abs() / common["value_x"]
    assert rel.median() < 0.02

    def top10(df: pd.DataFrame) -> dict[str, set[int]]:
        df = df.sort_values(["item_id", "value"], ascending=[True, False])
        return {i: set(g["concept"].head(10)) for i, g in df.groupby("item_id")}

    ta, tb = top10(a), top10(b)
    overlap = [len(ta[i] & tb[i]) / 10 for i in ta]
    assert sum(overlap) / len(overlap) >= 0.93 and min(overlap) >= 0.7


def test_auto_reads_in_bfloat16_on_a_cpu_that_computes_it(tmp_path, tiny_backend, native_bf16):
    spec = loaded_sae(tiny_backend.hidden_size)
    rundir.write_table(ITEMS, tmp_path / rundir.ITEMS)
    manifest = tmp_path / rundir.SALIENCY_SHARDS / "manifest.json"
    # the pipeline hands over the model it loaded in float32: extraction reads a bfloat16 copy
    sal = extract_run(tmp_path, RunConfig(), backend=tiny_backend, sae_spec=spec)
    assert json.loads(manifest.read_text())["signature"]["reader_dtype"] == "bfloat16"
    assert tiny_backend.dtype is torch.float32  # the given model itself is untouched
    # --dtype float32 keeps the float32 path; its shards do not mix with the bfloat16 ones
    (tmp_path / rundir.SALIENCY).unlink()
    with pytest.raises(CGapsError, match=r"other settings \(reader_dtype 'bfloat16' there, 'float32' now\)"):
        extract_run(tmp_path, RunConfig(dtype="float32"), backend=tiny_backend, sae_spec=spec)
    other = tmp_path / "f32"
    rundir.write_table(ITEMS, other / rundir.ITEMS)
    sal32 = extract_run(other, RunConfig(dtype="float32"), backend=tiny_backend, sae_spec=spec)
    assert (
        json.loads((other / rundir.SALIENCY_SHARDS / "manifest.json").read_text())["signature"][
            "reader_dtype"
        ]
        == "float32"
    )
    merged = sal.merge(sal32, on=["item_id", "concept"])
    assert len(merged) >= 0.9 * len(sal32) and not sal["value"].equals(sal32["value"])
