"""Conversational rows, the layout of TRL's vision data sets and of Hugging Face datasets made for
them: "images" (a list: one image, several for the families that take them, or none for a
text-only row; or "image") and "messages" (user
and assistant turns in turn, one exchange or several, system turns allowed; content a string or a
list of parts), plus an id column. Converted to and from byorn's Samples, with errors that name the
row and the field: each assistant turn is a sample, judged given the exchanges before it, as a
LLaVA record's turns are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from byorn.data import DataError, Sample, Turn, turn_id


def sample_to_row(sample: Sample, id_column: str = "id") -> dict[str, Any]:
    """A byorn Sample as a TRL row: its id, its image, one user and one assistant message."""
    return {id_column: sample.id, "images": sample.pils(),
            "messages": [{"role": "user", "content": sample.instruction},
                         {"role": "assistant", "content": sample.response}]}


def row_to_sample(row: Mapping[str, Any], index: int, id_column: str = "id") -> Sample:
    """One TRL row of one exchange as the Sample BYORn judges: its image, the user turn's text, the
    assistant's (a row of several exchanges: row_to_samples)."""
    samples = row_to_samples(row, index, id_column)
    if len(samples) > 1:
        raise DataError(f"row {index}, field 'messages': {len(samples)} exchanges; expected one user turn then one "
                        "assistant turn")
    return samples[0]


def row_to_samples(row: Mapping[str, Any], index: int, id_column: str = "id") -> list[Sample]:
    """One TRL row as the samples BYORn judges, one per assistant turn: the user turn before it
    its instruction, the exchanges before those its history. A row of several exchanges gives ids
    ID#1, ID#2, ... linked by `Sample.turn`, as the LLaVA loader names a record's turns."""
    where = f"row {index}"
    if id_column not in row:
        raise DataError(f"{where}: no {id_column!r} column; BYORn matches a batch's rows with its verdicts by id")
    identity = row[id_column]
    if isinstance(identity, bool) or not isinstance(identity, (str, int)) or not str(identity).strip():
        raise DataError(f"{where}, field {id_column!r}: expected a non-empty string or an integer, got {identity!r}")
    images = row.get("images") if "images" in row else [] if row.get("image") is None else [row["image"]]
    if not isinstance(images, list) or None in images:
        raise DataError(f"{where}, field 'images': expected a list of images (none for a text-only row), got "
                        f"{images!r:.80}")
    pairs = exchanges(row.get("messages"), where)
    samples: list[Sample] = []
    for number, (user, assistant) in enumerate(pairs, 1):
        texts = {role: _text(row["messages"][i].get("content"), where, f"messages[{i}].content")
                 for role, i in (("user", user), ("assistant", assistant))}
        if blank := next((role for role, text in texts.items() if not text.strip()), None):
            raise DataError(f"{where}, field 'messages': the {blank} turn has no text")
        several = len(pairs) > 1
        turn = Turn(str(identity), number, len(pairs), tuple(s.id for s in samples)) if several else None
        samples.append(Sample(turn_id(str(identity), number) if several else str(identity),
                              images[0] if images else None, texts["user"], texts["assistant"],
                              history=tuple((s.instruction, s.response) for s in samples), turn=turn,
                              more_images=tuple(images[1:])))
    return samples


def exchanges(messages: Any, where: str) -> list[tuple[int, int]]:
    """The indices of each user message and the assistant message that answers it; system
    messages stand anywhere and are no exchange's."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}, field 'messages': expected a non-empty list of {{role, content}}")
    turns = [i for i, m in enumerate(messages) if not (isinstance(m, Mapping) and m.get("role") == "system")]
    roles = [messages[i].get("role") if isinstance(messages[i], Mapping) else type(messages[i]).__name__
             for i in turns]
    if not roles or roles != ["user", "assistant"] * (len(roles) // 2):
        raise DataError(f"{where}, field 'messages': expected one user turn then one assistant turn, got {roles} "
                        "(a row of several exchanges repeats the pair)")
    return list(zip(turns[::2], turns[1::2]))


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
    """A copy of a row of one exchange whose assistant message says `answer`."""
    return with_answers(row, [answer])


def with_answers(row: Mapping[str, Any], answers: Sequence[str | None]) -> dict[str, Any]:
    """A copy of `row` whose k-th assistant message says answers[k] where that is not None
    (content in the row's own form); the row itself is left untouched."""
    messages, k = [], 0
    for message in row["messages"]:
        if isinstance(message, Mapping) and message.get("role") == "assistant":
            answer, k = (answers[k] if k < len(answers) else None), k + 1
            if answer is not None:
                content = answer if isinstance(message["content"], str) else [{"type": "text", "text": answer}]
                message = {**message, "content": content}
        messages.append(message)
    return {**row, "messages": messages}
