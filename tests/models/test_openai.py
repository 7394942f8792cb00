"""``--model openai://HOST:PORT/v1/MODEL``: the served-model evaluator.

The client's mechanics (order, concurrency, retries, rate limit, the key, errors, resuming an
interrupted evaluation) are tested against a small HTTP server started on 127.0.0.1 in the
test, whose answers and failures the test controls. The comparison with the local evaluator on
the same items runs against llama-cpp-python's OpenAI-compatible server with the embedded
SmolLM2 GGUF (slow; skipped where llama-cpp-python is not installed).
"""

from __future__ import annotations

import json
import threading
import time

import pandas as pd
import pytest
from fastapi import FastAPI, Request  # module level: the handler's annotations resolve here
from fastapi.responses import JSONResponse

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.errors import CGapsError
from cgaps.models.openai import OpenAIGenerator, parse_endpoint
from helpers import free_port

pytestmark = pytest.mark.integration  # every test here starts a server


class FakeServer:
    """An OpenAI-style chat-completions server on 127.0.0.1 (uvicorn in a thread)."""

    def __init__(
        self, fail_first: int = 0, fail_status: int = 503, delay: float = 0.0, fail_after: int | None = None
    ):
        self.calls: list[dict] = []
        self.headers: list[dict] = []
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()
        self.fail_first, self.fail_status, self.delay, self.fail_after = (
            fail_first,
            fail_status,
            delay,
            fail_after,
        )
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            import asyncio

            body = await request.json()
            with self.lock:
                n = len(self.calls)
                self.calls.append(body)
                self.headers.append(dict(request.headers))
                self.active += 1
                self.max_active = max(self.max_active, self.active)
            try:
                await asyncio.sleep(self.delay)
                if n < self.fail_first:
                    return JSONResponse(
                        {"error": "busy"}, status_code=self.fail_status, headers={"Retry-After": "0"}
                    )
                if self.fail_after is not None and n >= self.fail_after:
                    return JSONResponse({"error": {"message": "model is gone"}}, status_code=404)
                if body["model"] != "tiny":
                    return JSONResponse({"error": {"message": f"no model {body['model']}"}}, status_code=404)
                text = body["messages"][-1]["content"]
                return {
                    "choices": [{"message": {"role": "assistant", "content": f"echo: {text}"}}],
                    "model": "tiny",
                }
            finally:
                with self.lock:
                    self.active -= 1

        @app.post("/v1/completions")
        async def completions(request: Request):
            body = await request.json()
            self.calls.append(body)
            return {"choices": [{"text": f"raw: {body['prompt']}"}]}

        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                break
            time.sleep(0.05)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]

    def url(self, query: str = "") -> str:
        return f"openai://127.0.0.1:{self.port}/v1/tiny" + (f"?{query}" if query else "")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def server_factory():
    made: list[FakeServer] = []

    def make(**kw) -> FakeServer:
        made.append(FakeServer(**kw))
        return made[-1]

    yield make
    for s in made:
        s.stop()


def conv(i: int) -> list[dict]:
    return [{"role": "user", "content": f"question {i}"}]


def test_parse_endpoint():
    ep = parse_endpoint("openai://10.0.0.2:8000/v1/meta-llama/Llama-3-8B?concurrency=4&rate=2.5")
    assert (ep.base_url, ep.model, ep.concurrency, ep.rate) == (
        "http://10.0.0.2:8000/v1",
        "meta-llama/Llama-3-8B",
        4,
        2.5,
    )
    assert (
        parse_endpoint("openai://https://api.example.com/v1/gpt-x").base_url == "https://api.example.com/v1"
    )
    with pytest.raises(CGapsError, match=r"expected openai://HOST:PORT/v1/MODEL"):
        parse_endpoint("openai://localhost:8000/mymodel")
    with pytest.raises(CGapsError, match=r"unknown option 'concurency'. Did you mean 'concurrency'"):
        parse_endpoint("openai://h:1/v1/m?concurency=2")
    with pytest.raises(CGapsError, match=r"option retries='x' is not a number"):
        parse_endpoint("openai://h:1/v1/m?retries=x")


