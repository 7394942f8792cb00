"""Shared fixtures: seeded generators, an isolated environment, the embedded model once per session."""

from __future__ import annotations

import os
import random

import numpy as np

# see cgaps.cli.main.main: spinning OpenMP threads collapse under shared cores
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import pytest


@pytest.fixture(autouse=True)
def _seed_and_isolate(monkeypatch):
    random.seed(0)
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:
        pass
    monkeypatch.setenv("CGAPS_NO_PROGRESS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def smollm():
    """The embedded SmolLM2-135M-Instruct backend (converted once into $CGAPS_CACHE)."""
    from cgaps.models import load_backend

    return load_backend("embedded", device="cpu")


@pytest.fixture(scope="session")
def benchmarks_dir():
    """The paper's ten benchmarks in their original layouts (../shared/benchmarks)."""
    from pathlib import Path

    path = Path(
        os.environ.get(
            "CGAPS_BENCHMARKS", Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
        )
    )
    if not path.exists():
        pytest.skip(f"benchmark data not found at {path} (set CGAPS_BENCHMARKS)")
    return path
