"""Generation backends: which one `auto` picks, the errors of one that cannot run, the backend
recorded with the evaluation (another one makes it stale), log-likelihoods routed to
transformers, and the prompts and budgets every backend builds alike (vLLM with a stand-in
engine: vllm itself is never installed here)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.errors import CGapsError
from cgaps.models.backends import Choice, Routed, backend_change, choose_backend
from helpers import FakeGenerator, embedded_tokenizer, tiny_causal_lm


def pick(
    model="embedded",
    device="auto",
    backend="auto",
    dtype="auto",
    *,
    cuda=False,
    have=("llama_cpp",),
    bf16=False,
):
    return choose_backend(
        model,
        device,
        backend,
        dtype,
        has_cuda=lambda: cuda,
        importable=lambda m: m in have,
        bf16_native=lambda: bf16,
    )


# ------------------------------------------------------------------ the choice


@pytest.mark.parametrize(
    ("kw", "want"),
    [
        # a GGUF on the CPU with llama-cpp-python: llama.cpp
        ({}, Choice("llamacpp", "auto: GGUF on CPU")),
        ({"model": "/m/x.Q4_K_M.gguf", "device": "cpu"}, Choice("llamacpp", "auto: GGUF on CPU")),
        # no llama-cpp-python, or not a GGUF, or not the CPU: transformers, and why
        ({"have": ()}, Choice("transformers", "auto: GGUF on CPU, llama-cpp-python not installed")),
        ({"model": "org/name"}, Choice("transformers", "auto: not a GGUF model")),
        ({"device": "mps"}, Choice("transformers", "auto: device mps")),
        ({"cuda": True}, Choice("transformers", "auto: GPU, vllm not installed")),
        ({"device": "cpu", "cuda": True}, Choice("llamacpp", "auto: GGUF on CPU")),
        # a CUDA GPU with vllm: vLLM, GGUF or not
        ({"cuda": True, "have": ("vllm", "llama_cpp")}, Choice("vllm", "auto: CUDA GPU and vllm installed")),
        (
            {"model": "org/name", "device": "cuda:1", "cuda": True, "have": ("vllm",)},
            Choice("vllm", "auto: CUDA GPU and vllm installed"),
        ),
        # vllm installed but the run is on the CPU: not vLLM
        (
            {"device": "cpu", "cuda": True, "have": ("vllm",)},
            Choice("transformers", "auto: GGUF on CPU, llama-cpp-python not installed"),
        ),
        # named backends that can run
        ({"backend": "transformers"}, Choice("transformers", "--backend transformers")),
        ({"backend": "llamacpp", "device": "cpu"}, Choice("llamacpp", "--backend llamacpp")),
        ({"backend": "vllm", "cuda": True, "have": ("vllm",)}, Choice("vllm", "--backend vllm")),
        # a served model: the server generates, whatever auto would pick
        ({"model": "openai://127.0.0.1:8080/v1/m"}, Choice("served", "a served model")),
        # a CPU with native bfloat16 (dtype auto): transformers generating in bfloat16, before llama.cpp
        ({"bf16": True}, Choice("transformers", "auto: CPU with native bfloat16", "bfloat16")),
        (
            {"bf16": True, "model": "org/name"},
            Choice("transformers", "auto: CPU with native bfloat16", "bfloat16"),
        ),
        (
            {"bf16": True, "backend": "transformers"},
            Choice("transformers", "--backend transformers", "bfloat16"),
        ),
        # ... not with an explicit dtype (float32 is the old path, bit for bit), nor on a GPU
        ({"bf16": True, "dtype": "float32"}, Choice("llamacpp", "auto: GGUF on CPU")),
        (
            {"bf16": True, "dtype": "float32", "backend": "transformers"},
            Choice("transformers", "--backend transformers"),
        ),
        ({"bf16": True, "cuda": True}, Choice("transformers", "auto: GPU, vllm not installed")),
        ({"bf16": True, "backend": "llamacpp"}, Choice("llamacpp", "--backend llamacpp")),
    ],
)
def test_choice(kw, want):
    assert pick(**kw) == want


def test_auto_is_printed_with_its_reason_and_recorded():
    assert pick().describe() == "generating with llama.cpp (auto: GGUF on CPU)"
    assert pick(model="org/name").describe() == "generating with transformers (auto: not a GGUF model)"
    fast = pick(bf16=True)
    assert fast.describe() == "generating with transformers in bfloat16 (auto: CPU with native bfloat16)"
    assert (fast.recorded, pick().recorded) == ("transformers:bfloat16", "llamacpp")


@pytest.mark.integration
def test_bfloat16_generation_keeps_the_reader_in_its_dtype():
    """The copy generates; residuals and option log-likelihoods come from the float32 model."""
    import torch

    from cgaps.models.backends import used_backend
    from cgaps.models.hf import HFBackend

    model = tiny_causal_lm(n_layers=1, hidden=16)
    backend = HFBackend(model, embedded_tokenizer(), "tiny", "cpu")
    assert used_backend(backend) == "transformers"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    backend.generate_in("bfloat16")
    assert backend.gen_model.dtype == torch.bfloat16 and backend.dtype == torch.float32
    assert backend.model is model and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert used_backend(backend) == "transformers:bfloat16"
    # the copy is the plain deepcopy-then-cast, every parameter and buffer bit for bit, ties kept
    import copy

    plain = copy.deepcopy(model).to(torch.bfloat16).state_dict()
    got = backend.gen_model.state_dict()
    assert got.keys() == plain.keys()
    assert all(got[k].dtype == plain[k].dtype and torch.equal(got[k], plain[k]) for k in plain)
    assert {n for n, _ in backend.gen_model.named_buffers()} == {n for n, _ in model.named_buffers()}
    tied = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    assert [n for n, _ in backend.gen_model.named_parameters(remove_duplicate=False)] == tied
    assert len(list(backend.gen_model.parameters())) == len(list(model.parameters()))
    backend.generate_in("float32")  # back to the model itself
    assert backend.gen_model is model and used_backend(backend) == "transformers"


@pytest.mark.integration
def test_a_bfloat16_copy_that_would_not_fit_is_refused(monkeypatch):
    """The copy is made only when it fits beside the model; otherwise one line names the fix."""
    import cgaps.models.hf as hf

    model = tiny_causal_lm(n_layers=1, hidden=16)
    backend = hf.HFBackend(model, embedded_tokenizer(), "tiny", "cpu")
    need = sum(p.numel() for p in model.parameters()) * 2
    monkeypatch.setattr(hf, "available_memory", lambda: int(need / 0.8) - 1)
    with pytest.raises(CGapsError, match=r"needs a .* GB copy of tiny .* pass --dtype float32"):
        backend.generate_in("bfloat16")
    assert backend.gen_model is model and backend.generation_dtype is None  # nothing half-done
    monkeypatch.setattr(hf, "available_memory", lambda: int(need / 0.8) + 1)
    backend.generate_in("bfloat16")
    assert backend.generation_dtype == "bfloat16"
    monkeypatch.setattr(hf, "available_memory", lambda: None)  # unknown: the copy is made
    other = hf.HFBackend(model, embedded_tokenizer(), "tiny", "cpu")
    other.generate_in("bfloat16")
    assert other.generation_dtype == "bfloat16"


def test_available_memory_reads_proc_meminfo():
    from cgaps.models.hf import available_memory

    free = available_memory()
    with open("/proc/meminfo") as f:
        want = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    assert free is not None and abs(free - want) < 2**30  # read a moment apart


def test_the_gpu_is_asked_only_when_it_matters():
    asked = []

    def cuda():
        asked.append(1)
        return False

    choose_backend("org/name", "cuda", "transformers", has_cuda=cuda, importable=lambda m: True)
    choose_backend("embedded", "cpu", "auto", has_cuda=cuda, importable=lambda m: m == "llama_cpp")
    assert asked == []  # an explicit device needs no torch import
    choose_backend("embedded", "auto", "auto", has_cuda=cuda, importable=lambda m: m == "llama_cpp")
    assert asked == [1]


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        (
            {"backend": "vllm"},
            r"backend 'vllm' needs the vllm package: pip install 'competency-gaps\[vllm\]'",
        ),
        (
            {"backend": "vllm", "have": ("vllm",)},
            r"backend 'vllm' needs a CUDA GPU, but the device is 'auto' and torch sees no GPU",
        ),
        (
            {"backend": "vllm", "device": "cpu", "cuda": True, "have": ("vllm",)},
            r"needs a CUDA GPU, but the device is 'cpu'; pass --backend auto",
        ),
        (
            {"backend": "llamacpp", "model": "org/name"},
            r"backend 'llamacpp' reads GGUF files, and model 'org/name' is not one",
        ),
        (
            {"backend": "llamacpp", "have": ()},
            r"needs llama-cpp-python: pip install 'competency-gaps\[llamacpp\]'",
        ),
        (
            {"backend": "llamacpp", "device": "cuda"},
            r"runs on the CPU, but the device is 'cuda'; pass --device cpu",
        ),
        (
            {"backend": "llamacpp", "model": "openai://h/v1/m"},
            r"runs a local model, but model 'openai://h/v1/m' is served",
        ),
        ({"backend": "vlm"}, r"unknown backend 'vlm'\. Did you mean 'vllm'\?"),
    ],
)
def test_a_backend_that_cannot_run_is_an_error(kw, error):
    with pytest.raises(CGapsError, match=error):
        pick(**kw)


def test_the_config_refuses_an_unknown_backend():
    with pytest.raises(
        CGapsError, match=r"config field 'backend' is 'llama'.*Valid: auto, transformers, llamacpp, vllm"
    ):
        RunConfig(backend="llama")


def test_cli_evaluate_takes_backend(tmp_path):
    from typer.testing import CliRunner

    from cgaps.cli.main import app

    rundir.write_table(ITEMS, tmp_path / rundir.ITEMS)
    out = CliRunner().invoke(app, ["evaluate", str(tmp_path), "--backend", "vllm", "--device", "cpu"])
    # the one-line error (cgaps.cli.main.main prints it and exits 2), before any model loads
    assert isinstance(out.exception, CGapsError)
    assert str(out.exception).startswith("backend 'vllm' needs the vllm package")


# ------------------------------------------------------------------ recorded with the evaluation


class Fake(FakeGenerator):
    """A generator that answers "2" and says which backend it is."""

    name = "fake"

    def __init__(self, backend: str | None):
        if backend is not None:
            self.backend = backend

    def generate(self, conversations, max_new_tokens, batch_size, progress=None):
        return ["2"] * len(conversations)

    def loglikelihood(self, requests, batch_size, progress=None):
        return [0.0] * len(requests)


ITEMS = pd.DataFrame(
    {
        "item_id": ["a", "b"],
        "benchmark": ["arith", "arith"],
        "prompt": ["1+1?", "2+2?"],
        "reference": ["2", "4"],
        "answer_type": ["number", "number"],
    }
)


def _evaluated(tmp_path, backend, cfg):
    from cgaps.evaluate.stage import evaluate_run

    rundir.write_table(ITEMS, tmp_path / rundir.ITEMS)
    evaluate_run(tmp_path, cfg, Fake(backend))
    return rundir.read_run_json(tmp_path)


def test_the_backend_used_is_recorded_and_another_makes_the_evaluation_stale(tmp_path):
    from cgaps.runstate import RunState

    def stale_reason(run_dir, stage):
        state = RunState(run_dir).state(stage)
        return state.reason if state.state == "stale" else None

    cfg = RunConfig(backend="transformers", dtype="float32")  # the same choice on every machine
    meta = _evaluated(tmp_path, "llamacpp", cfg)
    assert meta["inputs"]["evaluate"]["backend_used"] == "llamacpp"
    assert meta["config"]["backend"] == "transformers"  # what was asked stays in the config
    want = "the answers were generated with another backend (backend 'llamacpp' there, 'transformers' now)"
    assert backend_change(meta) == want
    assert stale_reason(tmp_path, "evaluate") == want
    # generated by the backend the config picks: current
    same = tmp_path / "same"
    _evaluated(same, "transformers", cfg)
    assert stale_reason(same, "evaluate") is None


def test_older_evaluations_count_as_transformers_and_given_generators_are_not_compared(tmp_path):
    meta = _evaluated(tmp_path, None, RunConfig(backend="transformers", dtype="float32"))
    assert meta["inputs"]["evaluate"]["backend_used"] == "given"
    assert backend_change(meta) is None
    del meta["inputs"]["evaluate"]["backend_used"]  # written before backends
    assert backend_change(meta) is None
    meta["config"]["backend"] = "llamacpp"
    meta["config"]["device"] = "cpu"
    import cgaps.models.backends as backends

    if backends._importable("llama_cpp"):
        assert "backend 'transformers' there, 'llamacpp' now" in str(backend_change(meta))
    else:  # the backend cannot be chosen on this machine: stale, and why
        assert "cannot be chosen now" in str(backend_change(meta))


def _interrupted_under_transformers(run_dir):
    """A run whose evaluation was interrupted (an empty resume file) while transformers generated
    in the model's own dtype."""
    from cgaps.evaluate.evaluator import PARTIAL_SIGNATURE

    rundir.write_table(ITEMS, run_dir / rundir.ITEMS)
    settings = {
        k: v for k, v in RunConfig(backend="transformers").to_dict().items() if k in PARTIAL_SIGNATURE
    }
    (run_dir / rundir.RESPONSES_PARTIAL).write_text("")
    (run_dir / rundir.RESPONSES_PARTIAL).with_suffix(".json").write_text(json.dumps(settings))


