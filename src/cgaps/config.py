"""The user-facing configuration objects, documented field by field.

- :class:`RunConfig`: everything that determines a run (items, model, SAE, scoring).
- :class:`ReportConfig`: what ``report.html`` shows and how much of it.

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
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from cgaps import stages
from cgaps.config_fields import check_field_types, documented, section
from cgaps.confirm.config import ConfirmConfig
from cgaps.errors import CGapsError, did_you_mean
from cgaps.labels.config import LabelConfig
from cgaps.pools.config import PoolConfig
from cgaps.report.config import ReportConfig
from cgaps.robustness.config import RobustnessConfig
from cgaps.validate.config import ValidateConfig

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
# A model, SAE, suite or folder argument: at most this many characters, no control characters (they
# are printed in messages, run.json and the report).
MAX_ARGUMENT = 1000
CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f]")

# Torch devices a run may name (checked before any model loads).
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"


@dataclass
class RunConfig:
    """Everything that determines a Competency Gaps run."""

    # --- items
    suite: str = documented(
        "probes",
        "Suite name (probes, paper10), comma-separated benchmark names, or a benchmark spec file.",
        stages=("items",),
    )
    data_dir: str | None = documented(
        None,
        "Folder with the benchmarks' original files (else they are read from the hub).",
        stages=("items",),
    )
    limit: int | None = documented(
        None,
        "At most this many items per benchmark (seeded sample, kept in source order).",
        stages=("items",),
    )
    seed: int = documented(
        0,
        "Seed for item sampling, the probe generator, subsampling and anything else random.",
        stages=("items", "score", "robustness", "validate", "confirm"),
    )
    # --- evaluated model and generation
    model: str = documented(
        EMBEDDED,
        "Evaluated model: 'embedded' (SmolLM2-135M-Instruct), a hub id, a local folder or a .gguf file.",
        stages=("evaluate", "extract"),
    )
    max_new_tokens: int = documented(256, "Greedy generation budget per item.", stages=("evaluate",))
    batch_size: int = documented(
        16,
        "Items per forward batch (generation and extraction).",
        stages=("evaluate", "extract"),
        speed_only=True,
    )
    generate_batch_size: int | None = documented(
        None,
        "Items per generation batch, when it should differ from batch_size (speed only: extraction "
        "keeps batch_size, so the concept tables of identical responses do not move with it).",
        stages=("evaluate",),
        speed_only=True,
    )
    mc_scoring: str = documented(
        "auto",
        "Multiple-choice protocol: 'generate' (answer letter), 'loglik' (cloze: options not listed, "
        "summed log-likelihood of each option), 'loglik_norm' (the same per character: the harness's "
        "acc_norm), 'loglik_letter' (options listed, log-likelihood of each letter), or 'auto' (each "
        "benchmark's usual protocol, docs/benchmarks.md).",
        stages=("evaluate",),
    )
    chat_template: bool = documented(
        True,
        "Wrap prompts in the evaluated model's chat template (with its default system prompt); "
        "--no-chat-template reads the bare prompt, as lm-evaluation-harness does without --apply_chat_template.",
        flags="--chat-template/--no-chat-template",
        stages=("evaluate",),
    )
    chain_of_thought: bool = documented(
        False, "Ask for step-by-step reasoning on GSM8K and MATH before the final answer.", stages=("items",)
    )
    backend: str = documented(
        "auto",
        "Generation backend: 'transformers', 'llamacpp' (a GGUF file as it is, on the CPU; extra llamacpp), "
        "'vllm' (CUDA GPU; extra vllm) or 'auto' (vLLM on a CUDA GPU with vllm installed, llama.cpp for a "
        "GGUF on the CPU with llama-cpp-python installed, else transformers). Option log-likelihoods are "
        "always computed by transformers (docs/scaling.md, Generation).",
        stages=("evaluate",),
        speed_only=True,
    )
    context_overflow: str = documented(
        "truncate",
        "A prompt longer than the evaluated model's context (less the new-token budget): 'truncate' "
        "keeps its last tokens (counted in run.json counts.prompts_truncated), 'refuse' stops with an error.",
        stages=("evaluate",),
    )
    # --- reader, SAE and pooling (docs/method.md §2)
    reader: str | None = documented(
        None, "Model whose residual stream is encoded (default: the evaluated model).", stages=("extract",)
    )
    sae: str = documented(
        EMBEDDED,
        "SAE: 'embedded' (shipped SmolLM2 SAE), a local sae-lens folder, or 'RELEASE/SAE_ID' on the hub.",
        stages=("extract",),
    )
    layer: int | None = documented(
        None,
        "Residual layer L (blocks.L.hook_resid_post); default: the SAE's own hook layer.",
        stages=("extract",),
    )
    span: str = documented("both", "Tokens analysed: prompt, response or both.", stages=("extract",))
    pool: str = documented(
        "max", "Pooling of token activations into saliency: max, mean or sum.", stages=("extract",)
    )
    skip_special: bool = documented(
        True,
        "Skip BOS, chat-template tokens and the system prompt (their activations are artefacts).",
        flags="--skip-special/--keep-special",
        stages=("extract",),
    )
    max_norm_ratio: float | None = documented(
        10.0,
        "Skip tokens whose residual norm exceeds this many times the batch median (None keeps all).",
        stages=("extract",),
    )
    max_length: int = documented(
        1024, "Truncate each formatted conversation to this many tokens before encoding.", stages=("extract",)
    )
    top_k: int | None = documented(
        None,
        "Keep only the top-k concepts per item in saliency.parquet (None keeps all).",
        stages=("extract",),
    )
    # --- scoring (docs/method.md §3)
    presence: float = documented(
        0.4,
        "Presence threshold tau in [0, 1): concept c counts as present in an item when s_c(x) >= tau x its "
        "scale m_c; fainter activations count as 0 in every score (0 keeps every activation).",
        stages=("score", "label", "robustness", "validate", "confirm"),
    )
    min_support: int = documented(
        5,
        "Concepts firing on fewer items are reported but never called gaps.",
        stages=("score", "robustness", "validate", "confirm"),
    )
    under_pct: float = documented(
        10.0,
        "Percentile of chi_bench below which a present concept is 'under'-represented.",
        stages=("score",),
    )
    over_pct: float = documented(
        90.0, "Percentile of chi_bench above which a concept is 'over'-represented.", stages=("score",)
    )
    fdr: float = documented(
        0.05,
        "Benjamini-Hochberg false discovery rate for model gaps and strengths.",
        stages=("score", "validate", "confirm"),
    )
    ci_level: float = documented(
        0.95, "Confidence level of the Wilson interval on chi_model.", stages=("score",)
    )
    mc_below: float = documented(
        10.0,
        "Monte Carlo p-value (scores resampled within benchmark) for concepts whose expected minority "
        "count n_eff x min(e, 1 - e) is below this; the normal approximation above it.",
        stages=("score", "validate", "confirm"),
    )
    mc_resamples: int | None = documented(
        None,
        "Monte Carlo resamples for candidates (p <= 0.01 after the first 1,000); None: 2 x tested "
        "concepts / fdr (at least 20,000), so the smallest p-value can pass BH.",
        stages=("score", "validate", "confirm"),
    )
    adjust_by: str = documented(
        "benchmark",
        "What an item's expected score is taken from: 'benchmark' (its benchmark's mean), 'category' "
        "(the mean of its benchmark and category, so gaps are what fails beyond what the categories "
        "explain) or 'none' (the whole suite's mean).",
        stages=("score", "validate"),
    )
    theme_cut: float = documented(
        0.4,
        "Themes tested beside the concepts: average-linkage distance (1 - co-activation cosine) at "
        "which the tree of the tested concepts is cut (docs/method.md §3).",
        stages=("score", "validate"),
    )
    # --- execution
    device: str = documented(
        "auto", "Torch device: auto, cpu, cuda, cuda:N, mps.", stages=("evaluate", "extract"), speed_only=True
    )
    dtype: str = documented(
        "auto",
        "Model dtype: auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16, float16.",
        stages=("evaluate", "extract"),
    )

    also_run: str = documented(
        "",
        "Optional stages `cgaps run` runs too, comma-separated: robustness, validate, confirm (default: "
        "none; each can also be run alone, `cgaps robustness RUN_DIR`; confirm needs its pool section).",
    )
    # --- the stages with options of their own: one section each, a mapping in YAML
    # (`label: {enrich_p: 0.01}`); `cgaps run` takes them as --SECTION-FIELD options
    label: LabelConfig = section(LabelConfig, "label", "The label stage (docs/method.md §5).")
    robustness: RobustnessConfig = section(
        RobustnessConfig, "robustness", "The robustness checks (docs/method.md §4), when run."
    )
    validate: ValidateConfig = section(
        ValidateConfig, "validate", "The validation checks (docs/method.md §3), when run."
    )
    report: ReportConfig = section(ReportConfig, "report", "What the report shows.")
    confirm: ConfirmConfig = section(
        ConfirmConfig,
        "confirm",
        "Testing the run's calls again on fresh items (docs/method.md §7), when run.",
    )
    fresh: PoolConfig = section(
        PoolConfig,
        "confirm",
        "Where confirm (and fill) draw fresh items from: the pool (docs/method.md §7).",
    )

    @property
    def generation_batch(self) -> int:
        """Items per generation batch: ``generate_batch_size``, else ``batch_size``."""
        return self.generate_batch_size or self.batch_size

    def __post_init__(self) -> None:
        for name in SECTIONS:  # a section given as a mapping (run.json, YAML) becomes its dataclass
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(
                    self, name, section_from_dict(_SECTION_TYPES[name], value, f"config section '{name}'")
                )
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
        if self.seed < 0:
            raise CGapsError(
                f"config field 'seed' must be >= 0 (numpy seeds are non-negative), got {self.seed}"
            )
        for name in ("model", "reader", "sae", "suite", "data_dir"):
            value = getattr(self, name)
            if value is not None and (len(value) > MAX_ARGUMENT or CONTROL_CHARS.search(value)):
                shown = CONTROL_CHARS.sub("?", value[:60])
                raise CGapsError(
                    f"config field '{name}' must be at most {MAX_ARGUMENT} printable characters, got "
                    f"{len(value):,} characters starting {shown!r}"
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
        optional = tuple(s.name for s in stages.STAGES if not s.pipeline)
        for name in self.optional_stages:
            if name not in optional:
                raise CGapsError(
                    f"config field 'also_run' names {name!r}.{did_you_mean(name, optional)} "
                    f"Optional stages: {', '.join(optional)}"
                )
        if self.max_norm_ratio is not None and self.max_norm_ratio <= 1:
            raise CGapsError(f"config field 'max_norm_ratio' must be > 1 or null, got {self.max_norm_ratio}")

    @property
    def optional_stages(self) -> tuple[str, ...]:
        """The optional stages :attr:`also_run` names, in the order given."""
        return tuple(s.strip() for s in self.also_run.split(",") if s.strip())

    @property
    def reader_model(self) -> str:
        return self.reader or self.model

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with ``changes`` applied (None values are ignored: 'not given on the command line');
        a section given as a mapping changes only the fields it names."""
        current = self.to_dict()
        for name, value in changes.items():
            if value is None:
                continue
            if name in SECTIONS and isinstance(value, dict):
                value = {**current.get(name, {}), **value}
            current[name] = value
        return from_dict(current)


