"""Records that hold a conversation as a list of turns, LLaVA's and LLaMA-Factory's ShareGPT-style
layout alike: each user turn (without its `<image>` placeholder) an instruction, the assistant turn
after it its response. The layouts differ only in names (`Names`): the list's key, a turn's role
and text keys, the role tags, and where the image is (LLaVA's one "image", LLaMA-Factory's
"images" list).

A conversation of several turns gives, with multi_turn="each", one sample per answer, "ID#1",
"ID#2", ..., each with the turns before it as its history and its place in the conversation as
`Sample.turn`; "first" keeps the first pair and records the number of dropped turns in
meta["extra_turns"]; "error" refuses them. A record without an image is text-only (no
placeholder); a placeholder without an image, several, or one after the first user turn is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

from tqdm.auto import tqdm

from byorn.data import DataError, Origin, Sample, Source, Turn, turn_id
from byorn.formats.checks import LoadChecks, check_image_key, image_path, parse_json, read_text, to_sample
from byorn.outdir import refuse_unfinished

log = logging.getLogger(__name__)

MultiTurn = Literal["each", "first", "error"]
# A turn's "from": LLaVA's names, and the ShareGPT and chat names for the same roles.
ROLE_NAMES = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt", "system": "system"}


@dataclass(frozen=True)
class Names:
    """What a layout calls a record's parts; `roles` maps each role tag to human, gpt or system."""

    layout: str = "llava"
    messages: str = "conversations"
    role: str = "from"
    content: str = "value"
    roles: Mapping[str, str] = field(default_factory=lambda: dict(ROLE_NAMES))
    images: str | None = None  # a list of image paths (LLaMA-Factory); None: one path in "image" (LLaVA)
    ids_required: bool = True  # LLaVA records carry an id; LLaMA-Factory's need none (the index stands in)


def load_conversations(path: Path, root: Path, names_of: Callable[[list], tuple[Names, Mapping[str, Any]]],
                       multi_turn: MultiTurn, checks: LoadChecks) -> list[Sample]:
    """The samples of a JSON list of conversation records, named as `names_of(records)` says (with
    what the layout keeps in Source.options)."""
    if multi_turn not in ("each", "first", "error"):
        raise ValueError(f"multi_turn must be 'each', 'first' or 'error', got {multi_turn!r}")
    refuse_unfinished(path)
    records = parse_json(read_text(path), path)
    if not isinstance(records, list):
        raise DataError(f"{path}: top level must be a list of records, got {type(records).__name__}")
    names, options = names_of(records)
    # only every answer loaded can be written back in place: "first" leaves later ones out
    source = Source(path, names.layout, root, options) if multi_turn == "each" else None
    samples, seen = [], {}
    for i, record in enumerate(tqdm(records, desc=f"reading {path.name}", disable=None, leave=False)):
        try:
            samples += _record(record, i, f"{path}[{i}]", root, seen, names, multi_turn, checks, source)
        except DataError as error:
            checks.handle(error)
    if leading := sum("turns_before_first_human" in s.meta for s in samples):
        log.warning("%s: %d record(s) begin with turns before the first human one (a system prompt, say), which "
                    "byorn does not train on; meta['turns_before_first_human'] counts them", path, leading)
    return samples


def _first_pair(record: dict[str, Any], loc: str, names: Names, multi_turn: str) -> tuple[int, int]:
    """Index of the first human turn and the number of turns besides it and its gpt answer."""
    key = names.messages
    turns = record.get(key)
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{loc}: field {key!r}: must be a non-empty list of turns, got {turns!r:.80}")
    for j, turn in enumerate(turns):
        if not (isinstance(turn, dict) and isinstance(turn.get(names.role), str)
                and isinstance(turn.get(names.content), str)):
            raise DataError(f"{loc}: field '{key}[{j}]': must be an object with string {names.role!r} and "
                            f"{names.content!r}")
    if unknown := sorted({turn[names.role] for turn in turns} - set(names.roles)):
        raise DataError(f"{loc}: field {key!r}: unknown role(s) {unknown}; known: {', '.join(names.roles)}")
    roles = [names.roles[turn[names.role]] for turn in turns]
    if "human" not in roles:
        raise DataError(f"{loc}: field {key!r}: no 'human' turn")
    human = roles.index("human")
    if roles[human + 1:human + 2] != ["gpt"]:
        raise DataError(f"{loc}: field {key!r}: the 'human' turn {key}[{human}] is not followed by a 'gpt' turn")
    extra = len(turns) - 2
    # Dropping later turns changes what the model is trained on, so it must be asked for.
    if extra and multi_turn == "error":
        raise DataError(f"{loc}: field {key!r}: {extra} turn(s) besides the first human/gpt pair; "
                        f"pass multi_turn='first' to keep only that pair")
    return human, extra


