"""Extraction stage: SAE concept saliency per item (docs/method.md §2).

For every item the reader model sees the formatted conversation (chat template, the
item's messages and, for ``span`` response/both, the evaluated model's response). The
forward pass stops after block L; the residuals of the analysed tokens are encoded by
the SAE and pooled per concept (max, mean or sum) into s_c(x).

Which tokens are analysed: with ``skip_special`` only *content* tokens of the chosen span
(user/assistant turns for the prompt span, the response for the response span) count, by
the one rule of :func:`cgaps.models.chat.content_mask` that the SAE was trained under: a
token lying fully inside message content, not special, not at position 0. BOS, role
markers, template tokens and the template's default system prompt do not count, because
their activations are artefacts shared by every item. Tokens whose residual norm exceeds
``max_norm_ratio`` times the batch median are dropped too (SmolLM2's attention-sink
positions are 10-100x the median); the count is recorded.

The model and the SAE are seen only through :class:`~cgaps.seams.ResidualReader` and
:class:`~cgaps.seams.SAEEncoder`. Items are sorted by length and batched so padding stays
small (:mod:`cgaps.models.batching`), and results go to
``saliency_shards/`` one shard per chunk: a rerun skips the items already written, so an
interrupted extraction resumes. The shards are merged into ``saliency.parquet``; the
peak token of each (item, concept) feeds ``contexts.parquet`` (top activating contexts,
:mod:`cgaps.extract.contexts`), which the labels stage reads.

Where the chunks are computed is a :class:`cgaps.seams.ChunkRunner`'s business: this process
(:class:`cgaps.runner.InProcess`, the default) or Ray workers (``--ray``:
:class:`cgaps.scaleout.RayRunner`, passed in by the command line). The runner loads the model
and the SAE with :func:`load_reader` and computes each chunk with :func:`extract_one`; the
driver plans the chunks (the items not in a reusable shard, sorted by length, cut every
:data:`SHARD_ITEMS`), numbers their shards and writes every shard and sidecar itself, so the
tables and shards are the same whoever computed them, in whatever order they completed. On
Ray the driver never loads the model: it plans with a :class:`ReaderDescription` and an
:class:`SAEDescription` of the workers' (the tokenizer and what the shard manifest records).

Shards are keyed by content, never trusted by count: each shard's sidecar (written last, so
its presence marks the shard complete) lists its items with a digest of each item's encoded
input (:func:`input_digest`: the formatted text, response included) and the item's token
counts. A rerun reuses an item's rows only when its digest still matches the item in the run;
items whose prompt or response changed (``cgaps items``, ``cgaps grade --responses``) are
extracted again, items no longer in the run are left out of the merge, and a shard none of
whose items is reusable is deleted. The merge checks that every item of the run is covered
exactly once. A new shard takes the number after the highest existing one, so it can never
overwrite a complete shard. Every run rewrites ``saliency.parquet`` and ``contexts.parquet``
from the valid shards, so neither outlives a change of the items.

A damaged shard is redone, never fatal: a shard whose Parquet file cannot be read whole (cut
short by a full disk, a copy that stopped) or whose sidecar is not the JSON object it should
be is deleted with its sidecar, and its items are extracted again; a manifest that cannot be
read says nothing about the shards' settings, so all of them are redone. Shards made with
other settings than the run's are refused, naming each setting that differs.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.console import info, progress_bar
from cgaps.errors import CGapsError, settings_diff
from cgaps.extract.contexts import top_contexts
from cgaps.models import (
    CONTENT_RULE,
    conversation,
    format_chat,
    length_batches,
    pad_batch,
    right_pad,
    tokenize_content,
)
from cgaps.runner import InProcess
from cgaps.seams import ChunkRunner, Chunks, ResidualReader, SAEEncoder

if TYPE_CHECKING:
    import torch

SHARD_ITEMS = 128
MANIFEST = "manifest.json"
_SHARD_NAME = re.compile(r"shard-(\d+)\.parquet")


@dataclass
class Encoded:
    """One item, tokenised, with the mask of analysed tokens and each token's character span."""

    item_id: str
    text: str
    input_ids: list[int]
    offsets: list[tuple[int, int]]
    mask: np.ndarray  # bool per token
    cut: int = 0  # tokens dropped by max_length


