"""Evidence labels: what a concept is, from the run itself, without a language model (docs/method.md §5).

Four kinds of evidence per concept, each a plain function of arrays so that the tests can check
it against a hand computation:

- **Distinctive words** (:func:`distinctive_tokens`). For every item where the concept is
  present (s ≥ τ·m_c, the presence rule of §2) extraction recorded the token where it peaked;
  it is counted as the whole word of the run's text it belongs to (:mod:`cgaps.labels.text`:
  "▁Ved" + "as" are both "Vedas", whatever the tokenizer). A word is distinctive when the
  concept peaks on it more often than the word's base rate among all analysed tokens of the
  run would give (a word of three tokens counts three times there: three chances to be the
  peak). The ranking is the log-odds ratio with an informative Dirichlet prior (Monroe,
  Colaresi & Quinn 2008, "Fightin' Words"): with y_w peaks of the concept on word w out of
  n, Y_w occurrences of w among the run's N analysed tokens, and a prior α_w = a0·Y_w/N
  (``prior`` = a0),

      δ_w = log((y_w+α_w)/(n+a0−y_w−α_w)) − log((Y_w+α_w)/(N+a0−Y_w−α_w)),
      σ²_w = 1/(y_w+α_w) + 1/(Y_w+α_w),   z_w = δ_w/σ_w.

  A word is distinctive when the concept peaked on it at least twice, z_w ≥ 1.96 (it is more
  frequent than its base rate, at the 5 % level) and δ_w ≥ ``min_log_odds`` (default 3: its odds
  among the concept's peaks are ≥ e³ ≈ 20 times its odds in the run); distinctive words are
  ranked by δ_w, the prior-shrunk log-odds ratio. A frequent word ("the") has a large Y_w, so
  it only qualifies when the concept peaks on it far more often than "the" occurs; raw
  frequency never decides, and a concept whose peaks merely follow the run's word mix has no
  distinctive word (its label then shows output tokens). Measured on the demo run: with
  ``min_log_odds`` 0 and ranking by z, "." or "to" came first for over 1 % of concepts each;
  with these rules each stop-word stays below 0.5 % (docs/results.md). A token that is no word
  (punctuation, a line break) is counted as itself, stripped of surrounding whitespace.
- **Top activating contexts**: ``contexts.parquet`` (written by extraction,
  :mod:`cgaps.extract.contexts`): the items of highest saliency with the firing token and the
  text around it.
- **Output tokens** (:func:`logit_lens`): the tokens the concept's decoder direction promotes,
  W_dec[c] · diag(g) · W_Uᵀ, with g the final norm's scale (what Neuronpedia shows as positive
  logits; the norm's own division is left out, as there). Only tokens that are words of the
  run's text are kept (:func:`word_outputs`): a vocabulary entry is often a word piece
  ("comprom") or a partial byte, which reads as noise.
- **Phrase** (:mod:`cgaps.labels.phrases`): the word window the concept's strongest
  activations share ("Answer with the day only").
- **Format** (:mod:`cgaps.labels.format`): whether the concept fires on prompt text that
  many items repeat verbatim (instructions, templates, answer formats).
- **Words of its items** (:func:`item_words`): the words the items where the concept is
  present hold far more often than the run's items do (a word-presence log-odds test): what
  they are about, from the text alone, where the items carry no metadata.
- **Metadata enrichment** (:func:`enrichment`): where the concept's thresholded, normalised
  saliency mass ŝ' falls among groups of items (each benchmark; each benchmark's categories;
  meta fields ``subject``, ``task``, ``family``), against the share of items in each group.
  Within a facet the group with the largest mass share is named; across facets, the one with
  the largest m·log(m/b) (mass share m, item share b: the information the group carries), so a
  suite of one benchmark names a category, not the benchmark. Significance: the hypergeometric
  probability of at least k of the concept's n present items falling in a group of K of the N
  items by chance.

:func:`compose_label` writes the provisional label from them, e.g.
``“Monday” “Friday” “Sunday” · probes:weekday 91%`` or
``format: “only” in “Answer with the day only” · probes:weekday 16%``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from cgaps import rundir
from cgaps.labels.format import format_label
from cgaps.labels.text import is_word, token_key

# Meta-JSON fields that name a group of items (a suite's subject, task or probe family).
ENRICH_META_KEYS = ("subject", "task", "family")
EVIDENCE_SOURCE = "evidence"
Z_MIN = 1.96  # a distinctive token is more frequent than its base rate at the 5 % level


# ---------------------------------------------------------------- distinctive tokens


def distinctive_tokens(
    peaks: pd.DataFrame, base: pd.Series, prior: float, k: int, min_log_odds: float = 3.0
) -> pd.DataFrame:
    """The ``k`` most distinctive tokens per concept (module docstring).

    ``peaks``: one row per (item, concept) where the concept is present, columns ``concept`` and
    ``token`` (a :func:`token_key`). ``base``: occurrences of each token key among the run's
    analysed tokens. Returns columns ``concept``, ``token``, ``count`` (y), ``z``, ranked by z
    (and ``delta``), the distinctive ones only, ranked by delta within each concept (ties by token).
    """
    if peaks.empty:
        return pd.DataFrame({"concept": [], "token": [], "count": [], "z": [], "delta": []})
    counts = peaks.groupby(["concept", "token"], sort=True).size().rename("count").reset_index()
    n = counts.groupby("concept")["count"].transform("sum").to_numpy(np.float64)
    y = counts["count"].to_numpy(np.float64)
    big_y = counts["token"].map(base).fillna(0).to_numpy(np.float64)
    big_y = np.maximum(big_y, y)  # a token the base rate missed counts at least its peaks
    big_n = float(max(base.sum(), big_y.max()))
    alpha = prior * big_y / big_n
    delta = np.log((y + alpha) / (n + prior - y - alpha)) - np.log(
        (big_y + alpha) / (big_n + prior - big_y - alpha)
    )
    z = delta / np.sqrt(1 / (y + alpha) + 1 / (big_y + alpha))
    counts["z"], counts["delta"] = z, delta
    counts = counts[(counts["count"] >= 2) & (counts["z"] >= Z_MIN) & (counts["delta"] >= min_log_odds)]
    counts = counts.sort_values(["concept", "delta", "token"], ascending=[True, False, True], kind="stable")
    return counts.groupby("concept", sort=False).head(k).reset_index(drop=True)


# ---------------------------------------------------------------- output tokens


def logit_lens(
    w_dec: Any, w_u: Any, norm_scale: Any | None, concepts: Sequence[int], k: int, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` vocabulary ids (and their logits) that each concept's decoder row promotes.

    ``w_dec`` [F, d], ``w_u`` [V, d] (the unembedding), ``norm_scale`` [d] or None; torch tensors.
    Computed ``chunk`` concepts at a time so a 64k-latent SAE never holds F x V logits.
    """
    import torch

    ids = np.zeros((len(concepts), k), dtype=np.int64)
    vals = np.zeros((len(concepts), k), dtype=np.float32)
    if not len(concepts) or k == 0:
        return ids, vals
    w_u = w_u.detach().float()
    scale = None if norm_scale is None else norm_scale.detach().float().to(w_u.device)
    idx = torch.as_tensor(np.asarray(concepts, dtype=np.int64))
    with torch.no_grad():
        for start in range(0, len(concepts), chunk):
            rows = w_dec[idx[start : start + chunk]].detach().float().to(w_u.device)
            if scale is not None:
                rows = rows * scale
            top = (rows @ w_u.T).topk(min(k, w_u.shape[0]), dim=1)
            ids[start : start + len(rows), : top.indices.shape[1]] = top.indices.cpu().numpy()
            vals[start : start + len(rows), : top.values.shape[1]] = top.values.cpu().numpy()
    return ids, vals


