"""The stage graph of a run, declared once (docs/method.md §6).

A run is a folder of files that stages write and later stages read. Every stage is declared
here, once: its name (which is also its command, ``cgaps NAME RUN_DIR``), the stages it comes
after, the columns of ``items.parquet`` and the other run files it reads, the files it writes
(and the working files it resumes from), and the config fields it reads. Everything that needs
to know the shape of a run derives from :data:`STAGES`:

- ``cgaps run`` / ``cgaps demo`` run the :attr:`Stage.pipeline` stages in order, skipping the
  current ones (:mod:`cgaps.pipeline`);
- ``cgaps status`` shows each stage done / stale / missing by the same rule;
- a completed stage records in ``run.json`` ``inputs`` the digests of what it read and the
  config it ran with (:func:`cgaps.rundir.provenance.stage_record`), and a stage is current
  while those still match: staleness is by **content**, never by file times, so a copied run is
  as current as its original, and a rescore that changes ``concepts.parquet`` makes the labels
  and the report stale while one that changes nothing does not;
- the commands that write a run directory (and so take its writer lock) are the stages, plus
  the few other writers the CLI names;
- :data:`RUN_FILES`, the files ``cgaps run --force`` deletes, is the union of what the stages
  write; the docs' stage table is checked against this module by a test.

This module is import-light (the standard library only; config fields are tagged in
:mod:`cgaps.config`), so ``cgaps --help`` and every layer of the package can read it. It names
no function of a stage: the stages' code imports this module, never the other way round, and
:mod:`cgaps.pipeline`, which sits above every stage, maps each name to the code that runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# ---------------------------------------------------------------- the run's files

RUN_JSON = "run.json"
ITEMS = "items.parquet"
RESPONSES_PARTIAL = "responses.partial.jsonl"  # evaluation's resume file
RESPONSES_SETTINGS = Path(RESPONSES_PARTIAL).with_suffix(".json").name  # the settings signature beside it
OPTION_LOGLIKS = "option_logliks.parquet"  # every option's log-likelihood (docs/benchmarks.md)
SALIENCY = "saliency.parquet"
SALIENCY_SHARDS = "saliency_shards"  # extraction's resume folder
CONTEXTS = "contexts.parquet"  # top activating contexts per concept
CONCEPTS = "concepts.parquet"
OVERLAP = "overlap.parquet"
LABELS = "labels.parquet"
THEMES = "themes.parquet"  # concept themes (cgaps.labels.themes)
THEME_TESTS = "theme_tests.parquet"  # the themes' tests and calls, made at scoring (cgaps.scoring.themes)
LABELS_LLM_CACHE = "labels_llm_cache.jsonl"  # auto-interp answers, resumable (cgaps.labels.autointerp)
ROBUSTNESS = "robustness.json"
VALIDATION = "validation.json"
REPORT = "report.html"
CONFIRMATION = "confirmation.parquet"  # the run's calls tested again on fresh items (cgaps confirm)
CONFIRM_DIR = "confirm"  # confirm's working run directory: the fresh items, their scores and saliency


@dataclass(frozen=True)
class Stage:
    """One stage of a run: what it reads and writes, and which config it follows."""

    name: str
    """The stage, and its command: ``cgaps NAME RUN_DIR``."""
    summary: str
    """What it does, in one line (``cgaps status``, the docs' stage table)."""
    item_columns: tuple[str, ...]
    """The columns of items.parquet it reads (``item_id``: which items there are); their digests
    are recorded when it completes."""
    writes: tuple[str, ...]
    """The run files it writes, the first being the one whose presence says that it ran."""
    reads: tuple[str, ...] = ()
    """The other run files it needs; their content digests are recorded."""
    may_read: tuple[str, ...] = ()
    """Run files it reads when they exist (recorded as absent when they do not)."""
    writes_columns: tuple[str, ...] = ()
    """Columns it adds to items.parquet (evaluation's response and score)."""
    working: tuple[str, ...] = ()
    """Its working files (resume files, caches): deleted by ``cgaps run --force``."""
    pipeline: bool = True
    """Run by ``cgaps run`` / ``cgaps demo``; the others are optional (a missing one is not pending)."""
    also_written_by: tuple[str, ...] = ()
    """Other commands that write the same output (``grade`` and ``import`` give evaluation's scores)."""


STAGES: tuple[Stage, ...] = (
    Stage(
        "items",
        "loads a suite (probes, paper10, benchmark names, or a spec file)",
        item_columns=(),
        writes=(ITEMS,),
    ),
    Stage(
        "evaluate",
        "the evaluated model answers every item (generation or option log-likelihood), then grading",
        item_columns=("item_id", "prompt", "messages", "choices", "answer_type"),
        writes=(OPTION_LOGLIKS,),
        writes_columns=("response", "score"),
        working=(RESPONSES_PARTIAL, RESPONSES_SETTINGS),
        also_written_by=("grade", "import"),
    ),
    Stage(
        "extract",
        "reads each item with the reader model, encodes its residual stream with the SAE, pools per item",
        item_columns=("item_id", "prompt", "messages", "response"),
        writes=(SALIENCY, CONTEXTS),
        working=(SALIENCY_SHARDS,),
    ),
    Stage(
        "score",
        "the χ tables of every concept: coverage, model performance, gaps and strengths (method §3)",
        item_columns=("item_id", "benchmark", "category", "score"),  # category: adjust_by
        reads=(SALIENCY,),
        writes=(CONCEPTS, OVERLAP, THEME_TESTS),
    ),
    Stage(
        "label",
        "what each concept is (words, phrases, logit lens, metadata), themes of similar concepts",
        # the item text: whole words and phrases are read from it; every peak comes from the
        # extraction's shards, which its record (and so the label's evidence fingerprint) covers
        item_columns=("item_id", "benchmark", "category", "meta", "prompt", "messages", "response"),
        reads=(SALIENCY, CONCEPTS),
        # the top contexts; labels another tool or an earlier run imported; the themes scoring tested
        may_read=(CONTEXTS, LABELS, THEME_TESTS),
        writes=(LABELS, THEMES),
        working=(LABELS_LLM_CACHE,),
    ),
    Stage(
        "robustness",
        "subsampling and adversarial ablation of the χ values (method §4)",
        item_columns=("item_id", "benchmark", "score"),
        reads=(SALIENCY,),
        writes=(ROBUSTNESS,),
        pipeline=False,
    ),
    Stage(
        "validate",
        "can the calls be trusted: null calibration, planted power, where the calls land",
        item_columns=("item_id", "benchmark", "category", "meta", "score"),
        reads=(SALIENCY,),
        may_read=(CONCEPTS, THEME_TESTS),  # where the calls land; what the run could have found
        writes=(VALIDATION,),
        pipeline=False,
    ),
    Stage(
        "confirm",
        "the run's gap and strength calls tested again on fresh pool items (method §7)",
        # the run's items: the pool never draws an item of the run (by content)
        item_columns=("item_id", "benchmark", "prompt", "messages", "score"),
        reads=(SALIENCY, CONCEPTS),
        may_read=(THEMES, LABELS, CONTEXTS),
        writes=(CONFIRMATION,),
        working=(CONFIRM_DIR,),
        pipeline=False,
    ),
    Stage(
        "report",
        "one self-contained offline page with the findings, figures and gap tables",
        item_columns=(
            "item_id",
            "benchmark",
            "prompt",
            "messages",
            "reference",
            "response",
            "score",
            "category",
            "answer_type",  # with choices: each item's chance level
            "choices",
        ),
        reads=(SALIENCY, CONCEPTS),
        # theme_tests.parquet: the themes scoring tested, shown until `cgaps label` describes them
        may_read=(OVERLAP, LABELS, THEMES, THEME_TESTS, CONTEXTS, ROBUSTNESS, VALIDATION, CONFIRMATION),
        writes=(REPORT,),
    ),
)

BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}
PIPELINE: tuple[str, ...] = tuple(s.name for s in STAGES if s.pipeline)

