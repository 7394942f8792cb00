"""Any OpenAI-compatible server as the evaluated model: ``--model openai://HOST:PORT/v1/MODEL``.

vLLM, llama.cpp's server, TGI, Ollama and hosted APIs all answer ``POST /v1/chat/completions``
(and ``/v1/completions`` for a plain-text prompt, read without the chat template).
:class:`OpenAIGenerator` is a :class:`cgaps.seams.Generator` that sends each conversation
there with greedy settings (``temperature`` 0, a fixed ``seed``), so the own evaluator
(:class:`cgaps.evaluate.evaluator.OwnEvaluator`) drives it exactly like a local model, with
the same resume file: an interrupted evaluation continues from the responses already
appended.

The model argument: ``openai://HOST:PORT/v1/MODEL`` (http), or
``openai://https://HOST/v1/MODEL`` for a TLS endpoint; MODEL is everything after ``/v1/``
(hub-style names with slashes work). Query parameters tune the client:
``?concurrency=8&rate=10&retries=5&timeout=120&key_env=OPENAI_API_KEY``:

* ``concurrency``: requests in flight at once (threads; the server batches them);
* ``rate``: at most this many request starts per second (a hosted API's limit), default none;
* ``retries``: attempts after a connection error, 408, 409, 429 or 5xx, with exponential
  backoff (``Retry-After`` honoured); other 4xx answers are errors naming the server's message;
* ``timeout``: seconds to wait for one answer (default 120); a connection is given at most
  :data:`CONNECT_TIMEOUT` seconds of it. So a request gives up, with a one-line error, after at
  most ``(retries + 1) x timeout`` seconds plus the backoff (nothing listening: the backoff alone,
  ~15 s with the defaults); once one request has failed, the others in flight are abandoned
  (their connections closed) instead of each waiting out its own retries, and so they are on
  Ctrl-C;
* ``key_env``: the environment variable holding the API key (default ``OPENAI_API_KEY``; no
  key, no ``Authorization`` header, as local servers want). The key is never written anywhere;
* ``body.NAME=VALUE``: an extra field of every request's JSON body (VALUE read as JSON when it
  parses: ``1`` is a number, ``true`` a boolean), for the server's own sampling parameters. Servers
  differ in what "greedy" means beyond temperature 0: llama-cpp-python's server applies a
  repeat penalty of 1.1 unless told ``body.repeat_penalty=1``; with it, its answers equal the
  local llama.cpp backend's on every probe item measured (30 of 30; 16 of 30 without).

Option log-likelihoods (``mc_scoring: loglik``) need the prompt's token log-probabilities,
which the chat API does not return: :meth:`OpenAIGenerator.loglikelihood` refuses with the fix.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cgaps.errors import CGapsError, did_you_mean
from cgaps.models.batching import token_budgets
from cgaps.seams import Messages, Progress

SCHEME = "openai://"
# Seconds to wait for a TCP connection (a host that drops packets would otherwise take the whole
# answer timeout of every attempt).
CONNECT_TIMEOUT = 10.0
QUERY_KEYS = ("concurrency", "rate", "retries", "timeout", "key_env")
BODY_PREFIX = "body."
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


def is_openai(model: str) -> bool:
    return model.startswith(SCHEME)


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach the server (parsed from the model argument)."""

    base_url: str  # ".../v1"
    model: str
    concurrency: int = 8
    rate: float | None = None
    retries: int = 5
    timeout: float = 120.0
    key_env: str = "OPENAI_API_KEY"
    body: tuple[tuple[str, Any], ...] = ()  # extra JSON fields of every request (``body.NAME=VALUE``)


