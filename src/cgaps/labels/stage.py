"""The labels stage (``cgaps label RUN_DIR``): ``labels.parquet`` and ``themes.parquet``.

Reads the run directory (items, saliency, concepts, the extraction's shards) and writes:

- ``labels.parquet``, one row per concept: the required ``concept``, ``label``, ``source``
  (:data:`cgaps.rundir.LABEL_COLUMNS`), and the evidence of :mod:`cgaps.labels.evidence`
  (:data:`EVIDENCE_COLUMNS`) with the labels of other sources beside it (``imported_label``,
  ``llm_label``, ``llm_score``). ``label`` is the best available: imported, else an LLM label
  whose detection score beats chance, else the evidence label.
- ``themes.parquet`` (:mod:`cgaps.labels.themes`), carrying the scoring config of
  ``concepts.parquet`` in its schema metadata, so the report can tell a theme table made
  before a rescoring from a current one.

Provenance: run.json ``inputs.label`` records the item columns the evidence used with their
digest (:func:`cgaps.rundir.stage_record`) and an ``evidence`` fingerprint of everything else
it depends on (the extraction's record, the SAE's fingerprint, presence and the options). A
rerun reuses the evidence while that record matches, and always keeps the imported and LLM
labels already in the table: completed work is never lost. The evidence needs the reader
model's tokenizer and unembedding (:meth:`cgaps.seams.ResidualReader.unembed`) and the SAE's
decoder rows (:attr:`cgaps.seams.SAEEncoder.W_dec`), loaded here unless the caller (the
pipeline) passes them; a run whose saliency came from another tool (no ``sae`` in run.json)
gets enrichment and themes by co-activation only, and where it has ``contexts.parquet``, its
concepts without an evidence label are named by their top contexts
(:class:`cgaps.labels.top_contexts.TopContextLabels`). This stage is the only writer of
``labels.parquet``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cgaps import rundir
from cgaps.console import info
from cgaps.errors import CGapsError
from cgaps.labels import evidence, themes
from cgaps.labels import format as fmt
from cgaps.labels.config import LabelConfig
from cgaps.labels.phrases import PHRASE_ITEMS, phrase
from cgaps.labels.text import RunText, run_text
from cgaps.runtables import RunTables, load_run
from cgaps.scoring.core import SuiteMatrix, build_matrix
from cgaps.seams import ResidualReader, SAEEncoder

THEMES = themes.THEMES
EVIDENCE_COLUMNS = (
    "evidence_label",
    "tokens",  # JSON [[word, count, z, delta], ...], most distinctive first
    "output_tokens",  # JSON [[word, logit], ...]: logit-lens tokens that are words of the run's text
    "phrase",  # the word window the strongest activations share ('' when none)
    "format",  # bool: the concept fires on prompt text many items repeat verbatim
    "item_words",  # JSON [[word, items, z, delta], ...]: words typical of the items where it is present
    "format_share",  # the share of its ŝ' mass peaking on that text (NaN: no peak tokens)
    *evidence.ENRICH_COLUMNS,
)
OTHER_SOURCE_COLUMNS = ("imported_label", "imported_source", "llm_label", "llm_score")
# the required three, EVIDENCE_ and OTHER_SOURCE_COLUMNS, in the schema's order
LABELS_TABLE_COLUMNS = rundir.columns(rundir.LABELS)
LLM_MIN_SCORE = 0.5  # an LLM label replaces the evidence label only when detection beats chance


def label_run(
    run_dir: str | Path,
    options: LabelConfig | None = None,
    backend: ResidualReader | None = None,
    sae: SAEEncoder | None = None,
) -> pd.DataFrame:
    """Write labels.parquet and themes.parquet (module docstring); return the labels table.
    Holds the run directory's writer lock (:func:`cgaps.rundir.writing`)."""
    with rundir.writing(run_dir):
        return _label_run(Path(run_dir), options or LabelConfig(), backend, sae)


