"""Disk full and read-only run directories, for every command that writes (issue 23).

**Disk full.** Each writing command runs on a copy of a finished run whose file system has only
a few bytes left, at several amounts (none, a third and two thirds of what the command writes),
so the disk fills at different points of its work. Every time it must

- exit with status 1 and one line ``error: FILE: ... No space left on device; free some space
  ...`` naming a file of the run, no traceback;
- damage nothing: each file that was there is either unchanged or, for the command's own
  outputs, whole (every Parquet and JSON file still reads), and no temporary file is left;

and once space is freed, running the command again must give the tables of a run whose disk
never filled (run.json: every key but the timings).

The file system is a real one where the machine allows it: a small tmpfs mounted by the test
(root on Linux); elsewhere the writes are limited by a patched atomic write
(:func:`cgaps.rundir.atomic_path`, which every run file goes through) and a patched resume-file
append, which write what fits and then raise ``OSError(ENOSPC)`` the way pyarrow and Python do
(no file name). Both kinds run where tmpfs can be mounted.

**Read-only.** Every writing command on a read-only run directory is one line (exit 1 or 2) and
changes nothing; the reading ones (``status``, ``export`` to stdout, ``report --out`` elsewhere,
``compare --out`` elsewhere) work.

Every command runs through the console script's entry point (:func:`cgaps.cli.main.main`) in
this process, on the tiny random model and SAE of tests/helpers.py.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from cgaps import rundir
from helpers import TINY_HIDDEN, save_random_sae, save_tiny_model

pytestmark = [pytest.mark.usefixtures("torch_one_thread"), pytest.mark.integration]

N_ITEMS = 16


def cgaps(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: object
) -> tuple[int, str]:
    """``cgaps ARGS`` in this process: (exit status, stderr)."""
    from cgaps.cli.main import main

    monkeypatch.setattr(sys, "argv", ["cgaps", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err


@dataclass
class Base:
    """A finished run (every stage, the optional ones too) and what made it."""

    root: Path
    run: Path
    model: Path
    sae: Path
    spec: Path


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    from _pytest.monkeypatch import MonkeyPatch

    root = tmp_path_factory.mktemp("diskfull")
    model = save_tiny_model(root / "model", n_layers=2)
    sae = save_random_sae(root / "sae", d_in=TINY_HIDDEN, d_sae=16, layer=1, k=4, scale=0.3)
    rows = [
        {"q": f"What is {k} plus {k + 1}? Item {k}.", "a": str(2 * k + 1), "id": f"i{k}", "c": "ab"[k % 2]}
        for k in range(N_ITEMS)
    ]
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = root / "bench.yaml"
    spec.write_text(
        "name: sums\npath: data.jsonl\nanswer_type: number\nfields: {question: q, answer: a, id: id, category: c}\n"
    )
    run = root / "run"
    mp = MonkeyPatch()
    from cgaps.cli.main import main

    try:
        for args in commands(run, model, sae, spec).values():
            mp.setattr(sys, "argv", ["cgaps", *map(str, args)])
            with contextlib.suppress(SystemExit):
                main()
    finally:
        mp.undo()
    assert (run / rundir.VALIDATION).exists() and (run / rundir.REPORT).exists()
    return Base(root, run, model, sae, spec)


def commands(run: Path, model: Path, sae: Path, spec: Path) -> dict[str, list[object]]:
    """Each writing command of a run, in pipeline order (what :func:`base` runs)."""
    return {
        "items": ["items", spec, "--out", run],
        "evaluate": [
            "evaluate",
            run,
            "--model",
            model,
            "--device",
            "cpu",
            "--max-new-tokens",
            "6",
            "--batch-size",
            "4",
        ],
        "extract": ["extract", run, "--reader", model, "--sae", sae, "--device", "cpu"],
        "score": ["score", run, "--min-support", "1"],
        "label": ["label", run],
        "robustness": ["robustness", run],
        "validate": ["validate", run],
        "report": ["report", run],
    }


# ---------------------------------------------------------------- the full disk


class Disk:
    """A folder (:attr:`root`) whose free space the test sets: :meth:`leave` N bytes, :meth:`free`."""

    root: Path

    def leave(self, nbytes: int) -> None:
        raise NotImplementedError

    def free(self) -> None:
        raise NotImplementedError


class Tmpfs(Disk):
    """A small tmpfs mounted on ``root``; a filler file takes all but N bytes of it."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(root)], capture_output=True, check=False
        )
        if done.returncode != 0:
            raise OSError(done.stderr.decode(errors="replace").strip())
        self.root = root
        self.filler = root / "filler"

    def leave(self, nbytes: int) -> None:
        self.free()
        avail = os.statvfs(self.root).f_bavail * os.statvfs(self.root).f_frsize
        with open(self.filler, "wb") as f:  # written, not fallocate'd: tmpfs counts written pages
            f.write(b"\0" * max(0, avail - nbytes))

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def close(self) -> None:
        subprocess.run(["umount", str(self.root)], check=False)


