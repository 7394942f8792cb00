"""``cgaps.console.quiet_third_party``: the libraries underneath stay out of a command's output."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from cgaps.console import _THIRD_PARTY_PROGRESS, quiet_third_party


def _shown(module: str, category: type[Warning]) -> bool:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        quiet_third_party()
        warnings.warn_explicit("`past_key_values` is deprecated", category, "module.py", 1789, module=module)
    return bool(seen)


@pytest.mark.parametrize("category", [FutureWarning, DeprecationWarning])
def test_library_deprecations_are_quiet_and_ours_are_not(monkeypatch, category):
    for name in (*_THIRD_PARTY_PROGRESS, "TRANSFORMERS_VERBOSITY"):
        monkeypatch.delenv(name, raising=False)
    assert not _shown("torch.nn.modules.module", category)
    assert not _shown("transformers.generation.utils", category)
    assert _shown("cgaps.models.hf", category)


def test_progress_off_turns_the_libraries_bars_off(monkeypatch):
    for name in (*_THIRD_PARTY_PROGRESS, "TRANSFORMERS_VERBOSITY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("CGAPS_NO_PROGRESS")
    with warnings.catch_warnings():
        quiet_third_party()
    assert all(name not in __import__("os").environ for name in _THIRD_PARTY_PROGRESS)
    monkeypatch.setenv("CGAPS_NO_PROGRESS", "1")
    monkeypatch.setenv("TQDM_DISABLE", "0")  # a variable the user set is left as it is
    with warnings.catch_warnings():
        quiet_third_party()
    import os

    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" and os.environ["TQDM_DISABLE"] == "0"


@pytest.mark.integration
def test_a_command_with_progress_off_prints_no_library_bar(tmp_path):
    """In a fresh process, as `cgaps` runs: after the CLI's setup, transformers' own progress bar
    (the "Loading weights" one) is off and its deprecations are not shown."""
    code = (
        "import os, sys, warnings\n"
        "os.environ['CGAPS_NO_PROGRESS'] = '1'\n"
        "from cgaps.console import setup_logging\n"
        "setup_logging()\n"
        "from transformers.utils import logging as hf\n"
        "from transformers.utils.logging import tqdm\n"
        "for _ in tqdm(range(3), desc='Loading weights'): pass\n"
        "warnings.warn_explicit('deprecated', FutureWarning, 'm.py', 1, module='torch.nn.modules.module')\n"
        "print(hf.is_progress_bar_enabled())\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k not in _THIRD_PARTY_PROGRESS}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    assert "Loading weights" not in done.stderr and "deprecated" not in done.stderr