# The sections of the config (a stage's own options, a dataclass each) and their types.
_SECTION_TYPES: dict[str, type] = {
    f.name: f.default_factory  # type: ignore[misc]
    for f in fields(RunConfig)
    if f.metadata.get("section")
}
SECTIONS = tuple(_SECTION_TYPES)
# Fields a stage resolves when the config leaves them None (the layer: the SAE's own): a stage's
# record holds the resolved value, which a None in the run's config matches.
RESOLVED_FIELDS = ("layer",)


def from_dict(data: dict[str, Any], source: str = "config") -> RunConfig:
    """Build a config, rejecting unknown keys with a suggestion; a section (``label``, ...) is a
    mapping of its own fields, checked the same way."""
    values = dict(data)
    for name in SECTIONS:
        if name in values and not dataclasses.is_dataclass(values[name]):
            values[name] = section_from_dict(
                _SECTION_TYPES[name], values[name], f"{source}: section '{name}'"
            )
    names = [f.name for f in fields(RunConfig)]
    for key in values:
        if key not in names:
            raise CGapsError(
                f"{source}: unknown key {key!r}.{did_you_mean(key, names)} Known keys: {', '.join(names)}"
            )
    try:
        return RunConfig(**values)
    except CGapsError as e:  # name the file the bad value came from
        raise CGapsError(f"{source}: {e}") from e


