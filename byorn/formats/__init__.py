"""Users' data files in and out, by layout: LLaVA conversation JSON (`llava`), LLaMA-Factory's
ShareGPT-style JSON (`llamafactory`), byorn's JSONL (`jsonl`), Hugging Face data sets of TRL's
conversational rows (`rows`: a folder or Parquet); what every loader checks is in `checks`.

Loading keeps paths, not pixels, and gives each sample its `Origin`, so `write_back` writes the
user's file again with only the replaced answers (or dropped records) changed; the `save_*`
writers write samples made in memory (a built-in world's), their images as PNG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from byorn.data import DataError, Sample, Source
from byorn.formats import llamafactory
from byorn.formats.answers import rewrite_json_list, whole_records
from byorn.formats.checks import DEFAULT_CHECKS, MAX_CHARS, LoadChecks, image_root_of
from byorn.formats.conversations import load_conversations
from byorn.formats.jsonl import load_jsonl, rewrite_jsonl, save_jsonl
from byorn.formats.llava import LLAVA, load_llava_json, save_llava_json
from byorn.formats.rows import load_rows, rewrite_rows, save_rows

# what `byorn clean` names the file it writes for each layout
DATA_NAMES = {"llava": "data.json", "llamafactory": "data.json", "jsonl": "data.jsonl", "rows": "data",
              "parquet": "data.parquet"}
_REWRITERS = {"llava": rewrite_json_list, "llamafactory": llamafactory.rewrite_llamafactory, "jsonl": rewrite_jsonl,
              "rows": rewrite_rows, "parquet": rewrite_rows}


def load_dataset(path: str | Path, image_root: str | Path | None = None,
                 checks: LoadChecks = DEFAULT_CHECKS) -> list[Sample]:
    """Load by form: .json is LLaVA's or LLaMA-Factory's conversation JSON (told by a
    dataset_info.json entry or the records' keys), .jsonl is one sample per line, a folder
    (`Dataset.save_to_disk`) or .parquet is a Hugging Face data set of conversational rows."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        def names_of(records: list):
            return llamafactory.names_of(path, records) or (LLAVA, {})

        return load_conversations(path, image_root_of(path, image_root), names_of, "each", checks)
    if suffix == ".jsonl":
        return load_jsonl(path, image_root, checks)
    if suffix == ".parquet" or path.is_dir():
        return load_rows(path, checks, image_root)
    raise DataError(f"{path}: unknown data set format {path.suffix!r}. Known: .json (LLaVA's or LLaMA-Factory's "
                    "conversations), .jsonl (one sample per line), a Hugging Face data set folder or .parquet "
                    "(TRL's rows)")


def write_back(source: Source, samples: Sequence[Sample], answers: Mapping[str, str], out_dir: Path) -> Path:
    """Write the file `source` (which the samples were loaded from) to `out_dir`/DATA_NAMES[its
    layout]: the records all of whose answers are among `samples`, each answer in `answers`
    replaced, and nothing else changed (its image references included: they name the user's own
    files, relative to the same image folder). Returns the file written."""
    target = out_dir / DATA_NAMES[source.layout]
    _REWRITERS[source.layout](source, whole_records(source, samples), answers, target)
    return target


__all__ = ["DATA_NAMES", "MAX_CHARS", "LoadChecks", "load_dataset", "load_jsonl", "load_llava_json", "load_rows",
           "save_jsonl", "save_llava_json", "save_rows", "write_back"]