# Everything the stages write into a run directory, working files included: `cgaps run --force`
# deletes exactly these to start over.
RUN_FILES: tuple[str, ...] = tuple(
    dict.fromkeys([RUN_JSON, *(f for s in STAGES for f in (*s.writes, *s.working))])
)


def stage(name: str) -> Stage:
    """The stage called ``name`` (a KeyError names the stages for a typo in our own code)."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no stage {name!r}; the stages are {', '.join(BY_NAME)}") from None


def upstream(name: str, item_columns: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The stages whose outputs ``name`` reads, in graph order: the writers of the files it reads
    and of the item columns it reads (``item_columns``: those a completed run recorded, e.g. an
    extraction of the prompts alone does not read evaluation's responses; default: all it may
    read). Nothing else is declared: the edges of the graph are what the stages read."""
    s = stage(name)
    cols = set(s.item_columns if item_columns is None else item_columns)
    files = {*s.reads, *s.may_read, *([ITEMS] if cols else [])}
    return tuple(
        o.name for o in STAGES if o.name != name and (files & {*o.writes} or cols & {*o.writes_columns})
    )


def downstream(name: str) -> tuple[str, ...]:
    """The stages that read ``name``'s output, directly or through others, in graph order."""
    out: list[str] = []
    for s in STAGES:
        if any(dep == name or dep in out for dep in upstream(s.name)):
            out.append(s.name)
    return tuple(out)


def writer_of(filename: str) -> Stage:
    """The one stage that writes ``filename``."""
    for s in STAGES:
        if filename in s.writes or filename in s.working:
            return s
    raise KeyError(f"no stage writes {filename!r}")