def encode_items(items: pd.DataFrame, tokenizer: Any, cfg: RunConfig) -> list[Encoded]:
    """Tokenise every item's conversation and mark its analysed tokens (module docstring)."""
    out = []
    for item in items.to_dict("records"):
        response = item.get("response") if cfg.span != "prompt" else None
        fmt = format_chat(tokenizer, conversation(item), response if isinstance(response, str) else None)
        spans = {
            "prompt": fmt.prompt_spans,
            "response": fmt.response_spans,
            "both": fmt.prompt_spans + fmt.response_spans,
        }[cfg.span]
        tokens = tokenize_content(tokenizer, fmt.text, spans, cfg.max_length)
        # without skip_special every token counts, the scaffold included
        mask = tokens.content if cfg.skip_special else np.ones(len(tokens.input_ids), dtype=bool)
        out.append(
            Encoded(str(item["item_id"]), fmt.text, tokens.input_ids, tokens.offsets, mask, tokens.cut)
        )
    return out


def input_digest(e: Encoded) -> str:
    """A short fingerprint of what an item's saliency depends on besides the settings of the
    shard manifest: the formatted text the reader sees (prompt, messages and response)."""
    return hashlib.sha256(e.text.encode("utf-8")).hexdigest()[:16]


def pool_batch(acts: Any, token_item: Any, n_items: int, pool: str) -> tuple[Any, Any]:
    """Pool token activations (T x F) into item saliency (n_items x F) and the peak token per cell.

    ``token_item[t]`` is the item (row) of token t. The peak token (the largest token index whose
    value equals the max, so ties break the same way each run) is returned for every pool, since
    the top-contexts table needs the firing token whatever the pooling.

    Only the nonzero codes are visited: an SAE fires on a few dozen of its F latents per token, so
    a scatter over the T x F cells (zeros included, as :func:`cgaps.extract.reference.pool_dense`
    does) would cost ~100x more memory traffic than the pooling itself. ``nonzero`` lists cells in
    token order, so each cell's sum adds its tokens in the same order as the dense path and gives
    the same float (checked in ``tests/extract/test_speed_extract.py``).
    """
    tok, feat = acts.nonzero(as_tuple=True)
    return pool_cells(tok, feat, acts[tok, feat], token_item, n_items, acts.shape[1], pool)


def pool_topk(
    values: Any, indices: Any, token_item: Any, n_items: int, n_feat: int, pool: str
) -> tuple[Any, Any]:
    """:func:`pool_batch` of a TopK SAE's codes given as their k latents per token (``values`` and
    ``indices`` [T, k], :meth:`cgaps.sae.LoadedSAE.topk_codes`): the same cells in the same order
    (each token's latents by index, the zeros left out, as ``nonzero`` lists the dense codes), so
    the same floats, without the dense T x F codes. Values are pooled in float32: a max is the
    same in any dtype, and sums of bfloat16 codes keep float32's precision."""
    import torch

    indices, order = indices.sort(dim=-1)
    values = values.gather(-1, order)
    keep = values > 0
    tok = torch.arange(values.shape[0], device=values.device).unsqueeze(1).expand_as(indices)[keep]
    return pool_cells(tok, indices[keep], values[keep].float(), token_item, n_items, n_feat, pool)


