"""SAEs: load any sae-lens SAE of a model's residual stream, or the one shipped for SmolLM2.

``load_sae(spec)`` accepts three kinds of spec:

- ``"embedded"``: the SAE shipped inside this package (``cgaps/assets/sae/<name>/``), trained
  on SmolLM2-135M-Instruct by ``cgaps train-sae`` (recipe: ``scripts/train_shipped_sae.py``);
- a local folder in sae-lens format (``cfg.json`` + ``sae_weights.safetensors``), loaded with
  ``SAE.load_from_disk``, which picks the architecture (TopK, JumpReLU, standard...) from cfg.json;
- ``RELEASE/SAE_ID``: a release of sae-lens's ``pretrained_saes.yaml`` and an SAE id inside it
  (which may itself contain slashes), downloaded from the Hugging Face hub.

Only residual-stream SAEs (``blocks.L.hook_resid_post``) are supported, because the model
backend captures exactly that tensor. sae-lens is imported inside functions: importing it
pulls in transformer-lens, which takes seconds.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cgaps.config import EMBEDDED
from cgaps.errors import CGapsError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from sae_lens import SAE

    from cgaps.seams import SAEEncoder

ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets" / "sae"
CFG_FILENAME = "cfg.json"  # sae-lens's SAE_CFG_FILENAME
WEIGHTS_FILENAME = "sae_weights.safetensors"  # sae-lens's SAE_WEIGHTS_FILENAME
# Per-latent activation statistics beside the weights (our addition to the sae-lens folder):
# "max" (float32 [F], the largest activation seen on a reference corpus; the concept scale m_c
# of docs/method.md §2) and "frequency" (float32 [F], the share of tokens it fires on); the
# metadata says on how many tokens of which corpus.
LATENT_STATS_FILENAME = "latent_stats.safetensors"
_RESID_POST = re.compile(r"^blocks\.(\d+)\.hook_resid_post$")


@dataclass
class LoadedSAE:
    """An SAE ready to encode residuals of ``layer`` (hook ``hook_name``): a :class:`~cgaps.seams.SAEEncoder`.

    The stages and metrics use :meth:`encode`, :meth:`decode` and :attr:`W_dec` only; the sae-lens
    object in ``sae`` (its dtype, device, config) stays behind this class.
    """

    sae: SAE
    layer: int
    sae_id: str
    width: int
    hook_name: str

    def __post_init__(self) -> None:
        self.sae.eval()

    @classmethod
    def wrap(cls, sae: SAE, sae_id: str = "sae") -> LoadedSAE:
        """A bare sae-lens SAE (e.g. just trained) as an encoder; its hook must be a residual one."""
        hook_name = sae.cfg.metadata.hook_name
        return cls(
            sae=sae,
            layer=hook_layer(hook_name, sae_id),
            sae_id=sae_id,
            width=int(sae.cfg.d_sae),
            hook_name=hook_name,
        )

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the SAE computes in (its weights' dtype)."""
        return self.sae.W_enc.dtype

    def encode(self, residuals: torch.Tensor) -> torch.Tensor:
        """Concept activations f >= 0 ([n, F], float32, on the SAE's device) of residuals [n, d]
        in any float dtype (cast to the SAE's dtype first)."""
        import torch

        with torch.no_grad():
            codes = self.sae.encode(residuals.to(device=self.sae.W_enc.device, dtype=self.dtype))
        return codes.float().clamp(min=0)

    def topk_codes(self, residuals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The codes of a TopK SAE as its k latents per row: ``(values, indices)``, both [n, k], the
        values in the SAE's dtype after the ReLU (a value of 0 is a latent that does not fire);
        None for any other architecture (then :meth:`encode`).

        The same numbers as :meth:`encode` (the same sae-lens steps: input processing, the encoder
        product and bias, ``torch.topk``, ReLU) without the dense [n, F] tensor that encode
        scatters them into and its cast to float32: extraction pools the k values of each token
        directly (:func:`cgaps.extract.stage.pool_topk`), which in bfloat16 saves ~half of the
        encoding time. ``tests/sae/test_sae.py`` checks that scattering them gives :meth:`encode`'s
        codes bit for bit.
        """
        import torch
        from sae_lens.saes.topk_sae import TopK, TopKSAE

        sae = self.sae
        act = getattr(sae, "activation_fn", None)
        # only where encode is exactly sae-lens's TopKSAE.encode (whose steps are repeated here)
        if not (
            isinstance(sae, TopKSAE)
            and type(sae).encode is TopKSAE.encode
            and isinstance(act, TopK)
            and not act.use_sparse_activations
        ):
            return None
        with torch.no_grad():
            sae_in = sae.process_sae_in(residuals.to(device=sae.W_enc.device, dtype=self.dtype))
            pre = sae_in @ sae.W_enc
            pre += sae.b_enc  # in place: the rounding of `+`, without a second [n, F] tensor
            pre = sae.hook_sae_acts_pre(pre)
            if sae.cfg.rescale_acts_by_decoder_norm:
                pre = pre * sae.W_dec.norm(dim=-1)
            values, indices = torch.topk(pre, k=act.k, dim=-1, sorted=False)
        return values.relu(), indices

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Reconstructed residuals [n, d] (float32) from codes [n, F]."""
        import torch

        with torch.no_grad():
            return self.sae.decode(codes.to(device=self.sae.W_enc.device, dtype=self.dtype)).float()

    @property
    def W_dec(self) -> torch.Tensor:  # sae-lens calls it so
        """The decoder rows [F, d] (each latent's direction in the residual stream), in the SAE's
        dtype and on its device; read-only (no gradient)."""
        return self.sae.W_dec.detach()

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of the weights: tells apart two SAEs behind the same id (a folder retrained
        in place, a new package release), so resumed work never mixes their activations. It is
        the weights' own, not the compute dtype's: :func:`load_sae` hashes them in float32 before
        casting (extraction in bfloat16 and labels in float32 load the same SAE)."""
        return weights_fingerprint(self.sae)


def weights_fingerprint(sae: SAE) -> str:
    """:attr:`LoadedSAE.fingerprint` of an SAE's weights, each hashed as float32 (so a float16
    file loaded as stored or widened to float32 hashes the same; float32 weights as they are)."""
    import torch

    h = hashlib.sha1()
    for name, tensor in sorted(sae.state_dict().items()):
        h.update(name.encode())
        w = tensor.detach().cpu()
        if w.is_floating_point():
            w = w.float()
        h.update(w.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def as_encoder(sae: SAEEncoder | SAE) -> SAEEncoder:
    """An :class:`~cgaps.seams.SAEEncoder` as it is, a bare sae-lens SAE wrapped in :class:`LoadedSAE`."""
    import torch

    if isinstance(sae, torch.nn.Module) and hasattr(sae, "cfg"):  # a bare sae-lens SAE
        return LoadedSAE.wrap(sae)
    return sae


def resid_post_hook(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def hook_layer(hook_name: str | None, sae_id: str) -> int:
    """The layer L of a ``blocks.L.hook_resid_post`` hook name; any other hook is an error."""
    match = _RESID_POST.match(hook_name or "")
    if match is None:
        raise CGapsError(
            f"SAE {sae_id} reads hook {hook_name!r}; only residual-stream SAEs (blocks.L.hook_resid_post) "
            "are supported: pass an SAE trained on the residual stream after a block"
        )
    return int(match.group(1))


def embedded_sae_dir() -> Path:
    """The folder of the SAE shipped with the package."""
    folders = sorted(p.parent for p in ASSETS_DIR.glob(f"*/{CFG_FILENAME}")) if ASSETS_DIR.exists() else []
    if not folders:
        raise CGapsError(
            f"no embedded SAE is installed (expected a sae-lens folder under {ASSETS_DIR}); "
            "pass --sae with a local sae-lens folder or RELEASE/SAE_ID, or train one with 'cgaps train-sae'"
        )
    return folders[-1]


def _load(spec: str, device: str, dtype: str | None) -> tuple[SAE, str]:
    from sae_lens import SAE

    if spec == EMBEDDED:
        folder = embedded_sae_dir()
        return SAE.load_from_disk(folder, device=device, dtype=dtype), f"embedded:{folder.name}"
    path = Path(spec)
    if path.exists():
        if not (path / CFG_FILENAME).exists() or not (path / WEIGHTS_FILENAME).exists():
            raise CGapsError(
                f"{path}: a local SAE folder needs {CFG_FILENAME} and {WEIGHTS_FILENAME} (sae-lens format, "
                "written by SAE.save_model or 'cgaps train-sae')"
            )
        try:
            return SAE.load_from_disk(path, device=device, dtype=dtype), str(path)
        except Exception as e:  # sae-lens, torch and safetensors raise many types for a damaged folder
            problem = " ".join(f"{type(e).__name__}: {e}".split())[:300]
            raise CGapsError(
                f"{path}: not a loadable sae-lens SAE ({problem}); check {CFG_FILENAME} against "
                f"{WEIGHTS_FILENAME}, or save it again with SAE.save_model"
            ) from e
    if spec.startswith((".", "/", "~")) or "/" not in spec:
        raise CGapsError(
            f"SAE {spec!r}: no such folder; pass 'embedded', a local sae-lens folder, or RELEASE/SAE_ID "
            "(e.g. gemma-scope-2b-pt-res-canonical/layer_20/width_16k/canonical)"
        )
    release, sae_id = spec.split("/", 1)
    _check_release(release, sae_id)
    return SAE.from_pretrained(release, sae_id, device=device, dtype=dtype or "float32"), spec


def decoder_directions(spec: str) -> tuple[np.ndarray, str]:
    """The unit-norm decoder directions [F, d] (float32) of the SAE ``spec`` and its id.

    What the SAE-swap check (docs/method.md §4) matches two SAEs' latents by: a latent's
    decoder row is the direction it writes into the residual stream, so two latents of SAEs
    trained on the same model and layer that stand for the same concept point the same way.
    """
    import numpy as np
    import torch

    sae, sae_id = _load(spec, "cpu", "float32")
    with torch.no_grad():
        w = sae.W_dec.detach().float().cpu().numpy()
    norms = np.linalg.norm(w, axis=1, keepdims=True)
    return (w / np.where(norms > 0, norms, 1.0)).astype(np.float32), sae_id


def _check_release(release: str, sae_id: str) -> None:
    """Fail early (offline) on a release or id that sae-lens does not know, with a suggestion."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    from cgaps.errors import did_you_mean

    directory = get_pretrained_saes_directory()
    if release not in directory:
        raise CGapsError(
            f"unknown sae-lens release {release!r}.{did_you_mean(release, directory)} "
            "See sae_lens/pretrained_saes.yaml for the releases, or pass a local folder"
        )
    ids = directory[release].saes_map
    if sae_id not in ids:
        shown = ", ".join(list(ids)[:8]) + (" ..." if len(ids) > 8 else "")
        raise CGapsError(
            f"release {release!r} has no SAE {sae_id!r}.{did_you_mean(sae_id, ids)} Ids: {shown}"
        )


