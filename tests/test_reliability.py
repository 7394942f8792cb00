"""The classes of a hostile user's probe (issue 23) that are not one bad input file each.

The fuzz corpus (tests/test_fuzz.py) holds the malformed inputs; this file holds the rest, each
class with the test that keeps it from coming back:

- commands that write where they should not (``compare --out`` a run, ``report``/``export``
  into another run, another process's writer lock);
- corrupt files of our own format that are redone, not fatal (a truncated extraction shard, a
  sidecar or shard manifest that is not JSON), and the settings mismatch that names the setting;
- connections that must give up within a stated time (a Ray address nothing answers);
- the same run served twice;
- a stage command on a folder that does not exist leaves nothing behind;
- the label stage on an imported run with no categories;
- Ctrl-C: one line, nothing half-written.

Disk full and read-only run directories are in tests/test_diskfull.py, kills in tests/test_kill.py.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd

from cgaps import rundir


def cgaps(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``cgaps ARGS`` through the console script's entry point: (exit status, stdout, stderr)."""
    from cgaps.cli.main import main

    monkeypatch.setattr(sys, "argv", ["cgaps", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(err: str) -> str:
    """The one ``error: ...`` line that ends stderr (and no traceback)."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), err
    assert sum(line.startswith("error: ") for line in lines) == 1, err
    return lines[-1]


# ---------------------------------------------------------------- label on an imported table


def test_label_on_an_import_without_categories(tmp_path, monkeypatch, capsys):
    """`cgaps import table` without a category mapping gives an all-empty category column: a
    facet with no groups, left out of the enrichment (it crashed with `argmax of an empty sequence`)."""
    rows = [
        {"id": f"r{k}", "q": f"What is {k} plus {k}?", "out": str(2 * k), "ok": k % 3 != 0} for k in range(24)
    ]
    data = tmp_path / "results.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "run"
    code, _, err = cgaps(
        monkeypatch,
        capsys,
        "import",
        "table",
        data,
        "--map",
        "item_id=id,prompt=q,response=out,score=ok",
        "--out",
        run,
    )
    assert code == 0, err
    items = rundir.read_items(run)
    assert (items["category"].fillna("") == "").all()  # no category mapping: every cell empty
    # two benchmarks, so the empty category facet is not the same partition as the benchmark's
    items["benchmark"] = ["left" if k < 12 else "right" for k in range(24)]
    rundir.write_table(items, run / rundir.ITEMS)
    ids = items["item_id"].tolist()
    sal = pd.DataFrame(
        {
            "item_id": [i for i in ids for _ in range(2)],
            "concept": np.array([[k % 4, 4 + k % 2] for k in range(24)]).ravel().astype(np.int32),
            "value": np.float32(1.5),
        }
    )
    sal.to_parquet(run / rundir.SALIENCY, index=False)
    meta = rundir.read_run_json(run)
    rundir.write_json({**meta, "n_concepts": 6}, run / rundir.RUN_JSON)
    assert cgaps(monkeypatch, capsys, "score", run, "--min-support", "2")[0] == 0
    code, _, err = cgaps(monkeypatch, capsys, "label", run)
    assert code == 0, err
    labels = pd.read_parquet(run / rundir.LABELS)
    assert len(labels) == 6
    # the benchmark facet still names where each concept's mass falls; no empty category group
    assert set(labels["enrich_facet"]) <= {"benchmark", ""}
    assert (labels.loc[labels["concept"] == 4, "enrich_facet"] == "benchmark").all()
