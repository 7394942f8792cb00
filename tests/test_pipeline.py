"""The whole pipeline through the CLI: the paper presets on tiny stand-ins (CLI errors: test_cli.py)."""

from __future__ import annotations

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
def test_preset_runs_end_to_end_on_a_tiny_standin(tmp_path, monkeypatch, preset):
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
    # a second run finds every stage complete and redoes nothing but score/report: it loads
    # no model and leaves the evaluated items and the saliency as they were
    import cgaps.models

    def no_model(*args, **kwargs):
        raise AssertionError("the second run loaded a model")

    monkeypatch.setattr(cgaps.models, "load_backend", no_model)
    before = {name: (out / name).read_bytes() for name in (rundir.ITEMS, rundir.SALIENCY)}
    again = CliRunner().invoke(app, ["run", str(config), "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert {name: (out / name).read_bytes() for name in before} == before


def test_sae_of_another_width_and_deep_layer_are_refused(tmp_path):
    from cgaps.errors import CGapsError
    from cgaps.sae import load_sae
    from helpers import save_random_sae

    sae = save_random_sae(tmp_path / "sae", "topk", d_in=32, d_sae=16, layer=3)
    with pytest.raises(CGapsError, match="d_in=32.*576"):
        load_sae(str(sae), hidden_size=576, n_layers=30)
    with pytest.raises(CGapsError, match="beyond"):
        load_sae(str(sae), hidden_size=32, n_layers=2)
