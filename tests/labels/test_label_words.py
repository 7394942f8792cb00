"""Labels in words and phrases, and format vs competency (issue 21; docs/method.md §5).

The word of a firing token is found in the text from the token's character span, so it must
be the same whole word whatever the tokenizer: checked here with real tokenizers of the three
families (GPT-2 byte-level BPE, SentencePiece-style Metaspace unigram, WordPiece) trained in
memory, against a plain reference that scans the text's words one by one.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cgaps import rundir
from cgaps.labels import evidence
from cgaps.labels import format as fmt
from cgaps.labels.phrases import phrase
from cgaps.labels.text import MAX_WORD_CHARS, item_text, run_text, token_key, word_in_context

CORPUS = [
    "The Vedas are sacred texts of Hinduism; the Holy Quran is sacred to Muslims.",
    "Answer with the day only. Give only the final number, in the form 'The answer is 42.'",
    "café naïve résumé 東京 🙂 don't it's 3.5 1,000 10:30 YYYY-MM-DD well-known",
] * 4


def _tokenizers():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    byte_level = Tokenizer(models.BPE())
    byte_level.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    byte_level.decoder = decoders.ByteLevel()
    byte_level.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
        ),
    )
    metaspace = Tokenizer(models.Unigram())
    metaspace.pre_tokenizer = pre_tokenizers.Metaspace()
    metaspace.train_from_iterator(
        CORPUS,
        trainers.UnigramTrainer(
            vocab_size=70, unk_token="<unk>", special_tokens=["<unk>"], show_progress=False
        ),
    )
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.train_from_iterator(
        CORPUS, trainers.WordPieceTrainer(vocab_size=90, special_tokens=["[UNK]"], show_progress=False)
    )
    return {"byte-level BPE": byte_level, "metaspace unigram": metaspace, "wordpiece": wordpiece}


def _reference_word(text: str, a: int, b: int) -> str:
    """Plain reference for ItemText.word_at: scan every word of the text, keep those that share a
    character with the token, join from the first's start to the last's end."""
    word = r"\w+(?:(?:['’]|(?<=\d)[.,:](?=\d))\w+)*"
    b = max(b, a + 1)
    hits = [m for m in re.finditer(word, text) if m.start() < b and m.end() > a]
    if not hits:
        return token_key(text[a:b])
    joined = text[hits[0].start() : hits[-1].end()]
    return joined if len(joined) <= MAX_WORD_CHARS else token_key(text[a:b])


@pytest.mark.parametrize("name", ["byte-level BPE", "metaspace unigram", "wordpiece"])
def test_a_token_is_shown_as_its_whole_word_whatever_the_tokenizer(name):
    tok = _tokenizers()[name]
    text = " ".join(CORPUS[:3])
    it = item_text(text, [(0, len(text))], [])
    enc = tok.encode(text)
    assert len(enc.tokens) > len(text.split())  # the tokenizer does split words into pieces
    words_of_text = set(re.findall(r"\w+(?:(?:['’]|(?<=\d)[.,:](?=\d))\w+)*", text))
    pieces = 0
    for a, b in enc.offsets:
        word, unit = it.word_at(a, b)
        assert word == _reference_word(text, a, b)
        assert "\ufffd" not in word and "Ġ" not in word and "▁" not in word and "##" not in word
        if re.search(r"\w", text[a:b]):
            assert word in words_of_text  # a whole word of the run's text, never a piece
            assert it.word[unit] and it.starts[unit] < max(b, a + 1) and it.ends[unit] > a
            pieces += word != text[a:b].strip()
    assert pieces > 5
    for key in ("Vedas", "café", "résumé", "don't", "3.5", "1,000", "10:30", "YYYY"):
        starts = [a for a, _ in enc.offsets]
        a = text.index(key) + len(key) - 1  # the token holding the word's last character
        k = max(i for i, s in enumerate(starts) if s <= a)
        assert it.word_at(*enc.offsets[k])[0] == key


def test_units_words_and_spans():
    text = "<s>Hi there!\nWrite 'abc' backwards.</s>The answer"
    prompt = (3, 35)
    response = (39, 49)
    it = item_text(text, [response, prompt], [prompt])
    assert it.units == ["Hi", "there", "!", "⏎", "Write", "'", "abc", "'", "backwards", ".", "The", "answer"]
    assert it.word.tolist() == [True, True, False, False, True, False, True, False, True, False, True, True]
    assert it.span.tolist() == [0] * 10 + [1, 1]
    assert it.prompt.tolist() == [True] * 10 + [False, False]
    assert it.word_at(0, 3) == ("<s>", -1)  # outside the content: the token itself
    assert it.word_at(3, 4) == ("Hi", 0)
    assert it.word_at(6, 7) == ("there", 1)  # a zero-width-looking piece inside a word
    assert word_in_context("the ", "Ved", "as say") == "Vedas"
    assert word_in_context("a", " ", "b") == "␣"
    long = "x" * (MAX_WORD_CHARS + 5)
    assert word_in_context("", "xx", long) == "xx"  # not a word: a run of 37 letters


def test_run_text_counts_a_word_once_per_token():
    text = "aa Vedas bb"
    offsets = [(0, 2), (2, 4), (4, 6), (6, 8), (8, 11)]  # " V", "ed", "as": one word in three tokens
    mask = np.array([False, True, True, True, True])
    rt = run_text([("i0", text, [(0, len(text))], [(0, len(text))], offsets, mask)])
    assert rt.tokens["word"].tolist() == ["Vedas", "Vedas", "Vedas", "bb"]
    assert rt.base().to_dict() == {"Vedas": 3, "bb": 1}
    assert rt.vocabulary() == {"aa", "Vedas", "bb"}
    docs, words = rt.documents(["i0", "missing"])
    assert sorted(words) == ["Vedas", "aa", "bb"] and docs.toarray().tolist()[1] == [0, 0, 0]
    docs, words = rt.documents(["i0"], skip={"i0": np.array([True, False, False])})
    assert words == ["Vedas", "bb"] or sorted(words) == ["Vedas", "bb"]


# ---------------------------------------------------------------- phrases


def _occ(texts, peak_words):
    """(ItemText, unit index of the peak word) per text, the peak word being the given one."""
    out = []
    for t, w in zip(texts, peak_words, strict=True):
        it = item_text(t, [(0, len(t))], [(0, len(t))])
        out.append((it, it.units.index(w)))
    return out


def test_phrase_grows_while_enough_items_share_the_window():
    texts = ["Today is Monday. Answer with the day only."] * 6 + [
        "Write it backwards. Answer with the reversed word only.",
        "Give only the final number, please.",
        "Give only the final number, please.",
    ]
    occ = _occ(texts, ["only"] * 9)
    assert phrase(occ, share=0.25) == "Answer with the day only"  # stops at the sentence's end
    # with the shared window below the share, the phrase is shorter or none
    assert phrase(occ, share=0.9) == ""
    # at most six words
    long = ["one two three four five six seven eight nine ten"] * 4
    assert phrase(_occ(long, ["five"] * 4), share=0.5) == "five six seven eight nine ten"
    # a comma ends a clause; a phrase has at least two words
    assert phrase(_occ(["Give only the final number, please."] * 3, ["only"] * 3), 0.5) == (
        "Give only the final number"
    )
    assert phrase(_occ(["Monday. Tuesday"] * 3, ["Monday"] * 3), 0.5) == ""


def test_phrase_from_a_peak_on_punctuation_grows_leftwards():
    texts = ["What is the date 5 days after 2024-04-09? Answer with the date only."] * 3
    it_occ = []
    for t in texts:
        it = item_text(t, [(0, len(t))], [])
        it_occ.append((it, it.units.index("?")))
    assert phrase(it_occ, 0.5) == "5 days after 2024-04-09"  # six words at most, leftwards from the "?"
    assert phrase([(it_occ[0][0], -1)] * 3, 0.5) == ""  # peaks outside every unit


def test_phrase_matches_a_plain_reference_on_random_texts():
    rng = np.random.default_rng(0)
    vocab = ["the", "day", "only", "answer", "with", "date", ",", ".", "x", "y"]
    for _ in range(100):
        texts = [
            " ".join(rng.choice(vocab, size=int(rng.integers(3, 12)))) for _ in range(int(rng.integers(2, 9)))
        ]
        occ = []
        for t in texts:
            it = item_text(t, [(0, len(t))], [])
            occ.append((it, int(rng.integers(-1, len(it)))))
        got = phrase(occ, 0.3)
        want = _reference_phrase([(list(it.units), u) for it, u in occ], 0.3)
        assert re.sub(r"\s+", " ", got) == want


def _reference_phrase(occ, share, max_words=6):
    """The rule of cgaps.labels.phrases spelled out on lists of unit strings."""
    import math

    ends = {".", "?", "!", ";", ",", ":", "⏎", "。", "？", "！", "，", "：", "；"}
    n = len(occ)
    need = max(2, math.ceil(share * n - 1e-9))
    occ = [(u, i) for u, i in occ if 0 <= i < len(u)]
    if len(occ) < need:
        return ""
    peak = [u[i] for u, i in occ]
    top = sorted(set(peak), key=lambda w: (-peak.count(w), peak.index(w)))[0]
    if peak.count(top) < need:
        return ""
    group = [(u, i) for u, i in occ if u[i] == top]
    left = right = 0
    words = 1 if re.fullmatch(r"\w+", top) else 0
    while True:
        options = []
        for step in (right + 1, -(left + 1)):
            if step > 0 and top in ends:
                continue
            seen = [u[i + step] for u, i in group if 0 <= i + step < len(u) and u[i + step] not in ends]
            if seen:
                best = sorted(set(seen), key=lambda w: (-seen.count(w), w))[0]
                options.append((seen.count(best), step, best))
        if not options:
            break
        count, step, text = max(options, key=lambda o: (o[0], o[1] > 0))
        if count < need:
            break
        taken = [(u, i) for u, i in group if 0 <= i + step < len(u) and u[i + step] == text]
        add = 1 if re.fullmatch(r"\w+", text) else 0
        if words + add > max_words:
            break
        group, words = taken, words + add
        right, left = (right + 1, left) if step > 0 else (right, left + 1)
    units, i = group[0]
    window = units[i - left : i + right + 1]
    while window and not re.fullmatch(r"\w+", window[0]):
        window = window[1:]
    while window and not re.fullmatch(r"\w+", window[-1]):
        window = window[:-1]
    if sum(1 for w in window if re.fullmatch(r"\w+", w)) < 2:
        return ""
    return " ".join(window)


# ---------------------------------------------------------------- format


def _items(prompts):
    return {f"i{k}": item_text(p, [(0, len(p))], [(0, len(p))]) for k, p in enumerate(prompts)}


def test_repeated_prompt_text():
    prompts = [
        f"What is {a} + {b}?\n\nGive only the final number." for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]
    ]
    prompts += ["Today is Monday. Answer with the day only.", "The Vedas are sacred texts."]
    items = _items(prompts)
    rep = fmt.repeated_units(items, share=0.5)  # 3 of 6 items
    it = items["i0"]
    marked = [u for u, r in zip(it.units, rep["i0"], strict=True) if r]
    # the instruction (and the line breaks before it) is repeated, and so is "What is" at the
    # prompt's start (three units with the start mark); the numbers are not
    assert marked == ["What", "is", "?", "⏎", "⏎", "Give", "only", "the", "final", "number", "."]
    assert not rep["i4"].any() and not rep["i5"].any()
    assert fmt.min_items(6, 0.5) == 3 and fmt.min_items(10, 0.1) == 3 and fmt.min_items(400, 0.1) == 40
    # a field label at a prompt's end is repeated through the end mark
    fields = _items([f"Question {k}\nAnswer:" for k in range(4)])
    rep = fmt.repeated_units(fields, share=0.5)
    assert [u for u, r in zip(fields["i0"].units, rep["i0"], strict=True) if r] == ["⏎", "Answer", ":"]
    # an option letter starts its line: "⏎ B )" is repeated though the text before it varies
    options = _items([f"Pick one.\nA) {k}\nB) {k + 1}" for k in range(4)] + ["B) is here", "no"])
    rep = fmt.repeated_units(options, share=0.5)
    assert [u for u, r in zip(options["i0"].units, rep["i0"], strict=True) if r] == [
        "Pick",
        "one",
        ".",
        "⏎",
        "A",
        ")",
        "⏎",
        "B",
        ")",
    ]
    assert not rep["i4"].any()  # "B)" at the start of a prompt: another line edge (the start mark)


def test_repeated_sentences():
    prompts = [
        f"Write the word '{w}' backwards. Answer with the reversed word only." for w in ("abc", "xyz", "ok")
    ]
    prompts += [f"What is {k} + 1? Today is Friday. Give only the final number." for k in range(3)]
    prompts += [f"{k} alone" for k in range(14)]  # 20 items: the n-gram rule needs 10 of them
    items = _items(prompts)
    assert not any(m.any() for m in fmt.repeated_units(items, share=0.5).values())
    rep = fmt.repeated_units(items, share=0.5, sentence_share=0.15)  # a sentence in 3 of 20 items
    marked = [u for u, r in zip(items["i0"].units, rep["i0"], strict=True) if r]
    assert marked == ["Answer", "with", "the", "reversed", "word", "only", "."]  # the slot sentence differs
    marked = [u for u, r in zip(items["i3"].units, rep["i3"], strict=True) if r]
    assert marked == ["Give", "only", "the", "final", "number", "."]  # "Today is Friday." has 3 words
    assert not rep["i6"].any()
    # a template whose slot takes few values: the template is repeated text, the slot is not
    slots = _items(
        [f"Which faith holds the {w} sacred?" for w in ("Vedas", "Quran", "Torah") * 3] + ["x y"] * 11
    )
    rep = fmt.repeated_units(slots, share=0.9, sentence_share=0.15)
    marked = [u for u, r in zip(slots["i0"].units, rep["i0"], strict=True) if r]
    assert marked == ["Which", "faith", "holds", "the", "sacred", "?"]


def test_token_is_repeated_and_format_shares():
    prompts = [f"What is {k}? Give only the final number." for k in range(4)]
    items = _items(prompts)
    rep = fmt.repeated_units(items, share=0.5)
    tokens = pd.DataFrame(
        {
            "item_id": ["i0", "i0", "i1", "i9", "i2"],
            "start": [len("What is 0? Give "), len("What is "), 0, 0, len("What is 2")],
            "end": [len("What is 0? Give on"), len("What is 0"), 4, 4, len("What is 2? ")],
        }
    )
    assert fmt.token_is_repeated(tokens, items, rep).tolist() == [True, False, True, False, True]
    peaks = pd.DataFrame(
        {
            "concept": [0, 0, 0, 1, 1, 3],
            "shat": [0.5, 0.3, 0.2, 1.0, 1.0, 0.4],
            "repeated": [True, True, False, False, False, True],
        }
    )
    shares = fmt.format_shares(peaks, 4)
    np.testing.assert_allclose(shares[[0, 1, 3]], [0.8, 0.0, 1.0])
    assert np.isnan(shares[2])
    # a theme: members' shares weighted by their mass, unknown shares left out
    assert fmt.theme_is_format([0, 1], shares, mass=np.array([3.0, 1.0, 0, 0]))  # (0.8*3 + 0)/4 = 0.6
    assert not fmt.theme_is_format([0, 1], shares)  # equal weights: 0.4
    assert fmt.theme_is_format([0, 2], shares) and not fmt.theme_is_format([2], shares)
    themes = pd.DataFrame({"theme": [0, 1], "label": ["“only”", "“Vedas”"], "members": ["[0, 1]", "[1, 2]"]})
    marked = fmt.mark_themes(themes, shares, np.array([3.0, 1.0, 1.0, 1.0]), 0.5)
    assert marked["format"].tolist() == [True, False] and marked["format"].dtype == bool
    assert marked["label"].tolist() == ["format: “only”", "“Vedas”"]
    assert fmt.format_label("“only”", True) == "format: “only”"
    assert (
        fmt.format_label("format: “only”", True) == "format: “only”" and fmt.format_label("x", False) == "x"
    )


def test_output_tokens_are_words_of_the_run():
    outs = [
        [" comprom", 9.0],
        ["ised", 8.0],
        [" Monday", 7.5],
        ["Monday", 7.0],
        ["\ufffd", 6.0],
        ["?", 5.0],
        [" day", 4.0],
    ]
    assert evidence.word_outputs(outs, {"Monday", "day", "compromised"}, k=3) == [
        ["Monday", 7.5],
        ["day", 4.0],
    ]


def _reference_item_words(present, docs, words, k):
    """Loop-by-loop item words (the formulas of evidence.item_words)."""
    import math

    n_items = present.shape[0]
    out = {}
    for c in range(present.shape[1]):
        mine = [x for x in range(n_items) if present[x, c]]
        rows = []
        for w, word in enumerate(words):
            big = sum(1 for x in range(n_items) if docs[x, w])
            y = sum(1 for x in mine if docs[x, w])
            if y < evidence.ITEM_MIN or big > evidence.ITEM_MAX_SHARE * n_items:
                continue
            n = len(mine)
            a = evidence.ITEM_PRIOR * big / n_items
            b = evidence.ITEM_PRIOR - a
            d = math.log((y + a) / (n - y + b)) - math.log((big + a) / (n_items - big + b))
            z = d / math.sqrt(1 / (y + a) + 1 / (n - y + b) + 1 / (big + a) + 1 / (n_items - big + b))
            if z >= evidence.ITEM_Z_MIN:
                rows.append((-d, word, y, z))
        if rows:
            out[c] = [(word, y, z, -nd) for nd, word, y, z in sorted(rows)[:k]]
    return out


def test_item_words_match_a_plain_reference():
    rng = np.random.default_rng(1)
    n_items, f = 80, 12
    words = [f"w{j}" for j in range(30)] + ["everywhere"]
    docs = rng.random((n_items, len(words))) < 0.15
    docs[:, -1] = rng.random(n_items) < 0.6  # a word of most items is never typical
    present = rng.random((n_items, f)) < 0.2
    present[:20, 0] = True  # concept 0: the items about w3
    present[20:, 0] = False
    docs[:20, 3] = True
    got = evidence.item_words(sp.csr_matrix(present), sp.csr_matrix(docs), words, k=4, chunk=5)
    ref = _reference_item_words(present, docs, words, 4)
    assert set(got) == set(ref) and 0 in got
    assert got[0][0][0] == "w3"
    for c, rows in ref.items():
        assert [r[0] for r in got[c]] == [r[0] for r in rows]
        assert [r[1] for r in got[c]] == [r[1] for r in rows]
        np.testing.assert_allclose([r[2] for r in got[c]], [r[2] for r in rows], atol=1e-3)
        np.testing.assert_allclose([r[3] for r in got[c]], [r[3] for r in rows], atol=1e-3)
    assert all(r[0] != "everywhere" for rows in got.values() for r in rows)


def test_compose_label_with_phrase_and_format():
    assert (
        evidence.compose_label(
            ["only"], [], "probes:weekday", 0.16, 1e-9, 1e-3, "Answer with the day only", True
        )
        == "format: “only” in “Answer with the day only” · probes:weekday 16%"
    )
    # a phrase around other words than the distinctive ones is left out of the label
    assert evidence.compose_label(["Friday"], [], "", np.nan, np.nan, 1e-3, "What is the date") == "“Friday”"
    # no distinctive word: the phrase, before the output tokens
    assert (
        evidence.compose_label([], ["craft"], "", np.nan, np.nan, 1e-3, "days after 2024")
        == "“days after 2024”"
    )
    assert evidence.compose_label([], ["craft"], "", np.nan, np.nan, 1e-3) == "→ “craft”"
    # without a significant metadata group: the words typical of its items, those not shown yet
    assert (
        evidence.compose_label(["Vedas"], [], "b", 1.0, 1.0, 1e-3, "", False, ["Vedas", "Hindu", "sacred"])
        == "“Vedas” · items: “Hindu” “sacred”"
    )
    assert (
        evidence.compose_label([], ["x"], "", np.nan, np.nan, 1e-3, about=["Muslim"])
        == "→ “x” · items: “Muslim”"
    )
    # punctuation is found inside words
    assert (
        evidence.compose_label(["-"], [], "", np.nan, np.nan, 1e-3, "as YYYY-MM-DD")
        == "“-” in “as YYYY-MM-DD”"
    )


# ---------------------------------------------------------------- the stage, end to end


class _Reader:
    """What the labels stage reads of a reader model here: its tokenizer (no unembedding)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer


