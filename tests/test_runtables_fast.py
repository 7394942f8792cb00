"""The coded saliency reader (``load_run(coded=True)``) against the plain one it replaces for scoring.

The plain reader (:func:`cgaps.rundir.read_saliency`) is the reference: for every file the
coded reader takes, the frames are the same (item ids compared as strings) and the codes are
the item rows; for every file the plain reader refuses, the coded path refuses it with the
same message; scoring and robustness tables computed from either are identical.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.errors import CGapsError
from cgaps.robustness.core import RobustnessConfig, ablation, robustness_run, subsampling
from cgaps.runtables import load_run, no_duplicate_pairs, read_saliency_coded
from cgaps.scoring import build_matrix, compute_scores
from cgaps.scoring.stage import score_run
from helpers import make_suite, write_run

WIDTH = 200


def _plain(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    items = rundir.read_items(run_dir, scored=True)
    return items, rundir.read_saliency(run_dir, pd.Index(items["item_id"]), WIDTH)


def _check_same(run_dir: Path) -> pd.DataFrame:
    """The coded frame, after checking it against the plain reader's."""
    items, plain = _plain(run_dir)
    fast = read_saliency_coded(run_dir, pd.Index(items["item_id"]), WIDTH)
    assert fast is not None  # the fast path itself was taken
    assert isinstance(fast["item_id"].dtype, pd.CategoricalDtype)
    # codes are the item rows: the item at each code is the row's item id
    ids = items["item_id"].to_numpy()
    np.testing.assert_array_equal(ids[fast["item_id"].cat.codes.to_numpy()], plain["item_id"].to_numpy())
    pd.testing.assert_frame_equal(fast.assign(item_id=fast["item_id"].astype(str)), plain, check_exact=True)
    assert fast["concept"].dtype == np.int32 and fast["value"].dtype == np.float32
    return fast


def _write_arrow(run_dir: Path, sal: pd.DataFrame, **kw) -> None:
    pq.write_table(pa.Table.from_pandas(sal, preserve_index=False), run_dir / "saliency.parquet", **kw)


def test_pandas_written_run(tmp_path):
    run = write_run(tmp_path / "r")
    _check_same(run)
    # load_run(coded=True) is the same frame as load_run()'s
    a, b = load_run(run), load_run(run, coded=True)
    pd.testing.assert_frame_equal(b.saliency.assign(item_id=b.saliency["item_id"].astype(str)), a.saliency)
    pd.testing.assert_frame_equal(a.items, b.items)


def test_row_groups_with_their_own_dictionaries(tmp_path):
    items, sal = make_suite(1)
    run = write_run(tmp_path / "r", items, sal)
    # each batch dictionary-encoded on its own: the row groups' dictionaries differ
    schema = pa.schema(
        [
            ("item_id", pa.dictionary(pa.int32(), pa.string())),
            ("concept", pa.int32()),
            ("value", pa.float32()),
        ]
    )
    with pq.ParquetWriter(run / "saliency.parquet", schema) as w:
        for start in range(0, len(sal), 997):
            part = sal.iloc[start : start + 997]
            ids = pd.Categorical(part["item_id"].astype(str))
            w.write_table(
                pa.table(
                    {
                        "item_id": pa.DictionaryArray.from_arrays(
                            pa.array(ids.codes.astype(np.int32)), pa.array(list(ids.categories))
                        ),
                        "concept": pa.array(part["concept"].to_numpy()),
                        "value": pa.array(part["value"].to_numpy()),
                    },
                    schema=schema,
                )
            )
    assert pq.ParquetFile(run / "saliency.parquet").num_row_groups > 5
    _check_same(run)


def test_unsorted_rows_wider_types_and_column_order(tmp_path):
    items, sal = make_suite(2)
    rng = np.random.default_rng(0)
    sal = sal.iloc[rng.permutation(len(sal))].reset_index(drop=True)
    # float64 values that float32 rounds (the plain reader stores float32), int64 concepts
    sal = sal.assign(concept=sal["concept"].astype(np.int64), value=sal["value"].astype(np.float64) + 1e-9)
    run = write_run(tmp_path / "r", items, sal[["value", "item_id", "concept"]])
    fast = _check_same(run)
    assert list(fast.columns) == ["value", "item_id", "concept"]
    assert not no_duplicate_pairs(fast["item_id"].cat.codes.to_numpy(), fast["concept"].to_numpy())


