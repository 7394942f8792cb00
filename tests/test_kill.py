"""SIGKILL at random points of every stage, then a rerun: the tables equal an uninterrupted run's.

Each stage runs in a child process forked from the test (the tiny model and SAE already in
memory, so a child starts in milliseconds instead of re-importing torch), which is killed with
SIGKILL after a random delay drawn over the stage's own measured duration. The rerun happens in
the test process; its tables must be identical to those of a run that was never interrupted,
and no temporary file of a killed atomic write may remain (issue 14).

Stages: evaluate (resume file), extract (shards), score (two tables and run.json), report
(one file) and SAE training (checkpoints). Torch runs on one thread here: a forked child must
not inherit a half-initialised OpenMP pool, and one thread makes every run bit-reproducible.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch

from cgaps import rundir
from cgaps.cli.entry import main as entry_point
from cgaps.config import RunConfig
from helpers import embedded_tokenizer, loaded_sae, tiny_causal_lm

KILLS_PER_STAGE = 3
N_ITEMS = 16

ITEMS = pd.DataFrame(
    {
        "item_id": [f"k/{i:02d}" for i in range(N_ITEMS)],
        "benchmark": ["a", "b"] * (N_ITEMS // 2),
        "prompt": [f"What is {i} + {2 * i}? Think about item {i}." for i in range(N_ITEMS)],
        "reference": [str(3 * i) for i in range(N_ITEMS)],
        "answer_type": ["number"] * N_ITEMS,
    }
)
# the SAE is handed to extraction in memory; its configured folder ships no concept scale
CFG = RunConfig(
    model="tiny", sae="/nonexistent/tiny-sae", max_new_tokens=6, batch_size=1, device="cpu", min_support=1
)


pytestmark = [pytest.mark.usefixtures("torch_one_thread"), pytest.mark.integration]


@pytest.fixture(scope="module")
def backend():
    from cgaps.models.hf import HFBackend

    model = tiny_causal_lm("llama", n_layers=2, hidden=32, max_positions=512)
    return HFBackend(model, embedded_tokenizer(), "tiny", "cpu")


@pytest.fixture(scope="module")
def sae():
    return loaded_sae(32, width=24, k=4, layer=1)


def killed(target: Callable[[], object], delay: float) -> bool:
    """Run ``target`` in a forked child and SIGKILL it after ``delay`` seconds; True if it was
    killed before it finished."""
    child = multiprocessing.get_context("fork").Process(target=target)
    child.start()
    child.join(delay)
    if child.is_alive():
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        return True
    assert child.exitcode == 0, f"the stage failed on its own (exit {child.exitcode})"
    return False


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def no_temporaries(run: Path) -> None:
    left = [p.name for p in run.rglob(".*.tmp")]
    assert not left, f"temporary files left behind: {left}"


def write_items(run: Path, items: pd.DataFrame = ITEMS) -> None:
    """A run directory's starting point: ``items`` and the run's config."""
    rundir.write_table(items, run / rundir.ITEMS)
    rundir.update_run_json(run, config=CFG.to_dict())


def kill_and_resume(
    tmp_path: Path,
    stage: Callable[[Path], object],
    prepare: Callable[[Path], None],
    compare: Callable[[Path, Path], None],
    seed: int,
) -> int:
    """The reference run, then KILLS_PER_STAGE runs each SIGKILLed at a random point and rerun;
    returns how many kills landed before the stage finished."""
    reference = tmp_path / "run_uninterrupted"
    reference.mkdir()
    prepare(reference)
    _, seconds = timed(lambda: stage(reference))
    rng = random.Random(seed)
    landed = 0
    for n in range(KILLS_PER_STAGE):
        run = tmp_path / f"run_killed{n}"
        run.mkdir()
        prepare(run)
        landed += killed(lambda run=run: stage(run), rng.uniform(0.05, 1.0) * seconds)
        stage(run)  # the rerun resumes whatever the killed run left
        compare(reference, run)
        no_temporaries(run)
    return landed


def same_table(a: Path, b: Path, name: str, columns: list[str] | None = None) -> None:
    pd.testing.assert_frame_equal(
        pd.read_parquet(a / name, columns=columns), pd.read_parquet(b / name, columns=columns)
    )


# ---------------------------------------------------------------- the stages


def test_evaluate_killed_and_resumed(tmp_path, backend):
    from cgaps.evaluate.stage import evaluate_run

    def compare(ref: Path, run: Path) -> None:
        same_table(ref, run, rundir.ITEMS)
        assert not (run / rundir.RESPONSES_PARTIAL).exists()

    landed = kill_and_resume(
        tmp_path, lambda run: evaluate_run(run, CFG, backend), write_items, compare, seed=1
    )
    assert landed >= 1


def _graded(run: Path) -> None:
    write_items(run, ITEMS.assign(response=[f"It is {3 * i}." for i in range(N_ITEMS)], score=1.0))


def test_extract_killed_and_resumed(tmp_path, backend, sae, monkeypatch):
    import cgaps.extract.stage as extract_stage

    monkeypatch.setattr(extract_stage, "SHARD_ITEMS", 3)  # many shards: many points to die between

    def compare(ref: Path, run: Path) -> None:
        for name in (rundir.SALIENCY, rundir.CONTEXTS):
            same_table(ref, run, name)
        assert not (run / rundir.LABELS).exists()  # the labels stage's table, never extraction's
        ref_counts = rundir.read_run_json(ref)["counts"]
        run_counts = rundir.read_run_json(run)["counts"]
        assert {k: run_counts[k] for k in ref_counts} == ref_counts  # token counts too

    stage = lambda run: extract_stage.extract_run(run, CFG, backend, sae)  # noqa: E731
    landed = kill_and_resume(tmp_path, stage, _graded, compare, seed=2)
    assert landed >= 1


def _extracted(tmp_path: Path, backend, sae) -> Path:
    from cgaps.extract.stage import extract_run

    source = tmp_path / "source"
    source.mkdir()
    _graded(source)
    items = rundir.read_items(source)
    rundir.write_table(items.assign(score=[float(i % 3 == 0) for i in range(N_ITEMS)]), source / rundir.ITEMS)
    extract_run(source, CFG, backend, sae)
    return source


def test_score_killed_and_resumed(tmp_path, backend, sae):
    from cgaps.report.build import report_context
    from cgaps.scoring import score_run

    source = _extracted(tmp_path, backend, sae)

    def prepare(run: Path) -> None:
        for name in (rundir.ITEMS, rundir.SALIENCY, rundir.RUN_JSON):
            shutil.copy(source / name, run / name)

    def compare(ref: Path, run: Path) -> None:
        for name in (rundir.CONCEPTS, rundir.OVERLAP):
            same_table(ref, run, name)
            assert rundir.read_table_config(run / name) == rundir.read_table_config(ref / name)
        assert report_context(run)["fdr"] == CFG.fdr

    kill_and_resume(tmp_path, lambda run: score_run(run, CFG), prepare, compare, seed=3)


def test_a_killed_score_never_labels_a_report_with_other_config(tmp_path, backend, sae):
    """Scored at fdr 0.05, then killed at random while rescoring at fdr 0.2: whatever the kill
    left, the report either refuses (tables from two scorings) or shows the config of its tables."""
    from cgaps.errors import CGapsError
    from cgaps.report.build import report_context
    from cgaps.scoring import score_run

    source = _extracted(tmp_path, backend, sae)
    score_run(source, CFG)
    _, seconds = timed(lambda: score_run(source, CFG))
    rng = random.Random(4)
    outcomes = set()
    for n in range(2 * KILLS_PER_STAGE):
        run = tmp_path / f"rescored{n}"
        shutil.copytree(source, run)
        killed(lambda run=run: score_run(run, CFG.replace(fdr=0.2)), rng.uniform(0.05, 1.2) * seconds)
        try:
            ctx = report_context(run)
        except CGapsError as e:
            assert "`cgaps score` was interrupted" in str(e)
            outcomes.add("refused")
            continue
        scoring_config = rundir.read_table_config(run / rundir.CONCEPTS)
        assert ctx["fdr"] == scoring_config["fdr"] and scoring_config["fdr"] in (0.05, 0.2)
        outcomes.add(scoring_config["fdr"])
    assert outcomes  # and every outcome was one of the three honest ones


def test_report_killed_and_rebuilt(tmp_path, backend, sae):
    from cgaps.report.build import build_report
    from cgaps.scoring import score_run

    source = _extracted(tmp_path, backend, sae)
    score_run(source, CFG)

    def prepare(run: Path) -> None:
        for p in source.iterdir():
            if p.is_file():
                shutil.copy(p, run / p.name)

    def compare(ref: Path, run: Path) -> None:
        def text(folder: Path) -> str:  # the page names its run directory
            return (folder / rundir.REPORT).read_text(encoding="utf-8").replace(folder.name, "RUN")

        assert text(run) == text(ref)

    kill_and_resume(tmp_path, build_report, prepare, compare, seed=5)


def test_sae_training_killed_and_resumed(tmp_path):
    from cgaps.sae.training.train import TrainConfig, train_sae

    acts = torch.randn(640, 32, generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(
        width=48,
        k=4,
        batch_size=32,
        lr=3e-3,
        warmup_steps=3,
        epochs=3,
        aux_k=8,
        aux_max_dead=16,
        dead_tokens=200,
        checkpoint_every=2,
        matmul_dtype="float32",
    )
    full, seconds = timed(lambda: train_sae(acts, tmp_path / "full", cfg))
    rng = random.Random(6)
    landed = 0
    for n in range(KILLS_PER_STAGE):
        folder = tmp_path / f"killed{n}"
        landed += killed(lambda folder=folder: train_sae(acts, folder, cfg), rng.uniform(0.1, 1.0) * seconds)
        resumed = train_sae(acts, folder, cfg)
        assert resumed["done"]
        for key in full["params"]:
            torch.testing.assert_close(resumed["params"][key], full["params"][key], rtol=0, atol=0)
    assert landed >= 1


# ---------------------------------------------------------------- more stages (issue 23)


def _scored(tmp_path: Path, backend, sae) -> Path:
    from cgaps.scoring import score_run

    source = _extracted(tmp_path, backend, sae)
    score_run(source, CFG)
    return source


def _copy_run(source: Path, run: Path, leave_out: tuple[str, ...] = ()) -> None:
    for p in source.iterdir():
        if p.name in leave_out or p.name == rundir.LOCK:
            continue
        if p.is_dir():
            shutil.copytree(p, run / p.name)
        else:
            shutil.copy(p, run / p.name)


def test_label_killed_and_resumed(tmp_path, backend, sae):
    from cgaps.labels.stage import label_run

    source = _scored(tmp_path, backend, sae)

    def compare(ref: Path, run: Path) -> None:
        for name in (rundir.LABELS, rundir.THEMES):
            same_table(ref, run, name)

    prepare = lambda run: _copy_run(source, run, (rundir.LABELS, rundir.THEMES))  # noqa: E731
    stage = lambda run: label_run(run, backend=backend, sae=sae)  # noqa: E731
    kill_and_resume(tmp_path, stage, prepare, compare, seed=7)


def test_compare_killed_and_rerun(tmp_path, backend, sae):
    """`cgaps compare` writes two files into its own folder: killed anywhere, a rerun gives the
    table and page of a compare that was never interrupted."""
    from cgaps.compare import compare_runs

    a = _scored(tmp_path, backend, sae)
    b = tmp_path / "model_b"
    shutil.copytree(a, b)
    items = rundir.read_items(b)
    rundir.write_table(items.assign(score=[float(i % 2 == 0) for i in range(N_ITEMS)]), b / rundir.ITEMS)

    def compare(ref: Path, run: Path) -> None:
        same_table(ref, run, "compare.parquet")
        assert rundir.read_table_config(run / "compare.parquet") == rundir.read_table_config(
            ref / "compare.parquet"
        )
        assert (ref / rundir.REPORT).read_text() == (run / rundir.REPORT).read_text()

    kill_and_resume(tmp_path, lambda out: compare_runs(a, b, out), lambda out: None, compare, seed=8)


# ---------------------------------------------------------------- Ctrl-C through the command line


def _interrupted(args: list[str], log: Path, patch: Callable[[], None], delay: float) -> int | None:
    """``cgaps ARGS`` in a forked child (stderr to ``log``) sent SIGINT after ``delay`` seconds;
    its exit status (None if it finished before the signal: 0 then)."""
    import sys

    def child() -> None:
        # Python's own Ctrl-C handler, as in a fresh `cgaps` process: a forked child inherits the
        # parent's, and a test earlier in the session (a server, a harness) may have left another
        # (in CI's full run no signal landed: every interrupted command ran to the end)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.stderr = open(log, "w", buffering=1)  # noqa: SIM115 (the child exits with os._exit)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        patch()
        sys.argv = ["cgaps", *args]
        code: list[int] = []  # the command's exit status, once it is over
        try:
            try:
                entry_point()  # the console script: it loads the commands, so a signal may land there too
                code.append(0)
            except SystemExit as e:
                code.append(int(e.code or 0))
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # over: a Ctrl-C now is after it
            sys.stderr.flush()
        except KeyboardInterrupt as k:
            # it landed between the console script's return and the mask, after the command (CI
            # once sent it there): entry_point catches every Ctrl-C that lands inside it, so one
            # with no exit status before it is a failure of the command line, and is raised
            if not code and isinstance(k.__context__, SystemExit):
                code.append(int(k.__context__.code or 0))
            if not code:
                raise
        os._exit(code[0])

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join(delay)
    landed = proc.is_alive()
    if landed:
        os.kill(proc.pid, signal.SIGINT)
    proc.join(60)
    assert not proc.is_alive(), "an interrupted command did not stop within a minute"
    return proc.exitcode if landed else None


def _ctrl_c_and_resume(
    tmp_path: Path,
    stage: Callable[[Path], object],
    args: Callable[[Path], list[str]],
    patch: Callable[[], None],
    prepare: Callable[[Path], None],
    compare: Callable[[Path, Path], None],
    seed: int,
) -> int:
    """Like :func:`kill_and_resume`, with Ctrl-C through ``cgaps ARGS``: each interrupted command
    exits 130 with one line and no traceback; the rerun (``stage``, in this process) equals the
    uninterrupted command's run."""
    reference = tmp_path / "run_uninterrupted"
    reference.mkdir(parents=True)
    prepare(reference)
    # the uninterrupted command line, timed: its run is the reference
    code, seconds = timed(lambda: _interrupted(args(reference), tmp_path / "stderr.txt", patch, 600))
    assert code is None, (tmp_path / "stderr.txt").read_text()
    rng = random.Random(seed)
    landed = 0
    for n in range(KILLS_PER_STAGE):
        run = tmp_path / f"run_interrupted{n}"
        run.mkdir()
        prepare(run)
        log = tmp_path / f"stderr{n}.txt"
        code = _interrupted(args(run), log, patch, rng.uniform(0.05, 1.0) * seconds)
        err = log.read_text()
        assert "Traceback" not in err, err
        if code is not None and code != 0:
            landed += 1
            assert code == 130, err
            lines = err.strip().splitlines()
            assert lines[-1].startswith("error: interrupted"), err  # while starting, or working
            assert sum(line.startswith("error: ") for line in lines) == 1, err
        stage(run)
        compare(reference, run)
        no_temporaries(run)
    return landed


