"""The chunk-runner seam (cgaps.seams.ChunkRunner): the stages' tables do not depend on where or
in which order their chunks are computed.

A runner like Ray's, in this process and without Ray: the driver sees only the descriptions a
worker would send (``describe(model)``, two "workers"), and the chunks complete in reverse
order. Evaluation and extraction through it must write the tables, shards and counts of the
in-process runner bit for bit (tests/scaleout/test_scaleout.py checks the same on a real Ray cluster,
where it can start one).
"""

from __future__ import annotations

import json
from contextlib import contextmanager

import pandas as pd
import pytest

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.errors import CGapsError
from helpers import tiny_run_config

N_ITEMS = 24

ITEMS = pd.DataFrame(
    {
        "item_id": [f"r/{i:02d}" for i in range(N_ITEMS)],
        "benchmark": ["a", "b"] * (N_ITEMS // 2),
        "prompt": [f"What is {i} + {2 * i}?" + " Think." * (i % 5) for i in range(N_ITEMS)],
        "reference": [str(3 * i) if i % 3 else "A" for i in range(N_ITEMS)],
        "answer_type": ["number" if i % 3 else "choice" for i in range(N_ITEMS)],
        "choices": [None if i % 3 else json.dumps([str(i), "none"]) for i in range(N_ITEMS)],
    }
)


class _Backwards:
    """:class:`cgaps.seams.Chunks` whose driver sees descriptions and whose chunks complete last first."""

    name = "backwards"

    def __init__(self, model, described):
        self._model = model
        self.models = described
        self.workers = len(described)

    @property
    def model(self):
        return self.models[0]

    def map(self, work, jobs):
        done = [(n, work(self._model, *job)) for n, job in enumerate(jobs)]
        yield from reversed(done)


class Backwards:
    """:class:`cgaps.seams.ChunkRunner`: two "workers" in this process (module docstring)."""

    def __init__(self):
        self.entered = 0

    def __enter__(self):
        self.entered += 1
        return self

    def __exit__(self, *exc):
        pass

    @contextmanager
    def start(self, task, cfg, load, describe):
        model = load(cfg)
        yield _Backwards(model, [describe(model), describe(model)])


def test_the_runners_implement_the_seam():
    from cgaps.runner import InProcess, Local
    from cgaps.scaleout import RayConfig, RayRunner
    from cgaps.seams import ChunkRunner

    for runner in (Backwards(), InProcess(), RayRunner(RayConfig(ray=True))):  # RayRunner starts nothing yet
        assert isinstance(runner, ChunkRunner), runner
    # in this process: the chunks in their planned order, each computed only when asked for
    calls = []
    chunks = Local(10).map(lambda m, x: calls.append(x) or m + x, [(1,), (2,)])
    assert calls == [] and next(chunks) == (0, 11) and calls == [1]
    assert list(chunks) == [(1, 12)]


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> RunConfig:
    return tiny_run_config(
        tmp_path_factory.mktemp("runner-model"), generate_batch_size=3, backend="transformers"
    )


def _run(root, cfg, runner, monkeypatch):
    import cgaps.extract.stage as extract_stage
    from cgaps.evaluate.stage import evaluate_run

    monkeypatch.setattr(extract_stage, "SHARD_ITEMS", 5)  # several shards, numbered out of order
    rundir.write_table(ITEMS, root / rundir.ITEMS)
    evaluate_run(root, cfg, runner=runner)
    extract_stage.extract_run(root, cfg, runner=runner)
    return root


@pytest.mark.integration
def test_tables_do_not_depend_on_where_or_in_which_order_chunks_complete(tmp_path, cfg, monkeypatch):
    here = _run(tmp_path / "here", cfg, None, monkeypatch)
    there = _run(tmp_path / "there", cfg, Backwards(), monkeypatch)
    for name in (rundir.ITEMS, rundir.OPTION_LOGLIKS, rundir.SALIENCY, rundir.CONTEXTS):
        assert (here / name).read_bytes() == (there / name).read_bytes(), name
    shards = sorted(p.name for p in (here / rundir.SALIENCY_SHARDS).iterdir())
    assert len(shards) == 1 + 2 * -(-N_ITEMS // 5)  # the manifest, each shard and its sidecar
    assert shards == sorted(p.name for p in (there / rundir.SALIENCY_SHARDS).iterdir())
    for name in shards:
        a, b = here / rundir.SALIENCY_SHARDS / name, there / rundir.SALIENCY_SHARDS / name
        assert a.read_bytes() == b.read_bytes(), name
    ours, theirs = rundir.read_run_json(here), rundir.read_run_json(there)
    assert ours["counts"] == theirs["counts"] and ours["inputs"] == theirs["inputs"]
    # the descriptions stand in for the models in what run.json records
    assert ours["model"] == theirs["model"] and ours["sae"] == theirs["sae"]
    assert theirs["timings"]["evaluate_backwards_workers"] == 2
    assert theirs["timings"]["extract_backwards_workers"] == 2
    assert "evaluate_local_workers" not in ours["timings"]


@pytest.mark.integration
def test_the_driver_never_runs_a_description(cfg):
    from cgaps.evaluate.stage import describe_generator, load_generator
    from cgaps.extract.stage import describe_reader, load_reader

    loaded = load_generator(cfg)
    generator = describe_generator(loaded)
    assert (generator.name, generator.backend, generator.generation_dtype, generator.loaded) == (
        loaded.name,
        "transformers",
        None,
        loaded.loaded,
    )
    with pytest.raises(CGapsError, match="only describes it"):
        generator.generate(["hi"], 2, 1)
    reader, sae = describe_reader(load_reader(cfg))
    assert reader.tokenizer is not None and sae.width == 32
    for call in (
        lambda: reader.residuals_at(None, None, [1]),
        reader.unembed,
        lambda: sae.encode(None),
        lambda: sae.W_dec,
    ):
        with pytest.raises(CGapsError, match="only describes them"):
            call()


def test_a_loaded_model_and_a_runner_are_not_both_given(tmp_path, cfg):
    from cgaps.evaluate.stage import evaluate_run
    from cgaps.extract.stage import extract_run

    with pytest.raises(ValueError, match="not both"):
        evaluate_run(tmp_path, cfg, object(), runner=Backwards())
    with pytest.raises(ValueError, match="not both"):
        extract_run(tmp_path, cfg, object(), runner=Backwards())


def test_the_pipeline_enters_its_runner_once_for_both_stages(tmp_path, monkeypatch):
    """One runner for the whole pipeline, entered around every stage (a Ray cluster it starts
    serves evaluation and extraction), and handed to both."""
    import cgaps.evaluate.stage
    import cgaps.extract.stage
    import cgaps.pipeline

    seen = []
    monkeypatch.setattr(
        cgaps.evaluate.stage, "evaluate_run", lambda *a, runner=None, **k: seen.append(runner)
    )
    monkeypatch.setattr(cgaps.extract.stage, "extract_run", lambda *a, runner=None, **k: seen.append(runner))

    def stages(run, force):
        cgaps.pipeline._evaluate(run)
        cgaps.pipeline._extract(run)
        seen.append(run.runner.entered)
        return {}

    monkeypatch.setattr(cgaps.pipeline, "_run_stages", stages)
    runner = Backwards()
    cgaps.pipeline.run_pipeline(RunConfig(), tmp_path, runner=runner)
    assert seen == [runner, runner, 1]
