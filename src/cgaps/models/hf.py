"""The transformers backend: one causal LM as both seams of :mod:`cgaps.seams`.

:class:`HFBackend` is a :class:`~cgaps.seams.Generator` (batched greedy generation, option
log-likelihoods) and a :class:`~cgaps.seams.ResidualReader` (the residual stream after given
blocks, the logits with that residual edited, and the unembedding the logit lens reads). Residuals are read with forward hooks on
the decoder blocks; a forward that only needs residuals stops right after the deepest block
asked for, so extraction never pays for the layers above L or the LM head.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from cgaps.errors import CGapsError
from cgaps.models.batching import greedy_generate, length_batches, pad_batch, token_budgets
from cgaps.models.chat import prompt_ids, prompt_text
from cgaps.models.loading import describe_load, pick_device, pick_dtype, resolve_model
from cgaps.seams import Messages, Progress

if TYPE_CHECKING:
    import torch

# batches generated at once on a CPU (HFBackend.generate): measured on 2 cores, 128 demo probes
# in batches of 32, 1.09-1.27x faster than one at a time under load ~4, the same tokens
GENERATION_WORKERS = 2
# a process forked from one that ran torch may not start torch work in new threads (its thread
# pool is gone: "Invalid thread pool"), so a forked child generates one batch at a time
_forked = False


def _mark_forked() -> None:
    global _forked
    _forked = True


os.register_at_fork(after_in_child=_mark_forked)


def available_memory() -> int | None:
    """Bytes of memory the system can still give (``MemAvailable`` of /proc/meminfo), or None
    where that is not known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class _StopForward(Exception):
    """Raised by the hook of the deepest block asked for: nothing above it needs to run."""