def pool_cells(
    tok: Any, feat: Any, vals: Any, token_item: Any, n_items: int, n_feat: int, pool: str
) -> tuple[Any, Any]:
    """The pooling of :func:`pool_batch` from the nonzero cells: token ``tok[i]`` fires latent
    ``feat[i]`` with ``vals[i]`` (cells in token order). Runs on the values' device, in their dtype."""
    import torch

    key = token_item.to(vals.device).long()[tok] * n_feat + feat
    size = n_items * n_feat
    peak_val = torch.zeros(size, dtype=vals.dtype, device=vals.device).scatter_reduce(
        0, key, vals, "amax", include_self=True
    )
    is_peak = vals == peak_val[key]
    peak_tok = torch.full((size,), -1, dtype=torch.long, device=vals.device).scatter_reduce(
        0, key[is_peak], tok[is_peak], "amax", include_self=True
    )
    if pool == "max":
        value = peak_val
    else:
        value = torch.zeros(size, dtype=vals.dtype, device=vals.device).index_add_(0, key, vals)
        if pool == "mean":
            counts = torch.bincount(token_item.long(), minlength=n_items).clamp(min=1)
            value = (value.view(n_items, n_feat) / counts.to(value).unsqueeze(1)).view(-1)
    return value.view(n_items, n_feat), peak_tok.view(n_items, n_feat)


def _signature(cfg: RunConfig, sae: SAEEncoder, layer: int, reader: str, reader_dtype: str) -> dict[str, Any]:
    return {
        "reader": reader,
        # the dtype the reader really ran in (auto resolved): residuals, and so codes, depend on it
        "reader_dtype": reader_dtype,
        "sae": sae.sae_id,
        "sae_fingerprint": sae.fingerprint,
        "layer": layer,
        "span": cfg.span,
        "pool": cfg.pool,
        "skip_special": cfg.skip_special,
        "content_rule": CONTENT_RULE,
        "max_norm_ratio": cfg.max_norm_ratio,
        "max_length": cfg.max_length,
        "top_k": cfg.top_k,
    }


def extract_chunk(
    reader: ResidualReader,
    sae: SAEEncoder,
    layer: int,
    chunk: list[Encoded],
    cfg: RunConfig,
    stats: Counter,
    item_stats: dict[str, Counter] | None = None,
) -> pd.DataFrame:
    """Saliency rows (item_id, concept, value, peak char span) for a chunk of items.

    ``stats`` adds up the token counts of the chunk; ``item_stats`` (when given) gets them per
    item, so a resume can count exactly the items it keeps.

    Everything between the forward pass and the rows stays on the reader's device in its dtype
    (the SAE is loaded there too): outlier norms, SAE codes, pooling. Only the positive pooled
    cells (or the top_k of each item) come back to the CPU.
    """
    import torch

    parts: list[dict[str, np.ndarray]] = []
    for batch in length_batches([len(e.input_ids) for e in chunk], cfg.batch_size):
        encs = [chunk[i] for i in batch]
        ids, att = pad_batch([e.input_ids for e in encs], reader.tokenizer.pad_token_id)
        resid = reader.residuals_at(ids, att, [layer])[layer]
        mask = right_pad([e.mask for e in encs], False, torch.bool)
        stats["tokens_analysed"] += int(mask.sum())
        if item_stats is not None:
            for e, n in zip(encs, mask.sum(dim=1).tolist(), strict=True):
                item_stats.setdefault(e.item_id, Counter())["tokens_analysed"] += int(n)
        mask = mask.to(resid.device)
        if cfg.max_norm_ratio is not None and mask.any():
            norms = resid.float().norm(dim=-1)  # float32 norms, as the SAE training cache takes them
            limit = cfg.max_norm_ratio * norms[mask].median()
            outlier = mask & (norms > limit)
            stats["tokens_outlier_dropped"] += int(outlier.sum())
            if item_stats is not None:
                for e, n in zip(encs, outlier.sum(dim=1).tolist(), strict=True):
                    item_stats.setdefault(e.item_id, Counter())["tokens_outlier_dropped"] += int(n)
            mask &= ~outlier
        rr, tt = mask.nonzero(as_tuple=True)
        if len(rr) == 0:
            continue
        x = resid[rr, tt]
        # a TopK SAE's k latents per token are pooled as they are; any other SAE's dense codes
        sparse = getattr(sae, "topk_codes", None)
        codes = sparse(x) if sparse is not None else None
        if codes is not None:
            top_values, top_indices = codes
            value, peak = pool_topk(top_values, top_indices, rr, len(encs), sae.width, cfg.pool)
        else:
            value, peak = pool_batch(sae.encode(x), rr, len(encs), cfg.pool)
        if cfg.top_k is None:
            r_idx, c_idx = (value > 0).nonzero(as_tuple=True)  # row-major: items in order, concepts rising
        else:  # the k largest of each item, in topk's order (as the rows were always written)
            picked = []
            for r in range(len(encs)):
                nz = (value[r] > 0).nonzero(as_tuple=True)[0]
                if len(nz) > cfg.top_k:
                    nz = nz[torch.topk(value[r, nz], cfg.top_k).indices]
                picked.append((torch.full_like(nz, r), nz))
            r_idx = torch.cat([p[0] for p in picked])
            c_idx = torch.cat([p[1] for p in picked])
        if len(r_idx) == 0:
            continue
        tok = tt[peak[r_idx, c_idx]].cpu().numpy()
        r_np = r_idx.cpu().numpy()
        offsets = np.zeros((len(encs), mask.shape[1], 2), dtype=np.int32)
        for r, e in enumerate(encs):
            offsets[r, : len(e.offsets)] = e.offsets
        offs = offsets[r_np, tok]
        parts.append(
            {
                "item_id": np.array([e.item_id for e in encs], dtype=object)[r_np],
                "concept": c_idx.cpu().numpy().astype(np.int32),
                "value": value[r_idx, c_idx].float().cpu().numpy(),
                "peak_start": offs[:, 0],
                "peak_end": offs[:, 1],
            }
        )
    if not parts:
        return empty_shard()
    return pd.DataFrame({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})


