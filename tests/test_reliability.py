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
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cgaps import rundir
from helpers import write_run


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


# ---------------------------------------------------------------- a scored run to point commands at


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> Path:
    """A scored run (make_suite's items and saliency), as `cgaps score` leaves it."""
    from cgaps.scoring import score_run

    run = write_run(tmp_path_factory.mktemp("scored") / "run")
    score_run(run)
    return run


def _copy(run: Path, to: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, to))


# ---------------------------------------------------------------- writing where it should not


def test_compare_into_a_run_is_refused_and_the_run_stays_as_it_was(scored, tmp_path, monkeypatch, capsys):
    """`cgaps compare A B --out A` replaced A's report.html with the compare page (exit 0), and
    `cgaps status A` then said "report done". Now refused before anything is read."""
    a, b = _copy(scored, tmp_path / "a"), _copy(scored, tmp_path / "b")
    (a / rundir.REPORT).write_text("<html>A's own report</html>")
    before = {p.name: p.read_bytes() for p in a.iterdir() if p.is_file()}
    code, out, err = cgaps(monkeypatch, capsys, "compare", a, b, "--out", a)
    assert code == 2 and out == ""
    assert f"is the run directory {a.resolve()}" in one_line_error(err)
    assert {p.name: p.read_bytes() for p in a.iterdir() if p.is_file()} == before
    # a folder of its own works, and compare holds that folder's writer lock
    code, out, err = cgaps(monkeypatch, capsys, "compare", a, b, "--out", tmp_path / "a-vs-b")
    assert code == 0, err
    assert (tmp_path / "a-vs-b" / "compare.parquet").exists() and "ALL:" in out


def test_compare_respects_another_process_writer_lock(scored, tmp_path, monkeypatch, capsys):
    import subprocess
    import time

    a, b = _copy(scored, tmp_path / "a"), _copy(scored, tmp_path / "b")
    out = tmp_path / "cmp"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from cgaps import rundir\n"
            "with rundir.writing(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        code, _, err = cgaps(monkeypatch, capsys, "compare", a, b, "--out", out)
        assert code == 2 and time.monotonic() - t0 < 30
        line = one_line_error(err)
        assert f"another cgaps process (pid {holder.pid}) is writing this run directory" in line
        assert not (out / "compare.parquet").exists()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize(
    "command",
    ["evaluate", "extract", "grade", "score", "label", "robustness", "validate", "report", "confirm"],
)
def test_a_stage_on_a_missing_folder_leaves_nothing(command, tmp_path, monkeypatch, capsys):
    """Every stage command is locked by the CLI wrapper, which removes a folder it created for a
    command that then failed: no folder holding only .cgaps.lock (issue 23)."""
    missing = tmp_path / "nowhere"
    extra = ["--pool", "probes"] if command == "confirm" else []
    code, out, err = cgaps(monkeypatch, capsys, command, missing, *extra)
    assert code == 2 and out == ""
    one_line_error(err)
    assert not missing.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["items", "nosuchsuite", "--out", "NEW"],
        ["import", "table", "NOFILE", "--map", "item_id=a,prompt=b,response=c,score=d", "--out", "NEW"],
        ["compare", "NOFILE", "NOFILE", "--out", "NEW"],
        ["train-sae", "NOFILE", "--out", "NEW", "--layer", "0"],
    ],
    ids=["items", "import", "compare", "train-sae"],
)
def test_a_command_that_creates_its_folder_and_fails_leaves_nothing(args, tmp_path, monkeypatch, capsys):
    names = {"NEW": str(tmp_path / "new"), "NOFILE": str(tmp_path / "nofile")}
    code, _, err = cgaps(monkeypatch, capsys, *[names.get(a, a) for a in args])
    assert code == 2
    one_line_error(err)
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------- the same run served twice