def test_no_rows(tmp_path):
    items, sal = make_suite(0)
    run = write_run(tmp_path / "r", items, sal.iloc[:0])
    assert len(_check_same(run)) == 0


def test_odd_types_go_through_the_plain_reader_and_come_back_coded(tmp_path):
    """Integral float concepts and integer values: the coded reader declines, the plain reader
    converts them as ever, and load_run(coded=True) still hands back codes."""
    items, sal = make_suite(3)
    sal = sal.assign(
        concept=sal["concept"].astype(float), value=(sal["value"] * 100).round().astype(np.int64) + 1
    )
    run = write_run(tmp_path / "r", items, sal)
    assert read_saliency_coded(run, pd.Index(items["item_id"]), WIDTH) is None
    plain, coded = load_run(run).saliency, load_run(run, coded=True).saliency
    assert isinstance(coded["item_id"].dtype, pd.CategoricalDtype)
    assert coded["item_id"].cat.categories.equals(pd.Index(load_run(run).items["item_id"]))
    pd.testing.assert_frame_equal(coded.assign(item_id=coded["item_id"].astype(str)), plain, check_exact=True)


def _bad(sal: pd.DataFrame, case: str) -> pd.DataFrame:
    sal = sal.copy()
    if case == "unknown item":
        sal.loc[5, "item_id"] = "nope"
    elif case == "duplicate":
        sal = pd.concat([sal, sal.iloc[[7]]], ignore_index=True)
    elif case == "duplicate, unsorted":
        sal = pd.concat([sal.iloc[[7]], sal], ignore_index=True)
    elif case == "zero value":
        sal.loc[3, "value"] = 0.0
    elif case == "nan value":
        sal.loc[3, "value"] = np.nan
    elif case == "concept too large":
        sal.loc[3, "concept"] = WIDTH
    elif case == "negative concept":
        sal.loc[3, "concept"] = -1
    elif case == "missing item id":
        sal["item_id"] = sal["item_id"].astype(object)
        sal.loc[3, "item_id"] = None
    elif case == "extra column":
        sal["x"] = 1
    elif case == "float concept":
        sal["concept"] = sal["concept"].astype(float) + 0.5
    return sal