def extract_one(
    model: tuple[ResidualReader, SAEEncoder], chunk: list[Encoded], layer: int, cfg: RunConfig
) -> tuple[pd.DataFrame, Counter, dict[str, Counter]]:
    """One chunk's rows, token counts and per-item token counts (one shard's contents): the work a
    :class:`~cgaps.seams.ChunkRunner` does for each chunk, on the reader and SAE it loaded."""
    reader, sae = model
    for e in chunk:  # a chunk from another process may hold read-only arrays; torch wants them writable
        if not e.mask.flags.writeable:
            e.mask = e.mask.copy()
    stats: Counter = Counter()
    item_stats: dict[str, Counter] = {}
    return extract_chunk(reader, sae, layer, chunk, cfg, stats, item_stats), stats, item_stats


def empty_shard() -> pd.DataFrame:
    """A shard table with no rows: the saliency columns plus the peak token's character span."""
    return pd.DataFrame(
        {
            "item_id": pd.Series(dtype=str),
            "concept": pd.Series(dtype=np.int32),
            "value": pd.Series(dtype=np.float32),
            "peak_start": pd.Series(dtype=np.int32),
            "peak_end": pd.Series(dtype=np.int32),
        }
    )


def _write_shard(df: pd.DataFrame, sidecar: dict[str, Any], stem: Path) -> None:
    """One shard and then its sidecar (whose presence marks the shard complete)."""
    rundir.write_table(df, stem.with_suffix(".parquet"))
    rundir.write_json(sidecar, stem.with_suffix(".json"))


