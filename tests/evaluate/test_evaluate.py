"""Evaluation stage logic with a fake backend: routing, grading, resuming, log-likelihood choice."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.errors import CGapsError
from cgaps.evaluate.stage import evaluate_run
from helpers import FakeGenerator


class FakeBackend(FakeGenerator):
    """Answers from a lookup table; prefers the option whose text is longest."""

    name = "fake"
    n_layers = 2
    hidden_size = 8

    def __init__(self, answers: dict[str, str]):
        self.answers = answers
        self.generated: list[str] = []
        self.loglik_requests = 0

    def generate(self, conversations, max_new_tokens, batch_size, progress=None):
        out = []
        for msgs in conversations:
            text = msgs[-1]["content"]
            self.generated.append(text)
            out.append(self.answers.get(text, "I don't know"))
        if progress:
            progress(len(conversations))
        return out

    def loglikelihood(self, requests, batch_size, progress=None):
        self.loglik_requests += len(requests)
        return [float(len(cont)) for _, cont in requests]


ITEMS = pd.DataFrame(
    {
        "item_id": [f"i{n}" for n in range(6)],
        "benchmark": ["arith"] * 3 + ["mc"] * 3,
        "prompt": ["1+1?", "2+2?", "3+3?", "Pick one", "Pick two", "Which sentence?"],
        "reference": ["2", "4", "6", "B", "A", "B"],
        "answer_type": ["number", "number", "number", "choice", "choice", "loglik_choice"],
        "choices": [
            None,
            None,
            None,
            json.dumps(["no", "yes!"]),
            json.dumps(["long option", "x"]),
            json.dumps(["short", "the longer one"]),
        ],
    }
)


@pytest.fixture
def run_dir(tmp_path):
    rundir.write_table(ITEMS, tmp_path / rundir.ITEMS)
    return tmp_path


def test_generation_batch_is_its_own_config_field(run_dir):
    """generate_batch_size sizes generation calls only; log-likelihoods (and extraction) keep batch_size."""
    seen: dict[str, list[tuple[int, int]]] = {"generate": [], "loglik": []}

    class Recording(FakeBackend):
        def generate(self, conversations, max_new_tokens, batch_size, progress=None):
            seen["generate"].append((len(conversations), batch_size))
            return super().generate(conversations, max_new_tokens, batch_size, progress)

        def loglikelihood(self, requests, batch_size, progress=None):
            seen["loglik"].append((len(requests), batch_size))
            return super().loglikelihood(requests, batch_size, progress)

    items = pd.concat([ITEMS.assign(item_id=ITEMS["item_id"] + f"_{k}") for k in range(4)], ignore_index=True)
    rundir.write_table(items, run_dir / rundir.ITEMS)
    evaluate_run(run_dir, RunConfig(batch_size=1, generate_batch_size=3), Recording({}))
    assert {b for _, b in seen["generate"]} == {3} and {b for _, b in seen["loglik"]} == {1}
    # chunks of generation_batch x 2 prompts per new-token budget (the resume granularity)
    assert max(n for n, _ in seen["generate"]) == 6
    assert RunConfig(batch_size=4).generation_batch == 4
    with pytest.raises(CGapsError, match="generate_batch_size"):
        RunConfig(generate_batch_size=0)


def test_generate_and_grade(run_dir):
    backend = FakeBackend(
        {"1+1?": "The answer is 2.", "2+2?": "5", "3+3?": "#### 6", "Pick one": "(b)", "Pick two": "B"}
    )
    items = evaluate_run(run_dir, RunConfig(batch_size=2), backend)
    assert items.set_index("item_id")["score"].to_dict() == {
        "i0": 1.0,
        "i1": 0.0,
        "i2": 1.0,
        "i3": 1.0,
        "i4": 0.0,
        "i5": 1.0,
    }
    # the loglik_choice item is never generated; its response names the chosen option
    assert "Which sentence?" not in backend.generated
    assert items.set_index("item_id").loc["i5", "response"] == "B) the longer one"
    stored = rundir.read_items(run_dir, scored=True)
    assert stored["score"].tolist() == items["score"].tolist()
    assert not (run_dir / rundir.RESPONSES_PARTIAL).exists()
    meta = rundir.read_run_json(run_dir)
    assert meta["accuracy"]["arith"] == {"n": 3, "mean": pytest.approx(2 / 3)}


def test_mc_scoring_loglik_routes_every_choice_item(run_dir):
    backend = FakeBackend({})
    items = evaluate_run(run_dir, RunConfig(mc_scoring="loglik"), backend).set_index("item_id")
    assert backend.loglik_requests == 6
    assert items.loc["i3", "response"] == "B) yes!" and items.loc["i3", "score"] == 1.0
    assert items.loc["i4", "response"] == "A) long option" and items.loc["i4", "score"] == 1.0


def _record(n: int, response: str, items: pd.DataFrame = ITEMS) -> str:
    """One resume-file line for item i<n> of ``items``, with its content digest."""
    from cgaps.evaluate.evaluator import item_digest

    digest = item_digest(items.to_dict("records")[n])
    return json.dumps({"item_id": f"i{n}", "response": response, "digest": digest})


def test_resume_uses_partial_responses(run_dir):
    with (run_dir / rundir.RESPONSES_PARTIAL).open("w") as f:
        f.write(_record(0, "2") + "\n")
        f.write(_record(1, "4") + "\n")
        f.write('{"item_id": "i2", "resp')  # cut short by a crash
    backend = FakeBackend({"3+3?": "6"})
    items = evaluate_run(run_dir, RunConfig(), backend)
    assert sorted(backend.generated) == ["3+3?", "Pick one", "Pick two"]
    assert items["score"].tolist()[:3] == [1.0, 1.0, 1.0]


def test_resume_redoes_responses_of_changed_items(run_dir, capsys):
    # an interrupted evaluation, then new items under the same ids (`cgaps items ... --out RUN_DIR`)
    with (run_dir / rundir.RESPONSES_PARTIAL).open("w") as f:
        f.write(_record(0, "2") + "\n")  # i0 unchanged: reused
        f.write(_record(1, "4") + "\n")  # i1's prompt changes below: its answer must not be reused
        f.write(_record(3, "B") + "\n")  # i3's choices change below
    new = ITEMS.copy()
    new.loc[1, "prompt"] = "7+7?"
    new.loc[1, "reference"] = "14"
    new.loc[3, "choices"] = json.dumps(["yes!", "no"])
    rundir.write_table(new, run_dir / rundir.ITEMS)
    backend = FakeBackend({"7+7?": "14", "3+3?": "6"})
    items = evaluate_run(run_dir, RunConfig(), backend).set_index("item_id")
    assert sorted(backend.generated) == ["3+3?", "7+7?", "Pick one", "Pick two"]
    assert items.loc["i0", "response"] == "2" and items.loc["i1", "response"] == "14"
    assert items.loc["i1", "score"] == 1.0
    assert "2 response(s) were for items that changed since" in capsys.readouterr().err


def test_resume_redoes_records_without_digest(run_dir, capsys):
    # a resume file from before digests cannot be checked: its records are redone, with a notice
    with (run_dir / rundir.RESPONSES_PARTIAL).open("w") as f:
        f.write(json.dumps({"item_id": "i0", "response": "wrong"}) + "\n")
    backend = FakeBackend({"1+1?": "2"})
    items = evaluate_run(run_dir, RunConfig(), backend)
    assert "1+1?" in backend.generated and items["response"].iloc[0] == "2"
    assert "1 response(s) without a content digest" in capsys.readouterr().err


def test_resume_refuses_other_settings(run_dir):
    from cgaps.errors import CGapsError

    backend = FakeBackend({})

    class Dies(FakeBackend):
        def loglikelihood(self, requests, batch_size, progress=None):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate_run(run_dir, RunConfig(batch_size=1), Dies({}))
    assert (run_dir / rundir.RESPONSES_PARTIAL).exists()
    with pytest.raises(CGapsError, match="other settings"):
        evaluate_run(run_dir, RunConfig(batch_size=1, mc_scoring="loglik"), backend)
    # same settings: resumes, asking only for what the interrupted run did not finish
    resumed = evaluate_run(run_dir, RunConfig(batch_size=1), backend)
    assert backend.generated == [] and backend.loglik_requests == 2  # i5's two options
    assert not (run_dir / rundir.RESPONSES_PARTIAL).exists()
    # and ends where an uninterrupted run ends
    rundir.write_table(ITEMS, run_dir / "fresh" / rundir.ITEMS)
    fresh = evaluate_run(run_dir / "fresh", RunConfig(batch_size=1), FakeBackend({}))
    pd.testing.assert_frame_equal(resumed, fresh)


def test_short_answers_get_short_budgets_and_yesno_loglik(tmp_path):
    items = pd.DataFrame(
        {
            "item_id": ["n", "c", "y"],
            "benchmark": ["b"] * 3,
            "prompt": ["num?", "mc?", "yn?"],
            "reference": ["1", "A", "no"],
            "answer_type": ["number", "choice", "yesno"],
            "choices": [None, json.dumps(["p", "q"]), None],
        }
    )
    rundir.write_table(items, tmp_path / rundir.ITEMS)
    budgets = {}

    class Records(FakeBackend):
        def generate(self, conversations, max_new_tokens, batch_size, progress=None):
            for m in conversations:
                budgets[m[-1]["content"]] = max_new_tokens
            return super().generate(conversations, max_new_tokens, batch_size, progress)

    evaluate_run(tmp_path, RunConfig(max_new_tokens=200), Records({}))
    assert budgets == {"num?": 200, "mc?": 32, "yn?": 32}
    rundir.write_table(items, tmp_path / "ll" / rundir.ITEMS)
    out = evaluate_run(tmp_path / "ll", RunConfig(mc_scoring="loglik"), Records({}))
    # the fake prefers the longer continuation: "yes" (3) beats "no" (2)
    assert out.set_index("item_id").loc["y", "response"] == "A) yes"
    assert out.set_index("item_id").loc["y", "score"] == 0.0


# ------------------------------------------------------------------ options beyond J


def test_more_than_ten_options_is_an_error_before_the_model_runs(tmp_path):
    """A log-likelihood pick beyond J could not be graded: refused up front, naming the item."""
    opts = [f"option {'x' * k}" for k in range(11)]  # the fake prefers the longest: the 11th
    items = pd.DataFrame(
        {
            "item_id": ["ten", "eleven"],
            "benchmark": ["b", "b"],
            "prompt": ["Pick ten", "Pick eleven"],
            "reference": ["J", "K"],
            "answer_type": ["loglik_choice", "choice"],
            "choices": [json.dumps(opts[:10]), json.dumps(opts)],
        }
    )
    rundir.write_table(items, tmp_path / rundir.ITEMS)
    backend = FakeBackend({})
    with pytest.raises(CGapsError, match=r"item 'eleven': field 'choices' has 11 options, but at most 10"):
        evaluate_run(tmp_path, RunConfig(mc_scoring="loglik"), backend)
    assert backend.loglik_requests == 0 and backend.generated == []
    assert not (tmp_path / rundir.RESPONSES_PARTIAL).exists()
    # ten options: the tenth can be picked, and is graded
    rundir.write_table(items.iloc[:1], tmp_path / rundir.ITEMS)
    out = evaluate_run(tmp_path, RunConfig(mc_scoring="loglik"), backend)
    assert out["response"].tolist() == [f"J) {opts[9]}"] and out["score"].tolist() == [1.0]


# ------------------------------------------------------------------ damaged resume files


def _partial(run_dir, *lines: bytes, settings: bytes | None = None):
    path = run_dir / rundir.RESPONSES_PARTIAL
    path.write_bytes(b"".join(lines))
    if settings is not None:
        path.with_suffix(".json").write_bytes(settings)
    return path


GOOD = [_record(n, r).encode() + b"\n" for n, r in enumerate(["2", "4", "6"])]


@pytest.mark.parametrize(
    ("middle", "problem"),
    [
        (b'{"item_id": "i1", "resp\n', r"invalid JSON \(.* at column \d+\)"),
        (
            b'{"item_id": "i1", "response": "\xff\xfe"}\n',
            r"not UTF-8 text \(invalid start byte at byte \d+\)",
        ),
        (b'["i1", "4"]\n', r'expected \{"item_id": "...", "response": "..."\}'),
        (b'{"item_id": "i1", "response": 4}\n', r'expected \{"item_id": "...", "response": "..."\}'),
    ],
)
def test_resume_file_damaged_before_its_last_line_is_an_error_naming_the_line(run_dir, middle, problem):
    path = _partial(run_dir, GOOD[0], middle, GOOD[2])
    before = path.read_bytes()
    backend = FakeBackend({})
    with pytest.raises(CGapsError, match=rf"responses\.partial\.jsonl:2: {problem}; delete that line") as e:
        evaluate_run(run_dir, RunConfig(), backend)
    assert "\n" not in str(e.value)
    assert backend.generated == [] and path.read_bytes() == before  # nothing dropped, nothing run


def test_resume_file_cut_inside_a_character_resumes(run_dir):
    # a crash can cut the last record anywhere, even inside a multi-byte character
    cut = json.dumps({"item_id": "i2", "response": "é"}, ensure_ascii=False).encode()[:-3]
    path = _partial(run_dir, GOOD[0], GOOD[1], cut)
    backend = FakeBackend({"3+3?": "6"})

    seen: list[bytes] = []

    class Records(FakeBackend):
        def generate(self, conversations, max_new_tokens, batch_size, progress=None):
            seen.append(path.read_bytes())
            return backend.generate(conversations, max_new_tokens, batch_size, progress)

    items = evaluate_run(run_dir, RunConfig(), Records({}))
    assert seen[0] == GOOD[0] + GOOD[1]  # the cut line was dropped before anything was appended
    assert sorted(backend.generated) == ["3+3?", "Pick one", "Pick two"]
    assert items["score"].tolist()[:3] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        (b'{"model": ', r"invalid JSON at line 1"),
        (b"\xff", r"not UTF-8 text"),
        (b'["embedded"]', r"expected a JSON object of settings, got list"),
    ],
)
def test_unreadable_resume_settings_are_an_error(run_dir, settings, problem):
    _partial(run_dir, GOOD[0], settings=settings)
    with pytest.raises(
        CGapsError, match=rf"responses\.partial\.json: {problem}.*; delete responses\.partial\.jsonl"
    ):
        evaluate_run(run_dir, RunConfig(), FakeBackend({}))


def test_resume_settings_error_names_what_differs(run_dir):
    from cgaps.evaluate.evaluator import PARTIAL_SIGNATURE

    settings = {**RunConfig().to_dict(), "mc_scoring": "loglik"}
    settings = {k: settings[k] for k in PARTIAL_SIGNATURE}
    _partial(run_dir, GOOD[0], settings=json.dumps(settings).encode())
    with pytest.raises(CGapsError, match=r"other settings \(mc_scoring 'loglik' there, 'generate' now\)"):
        evaluate_run(run_dir, RunConfig(mc_scoring="generate"), FakeBackend({}))


# ------------------------------------------------------------------ score sources


class Listed:
    """A score source from another system: fixed responses and scores, in any row order."""

    name = "listed"

    def __init__(self, rows: list[tuple[str, str, float]]):
        self.rows = rows

    def score(self, items):
        return pd.DataFrame(self.rows, columns=["item_id", "response", "score"])


def test_every_score_source_implements_the_seam(run_dir):
    from cgaps.evaluate.evaluator import OwnEvaluator
    from cgaps.evaluate.responses import RecordedResponses, ResponsesFile
    from cgaps.runner import Local
    from cgaps.seams import ScoreSource

    own = OwnEvaluator(Local(FakeBackend({})), RunConfig(), run_dir / rundir.RESPONSES_PARTIAL)
    for source in (own, ResponsesFile(run_dir / "r.jsonl"), RecordedResponses(run_dir), Listed([])):
        assert isinstance(source, ScoreSource)


def test_record_scores_takes_any_source_and_checks_it(run_dir):
    from cgaps.evaluate.stage import record_scores

    rows = [(f"i{n}", f"answer {n}", n % 2 / 2) for n in reversed(range(6))]
    before = (run_dir / rundir.ITEMS).read_bytes()
    bad = [
        (rows[1:], r"listed: no score for 1 item\(s\), e.g. 'i5'"),
        (rows + rows[:1], r"listed: item 'i5' scored twice"),
        (
            [(i, r, 2.0) for i, r, _ in rows],
            r"listed: item 'i5' has score 2\.0; a score is a number in \[0, 1\]",
        ),
    ]
    for given, message in bad:
        with pytest.raises(CGapsError, match=message):
            record_scores(run_dir, Listed(given))
        assert (run_dir / rundir.ITEMS).read_bytes() == before
    items = record_scores(run_dir, Listed(rows))
    stored = rundir.read_items(run_dir, scored=True)
    pd.testing.assert_frame_equal(stored, items)
    assert list(stored.columns) == [*ITEMS.columns, "response", "score"]
    assert stored["item_id"].tolist() == ITEMS["item_id"].tolist()  # the table's order, not the source's
    assert stored["score"].tolist() == [0.0, 0.5, 0.0, 0.5, 0.0, 0.5]
    assert stored["response"].tolist() == [f"answer {n}" for n in range(6)]


def test_grade_recorded_responses_regrades_and_refuses_missing_ones(run_dir):
    from cgaps.evaluate.stage import grade_run

    evaluate_run(run_dir, RunConfig(), FakeBackend({"1+1?": "2"}))
    table = pd.read_parquet(run_dir / rundir.ITEMS)
    table.loc[1, "response"] = "4"  # a corrected response is graded again
    table.loc[2, "response"] = ""  # an empty response is a response
    rundir.write_table(table, run_dir / rundir.ITEMS)
    graded = grade_run(run_dir)
    assert graded["score"].tolist()[:3] == [1.0, 1.0, 0.0]
    assert rundir.read_run_json(run_dir)["counts"]["graded"] == {"arith": 3, "mc": 3}
    table.loc[3, "response"] = None
    rundir.write_table(table, run_dir / rundir.ITEMS)
    with pytest.raises(CGapsError, match=r"item 'i3' has no response \(1 in all\)"):
        grade_run(run_dir)
    rundir.write_table(ITEMS, run_dir / rundir.ITEMS)
    with pytest.raises(CGapsError, match=r"no 'response' column; run `cgaps evaluate"):
        grade_run(run_dir)
