"""Pool coverage: the items ``cgaps fill`` and ``cgaps confirm`` draw from, and where each concept is present on them.

A pool is named by one argument (``--pool``):

* a **run directory** (anything with an ``items.parquet``: a ``cgaps items`` / ``cgaps run`` /
  ``cgaps import`` run, or a pool made earlier): its items;
* anything **``cgaps items``** loads (:func:`cgaps.items.load_suite`): a suite name, comma-separated
  benchmark names, or a spec file, with ``--data-dir`` and ``--pool-limit``.

Generated items (:mod:`cgaps.pools.generated`) are a third source, added by the commands.

**Prompt coverage.** Where a concept is present on a pool item is read from that item's
*prompt* (docs/method.md §2 with span = prompt): a pool item has no response yet, and what a
benchmark covers is a property of its items, not of one model's answers. The saliency comes
from the target run's own reader and SAE, with every extraction config field of the run except the
span (:func:`prompt_config`), through the extraction stage itself
(:func:`cgaps.extract.stage.extract_run`) in a working run directory, so it is sharded,
resumable and written by the same code as any run's. A source run whose extraction already has
exactly that signature (its ``saliency_shards/manifest.json``, the stage's own record of its
settings) is read as it is, without a second extraction: for example a prompts-only run used
as its own pool.

**The concept scale.** Presence compares s_c(x) with τ · m_c, and the commands keep one m_c for
everything they compare (:func:`fixed_scale`): the SAE's shipped reference max when the run has
one (docs/method.md §2), else the target's own suite max, and only for concepts that never fire
there (m_c = 0) the pool's max, so a pool never moves the scale of a concept the target has seen.

**Never the run's own items.** A pool item whose prompt and messages equal an item of the
target's is left out (:func:`exclude_known`): AGIEval's ``math`` items are MATH items, a
regenerated probe suite repeats some probes, and a confirmation on items the calls were made
from would confirm nothing. Ids do not decide it (two generator seeds number their items
alike); a pool item whose id a target item already uses is renamed ``pool:ID`` where both
must live in one run directory (:func:`distinct_ids`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.console import info
from cgaps.errors import CGapsError

if TYPE_CHECKING:
    import scipy.sparse as sp

    from cgaps.seams import ResidualReader, SAEEncoder

MANIFEST = Path(rundir.SALIENCY_SHARDS) / "manifest.json"  # the extraction's settings signature
# the item columns a pool keeps: what `cgaps items` writes (responses and scores belong to a model)
POOL_COLUMNS = tuple(c for c in rundir.ITEM_COLUMNS if c not in rundir.ITEM_SCORED)


def empty_saliency() -> pd.DataFrame:
    """A saliency table without rows, with the column types of a real one (a concat keeps them)."""
    return pd.DataFrame(
        {
            "item_id": pd.Series(dtype=object),
            "concept": pd.Series(dtype=np.int32),
            "value": pd.Series(dtype=np.float32),
        }
    )


@dataclass
class Covered:
    """Items with their prompt-span saliency (one row per item x concept present or not, raw values)."""

    items: pd.DataFrame
    saliency: pd.DataFrame
    where: Path  # the run directory the saliency was read from


@dataclass
class Reader:
    """The reader model and SAE of a run's config, loaded once, when an extraction first needs them
    (a command whose extractions are all current loads no model)."""

    cfg: RunConfig
    backend: ResidualReader | None = None
    sae: SAEEncoder | None = None
    loaded: bool = field(default=False, init=False)

    def get(self) -> tuple[ResidualReader, SAEEncoder]:
        if not self.loaded or self.backend is None or self.sae is None:
            from cgaps.extract.stage import load_reader

            self.backend, self.sae = load_reader(self.cfg, self.backend, self.sae)
            self.loaded = True
        return self.backend, self.sae


def prompt_config(cfg: RunConfig) -> RunConfig:
    """The run's config with the prompt span: the extraction settings of every coverage figure here."""
    return cfg.replace(span="prompt")


def item_keys(items: pd.DataFrame) -> pd.Series:
    """A digest of what the reader sees of each item (its prompt, or its messages when it has them)."""

    def key(prompt: Any, messages: Any) -> str:
        text = messages if isinstance(messages, str) and messages else f"prompt:{prompt}"
        return hashlib.sha256(str(text).encode()).hexdigest()[:16]

    messages = items["messages"] if "messages" in items.columns else pd.Series([None] * len(items))
    return pd.Series([key(p, m) for p, m in zip(items["prompt"], messages, strict=True)], index=items.index)