def _reusable_shards(shard_dir: Path, digests: dict[str, str]) -> tuple[dict[Path, set[str]], Counter]:
    """The complete shards' items still valid for the run (``digests``: item id -> input digest)
    and the token counts of exactly those items.

    A shard without its sidecar was cut short and is deleted; so is a shard none of whose items
    is reusable (changed, no longer in the run, or written before digests). An item is taken
    from the first shard that holds it with a matching digest.
    """
    kept: dict[Path, set[str]] = {}
    stats: Counter = Counter()
    taken: set[str] = set()
    changed = gone = legacy = 0
    damaged: list[str] = []
    for shard in sorted(shard_dir.glob("shard-*.parquet")):
        sidecar = shard.with_suffix(".json")
        if not sidecar.exists():  # a shard without its sidecar was cut short: redo its items
            shard.unlink()
            continue
        meta = _read_sidecar(sidecar)
        problem = _shard_problem(shard) if meta is not None else f"{sidecar.name} is damaged"
        if meta is None or problem is not None:  # damaged: redo its items, never fatal
            damaged.append(problem or shard.name)
            sidecar.unlink()
            shard.unlink()
            continue
        ids = meta["item_ids"]
        shard_digests = meta.get("digests")
        per_item = meta.get("item_stats")
        if not isinstance(shard_digests, list) or not isinstance(per_item, list):
            legacy += len(ids)  # written before digests: cannot be checked, so redone
            ok: set[str] = set()
        else:
            ok = set()
            for item_id, digest, counts in zip(ids, shard_digests, per_item, strict=True):
                if item_id not in digests:
                    gone += 1
                elif digests[item_id] != digest:
                    changed += 1
                elif item_id not in taken:
                    ok.add(item_id)
                    taken.add(item_id)
                    stats.update(counts)
        if ok:
            kept[shard] = ok
        else:
            sidecar.unlink()  # the sidecar first: a shard without it is never read again
            shard.unlink()
    if damaged:
        info(
            f"[yellow]{shard_dir.name}/: {len(damaged)} damaged shard(s) deleted ({'; '.join(damaged[:3])}"
            f"{'; ...' if len(damaged) > 3 else ''}); extracting their items again[/yellow]"
        )
    if legacy:
        info(
            f"{shard_dir.name}/: {legacy} item(s) in shards without content digests (older cgaps); extracting them again"
        )
    if changed:
        info(
            f"{shard_dir.name}/: {changed} item(s) changed since they were extracted (prompt or response); extracting them again"
        )
    if gone:
        info(f"{shard_dir.name}/: {gone} extracted item(s) are no longer in the run; left out")
    return kept, stats


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    """A shard's sidecar, or None when it is damaged (not UTF-8 JSON, not an object with a list
    ``item_ids``, or lists of unequal length): the shard is then redone."""
    import json

    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("item_ids"), list):
        return None
    ids = meta["item_ids"]
    if not all(isinstance(i, str) for i in ids):
        return None
    for key in ("digests", "item_stats"):
        value = meta.get(key)
        if isinstance(value, list) and len(value) != len(ids):
            return None
    if isinstance(meta.get("item_stats"), list) and not all(isinstance(c, dict) for c in meta["item_stats"]):
        return None
    return meta


def _shard_problem(path: Path) -> str | None:
    """Why a shard's Parquet file cannot be merged (None when it can): it must read whole, with
    the columns :func:`empty_shard` has."""
    import pyarrow.parquet as pq

    try:
        names = pq.read_table(path).schema.names
    except Exception as e:  # pyarrow raises several unrelated types for a damaged file
        return f"{path.name}: {' '.join(str(e).split())[:120]}"
    missing = [c for c in empty_shard().columns if c not in names]
    return f"{path.name}: no column(s) {', '.join(missing)}" if missing else None


def _shard_settings(manifest_path: Path, signature: dict[str, Any]) -> bool:
    """Whether the shards beside ``manifest_path`` can be reused with ``signature``: True when they
    were made with it (or there are none), False when the manifest is missing or damaged (the
    shards' settings are unknown, so they are all redone); shards made with other settings are
    refused, naming each setting that differs."""
    import json

    shard_dir = manifest_path.parent
    if not manifest_path.exists():  # written before any shard: shards without it were left by hand
        if not any(shard_dir.glob("shard-*.json")):
            return True
        old = None
    else:
        try:
            old = json.loads(manifest_path.read_text(encoding="utf-8")).get("signature")
        except (UnicodeDecodeError, ValueError, AttributeError):
            old = None
    if not isinstance(old, dict):
        info(
            f"[yellow]{shard_dir.name}/{MANIFEST} is missing or damaged: the settings of its shards are "
            "unknown; extracting every item again[/yellow]"
        )
        return False
    if old != signature:
        raise CGapsError(
            f"{shard_dir}: shards extracted with other settings ({settings_diff(old, signature)}); rerun with "
            "the settings there to resume that extraction, or delete that folder to extract again with the new ones"
        )
    return True