class Simulated(Disk):
    """Writes limited by patching the two ways run files are written: :func:`cgaps.rundir.atomic_path`
    (what fits of the new file is written, then ``OSError(ENOSPC)`` with no file name, as pyarrow
    raises it) and the evaluation's resume-file append (the lines that fit, then the error)."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        import cgaps.evaluate.evaluator as evaluator
        import cgaps.rundir.atomic as atomic

        root.mkdir(parents=True)
        self.root = root
        self.budget: float = float("inf")
        real_atomic, real_append = atomic.atomic_path, evaluator._append

        @contextlib.contextmanager
        def limited(path: str | Path) -> Iterator[Path]:
            with real_atomic(path) as tmp:
                yield tmp
                self._spend(tmp, 0)

        def limited_append(path: Path, records: list) -> None:
            scratch = path.with_name(f".{path.name}.scratch")
            real_append(scratch, records)
            data = scratch.read_bytes()
            scratch.unlink()
            with rundir.naming_errors(path), open(path, "ab") as f:
                f.write(data[: int(min(len(data), self.budget))])
                self._spend(None, len(data))

        monkeypatch.setattr(atomic, "atomic_path", limited)
        monkeypatch.setattr(evaluator, "_append", limited_append)

    def _spend(self, tmp: Path | None, size: int) -> None:
        size = tmp.stat().st_size if tmp is not None else size
        if size > self.budget:
            if tmp is not None:
                os.truncate(tmp, int(self.budget))
            self.budget = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.budget -= size

    def leave(self, nbytes: int) -> None:
        self.budget = nbytes

    def free(self) -> None:
        self.budget = float("inf")


@pytest.fixture(params=["tmpfs", "simulated"])
def disk(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Disk]:
    if request.param == "simulated":
        yield Simulated(tmp_path / "disk", monkeypatch)
        return
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux (the simulated disk runs instead)")
    try:
        fs = Tmpfs(tmp_path / "disk")
    except OSError as e:
        pytest.skip(f"cannot mount a tmpfs here ({e}); the simulated disk runs instead")
    try:
        yield fs
    finally:
        fs.close()


# ---------------------------------------------------------------- what each command starts from


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (lock files aside) and its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != rundir.LOCK
    }


def stamps(folder: Path) -> dict[str, tuple[int, tuple[int, int]]]:
    """Every file under ``folder`` (lock files aside): its size, and its inode and modification
    time (an atomic write replaces the file: a new inode)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != rundir.LOCK:
            st = p.stat()
            out[str(p.relative_to(folder))] = (st.st_size, (st.st_ino, st.st_mtime_ns))
    return out


def whole(path: Path) -> None:
    """A run file that reads: Parquet whole, JSON as JSON."""
    if path.suffix == ".parquet":
        pd.read_parquet(path)
    elif path.suffix == ".json":
        json.loads(path.read_text(encoding="utf-8"))


