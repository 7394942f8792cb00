"""LLM labels (auto-interp) behind any OpenAI-compatible chat endpoint (docs/method.md §5).

vLLM, llama.cpp's server, Ollama, TGI and hosted APIs all answer ``POST {base}/chat/completions``;
that one request, sent with httpx, is the whole client (no SDK). Per concept, two requests:

1. **Explain.** The concept's activating contexts (its top contexts of even rank, firing token
   marked ``<<like this>>``), three items where it is absent, and its metadata enrichment; the
   model answers with a short label.
2. **Detect.** The label and a shuffled mix of held-out texts: the top contexts of odd rank
   (activating) and as many other items where the concept is absent; the model answers with
   the numbers of the texts it thinks activate the concept. The label's score is the balanced
   accuracy of that answer, (TPR + TNR) / 2, as in EleutherAI's automated interpretability work
   (Paulo et al. 2024, "detection" scoring): 0.5 is chance.

**Which concepts**: up to ``llm_concepts``, gaps first (by q in ALL), then strengths, then the
rest by support (a large run has far more concepts than are worth a request).

**Cache and resume.** Each finished concept is appended to ``labels_llm_cache.jsonl`` in the
run directory, keyed by (concept, the hash of the explain prompt and model name); a rerun
sends no request for a key already there, so an interrupted run resumes and a changed prompt
(other contexts, another model) is asked again. **Rate limit and retries**: requests are spaced
at least 1 / ``llm_rate`` seconds apart; a connection error, a 429 or a 5xx is retried
``llm_retries`` times with exponential backoff (0.5 s, 1 s, 2 s...); then the stage stops with
a one-line error, keeping the concepts already cached. **Timeouts**: each attempt waits at most
``llm_timeout`` seconds for the reply (:data:`CONNECT_TIMEOUT` of them for the connection), so a
labeler that never answers is an error after at most ``(llm_retries + 1) x llm_timeout`` seconds
plus the backoff; nothing listening, after the backoff alone (~7.5 s with the defaults). The API key is read from the
environment variable ``api_key_env`` names, never from the command line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cgaps import rundir
from cgaps.console import info, progress_bar
from cgaps.errors import CGapsError
from cgaps.labels.config import LabelConfig
from cgaps.runtables import RunTables
from cgaps.scoring.core import SuiteMatrix

CACHE = rundir.LABELS_LLM_CACHE
CONNECT_TIMEOUT = 10.0  # seconds to wait for a TCP connection to the labeler
SNIPPET = 160  # characters of an absent item's prompt shown
N_ABSENT_EXPLAIN = 3
EXPLAIN_SYSTEM = (
    "You label features of a language model. A feature fires on some tokens of some texts. "
    "From the examples, say in at most eight words what the feature responds to. "
    "Answer with the label only."
)
DETECT_SYSTEM = (
    "You test a label of a language-model feature. Given the label and numbered texts, list the "
    "numbers of the texts on which the feature fires. Answer with the numbers only, comma-separated, "
    "or 'none'."
)


class ChatClient:
    """``POST {base}/chat/completions`` with rate limiting and retries (module docstring)."""

    def __init__(self, base: str, model: str, opts: LabelConfig, api_key: str | None = None):
        import httpx

        self.url = base.rstrip("/") + "/chat/completions"
        self.model = model
        self.opts = opts
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # a host that drops packets gets CONNECT_TIMEOUT seconds, not the whole reply timeout
        timeout = httpx.Timeout(opts.llm_timeout, connect=min(opts.llm_timeout, CONNECT_TIMEOUT))
        self.client = httpx.Client(timeout=timeout, headers=headers)
        self.last = 0.0
        self.requests = 0

    def chat(self, messages: list[dict[str, str]], max_tokens: int = 48) -> str:
        import httpx

        body = {"model": self.model, "messages": messages, "temperature": 0.0, "max_tokens": max_tokens}
        error = ""
        start = time.monotonic()
        for attempt in range(self.opts.llm_retries + 1):
            wait = self.last + 1.0 / self.opts.llm_rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.last = time.monotonic()
            self.requests += 1
            try:
                reply = self.client.post(self.url, json=body)
            except httpx.HTTPError as e:
                error = f"{type(e).__name__}: {e}"
            else:
                if reply.status_code == 200:
                    try:
                        return str(reply.json()["choices"][0]["message"]["content"] or "")
                    except (ValueError, KeyError, IndexError, TypeError) as e:
                        raise CGapsError(
                            f"{self.url}: the reply is not an OpenAI chat completion ({e}); "
                            "point --labeler at the endpoint's /v1 base"
                        ) from e
                error = f"HTTP {reply.status_code}: {reply.text[:200]}"
                if reply.status_code not in (408, 429) and reply.status_code < 500:
                    break  # a client error does not get better by retrying
            if attempt < self.opts.llm_retries:
                time.sleep(0.5 * 2**attempt)
        raise CGapsError(
            f"{self.url}: labeler request failed after {attempt + 1} attempt(s) in "
            f"{time.monotonic() - start:.0f} s ({' '.join(error.split())[:300]}); the concepts done so far "
            f"are cached in {CACHE}: rerun to resume (--llm-timeout and --llm-retries set how long to wait)"
        )


def _context_text(left: Any, token: Any, right: Any) -> str:
    def s(x: Any) -> str:
        return "" if not isinstance(x, str) else x

    return " ".join(f"{s(left)[-SNIPPET:]}<<{s(token)}>>{s(right)[:SNIPPET]}".split())


def parse_numbers(answer: str, n: int) -> set[int]:
    """The text numbers 1..n named in a detection answer (anything else is ignored)."""
    return {int(x) for x in re.findall(r"\d+", answer) if 1 <= int(x) <= n}


def balanced_accuracy(predicted: set[int], positives: set[int], n: int) -> float:
    """(TPR + TNR) / 2 of a predicted set of text numbers against the activating ones."""
    negatives = set(range(1, n + 1)) - positives
    tpr = len(predicted & positives) / len(positives) if positives else 0.0
    tnr = len(negatives - predicted) / len(negatives) if negatives else 0.0
    return (tpr + tnr) / 2


def choose_concepts(concepts: pd.DataFrame, k: int) -> list[int]:
    """Gaps by q, then strengths by q, then the rest by support (the ALL scope)."""
    a = concepts[(concepts["scope"] == rundir.ALL_SCOPE) & (concepts["support"] > 0)]
    a = a.assign(call=a["gap"].map({"weak": 0, "strong": 1}).fillna(2), q=a["q_value"].fillna(2.0))
    a = a.sort_values(["call", "q", "support", "concept"], ascending=[True, True, False, True], kind="stable")
    return [int(c) for c in a["concept"].head(k)]


class AutoInterp:
    """Labels and detection scores for the chosen concepts of a run (module docstring)."""

    def __init__(self, run_dir: Path, opts: LabelConfig):
        assert opts.labeler and opts.labeler_model
        key = None
        if opts.api_key_env:
            key = os.environ.get(opts.api_key_env)
            if not key:
                raise CGapsError(
                    f"label option 'api_key_env': environment variable {opts.api_key_env!r} is not set; "
                    "export it with the labeler's API key"
                )
        self.run_dir = run_dir
        self.opts = opts
        self.client = ChatClient(opts.labeler, opts.labeler_model, opts, key)
        self.cache_path = run_dir / CACHE

    def _cache(self) -> dict[tuple[int, str], dict[str, Any]]:
        out: dict[tuple[int, str], dict[str, Any]] = {}
        if not self.cache_path.exists():
            return out
        for line in self.cache_path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
                out[(int(rec["concept"]), str(rec["prompt_hash"]))] = rec
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a line cut by a kill: that concept is asked again
        return out

    def prompts(
        self, run: RunTables, m: SuiteMatrix, table: pd.DataFrame, concept: int
    ) -> dict[str, Any] | None:
        """The explain messages and the detection texts of one concept (None without contexts)."""
        if run.contexts is None:
            return None
        ctx = run.contexts[run.contexts["concept"] == concept].sort_values("rank")
        texts = [_context_text(r.left, r.token, r.right) for r in ctx.itertuples(index=False)]
        if len(texts) < 2:
            return None
        explain, held = texts[0::2], texts[1::2]
        present = set(m.item_ids[m.saliency[:, concept].nonzero()[0]])
        absent = [i for i in run.items["item_id"] if i not in present]
        rng = np.random.default_rng([run.config().seed, concept])
        picks = [absent[i] for i in rng.permutation(len(absent))[: N_ABSENT_EXPLAIN + len(held)]]
        prompts = run.items.set_index("item_id")["prompt"]
        absent_texts = [" ".join(str(prompts[i])[:SNIPPET].split()) for i in picks]
        row = table.loc[concept]
        enrich = ""
        if isinstance(row.get("enrich_group"), str) and row["enrich_group"]:
            enrich = (
                f"\n{100 * float(row['enrich_mass']):.0f}% of its activation falls on {row['enrich_group']} items "
                f"({100 * float(row['enrich_items']):.0f}% of all items)."
            )
        user = (
            "Texts where the feature fires (the strongest token in <<>>):\n"
            + "\n".join(f"- {t}" for t in explain)
            + "\nTexts where it does not fire:\n"
            + "\n".join(f"- {t}" for t in absent_texts[:N_ABSENT_EXPLAIN])
            + enrich
            + "\nLabel:"
        )
        messages = [{"role": "system", "content": EXPLAIN_SYSTEM}, {"role": "user", "content": user}]
        # held-out texts without the marker: the labeler must find the concept itself
        positives = [t.replace("<<", "").replace(">>", "") for t in held]
        negatives = absent_texts[N_ABSENT_EXPLAIN:][: len(positives)]
        order = rng.permutation(len(positives) + len(negatives))
        mixed = [(positives + negatives)[i] for i in order]
        is_pos = {n + 1 for n, i in enumerate(order) if i < len(positives)}
        digest = hashlib.sha256(
            json.dumps([self.opts.labeler_model, messages, mixed, DETECT_SYSTEM]).encode()
        ).hexdigest()[:16]
        return {"messages": messages, "texts": mixed, "positives": is_pos, "hash": digest}

    def run(self, run: RunTables, m: SuiteMatrix, table: pd.DataFrame) -> dict[int, tuple[str, float]]:
        cache = self._cache()
        chosen = choose_concepts(
            run.concepts if run.concepts is not None else pd.DataFrame(), self.opts.llm_concepts
        )
        out: dict[int, tuple[str, float]] = {}
        asked = 0
        with progress_bar(
            f"labelling with {self.opts.labeler_model}", len(chosen), unit="concepts"
        ) as advance:
            for c in chosen:
                p = self.prompts(run, m, table, c)
                if p is None:
                    advance(1)
                    continue
                hit = cache.get((c, p["hash"]))
                if hit is None:
                    label = " ".join(self.client.chat(p["messages"]).split())[:200].strip(" \"'")
                    listing = "\n".join(f"{n + 1}. {t}" for n, t in enumerate(p["texts"]))
                    answer = self.client.chat(
                        [
                            {"role": "system", "content": DETECT_SYSTEM},
                            {"role": "user", "content": f"Label: {label}\nTexts:\n{listing}\nNumbers:"},
                        ],
                        max_tokens=32,
                    )
                    score = balanced_accuracy(
                        parse_numbers(answer, len(p["texts"])), p["positives"], len(p["texts"])
                    )
                    hit = {
                        "concept": c,
                        "prompt_hash": p["hash"],
                        "label": label,
                        "score": score,
                        "answer": answer,
                    }
                    # one finished concept per line; an OS error (a full disk) names the file
                    with (
                        rundir.naming_errors(self.cache_path),
                        self.cache_path.open("a", encoding="utf-8") as fh,
                    ):
                        fh.write(json.dumps(hit, ensure_ascii=False) + "\n")
                    asked += 1
                out[c] = (str(hit["label"]), float(hit["score"]))
                advance(1)
        info(f"labels: {len(out)} LLM labels ({asked} asked now, {len(out) - asked} from {CACHE})")
        return out