def test_a_resume_file_from_another_backend_is_refused(tmp_path):
    from cgaps.evaluate.stage import evaluate_run

    _interrupted_under_transformers(tmp_path)
    with pytest.raises(CGapsError, match=r"other settings \(backend 'transformers' there, 'llamacpp' now\)"):
        evaluate_run(tmp_path, RunConfig(), Fake("llamacpp"))
    # the backend that generates is what the resume file records, not "auto"
    evaluate_run(tmp_path, RunConfig(), Fake("transformers"))
    assert rundir.read_run_json(tmp_path)["inputs"]["evaluate"]["backend_used"] == "transformers"


# ------------------------------------------------------------------ log-likelihoods stay with transformers


def test_routed_generates_with_one_and_scores_options_with_transformers():
    made, scored = [], []

    class Scorer:
        prompts_truncated = 0

        def loglikelihood(self, requests, batch_size, progress=None):
            self.prompts_truncated += 1
            return [float(len(c)) for _, c in requests]

    def scorer():
        scored.append(1)
        return Scorer()

    def make():
        made.append(1)
        return Fake("llamacpp")

    routed = Routed(make, scorer, "llamacpp", "m")
    assert made == [] and scored == [] and routed.loaded is None  # nothing loaded before it is used
    assert routed.generate(["q1", "q2"], 8, 2) == ["2", "2"]
    assert made == [1] and scored == []
    assert routed.loglikelihood([("ctx", " ab"), ("ctx", " abcd")], 2) == [3.0, 5.0]
    assert routed.loglikelihood([("ctx", " a")], 2) == [2.0]
    assert scored == [1]  # loaded once
    assert routed.prompts_truncated == 2  # the scorer's truncations are counted