class HFBackend:
    """A transformers causal LM (see the module docstring)."""

    backend = "transformers"  # the generation backend's name (cgaps.models.backends)

    def __init__(self, model: Any, tokenizer: Any, name: str, device: str):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.device = device
        self.loaded: dict[str, Any] | None = None  # what was really loaded (run.json), set by load()
        # prompts longer than the context: "truncate" (from the left, counted) or "refuse"
        self.context_overflow = "truncate"
        self.prompts_truncated = 0
        # generation (only) may run a copy in another dtype: generate_in()
        self.gen_model = model
        self.generation_dtype: str | None = None  # the copy's dtype (None: the model generates)
        self._readers: dict[str, HFBackend] = {}  # this model read in other dtypes: reading_in()
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
        backend = cls(model, tok, display, device)
        backend.loaded = describe_load(name, path, display, backend.dtype, device)
        return backend

    @property
    def context_length(self) -> int:
        """The most tokens the model attends to (its position embeddings)."""
        cfg = self.model.config
        cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        return int(getattr(cfg, "max_position_embeddings", None) or 2048)

    def _fit_context(self, ids: list[int], room: int, msgs: Messages | str) -> list[int]:
        """``ids`` cut from the left to leave ``room`` tokens of the context free, counted in
        :attr:`prompts_truncated`; with ``context_overflow`` "refuse", an error instead."""
        limit = self.context_length - room
        if len(ids) <= limit:
            return ids
        if self.context_overflow == "refuse" or limit < 1:
            last = msgs if isinstance(msgs, str) else str(msgs[-1].get("content", "")) if msgs else ""
            start = " ".join(last.split())[:60]
            raise CGapsError(
                f"a prompt of {len(ids)} tokens ({start!r}...) does not fit model {self.name}'s context of "
                f"{self.context_length} tokens with {room} more; shorten it, or set context_overflow: "
                "truncate to keep its last tokens"
            )
        self.prompts_truncated += 1
        return ids[len(ids) - limit :]

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model computes in (residuals come back in it)."""
        return next(self.model.parameters()).dtype

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

    def logits_with_edit(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        layer: int,
        edit: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> torch.Tensor:
        """Full-model logits ([batch, seq, vocab], float32, on CPU) with the residual after block
        ``layer`` replaced by ``edit(residual)`` (None: the clean forward)."""
        import torch

        self.check_layer(layer)
        handle = None
        if edit is not None:

            def hook(_module: Any, _inputs: Any, output: Any) -> Any:
                if isinstance(output, tuple):
                    return (edit(output[0]), *output[1:])
                return edit(output)

            handle = self.decoder_layers()[layer].register_forward_hook(hook)
        try:
            with torch.no_grad():
                logits = self.model(
                    input_ids=input_ids.to(self.device),
                    attention_mask=attention_mask.to(self.device),
                    use_cache=False,
                ).logits
        finally:
            if handle is not None:
                handle.remove()
        return logits.float().cpu()

    def unembed(self) -> tuple[torch.Tensor | None, torch.Tensor] | None:
        """The final norm's effective scale and the LM head (:meth:`cgaps.seams.ResidualReader.unembed`;
        the family rules are :func:`cgaps.models.families.final_norm_scale`'s)."""
        from cgaps.models.families import final_norm_scale

        head = self.model.get_output_embeddings()
        if head is None:
            return None
        return final_norm_scale(self.model), head.weight

    # -- generation

    def generate_in(self, dtype: str) -> None:
        """Generate with a copy of the weights in ``dtype`` (bfloat16 on a CPU that computes it
        natively: ~4x faster matrix products); option log-likelihoods and residuals keep the
        model's dtype, so extraction reads the same residuals whatever generated the answers."""
        from cgaps.models.loading import torch_dtype

        if torch_dtype(dtype) == self.dtype:
            self.gen_model, self.generation_dtype = self.model, None
            return
        if self.gen_model is self.model or self.gen_model.dtype != torch_dtype(dtype):
            # the copy lives beside the model: refuse it here rather than be killed for memory later
            want = sum(p.numel() for p in self.model.parameters()) * torch_dtype(dtype).itemsize
            free = available_memory()
            if free is not None and want > 0.8 * free:
                raise CGapsError(
                    f"generating in {dtype} needs a {want / 2**30:.1f} GB copy of {self.name} beside the "
                    f"model, but only {free / 2**30:.1f} GB of memory is available; pass --dtype float32 "
                    "(generate with the model itself) or --backend llamacpp for a GGUF"
                )
            self.gen_model = _copy_in(self.model, torch_dtype(dtype))
        self.generation_dtype = dtype
        if isinstance(self.loaded, dict):
            self.loaded = {**self.loaded, "generation_dtype": dtype}

    def reading_in(self, dtype: str) -> HFBackend:
        """This model as a reader whose parameters are in ``dtype`` (extraction in bfloat16 on a
        CPU that computes it natively, :func:`cgaps.models.loading.reader_dtype`): itself when it
        already is, else a copy made once and kept. The copy equals the model loaded in ``dtype``
        (:func:`cast_parameters`: residuals bit for bit), so a pipeline that loaded the model in
        float32 to evaluate extracts exactly as ``cgaps extract`` loading it in bfloat16. Its
        parameters are those of the generation copy when that one is in ``dtype`` (no more memory)."""
        from cgaps.models.loading import torch_dtype

        want = torch_dtype(dtype)
        if want == self.dtype:
            return self
        if dtype not in self._readers:
            shared = self.gen_model if self.gen_model is not self.model else None
            if shared is None or next(shared.parameters()).dtype != want:
                shared = None
                need = sum(p.numel() for p in self.model.parameters()) * want.itemsize
                free = available_memory()
                if free is not None and need > 0.8 * free:
                    raise CGapsError(
                        f"reading residuals in {dtype} needs a {need / 2**30:.1f} GB copy of {self.name} beside "
                        f"the model, but only {free / 2**30:.1f} GB of memory is available; pass --dtype "
                        f"{str(self.dtype).removeprefix('torch.')} (read with the model itself)"
                    )
            reader = HFBackend(
                cast_parameters(self.model, want, shared), self.tokenizer, self.name, self.device
            )
            if isinstance(self.loaded, dict):
                loaded = {k: v for k, v in self.loaded.items() if k != "generation_dtype"}
                reader.loaded = {**loaded, "dtype": dtype}
            reader.context_overflow = self.context_overflow
            self._readers[dtype] = reader
        return self._readers[dtype]

    def generate(
        self,
        conversations: Sequence[Messages | str],
        max_new_tokens: int | Sequence[int],
        batch_size: int,
        progress: Progress | None = None,
    ) -> list[str]:
        """Greedy responses; batches are built from length-sorted prompts to waste little padding.

        ``max_new_tokens`` is one budget for all, or one per conversation: a batch then generates
        up to its largest budget and each response is cut at its own (greedy decoding makes the
        first n tokens the same either way).
        """
        texts = [self.prompt_text(c) for c in conversations]
        budgets = token_budgets(max_new_tokens, len(texts))
        out: list[str] = [""] * len(texts)
        tok = self.tokenizer
        batches = []
        for idx in length_batches([len(t) for t in texts], batch_size):
            max_new = max(budgets[i] for i in idx)
            # prompts past the context are cut from the left (or refused) before any is generated
            rows = [
                self._fit_context(prompt_ids(tok, conversations[i]), max_new, conversations[i]) for i in idx
            ]
            # left padding for generation only; the shared tokenizer keeps its own setting
            enc = tok.pad({"input_ids": rows}, return_tensors="pt", padding=True, padding_side="left")
            batches.append((idx, max_new, enc))

        def run(batch: tuple[list[int], int, Any]) -> torch.Tensor:
            _, max_new, enc = batch
            # finished rows leave the batch (model.generate would run them to the longest answer)
            return greedy_generate(
                self.gen_model,
                enc["input_ids"].to(self.device),
                enc["attention_mask"].to(self.device),
                max_new,
                pad_id=tok.pad_token_id,
            )

        pool = None
        if str(self.device).startswith("cpu") and len(batches) > 1 and GENERATION_WORKERS > 1 and not _forked:
            # two batches at once on a CPU: a decoding step is many small operations, and one
            # batch alone leaves a core idle between them; each batch still computes alone with
            # the same threads per operation, so the tokens are those of one batch at a time
            # (tested; docs/scaling.md, Generation)
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(max_workers=GENERATION_WORKERS, thread_name_prefix="cgaps-generate")
        try:
            results = pool.map(run, batches) if pool is not None else map(run, batches)
            for (idx, _, _), new in zip(batches, results, strict=True):
                for i, row in zip(idx, new, strict=True):
                    out[i] = tok.decode(row[: budgets[i]], skip_special_tokens=True).strip()
                if progress:
                    progress(len(idx))
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        return out

    def prompt_text(self, prompt: Messages | str) -> str:
        """The text the model reads for a prompt: a conversation through the chat template, a
        plain string as it is (no template, no system prompt: ``chat_template: false``)."""
        return prompt_text(self.tokenizer, prompt)

    def loglikelihood(
        self,
        requests: Sequence[tuple[Messages | str, str]],
        batch_size: int,
        progress: Progress | None = None,
    ) -> list[float]:
        """Sum of log-probabilities of each continuation after its context (:meth:`prompt_text`).

        Tokenised as lm-evaluation-harness does (``_encode_pair``), so the two agree on identical
        strings: whitespace at the end of the context moves to the start of the continuation; the
        context and the whole string are tokenised, and the continuation is the whole string's
        tokens after the context's. A plain-string context is tokenised with the tokenizer's own
        special tokens (as the harness does without a chat template); a rendered conversation
        already holds them. Only the continuation's positions go through the softmax.
        """
        import torch

        tok = self.tokenizer
        # each context is keyed by its text and whether it is a plain string (tokenised with the
        # special tokens), so it is tokenised, and cut to the context, once for all its options
        split: list[tuple[tuple[str, bool], str, Messages | str]] = []
        for prompt, cont in requests:
            text = self.prompt_text(prompt)
            n_space = len(text) - len(text.rstrip())
            if n_space:
                text, cont = text[:-n_space], text[-n_space:] + cont
            if not text:
                raise CGapsError("log-likelihood request with an empty context")
            split.append(((text, isinstance(prompt, str)), cont, prompt))

        def encode(text: str, raw: bool) -> list[int]:
            return list(tok(text, add_special_tokens=raw)["input_ids"])

        context_ids: dict[tuple[str, bool], list[int]] = {}
        room: dict[tuple[str, bool], int] = {}  # per context, its longest continuation
        conts: list[list[int]] = []
        for key, cont, _ in split:
            if key not in context_ids:
                context_ids[key] = encode(*key)
            cid = encode(key[0] + cont, key[1])[len(context_ids[key]) :]
            if not cid:
                raise CGapsError("log-likelihood request with an empty continuation")
            conts.append(cid)
            room[key] = max(room.get(key, 0), len(cid))
        fitted: dict[tuple[str, bool], list[int]] = {}  # each context cut once (and counted once)
        for key, _, prompt in split:
            if key not in fitted:
                fitted[key] = self._fit_context(context_ids[key], room[key], prompt)
        pairs = [(fitted[key], cid) for (key, _, _), cid in zip(split, conts, strict=True)]
        out = [0.0] * len(pairs)
        lengths = [len(ctx) + len(cid) for ctx, cid in pairs]
        for idx in length_batches(lengths, batch_size, longest_first=True):
            ids, mask = pad_batch([pairs[i][0] + pairs[i][1] for i in idx], tok.pad_token_id)
            with torch.no_grad():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            for r, i in enumerate(idx):
                ctx, cid = pairs[i]
                pos = torch.arange(len(ctx) - 1, len(ctx) + len(cid) - 1, device=logits.device)
                logp = torch.log_softmax(logits[r, pos].float(), dim=-1)
                out[i] = float(logp[torch.arange(len(cid)), torch.tensor(cid, device=logits.device)].sum())
            if progress:
                progress(len(idx))
        return out