def exclude_known(pool: pd.DataFrame, known: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """``pool`` without the items of ``known`` (same prompt and messages); and how many went."""
    same = item_keys(pool).isin(set(item_keys(known))).to_numpy()
    return pool[~same].reset_index(drop=True), int(same.sum())


def distinct_ids(pool: pd.DataFrame, known: pd.DataFrame) -> pd.DataFrame:
    """``pool`` with every id that ``known`` also uses renamed ``pool:ID`` (then ``pool2:ID``...)."""
    taken = set(known["item_id"]) | set(pool["item_id"])
    ids = []
    for i in pool["item_id"].astype(str):
        if i in set(known["item_id"]):
            n, new = 1, f"pool:{i}"
            while new in taken:
                n += 1
                new = f"pool{n}:{i}"
            taken.add(new)
            i = new
        ids.append(i)
    return pool.assign(item_id=ids)


def read_signature(run_dir: Path) -> dict[str, Any] | None:
    """The settings signature of a run's extraction (None when it has none: imported saliency, or
    a run whose shard folder was deleted)."""
    path = run_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        sig = rundir.read_json_file(path, "delete the shard folder")
    except CGapsError:
        return None
    return sig.get("signature") if isinstance(sig, dict) else None


def wanted_signature(target: Path) -> dict[str, Any] | None:
    """The signature a prompt-span extraction with the target run's settings has (None when unknown)."""
    sig = read_signature(target)
    return None if sig is None else {**sig, "span": "prompt"}


def _saliency_is_current(run_dir: Path, items: pd.DataFrame, want: dict[str, Any] | None) -> bool:
    """Whether ``run_dir`` holds a complete prompt-span extraction of exactly ``items`` with ``want``."""
    if want is None or read_signature(run_dir) != want or not (run_dir / rundir.SALIENCY).is_file():
        return False
    try:
        held = rundir.read_items(run_dir)
    except CGapsError:
        return False
    if not set(items["item_id"]) <= set(held["item_id"]):
        return False
    mine = held.set_index("item_id").loc[items["item_id"]].reset_index()
    if not item_keys(mine).equals(item_keys(items.reset_index(drop=True))):
        return False
    return rundir.stage_is_current(run_dir, "extract", held) is not False


def _read_saliency(run_dir: Path, ids: pd.Index) -> pd.DataFrame:
    width = rundir.n_concepts(rundir.read_run_json(run_dir), run_dir)
    held = rundir.read_items(run_dir)
    sal = rundir.read_saliency(run_dir, pd.Index(held["item_id"]), width)
    sal = sal[sal["item_id"].isin(ids)]
    sal["item_id"] = sal["item_id"].astype(str)
    return sal.reset_index(drop=True)


def prompt_coverage(
    items: pd.DataFrame,
    work: Path,
    reader: Reader,
    *,
    want: dict[str, Any] | None,
    source: Path | None = None,
    what: str = "pool",
) -> Covered:
    """The prompt-span saliency of ``items`` (module docstring): read from ``source`` when its
    extraction has the wanted signature, else extracted into the working run directory ``work``
    (resuming whatever of it is still valid)."""
    items = rundir.validate_items(items[[c for c in POOL_COLUMNS if c in items.columns]], f"{what} items")
    ids = pd.Index(items["item_id"])
    if source is not None and _saliency_is_current(source, items, want):
        info(f"{what}: reusing the prompt-span saliency of {source}")
        return Covered(items, _read_saliency(source, ids), source)
    if _saliency_is_current(work, items, want):
        return Covered(items, _read_saliency(work, ids), work)
    from cgaps.extract.stage import extract_run

    work.mkdir(parents=True, exist_ok=True)
    with rundir.writing(work):
        old = None
        if (work / rundir.ITEMS).exists():
            try:
                old = rundir.read_items(work)
            except CGapsError:
                old = None
        if old is None or list(old.columns) != list(items.columns) or not old.equals(items):
            rundir.write_table(items, work / rundir.ITEMS)
        cfg = prompt_config(reader.cfg)
        rundir.update_run_json(work, config=cfg.to_dict())
    info(f"{what}: extracting the prompts of {len(items)} items into {work}")
    backend, sae = reader.get()
    extract_run(work, cfg, backend, sae)
    return Covered(items, _read_saliency(work, ids), work)


def load_pool(
    spec: str, *, data_dir: str | None, limit: int | None, seed: int
) -> tuple[pd.DataFrame, Path | None]:
    """The items a ``--pool`` argument names (module docstring), and the run directory they came
    from (None for a suite)."""
    path = Path(spec)
    if path.is_dir():
        if not (path / rundir.ITEMS).is_file():
            raise CGapsError(
                f"--pool {spec}: a folder without {rundir.ITEMS}; give a run directory, a suite name or a spec file"
            )
        if limit is not None:
            raise CGapsError(
                f"--pool-limit applies to a suite; the run directory {spec} is used as it is (make a smaller "
                "one with `cgaps items ... --limit N`)"
            )
        items = rundir.read_items(path)
        return items[[c for c in POOL_COLUMNS if c in items.columns]].reset_index(drop=True), path
    from cgaps.items import load_suite

    return load_suite(spec, data_dir=data_dir, limit=limit, seed=seed), None


def fixed_scale(
    run_meta: dict[str, Any], cfg: RunConfig, n_concepts: int, *saliencies: pd.DataFrame
) -> tuple[np.ndarray, str]:
    """m_c for every comparison of a command (module docstring): the reference max of the run's
    SAE when it ships one, else the max over ``saliencies[0]`` (the target's), completed by the
    later ones (the pool's) where that is 0; and a description."""
    from cgaps.runtables import RunTables
    from cgaps.scoring.core import concept_max
    from cgaps.scoring.stage import concept_scale

    # concept_scale reads only the run's record and width: the rule stays in one place
    empty = pd.DataFrame({"item_id": [], "concept": [], "value": []})
    scale, source = concept_scale(RunTables(Path("."), run_meta, n_concepts, empty, empty), cfg)
    if scale is not None:
        return np.asarray(scale, dtype=np.float64), source
    out = np.zeros(n_concepts)
    for sal in saliencies:
        m = concept_max(sal["concept"].to_numpy(), sal["value"].to_numpy(), n_concepts)
        out = np.where(out > 0, out, m)
    return out, "suite max of the target's prompts (the pool's max for concepts it never fires)"


def presence_matrix(
    items: pd.DataFrame, saliency: pd.DataFrame, n_concepts: int, presence: float, scale: np.ndarray
) -> sp.csr_matrix:
    """ŝ' (items x concepts, rows in ``items`` order): thresholded at ``presence`` on ``scale``."""
    from cgaps.scoring.core import build_matrix

    scored = items[["item_id", "benchmark"]].assign(score=0.0)  # presence does not depend on scores
    return build_matrix(scored, saliency, n_concepts, presence=presence, scale=scale).shat_matrix()