def test_llamacpp_and_vllm_refuse_loglikelihoods_themselves():
    from cgaps.models.vllm import VLLMBackend

    backend = VLLMBackend(None, None, [0], "m", params=dict)
    with pytest.raises(CGapsError, match="generates only"):
        backend.loglikelihood([("x", "y")], 1)


# ------------------------------------------------------------------ the same prompts and budgets


CONVS = [
    [{"role": "user", "content": "What is 2 + 2? Answer with the number."}],
    [
        {"role": "user", "content": "What is 11 + 12?"},
        {"role": "assistant", "content": "23"},
        {"role": "user", "content": "I'm sure it is 24. What is 11 + 12?"},
    ],
    "A bare prompt without the chat template:",
]


@pytest.mark.integration
def test_every_backend_feeds_the_model_the_same_token_ids(monkeypatch):
    """transformers (what reaches the model), llama.cpp (what reaches llama.cpp) and vLLM (what
    reaches the engine) read the same ids: the chat template rendered and tokenised by the
    Hugging Face tokenizer, nothing added."""
    import torch

    import cgaps.models.hf as hf
    from cgaps.models.chat import format_chat
    from cgaps.models.llamacpp import LlamaCppBackend
    from cgaps.models.vllm import VLLMBackend

    tok = embedded_tokenizer()
    # the plain reference: the template by hand, tokenised by hand
    want = [
        tok(c if isinstance(c, str) else format_chat(tok, c).text, add_special_tokens=False)["input_ids"]
        for c in CONVS
    ]
    assert want[0][:3] == tok.convert_tokens_to_ids(["<|im_start|>", "system", "Ċ"])

    seen_hf: list[list[int]] = []

    def fake_greedy(model, input_ids, attention_mask, max_new, pad_id=None):
        for row, mask in zip(input_ids, attention_mask, strict=True):
            seen_hf.append(row[mask.bool()].tolist())
        return torch.zeros((len(input_ids), max_new), dtype=torch.long)

    monkeypatch.setattr(hf, "greedy_generate", fake_greedy)
    hf.HFBackend(tiny_causal_lm(n_layers=1, hidden=16), tok, "tiny", "cpu").generate(CONVS, 4, 8)
    assert sorted(seen_hf) == sorted(want)

    llama = LlamaCppBackend.__new__(LlamaCppBackend)
    llama.tokenizer = tok
    seen_llama: dict[tuple[int, ...], int] = {}

    def fake_llama_greedy(ids, max_new):
        seen_llama[tuple(ids)] = max_new
        return []

    llama._greedy = fake_llama_greedy
    llama.generate(CONVS, [3, 5, 7], 8)
    assert seen_llama == {tuple(w): b for w, b in zip(want, [3, 5, 7], strict=True)}

    class Engine:
        def generate(self, prompts, params, use_tqdm):
            self.prompts, self.params = prompts, params
            return []

    engine = Engine()
    VLLMBackend(engine, tok, [2], "m", params=dict).generate(CONVS, [3, 5, 7], 8)
    assert [p["prompt_token_ids"] for p in engine.prompts] == want
    # greedy, the budgets given (models.batching.token_budgets), stopping at the EOS ids
    assert [p["max_tokens"] for p in engine.params] == [3, 5, 7]
    assert all(p["temperature"] == 0.0 and p["stop_token_ids"] == [2] for p in engine.params)
    assert all(p["repetition_penalty"] == 1.0 for p in engine.params)