def parse_endpoint(spec: str) -> Endpoint:
    """``openai://HOST:PORT/v1/MODEL?k=v`` -> :class:`Endpoint`; a malformed one is a one-line error."""
    rest = spec[len(SCHEME) :]
    rest, _, query = rest.partition("?")
    url = rest if rest.startswith(("http://", "https://")) else f"http://{rest}"
    base, sep, model = url.partition("/v1/")
    if not sep or not model or not urlsplit(base).netloc:
        raise CGapsError(
            f"model {spec!r}: expected openai://HOST:PORT/v1/MODEL (e.g. openai://127.0.0.1:8000/v1/my-model)"
        )
    opts: dict[str, Any] = {}
    body: list[tuple[str, Any]] = []
    for key, values in parse_qs(query, keep_blank_values=True).items():
        if key.startswith(BODY_PREFIX) and len(key) > len(BODY_PREFIX):
            try:
                body.append((key[len(BODY_PREFIX) :], json.loads(values[-1])))
            except json.JSONDecodeError:
                body.append((key[len(BODY_PREFIX) :], values[-1]))
            continue
        if key not in QUERY_KEYS:
            raise CGapsError(
                f"model {spec!r}: unknown option {key!r}.{did_you_mean(key, QUERY_KEYS)} Options: "
                f"{', '.join(QUERY_KEYS)}, or {BODY_PREFIX}NAME=VALUE for an extra request field"
            )
        value = values[-1]
        try:
            if key in ("concurrency", "retries"):
                opts[key] = int(value)
            elif key in ("rate", "timeout"):
                opts[key] = float(value)
            else:
                opts[key] = value
        except ValueError:
            raise CGapsError(f"model {spec!r}: option {key}={value!r} is not a number") from None
    ep = Endpoint(base_url=base + "/v1", model=model, body=tuple(body), **opts)
    if ep.concurrency < 1 or ep.retries < 0 or ep.timeout <= 0 or (ep.rate is not None and ep.rate <= 0):
        raise CGapsError(
            f"model {spec!r}: concurrency >= 1, retries >= 0, timeout > 0 and rate > 0 are needed"
        )
    return ep


class _RateLimit:
    """At most ``rate`` request starts per second across threads (None: no limit)."""

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate else 0.0
        self.next = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next)
            self.next = start + self.interval
        time.sleep(max(0.0, start - now))