def _planted_run(root, tokenizer):
    """A run of 3 families x 20 items; the shards' peaks are placed by hand on real token spans:
    concept 0 peaks on "only" of the shared instruction (format), concept 1 on religion words
    split into pieces, concept 2 on the weekday names of one family."""
    from cgaps.config import RunConfig
    from cgaps.extract.stage import encode_items, input_digest
    from cgaps.scoring.stage import score_run

    religions = ["Vedas", "Quran", "Torah", "Gospels"]
    days = ["Monday", "Tuesday", "Friday", "Sunday"]
    rows = []
    for k in range(60):
        fam = ("religion", "weekday", "sums")[k % 3]
        if fam == "religion":
            body = f"Which faith holds the {religions[k % 4]} sacred? Answer with the faith only."
        elif fam == "weekday":
            body = f"Today is {days[k % 4]}. What day is it in {k} days? Answer with the day only."
        else:
            body = f"What is {k} + {k + 3}? Give only the final number."
        rows.append(
            {
                "item_id": f"i{k:02d}",
                "benchmark": "b",
                "prompt": body,
                "reference": "r",
                "response": "It is.",
                "score": float(fam == "sums" or k % 7 == 0),
            }
        )
    items = pd.DataFrame(rows)
    cfg = RunConfig(presence=0.0, min_support=3)
    encoded = encode_items(items, tokenizer, cfg)
    shard = []
    for e, body in zip(encoded, items["prompt"], strict=True):
        start = e.text.index(body)

        def span(word, occurrence=0, e=e, body=body, start=start):
            at = start + [m.start() for m in re.finditer(rf"\b{word}\b", body)][occurrence]
            # the token holding the word's last character: a piece, not the whole word
            k = max(i for i, (a, b) in enumerate(e.offsets) if a <= at + len(word) - 1 and e.mask[i])
            return e.offsets[k]

        only = span("only")
        shard.append((e.item_id, 0, 1.0 + (len(body) % 5) / 10, *only))
        for word in religions:
            if re.search(rf"\b{word}\b", body):
                shard.append((e.item_id, 1, 2.0, *span(word)))
        for word in days:
            if re.search(rf"\b{word}\b", body):
                shard.append((e.item_id, 2, 2.0, *span(word)))
    df = pd.DataFrame(shard, columns=["item_id", "concept", "value", "peak_start", "peak_end"])
    root.mkdir(parents=True)
    rundir.write_json({"n_concepts": 4, "config": cfg.to_dict()}, root / rundir.RUN_JSON)
    items.to_parquet(root / rundir.ITEMS, index=False)
    df[["item_id", "concept", "value"]].to_parquet(root / rundir.SALIENCY, index=False)
    shards = root / rundir.SALIENCY_SHARDS
    shards.mkdir()
    df.to_parquet(shards / "shard-00000.parquet", index=False)
    sidecar = {"item_ids": [e.item_id for e in encoded], "digests": [input_digest(e) for e in encoded]}
    (shards / "shard-00000.json").write_text(json.dumps(sidecar))
    score_run(root)
    return root