# ---------------------------------------------------------------- metadata enrichment


def item_groups(items: pd.DataFrame) -> dict[str, pd.Series]:
    """Facet name -> the group label of every item (None where an item has none).

    ``benchmark`` always; ``category`` and the :data:`ENRICH_META_KEYS` of the ``meta`` JSON as
    ``benchmark:value``. A facet that splits the items exactly like an earlier one is left out
    (a probe's ``family`` repeats its category), and so is a facet with no group at all (an
    imported table without a category mapping has an all-empty ``category`` column).
    """
    bench = items["benchmark"].astype(str).reset_index(drop=True)
    facets: dict[str, pd.Series] = {"benchmark": bench}
    if "category" in items.columns:
        cat = items["category"].reset_index(drop=True)
        facets["category"] = pd.Series(
            [
                f"{b}:{c}" if isinstance(c, str) and c.strip() else None
                for b, c in zip(bench, cat, strict=True)
            ]
        )
    if "meta" in items.columns:
        metas = [_meta(m) for m in items["meta"]]
        for key in ENRICH_META_KEYS:
            vals = [m.get(key) for m in metas]
            if any(isinstance(v, str) and v.strip() for v in vals):
                facets[key] = pd.Series(
                    [
                        f"{b}:{v}" if isinstance(v, str) and v.strip() else None
                        for b, v in zip(bench, vals, strict=True)
                    ]
                )
    kept: dict[str, pd.Series] = {}
    seen: list[np.ndarray] = []
    for name, groups in facets.items():
        if groups.isna().all():
            continue
        codes = pd.factorize(groups.fillna("\0"))[0]
        if any(len(codes) == len(s) and _same_partition(codes, s) for s in seen):
            continue
        seen.append(codes)
        kept[name] = groups
    return kept


