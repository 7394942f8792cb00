"""lm-evaluation-harness itself, run offline on a local multiple-choice task: the reference for our protocols.

The tests compare ``cgaps evaluate`` with a real harness run rather than with our reading of
the harness's code, so a difference in prompt, target delimiter, tokenisation or chat
template shows up as disagreeing items. Nothing here reaches the network: the task is a
JSONL file plus a task YAML written into a folder the test owns (the ``json`` dataset
builder of ``datasets`` reads it), the model is the embedded SmolLM2 as the safetensors
folder the project converts it to (:func:`cgaps.models.convert_gguf`), and the harness runs
as its own command line (``lm_eval run``) in a subprocess with ``HF_HUB_OFFLINE=1``.

- :func:`write_mc_task`: a ``multiple_choice`` task (``doc_to_text``, ``doc_to_choice``,
  ``doc_to_target`` as Jinja over the JSONL fields; metrics ``acc`` and ``acc_norm``);
- :func:`run_harness`: ``lm_eval run ... --log_samples`` on it; returns the output folder
  (the harness writes ``<model>/results_<date>.json`` and ``<model>/samples_<task>_<date>.jsonl``
  below it);
- :func:`read_samples`: the per-item records of that folder (``doc_id``, the per-choice
  log-likelihoods, ``acc``, ``acc_norm``);
- :func:`socialiqa_docs`: a slice of SocialIQA's dev split from the benchmark folder
  (``../shared/benchmarks``), in the fields the task reads.

The lm-eval log importer's tests (issue 12) reuse :func:`run_harness` for a real log folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

# SocialIQA in the harness's own task format (lm_eval/tasks/siqa/siqa.yaml): the question as
# "Q: <context> <question>\nA:", the three answers as choices, scored as " " + answer text.
SIQA_TEXT = "Q: {{context}} {{question}}\nA:"
SIQA_CHOICES = "{{[answerA, answerB, answerC]}}"
SIQA_TARGET = "{{label}}"


def embedded_model_folder() -> Path:
    """The embedded SmolLM2 as a safetensors folder (converted once into ``$CGAPS_CACHE``)."""
    from cgaps.models import convert_gguf, embedded_gguf

    return convert_gguf(embedded_gguf())


def write_mc_task(
    folder: str | Path,
    name: str,
    docs: list[dict[str, Any]],
    doc_to_text: str,
    doc_to_choice: str,
    doc_to_target: str,
    target_delimiter: str = " ",
) -> Path:
    """Write ``docs`` as ``folder/<name>.jsonl`` and a ``multiple_choice`` task YAML beside it; return the folder.

    The templates are the harness's Jinja (``"{{question}}"``); ``doc_to_target`` renders the
    0-based index of the gold choice.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    task = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": doc_to_text,
        "doc_to_choice": doc_to_choice,
        "doc_to_target": doc_to_target,
        "target_delimiter": target_delimiter,
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
    }
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(task, sort_keys=False), encoding="utf-8")
    return folder


def run_harness(
    task_dir: str | Path,
    task: str,
    out_dir: str | Path,
    model_dir: str | Path | None = None,
    *,
    dtype: str = "float32",
    batch_size: int = 16,
    device: str = "cpu",
    chat_template: bool = False,
    timeout: float = 1200,
    limit: int | None = None,
) -> Path:
    """Run ``lm_eval run`` on ``task`` (from ``task_dir``) with ``--log_samples``; return ``out_dir``.

    ``model_dir``: a transformers folder (default: the embedded SmolLM2's); ``limit``: the
    harness's ``--limit``. Raises with the harness's output when it fails.
    """
    model_dir = Path(model_dir) if model_dir is not None else embedded_model_folder()
    out_dir = Path(out_dir)
    cmd = [
        sys.executable,
        "-m",
        "lm_eval",
        "run",
        "--model",
        "hf",
        "--model_args",
        f"pretrained={model_dir},dtype={dtype}",
        "--tasks",
        task,
        "--include_path",
        str(Path(task_dir).resolve()),
        "--device",
        device,
        "--batch_size",
        str(batch_size),
        "--output_path",
        str(out_dir),
        "--log_samples",
    ]
    if chat_template:
        cmd.append("--apply_chat_template")
    if limit is not None:  # the first `limit` documents of each task
        cmd += ["--limit", str(limit)]
    with tempfile.TemporaryDirectory(prefix="lm-eval-datasets-") as cache:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            # the JSONL's Arrow copy goes to a throwaway cache, not the user's or the output folder
            "HF_DATASETS_CACHE": cache,
        }
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0 or not list(out_dir.glob("**/samples_*.jsonl")):
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise RuntimeError(f"lm_eval exited with {proc.returncode}:\n{tail}")
    return out_dir