def load_reader(
    cfg: RunConfig, backend: ResidualReader | None = None, sae_spec: SAEEncoder | None = None
) -> tuple[ResidualReader, SAEEncoder]:
    """The reader model and the SAE of ``cfg`` (each loaded unless given), the layer checked; the
    SAE beside the model, in its dtype, so codes and pooling never leave the device. What a
    :class:`~cgaps.seams.ChunkRunner` loads (in this process, or once on each Ray worker).

    The reader reads in :func:`cgaps.models.loading.reader_dtype` (``auto``: bfloat16 on a GPU
    and on a CPU that computes it natively): loaded in it, or, for a model given in another dtype
    (the pipeline's, loaded in float32 to evaluate), a copy in it (``HFBackend.reading_in``: the
    same residuals as a model loaded in that dtype). Any other given reader is used as it is (a
    model given in bfloat16 is not widened); the shard manifest records the dtype it really ran in."""
    from cgaps.models import load_backend
    from cgaps.models.loading import pick_device, reader_dtype
    from cgaps.sae import load_sae

    if backend is None:
        dtype = reader_dtype(cfg.dtype, pick_device(cfg.device))
        info(f"loading reader model {cfg.reader_model} ({dtype})")
        backend = load_backend(cfg.reader_model, cfg.device, dtype)
    else:  # a float32 model (the pipeline's, loaded to evaluate) is read in the dtype resolved
        dtype = reader_dtype(cfg.dtype, str(backend.device))
        reading_in = getattr(backend, "reading_in", None)
        if reading_in is not None and str(backend.dtype) == "torch.float32" and dtype != "float32":
            info(f"reading residuals in {dtype}")
            backend = reading_in(dtype)
    loaded: SAEEncoder = (
        sae_spec
        if sae_spec is not None
        else load_sae(
            cfg.sae,
            hidden_size=backend.hidden_size,
            n_layers=backend.n_layers,
            layer=cfg.layer,
            device=backend.device,
            dtype=str(backend.dtype).removeprefix("torch."),
        )
    )
    backend.check_layer(loaded.layer)
    return backend, loaded


def _remote_only(*_: Any, **__: Any) -> Any:
    raise CGapsError("the workers hold the reader and the SAE; this driver-side copy only describes them")


@dataclass
class ReaderDescription:
    """The reader model as the driver sees it when a runner's workers hold it (a
    :class:`~cgaps.seams.ResidualReader`): a worker's tokenizer and description, all the planning
    and the shard manifest need; its forward passes run on the workers only."""

    name: str
    n_layers: int
    hidden_size: int
    device: str
    tokenizer: Any
    dtype: torch.dtype
    loaded: dict[str, Any] | None

    def check_layer(self, layer: int) -> None:  # checked by each worker as it loads
        pass

    residuals_at = _remote_only
    logits_with_edit = _remote_only
    unembed = _remote_only


@dataclass
class SAEDescription:
    """The SAE as the driver sees it when a runner's workers hold it (a
    :class:`~cgaps.seams.SAEEncoder`): what the shard manifest and run.json record."""

    sae_id: str
    width: int
    layer: int
    hook_name: str
    fingerprint: str

    encode = _remote_only
    decode = _remote_only

    @property
    def W_dec(self) -> torch.Tensor:  # sae-lens calls it so
        return _remote_only()


def describe_reader(model: tuple[ResidualReader, SAEEncoder]) -> tuple[ResidualReader, SAEEncoder]:
    """What a worker tells the driver about the reader and SAE it loaded."""
    r, s = model
    return (
        ReaderDescription(r.name, r.n_layers, r.hidden_size, r.device, r.tokenizer, r.dtype, r.loaded),
        SAEDescription(s.sae_id, s.width, s.layer, s.hook_name, s.fingerprint),
    )


