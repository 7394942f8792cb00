"""The whole pipeline through the CLI: the paper presets on tiny stand-ins, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from cgaps import rundir
from cgaps.cli.main import app

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "configs").glob("*.yaml"))
SPEC_FILES = (
    rundir.RUN_JSON,
    rundir.ITEMS,
    rundir.SALIENCY,
    rundir.CONCEPTS,
    rundir.LABELS,
    rundir.OVERLAP,
    rundir.REPORT,
)


def test_presets_exist_and_load():
    from cgaps.config import load_yaml

    names = {p.name for p in PRESETS}
    assert {"gemma2-2b-it.yaml", "llama31-8b-instruct.yaml"} <= names
    for path in PRESETS:
        cfg = load_yaml(path)
        assert cfg.layer is not None and "/" in cfg.sae


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["gemma2-2b-it.yaml", "llama31-8b-instruct.yaml"])
def test_preset_runs_end_to_end_on_a_tiny_standin(tmp_path, preset):
    from helpers import make_standin

    model_dir, sae_dir = make_standin(REPO / "configs" / preset, tmp_path)
    cfg = yaml.safe_load((REPO / "configs" / preset).read_text())
    cfg.update(
        model=str(model_dir),
        sae=str(sae_dir),
        suite="probes",
        limit=12,
        max_new_tokens=4,
        device="cpu",
        dtype="float32",
    )
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in SPEC_FILES:
        assert (out / name).exists(), name
    meta = rundir.read_run_json(out)
    assert meta["n_concepts"] == 128
    assert meta["sae"]["layer"] == cfg["layer"]
    concepts = pd.read_parquet(out / rundir.CONCEPTS)
    assert len(concepts) == 128 * 2  # every concept in the one benchmark and in ALL
    items = rundir.read_items(out, scored=True)
    assert len(items) == 12
    # a second run finds every stage complete and redoes nothing but score/report
    again = CliRunner().invoke(app, ["run", str(config), "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "generating" not in again.output and "extracting" not in again.output


def _cgaps(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cgaps", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def _scored_run(path: Path, items: pd.DataFrame, n_concepts: int = 4) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    rundir.write_table(items, path / rundir.ITEMS)
    rundir.write_table(
        pd.DataFrame({"item_id": items["item_id"].astype(str), "concept": 0, "value": 1.0}),
        path / rundir.SALIENCY,
    )
    (path / rundir.RUN_JSON).write_text(json.dumps({"n_concepts": n_concepts}))
    return path


GOOD = pd.DataFrame(
    {
        "item_id": ["a", "b"],
        "benchmark": ["x", "x"],
        "prompt": ["p", "q"],
        "reference": ["1", "2"],
        "response": ["1", "3"],
        "score": [1.0, 0.0],
    }
)


@pytest.mark.parametrize(
    ("items", "fragment"),
    [
        (GOOD.drop(columns="reference"), "missing column(s) reference"),
        (GOOD.assign(extra=1), "unknown column(s) extra"),
        (GOOD.assign(item_id=["a", "a"]), "'item_id' has duplicates"),
        (GOOD.assign(score=[1.0, 1.5]), "field 'score'"),
        (GOOD.assign(score=[1.0, float("nan")]), "field 'score'"),
        (GOOD.iloc[:0], "empty"),
    ],
)
def test_bad_items_get_one_line_errors(tmp_path, items, fragment):
    run = _scored_run(tmp_path / "run", items)
    proc = _cgaps("score", str(run), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "items.parquet" in lines[0] and fragment in lines[0]


def test_old_schema_and_missing_width_get_one_line_errors(tmp_path):
    run = _scored_run(tmp_path / "run", GOOD)
    (run / rundir.RUN_JSON).write_text(json.dumps({"schema_version": 0, "n_concepts": 4}))
    proc = _cgaps("score", str(run), cwd=tmp_path)
    assert proc.returncode == 2 and "schema_version" in proc.stderr and "run.json" in proc.stderr
    (run / rundir.RUN_JSON).write_text(json.dumps({"config": {}}))
    proc = _cgaps("score", str(run), cwd=tmp_path)
    assert proc.returncode == 2 and "n_concepts" in proc.stderr


def test_sae_of_another_width_and_deep_layer_are_refused(tmp_path):
    from cgaps.errors import CGapsError
    from cgaps.sae import load_sae
    from helpers import save_random_sae

    sae = save_random_sae(tmp_path / "sae", "topk", d_in=32, d_sae=16, layer=3)
    with pytest.raises(CGapsError, match="d_in=32.*576"):
        load_sae(str(sae), hidden_size=576, n_layers=30)
    with pytest.raises(CGapsError, match="beyond"):
        load_sae(str(sae), hidden_size=32, n_layers=2)


def test_help_is_fast(tmp_path):
    import time

    t = time.perf_counter()
    proc = _cgaps("--help", cwd=tmp_path)
    assert proc.returncode == 0 and "extract" in proc.stdout
    # generous bound for a loaded CI machine; measured ~0.2 s (heavy imports are deferred)
    assert time.perf_counter() - t < 5
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "cgaps", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    heavy = {"torch", "transformers", "pandas", "sae_lens", "scipy"}
    imported = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert not heavy & imported