def load_sae(
    spec: str,
    *,
    hidden_size: int,
    n_layers: int,
    layer: int | None = None,
    device: str = "cpu",
    dtype: str | None = "float32",
) -> LoadedSAE:
    """Load the SAE ``spec`` and check that it fits a model with ``hidden_size`` and ``n_layers``.

    ``layer`` (the configured residual layer, if any) must equal the SAE's own hook layer.
    ``dtype`` is the SAE's compute dtype (the shipped SAE is stored in float16; None keeps the
    stored one); :meth:`LoadedSAE.encode` casts residuals to it.
    """
    # loaded in float32 (or as stored) and hashed there, then cast: the fingerprint is the
    # weights', whatever dtype this load computes in
    sae, sae_id = _load(spec, device, None if dtype is None else "float32")
    fingerprint = weights_fingerprint(sae)
    if dtype is not None and dtype != "float32":
        import torch

        sae = sae.to(dtype=getattr(torch, dtype))
    hook_name = sae.cfg.metadata.hook_name
    sae_layer = hook_layer(hook_name, sae_id)
    if layer is not None and layer != sae_layer:
        raise CGapsError(
            f"SAE {sae_id} was trained on layer {sae_layer} ({hook_name}) but layer {layer} was requested; "
            f"drop --layer (it defaults to the SAE's layer) or pass --layer {sae_layer}"
        )
    if sae.cfg.d_in != hidden_size:
        raise CGapsError(
            f"SAE {sae_id} has d_in={sae.cfg.d_in} but model has hidden size {hidden_size}; "
            "pass an SAE trained on this model"
        )
    if sae_layer >= n_layers:
        raise CGapsError(
            f"SAE {sae_id}: layer {sae_layer} is beyond the model's depth {n_layers}; "
            "pass an SAE trained on this model"
        )
    loaded = LoadedSAE(sae=sae, layer=sae_layer, sae_id=sae_id, width=int(sae.cfg.d_sae), hook_name=hook_name)
    loaded.__dict__["fingerprint"] = fingerprint  # the cached property, taken before the cast
    return loaded