def section_from_dict(cls: type, data: Any, source: str) -> Any:
    """A section of the config from its mapping: unknown keys and bad values are one-line errors
    naming the section."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise CGapsError(f"{source} must be a mapping of its fields, got {type(data).__name__}")
    names = [f.name for f in fields(cls)]
    for key in data:
        if key not in names:
            raise CGapsError(
                f"{source}: unknown key {key!r}.{did_you_mean(str(key), names)} Known keys: {', '.join(names)}"
            )
    try:
        return cls(**data)
    except CGapsError as e:
        raise CGapsError(f"{source}: {e}") from e


def stage_config(stage: str, cfg: RunConfig) -> dict[str, Any]:
    """The config fields ``stage`` reads and that shape what it writes (docs/method.md §6): the
    fields tagged with the stage (not the speed-only ones), and its section as one mapping. A
    completed stage records them in run.json; a run whose config later differs is stale there."""
    out: dict[str, Any] = {}
    for f in fields(cfg):
        if stage in f.metadata.get("stages", ()) and not f.metadata.get("speed_only"):
            value = getattr(cfg, f.name)
            is_section = dataclasses.is_dataclass(value) and not isinstance(value, type)
            out[f.name] = dataclasses.asdict(value) if is_section else value
    return out


def command_fields(stage: str) -> tuple[str, ...]:
    """The plain fields tagged with ``stage``, speed-only ones included: the options of its command
    (``cgaps evaluate --batch-size``); its section, if it has one, gives the rest."""
    return tuple(
        f.name
        for f in fields(RunConfig)
        if stage in f.metadata.get("stages", ()) and not f.metadata.get("section")
    )


def stage_fields(stage: str) -> tuple[str, ...]:
    """The names of the fields :func:`stage_config` records for ``stage``."""
    return tuple(
        f.name
        for f in fields(RunConfig)
        if stage in f.metadata.get("stages", ()) and not f.metadata.get("speed_only")
    )


def load_yaml(path: str | Path) -> RunConfig:
    import yaml  # not at module level: the CLI imports this module for --help

    path = Path(path)
    if not path.exists():
        raise CGapsError(f"{path}: no such config file")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_unique_keys_loader()) or {}
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


def _unique_keys_loader() -> Any:
    """PyYAML's safe loader, refusing a key given twice in one mapping: YAML lets the last one
    win, which silently drops the first (a config that says `presence` twice means one of them)."""
    import yaml

    class UniqueKeys(yaml.SafeLoader):
        pass

    def mapping(loader: Any, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1}); keep one",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return loader.construct_mapping(node, deep=deep)

    UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return UniqueKeys


def config_from_run(meta: dict[str, Any], run_dir: str | Path) -> RunConfig:
    """The config stored in run.json (defaults for keys an older writer left out)."""
    return from_dict(meta.get("config", {}), source=str(Path(run_dir) / "run.json"))


# The scoring stage's fields besides the seed, in the order the tables' metadata lists them
# (cgaps.scoring.stage writes them with the seed into both tables): tagged in RunConfig.
SCORING_FIELDS = tuple(f for f in stage_fields("score") if f != "seed")
