"""Scale-out on Ray (cgaps.scaleout): a 2-worker local cluster writes the tables of one process.

Ray probes cloud-metadata addresses and public DNS when it starts, so everything that starts Ray
runs in a child process inside a network namespace with only the loopback interface
(``unshare -n``, as root; the child brings ``lo`` up itself with an ioctl, so no ``ip`` tool is
needed, and first checks that a public address is unreachable), with RAY_USAGE_STATS_ENABLED=0
and no dashboard. One child runs every Ray scenario on one local cluster (Ray starts slowly on
two cores) and the tests below check what it wrote against a run computed here in one process:

- ``ray``: ``cgaps evaluate --ray --ray-workers 2`` then ``cgaps extract --ray ...`` (the CLI
  flags included): items (responses, scores), option log-likelihoods, saliency, contexts, and
  every shard and sidecar identical to one process, bit for bit;
- ``killed``: evaluation, then extraction, each with a worker SIGKILLed in the middle of its
  second chunk (computed, not yet returned), once: Ray restarts the worker and runs the chunk
  again; the tables are still identical;
- ``resume``: evaluation and extraction stopped by a worker error after some chunks; the rerun
  on Ray reuses the answers and shards already written (the shard files untouched) and ends with
  the same tables; a copy of each interrupted state is resumed here, in one process, too.

Torch runs on one thread here, as in each Ray worker (one CPU slot each): the reference and the
workers then add floats in the same order. The Ray tests are ``slow`` (~2.5 min on 2 cores:
stages end to end, and Ray starts slowly); ``make test`` (CI) runs them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cgaps import rundir
from cgaps.config import RunConfig
from helpers import tiny_run_config

N_ITEMS = 40
SHARD_ITEMS = 8  # several shards from a few items (set in the child too)

ITEMS = pd.DataFrame(
    {
        "item_id": [f"s/{i:02d}" for i in range(N_ITEMS)],
        "benchmark": ["a", "b"] * (N_ITEMS // 2),
        # lengths vary, so the length-sorted chunks and batches differ from the item order
        "prompt": [f"What is {i} + {3 * i}?" + " Think it over." * (i % 7) for i in range(N_ITEMS)],
        "reference": [str(4 * i) if i % 4 else "B" for i in range(N_ITEMS)],
        "answer_type": ["number" if i % 4 else "choice" for i in range(N_ITEMS)],
        "choices": [None if i % 4 else json.dumps([str(i), str(4 * i), "seven"]) for i in range(N_ITEMS)],
    }
)

CHILD = r'''
import fcntl, json, os, shutil, signal, socket, struct, sys
from pathlib import Path

# the loopback interface up (a new network namespace starts with it down), without `ip`
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    flags = struct.unpack("16sh22x", fcntl.ioctl(s, 0x8913, struct.pack("16sh22x", b"lo", 0)))[1]
    fcntl.ioctl(s, 0x8914, struct.pack("16sh22x", b"lo", flags | 0x1))  # SIOCSIFFLAGS, IFF_UP
assert [name for _, name in socket.if_nameindex()] == ["lo"], socket.if_nameindex()
try:  # nothing can leave this machine
    socket.create_connection(("8.8.8.8", 53), timeout=2).close()
    raise SystemExit("a public address is reachable: the namespace is not isolated")
except OSError:
    pass

from typer.testing import CliRunner

import cgaps.extract.stage as stage
from cgaps.cli.main import app
from cgaps.config import RunConfig
from cgaps.errors import CGapsError
from cgaps.evaluate.stage import evaluate_run
from cgaps.extract.stage import extract_run
from cgaps.scaleout import RayConfig, RayRunner, runner as ray_runner
from cgaps.scaleout.cluster import Worker

root, cfg_json = Path(sys.argv[1]), sys.argv[2]
cfg = RunConfig(**json.loads(cfg_json))
stage.SHARD_ITEMS = int(sys.argv[3])
opts = RayConfig(ray=True, ray_workers=2)
runner = CliRunner()
result = {}


def cli(*args):
    out = runner.invoke(app, [*args, "--ray", "--ray-workers", "2"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return out.output


class DiesOnce(Worker):
    """SIGKILLed on its second chunk of each stage, once per stage: after computing, before returning."""

    root = str(root)  # class attributes travel with the class

    def run(self, index, work, *job):
        out = super().run(index, work, *job)
        stage = "evaluate" if work.__name__ == "generate_chunk" else "extract"
        if work.__name__ not in ("generate_chunk", "extract_one"):
            return out
        key = f"CALLS_{stage}"
        calls = int(os.environ.get(key, "0")) + 1
        os.environ[key] = str(calls)  # per worker process: a restarted worker counts from 0
        marker = Path(self.root) / f"killed-{stage}.marker"
        if calls == 2 and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return out


class FailsAtChunk(Worker):
    """A worker error at generation chunk 2 and at extraction chunk 3."""

    def run(self, index, work, *job):
        if (work.__name__, index) in (("generate_chunk", 2), ("extract_one", 3)):
            raise CGapsError(f"stopped on purpose at chunk {index}")
        return super().run(index, work, *job)


with RayRunner(opts) as ray:  # one local cluster for every scenario (the CLI's runners join it)
    # 1. the CLI with --ray, evaluation then extraction
    cli("evaluate", str(root / "ray"))
    cli("extract", str(root / "ray"))

    # 2. a worker killed mid-evaluation, then one mid-extraction
    ray_runner.WORKER = DiesOnce
    cli("evaluate", str(root / "killed"))
    cli("extract", str(root / "killed"))

    # 3. interrupted on Ray, then resumed on Ray
    ray_runner.WORKER = FailsAtChunk
    try:
        evaluate_run(root / "resume", cfg, runner=ray)
    except CGapsError as e:
        result["eval_error"] = str(e)
    ray_runner.WORKER = Worker
    result["partial_lines"] = len((root / "resume" / "responses.partial.jsonl").read_text().splitlines())
    shutil.copytree(root / "resume", root / "resume-eval-local")  # resumed in one process by the test
    evaluate_run(root / "resume", cfg, runner=ray)
    ray_runner.WORKER = FailsAtChunk
    try:
        extract_run(root / "resume", cfg, runner=ray)
    except CGapsError as e:
        result["extract_error"] = str(e)
    ray_runner.WORKER = Worker
    shutil.copytree(root / "resume", root / "resume-extract-local", copy_function=shutil.copy2)
    shards = sorted((root / "resume" / "saliency_shards").glob("shard-*"))
    result["kept"] = {p.name: [p.stat().st_ino, p.stat().st_mtime_ns] for p in shards}
    extract_run(root / "resume", cfg, runner=ray)
    result["after"] = {
        p.name: [p.stat().st_ino, p.stat().st_mtime_ns]
        for p in sorted((root / "resume" / "saliency_shards").glob("shard-*"))
    }
    # 4. a model the workers cannot load: the worker's own one-line error, nothing written
    # (span prompt: the items, which hold no responses, pass the checks made before any load)
    try:
        extract_run(root / "bad", cfg.replace(reader="/nonexistent/reader", span="prompt"), runner=ray)
    except CGapsError as e:
        result["bad_reader"] = str(e)
(root / "result.json").write_text(json.dumps(result))
'''


def _isolation_problem() -> str | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "starting Ray needs a network namespace with only loopback (unshare -n), which needs root"
    if shutil.which("unshare") is None:
        return "starting Ray needs `unshare -n` (util-linux), not found"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:  # root without CAP_SYS_ADMIN (an unprivileged container)
        return f"starting Ray needs a network namespace, and `unshare -n` fails here: {probe.stderr.strip()}"
    return None


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> RunConfig:
    return tiny_run_config(tmp_path_factory.mktemp("scaleout-model"))


@pytest.fixture(scope="module")
def reference(cfg, tmp_path_factory) -> Path:
    """The run in this process, one thread: what every Ray run must equal."""
    from cgaps.evaluate.stage import evaluate_run
    from cgaps.extract import stage

    run = tmp_path_factory.mktemp("scaleout-ref")
    rundir.write_table(ITEMS, run / rundir.ITEMS)
    evaluate_run(run, cfg)
    shard_items, stage.SHARD_ITEMS = stage.SHARD_ITEMS, SHARD_ITEMS
    try:
        stage.extract_run(run, cfg)
    finally:
        stage.SHARD_ITEMS = shard_items
    return run


@pytest.fixture(scope="module")
def ray_runs(cfg, reference, tmp_path_factory) -> Path:
    """Every Ray scenario of the module docstring, run in one isolated child (CHILD)."""
    problem = _isolation_problem()
    if problem:
        pytest.skip(problem)
    root = tmp_path_factory.mktemp("scaleout-ray")
    for name in ("ray", "resume", "killed", "bad"):
        (root / name).mkdir()
        rundir.write_table(ITEMS, root / name / rundir.ITEMS)
        rundir.update_run_json(root / name, config=cfg.to_dict())
    script = root / "child.py"
    script.write_text(CHILD)
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "CGAPS_NO_PROGRESS": "1",
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH")) if p
        ),
    }
    cmd = [
        "unshare",
        "-n",
        sys.executable,
        str(script),
        str(root),
        json.dumps(cfg.to_dict()),
        str(SHARD_ITEMS),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    return root


TABLES = (rundir.ITEMS, rundir.OPTION_LOGLIKS, rundir.SALIENCY, rundir.CONTEXTS)


def _assert_same_tables(run: Path, reference: Path, names: tuple[str, ...] = TABLES) -> None:
    for name in names:
        ours, ref = pd.read_parquet(run / name), pd.read_parquet(reference / name)
        assert len(ref) > 0, name  # the comparison is not vacuous
        pd.testing.assert_frame_equal(ours, ref, check_exact=True, obj=name)


def _shards(run: Path) -> dict[str, object]:
    """Every shard's table and sidecar, by file name."""
    out: dict[str, object] = {}
    for p in sorted((run / rundir.SALIENCY_SHARDS).glob("shard-*")):
        out[p.name] = pd.read_parquet(p) if p.suffix == ".parquet" else json.loads(p.read_text())
    return out