def test_label_stage_writes_words_phrases_and_format(tmp_path):
    from cgaps.labels.config import LabelConfig
    from cgaps.labels.stage import label_run
    from helpers import embedded_tokenizer

    tok = embedded_tokenizer()
    run = _planted_run(tmp_path / "run", tok)
    table = label_run(run, LabelConfig(min_log_odds=1.0), backend=_Reader(tok)).set_index("concept")
    assert {"phrase", "format", "format_share"} <= set(table.columns)
    # "only" ends three instructions shared by every item: format, and its label says so
    assert bool(table.loc[0, "format"]) and table.loc[0, "format_share"] == 1.0
    assert table.loc[0, "label"].startswith("format: “only” in “")
    # religion words, each split by the tokenizer, are shown whole; not format
    words = [t[0] for t in json.loads(table.loc[1, "tokens"])]
    assert set(words) == {"Vedas", "Quran", "Torah", "Gospels"}
    assert not table.loc[1, "format"] and table.loc[1, "format_share"] == 0.0
    assert not table.loc[1, "label"].startswith("format")
    # no metadata group: the words its items share say what they are about, but never the
    # template's (here every word of the religion prompts but the slot is template)
    about = {c: [t[0] for t in json.loads(table.loc[c, "item_words"])] for c in range(4)}
    assert about[1] == [] and "items:" not in table.loc[1, "label"]
    assert about[2] == [] and about[3] == []
    # the sums items' own words (the numbers vary) are theirs: concept 0 peaks on every item, so none
    # the weekday concept: its phrase is the window a quarter of its items share (one day's items)
    assert re.fullmatch(r"Today is (Monday|Tuesday|Friday|Sunday)", table.loc[2, "phrase"])
    assert not table.loc[2, "format"] and table.loc[2, "label"].startswith("“")
    assert (
        table.loc[3, "label"] == ""
        and table.loc[3, "phrase"] == ""
        and np.isnan(table.loc[3, "format_share"])
    )
    theme_table = pd.read_parquet(run / rundir.THEMES)
    assert theme_table["format"].dtype == bool
    stored = pd.read_parquet(run / rundir.LABELS)
    assert stored["format"].dtype == bool and stored["phrase"].map(type).eq(str).all()
    # an imported label of a format concept says so too
    labels_file = tmp_path / "l.csv"
    pd.DataFrame({"concept": [0, 1], "label": ["the word only", "scriptures"]}).to_csv(
        labels_file, index=False
    )
    again = label_run(run, LabelConfig(min_log_odds=1.0, labels_file=str(labels_file)), backend=_Reader(tok))
    assert again.set_index("concept").loc[[0, 1], "label"].tolist() == ["format: the word only", "scriptures"]


def test_every_present_peak_gets_one_word(tmp_path):
    """Each present (item, concept) of the run gets exactly one word: the peaks table loses none."""
    from cgaps.labels.stage import peak_words, read_run_text, thresholded_matrix
    from cgaps.runtables import load_run
    from helpers import embedded_tokenizer

    tok = embedded_tokenizer()
    run_dir = _planted_run(tmp_path / "run", tok)
    run = load_run(run_dir, results=True)
    m = thresholded_matrix(run)
    text, digests = read_run_text(run, tok)
    peaks = peak_words(run, m, m.shat_matrix(), text, digests, fmt.repeated_units(text.items, 0.1))
    assert len(peaks) == sp.csr_matrix(m.saliency).nnz
    assert peaks["word"].notna().all() and (peaks["unit"] >= 0).all()
    vocab = text.vocabulary()
    assert set(peaks["word"]) <= vocab