def extract_run(
    run_dir: str | Path,
    cfg: RunConfig,
    backend: ResidualReader | None = None,
    sae_spec: SAEEncoder | None = None,
    *,
    runner: ChunkRunner | None = None,
) -> pd.DataFrame:
    """Write saliency.parquet and contexts.parquet for a run; resumes from shards.

    ``backend`` and ``sae_spec``: a reader and an SAE already loaded, used in this process
    (each defaults to ``cfg.reader_model`` / ``cfg.sae``, loaded here). Otherwise ``runner``
    (default :class:`~cgaps.runner.InProcess`) loads them where it computes, and the same shards
    are written here. Holds the run directory's writer lock (:func:`cgaps.rundir.writing`).
    """
    if (backend is not None or sae_spec is not None) and runner is not None:
        raise ValueError("extract_run: give a loaded reader and SAE (they run here) or a runner, not both")
    with rundir.writing(run_dir):
        return _extract_run(Path(run_dir), cfg, backend, sae_spec, runner or InProcess())


def _extract_run(
    run_dir: Path,
    cfg: RunConfig,
    backend: ResidualReader | None,
    sae_spec: SAEEncoder | None,
    runner: ChunkRunner,
) -> pd.DataFrame:
    t0 = time.perf_counter()
    items = rundir.read_items(run_dir)
    if cfg.span != "prompt" and "response" not in items.columns:
        raise CGapsError(
            f"{run_dir / rundir.ITEMS}: no 'response' column but span={cfg.span!r}; "
            "run `cgaps evaluate` first or pass --span prompt"
        )
    load = functools.partial(load_reader, backend=backend, sae_spec=sae_spec)
    with runner.start("extraction", cfg, load, describe_reader) as chunks:
        return _extract(run_dir, cfg, items, chunks, t0)