def _meta(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str) and raw.strip():
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            return {}
        return data if isinstance(data, dict) else {}
    return {}


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = pd.DataFrame({"a": a, "b": b}).drop_duplicates()
    return bool(pairs["a"].is_unique and pairs["b"].is_unique)


def group_indicator(labels: pd.Series) -> tuple[sp.csr_matrix, pd.Index]:
    """The groups x items 0/1 matrix of one facet (``labels``, one group label per item, None for
    an item outside every group) and the group names, in order of first appearance. Its product
    with an items x concepts matrix sums each concept's column over each group; its row sums
    are the group sizes."""
    codes, names = pd.factorize(labels.reset_index(drop=True))  # None -> -1
    have = codes >= 0
    ind = sp.csr_matrix(
        (np.ones(int(have.sum())), (codes[have], np.flatnonzero(have))), shape=(len(names), len(codes))
    )
    return ind, names


ENRICH_COLUMNS = rundir.ENRICH_COLUMNS  # documented in cgaps.rundir.schemas


def enrichment(shat: sp.csr_matrix, groups: dict[str, pd.Series]) -> pd.DataFrame:
    """Where each concept's mass falls (module docstring): one row per concept (the columns of
    ``shat``, items x concepts, thresholded normalised saliency ŝ'), columns :data:`ENRICH_COLUMNS`
    (facet, group, mass share, item share, hypergeometric p); empty/NaN for a concept never present."""
    n_items, f = shat.shape
    present = (shat > 0).astype(np.float64).tocsc()
    shat_c = shat.tocsc()
    total = np.asarray(shat_c.sum(axis=0)).ravel()
    support = np.asarray(present.sum(axis=0)).ravel()
    best_info = np.full(f, -np.inf)
    out_facet = np.full(f, "", dtype=object)
    out_group = np.full(f, "", dtype=object)
    out_mass = np.full(f, np.nan)
    out_items = np.full(f, np.nan)
    out_p = np.full(f, np.nan)
    for facet, labels in groups.items():
        ind, names = group_indicator(labels)
        if not len(names):  # a facet with no group names nothing
            continue
        mass = np.asarray((ind @ shat_c).todense())  # groups x concepts
        hits = np.asarray((ind @ present).todense())
        sizes = np.asarray(ind.sum(axis=1)).ravel()
        with np.errstate(invalid="ignore", divide="ignore"):
            share = mass / total
        best = np.argmax(np.nan_to_num(share, nan=-1.0), axis=0)
        cols = np.arange(f)
        m = share[best, cols]
        b = sizes[best] / n_items
        with np.errstate(invalid="ignore", divide="ignore"):
            info = np.where(m > 0, m * np.log(m / b), -np.inf)
        better = (total > 0) & (info > best_info)
        if not better.any():
            continue
        k = hits[best, cols]
        p = stats.hypergeom.sf(k - 1, n_items, sizes[best], support)
        best_info[better] = info[better]
        out_facet[better] = facet
        out_group[better] = np.asarray(names, dtype=object)[best[better]]
        out_mass[better], out_items[better], out_p[better] = m[better], b[better], p[better]
    return pd.DataFrame(
        {
            "concept": np.arange(f, dtype=np.int32),
            "enrich_facet": out_facet,
            "enrich_group": out_group,
            "enrich_mass": out_mass,
            "enrich_items": out_items,
            "enrich_p": out_p,
        }
    )


