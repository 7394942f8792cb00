"""The user-facing configuration objects, documented field by field.

- :class:`RunConfig`: everything that determines a run (items, model, SAE, scoring).
- :class:`ReportOptions`: what ``report.html`` shows and how much of it.

Each field carries its help text in ``metadata["help"]`` (and, for a boolean with other
flag names, ``metadata["flags"]``): the command-line options are generated from these
fields (:func:`cgaps.cli._common.options_from`), so a default and its documentation are
written once, here. This module imports only the standard library and
:mod:`cgaps.errors`, so ``cgaps --help`` can read the fields without loading pandas.

Precedence: the defaults here < a YAML file (``cgaps run CONFIG.yaml``) < command-line
options. Unknown keys are errors (with a "did you mean"), cross-field checks live in
``__post_init__`` and raise :class:`~cgaps.errors.CGapsError` with the fix. The resolved
config is stored in ``run.json`` so later stages and other tools see what was used.
"""

from __future__ import annotations

import dataclasses
import re
import types
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cgaps.errors import CGapsError, did_you_mean

EMBEDDED = "embedded"

SPANS = ("prompt", "response", "both")
POOLS = ("max", "mean", "sum")
# multiple-choice protocols (docs/benchmarks.md "Evaluation protocols"); auto: per benchmark
MC_SCORING = ("auto", "generate", "loglik", "loglik_norm", "loglik_letter")
CONTEXT_OVERFLOW = ("truncate", "refuse")
# generation backends (cgaps.models.backends); auto: vLLM on a CUDA GPU, llama.cpp for a GGUF on the CPU
BACKENDS = ("auto", "transformers", "llamacpp", "vllm")
MC_FIRST_PASS = 1000  # Monte Carlo resamples every small-count concept gets (cgaps.scoring.core)
# what the expected score of an item is taken from (docs/method.md §3, "adjust_by")
ADJUST_BY = ("benchmark", "category", "none")
# The fields the scoring stage reads (``cgaps score`` takes each as an option; written back to run.json)
SCORING_KNOBS = (
    "presence",
    "min_support",
    "under_pct",
    "over_pct",
    "fdr",
    "ci_level",
    "mc_below",
    "mc_resamples",
    "adjust_by",
    "theme_cut",
)


def check_options(kind: str, options: Any, checks: tuple[tuple[str, bool, str], ...]) -> None:
    """Raise the one-line error for the first failing ``(field, holds, rule)`` of an options object,
    naming the field and its flag (``kind``: "robustness", "validate", ...)."""
    for name, holds, rule in checks:
        if not holds:
            flag = "--" + name.replace("_", "-")
            raise CGapsError(
                f"{kind} option '{name}' ({flag}) must be {rule}, got {getattr(options, name)!r}"
            )


def is_integer(x: Any) -> bool:
    """An int that is not a bool (True is an int to Python, never a count to a user)."""
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x: Any) -> bool:
    """An int or float that is not a bool."""
    return isinstance(x, int | float) and not isinstance(x, bool)


def check_field_types(obj: Any, source: str = "config") -> None:
    """Raise the one-line error for the first field of dataclass ``obj`` whose value is not of its
    declared type (``bool`` strictly: "no" or 1 is not a boolean; an int counts as a float)."""
    import typing

    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        allowed = (
            typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        )
        ok = any(
            (t is type(None) and value is None)
            or (t is bool and isinstance(value, bool))
            or (t is int and is_integer(value))
            or (t is float and is_number(value))
            or (t is str and isinstance(value, str))
            for t in allowed
        )
        if not ok:
            want = " or ".join("null" if t is type(None) else getattr(t, "__name__", str(t)) for t in allowed)
            raise CGapsError(
                f"{source} field '{f.name}' must be {want}, got {value!r} ({type(value).__name__})"
            )


# Torch devices a run may name (checked before any model loads).
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"


