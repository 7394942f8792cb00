"""The embedded default end to end: SmolLM2 from the wheel, the shipped SAE, the probe suite."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from cgaps import rundir
from cgaps.cli.main import app


@pytest.mark.slow
def test_demo_runs_on_the_embedded_default(tmp_path):
    from cgaps.sae import embedded_sae_dir

    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--limit", "16"])
    assert result.exit_code == 0, result.output
    meta = rundir.read_run_json(out)
    assert meta["sae"]["id"] == f"embedded:{embedded_sae_dir().name}"
    assert meta["model"]["evaluated"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    items = rundir.read_items(out, scored=True)
    assert len(items) == 16 and items["response"].str.len().gt(0).all()
    sal = rundir.read_saliency(out, pd.Index(items["item_id"]), meta["n_concepts"])
    # every item has analysed tokens, and a TopK SAE makes many concepts fire per item
    assert set(sal["item_id"]) == set(items["item_id"])
    assert sal.groupby("item_id").size().min() >= 10
    concepts = pd.read_parquet(out / rundir.CONCEPTS)
    assert len(concepts) == 2 * meta["n_concepts"]
    assert (out / rundir.REPORT).stat().st_size > 10_000