def group_shares(
    shat: sp.csr_matrix, labels: pd.Series, cover: float = 0.8, top: int = 3
) -> list[list[list[Any]]]:
    """Per column of ``shat`` (items x columns), the groups of one facet (``labels``, one per
    item) holding its mass, largest first, until they hold ``cover`` of it or ``top`` are listed:
    ``[[group, mass share, item share], ...]``. What a single enriched group hides when a theme
    spreads over several (``date_add 35%, add_no_carry 31%, add_carry 29%``)."""
    n_items, f = shat.shape
    ind, names = group_indicator(labels)
    mass = np.asarray((ind @ shat.tocsc()).todense())  # groups x columns
    total = np.asarray(shat.sum(axis=0)).ravel()
    sizes = np.asarray(ind.sum(axis=1)).ravel() / max(n_items, 1)
    out: list[list[list[Any]]] = []
    for j in range(f):
        rows: list[list[Any]] = []
        if total[j] > 0:
            held = 0.0
            for g in np.argsort(-mass[:, j], kind="stable")[:top]:
                if mass[g, j] <= 0:
                    break
                share = float(mass[g, j] / total[j])
                rows.append([str(names[g]), share, float(sizes[g])])
                held += share
                if held >= cover:
                    break
        out.append(rows)
    return out


# ---------------------------------------------------------------- what the concept's items are about

ITEM_PRIOR = 10.0  # pseudo-items of the prior, spread by the run's rate of each word
ITEM_Z_MIN = 3.29  # one-sided p < 0.0005: thousands of words are tested per concept
ITEM_MIN = 3  # a word of the concept's items is held by at least three of them
ITEM_MAX_SHARE = 0.5  # a word most of the run's items hold says nothing about a subset's topic


def item_words(
    present: sp.spmatrix, docs: sp.spmatrix, words: Sequence[str], k: int, chunk: int = 256
) -> dict[int, list[list[Any]]]:
    """Per concept, the ``k`` words most typical of the items where it is present (module docstring).

    ``present``: items x concepts, nonzero where the concept is present; ``docs``: items x
    words, nonzero where the item's text holds the word (``words`` names the columns). With k_w
    of the concept's n items holding word w, K_w of the run's N items, and a prior of
    a0 = :data:`ITEM_PRIOR` pseudo-items at the run's rate (α = a0·K/N, β = a0 − α),

        δ_w = log((k_w+α)/(n−k_w+β)) − log((K_w+α)/(N−K_w+β)),
        σ²_w = 1/(k_w+α) + 1/(n−k_w+β) + 1/(K_w+α) + 1/(N−K_w+β),  z_w = δ_w/σ_w;

    a word is typical when k_w ≥ :data:`ITEM_MIN`, z_w ≥ :data:`ITEM_Z_MIN` and at most
    :data:`ITEM_MAX_SHARE` of the run's items hold it; ranked by δ_w (then the word).
    Returns ``{concept: [[word, k_w, z, δ], ...]}`` for concepts with any.
    """
    pres = sp.csc_matrix(present, dtype=np.float64)
    pres.data[:] = 1.0
    d = sp.csr_matrix(docs, dtype=np.float64)
    d.data[:] = 1.0
    n_items = pres.shape[0]
    big_k = np.asarray(d.sum(axis=0)).ravel()
    n_of = np.asarray(pres.sum(axis=0)).ravel()
    names = np.asarray(words, dtype=object)
    rank = np.empty(len(names), dtype=np.int64)  # each word's place in sorted order (ties of δ)
    rank[np.argsort(names, kind="stable")] = np.arange(len(names))
    out: dict[int, list[list[Any]]] = {}
    for start in range(0, pres.shape[1], chunk):
        counts = sp.coo_matrix(pres[:, start : start + chunk].T @ d)
        keep = (counts.data >= ITEM_MIN) & (big_k[counts.col] <= ITEM_MAX_SHARE * n_items)
        c, w, y = counts.row[keep], counts.col[keep], counts.data[keep]
        if not len(c):
            continue
        n = n_of[start + c]
        big = big_k[w]
        a = ITEM_PRIOR * big / n_items
        b = ITEM_PRIOR - a
        delta = np.log((y + a) / (n - y + b)) - np.log((big + a) / (n_items - big + b))
        z = delta / np.sqrt(1 / (y + a) + 1 / (n - y + b) + 1 / (big + a) + 1 / (n_items - big + b))
        ok = z >= ITEM_Z_MIN
        c, w, y, z, delta = c[ok] + start, w[ok], y[ok], z[ok], delta[ok]
        if not len(c):
            continue
        order = np.lexsort((rank[w], -delta, c))  # by concept, then δ, then the word
        c, w, y, z, delta = c[order], w[order], y[order], z[order], delta[order]
        firsts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
        for lo, hi in zip(firsts, np.r_[firsts[1:], len(c)], strict=True):
            out[int(c[lo])] = [
                [str(names[w[j]]), int(y[j]), round(float(z[j]), 3), round(float(delta[j]), 3)]
                for j in range(lo, min(hi, lo + k))
            ]
    return out