def test_order_concurrency_and_greedy_settings(server_factory):
    srv = server_factory(delay=0.05)
    gen = OpenAIGenerator(srv.url("concurrency=4"))
    ticks = []
    out = gen.generate([conv(i) for i in range(12)], [5] * 6 + [7] * 6, batch_size=99, progress=ticks.append)
    assert out == [f"echo: question {i}" for i in range(12)]
    assert sum(ticks) == 12
    assert 2 <= srv.max_active <= 4  # requests overlap, never more than asked
    assert {c["temperature"] for c in srv.calls} == {0.0} and {c["seed"] for c in srv.calls} == {0}
    assert sorted(c["max_tokens"] for c in srv.calls) == [5] * 6 + [7] * 6
    assert all("authorization" not in h for h in srv.headers)  # no key, no header
    # a plain string is sent as it is, without the chat template
    assert gen.generate(["Question: 2+2?\nAnswer:"], 3, 1) == ["raw: Question: 2+2?\nAnswer:"]
    assert srv.calls[-1]["prompt"] == "Question: 2+2?\nAnswer:" and srv.calls[-1]["max_tokens"] == 3


def test_extra_body_fields_reach_every_request(server_factory):
    """``body.NAME=VALUE``: the server's own sampling config (llama.cpp's repeat_penalty), JSON-typed,
    on chat and plain-text requests alike, and recorded with the decoding settings."""
    srv = server_factory()
    gen = OpenAIGenerator(srv.url("body.repeat_penalty=1&body.top_k=1&body.mirostat_mode=off"))
    gen.generate([conv(0), "Q: 1+1?\nA:"], 3, 1)
    assert len(srv.calls) == 2
    for call in srv.calls:
        assert call["repeat_penalty"] == 1 and call["top_k"] == 1 and call["mirostat_mode"] == "off"
        assert call["temperature"] == 0.0
    assert gen.loaded["decoding"]["repeat_penalty"] == 1
    assert parse_endpoint("openai://h:1/v1/m?body.x=true").body == (("x", True),)


@pytest.mark.integration
def test_retries_rate_limit_and_key(server_factory, monkeypatch):
    srv = server_factory(fail_first=2, fail_status=429)
    monkeypatch.setenv("MY_KEY", "sk-test")
    gen = OpenAIGenerator(srv.url("concurrency=1&retries=3&rate=20&key_env=MY_KEY"))
    t0 = time.perf_counter()
    assert gen.generate([conv(i) for i in range(6)], 4, 1) == [f"echo: question {i}" for i in range(6)]
    elapsed = time.perf_counter() - t0
    assert len(srv.calls) == 8 and gen.requests == 8  # two 429s retried
    assert elapsed >= 7 / 20  # 8 starts at most 20 per second
    assert {h["authorization"] for h in srv.headers} == {"Bearer sk-test"}
    assert "sk-test" not in json.dumps(gen.loaded)


@pytest.mark.integration
def test_errors_are_one_line(server_factory):
    srv = server_factory()
    bad = OpenAIGenerator(srv.url().replace("/tiny", "/other"))
    with pytest.raises(CGapsError, match=r"HTTP 404 .*no model other.*check the model name 'other'") as e:
        bad.generate([conv(0)], 4, 1)
    assert "\n" not in str(e.value)
    down = OpenAIGenerator("openai://127.0.0.1:9/v1/tiny?retries=1")  # nothing listens on port 9
    with pytest.raises(CGapsError, match=r"no answer after 2 attempts .*is the server running"):
        down.generate([conv(0)], 4, 1)
    with pytest.raises(CGapsError, match=r"--mc-scoring generate"):
        bad.loglikelihood([(conv(0), "a")], 1)