def test_vllm_budgets_and_decoding_follow_the_transformers_rules():
    from types import SimpleNamespace

    from cgaps.models.vllm import VLLMBackend

    tok = embedded_tokenizer()
    with pytest.raises(ValueError, match="2 token budgets for 3 conversations"):
        VLLMBackend(None, tok, [2], "m", params=dict).requests(CONVS, [1, 2])
    _, params = VLLMBackend(None, tok, [2], "m", params=dict).requests(CONVS, 9)
    assert [p["max_tokens"] for p in params] == [9, 9, 9]

    answer = tok(" 4", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]

    class Engine:
        def generate(self, prompts, params, use_tqdm):
            return [SimpleNamespace(outputs=[SimpleNamespace(token_ids=answer)]) for _ in prompts]

    done = []
    out = VLLMBackend(Engine(), tok, [tok.eos_token_id], "m", params=dict).generate(CONVS, 4, 2, done.append)
    # the EOS is dropped and the text stripped, as HFBackend.generate decodes
    assert out == ["4", "4", "4"] and done == [3]


def test_a_resume_file_from_another_generation_dtype_is_refused(tmp_path):
    from cgaps.evaluate.stage import evaluate_run

    class Bfloat16(Fake):
        generation_dtype = "bfloat16"  # HFBackend.generate_in("bfloat16")

    _interrupted_under_transformers(tmp_path)
    with pytest.raises(CGapsError, match=r"other settings \(dtype 'auto' there, 'bfloat16' now\)"):
        evaluate_run(tmp_path, RunConfig(), Bfloat16("transformers"))
    (tmp_path / rundir.RESPONSES_PARTIAL).unlink()
    evaluate_run(tmp_path, RunConfig(), Bfloat16("transformers"))
    meta = rundir.read_run_json(tmp_path)
    assert meta["inputs"]["evaluate"]["backend_used"] == "transformers:bfloat16"
    assert meta["inputs"]["evaluate"]["config"]["dtype"] == "auto"  # the config as asked