def documented(default: Any, help: str, **kw: Any) -> Any:
    """A field with its ``--help`` text (and other CLI metadata such as ``flags``)."""
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class RunConfig:
    """Everything that determines a Competency Gaps run."""

    # --- items
    suite: str = documented(
        "probes", "Suite name (probes, paper10), comma-separated benchmark names, or a benchmark spec file."
    )
    data_dir: str | None = documented(
        None, "Folder with the benchmarks' original files (else they are read from the hub)."
    )
    limit: int | None = documented(
        None, "At most this many items per benchmark (seeded sample, kept in source order)."
    )
    seed: int = documented(
        0, "Seed for item sampling, the probe generator, subsampling and anything else random."
    )
    # --- evaluated model and generation
    model: str = documented(
        EMBEDDED,
        "Evaluated model: 'embedded' (SmolLM2-135M-Instruct), a hub id, a local folder or a .gguf file.",
    )
    max_new_tokens: int = documented(256, "Greedy generation budget per item.")
    batch_size: int = documented(16, "Items per forward batch (generation and extraction).")
    generate_batch_size: int | None = documented(
        None,
        "Items per generation batch, when it should differ from batch_size (speed only: extraction "
        "keeps batch_size, so the concept tables of identical responses do not move with it).",
    )
    mc_scoring: str = documented(
        "auto",
        "Multiple-choice protocol: 'generate' (answer letter), 'loglik' (cloze: options not listed, "
        "summed log-likelihood of each option), 'loglik_norm' (the same per character: the harness's "
        "acc_norm), 'loglik_letter' (options listed, log-likelihood of each letter), or 'auto' (each "
        "benchmark's usual protocol, docs/benchmarks.md).",
    )
    chat_template: bool = documented(
        True,
        "Wrap prompts in the evaluated model's chat template (with its default system prompt); "
        "--no-chat-template reads the bare prompt, as lm-evaluation-harness does without --apply_chat_template.",
        flags="--chat-template/--no-chat-template",
    )
    chain_of_thought: bool = documented(
        False, "Ask for step-by-step reasoning on GSM8K and MATH before the final answer."
    )
    backend: str = documented(
        "auto",
        "Generation backend: 'transformers', 'llamacpp' (a GGUF file as it is, on the CPU; extra llamacpp), "
        "'vllm' (CUDA GPU; extra vllm) or 'auto' (vLLM on a CUDA GPU with vllm installed, llama.cpp for a "
        "GGUF on the CPU with llama-cpp-python installed, else transformers). Option log-likelihoods are "
        "always computed by transformers (docs/scaling.md, Generation).",
    )
    context_overflow: str = documented(
        "truncate",
        "A prompt longer than the evaluated model's context (less the new-token budget): 'truncate' "
        "keeps its last tokens (counted in run.json counts.prompts_truncated), 'refuse' stops with an error.",
    )
    # --- reader, SAE and pooling (docs/method.md §2)
    reader: str | None = documented(
        None, "Model whose residual stream is encoded (default: the evaluated model)."
    )
    sae: str = documented(
        EMBEDDED,
        "SAE: 'embedded' (shipped SmolLM2 SAE), a local sae-lens folder, or 'RELEASE/SAE_ID' on the hub.",
    )
    layer: int | None = documented(
        None, "Residual layer L (blocks.L.hook_resid_post); default: the SAE's own hook layer."
    )
    span: str = documented("both", "Tokens analysed: prompt, response or both.")
    pool: str = documented("max", "Pooling of token activations into saliency: max, mean or sum.")
    skip_special: bool = documented(
        True,
        "Skip BOS, chat-template tokens and the system prompt (their activations are artefacts).",
        flags="--skip-special/--keep-special",
    )
    max_norm_ratio: float | None = documented(
        10.0, "Skip tokens whose residual norm exceeds this many times the batch median (None keeps all)."
    )
    max_length: int = documented(
        1024, "Truncate each formatted conversation to this many tokens before encoding."
    )
    top_k: int | None = documented(
        None, "Keep only the top-k concepts per item in saliency.parquet (None keeps all)."
    )
    # --- scoring (docs/method.md §3)
    presence: float = documented(
        0.4,
        "Presence threshold tau in [0, 1): concept c counts as present in an item when s_c(x) >= tau x its "
        "scale m_c; fainter activations count as 0 in every score (0 keeps every activation).",
    )
    min_support: int = documented(5, "Concepts firing on fewer items are reported but never called gaps.")
    under_pct: float = documented(
        10.0, "Percentile of chi_bench below which a present concept is 'under'-represented."
    )
    over_pct: float = documented(90.0, "Percentile of chi_bench above which a concept is 'over'-represented.")
    fdr: float = documented(0.05, "Benjamini-Hochberg false discovery rate for model gaps and strengths.")
    ci_level: float = documented(0.95, "Confidence level of the Wilson interval on chi_model.")
    mc_below: float = documented(
        10.0,
        "Monte Carlo p-value (scores resampled within benchmark) for concepts whose expected minority "
        "count n_eff x min(e, 1 - e) is below this; the normal approximation above it.",
    )
    mc_resamples: int | None = documented(
        None,
        "Monte Carlo resamples for candidates (p <= 0.01 after the first 1,000); None: 2 x tested "
        "concepts / fdr (at least 20,000), so the smallest p-value can pass BH.",
    )
    adjust_by: str = documented(
        "benchmark",
        "What an item's expected score is taken from: 'benchmark' (its benchmark's mean), 'category' "
        "(the mean of its benchmark and category, so gaps are what fails beyond what the categories "
        "explain) or 'none' (the whole suite's mean).",
    )
    theme_cut: float = documented(
        0.4,
        "Themes tested beside the concepts: average-linkage distance (1 - similarity of co-activation "
        "and decoder direction) at which the concept tree is cut (docs/method.md §3).",
    )
    # --- execution
    device: str = documented("auto", "Torch device: auto, cpu, cuda, cuda:N, mps.")
    dtype: str = documented(
        "auto", "Model dtype: auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16, float16."
    )

    @property
    def generation_batch(self) -> int:
        """Items per generation batch: ``generate_batch_size``, else ``batch_size``."""
        return self.generate_batch_size or self.batch_size

    def __post_init__(self) -> None:
        check_field_types(self)  # before any comparison: "big" < 1 is a TypeError, not a message
        if not re.fullmatch(DEVICE_PATTERN, self.device):
            raise CGapsError(f"config field 'device' is {self.device!r}; valid: auto, cpu, cuda, cuda:N, mps")
        for name, choices in (
            ("span", SPANS),
            ("pool", POOLS),
            ("mc_scoring", MC_SCORING),
            ("context_overflow", CONTEXT_OVERFLOW),
            ("backend", BACKENDS),
            ("adjust_by", ADJUST_BY),
        ):
            value = getattr(self, name)
            if value not in choices:
                raise CGapsError(
                    f"config field '{name}' is {value!r}.{did_you_mean(value, choices)} Valid: {', '.join(choices)}"
                )
        for name in ("max_new_tokens", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise CGapsError(f"config field '{name}' must be >= 1, got {getattr(self, name)}")
        if self.generate_batch_size is not None and self.generate_batch_size < 1:
            raise CGapsError(
                f"config field 'generate_batch_size' must be >= 1 or null, got {self.generate_batch_size}"
            )
        if self.limit is not None and self.limit < 1:
            raise CGapsError(f"config field 'limit' must be >= 1 or null, got {self.limit}")
        if self.top_k is not None and self.top_k < 1:
            raise CGapsError(f"config field 'top_k' must be >= 1 or null, got {self.top_k}")
        if self.layer is not None and self.layer < 0:
            raise CGapsError(f"config field 'layer' must be >= 0, got {self.layer}")
        if not 0 <= self.under_pct < self.over_pct <= 100:
            raise CGapsError(
                f"config fields 'under_pct' ({self.under_pct}) and 'over_pct' ({self.over_pct}) need 0 <= under < over <= 100"
            )
        if not 0 < self.fdr < 1:
            raise CGapsError(f"config field 'fdr' must be in (0, 1), got {self.fdr}")
        if not 0 < self.ci_level < 1:
            raise CGapsError(f"config field 'ci_level' must be in (0, 1), got {self.ci_level}")
        if not 0 <= self.presence < 1:
            raise CGapsError(f"config field 'presence' must be in [0, 1), got {self.presence}")
        if self.mc_below < 0:
            raise CGapsError(
                f"config field 'mc_below' must be >= 0 (0 turns Monte Carlo off), got {self.mc_below}"
            )
        if self.mc_resamples is not None and self.mc_resamples < MC_FIRST_PASS:
            raise CGapsError(
                f"config field 'mc_resamples' must be >= {MC_FIRST_PASS} (the first pass), got {self.mc_resamples}"
            )
        if not 0 < self.theme_cut < 1:
            raise CGapsError(f"config field 'theme_cut' must be in (0, 1), got {self.theme_cut}")
        if self.min_support < 1:
            raise CGapsError(f"config field 'min_support' must be >= 1, got {self.min_support}")
        if self.max_norm_ratio is not None and self.max_norm_ratio <= 1:
            raise CGapsError(f"config field 'max_norm_ratio' must be > 1 or null, got {self.max_norm_ratio}")

    @property
    def reader_model(self) -> str:
        return self.reader or self.model

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with ``changes`` applied (None values are ignored: 'not given on the command line')."""
        return from_dict({**self.to_dict(), **{k: v for k, v in changes.items() if v is not None}})


@dataclass(frozen=True)
class ReportOptions:
    """What the report shows and how much of it (the caps keep the file small)."""

    top: int = documented(50, "Rows per table in the suite-wide (ALL) scope.")
    top_per_benchmark: int = documented(10, "Rows per table in each benchmark's scope.")
    examples: int = documented(2, "Example items per concept row, for each of correct and incorrect.")
    contexts: int = documented(3, "Top activating contexts shown for a concept without a label.")
    prompt_chars: int = documented(
        600, "Prompt text shown per example item (longer ones are cut, with a note)."
    )
    response_chars: int = documented(400, "Response text shown per example item.")
    reference_chars: int = documented(200, "Reference text shown per example item.")
    context_chars: int = documented(60, "Characters of text shown on each side of a context's firing token.")
    bins: int = documented(40, "Histogram bins.")

    def __post_init__(self) -> None:
        for name, value in dataclasses.asdict(self).items():
            if not isinstance(value, int) or value < (1 if name in ("bins", "top") else 0):
                raise CGapsError(
                    f"report option {name!r} must be a non-negative integer (bins, top >= 1), got {value!r}"
                )


def from_dict(data: dict[str, Any], source: str = "config") -> RunConfig:
    """Build a config, rejecting unknown keys with a suggestion."""
    names = [f.name for f in fields(RunConfig)]
    for key in data:
        if key not in names:
            raise CGapsError(
                f"{source}: unknown key {key!r}.{did_you_mean(key, names)} Known keys: {', '.join(names)}"
            )
    try:
        return RunConfig(**data)
    except CGapsError as e:  # name the file the bad value came from
        raise CGapsError(f"{source}: {e}") from e


def load_yaml(path: str | Path) -> RunConfig:
    import yaml  # not at module level: the CLI imports this module for --help

    path = Path(path)
    if not path.exists():
        raise CGapsError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise CGapsError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise CGapsError(f"{path}:{where}: invalid YAML ({getattr(e, 'problem', e)})") from e
    if not isinstance(data, dict):
        raise CGapsError(f"{path}: expected a mapping of config keys at the top level")
    try:
        return from_dict(data, source=str(path))
    except TypeError as e:
        raise CGapsError(f"{path}: {e}") from e


def config_from_run(meta: dict[str, Any], run_dir: str | Path) -> RunConfig:
    """The config stored in run.json (defaults for keys an older writer left out)."""
    return from_dict(meta.get("config", {}), source=str(Path(run_dir) / "run.json"))
