"""Conversational rows, the layout of TRL's vision data sets and of Hugging Face datasets made for
them: "images" (a list: one image, or none for a text-only row; or "image") and "messages" (one
user turn and one assistant turn, a system turn allowed first; content a string or a list of
parts), plus an id column. Converted to and from byorn's Samples, with errors that name the row
and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from byorn.data import DataError, Sample


def sample_to_row(sample: Sample, id_column: str = "id") -> dict[str, Any]:
    """A byorn Sample as a TRL row: its id, its image, one user and one assistant message."""
    return {id_column: sample.id, "images": [sample.pil()] if sample.has_image else [],
            "messages": [{"role": "user", "content": sample.instruction},
                         {"role": "assistant", "content": sample.response}]}


def row_to_sample(row: Mapping[str, Any], index: int, id_column: str = "id") -> Sample:
    """One TRL row as the Sample BYORn judges: its image, the user turn's text, the assistant's."""
    where = f"row {index}"
    if id_column not in row:
        raise DataError(f"{where}: no {id_column!r} column; BYORn matches a batch's rows with its verdicts by id")
    identity = row[id_column]
    if isinstance(identity, bool) or not isinstance(identity, (str, int)) or not str(identity).strip():
        raise DataError(f"{where}, field {id_column!r}: expected a non-empty string or an integer, got {identity!r}")
    images = row.get("images") if "images" in row else [] if row.get("image") is None else [row["image"]]
    if not isinstance(images, list) or len(images) > 1 or None in images:
        raise DataError(f"{where}, field 'images': expected one image, or none for a text-only row, got "
                        f"{images!r:.80}")
    user, assistant = _single_turn(row.get("messages"), where)
    texts = {role: _text(row["messages"][i].get("content"), where, f"messages[{i}].content")
             for role, i in (("user", user), ("assistant", assistant))}
    if blank := next((role for role, text in texts.items() if not text.strip()), None):
        raise DataError(f"{where}, field 'messages': the {blank} turn has no text")
    return Sample(str(identity), images[0] if images else None, texts["user"], texts["assistant"])


def _single_turn(messages: Any, where: str) -> tuple[int, int]:
    """The indices of the user and the assistant message."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}, field 'messages': expected a non-empty list of {{role, content}}")
    turns = [i for i, m in enumerate(messages) if not (isinstance(m, Mapping) and m.get("role") == "system")]
    roles = [messages[i].get("role") if isinstance(messages[i], Mapping) else type(messages[i]).__name__
             for i in turns]
    if roles != ["user", "assistant"]:
        raise DataError(f"{where}, field 'messages': expected one user turn then one assistant turn, got {roles}")
    return turns[0], turns[1]


def _text(content: Any, where: str, field: str) -> str:
    """A message's text: a string, or the text parts of a list of content parts (a text part's
    text a string; None, as a column shared with image parts leaves it, is no text)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise DataError(f"{where}, field {field!r}: expected a string or a list of content parts, got "
                        f"{type(content).__name__}")
    texts = []
    for j, part in enumerate(content):
        if not (isinstance(part, Mapping) and part.get("type") == "text"):
            continue
        if not isinstance(part.get("text"), (str, type(None))):
            raise DataError(f"{where}, field '{field}[{j}].text': expected a string, got "
                            f"{type(part['text']).__name__} {part['text']!r:.40}")
        texts.append(part.get("text") or "")
    return "".join(texts)


def with_answer(row: Mapping[str, Any], answer: str) -> dict[str, Any]:
    """A copy of `row` whose assistant message says `answer` (content in the row's own form)."""
    messages = []
    for message in row["messages"]:
        if message.get("role") == "assistant":
            content = answer if isinstance(message["content"], str) else [{"type": "text", "text": answer}]
            message = {**message, "content": content}
        messages.append(message)
    return {**row, "messages": messages}
