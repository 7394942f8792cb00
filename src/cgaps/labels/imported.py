"""Imported labels (docs/method.md §5): a Neuronpedia explanations export, or a plain table.

Two formats, told apart by the file name:

- **Neuronpedia explanations** (``.json``: a list of records, or ``.jsonl``; either may be
  ``.gz``): Neuronpedia's export writes one record per explanation with ``modelId`` (the
  model, e.g. ``gemma-2-2b``), ``layer`` (the SAE/source id, e.g. ``20-gemmascope-res-16k``;
  ``source`` is accepted too, as the API names it), ``index`` (the latent, a string or an
  integer) and ``description`` (the explanation); other fields (``explanationModelName``,
  ``typeName``, scores) are ignored. Every record must name the run's model and SAE: a file
  made for another model or SAE is refused, naming both ids, since its latent numbers mean
  other things. The run's ids are, unless given, the last path segment of the reader model's
  name (lower case) and the SAE id from ``run.json``; Neuronpedia's names often differ from
  those, so ``--neuronpedia-model`` / ``--neuronpedia-sae`` say which ids the run has there.
  The first explanation of a latent wins.
- **A table** (``.csv`` or ``.parquet``) with columns ``concept`` and ``label``.

:class:`ImportedLabels` is the :class:`cgaps.seams.LabelSource` of either.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cgaps.errors import CGapsError

NEURONPEDIA_SOURCE = "neuronpedia"
TABLE_SOURCE = "imported"
_SAE_KEYS = ("layer", "source")


def model_key(name: str) -> str:
    """A model name as Neuronpedia ids compare: its last path segment, lower case."""
    return name.rstrip("/").rsplit("/", 1)[-1].lower()


def _records(path: Path) -> list[dict[str, Any]]:
    name = path.name.lower().removesuffix(".gz")
    opener: Any = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            if name.endswith(".jsonl"):
                rows = []
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as e:
                            raise CGapsError(f"{path}: line {n}: invalid JSON ({e.msg})") from e
                return rows
            data = json.load(fh)
    except json.JSONDecodeError as e:
        raise CGapsError(f"{path}: invalid JSON at line {e.lineno} ({e.msg})") from e
    except (OSError, UnicodeDecodeError) as e:
        raise CGapsError(f"{path}: cannot be read ({e})") from e
    if isinstance(data, dict):  # one record, or {"explanations": [...]}
        data = data.get("explanations", [data])
    if not isinstance(data, list):
        raise CGapsError(f"{path}: expected a JSON list of explanation records")
    return data


class ImportedLabels:
    """:class:`cgaps.seams.LabelSource` reading a label file (module docstring)."""

    def __init__(self, path: str | Path, *, model: str, sae: str):
        self.path = Path(path)
        self.model, self.sae = model, sae
        if not self.path.is_file():
            raise CGapsError(f"{self.path}: no such file; pass a Neuronpedia export or a concept,label table")
        suffix = self.path.name.lower().removesuffix(".gz")
        self.name = NEURONPEDIA_SOURCE if suffix.endswith((".json", ".jsonl")) else TABLE_SOURCE
        if self.name == TABLE_SOURCE and not suffix.endswith((".csv", ".parquet")):
            raise CGapsError(
                f"{self.path}: unknown label file type; use .json/.jsonl (Neuronpedia export) or .csv/.parquet"
            )

    def _table(self) -> pd.DataFrame:
        if self.name == NEURONPEDIA_SOURCE:
            return self._neuronpedia()
        try:
            df = pd.read_csv(self.path) if self.path.suffix.lower() == ".csv" else pd.read_parquet(self.path)
        except Exception as e:  # pandas/pyarrow raise many unrelated types for a bad file
            raise CGapsError(f"{self.path}: not a readable table ({e})") from e
        missing = [c for c in ("concept", "label") if c not in df.columns]
        if missing:
            raise CGapsError(
                f"{self.path}: missing column(s) {', '.join(missing)}; a label table has concept,label"
            )
        return df[["concept", "label"]]

    def _neuronpedia(self) -> pd.DataFrame:
        rows = []
        for n, rec in enumerate(_records(self.path), 1):
            if not isinstance(rec, dict):
                raise CGapsError(f"{self.path}: record {n} is not a JSON object")
            missing = [k for k in ("modelId", "index", "description") if k not in rec]
            sae_key = next((k for k in _SAE_KEYS if k in rec), None)
            if missing or sae_key is None:
                need = missing + ([] if sae_key else ["layer"])
                raise CGapsError(
                    f"{self.path}: record {n} has no {', '.join(need)}; Neuronpedia explanation records "
                    "carry modelId, layer, index and description"
                )
            model, sae = str(rec["modelId"]), str(rec[sae_key])
            if model_key(model) != model_key(self.model):
                raise CGapsError(
                    f"{self.path}: record {n} is for model {model!r}, but this run's model is {self.model!r}; "
                    "import the export of this model, or pass --neuronpedia-model if they are the same"
                )
            if sae != self.sae:
                raise CGapsError(
                    f"{self.path}: record {n} is for SAE {sae!r}, but this run's SAE is {self.sae!r}; "
                    "import the export of this SAE, or pass --neuronpedia-sae if they are the same"
                )
            rows.append({"concept": rec["index"], "label": rec["description"], "row": n})
        return pd.DataFrame(rows, columns=["concept", "label", "row"])

    def labels(self, n_concepts: int) -> pd.DataFrame:
        df = self._table()
        concept = pd.to_numeric(df["concept"], errors="coerce")
        bad = concept.isna() | (concept != concept.round()) | (concept < 0) | (concept >= n_concepts)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            where = f"record {df['row'].iloc[i]}" if "row" in df.columns else f"row {i}"
            raise CGapsError(
                f"{self.path}: {where}: concept {df['concept'].astype(object).iloc[i]!r} is not a latent index in "
                f"0..{n_concepts - 1} (the run's SAE width)"
            )
        labels = [""] * n_concepts
        filled = [False] * n_concepts
        for c, text in zip(concept.astype(int), df["label"], strict=True):
            if not filled[c] and isinstance(text, str) and text.strip():
                labels[c], filled[c] = " ".join(text.split()), True
        return pd.DataFrame(
            {
                "concept": np.arange(n_concepts, dtype=np.int32),
                "label": labels,
                "source": [self.name if f else "" for f in filled],
            }
        )