def test_evaluate_resumes_after_the_server_fails(server_factory, tmp_path):
    from cgaps.evaluate.stage import evaluate_run

    items = pd.DataFrame(
        {
            "item_id": [f"q{i}" for i in range(10)],
            "benchmark": "b",
            "prompt": [f"say {i}" for i in range(10)],
            "reference": [f"echo: say {i}" for i in range(10)],
            "answer_type": "text",
        }
    )
    run = tmp_path / "run"
    run.mkdir()
    items.to_parquet(run / rundir.ITEMS, index=False)
    failing = server_factory(fail_after=4)
    cfg = RunConfig(model=failing.url("concurrency=2&retries=0"), batch_size=2)  # chunks of 4 items
    with pytest.raises(CGapsError, match=r"HTTP 404"):
        evaluate_run(run, cfg)
    partial = [json.loads(line) for line in (run / rundir.RESPONSES_PARTIAL).read_text().splitlines()]
    assert len(partial) == 4  # the first chunk was kept
    healthy = server_factory()
    # the same endpoint settings (the resume file is keyed on the model argument): only the port moves
    cfg2 = RunConfig(model=healthy.url("concurrency=2&retries=0"), batch_size=2)
    settings = json.loads((run / rundir.RESPONSES_SETTINGS).read_text())
    settings["model"] = cfg2.model
    (run / rundir.RESPONSES_SETTINGS).write_text(json.dumps(settings))
    out = evaluate_run(run, cfg2)
    assert len(healthy.calls) == 6  # only the items without a response
    assert out.set_index("item_id")["response"].to_dict() == {f"q{i}": f"echo: say {i}" for i in range(10)}
    meta = rundir.read_run_json(run)
    assert meta["model"]["evaluated"] == f"tiny @ http://127.0.0.1:{healthy.port}/v1"


# ---------------------------------------------------------------- against llama.cpp's server


@pytest.mark.slow
def test_llama_cpp_server_matches_the_local_evaluator(tmp_path, smollm):
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")
    import subprocess
    import sys

    import httpx

    from cgaps.evaluate.stage import evaluate_run
    from cgaps.models import embedded_gguf
    from cgaps.models.llamacpp import LlamaCppBackend
    from cgaps.pipeline import items_run

    port = free_port()
    # a file, not a pipe: llama.cpp's start-up log would fill an unread pipe and stall the server
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf()), "--host", "127.0.0.1",
         "--port", str(port), "--model_alias", "smollm2", "--n_ctx", "2048", "--seed", "0"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
                time.sleep(0.2)
        else:
            raise AssertionError(
                "llama.cpp server did not start: " + (tmp_path / "server.log").read_text()[-2000:]
            )
        local, served, native = tmp_path / "local", tmp_path / "served", tmp_path / "native"
        for run in (local, served, native):
            items_run(run, RunConfig(suite="probes", limit=60, seed=0))
        cfg = RunConfig(max_new_tokens=32, batch_size=8)
        a = evaluate_run(local, cfg, generator=smollm)
        t0 = time.perf_counter()
        # greedy without llama.cpp's default repeat penalty of 1.1 (docs: cgaps.models.openai)
        spec = f"openai://127.0.0.1:{port}/v1/smollm2?concurrency=4&body.repeat_penalty=1"
        b = evaluate_run(served, cfg.replace(model=spec))
        elapsed = time.perf_counter() - t0
        # the same GGUF run locally by llama.cpp: the same arithmetic, so the same answers
        c = evaluate_run(native, cfg, generator=LlamaCppBackend.load("embedded"))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    assert len(a) >= 50
    same = (a.set_index("item_id")["response"] == b.set_index("item_id")["response"]).mean()
    # the figures for the README (pytest -s shows them)
    acc_a, acc_b = a["score"].mean(), b["score"].mean()
    print(
        f"llama.cpp server vs local evaluator: {same:.1%} of {len(a)} responses identical, accuracy "
        f"{acc_b:.3f} vs {acc_a:.3f}; served {len(a) / elapsed:.2f} items/s"
    )
    assert (b["response"].str.len() > 0).all()
    # served through the client vs the local llama.cpp backend on the same weights: identical
    exact = (c.set_index("item_id")["response"] == b.set_index("item_id")["response"]).mean()
    print(f"llama.cpp server vs local llama.cpp backend: {exact:.1%} identical")
    assert exact >= 0.98, exact
    # Against transformers, greedy paths part where two logits nearly tie (llama.cpp's kernels on
    # the Q4_1 weights vs float32 on the de-quantised ones): the floor only catches a broken
    # pipe-through (a wrong template or truncated answers agree on almost nothing).
    assert same >= 0.3, same