def read_samples(out_dir: str | Path, task: str) -> list[dict[str, Any]]:
    """The harness's per-item records of ``task``, in ``doc_id`` order: ``doc_id``, ``doc``,
    ``logliks`` (one summed log-likelihood per choice), ``acc`` and ``acc_norm``."""
    paths = sorted(Path(out_dir).glob(f"**/samples_{task}_*.jsonl"))
    if not paths:
        raise FileNotFoundError(f"{out_dir}: no samples_{task}_*.jsonl (was --log_samples given?)")
    rows = []
    for line in paths[-1].read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        rows.append(
            {
                "doc_id": int(rec["doc_id"]),
                "doc": rec["doc"],
                # resps: one [[loglik, is_greedy]] per choice (filtered_resps: [loglik, is_greedy])
                "logliks": [float(r[0]) for r in rec["filtered_resps"]],
                "acc": float(rec["acc"]),
                "acc_norm": float(rec["acc_norm"]),
            }
        )
    return sorted(rows, key=lambda r: r["doc_id"])


def synthetic_socialiqa_docs(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` SocialIQA-format items written here (for machines without ../shared/benchmarks):
    everyday situations with three answers of different lengths, the label drawn at random."""
    import random

    rng = random.Random(seed)
    names = ["Alex", "Jordan", "Sam", "Riley", "Casey", "Taylor", "Morgan", "Jamie"]
    acts = [
        ("baked a cake for the party", "share it with the guests", "throw it in the river", "sleep"),
        ("lost their keys at the park", "look for them", "buy a boat", "sing loudly to the trees"),
        ("helped a neighbour carry boxes", "feel useful", "become a pilot", "eat the boxes"),
        ("forgot a friend's birthday", "apologise to the friend", "move to the moon", "laugh"),
        ("studied all night for the exam", "feel tired", "win a medal in swimming", "paint the house red"),
        ("found a wallet on the bus", "return it to its owner", "keep every coin forever", "jump"),
        ("won the chess tournament", "celebrate with friends", "quit chess and cry", "walk a giraffe"),
        ("spilled coffee on the report", "print it again", "hide under the desk all week", "fly"),
    ]
    questions = [
        "What will {n} want to do next?",
        "How would {n} feel afterwards?",
        "What does {n} need to do?",
    ]
    docs = []
    for i in range(n):
        name = names[i % len(names)]
        act, *answers = acts[(i // len(names) + i) % len(acts)]
        rng.shuffle(answers)
        docs.append(
            {
                "context": f"{name} {act}.",
                "question": rng.choice(questions).format(n=name),
                "answerA": answers[0],
                "answerB": answers[1],
                "answerC": answers[2],
                "label": rng.randrange(3),
            }
        )
    return docs


def socialiqa_docs(benchmarks_dir: str | Path, n: int) -> list[dict[str, Any]]:
    """The first ``n`` SocialIQA dev items (``context``, ``question``, ``answerA``..``answerC``,
    ``label`` as a 0-based index), read from ``benchmarks_dir/socialiqa``."""
    root = Path(benchmarks_dir) / "socialiqa"
    lines = (root / "dev.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    labels = (root / "dev-labels.lst").read_text(encoding="utf-8").split()[:n]
    docs = []
    for line, label in zip(lines, labels, strict=True):
        row = json.loads(line)
        docs.append(
            {
                **{k: row[k] for k in ("context", "question", "answerA", "answerB", "answerC")},
                "label": int(label) - 1,
            }
        )
    return docs