def _fingerprint(run: RunTables, opts: LabelConfig, presence: float) -> str:
    parts = {
        "extract": run.meta.get("inputs", {}).get("extract"),
        "sae": run.meta.get("sae", {}).get("fingerprint"),
        "presence": presence,
        "tokens": opts.tokens,
        "prior": opts.prior,
        "min_log_odds": opts.min_log_odds,
        "output_tokens": opts.output_tokens,
        "enrich_p": opts.enrich_p,
        "phrase_share": opts.phrase_share,
        "format_items": opts.format_items,
        "format_sentences": opts.format_sentences,
        "format_mass": opts.format_mass,
        "version": 5,  # bumped when the evidence rules change
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _evidence_is_current(run_dir: Path, run: RunTables, fingerprint: str) -> bool:
    recorded = run.meta.get("inputs", {}).get("label")
    if not isinstance(recorded, dict) or recorded.get("evidence") != fingerprint:
        return False
    if not rundir.stage_is_current(run_dir, "label", run.items, meta=run.meta):
        return False
    return run.labels is not None and all(c in run.labels.columns for c in EVIDENCE_COLUMNS)


def thresholded_matrix(run: RunTables) -> SuiteMatrix:
    """The run's suite matrix at its presence threshold and concept scale (as scoring built it)."""
    from cgaps.scoring.stage import concept_scale

    cfg = run.config()
    scale, _ = concept_scale(run, cfg)
    return build_matrix(run.items, run.saliency, run.n_concepts, presence=cfg.presence, scale=scale)


def _label_run(
    run_dir: Path, opts: LabelConfig, backend: ResidualReader | None, sae: SAEEncoder | None
) -> pd.DataFrame:
    t0 = time.perf_counter()
    run = load_run(run_dir, results=True)
    cfg = run.config()
    m = thresholded_matrix(run)
    shat = m.shat_matrix()
    groups = evidence.item_groups(run.items)
    fingerprint = _fingerprint(run, opts, cfg.presence)
    previous = run.labels
    if _evidence_is_current(run_dir, run, fingerprint):
        assert previous is not None
        ev = previous[["concept", *EVIDENCE_COLUMNS]].copy()
        tokens = _tokens_long(ev)
        info("labels: evidence is current, reusing it")
    else:
        if "sae" in run.meta:
            backend, sae = _load(run, backend, sae)
        ev, tokens = compute_evidence(run, m, shat, groups, opts, backend, sae)
    t1 = time.perf_counter()

    table = ev.copy()
    for col, value in carried_labels(previous, run.n_concepts).items():  # keep what other sources wrote
        table[col] = value
    if opts.labels_file:
        from cgaps.labels.imported import ImportedLabels

        source = ImportedLabels(opts.labels_file, **run_ids(run, opts))
        imported = source.labels(run.n_concepts)
        got = imported["source"] != ""
        table.loc[got.to_numpy(), "imported_label"] = imported.loc[got, "label"].to_numpy()
        table.loc[got.to_numpy(), "imported_source"] = source.name
        info(f"labels: imported {int(got.sum())} labels from {opts.labels_file}")
    if opts.labeler:
        from cgaps.labels.autointerp import AutoInterp

        llm = AutoInterp(run_dir, opts).run(run, m, table)
        for c, (label, score) in llm.items():
            table.loc[c, "llm_label"] = label
            table.loc[c, "llm_score"] = score
    table["label"], table["source"] = choose_labels(table)
    if "sae" not in run.meta and run.contexts is not None:  # no evidence from the reader
        table["label"], table["source"] = top_context_fallback(table, run.contexts, run.n_concepts)

    # the themes were made and tested by `cgaps score` (theme_tests.parquet); a run scored before
    # that file existed gets them now, by the same rule
    tests_path = run_dir / rundir.THEME_TESTS
    tests = (
        rundir.read_table(tests_path, "rerun `cgaps score RUN_DIR`")
        if tests_path.exists()
        else themes.scored_themes(m, cfg)
    )
    share = pd.to_numeric(table["format_share"], errors="coerce").to_numpy(np.float64)
    theme_table = themes.build_themes(m, tests, groups, tokens, opts.enrich_p, share, opts.format_mass)
    t2 = time.perf_counter()
    scoring_config = rundir.read_table_config(run_dir / rundir.CONCEPTS) or {}
    rundir.write_table(theme_table, run_dir / THEMES, scoring_config=scoring_config)
    table = table[list(LABELS_TABLE_COLUMNS)]
    table["llm_score"] = table["llm_score"].astype("float64")
    rundir.write_table(table, run_dir / rundir.LABELS)
    record = rundir.stage_record(run.items, "label", run_dir=run_dir, config=cfg.replace(label=opts))
    s = themes.summary(theme_table)
    rundir.update_run_json(
        run_dir,
        inputs={"label": {**record, "evidence": fingerprint}},
        config={"label": dataclasses.asdict(opts)},  # the run's config says what its labels were made with
        counts={
            "labels": {k: int(v) for k, v in table["source"].value_counts().items() if k},
            **s,
        },
        timings={"label_evidence_s": round(t1 - t0, 2), "label_themes_s": round(t2 - t1, 2)},
    )
    info(
        f"wrote {run_dir / rundir.LABELS} and {run_dir / THEMES}: {s['themes']} themes, "
        f"{s['themes_weak']} gap themes, {s['themes_strong']} strength themes"
    )
    return table


def carried_labels(previous: pd.DataFrame | None, n_concepts: int) -> dict[str, np.ndarray]:
    """The :data:`OTHER_SOURCE_COLUMNS` to keep from the labels table already in the run: its
    own columns when this stage wrote it, else (a table another tool or person wrote, with
    ``concept``, ``label``, ``source`` only) every label whose source is not provisional, as
    an imported label under its own source name."""
    from cgaps.labels.top_contexts import PROVISIONAL_SOURCES

    out = {c: np.full(n_concepts, "", dtype=object) for c in OTHER_SOURCE_COLUMNS if c != "llm_score"}
    out["llm_score"] = np.full(n_concepts, np.nan)
    if previous is None:
        return out
    concept = pd.to_numeric(previous["concept"], errors="coerce")
    ok = concept.notna() & (concept >= 0) & (concept < n_concepts)
    rows = previous[ok.to_numpy()]
    idx = concept[ok].astype(int).to_numpy()
    if "imported_label" in previous.columns:
        for col in OTHER_SOURCE_COLUMNS:
            if col in rows.columns:
                vals = rows[col].to_numpy()
                out[col][idx] = (
                    pd.to_numeric(vals, errors="coerce")
                    if col == "llm_score"
                    else ["" if not isinstance(v, str) else v for v in vals]
                )
        return out
    for c, label, source in zip(idx, rows["label"], rows["source"], strict=True):
        src = "" if not isinstance(source, str) else source
        if (
            isinstance(label, str)
            and label.strip()
            and src not in PROVISIONAL_SOURCES | {evidence.EVIDENCE_SOURCE}
        ):
            out["imported_label"][c], out["imported_source"][c] = label, src or "imported"
    return out


def choose_labels(table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Per concept the best label and its source: imported, else a good LLM label, else evidence;
    a format concept's label says so whatever its source (``format: ``, :mod:`cgaps.labels.format`)."""
    labels, sources = [], []
    is_format = table["format"] if "format" in table.columns else pd.Series(False, index=table.index)
    for imp, imp_src, llm, score, ev, form in zip(
        *(
            table[c]
            for c in ("imported_label", "imported_source", "llm_label", "llm_score", "evidence_label")
        ),
        is_format.fillna(False).astype(bool),
        strict=True,
    ):
        if isinstance(imp, str) and imp:
            labels.append(fmt.format_label(imp, form))
            sources.append(str(imp_src) or "imported")
        elif isinstance(llm, str) and llm and isinstance(score, float) and score > LLM_MIN_SCORE:
            labels.append(fmt.format_label(llm, form))
            sources.append("llm")
        elif isinstance(ev, str) and ev:
            labels.append(ev)
            sources.append(evidence.EVIDENCE_SOURCE)
        else:
            labels.append("")
            sources.append("")
    return labels, sources


def run_ids(run: RunTables, opts: LabelConfig) -> dict[str, str]:
    """The run's model and SAE ids as a label file must name them (cgaps.labels.imported)."""
    model = opts.neuronpedia_model or str(
        run.meta.get("model", {}).get("reader") or run.config().reader_model
    )
    sae = opts.neuronpedia_sae or str(run.meta.get("sae", {}).get("id") or run.config().sae)
    return {"model": model, "sae": sae}


def _load(
    run: RunTables, backend: ResidualReader | None, sae: SAEEncoder | None
) -> tuple[ResidualReader, SAEEncoder]:
    """The reader model (its tokenizer, unembedding and dimensions) and the SAE the run was
    extracted with, unless the caller passed them."""
    cfg = run.config()
    if backend is None:
        from cgaps.models import load_backend

        info(f"loading reader model {cfg.reader_model}")
        backend = load_backend(cfg.reader_model, cfg.device, cfg.dtype)
    if sae is None:
        from cgaps.sae import load_sae

        rec = run.meta.get("sae", {})
        assert backend is not None
        sae = load_sae(
            cfg.sae, hidden_size=backend.hidden_size, n_layers=backend.n_layers, layer=cfg.layer, device="cpu"
        )
        if rec.get("fingerprint") and sae.fingerprint != rec["fingerprint"]:
            raise CGapsError(
                f"{run.path / rundir.RUN_JSON}: the SAE {cfg.sae!r} has other weights than the run was "
                "extracted with (fingerprint differs); rerun `cgaps extract RUN_DIR` with it first"
            )
    return backend, sae


def decoder_rows(sae: SAEEncoder | None) -> np.ndarray | None:
    """W_dec [F, d] of a loaded SAE as float32 numpy (None when there is none)."""
    if sae is None:
        return None
    return sae.W_dec.detach().float().cpu().numpy()


def top_context_fallback(
    table: pd.DataFrame, contexts: pd.DataFrame, n_concepts: int
) -> tuple[list[str], list[str]]:
    """``label`` and ``source`` with every concept that has no label named by its top contexts
    (:class:`~cgaps.labels.top_contexts.TopContextLabels`), for a run without evidence from the reader."""
    from cgaps.labels.top_contexts import TopContextLabels

    top = TopContextLabels(contexts).labels(n_concepts)
    labels, sources = table["label"].tolist(), table["source"].tolist()
    for c, (label, source) in enumerate(zip(top["label"], top["source"], strict=True)):
        if not labels[c] and label:
            labels[c], sources[c] = label, source
    return labels, sources


# ---------------------------------------------------------------- evidence


def compute_evidence(
    run: RunTables,
    m: SuiteMatrix,
    shat: sp.csr_matrix,
    groups: dict[str, pd.Series],
    opts: LabelConfig,
    backend: ResidualReader | None,
    sae: SAEEncoder | None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The evidence columns for every concept, and the long table of distinctive words."""
    f = run.n_concepts
    enrich = evidence.enrichment(shat, groups)
    tokens = pd.DataFrame({"concept": [], "token": [], "count": [], "z": [], "delta": []})
    phrases = [""] * f
    about: dict[int, list[list[Any]]] = {}
    shares = np.full(f, np.nan)
    vocabulary: set[str] = set()
    if backend is not None:
        text, digests = read_run_text(run, backend.tokenizer)
        vocabulary = text.vocabulary()
        repeated = fmt.repeated_units(text.items, opts.format_items, opts.format_sentences)
        peaks = peak_words(run, m, shat, text, digests, repeated)
        tokens = evidence.distinctive_tokens(
            peaks.rename(columns={"word": "token"}), text.base(), opts.prior, opts.tokens, opts.min_log_odds
        )
        phrases = concept_phrases(peaks, text, f, opts.phrase_share)
        docs, words = text.documents(list(m.item_ids), skip=repeated)  # their own words, not the template's
        about = evidence.item_words(shat, docs, words, opts.tokens)
        if not peaks.empty:
            shares = fmt.format_shares(peaks, f)
    is_format = np.nan_to_num(shares, nan=0.0) >= opts.format_mass
    tok_lists: dict[int, list[list[Any]]] = {}
    for c, tok, n, z, d in tokens[["concept", "token", "count", "z", "delta"]].itertuples(index=False):
        tok_lists.setdefault(int(c), []).append([str(tok), int(n), round(float(z), 3), round(float(d), 3)])
    out_lists: dict[int, list[list[Any]]] = {}
    if backend is not None and sae is not None and opts.output_tokens > 0:
        # the concepts present somewhere in the run (a never-present concept gets no label)
        present = np.flatnonzero(np.diff(m.saliency.tocsc().indptr) > 0)
        # only entries that are words of the run's text; twice k, as " Monday" and "Monday" are one word
        ids = word_vocab_ids(backend.tokenizer, vocabulary)
        out_lists = {
            c: evidence.word_outputs(outs, vocabulary, opts.output_tokens)
            for c, outs in output_tokens(backend, sae, present, 2 * opts.output_tokens, ids).items()
        }
    labels = [
        evidence.compose_label(
            [t[0] for t in tok_lists.get(c, [])],
            [t[0] for t in out_lists.get(c, [])],
            group,
            mass,
            p,
            opts.enrich_p,
            phrase=phrases[c],
            is_format=bool(is_format[c]),
            about=[t[0] for t in about.get(c, [])],
        )
        for c, group, mass, p in enrich[["concept", "enrich_group", "enrich_mass", "enrich_p"]].itertuples(
            index=False
        )
    ]
    ev = pd.DataFrame(
        {
            "concept": np.arange(f, dtype=np.int32),
            "evidence_label": labels,
            "tokens": [json.dumps(tok_lists.get(c, []), ensure_ascii=False) for c in range(f)],
            "output_tokens": [json.dumps(out_lists.get(c, []), ensure_ascii=False) for c in range(f)],
            "phrase": phrases,
            "item_words": [json.dumps(about.get(c, []), ensure_ascii=False) for c in range(f)],
            "format": is_format,
            "format_share": shares,
        }
    )
    ev = ev.merge(enrich, on="concept", how="left")
    return ev, tokens


def word_vocab_ids(tokenizer: Any, vocabulary: set[str]) -> np.ndarray:
    """The reader's vocabulary entries that decode to a word of the run's text (surrounding
    whitespace aside): the only ones the logit lens may show (never a word piece or a byte)."""
    keep = [i for i in range(len(tokenizer)) if tokenizer.decode([i]).strip() in vocabulary]
    return np.asarray(keep, dtype=np.int64)


def _tokens_long(ev: pd.DataFrame) -> pd.DataFrame:
    rows = [
        (int(c), str(t[0]), int(t[1]), float(t[2]), float(t[3]))
        for c, raw in ev[["concept", "tokens"]].itertuples(index=False)
        for t in json.loads(raw or "[]")
    ]
    return pd.DataFrame(rows, columns=["concept", "token", "count", "z", "delta"])


def read_run_text(run: RunTables, tokenizer: Any) -> tuple[RunText, dict[str, str]]:
    """The run's analysed text in words (:mod:`cgaps.labels.text`): every item's conversation
    formatted and tokenised exactly as extraction did (:func:`cgaps.extract.stage.encode_items`),
    with the content spans of the run's ``span`` and which of them are the prompt; and each
    item's input digest (:func:`cgaps.extract.stage.input_digest`)."""
    from cgaps.extract.stage import encode_items, input_digest
    from cgaps.models import conversation, format_chat

    cfg = run.config()
    encoded = encode_items(run.items, tokenizer, cfg)
    rows = []
    for item, e in zip(run.items.to_dict("records"), encoded, strict=True):
        response = item.get("response") if cfg.span != "prompt" else None
        spans = format_chat(tokenizer, conversation(item), response if isinstance(response, str) else None)
        assert spans.text == e.text  # the same rendering as extraction's
        content = {
            "prompt": spans.prompt_spans,
            "response": spans.response_spans,
            "both": spans.prompt_spans + spans.response_spans,
        }[cfg.span]
        rows.append((e.item_id, e.text, content, spans.prompt_spans, e.offsets, e.mask))
    return run_text(rows), {e.item_id: input_digest(e) for e in encoded}


def peak_words(
    run: RunTables,
    m: SuiteMatrix,
    shat: sp.csr_matrix,
    text: RunText,
    digests: dict[str, str],
    repeated: dict[str, np.ndarray],
) -> pd.DataFrame:
    """The firing token of every present (item, concept), with its word.

    Columns ``item_id``, ``concept``, ``value`` (raw saliency), ``shat`` (ŝ'), ``start``,
    ``end`` (the token's characters), ``word``, ``unit`` (:meth:`cgaps.labels.text.ItemText.word_at`)
    and ``repeated`` (the token lies in repeated prompt text: ``repeated``, per item a bool per
    unit, :func:`cgaps.labels.format.repeated_units`).

    The tokens come from the extraction's shards (each row's peak character span), read for
    the items whose input digest (``digests``, :func:`read_run_text`) still matches the
    shards' sidecars; the text they index is the formatted conversation, rebuilt with the
    reader's tokenizer exactly as extraction built it.
    """
    shard_dir = run.path / rundir.SALIENCY_SHARDS
    current = rundir.stage_is_current(run.path, "extract", run.items, meta=run.meta)
    frames = []
    for side in sorted(shard_dir.glob("shard-*.json")) if shard_dir.is_dir() else []:
        meta = rundir.read_json_file(side, fix=f"delete {shard_dir} and rerun `cgaps extract RUN_DIR`")
        ids = meta.get("item_ids", [])
        if "digests" in meta:
            ok = {i for i, d in zip(ids, meta["digests"], strict=False) if digests.get(i) == d}
        else:  # sidecars written before digests: trust them while the extraction record is current
            ok = set(ids) if current is not False else set()
        parquet = side.with_suffix(".parquet")
        if ok and parquet.exists():
            df = pd.read_parquet(parquet, columns=["item_id", "concept", "value", "peak_start", "peak_end"])
            frames.append(df[df["item_id"].isin(ok)])
    columns = ["item_id", "concept", "value", "shat", "start", "end", "word", "unit", "repeated"]
    if not frames:
        info(f"labels: no extraction shards in {shard_dir}; distinctive words, phrases and format left out")
        return pd.DataFrame({c: [] for c in columns})
    peaks = pd.concat(frames, ignore_index=True).rename(columns={"peak_start": "start", "peak_end": "end"})
    # keep the present cells only (the thresholded matrix's nonzeros), with their ŝ'
    coo = shat.tocoo()
    present = pd.DataFrame(
        {"row": coo.row.astype(np.int64), "concept": coo.col.astype(np.int64), "shat": coo.data}
    )
    peaks["row"] = pd.Index(m.item_ids).get_indexer(peaks["item_id"].astype(str)).astype(np.int64)
    peaks["concept"] = peaks["concept"].astype(np.int64)
    peaks = peaks.merge(present, on=["row", "concept"], how="inner")
    tokens = text.tokens.copy()
    tokens["repeated"] = fmt.token_is_repeated(tokens, text.items, repeated)
    tokens = tokens.drop_duplicates(["item_id", "start", "end"])
    peaks[["start", "end"]] = peaks[["start", "end"]].astype(np.int64)
    peaks = peaks.merge(tokens, on=["item_id", "start", "end"], how="left")
    lost = peaks["word"].isna().to_numpy()
    if lost.any():  # a peak on a token the analysed mask leaves out (shards of another rule): its own word
        found = [
            text.items[i].word_at(int(a), int(b))
            for i, a, b in peaks.loc[lost, ["item_id", "start", "end"]].itertuples(index=False)
        ]
        peaks.loc[lost, "word"] = [w for w, _ in found]
        peaks.loc[lost, "unit"] = [u for _, u in found]
        peaks.loc[lost, "repeated"] = False
    peaks["unit"] = peaks["unit"].astype(np.int64)
    peaks["repeated"] = peaks["repeated"].astype(bool)
    return peaks[columns].reset_index(drop=True)


def concept_phrases(peaks: pd.DataFrame, text: RunText, n_concepts: int, share: float) -> list[str]:
    """Per concept its phrase (:func:`cgaps.labels.phrases.phrase`) over its strongest items."""
    out = [""] * n_concepts
    if peaks.empty:
        return out
    top = peaks.sort_values(["concept", "value", "item_id"], ascending=[True, False, True], kind="stable")
    concept = top["concept"].to_numpy(np.int64)
    items = [text.items[i] for i in top["item_id"].astype(str)]
    units = top["unit"].to_numpy(np.int64)
    firsts = np.flatnonzero(np.r_[True, concept[1:] != concept[:-1]])
    for lo, hi in zip(firsts, np.r_[firsts[1:], len(concept)], strict=True):
        hi = min(hi, lo + PHRASE_ITEMS)
        out[int(concept[lo])] = phrase([(items[j], int(units[j])) for j in range(lo, hi)], share)
    return out


def output_tokens(
    backend: ResidualReader,
    sae: SAEEncoder,
    concepts: np.ndarray,
    k: int,
    vocab_ids: np.ndarray | None = None,
) -> dict[int, list[list[Any]]]:
    """The logit lens of each concept's decoder row (cgaps.labels.evidence.logit_lens) through the
    reader's unembedding (:meth:`cgaps.seams.ResidualReader.unembed`), over the vocabulary
    entries ``vocab_ids`` only when given (:func:`word_vocab_ids`)."""
    import torch

    unembedding = backend.unembed()
    if unembedding is None:  # a reader without an LM head
        return {}
    scale, head = unembedding
    w_dec = torch.as_tensor(decoder_rows(sae))
    w_u = head if vocab_ids is None else head[torch.as_tensor(vocab_ids, dtype=torch.long)]
    ids, vals = evidence.logit_lens(w_dec, w_u, scale, concepts.tolist(), k)
    if vocab_ids is not None:
        ids = np.asarray(vocab_ids, dtype=np.int64)[ids]
    tok = backend.tokenizer
    vocab = {int(i): tok.decode([int(i)]) for i in np.unique(ids)}
    return {
        int(c): [[vocab[int(i)], round(float(v), 3)] for i, v in zip(ids[n], vals[n], strict=True)]
        for n, c in enumerate(concepts)
    }