def same_tables(ref: Path, run: Path, names: list[str]) -> None:
    for name in names:
        if name.endswith(".parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(ref / name), pd.read_parquet(run / name))
            assert rundir.read_table_config(ref / name) == rundir.read_table_config(run / name)
        elif name == rundir.RUN_JSON:
            a, b = (json.loads((r / name).read_text()) for r in (ref, run))
            a.pop("timings", None), b.pop("timings", None)
            assert json.dumps(a, sort_keys=True).replace(str(ref), "RUN") == json.dumps(
                b, sort_keys=True
            ).replace(str(run), "RUN")
        elif name == rundir.REPORT:  # the page names its run directory's path
            text = [(r / name).read_text().replace(str(r), "RUN") for r in (ref, run)]
            assert text[0] == text[1]
        else:
            a, b = (json.loads((r / name).read_text()) for r in (ref, run))
            a.pop("timings", None), b.pop("timings", None)
            assert a == b, name


# command -> (what to delete from the finished run first, the files to compare after the rerun)
STAGE_CASES: dict[str, tuple[list[str], list[str]]] = {
    "evaluate": ([rundir.RESPONSES_PARTIAL], [rundir.ITEMS]),
    "extract": (
        [rundir.SALIENCY, rundir.CONTEXTS, rundir.SALIENCY_SHARDS],
        [rundir.SALIENCY, rundir.CONTEXTS],
    ),
    "score": ([rundir.CONCEPTS, rundir.OVERLAP], [rundir.CONCEPTS, rundir.OVERLAP, rundir.RUN_JSON]),
    "label": ([rundir.LABELS, rundir.THEMES], [rundir.LABELS, rundir.THEMES]),
    "robustness": ([rundir.ROBUSTNESS], [rundir.ROBUSTNESS]),
    "validate": ([rundir.VALIDATION], [rundir.VALIDATION]),
    "report": ([rundir.REPORT], [rundir.REPORT]),
}


def _remove(run: Path, names: list[str]) -> None:
    for name in names:
        path = run / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _check_full(code: int, err: str, target: Path) -> None:
    assert code == 1, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: ") and sum(line.startswith("error: ") for line in lines) == 1, err
    assert str(target) in lines[-1] and "No space left on device" in lines[-1], lines[-1]
    assert "free some space and run the command again" in lines[-1]


def _nothing_damaged(before: dict[str, bytes], run: Path, outputs: list[str]) -> None:
    after = files(run)
    assert not [p for p in after if p.endswith(".tmp")], "a temporary file was left"
    for name, data in before.items():
        if name not in after:
            raise AssertionError(f"{name} was deleted by a command that failed")
        if after[name] != data:
            top = name.split("/")[0]
            assert top in outputs or top == rundir.RUN_JSON, f"{name} was changed"
    for name in after:
        if name.split("/")[0] != "filler":
            whole(run / name)


@pytest.mark.parametrize("command", sorted(STAGE_CASES))
def test_a_full_disk_is_one_line_damages_nothing_and_a_rerun_is_identical(
    command, base, disk, tmp_path, monkeypatch, capsys
):
    deleted, compared = STAGE_CASES[command]
    run = disk.root / "run"
    shutil.copytree(base.run, run)
    _remove(run, deleted)
    args = commands(run, base.model, base.sae, base.spec)[command]
    # the reference, and how much the command writes: the same command on a disk that is not full
    before = stamps(run)
    code, err = cgaps(monkeypatch, capsys, *args)
    assert code == 0, err
    # every file the command (re)wrote, whether or not its bytes changed: a rerun of a
    # deterministic stage writes the same bytes again (evaluate: items.parquet, and run.json when
    # its timing rounds to the same value)
    written = sum(size for k, (size, stamp) in stamps(run).items() if before.get(k, (0, None))[1] != stamp)
    assert written > 0
    reference = tmp_path / "reference" / run.name  # the same name: the report shows it
    shutil.copytree(run, reference)
    failed = 0
    for share in (0.0, 1 / 3, 2 / 3):
        shutil.rmtree(run)
        shutil.copytree(base.run, run)
        _remove(run, deleted)
        before = files(run)
        disk.leave(int(share * written))
        code, err = cgaps(monkeypatch, capsys, *args)
        if code == 0:  # all of it fitted (tmpfs rounds to whole pages)
            assert share > 0, err
            continue
        failed += 1
        _check_full(code, err, run)
        _nothing_damaged(before, run, [*deleted, *compared])
        status, err = cgaps(monkeypatch, capsys, "status", run)  # reads whatever was left
        assert status in (0, 1) and "Traceback" not in err, err
        disk.free()
        code, err = cgaps(monkeypatch, capsys, *args)
        assert code == 0, err
        same_tables(reference, run, compared)
    assert failed >= 1


def test_a_full_disk_while_loading_items_or_importing(base, disk, monkeypatch, capsys):
    """The commands that create a run: nothing half-made, and the rerun's run equals a clean one."""
    table = base.root / "results.jsonl"
    table.write_text(
        "".join(json.dumps({"id": f"r{k}", "q": f"q {k}", "out": "x", "ok": k % 2}) + "\n" for k in range(40))
    )
    makers = {
        "items": ["items", base.spec, "--out"],
        "import": ["import", "table", table, "--map", "item_id=id,prompt=q,response=out,score=ok", "--out"],
    }
    for name, args in makers.items():
        reference = base.root / f"ref-{name}"
        if not reference.exists():
            assert cgaps(monkeypatch, capsys, *args, reference)[0] == 0
        run = disk.root / name
        disk.leave(0)
        code, err = cgaps(monkeypatch, capsys, *args, run)
        _check_full(code, err, run)
        assert not [p for p in run.rglob("*.tmp")] if run.exists() else True
        assert not (run / rundir.RUN_JSON).exists()  # run.json last: a half-made run never looks whole
        disk.free()
        code, err = cgaps(monkeypatch, capsys, *args, run, *(["--force"] if run.exists() else []))
        assert code == 0, err
        same_tables(reference, run, [rundir.ITEMS])


def test_a_full_disk_for_compare_and_export(base, disk, monkeypatch, capsys):
    """Files a command writes outside any run: one line, nothing half-written, then identical."""
    other = base.root / "other"
    if not other.exists():
        shutil.copytree(base.run, other)
    ref = base.root / "cmp-ref"
    if not ref.exists():
        assert cgaps(monkeypatch, capsys, "compare", base.run, other, "--out", ref)[0] == 0
        assert cgaps(monkeypatch, capsys, "export", base.run, "-o", ref / "concepts.csv")[0] == 0
    out = disk.root / "cmp"
    disk.leave(0)
    code, err = cgaps(monkeypatch, capsys, "compare", base.run, other, "--out", out)
    _check_full(code, err, out)
    assert not list(out.glob("*.tmp")) if out.exists() else True
    code, err = cgaps(monkeypatch, capsys, "export", base.run, "-o", disk.root / "concepts.csv")
    _check_full(code, err, disk.root / "concepts.csv")
    assert not (disk.root / "concepts.csv").exists()
    disk.free()
    assert cgaps(monkeypatch, capsys, "compare", base.run, other, "--out", out)[0] == 0
    same_tables(ref, out, ["compare.parquet"])
    assert cgaps(monkeypatch, capsys, "export", base.run, "-o", disk.root / "concepts.csv")[0] == 0
    assert (disk.root / "concepts.csv").read_bytes() == (ref / "concepts.csv").read_bytes()


# ---------------------------------------------------------------- read-only run directories


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` read-only for this process: a read-only bind mount where the test is root (root
    ignores file modes), else the modes themselves."""
    if sys.platform == "linux" and os.geteuid() == 0:
        bound = subprocess.run(
            ["mount", "--bind", str(folder), str(folder)], capture_output=True, check=False
        )
        if bound.returncode == 0:
            try:
                ro = subprocess.run(
                    ["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True, check=False
                )
                if ro.returncode != 0:
                    pytest.skip(f"cannot remount read-only: {ro.stderr.decode(errors='replace').strip()}")
                yield
            finally:
                subprocess.run(["umount", str(folder)], check=False)
            return
        pytest.skip("root, but cannot bind-mount here: file modes would not stop root")
    modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
    for p in modes:
        p.chmod(modes[p] & ~0o222)
    try:
        yield
    finally:
        for p, mode in modes.items():
            p.chmod(mode)


@pytest.mark.parametrize("command", sorted(commands(Path(), Path(), Path(), Path())))
def test_a_read_only_run_is_one_line_and_unchanged(command, base, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(base.run, run)
    args = commands(run, base.model, base.sae, base.spec)[command]
    before = files(run)
    with read_only(run):
        code, err = cgaps(monkeypatch, capsys, *args)
    assert code in (1, 2), err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: ") and str(run) in lines[-1], err
    assert any(w in lines[-1] for w in ("Read-only", "Permission denied", "not writable", "writable")), lines[
        -1
    ]
    assert files(run) == before


def test_the_reading_commands_work_on_a_read_only_run(base, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(base.run, run)
    other = tmp_path / "other"
    shutil.copytree(base.run, other)
    before = files(run)
    with read_only(run):
        reading: list[tuple[list[object], Callable[[], bool]]] = [
            (["status", run], lambda: True),
            (["export", run], lambda: True),
            (["report", run, "--out", tmp_path / "page.html"], (tmp_path / "page.html").exists),
            (
                ["compare", run, other, "--out", tmp_path / "cmp"],
                (tmp_path / "cmp" / "compare.parquet").exists,
            ),
            (["export", run, "-o", tmp_path / "c.csv"], (tmp_path / "c.csv").exists),
        ]
        for args, made in reading:
            code, err = cgaps(monkeypatch, capsys, *args)
            assert code in (0, 1) and "Traceback" not in err and "error:" not in err, (args, err)
            assert made(), args
    assert files(run) == before