# ---------------------------------------------------------------- the provisional label


def quote(tokens: Sequence[str]) -> str:
    return " ".join(f"“{t}”" for t in tokens)


def word_outputs(outputs: Sequence[Sequence[Any]], vocabulary: set[str], k: int) -> list[list[Any]]:
    """The first ``k`` output tokens (decoded vocabulary entries with their logits, best first) that
    are words of the run's text (``vocabulary``), stripped of surrounding whitespace; each word once."""
    out: list[list[Any]] = []
    seen: set[str] = set()
    for tok, logit in outputs:
        word = tok.strip()
        if word in seen or not is_word(word) or word not in vocabulary:
            continue
        seen.add(word)
        out.append([word, logit])
        if len(out) == k:
            break
    return out


def compose_label(
    tokens: Sequence[str],
    outputs: Sequence[str],
    group: str,
    mass: float,
    p: float,
    enrich_p: float,
    phrase: str = "",
    is_format: bool = False,
    about: Sequence[str] = (),
) -> str:
    """``“Monday” “Friday” · probes:weekday 91%``: what the concept fires on — the top
    distinctive words with the phrase when it holds one of them (``“only” in “Answer with the
    day only”``; a phrase around other words would mislead), else the phrase alone — then
    what its items are about: the enriched group when its p is below ``enrich_p``, else the
    words typical of its items (``about``, :func:`item_words`: ``items: “Muslim” “Hindu”``).
    The output tokens (after an arrow) stand in for the first part when it has nothing;
    ``format: `` in front for a format concept."""
    head = ""
    shown = ""  # the phrase, when the label shows it
    if tokens:
        head = quote(tokens[:3])
        if phrase and any(_holds(phrase, t) for t in tokens[:3]):
            head, shown = f"{head} in “{phrase}”", phrase
    elif phrase:
        head, shown = f"“{phrase}”", phrase
    tail = ""
    if group and math.isfinite(p) and p < enrich_p and math.isfinite(mass):
        tail = f"{group} {100 * mass:.0f}%"
    else:
        fresh = [w for w in about if w not in tokens[:3] and not (shown and _holds(shown, w))][:3]
        if fresh:
            tail = "items: " + quote(fresh)
    if not head and outputs:
        head = "→ " + quote([token_key(t) for t in outputs[:3]])
    return format_label(" · ".join(x for x in (head, tail) if x), is_format)


def _holds(phrase: str, token: str) -> bool:
    """Whether ``phrase`` holds ``token``: as a whole word when it is one, else anywhere."""
    if not is_word(token):
        return token in phrase
    return re.search(rf"(?<!\w){re.escape(token)}(?!\w)", phrase) is not None