def _extract(
    run_dir: Path,
    cfg: RunConfig,
    items: pd.DataFrame,
    chunks: Chunks[tuple[ResidualReader, SAEEncoder]],
    t0: float,
) -> pd.DataFrame:
    from cgaps.models.loading import loaded_record

    # the model here, or on a runner's workers what each of them loaded (which must agree)
    kinds = {(r.name, str(r.dtype), s.fingerprint) for r, s in chunks.models}
    if len(kinds) > 1:  # nodes that resolve `auto` differently would extract differently
        raise CGapsError(
            f"the {chunks.name} workers loaded the reader or the SAE differently ({sorted(kinds)}); "
            "give --dtype explicitly, or use nodes of one kind"
        )
    backend, loaded = chunks.model
    layer, width = loaded.layer, loaded.width

    shard_dir = run_dir / rundir.SALIENCY_SHARDS
    signature = _signature(cfg, loaded, layer, backend.name, str(backend.dtype).removeprefix("torch."))
    manifest_path = shard_dir / MANIFEST
    if shard_dir.is_dir() and not _shard_settings(manifest_path, signature):
        for old_shard in sorted(shard_dir.glob("shard-*.*")):
            old_shard.unlink()
    encoded = encode_items(items, backend.tokenizer, cfg)
    empty = [e.item_id for e in encoded if not e.mask.any()]
    digests = {e.item_id: input_digest(e) for e in encoded}
    kept, stats = _reusable_shards(shard_dir, digests) if shard_dir.is_dir() else ({}, Counter())
    # only now: a damaged shard folder is reported before anything is written
    shard_dir.mkdir(parents=True, exist_ok=True)
    rundir.write_json({"signature": signature}, manifest_path)
    done_ids = {i for ids in kept.values() for i in ids}
    todo = [e for e in encoded if e.item_id not in done_ids]
    # chunks of similar length, so each shard's batches pad little
    todo.sort(key=lambda e: len(e.input_ids))
    # after _reusable_shards deleted the unusable ones: a new shard never takes an existing number
    numbers = (_SHARD_NAME.fullmatch(p.name) for p in shard_dir.glob("shard-*.parquet"))
    next_index = max((int(m.group(1)) for m in numbers if m), default=-1) + 1
    if kept:
        n_kept = sum(len(v) for v in kept.values())
        info(f"resuming extraction: {n_kept} of {len(encoded)} items already in {shard_dir.name}/")
    # Shards are written by one background thread while the next chunk computes; at most one
    # write is pending, and leaving the block (an interrupt included) waits for it, so every
    # chunk computed is on disk with its sidecar before this function returns or raises.
    with (
        progress_bar(f"extracting (layer {layer}, {width} concepts)", len(todo)) as advance,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="cgaps-shards") as writer,
    ):
        pending: Future[None] | None = None
        planned = [todo[start : start + SHARD_ITEMS] for start in range(0, len(todo), SHARD_ITEMS)]
        # in this process one chunk after the other; elsewhere as the workers complete them
        # (each keeps its planned shard number, so the shards are the same either way)
        jobs = [(chunk, layer, cfg) for chunk in planned]
        for n, (df, chunk_stats, item_stats) in chunks.map(extract_one, jobs):
            chunk = planned[n]
            name = f"shard-{next_index + n:05d}"
            sidecar = {
                "item_ids": [e.item_id for e in chunk],
                "digests": [digests[e.item_id] for e in chunk],
                "item_stats": [dict(item_stats.get(e.item_id, {})) for e in chunk],
                "stats": dict(chunk_stats),
            }
            if pending is not None:
                pending.result()  # a failed write stops the run here, not after the last chunk
            pending = writer.submit(_write_shard, df, sidecar, shard_dir / name)
            kept[shard_dir / f"{name}.parquet"] = {e.item_id for e in chunk}
            stats.update(chunk_stats)
            advance(len(chunk))
        if pending is not None:
            pending.result()

    covered = Counter(i for ids in kept.values() for i in ids)
    missing = [e.item_id for e in encoded if covered[e.item_id] != 1]
    if missing:  # a bug, not a user error: every item is either kept once or redone once
        raise CGapsError(
            f"{shard_dir}: item {missing[0]!r} is covered {covered[missing[0]]} times by the shards; "
            "delete that folder to start the extraction over"
        )
    shards = pd.concat(
        [df[df["item_id"].isin(ids)] for p, ids in sorted(kept.items()) for df in [pd.read_parquet(p)]]
        or [empty_shard()],
        ignore_index=True,
    )
    saliency = shards[list(rundir.SALIENCY_COLUMNS)].sort_values(["item_id", "concept"], kind="stable")
    rundir.write_table(saliency.reset_index(drop=True), run_dir / rundir.SALIENCY)
    texts = {e.item_id: e.text for e in encoded}
    contexts = top_contexts(shards, texts, offsets={e.item_id: e.offsets for e in encoded})
    rundir.write_table(contexts, run_dir / rundir.CONTEXTS)
    firing = saliency.groupby("item_id").size()
    rundir.update_run_json(
        run_dir,
        # the response is an input only when its span is read
        inputs={
            "extract": rundir.stage_record(
                items,
                "extract",
                tuple(c for c in rundir.STAGE_INPUTS["extract"] if c != "response" or cfg.span != "prompt"),
                run_dir,
                config=cfg.replace(layer=layer),  # the layer it resolved (None: the SAE's own)
            )
        },
        n_concepts=int(width),
        config={**cfg.to_dict(), "layer": layer},
        model=loaded_record(backend, "reader"),  # what was really loaded, not only its name
        sae={
            "id": loaded.sae_id,
            "fingerprint": loaded.fingerprint,
            "width": int(width),
            "layer": layer,
            "hook_name": loaded.hook_name,
        },
        counts={
            "saliency_rows": int(len(saliency)),
            "items_without_tokens": len(empty),
            "items_truncated": sum(e.cut > 0 for e in encoded),  # cut at max_length
            "tokens_truncated": sum(e.cut for e in encoded),
            "mean_concepts_per_item": float(firing.mean()) if len(firing) else 0.0,
            "concepts_firing": int(saliency["concept"].nunique()),
            **{k: int(v) for k, v in stats.items()},
        },
        # where it ran is recorded beside the time, never with the inputs: it changes no value
        timings={"extract_s": round(time.perf_counter() - t0, 2)}
        | ({f"extract_{chunks.name}_workers": chunks.workers} if chunks.workers else {}),
    )
    if empty:
        info(
            f"[yellow]{len(empty)} item(s) had no analysed tokens (e.g. {empty[0]!r}); they have no saliency rows"
        )
    return saliency
