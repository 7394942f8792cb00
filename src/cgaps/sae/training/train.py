"""Train a TopK SAE on cached residuals and save it in sae-lens format.

The recipe follows Gao et al. (2024), "Scaling and evaluating sparse autoencoders":

- TopK activation (k per token), encoder ``pre = (x - b_dec) W_enc + b_enc``;
- decoder rows kept at unit norm (the gradient's radial part is removed before each step);
- AuxK: the residual error is also reconstructed from the top ``aux_k`` *dead* latents
  (not fired for ``dead_tokens`` tokens), which gives dead latents a gradient and revives them;
- inputs are scaled by a constant so the mean squared norm is ``d``; at save time the scale is
  folded into the weights, so the saved SAE encodes and reconstructs **raw** residuals and its
  activations are in residual-norm units;
- Adam, linear warm-up, constant, linear decay to zero over the last ``decay_fraction``.

The encoder and decoder are custom autograd functions whose backward passes are dense matmuls
over a [B, F] matrix holding the k values per row (faster on CPU than autograd through gathers);
optionally in bfloat16 (``matmul_dtype``).
:class:`TrainConfig` holds every hyper-parameter, documented field by field, with the shipped
SAE's values as defaults (``cgaps train-sae`` generates its flags from it).
Checkpoints hold everything that determines the next step (weights, Adam state, dead-latent
counters, step); the data order is a function of (seed, epoch), so a resumed run ends at the
same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cgaps.config_fields import documented
from cgaps.errors import CGapsError, did_you_mean
from cgaps.sae import resid_post_hook

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"


MATMUL_DTYPES = ("float32", "bfloat16")


@dataclass
class TrainConfig:
    """Hyper-parameters of one SAE training run; the defaults are those of the shipped SAE.

    The one source of these defaults: ``cgaps train-sae`` makes one option per field (its help
    is the field's), and ``scripts/train_shipped_sae.py`` names only what its pilot changes.
    """

    width: int = documented(8192, "Number of latents F.")
    k: int = documented(64, "Active latents per token (TopK).")
    batch_size: int = documented(2048, "Tokens per optimiser step.")
    lr: float = documented(6e-4, "Adam learning rate after warm-up.")
    warmup_steps: int = documented(100, "Steps of linear learning-rate warm-up from zero.")
    decay_fraction: float = documented(
        0.2, "Final fraction of the steps over which the learning rate decays to zero."
    )
    epochs: float = documented(2.0, "Passes over the cached tokens (fractions allowed).")
    aux_k: int = documented(256, "AuxK: dead latents that reconstruct the residual error.")
    aux_coef: float = documented(1 / 32, "AuxK: weight of the auxiliary loss.")
    aux_max_dead: int = documented(2048, "AuxK: at most this many dead latents per step (a seeded sample).")
    dead_tokens: int = documented(250_000, "A latent is dead after this many tokens without firing.")
    seed: int = documented(0, "Seed of the initialisation, the data order and the dead-latent sample.")
    checkpoint_every: int = documented(100, "Write a resumable checkpoint every this many steps.")
    matmul_dtype: str = documented(
        "bfloat16",
        "Dtype of the large matmuls: bfloat16 (float32 accumulation; ~2x faster on CPUs with "
        "AMX / AVX512-BF16) or float32.",
    )

    def __post_init__(self) -> None:
        if self.matmul_dtype not in MATMUL_DTYPES:
            raise CGapsError(
                f"train config field 'matmul_dtype' is {self.matmul_dtype!r}."
                f"{did_you_mean(self.matmul_dtype, MATMUL_DTYPES)} Valid: {', '.join(MATMUL_DTYPES)}"
            )
        for name in ("width", "batch_size", "aux_k", "aux_max_dead", "dead_tokens", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise CGapsError(f"train config field '{name}' must be >= 1, got {getattr(self, name)}")
        if not 0 < self.k < self.width:
            raise CGapsError(
                f"train config field 'k' must be in 1..{self.width - 1} (below width {self.width}), got {self.k}"
            )
        if self.warmup_steps < 0:
            raise CGapsError(f"train config field 'warmup_steps' must be >= 0, got {self.warmup_steps}")
        if not 0 <= self.decay_fraction <= 1:
            raise CGapsError(
                f"train config field 'decay_fraction' must be in [0, 1], got {self.decay_fraction}"
            )
        for name in ("lr", "epochs"):
            if not getattr(self, name) > 0:
                raise CGapsError(f"train config field '{name}' must be > 0, got {getattr(self, name)}")
        if self.aux_coef < 0:
            raise CGapsError(f"train config field 'aux_coef' must be >= 0, got {self.aux_coef}")


def _params(cfg: TrainConfig, d: int, mean: Any) -> dict[str, Any]:
    import torch

    gen = torch.Generator().manual_seed(cfg.seed)
    W_dec = torch.randn(cfg.width, d, generator=gen)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    return {
        "W_enc": W_dec.clone().requires_grad_(),  # tied initialisation
        "b_enc": torch.zeros(cfg.width, requires_grad=True),
        "W_dec": W_dec.requires_grad_(),
        "b_dec": mean.clone().requires_grad_(),
    }


def _mm(a: Any, b: Any, dtype: Any) -> Any:
    """a @ b, in ``dtype`` (bfloat16 uses the CPU's AMX / AVX512-BF16 units: ~4x faster), result float32."""
    import torch

    if dtype == torch.float32:
        return a @ b
    return (a.to(dtype) @ b.to(dtype)).float()


def _autograd_fns() -> tuple[Any, Any]:
    """TopK encoder and sparse decoder whose backward passes are two dense matmuls each.

    Autograd through a gather of k encoder rows per token is memory-bound (a [B, k, d] tensor and a
    scatter-add back); a dense [B, F] matrix holding the k values per row and a matmul is faster on CPU.
    """
    import torch

    class TopKEncode(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, xc: Any, W_enc: Any, b_enc: Any, k: int, dtype: Any) -> Any:
            pre = _mm(xc, W_enc.T, dtype) + b_enc
            vals, idx = pre.topk(k, dim=-1, sorted=False)
            ctx.save_for_backward(xc, W_enc, idx)
            ctx.dtype = dtype
            ctx.mark_non_differentiable(idx, pre)
            return vals, idx, pre

        @staticmethod
        def backward(ctx: Any, g_vals: Any, _g_idx: Any, _g_pre: Any) -> Any:
            xc, W_enc, idx = ctx.saved_tensors
            G = torch.zeros(xc.shape[0], W_enc.shape[0]).scatter_(1, idx, g_vals)
            return _mm(G, W_enc, ctx.dtype), _mm(G.T, xc, ctx.dtype), G.sum(0), None, None

    class SparseDecode(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, vals: Any, idx: Any, W_dec: Any, dtype: Any) -> Any:
            A = torch.zeros(vals.shape[0], W_dec.shape[0]).scatter_(1, idx, vals)
            ctx.save_for_backward(A, idx, W_dec)
            ctx.dtype = dtype
            return _mm(A, W_dec, dtype)

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            A, idx, W_dec = ctx.saved_tensors
            return _mm(g, W_dec.T, ctx.dtype).gather(1, idx), None, _mm(A.T, g, ctx.dtype), None

    return TopKEncode, SparseDecode


def topk_forward(
    p: dict[str, Any], x: Any, k: int, matmul_dtype: str = "float32"
) -> tuple[Any, Any, Any, Any]:
    """(reconstruction, values [B,k], indices [B,k], dense pre-activations without grad)."""
    import torch

    from cgaps.models import torch_dtype

    dtype = torch_dtype(matmul_dtype)
    encode, decode = _autograd_fns()
    xc = x - p["b_dec"]
    vals, idx, pre = encode.apply(xc, p["W_enc"], p["b_enc"], k, dtype)
    vals = torch.relu(vals)
    recon = decode.apply(vals, idx, p["W_dec"], dtype) + p["b_dec"]
    return recon, vals, idx, pre


def _lr(cfg: TrainConfig, step: int, total: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay_start = int(total * (1 - cfg.decay_fraction))
    if step >= decay_start:
        return cfg.lr * max(0.0, (total - step) / max(1, total - decay_start))
    return cfg.lr


def _save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    import torch

    from cgaps.rundir import atomic_path

    with atomic_path(folder / CHECKPOINT) as tmp:
        torch.save(state, tmp)


def train_sae(
    acts: Any,
    out: str | Path,
    cfg: TrainConfig,
    *,
    max_steps: int | None = None,
    progress: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train on ``acts`` (fp16/fp32 tensor [N, d] of raw residuals); checkpoints go to ``out``.

    Returns the trained parameters in *scaled* units plus ``scale`` (:func:`to_sae`
    folds it), ``seconds`` (training time of the steps kept, summed over resumed runs) and
    ``resumed_at`` (the steps a run restarted from). ``max_steps`` stops early after writing a
    checkpoint (a resumable "kill").
    """
    import torch

    from cgaps.rundir import remove_stale_temporaries

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # a checkpoint write killed half-way leaves its temporary file (``atomic_path``); the
    # checkpoint itself is whole, so the leftover is only clutter (one trainer per folder:
    # `cgaps train-sae` locks its output folder, whose OUT.work this is by default)
    remove_stale_temporaries(out)
    n, d = acts.shape
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch < 1:
        raise CGapsError(f"only {n} cached tokens, fewer than one batch of {cfg.batch_size}")
    total = max(1, int(cfg.epochs * steps_per_epoch))
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=False)
        if state["config"] != dataclasses.asdict(cfg) or state["n_tokens"] != n:
            raise CGapsError(
                f"{ckpt_path}: checkpoint of another run (config or data differ); delete it or use another folder"
            )
        p = {key: v.requires_grad_() for key, v in state["params"].items()}
        scale = state["scale"]
    else:
        sample = acts[: min(n, 100_000)].float()
        scale = float(math.sqrt(d) / sample.norm(dim=1).pow(2).mean().sqrt())
        p = _params(cfg, d, (sample * scale).mean(0))
        state = {"step": 0, "since_fired": torch.zeros(cfg.width, dtype=torch.long), "history": []}
    resumed_at = list(state.get("resumed_at", [])) + ([state["step"]] if state["step"] else [])
    seconds0, t0 = float(state.get("seconds", 0.0)), time.perf_counter()
    opt = torch.optim.Adam(list(p.values()), lr=cfg.lr, betas=(0.9, 0.999), eps=6.25e-10)
    if "optimizer" in state:
        opt.load_state_dict(state["optimizer"])
    since_fired = state["since_fired"]
    step = state["step"]
    history = state["history"]
    perm_epoch, perm = -1, torch.arange(n)  # replaced at the first step (epoch 0 != -1)
    stop = total if max_steps is None else min(total, max_steps)
    if progress and step:
        progress(step)
    while step < stop:
        epoch, within = divmod(step, steps_per_epoch)
        if epoch != perm_epoch:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
            perm_epoch = epoch
        x = acts[perm[within * cfg.batch_size : (within + 1) * cfg.batch_size]].float() * scale
        recon, vals, idx, pre = topk_forward(p, x, cfg.k, cfg.matmul_dtype)
        var = (x - x.mean(0)).pow(2).sum()
        err = x - recon
        mse = err.pow(2).sum() / var
        loss = mse
        # AuxK on the dead latents: reconstruct the error from them (dense over dead columns only)
        dead = (since_fired >= cfg.dead_tokens).nonzero().squeeze(1)
        aux = torch.zeros(())
        if len(dead):
            if len(dead) > cfg.aux_max_dead:
                gen = torch.Generator().manual_seed(cfg.seed * 7919 + step)
                dead = dead[torch.randperm(len(dead), generator=gen)[: cfg.aux_max_dead]]
            xc = x - p["b_dec"]
            pre_dead = xc @ p["W_enc"][dead].T + p["b_enc"][dead]
            ka = min(cfg.aux_k, len(dead))
            top = pre_dead.topk(ka, dim=-1)
            acts_dead = torch.zeros_like(pre_dead).scatter(1, top.indices, torch.relu(top.values))
            e_hat = acts_dead @ p["W_dec"][dead]
            target = err.detach()
            aux = (target - e_hat).pow(2).sum() / (target - target.mean(0)).pow(2).sum().clamp(min=1e-8)
            loss = loss + cfg.aux_coef * aux
        for group in opt.param_groups:
            group["lr"] = _lr(cfg, step, total)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            W, g = p["W_dec"], p["W_dec"].grad
            g -= (g * W).sum(1, keepdim=True) * W  # keep updates tangent to the unit sphere
        opt.step()
        with torch.no_grad():
            p["W_dec"] /= p["W_dec"].norm(dim=1, keepdim=True)
            fired = torch.zeros(cfg.width, dtype=torch.bool)
            fired[idx[vals > 0]] = True
            since_fired += len(x)
            since_fired[fired] = 0
        step += 1
        if step % 50 == 0 or step == stop:
            history.append(
                {
                    "step": step,
                    "fvu": float(mse.detach()),
                    "aux": float(aux.detach()),
                    "dead": int(len(dead)),
                    "dead_frac": float((since_fired >= cfg.dead_tokens).float().mean()),
                }
            )
            if log:
                log(
                    f"step {step}/{total} fvu {history[-1]['fvu']:.4f} aux {history[-1]['aux']:.3f} "
                    f"dead {history[-1]['dead_frac']:.3f} lr {_lr(cfg, step - 1, total):.2e}"
                )
        if progress:
            progress(1)
        if step % cfg.checkpoint_every == 0 or step == stop:
            _save_checkpoint(
                out,
                {
                    "config": dataclasses.asdict(cfg),
                    "n_tokens": n,
                    "scale": scale,
                    "step": step,
                    "params": {key: v.detach() for key, v in p.items()},
                    "optimizer": opt.state_dict(),
                    "since_fired": since_fired,
                    "history": history,
                    "seconds": seconds0 + time.perf_counter() - t0,
                    "resumed_at": resumed_at,
                },
            )
    return {
        "params": {key: v.detach() for key, v in p.items()},
        "scale": scale,
        "step": step,
        "total_steps": total,
        "history": history,
        "done": step >= total,
        "seconds": seconds0 + time.perf_counter() - t0,
        "resumed_at": resumed_at,
    }


def to_sae(
    result: dict[str, Any],
    cfg: TrainConfig,
    *,
    layer: int,
    model_name: str,
    extra: dict[str, Any] | None = None,
):
    """A sae-lens TopKSAE in raw residual units (the input scale folded into the weights).

    Trained on ``s x``: pre = (s x - b) W + c. With b' = b/s, b_enc' = c/s the same latents are
    selected and activations are divided by s; the unit-norm decoder then reconstructs raw x.
    """
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig

    p, s = result["params"], result["scale"]
    d = p["W_dec"].shape[1]
    sae_cfg = TopKSAEConfig(
        d_in=d, d_sae=cfg.width, k=cfg.k, apply_b_dec_to_input=True, normalize_activations="none"
    )
    meta = {
        "hook_name": resid_post_hook(layer),
        "model_name": model_name,
        "hook_head_index": None,
        "prepend_bos": True,
        "context_size": None,
        "dataset_path": None,
        **(extra or {}),
    }
    for key, value in meta.items():
        sae_cfg.metadata[key] = value
    sae = TopKSAE(sae_cfg)
    with torch.no_grad():
        sae.W_enc.copy_(p["W_enc"].T)
        sae.b_enc.copy_(p["b_enc"] / s)
        sae.W_dec.copy_(p["W_dec"])
        sae.b_dec.copy_(p["b_dec"] / s)
    return sae


def save_sae(
    sae: Any, folder: str | Path, dtype: str = "float32", metrics: dict[str, Any] | None = None
) -> Path:
    """Write ``cfg.json`` + ``sae_weights.safetensors`` (+ ``metrics.json``) in sae-lens format."""
    from cgaps.models import torch_dtype

    folder = Path(folder)
    if dtype != "float32":
        sae = sae.to(dtype=torch_dtype(dtype))
        sae.cfg.dtype = dtype
    sae.save_model(folder)
    if metrics is not None:
        from cgaps.rundir import write_json

        write_json(metrics, folder / METRICS)
    return folder