@pytest.mark.slow
def test_two_workers_write_the_tables_and_shards_of_one_process(ray_runs, reference):
    run = ray_runs / "ray"
    _assert_same_tables(run, reference)
    ours, ref = _shards(run), _shards(reference)
    assert list(ours) == list(ref) and len(ref) == 2 * -(-N_ITEMS // SHARD_ITEMS)  # parquet + json each
    for name, value in ref.items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(ours[name], value, check_exact=True, obj=name)
        else:
            assert ours[name] == value, name
    meta = rundir.read_run_json(run)
    assert meta["timings"]["evaluate_ray_workers"] == 2 and meta["timings"]["extract_ray_workers"] == 2
    # where it ran is no input: the inputs and config recorded equal those of one process
    ref_meta = rundir.read_run_json(reference)
    assert meta["inputs"] == ref_meta["inputs"] and meta["config"] == ref_meta["config"]
    assert meta["counts"] == ref_meta["counts"]


@pytest.mark.slow
def test_a_worker_killed_mid_run_is_retried(ray_runs, reference):
    for stage in ("evaluate", "extract"):  # a worker really was killed in each stage
        assert (ray_runs / f"killed-{stage}.marker").exists(), stage
    _assert_same_tables(ray_runs / "killed", reference)
    assert _shards(ray_runs / "killed").keys() == _shards(reference).keys()


@pytest.mark.slow
def test_an_interrupted_ray_run_resumes_from_what_it_wrote(ray_runs, reference):
    result = json.loads((ray_runs / "result.json").read_text())
    assert "stopped on purpose at chunk 2" in result["eval_error"]
    assert 0 < result["partial_lines"] < N_ITEMS  # some answers were kept, not all
    assert "stopped on purpose at chunk 3" in result["extract_error"]
    kept = result["kept"]
    n_shards = -(-N_ITEMS // SHARD_ITEMS)
    assert 0 < len(kept) < 2 * n_shards and "shard-00003.parquet" not in kept
    # the rerun left every shard already written as it was (same file, same time) and added the rest
    after = result["after"]
    assert {k: after[k] for k in kept} == kept and len(after) == 2 * n_shards
    _assert_same_tables(ray_runs / "resume", reference)


def test_without_ray_the_flag_names_the_extra(monkeypatch):
    from cgaps.errors import CGapsError
    from cgaps.scaleout.cluster import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(CGapsError, match=r"pip install 'competency-gaps\[ray\]'"):
        import_ray()


def test_ray_options_are_checked():
    from cgaps.errors import CGapsError
    from cgaps.scaleout import RayConfig, ray_options

    assert ray_options({"ray": False, "ray_address": None, "ray_workers": None}) is None
    assert ray_options({"ray": False, "ray_address": "auto", "ray_workers": None}) == RayConfig(
        ray_address="auto"
    )
    with pytest.raises(CGapsError, match="--ray-workers"):
        RayConfig(ray=True, ray_workers=0)
    with pytest.raises(CGapsError, match="needs --ray"):
        RayConfig(ray_workers=2)


@pytest.mark.slow
def test_an_interrupted_ray_run_resumes_in_one_process(ray_runs, reference, cfg, monkeypatch):
    """The resume files a Ray run leaves are those of one process: resumed here without Ray."""
    from cgaps.evaluate.stage import evaluate_run
    from cgaps.extract import stage

    monkeypatch.setattr(stage, "SHARD_ITEMS", SHARD_ITEMS)
    evaluate_run(ray_runs / "resume-eval-local", cfg)
    _assert_same_tables(ray_runs / "resume-eval-local", reference, (rundir.ITEMS, rundir.OPTION_LOGLIKS))

    run = ray_runs / "resume-extract-local"
    shards = run / rundir.SALIENCY_SHARDS
    before = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*")}
    assert 0 < len(before) < len(_shards(reference))
    stage.extract_run(run, cfg)
    after = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*")}
    assert {k: after[k] for k in before} == before  # reused as they were
    _assert_same_tables(run, reference)


class _FakeRay:
    def __init__(self, resources):
        self.resources = resources

    def cluster_resources(self):
        return self.resources


def test_one_worker_per_gpu_else_per_core():
    from cgaps.errors import CGapsError
    from cgaps.scaleout import RayConfig
    from cgaps.scaleout.cluster import worker_resources

    gpus = _FakeRay({"GPU": 8.0, "CPU": 64.0})
    assert worker_resources(gpus, RayConfig(ray=True), "auto") == (8, {"num_gpus": 1, "num_cpus": 1})
    assert worker_resources(gpus, RayConfig(ray=True, ray_workers=3), "cuda") == (
        3,
        {"num_gpus": 1, "num_cpus": 1},
    )
    assert worker_resources(gpus, RayConfig(ray=True), "cpu") == (64, {"num_cpus": 1})
    assert worker_resources(_FakeRay({"CPU": 2.0}), RayConfig(ray=True), "auto") == (2, {"num_cpus": 1})
    with pytest.raises(CGapsError, match="--ray-workers 9, but the Ray cluster has 8 GPU"):
        worker_resources(gpus, RayConfig(ray=True, ray_workers=9), "auto")


def test_a_worker_reads_cuda_n_as_its_own_gpu():
    from cgaps.scaleout.cluster import worker_config

    assert worker_config(RunConfig(device="cuda:3").to_dict())["device"] == "cuda"
    assert (
        worker_config(RunConfig(device="cpu", batch_size=3).to_dict())
        == RunConfig(device="cpu", batch_size=3).to_dict()
    )


@pytest.mark.slow
def test_a_model_the_workers_cannot_load_is_one_line(ray_runs, cfg):
    result = json.loads((ray_runs / "result.json").read_text())
    assert result["bad_reader"].startswith("/nonexistent/reader: no such model folder")
    assert "\n" not in result["bad_reader"]
    files = sorted(p.name for p in (ray_runs / "bad").iterdir() if p.name != rundir.LOCK)
    assert files == [rundir.ITEMS, rundir.RUN_JSON]  # nothing written besides what was there


def test_the_commands_hand_their_ray_options_to_the_stages(tmp_path, monkeypatch):
    """--ray, --ray-address and --ray-workers of evaluate, extract and run reach the stage
    functions as a RayRunner with those options (no runner without them); the stages are
    stubbed, nothing starts Ray."""
    from typer.testing import CliRunner

    import cgaps.evaluate.stage
    import cgaps.extract.stage
    import cgaps.pipeline
    from cgaps.cli.main import app
    from cgaps.scaleout import RayConfig

    seen: list[tuple[str, object]] = []
    items = ITEMS.assign(response="x", score=1.0)
    sal = pd.DataFrame({"item_id": ["s/00"], "concept": [0], "value": [1.0]})

    def stage(name, value):
        def run(*args, runner=None, **kw):
            seen.append((name, runner.opts if runner is not None else None))
            return value

        return run

    monkeypatch.setattr(cgaps.evaluate.stage, "evaluate_run", stage("evaluate", items))
    monkeypatch.setattr(cgaps.extract.stage, "extract_run", stage("extract", sal))
    monkeypatch.setattr(cgaps.pipeline, "run_pipeline", stage("run", {"items": 0.0}))
    config = tmp_path / "cfg.yaml"
    config.write_text("suite: probes\n")
    run = str(tmp_path / "run")
    for args in (
        ["evaluate", run, "--ray", "--ray-workers", "3"],
        ["extract", run, "--ray-address", "auto"],
        ["extract", run],
        ["run", str(config), "--out", run, "--ray"],
    ):
        result = CliRunner().invoke(app, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    assert seen == [
        ("evaluate", RayConfig(ray=True, ray_workers=3)),
        ("extract", RayConfig(ray_address="auto")),
        ("extract", None),
        ("run", RayConfig(ray=True)),
    ]
