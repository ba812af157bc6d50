"""LLaMA-Factory's ShareGPT-style layout: a JSON list of records with a list of turns ("messages"
or "conversations"), an "images" list of paths (relative to the data folder, LLaMA-Factory's
media_dir) and `<image>` tags in the user turns, as LLaMA-Factory's mllm_demo.json has them.

The dataset_info.json beside the file, where LLaMA-Factory registers its data sets, may rename
the columns and the turns' keys and role tags (its "columns" and "tags"); byorn reads them from
there. A file without an entry there is taken as LLaMA-Factory's when its records have "messages"
or "images", with the role and text keys its first turn uses. `byorn clean` writes the cleaned
file as data.json with a dataset_info.json that registers it under the same name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from byorn.data import DataError, Sample, Source
from byorn.fileio import atomic_write_text
from byorn.formats.answers import rewrite_json_list
from byorn.formats.checks import parse_json, read_text
from byorn.formats.conversations import Names

DATASET_INFO = "dataset_info.json"
# LLaMA-Factory's defaults for the ShareGPT formatting, and the OpenAI-style names its docs show
SHAREGPT = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
            "system_tag": "system"}
OPENAI = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
          "system_tag": "system"}


def entry_for(path: Path) -> tuple[str, dict] | None:
    """The dataset_info.json entry (its name and body) beside `path` that registers that file."""
    info_path = path.parent / DATASET_INFO
    if not info_path.is_file():
        return None
    info = parse_json(read_text(info_path), info_path)
    if not isinstance(info, dict):
        raise DataError(f"{info_path}: must be a JSON object of data set entries, got {type(info).__name__}")
    found = [(name, entry) for name, entry in info.items() if isinstance(entry, dict)
             and entry.get("file_name") == path.name]
    if len(found) > 1:
        raise DataError(f"{info_path}: entries {[n for n, _ in found]} all register {path.name}; byorn cannot tell "
                        "which columns and tags to read")
    return found[0] if found else None


def names_of(path: Path, records: list) -> tuple[Names, dict[str, Any]] | None:
    """The names LLaMA-Factory's layout gives this file's parts, and what clean needs to register
    the cleaned file (Source.options); None for a file that is not LLaMA-Factory's (neither
    registered beside it nor shaped as its are)."""
    found = entry_for(path)
    if found is None:
        first = next((r for r in records if isinstance(r, dict)), {})
        if "messages" not in first and "images" not in first:
            return None
        column = "messages" if "messages" in first else "conversations"
        turns = first.get(column) if isinstance(first.get(column), list) else []
        openai = any(isinstance(t, dict) and "role" in t for t in turns)
        return _names(column, "images", OPENAI if openai else SHAREGPT), {}
    name, entry = found
    where = f"{path.parent / DATASET_INFO}: entry {name!r}"
    if entry.get("formatting", "alpaca") != "sharegpt":
        formatting = entry.get("formatting", "alpaca (the default)")
        raise DataError(f"{where}, field 'formatting': {formatting!r}; byorn reads LLaMA-Factory's sharegpt "
                        "formatting (conversations as lists of turns)")
    columns, tags = entry.get("columns", {}), entry.get("tags", {})
    if not isinstance(columns, dict) or not isinstance(tags, dict):
        raise DataError(f"{where}: fields 'columns' and 'tags' must be JSON objects")
    return _names(columns.get("messages", "conversations"), columns.get("images", "images"), {**SHAREGPT, **tags}), \
        {"dataset": name, "entry": entry}


def _names(messages: str, images: str, tags: Mapping[str, str]) -> Names:
    roles = {tags["user_tag"]: "human", tags["assistant_tag"]: "gpt", tags["system_tag"]: "system"}
    return Names("llamafactory", messages, tags["role_tag"], tags["content_tag"], roles, images, ids_required=False)


def rewrite_llamafactory(source: Source, records: Mapping[int, Sequence[Sample]], answers: Mapping[str, str],
                         target: Path) -> None:
    """The records written back (byorn.formats.answers), and beside them a dataset_info.json that
    registers the cleaned file under the input's entry name, with its columns and tags."""
    rewrite_json_list(source, records, answers, target)
    if source.options.get("dataset"):
        entry = {**source.options["entry"], "file_name": target.name}
        entry.pop("file_sha1", None)  # the input's checksum: the cleaned file has other bytes
        info = {source.options["dataset"]: entry}
        atomic_write_text(target.parent / DATASET_INFO, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
