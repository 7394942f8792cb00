"""Shared fixtures: seeded generators, an isolated environment, the embedded model for slow tests.

Factories (tiny models, random SAEs, synthetic runs) live in helpers.py; this file holds only
what pytest must find by name. ``make test-fast`` (``-m "not slow"``) must not load SmolLM2:
collection refuses an unmarked test that asks for the ``smollm`` fixture, and
:func:`_seed_and_isolate` makes the GGUF conversion itself fail in unmarked tests, so a fast
test that reaches for the real model fails loudly instead of silently costing a minute on a
clean cache.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np

# see cgaps.cli.main.main: spinning OpenMP threads collapse under shared cores
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# `auto` as on a CPU without native bfloat16 (cgaps.models.loading.cpu_bf16_native), in this
# process and every process it starts (CLI runs, Ray workers): the tables the tests expect do not
# depend on the CPU; the tests of the bfloat16 paths ask for them (the native_bf16 fixture)
os.environ["CGAPS_CPU_BF16"] = "0"
import pytest

# the test run's own settings: where converted models are cached, where the benchmark files
# are, and whether test_report.py rewrites its golden figures
KEEP_ENV = {"CGAPS_CACHE", "CGAPS_BENCHMARKS", "CGAPS_UPDATE_GOLDEN", "CGAPS_CPU_BF16"}


def _no_conversion(gguf, *args, **kwargs):
    raise AssertionError(
        f"a test not marked slow converted {gguf}: use helpers.embedded_tokenizer() or a tiny model, "
        "or mark the test @pytest.mark.slow"
    )


@pytest.fixture(autouse=True)
def _ctrl_c_handler_restored():
    """The Ctrl-C handler of the session as each test found it: a library a test starts (a
    server, a harness) may install its own and leave it, and later tests fork children that
    inherit it."""
    import signal

    handler = signal.getsignal(signal.SIGINT)
    yield
    if handler is not None and signal.getsignal(signal.SIGINT) is not handler:
        signal.signal(signal.SIGINT, handler)


@pytest.fixture(autouse=True)
def _seed_and_isolate(request, monkeypatch):
    import torch  # a dependency: a broken install must fail here, not be skipped

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    # any other CGAPS_* setting of the developer's shell must not change what a test sees
    for name in [k for k in os.environ if k.startswith("CGAPS_") and k not in KEEP_ENV]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CGAPS_NO_PROGRESS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    if request.node.get_closest_marker("slow") is None:
        from cgaps.models import resolve_model

        # patch the name resolve_model calls, wherever the models package keeps it
        monkeypatch.setattr(sys.modules[resolve_model.__module__], "convert_gguf", _no_conversion)


def pytest_collection_modifyitems(config, items):
    # checked at collection: a session fixture is set up before any function-scoped check could run
    unmarked = [
        i.nodeid for i in items if "smollm" in i.fixturenames and i.get_closest_marker("slow") is None
    ]
    if unmarked:
        raise pytest.UsageError(f"the smollm fixture loads the real model; mark these slow: {unmarked}")


@pytest.fixture
def native_bf16(monkeypatch):
    """``auto`` as on a CPU that computes bfloat16 natively (generation and extraction in bfloat16)."""
    monkeypatch.setenv("CGAPS_CPU_BF16", "1")


@pytest.fixture(scope="module")
def torch_one_thread():
    """Torch on one thread for a whole module (``pytestmark = pytest.mark.usefixtures("torch_one_thread")``):
    a forked child must not inherit a half-initialised OpenMP pool, and one thread makes a run
    bit-reproducible. The previous count is restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_backend():
    """A seeded 4-block tiny llama (hidden 32) behind the embedded tokenizer: the reader of the
    extraction tests (no model file, no conversion)."""
    from cgaps.models import HFBackend
    from helpers import embedded_tokenizer, tiny_causal_lm

    model = tiny_causal_lm("llama", n_layers=4, hidden=32, max_positions=512)
    return HFBackend(model, embedded_tokenizer(), "tiny-llama", "cpu")


@pytest.fixture(scope="session")
def smollm():
    """The embedded SmolLM2-135M-Instruct backend (converted once into $CGAPS_CACHE); slow tests only."""
    from cgaps.models import load_backend

    return load_backend("embedded", device="cpu")


@pytest.fixture(scope="session")
def benchmarks_dir():
    """The paper's ten benchmarks in their original layouts (../shared/benchmarks)."""
    path = Path(
        os.environ.get(
            "CGAPS_BENCHMARKS", Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
        )
    )
    if not path.exists():
        pytest.skip(f"benchmark data not found at {path} (set CGAPS_BENCHMARKS)")
    return path
