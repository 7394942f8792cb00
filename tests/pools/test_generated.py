"""Generated items, verified by activation (cgaps.pools.generated): parsing and the answer check,
the presence filter and the cache with a scripted generator, and the whole path against a real
llama.cpp server with the embedded SmolLM2 as generator and reader (slow)."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.models.openai import OpenAIGenerator
from cgaps.pools.config import PoolConfig
from cgaps.pools.coverage import Reader
from cgaps.pools.generated import DRAFTS, checkable, generate_pool, parse, request
from helpers import TokenReader, llama_cpp_server


def test_parse_json_and_question_answer_lines():
    assert parse(
        'Sure! {"question": "How many legs has a spider?", "answer": "8", "answer_type": "number"}'
    ) == {
        "question": "How many legs has a spider?",
        "answer": "8",
        "answer_type": "number",
    }
    assert parse("Question: Is Paris in France?\nAnswer: Yes") == {
        "question": "Is Paris in France?",
        "answer": "Yes",
        "answer_type": "yesno",
    }
    assert parse('{"question": "Capital of Peru?", "answer": "Lima"}')["answer_type"] == "short"
    # what SmolLM2 writes when asked for JSON
    assert parse('The answer to the question "How many legs has a cat?" is "4".') == {
        "question": "How many legs has a cat?",
        "answer": "4",
        "answer_type": "number",
    }
    assert parse('The answer to the question "answer" is The 60-year-old')["answer_type"] == "short"
    assert parse("I cannot help with that.") is None
    assert parse('{"question": "x"') is None


def test_only_checkable_answers_pass():
    ok = {"question": "How many days has a week?", "answer": "7", "answer_type": "number"}
    assert checkable(ok) is None
    assert checkable({**ok, "answer": "seven"}) == "the answer fails its own grader"  # no number in it
    assert checkable({**ok, "answer_type": "essay"}) == "answer type 'essay'"
    assert checkable({**ok, "answer_type": "yesno", "answer": "maybe"}) == "the answer fails its own grader"
    assert checkable({**ok, "answer": "x" * 200}) == "answer empty or too long"
    assert checkable({**ok, "question": ""}) == "question too short or too long"
    assert checkable({**ok, "question": "answer"}) == "question too short or too long"
    assert checkable({**ok, "question": "Seven days", "answer": "seven days", "answer_type": "short"}) == (
        "question too short or too long"
    )
    repeat = {
        "question": "The whites are protesting",
        "answer": "The whites are protesting",
        "answer_type": "short",
    }
    assert checkable(repeat) == "the answer repeats the question"


def test_requests_differ_per_draft_and_mark_the_firing_token():
    ctx = [("the cat sat on ", "mat", " today"), ("a red ", "mat", " here")]
    a, b = request("floor coverings", ctx, 0, 2), request("floor coverings", ctx, 1, 2)
    assert a != b and "<<mat>>" in a[1]["content"] and "floor coverings" in a[1]["content"]
    assert a[1]["content"].index("cat sat") < a[1]["content"].index("red")
    assert b[1]["content"].index("red") < b[1]["content"].index("cat sat")


def _run(tmp_path, reader, spec) -> tuple:
    from cgaps.extract.stage import extract_run

    run = tmp_path / "run"
    run.mkdir()
    items = pd.DataFrame(
        [
            {"item_id": f"b/{k}", "benchmark": "b", "prompt": p, "reference": "1"}
            for k, p in enumerate(["apple pie", "violin music"])
        ]
    )
    cfg = RunConfig(span="prompt", sae="identity", max_norm_ratio=None)
    rundir.write_table(rundir.validate_items(items, "items"), run / rundir.ITEMS)
    rundir.update_run_json(run, config=cfg.to_dict())
    extract_run(run, cfg, backend=reader, sae_spec=spec)
    return run, cfg


def test_drafts_are_kept_only_where_the_target_is_present_and_cached(tmp_path, monkeypatch):
    reader = TokenReader(256)
    spec = reader.sae()
    run, cfg = _run(tmp_path, reader, spec)
    tok = reader.tokenizer
    target = int(tok(" river", add_special_tokens=False)["input_ids"][0]) % 256
    other = int(tok(" cello", add_special_tokens=False)["input_ids"][0]) % 256
    replies = iter(
        [
            '{"question": "What crosses the river here?", "answer": "a bridge", "answer_type": "short"}',  # kept
            '{"question": "What does a cello have?", "answer": "4", "answer_type": "number"}',  # target absent
            '{"question": "Is the river long?", "answer": "perhaps", "answer_type": "yesno"}',  # fails its grader
            "no idea",  # unparsed
        ]
    )
    asked: list = []

    def scripted(self, conversations, max_new_tokens, batch_size, progress=None):
        asked.extend(conversations)
        return [next(replies) for _ in conversations]

    monkeypatch.setattr(OpenAIGenerator, "generate", scripted)
    opts = PoolConfig(generator="openai://127.0.0.1:9/v1/m", drafts=4)
    scale = np.ones(256)
    labels = {target: "rivers"}
    kept, stats = generate_pool(
        run, np.array([target]), opts, tmp_path / "gen", Reader(cfg, reader, spec), cfg, scale, labels
    )
    assert stats["asked"] == 4 and stats["checkable"] == 2 and stats["kept"] == 1 and stats["yield"] == 0.25
    assert stats["rejected"] == {
        "unparsed": 1,
        "the answer fails its own grader": 1,
        "target concept absent": 1,
    }
    assert list(kept.items["item_id"]) == [f"generated/c{target}/d0"]
    assert kept.items["prompt"].iloc[0].startswith("What crosses the river here?")
    assert set(kept.saliency["item_id"]) == {f"generated/c{target}/d0"}
    assert target in set(kept.saliency["concept"]) and other not in set(kept.saliency["concept"])
    assert json.loads(kept.items["meta"].iloc[0])["target_concept"] == target
    assert "rivers" in asked[0][1]["content"]
    assert len((tmp_path / "gen" / DRAFTS).read_text().splitlines()) == 4
    # a rerun asks nothing: every reply is in the cache
    monkeypatch.setattr(OpenAIGenerator, "generate", lambda *a, **k: pytest.fail("asked again"))
    again, stats2 = generate_pool(
        run, np.array([target]), opts, tmp_path / "gen", Reader(cfg, reader, spec), cfg, scale, labels
    )
    assert stats2["kept"] == 1 and list(again.items["item_id"]) == list(kept.items["item_id"])


@pytest.mark.slow
def test_generated_items_against_a_real_llama_cpp_server(tmp_path, smollm):
    """SmolLM2 (served by llama.cpp) drafts items for three concepts of a small probe run; SmolLM2
    with the shipped SAE checks them. Most drafts fail: the figures are the yield, printed."""
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")
    from cgaps.extract.stage import extract_run
    from cgaps.pipeline import items_run
    from cgaps.pools.coverage import presence_matrix
    from cgaps.runtables import RunTables
    from cgaps.scoring.stage import concept_scale

    run = tmp_path / "run"
    cfg = RunConfig(suite="probes", limit=24, span="prompt")
    items_run(run, cfg)
    sal = extract_run(run, cfg, backend=smollm)
    meta = rundir.read_run_json(run)
    scale, _ = concept_scale(RunTables(run, meta, 8192, rundir.read_items(run), sal), cfg)
    # three concepts present on several of the run's prompts: what the drafts must carry
    firing = sal.assign(on=sal["value"].to_numpy() >= cfg.presence * scale[sal["concept"].to_numpy()])
    counts = firing[firing["on"]].groupby("concept").size()
    concepts = counts[(counts >= 3) & (counts <= 12)].index.to_numpy()[:3]
    with llama_cpp_server(tmp_path / "server.log", n_batch=1) as port:  # see the helper: a build bug
        opts = PoolConfig(generator=f"openai://127.0.0.1:{port}/v1/smollm2?concurrency=2", drafts=3)
        t0 = time.perf_counter()
        kept, stats = generate_pool(
            run, concepts, opts, tmp_path / "gen", Reader(cfg, smollm), cfg, scale, {}
        )
        elapsed = time.perf_counter() - t0
    print(f"generated items: {stats['kept']} of {stats['asked']} drafts kept ({stats['checkable']} checkable), "
          f"yield {stats['yield']:.2f}, {elapsed:.0f} s; rejected {stats['rejected']}")  # fmt: skip
    assert stats["asked"] == 9 and stats["kept"] <= stats["checkable"] <= 9
    assert len((tmp_path / "gen" / DRAFTS).read_text().splitlines()) == 9
    if len(kept.items):  # every kept draft carries its target concept, recomputed here
        shat = presence_matrix(kept.items, kept.saliency, 8192, cfg.presence, scale)
        for i, meta_json in enumerate(kept.items["meta"]):
            assert shat[i, json.loads(meta_json)["target_concept"]] > 0