def test_a_run_given_twice_is_served_once(scored, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from cgaps.cli.serve import distinct_runs
    from cgaps.serve.app import create_app
    from cgaps.serve.store import Store

    link = tmp_path / "link"
    link.symlink_to(scored)
    given = [scored, Path(f"{scored}/"), scored / ".." / scored.name, link]
    runs = distinct_runs(given)
    assert runs == [scored]
    assert capsys.readouterr().err.count("served once") == 3
    names = [r["name"] for r in TestClient(create_app(Store(runs))).get("/api/runs").json()["runs"]]
    assert names == [scored.name]


def test_names_from_other_tools_are_cut_and_shown_without_control_characters(scored, tmp_path):
    """run.json's names may come from another tool's log (an import's evaluated model): the
    explorer shows at most 300 characters of them, control characters as visible symbols."""
    from fastapi.testclient import TestClient

    from cgaps.serve.app import MAX_SHOWN_NAME, create_app
    from cgaps.serve.store import Store

    run = _copy(scored, tmp_path / "run")
    meta = rundir.read_run_json(run)
    rundir.write_json({**meta, "model": {"evaluated": "m" * 10_000 + "\x1b[31mred"}}, run / rundir.RUN_JSON)
    shown = TestClient(create_app(Store([run]))).get("/api/runs").json()["runs"][0]["model"]
    assert len(shown) < MAX_SHOWN_NAME + 40 and "\x1b" not in shown and shown.startswith("m" * 300)
    assert "more characters" in shown


def test_an_imported_model_name_is_cleaned_not_refused(tmp_path, monkeypatch, capsys):
    """An lm-eval results file naming a 10,000-character model with an escape character: the
    import records a cut, visible name (config.model allows 1000 printable characters)."""
    stamp = "2026-01-01T00-00-00.000001"
    logs = tmp_path / "logs"
    logs.mkdir()
    line = {
        "doc_id": 0,
        "arguments": {"gen_args_0": {"arg_0": "Q: 2+2?\nA:", "arg_1": {"until": ["\n"], "max_gen_toks": 8}}},
        "filtered_resps": [" 4"],
        "metrics": ["exact_match"],
        "exact_match": 1.0,
    }
    (logs / f"samples_t_{stamp}.jsonl").write_text(json.dumps(line) + "\n")
    name = "org/" + "x" * 10_000 + "\x1b[2J"
    (logs / f"results_{stamp}.json").write_text(json.dumps({"results": {}, "model_name": name}))
    code, _, err = cgaps(monkeypatch, capsys, "import", "lm-eval", logs, "--out", tmp_path / "run")
    assert code == 0, err
    assert "model name (10,008 characters)" in err and "\x1b" not in err
    meta = rundir.read_run_json(tmp_path / "run")
    for recorded in (meta["model"]["evaluated"], meta["config"]["model"]):
        assert len(recorded) == 200 and recorded.startswith("org/xxx") and "\x1b" not in recorded


# ---------------------------------------------------------------- connections that give up


class Silent:
    """A TCP server on 127.0.0.1 that accepts connections and never answers (a port that is no
    Ray and no HTTP server, or a server that hangs)."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.stop = True
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def silent():
    server = Silent()
    yield server
    server.close()


# Ray's connection waits (cgaps.scaleout.cluster.bound_ray_waits)
RAY_WAITS = (
    "RAY_gcs_server_port_wait_time_s",
    "RAY_py_gcs_connect_timeout_s",
    "RAY_gcs_rpc_server_connect_timeout_s",
)


def test_a_ray_address_nothing_listens_on_is_an_error_at_once(monkeypatch):
    """`--ray-address HOST:PORT` with nothing listening retried for minutes (killed after 7)."""
    import time

    pytest.importorskip("ray", reason="the 'ray' extra is not installed")
    from cgaps.errors import CGapsError
    from cgaps.scaleout.cluster import cluster
    from cgaps.scaleout.config import RayConfig
    from helpers import free_port

    for name in RAY_WAITS:
        monkeypatch.setenv(name, "5")  # restored afterwards; the waits' own values are not tested here
    port = free_port()
    t0 = time.monotonic()
    with (
        pytest.raises(
            CGapsError, match=rf"--ray-address 127.0.0.1:{port}: cannot connect \(Connection refused\)"
        ),
        cluster(RayConfig(ray_address=f"127.0.0.1:{port}", ray_timeout=30)),
    ):
        pass
    assert time.monotonic() - t0 < 5


RAY_WAITS = (
    "RAY_gcs_server_port_wait_time_s",
    "RAY_py_gcs_connect_timeout_s",
    "RAY_gcs_rpc_server_connect_timeout_s",
)


def test_ray_waits_are_bounded_by_the_timeout(monkeypatch):
    import os

    from cgaps.scaleout.cluster import _host_port, bound_ray_waits

    for name in RAY_WAITS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(RAY_WAITS[1], "99")  # the user's own setting is kept
    bound_ray_waits(12)
    assert [os.environ[name] for name in RAY_WAITS] == ["1", "99", "4"]
    assert _host_port("10.0.0.1:6379") == ("10.0.0.1", 6379)
    assert _host_port("ray://head:10001") == ("head", 10001)
    assert _host_port("[::1]:6379") == ("::1", 6379)
    assert _host_port("auto") is None


@pytest.mark.slow
def test_a_ray_address_that_never_answers_gives_up_within_the_timeout(silent, tmp_path):
    """A port that accepts and never answers (no Ray there): `cgaps extract --ray-address ...
    --ray-timeout 6` is one line within about that time (plus Ray's start), not minutes."""
    import subprocess
    import time

    pytest.importorskip("ray", reason="the 'ray' extra is not installed")
    run = write_run(tmp_path / "run")
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "cgaps", "extract", str(run), "--ray-address", f"127.0.0.1:{silent.port}",
         "--ray-timeout", "6", "--span", "prompt"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    assert done.returncode == 2, done.stderr
    assert "could not start or reach a Ray cluster" in one_line_error(
        "\n".join(ln for ln in done.stderr.splitlines() if not ln.startswith(("[", "20")))
    )
    assert elapsed < 60, elapsed  # ~6 s of waiting, the rest is starting Python and Ray


@pytest.mark.integration
def test_a_labeler_that_never_answers_gives_up_within_the_stated_time(silent, tmp_path):
    import time

    from cgaps.errors import CGapsError
    from cgaps.labels.autointerp import ChatClient
    from cgaps.labels.config import LabelConfig

    opts = LabelConfig(
        labeler=f"http://127.0.0.1:{silent.port}/v1", labeler_model="m", llm_timeout=1, llm_retries=1
    )
    client = ChatClient(opts.labeler or "", "m", opts)
    t0 = time.monotonic()
    with pytest.raises(
        CGapsError, match=r"labeler request failed after 2 attempt\(s\) in \d+ s \(ReadTimeout"
    ):
        client.chat([{"role": "user", "content": "hi"}])
    # (retries + 1) x timeout plus the backoff (0.5 s): the stated bound
    assert time.monotonic() - t0 < 2 * 1 + 0.5 + 2


@pytest.mark.integration
def test_a_served_model_that_never_answers_gives_up_and_abandons_the_rest(silent):
    """One request timed out twice: the error comes within the stated bound, and the other
    conversations are not each retried in turn (they would take 50 x 2 timeouts)."""
    import time

    from cgaps.errors import CGapsError
    from cgaps.models.openai import OpenAIGenerator

    gen = OpenAIGenerator(f"openai://127.0.0.1:{silent.port}/v1/m?timeout=1&retries=1&concurrency=4")
    t0 = time.monotonic()
    with pytest.raises(CGapsError, match=r"no answer after 2 attempts in \d+ s \(ReadTimeout"):
        gen.generate([[{"role": "user", "content": f"q{i}"}] for i in range(50)], 4, 1)
    assert time.monotonic() - t0 < 2 * 1 + 0.5 + 2.5
    assert gen.requests <= 4 * 2 + 4  # the first wave and its retries, not 50 x 2


# ---------------------------------------------------------------- Ctrl-C


def test_ctrl_c_is_one_line_and_exit_130(scored, tmp_path, monkeypatch, capsys):
    """An interrupted command says that completed work is kept (typer exited 130 silently)."""
    import cgaps.scoring.stage as scoring_stage

    run = _copy(scored, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C in the middle of scoring

    monkeypatch.setattr(scoring_stage, "build_matrix", interrupted)
    code, out, err = cgaps(monkeypatch, capsys, "score", run)
    assert code == 130 and out == ""
    assert "interrupted: the work completed so far is kept" in one_line_error(err)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != rundir.LOCK} == {
        k: v for k, v in before.items() if k != rundir.LOCK
    }