def sae_folder(spec: str) -> Path | None:
    """The local folder of an SAE spec (``embedded`` or a folder), None for a hub release."""
    if spec == EMBEDDED:
        return embedded_sae_dir()
    path = Path(spec)
    return path if path.is_dir() else None


def write_latent_stats(folder: str | Path, stats: dict[str, Any], metadata: dict[str, str]) -> Path:
    """Write ``max`` and ``frequency`` ([F] tensors) as the folder's latent statistics."""
    import torch
    from safetensors.torch import save_file

    from cgaps.rundir import atomic_path

    path = Path(folder) / LATENT_STATS_FILENAME
    tensors = {k: torch.as_tensor(stats[k]).float().contiguous() for k in ("max", "frequency")}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_latent_scale(spec: str, width: int) -> tuple[np.ndarray, str] | None:
    """The per-latent reference max shipped with SAE ``spec``, and where it came from; None without one."""
    folder = sae_folder(spec)
    path = folder / LATENT_STATS_FILENAME if folder is not None else None
    if path is None or not path.exists():
        return None
    import numpy as np
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            scale = np.asarray(f.get_tensor("max"), dtype=np.float64)
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for a damaged file
        raise CGapsError(
            f"{path}: not readable latent statistics ({e}); delete it (scores then use the suite's max)"
        ) from e
    if scale.shape != (width,) or not np.all(np.isfinite(scale)) or np.any(scale < 0):
        raise CGapsError(
            f"{path}: field 'max' needs {width} finite values >= 0 (one per latent), got shape {scale.shape}; "
            "delete the file or rewrite it for this SAE"
        )
    return scale, f"{path.name} ({meta.get('tokens', '?')} tokens of {meta.get('corpus', '?')})"


__all__ = [
    "LoadedSAE",
    "as_encoder",
    "embedded_sae_dir",
    "hook_layer",
    "load_sae",
    "resid_post_hook",
    "read_latent_scale",
    "sae_folder",
    "write_latent_stats",
]