BAD = [
    "unknown item",
    "duplicate",
    "duplicate, unsorted",
    "zero value",
    "nan value",
    "concept too large",
    "negative concept",
    "missing item id",
    "extra column",
    "float concept",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_files_fail_with_the_plain_readers_message(tmp_path, case):
    items, sal = make_suite(0)
    run = write_run(tmp_path / "r", items, _bad(sal, case))
    assert read_saliency_coded(run, pd.Index(items["item_id"]), WIDTH) is None
    with pytest.raises(CGapsError) as plain:
        load_run(run)
    with pytest.raises(CGapsError) as coded:
        load_run(run, coded=True)
    assert str(coded.value) == str(plain.value)


def test_no_duplicate_pairs():
    rows = np.array([2, 2, 2, 0, 0, 1], dtype=np.int32)
    cols = np.array([1, 4, 9, 0, 3, 3], dtype=np.int32)
    assert no_duplicate_pairs(rows, cols)
    assert not no_duplicate_pairs(rows, np.array([1, 4, 4, 0, 3, 3], dtype=np.int32))  # a repeat
    assert not no_duplicate_pairs(rows, np.array([1, 9, 4, 0, 3, 3], dtype=np.int32))  # unsorted
    assert not no_duplicate_pairs(
        np.array([2, 2, 0, 2], dtype=np.int32), np.array([1, 4, 0, 5], dtype=np.int32)
    )
    assert no_duplicate_pairs(rows[:1], cols[:1]) and no_duplicate_pairs(rows[:0], cols[:0])


def _demo_sized_run(run_dir: Path, n_items: int = 384, width: int = 8192, seed: int = 0) -> Path:
    """A run the size of the demo (384 items x 8,192 concepts, ~1,500 firing per item as in the
    demo's saliency), written as extraction writes it (sorted by item id, then concept); the
    last concept fires on most wrong answers (a gap)."""
    rng = np.random.default_rng(seed)
    benches = np.array(["arith", "bias", "code", "facts"])
    ids = np.array([f"{benches[k % 4]}/{k:04d}" for k in range(n_items)])
    acc = {"arith": 0.3, "bias": 0.6, "code": 0.45, "facts": 0.1}
    bench = np.array([i.split("/")[0] for i in ids])
    score = (rng.random(n_items) < np.array([acc[b] for b in bench])).astype(float)
    items = pd.DataFrame(
        {"item_id": ids, "benchmark": bench, "prompt": "p", "reference": "r", "response": "x", "score": score}
    )
    pop = 1 / np.arange(1, width + 1) ** 0.8
    cdf = np.cumsum(rng.permutation(pop / pop.sum()))
    parts = []
    for k in np.argsort(ids):  # sorted by item id, as extraction writes
        c = np.unique(np.minimum(np.searchsorted(cdf, rng.random(int(rng.integers(200, 3000)))), width - 2))
        if score[k] == 0 and rng.random() < 0.8:
            c = np.append(c, width - 1)
        parts.append(pd.DataFrame({"item_id": ids[k], "concept": c.astype(np.int32)}))
    sal = pd.concat(parts, ignore_index=True)
    sal["value"] = (rng.gamma(2.0, 1.0, len(sal)) + 1e-3).astype(np.float32)
    sal.loc[sal["concept"] == width - 1, "value"] = np.float32(20.0)  # above presence everywhere
    run_dir.mkdir(parents=True)
    items.to_parquet(run_dir / "items.parquet", index=False)
    sal.to_parquet(run_dir / "saliency.parquet", index=False)
    (run_dir / "run.json").write_text(json.dumps({"n_concepts": width, "config": {}}))
    return run_dir


@pytest.mark.integration
def test_demo_sized_run_scores_and_robustness_identical(tmp_path):
    """score_run and robustness_run (coded reader) against the plain reader's frames through
    the same computation: tables bit for bit, robustness figures equal."""
    run = _demo_sized_run(tmp_path / "r")
    items = rundir.read_items(run, scored=True)
    plain = rundir.read_saliency(run, pd.Index(items["item_id"]), 8192)
    coded = read_saliency_coded(run, pd.Index(items["item_id"]), 8192)
    assert coded is not None and len(coded) > 300_000
    cfg = RunConfig(mc_resamples=2000)
    concepts, overlap = score_run(run, cfg)
    want_concepts, want_overlap = compute_scores(items, plain, 8192, cfg)
    pd.testing.assert_frame_equal(concepts, want_concepts, check_exact=True)
    pd.testing.assert_frame_equal(overlap, want_overlap, check_exact=True)
    pd.testing.assert_frame_equal(pd.read_parquet(run / "concepts.parquet"), want_concepts, check_exact=True)
    planted = concepts[(concepts["concept"] == 8191) & (concepts["scope"] == rundir.ALL_SCOPE)]
    assert planted["gap"].tolist() == ["weak"]  # the test ran

    opts = RobustnessConfig(repeats=5)
    got = robustness_run(run, cfg, opts)
    m = build_matrix(items, plain, 8192, presence=cfg.presence)
    assert got["subsampling"] == subsampling(m, cfg, opts)
    assert got["ablation"] == ablation(m, cfg, opts)
    fast = build_matrix(items, coded, 8192, presence=cfg.presence)
    for a, b in ((fast.saliency.data, m.saliency.data), (fast.saliency.indices, m.saliency.indices)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fast.saliency.indptr, m.saliency.indptr)
    np.testing.assert_array_equal(fast.scale, m.scale)