def test_ctrl_c_during_evaluate_extract_and_score(tmp_path, backend, sae):
    import cgaps.evaluate.stage as evaluate_stage
    import cgaps.extract.stage as extract_stage
    from cgaps.scoring import score_run

    real_generator = evaluate_stage.load_generator

    reader = backend

    def load_reader(cfg, backend=None, sae_spec=None):
        return reader, sae

    def in_memory() -> None:  # the child's command line uses the models already in memory
        evaluate_stage.load_generator = lambda cfg, generator=None: real_generator(cfg, reader)  # type: ignore[assignment]
        extract_stage.load_reader = load_reader  # type: ignore[assignment]

    def items_same(ref: Path, run: Path) -> None:
        same_table(ref, run, rundir.ITEMS)

    landed = _ctrl_c_and_resume(
        tmp_path / "evaluate",
        lambda run: evaluate_stage.evaluate_run(run, CFG, backend),
        lambda run: ["evaluate", str(run)],
        in_memory,
        write_items,
        items_same,
        seed=11,
    )

    def extracted_same(ref: Path, run: Path) -> None:
        for name in (rundir.SALIENCY, rundir.CONTEXTS):
            same_table(ref, run, name)

    landed += _ctrl_c_and_resume(
        tmp_path / "extract",
        lambda run: extract_stage.extract_run(run, CFG, backend, sae),
        lambda run: ["extract", str(run)],
        in_memory,
        _graded,
        extracted_same,
        seed=12,
    )
    source = _extracted(tmp_path, backend, sae)

    def scored_same(ref: Path, run: Path) -> None:
        for name in (rundir.CONCEPTS, rundir.OVERLAP):
            same_table(ref, run, name)

    _ctrl_c_and_resume(
        tmp_path / "score",
        lambda run: score_run(run, CFG),
        lambda run: ["score", str(run)],
        lambda: None,
        lambda run: _copy_run(source, run, (rundir.CONCEPTS, rundir.OVERLAP)),
        scored_same,
        seed=13,
    )
    assert landed >= 1