class OpenAIGenerator:
    """:class:`cgaps.seams.Generator` for an OpenAI-compatible chat-completions server."""

    backend = "served"  # the server generates (cgaps.models.backends)
    generation_dtype: str | None = None  # whatever the server runs; not ours to say
    # the server refuses a prompt past its context whatever this says; nothing is cut here
    context_overflow = "truncate"
    prompts_truncated = 0

    def __init__(self, spec: str, *, seed: int = 0):
        self.endpoint = parse_endpoint(spec)
        self.name = f"{self.endpoint.model} @ {self.endpoint.base_url}"
        self.seed = seed
        key = os.environ.get(self.endpoint.key_env)
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = self._new_client()
        self._stop = threading.Event()  # set when one request failed: the others give up too
        self._limit = _RateLimit(self.endpoint.rate)
        # run.json model.evaluated_loaded (cgaps.models.loading.loaded_record): never the key itself
        self.loaded = {
            "argument": spec,
            "base_url": self.endpoint.base_url,
            "model": self.endpoint.model,
            "api_key_from": f"${self.endpoint.key_env}" if key else None,
            "decoding": {"temperature": 0.0, "top_p": 1.0, "seed": seed, **dict(self.endpoint.body)},
        }
        self.requests = 0  # sent, retries included (for throughput figures)

    def _new_client(self) -> Any:
        import httpx

        return httpx.Client(
            base_url=self.endpoint.base_url,
            headers=self._headers,
            timeout=httpx.Timeout(self.endpoint.timeout, connect=min(self.endpoint.timeout, CONNECT_TIMEOUT)),
            limits=httpx.Limits(max_connections=self.endpoint.concurrency),
        )

    def _post(self, route: str, payload: dict[str, Any]) -> dict[str, Any]:
        import httpx

        delay = 0.5
        start = time.monotonic()
        for attempt in range(self.endpoint.retries + 1):
            if self._stop.is_set():
                raise _Abandoned
            self._limit.wait()
            self.requests += 1
            try:
                r = self._client.post(route, json=payload)
            except httpx.TransportError as e:
                if self._stop.is_set():
                    raise _Abandoned from e
                if attempt == self.endpoint.retries:
                    raise CGapsError(
                        f"{self.endpoint.base_url}: no answer after {attempt + 1} attempts in "
                        f"{time.monotonic() - start:.0f} s ({type(e).__name__}: {' '.join(str(e).split())[:200]}); "
                        "is the server running? (resume with the same command once it is; ?timeout= and "
                        "?retries= set how long to wait)"
                    ) from e
            else:
                if r.status_code == 200:
                    data: dict[str, Any] = r.json()
                    return data
                if r.status_code not in RETRY_STATUS or attempt == self.endpoint.retries:
                    raise CGapsError(
                        f"{self.endpoint.base_url}{route}: HTTP {r.status_code} ({r.text.strip()[:200]}); "
                        f"check the model name {self.endpoint.model!r} and the key in ${self.endpoint.key_env}"
                    )
                retry_after = r.headers.get("retry-after")
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    delay = max(delay, float(retry_after))
            if self._stop.wait(delay):  # the backoff, cut short when another request failed
                raise _Abandoned
            delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    def _one(self, context: Messages | str, max_new_tokens: int) -> str:
        """A conversation through ``/chat/completions`` (the server applies its chat template); a
        plain string, to be read as it is, through ``/completions``."""
        greedy = {"max_tokens": max_new_tokens, "temperature": 0.0, "top_p": 1.0, "seed": self.seed}
        payload: dict[str, Any]
        path: tuple[str, ...]
        if isinstance(context, str):
            route, payload, path = "/completions", {"prompt": context}, ("text",)
        else:
            route, payload, path = "/chat/completions", {"messages": list(context)}, ("message", "content")
        body = {
            "model": self.endpoint.model,
            **payload,
            **greedy,
            **dict(self.endpoint.body),
            "stream": False,
        }
        data = self._post(route, body)
        try:
            content: Any = data["choices"][0]
            for key in path:
                content = content[key]
        except (KeyError, IndexError, TypeError) as e:
            raise CGapsError(
                f"{self.endpoint.base_url}{route}: an answer without choices[0].{'.'.join(path)} ({str(data)[:200]})"
            ) from e
        return "" if content is None else str(content)

    def generate(
        self,
        conversations: Sequence[Messages | str],
        max_new_tokens: int | Sequence[int],
        batch_size: int,
        progress: Progress | None = None,
    ) -> list[str]:
        """One greedy response per conversation, ``concurrency`` requests at a time, in order."""
        budgets = token_budgets(max_new_tokens, len(conversations))

        def task(i: int) -> str:
            out = self._one(conversations[i], budgets[i])
            if progress is not None:
                progress(1)
            return out

        self._stop.clear()
        with ThreadPoolExecutor(max_workers=self.endpoint.concurrency) as pool:
            futures = [pool.submit(task, i) for i in range(len(conversations))]
            try:
                wait(futures, return_when=FIRST_EXCEPTION)  # the first failure, wherever it is
                for f in futures:
                    error = f.exception() if f.done() else None
                    if error is not None:
                        raise error
                return [f.result() for f in futures]
            except BaseException:  # a failed request, or Ctrl-C: abandon the rest now
                self._abandon(futures)
                raise

    def _abandon(self, futures: list[Future[str]]) -> None:
        """Stop every other request: queued ones are cancelled, those waiting on the server end
        when their connections close, those in backoff at once. A new client serves later calls."""
        self._stop.set()
        for f in futures:
            f.cancel()
        self._client.close()
        self._client = self._new_client()

    def loglikelihood(
        self,
        requests: Sequence[tuple[Messages | str, str]],
        batch_size: int,
        progress: Progress | None = None,
    ) -> list[float]:
        raise CGapsError(
            f"model {self.name}: option log-likelihoods (mc_scoring loglik, loglik_choice items) need prompt "
            "log-probabilities, which a chat-completions server does not return; use --mc-scoring generate, "
            "or evaluate with lm-eval's local-completions model and `cgaps import lm-eval`"
        )

    def close(self) -> None:
        self._client.close()


class _Abandoned(Exception):
    """A request given up because another one failed (never reaches the user)."""