def _copy_in(model: Any, dtype: torch.dtype) -> Any:
    """``copy.deepcopy(model).to(dtype)`` (every floating parameter and buffer in ``dtype``), tensors
    equal bit for bit, without the full-precision copy first: each tensor is cast straight into
    the copy (half the time of deepcopy-then-cast: the copy is made at every pipeline start)."""
    import copy

    import torch

    memo: dict[int, Any] = {}
    for p in model.parameters():
        if p.is_floating_point():
            memo[id(p)] = torch.nn.Parameter(p.detach().to(dtype), requires_grad=p.requires_grad)
    for b in model.buffers():
        if b.is_floating_point():
            memo[id(b)] = b.detach().to(dtype)
    return copy.deepcopy(model, memo).to(dtype).eval()


def cast_parameters(model: Any, dtype: torch.dtype, shared: Any = None) -> Any:
    """A copy of ``model`` as ``from_pretrained(dtype=...)`` loads it: its parameters in ``dtype``
    (but those of modules the model keeps in float32, ``_keep_in_fp32_modules``) and each buffer
    in the dtype the model's own construction in ``dtype`` gives it. That is not
    ``model.to(dtype)``, which also rounds buffers a load keeps in float32: the rotary
    frequencies (``inv_freq``; positions then drift and the residuals differ). ``shared``: a copy of
    the same model whose parameters already are in ``dtype`` (taken, not copied); tied parameters
    stay tied."""
    import copy

    import torch

    keep = tuple(getattr(model, "_keep_in_fp32_modules", None) or ())
    theirs = dict(shared.named_parameters()) if shared is not None else {}
    memo: dict[int, Any] = {}
    for name, p in model.named_parameters():
        if p.dtype == dtype or not p.is_floating_point() or any(k in name.split(".") for k in keep):
            continue
        q = theirs.get(name)
        if q is None or q.dtype != dtype or q.shape != p.shape:
            q = torch.nn.Parameter(p.detach().to(dtype), requires_grad=False)
        memo[id(p)] = q
    out = copy.deepcopy(model, memo)
    built = _buffer_dtypes(model, dtype)
    for name, buf in list(out.named_buffers()):
        want = built.get(name, buf.dtype)
        if buf.dtype != want:
            module_name, _, attr = name.rpartition(".")
            module = out.get_submodule(module_name) if module_name else out
            persistent = attr not in module._non_persistent_buffers_set
            module.register_buffer(attr, buf.to(want), persistent=persistent)
    if hasattr(out.config, "dtype"):
        out.config.dtype = dtype
    return out.eval()


def _buffer_dtypes(model: Any, dtype: torch.dtype) -> dict[str, torch.dtype]:
    """The dtype of each buffer of ``model`` when transformers builds it in ``dtype`` (on the meta
    device: no memory, no weights); empty for a model it cannot build from its config."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(model.config, dtype=dtype)
    except Exception:  # a model class of one's own: its buffers stay as they are
        return {}
    return {name: buf.dtype for name, buf in skeleton.named_buffers()}


def load_backend(name: str, device: str = "auto", dtype: str = "auto") -> HFBackend:
    """Load a model (hub id, local folder, .gguf file or ``embedded``) as an :class:`HFBackend`."""
    return HFBackend.load(name, device=device, dtype=dtype)


if TYPE_CHECKING:
    from cgaps.seams import Generator, ResidualReader

    def _satisfies_seams(backend: HFBackend) -> tuple[Generator, ResidualReader]:
        return backend, backend  # where mypy checks HFBackend against both protocols
