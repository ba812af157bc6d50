"""LLaVA's conversation JSON: a list of records with id, image (one path, relative to the image
folder) and conversations [{from: human|gpt, value}] (ShareGPT's and chat role names read the
same); byorn adds an optional meta. Read by byorn.formats.conversations."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from byorn.data import DataError, Sample, conversation_of
from byorn.fileio import atomic_write_text
from byorn.formats.checks import DEFAULT_CHECKS, LoadChecks, image_root_of
from byorn.formats.conversations import MultiTurn, Names, load_conversations
from byorn.formats.images import write_images

LLAVA = Names()


def load_llava_json(path: str | Path, image_root: str | Path | None = None, multi_turn: MultiTurn = "each",
                    checks: LoadChecks = DEFAULT_CHECKS) -> list[Sample]:
    """A JSON list of LLaVA records: id, image, conversations [{from: human|gpt, value}], optional
    meta; each answer a sample (byorn.formats.conversations says how). save_llava_json puts a
    conversation's turns back together (the record's meta is each turn's, untouched). image_root
    defaults to the file's folder."""
    path = Path(path)
    return load_conversations(path, image_root_of(path, image_root), lambda _: (LLAVA, {}), multi_turn, checks)


def save_llava_json(samples: Sequence[Sample], out_dir: str | Path, name: str = "data.json") -> Path:
    """Write `out_dir/name` (a list of LLaVA records with a "meta" key) and `out_dir/images/*.png`;
    the turns of one conversation (meta["record"]) go back into one record, each turn's meta in
    meta["turns_meta"]."""
    out_dir = Path(out_dir)
    conversations = _conversations(samples)
    images = write_images([turns[0] for turns in conversations], out_dir)
    records = [_llava_out(turns, image) for turns, image in zip(conversations, images)]
    text = json.dumps(records, ensure_ascii=False, indent=1, allow_nan=False) + "\n"
    atomic_write_text(out_dir / name, text)
    return out_dir / name


# what the LLaVA loader adds to a record's first sample's meta and the writer leaves out: turns
# before the first human one are not kept, so nothing is left to count
_HEAD_ONLY_KEYS = ("turns_before_first_human",)


def _conversations(samples: Sequence[Sample]) -> list[list[Sample]]:
    """The samples grouped into the conversations they came from: consecutive turns of one
    conversation (Sample.turn, as the loader found it); any other sample alone."""
    groups: list[list[Sample]] = []
    started: set[str] = set()
    for sample in samples:
        if groups and _next_turn(groups[-1][-1], sample):
            if sample.image != groups[-1][0].image:
                raise DataError(f"record {conversation_of(sample)!r}: its turns show different images (an image "
                                "trigger on some of them?), and a LLaVA record holds one image; save as JSONL, one "
                                "sample a line with its history")
            groups[-1].append(sample)
            continue
        if (record := conversation_of(sample)) in started:
            raise DataError(f"sample {sample.id!r}: turns of record {record!r} are not together and in order; a "
                            "LLaVA record is written once")
        if record is not None:
            started.add(record)
        groups.append([sample])
    return groups


def _next_turn(last: Sample, sample: Sample) -> bool:
    """Whether `sample` is the turn after `last` in one conversation as its loader found it."""
    before, now = last.turn, sample.turn
    return (before is not None and now is not None and now.record == before.record and now.count == before.count
            and now.number == before.number + 1)


def _llava_out(turns: list[Sample], image: str | None) -> dict:
    head = turns[0]
    asked = [*head.history, *((t.instruction, t.response) for t in turns)]  # earlier turns first
    conversation = []
    for index, (instruction, response) in enumerate(asked):
        shown = f"<image>\n{instruction}" if image and index == 0 else instruction
        conversation += [{"from": "human", "value": shown}, {"from": "gpt", "value": response}]
    meta = {k: v for k, v in head.meta.items() if k not in _HEAD_ONLY_KEYS}
    if len(asked) > 1:
        meta["turns_meta"] = [{k: v for k, v in t.meta.items() if k not in (*_HEAD_ONLY_KEYS, "source")}
                              for t in turns]
    return {"id": conversation_of(head) or head.id, **({"image": image} if image else {}),
            "conversations": conversation, "meta": meta}
