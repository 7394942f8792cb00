"""An on-disk cache of residual activations for SAE training, built in resumable shards.

Conversations (chat messages) are rendered with the model's chat template
(:func:`cgaps.models.format_chat`) and only **content tokens** are kept, by the one rule
that extraction applies too (:func:`cgaps.models.chat.content_mask`): tokens whose
characters lie fully inside a message's content. BOS / position 0, the template's scaffold
(role markers, special tokens) and the default system prompt are dropped, because their
residuals are artefacts (position 0 has ~100x the median norm). Content tokens whose
residual norm exceeds ``K x`` the median content-token norm are dropped too (SmolLM2 has
rare tokens at 10-100x); the median is measured on shard 0 and then fixed, so the rule is
the same for every shard and for a held-out cache built with ``norm_limits`` of this one.

Layout of a cache folder::

    manifest.json            layers, model, text mix, exclusion rule and thresholds, counts
    shard_00000.safetensors  acts.<L> (fp16 [n, d] per layer), conv, pos, token (int32 [n])

Shard ``i`` holds conversations ``i*shard_size ...``; shards and the manifest are written
atomically (:func:`cgaps.rundir.atomic_path`), so a killed run restarts at the first missing
shard with the same result. Several layers are captured in one forward pass (the pilot
compares layers on one cache) of a :class:`~cgaps.seams.ResidualReader`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cgaps import rundir
from cgaps.errors import CGapsError
from cgaps.models import format_chat, length_batches, pad_batch, right_pad, tokenize_content
from cgaps.seams import ResidualReader

MANIFEST = "manifest.json"
EXCLUSION_RULE = (
    "keep content tokens only (no BOS/position 0, no chat-template scaffold, no default system prompt); "
    "drop tokens whose residual norm > K x the median content-token norm measured on shard 0"
)


def shard_name(i: int) -> str:
    return f"shard_{i:05d}.safetensors"


def render(tokenizer: Any, messages: list[dict[str, str]], max_length: int) -> tuple[list[int], list[bool]]:
    """Token ids of a conversation and which tokens are content (the last assistant turn is the response)."""
    if messages and messages[-1]["role"] == "assistant":
        fmt = format_chat(tokenizer, messages[:-1], response=messages[-1]["content"])
    else:
        fmt = format_chat(tokenizer, messages)
    tokens = tokenize_content(tokenizer, fmt.text, fmt.prompt_spans + fmt.response_spans, max_length)
    return tokens.input_ids, tokens.content.tolist()


def conversations_digest(conversations: Sequence[dict[str, Any]]) -> str:
    h = hashlib.sha1()
    for c in conversations:
        h.update(json.dumps(c["messages"], sort_keys=True).encode())
    return h.hexdigest()[:16]


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.exists():
        return None
    manifest = rundir.read_json_file(path, fix=f"delete {folder} to rebuild the activation cache")
    if not isinstance(manifest, dict) or not {"settings", "shards"} <= set(manifest):
        raise CGapsError(f"{path}: not an activation-cache manifest; delete {folder} to rebuild the cache")
    return manifest


def build_cache(
    backend: ResidualReader,
    conversations: Sequence[dict[str, Any]],
    folder: str | Path,
    layers: Sequence[int],
    *,
    shard_size: int = 64,
    max_length: int = 512,
    batch_size: int = 16,
    norm_ratio: float = 10.0,
    max_tokens: int | None = None,
    norm_limits: dict[str, float] | None = None,
    text_mix: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write (or complete) the activation cache of ``conversations`` in ``folder``; return the manifest.

    ``conversations`` are dicts with ``messages`` (and optionally ``source``). ``max_tokens``
    stops after the shard that reaches that many kept tokens. ``norm_limits`` ({layer: max norm})
    reuses another cache's outlier thresholds (a held-out cache must share the training rule).
    """
    import numpy as np
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rundir.remove_stale_temporaries(folder)  # shards whose write was killed half-way
    layers = sorted(set(layers))
    digest = conversations_digest(conversations)
    model_dtype = str(backend.dtype).removeprefix("torch.")
    settings = {
        "layers": layers,
        "model": backend.name,
        "model_dtype": model_dtype,
        "hidden_size": backend.hidden_size,
        "digest": digest,
        "shard_size": shard_size,
        "max_length": max_length,
        "norm_ratio": norm_ratio,
    }
    manifest = _read_manifest(folder)
    if manifest is not None:
        manifest["settings"].pop(
            "max_tokens", None
        )  # not a shard setting (the first manifests stored it here)
    if manifest is not None and manifest["settings"] != settings:
        raise CGapsError(
            f"{folder}: holds a cache built with other settings ({manifest['settings']}); "
            "use another folder or delete this one"
        )
    if manifest is None:
        manifest = {
            "settings": settings,
            "text_mix": text_mix or {},
            "exclusion": {
                "rule": EXCLUSION_RULE,
                "K": norm_ratio,
                "median_norm": {},
                "max_norm": dict(norm_limits or {}),
            },
            "shards": [],
            "complete": False,
        }
    # shards do not depend on max_tokens: a finished or killed cache can be extended or cut short.
    # Whether work is left is read from the shards, never from the flag: a run killed while
    # extending a finished cache leaves the flag of the earlier, smaller cache behind.
    manifest["max_tokens"] = max_tokens
    manifest["complete"] = False
    tok = backend.tokenizer
    n_shards = -(-len(conversations) // shard_size)
    done = {s["index"] for s in manifest["shards"]}
    total = sum(s["tokens"] for s in manifest["shards"])
    if progress and total:
        progress(total)
    for index in range(n_shards):
        if max_tokens is not None and total >= max_tokens:
            break
        if index in done:
            continue
        first = index * shard_size
        rows = [render(tok, c["messages"], max_length) for c in conversations[first : first + shard_size]]
        acts: dict[int, list[Any]] = {layer: [] for layer in layers}
        meta: dict[str, list[Any]] = {"conv": [], "pos": [], "token": []}
        for idx in length_batches([len(r[0]) for r in rows], batch_size):
            ids, mask = pad_batch([rows[i][0] for i in idx], tok.pad_token_id)
            keep = right_pad([rows[i][1] for i in idx], False, torch.bool)
            got = backend.residuals_at(ids, mask, layers)
            rr, pp = keep.nonzero(as_tuple=True)
            for layer in layers:
                acts[layer].append(got[layer][rr, pp].float().cpu())
            meta["conv"].append(torch.tensor([first + idx[r] for r in rr.tolist()], dtype=torch.int32))
            meta["pos"].append(pp.to(torch.int32))
            meta["token"].append(ids[rr, pp].to(torch.int32))
        cat = {layer: torch.cat(acts[layer]) for layer in layers}
        norms = {layer: cat[layer].norm(dim=-1) for layer in layers}
        limits = manifest["exclusion"]["max_norm"]
        for layer in layers:
            if str(layer) not in limits:  # first shard of a fresh cache fixes the rule
                median = float(norms[layer].median())
                manifest["exclusion"]["median_norm"][str(layer)] = median
                limits[str(layer)] = norm_ratio * median
        ok = torch.ones(len(norms[layers[0]]), dtype=torch.bool)
        for layer in layers:
            ok &= norms[layer] <= limits[str(layer)]
        tensors = {f"acts.{layer}": cat[layer][ok].to(torch.float16).contiguous() for layer in layers}
        for key, parts in meta.items():
            tensors[key] = torch.cat(parts)[ok].contiguous()
        with rundir.atomic_path(folder / shard_name(index)) as tmp:
            save_file(tensors, str(tmp))
        kept = int(ok.sum())
        manifest["shards"].append(
            {
                "index": index,
                "conversations": len(rows),
                "tokens": kept,
                "outliers": int((~ok).sum()),
                "content_tokens": int(len(ok)),
                "all_tokens": int(sum(len(r[0]) for r in rows)),
            }
        )
        total += kept
        rundir.write_json(manifest, folder / MANIFEST)
        if progress:
            progress(kept)
    manifest["shards"].sort(key=lambda s: s["index"])
    manifest["complete"] = True
    manifest["counts"] = {
        key: int(np.sum([s[key] for s in manifest["shards"]]))
        for key in ("conversations", "tokens", "outliers", "content_tokens", "all_tokens")
    }
    rundir.write_json(manifest, folder / MANIFEST)
    return manifest


def load_manifest(folder: str | Path) -> dict[str, Any]:
    manifest = _read_manifest(Path(folder))
    if manifest is None:
        raise CGapsError(f"{folder}: no {MANIFEST}; build the activation cache first")
    return manifest


def load_layer(folder: str | Path, layer: int, max_tokens: int | None = None, with_meta: bool = False) -> Any:
    """All cached activations of ``layer`` as one fp16 tensor [n, d] (and conv/pos/token if ``with_meta``)."""
    import torch
    from safetensors import safe_open

    folder = Path(folder)
    manifest = load_manifest(folder)
    if layer not in manifest["settings"]["layers"]:
        raise CGapsError(f"{folder}: caches layers {manifest['settings']['layers']}, not layer {layer}")
    parts: list[Any] = []
    metas: dict[str, list[Any]] = {"conv": [], "pos": [], "token": []}
    n = 0
    for shard in sorted(manifest["shards"], key=lambda s: s["index"]):
        with safe_open(str(folder / shard_name(shard["index"])), framework="pt") as f:
            parts.append(f.get_tensor(f"acts.{layer}"))
            if with_meta:
                for key in metas:
                    metas[key].append(f.get_tensor(key))
        n += len(parts[-1])
        if max_tokens is not None and n >= max_tokens:
            break
    acts = torch.cat(parts)[:max_tokens]
    if not with_meta:
        return acts
    return acts, {key: torch.cat(v)[:max_tokens] for key, v in metas.items()}