def _turn_pairs(turns: list[dict], first: int, loc: str, names: Names) -> list[int]:
    """The index of every human turn of a conversation that alternates human and gpt from `first`."""
    roles = [names.roles[turn[names.role]] for turn in turns[first:]]
    if len(roles) % 2 or roles != ["human", "gpt"] * (len(roles) // 2):
        raise DataError(f"{loc}: field {names.messages!r}: turns must alternate human and gpt from the first "
                        f"human turn, got {roles}")
    return list(range(first, len(turns), 2))


def _images_of(record: dict, loc: str, names: Names) -> list:
    """The record's image paths as it gives them, in order: LLaVA's "image" one path or a list
    (as LLaVA-OneVision's data has it), LLaMA-Factory's a list; none for a text-only record."""
    if names.images is None:
        check_image_key(record, loc)
    key = names.images or "image"
    images = record.get(key)
    if images is None:
        return []
    if names.images is None and not isinstance(images, list):
        return [images]  # one path (checked as the image field)
    if not isinstance(images, list):
        raise DataError(f"{loc}: field {key!r}: must be a list of image paths, got {images!r:.80}")
    return images


def _check_placeholders(turns: list[dict], human: int, images: list, loc: str, names: Names) -> None:
    """Each image has its <image> placeholder, all in the first human turn (byorn shows a
    conversation's images there, in order); one image may go without (LLaVA's scripts add it)."""
    text, key, field = names.content, names.messages, names.images or "image"
    placeholders = [j for j, turn in enumerate(turns) if "<image>" in turn[text]]
    count = sum(turns[j][text].count("<image>") for j in placeholders)
    if placeholders and placeholders[0] != human or len(placeholders) > 1:
        later = next(j for j in placeholders if j != human)
        raise DataError(f"{loc}: field '{key}[{later}].{text}': the <image> placeholder must be in the first human "
                        "turn")
    if count and not images:
        raise DataError(f"{loc}: field {field!r}: the human turn has an <image> placeholder but the record no image")
    if count > len(images):
        raise DataError(f"{loc}: field {key!r}: {count} <image> placeholders for {len(images)} image(s); each "
                        "image has one placeholder, in order")
    if len(images) > max(count, 1):
        raise DataError(f"{loc}: field {field!r}: {len(images)} images but {count} <image> placeholder(s) in the "
                        "human turn; each image needs its placeholder, in order")


def _record(record: Any, index: int, where: str, root: Path, seen: dict[str, str], names: Names, multi_turn: str,
            checks: LoadChecks, source: Source | None) -> list[Sample]:
    if not isinstance(record, dict):
        raise DataError(f"{where}: record must be a JSON object, got {type(record).__name__}")
    if not names.ids_required and "id" not in record:
        record = {**record, "id": str(index)}  # LLaMA-Factory's records need no id: the index names it
    loc = where + (f" (id {record['id']!r})" if isinstance(record.get("id"), str) else "")
    images = _images_of(record, loc, names)
    human, extra = _first_pair(record, loc, names, "first" if multi_turn == "each" else multi_turn)
    turns = record[names.messages]
    pairs = _turn_pairs(turns, human, loc, names) if multi_turn == "each" else [human]
    if len(pairs) > 1:  # its turns' ids are built on the record's: it must be one, and not taken
        if not isinstance(record.get("id"), str) or not record["id"].strip():
            raise DataError(f"{loc}: field 'id': must be a non-empty string, got {record.get('id')!r}")
        if record["id"] in seen:
            raise DataError(f"{loc}: field 'id': duplicate id {record['id']!r} (first at {seen[record['id']]})")
        seen[record["id"]] = where
    text, key = names.content, names.messages
    _check_placeholders(turns, human, images, loc, names)
    samples, history = [], []
    labels = {"image": names.images or "image"}
    more = _more_images(images[1:], loc, root, checks, names.images or "image")
    for number, j in enumerate(pairs, 1):
        fields = {key: record[key] for key in ("id", "meta") if key in record}
        fields["image"] = images[0] if images else None
        fields["instruction"] = turns[j][text].replace("<image>", "").strip()
        fields["response"] = turns[j + 1][text]
        if len(pairs) > 1:
            fields["id"] = turn_id(record["id"], number)
        labels |= {"instruction": f"{key}[{j}].{text}", "response": f"{key}[{j + 1}].{text}"}
        sample = to_sample(fields, loc, where, root, seen, checks, labels)
        sample.history, sample.more_images = tuple(history), more
        if len(pairs) > 1:  # the record's layout, not its meta, makes the turns one conversation
            sample.turn = Turn(record["id"], number, len(pairs), tuple(s.id for s in samples))
        if source is not None:
            sample.origin = Origin(source, index, (key, j + 1, text), len(pairs), tuple(images))
        history.append((sample.instruction, sample.response))
        samples.append(sample)
    if extra and multi_turn == "first":
        samples[0].meta.setdefault("extra_turns", extra)
    if human:  # a system prompt (or a gpt turn) before the first human turn: a sample has no place for it
        samples[0].meta.setdefault("turns_before_first_human", human)
    return samples


def _more_images(references: list, loc: str, root: Path, checks: LoadChecks, field: str) -> tuple[Path, ...]:
    """A record's images after the first, each held to the checks of the first."""
    def fail(name: str, problem: str) -> NoReturn:
        raise DataError(f"{loc}: field {name!r}: {problem}")

    return tuple(image_path(reference, root, checks, fail, f"{loc}: field '{field}[{k}]'", f"{field}[{k}]")
                 for k, reference in enumerate(references, 1))
