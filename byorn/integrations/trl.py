"""BYORn inside TRL's `SFTTrainer`, for a vision data set in TRL's layout: rows with "images" (or
"image"; an empty list for a text-only row) and "messages" (one user turn, one assistant turn; a
system turn may come first).

`judge_dataset` judges every row once, before training, under the frozen pretrained model (the
shipped default judgement, its scores cached and its audit log written to `run_dir`);
`ByornCollator` wraps TRL's collator and gives each flagged row the reference's own answer as its
assistant message, batch by batch, so the attacker's response never reaches the loss. The rows
need an id column (default "id") so that a batch's rows can be matched with the verdicts, and
`SFTConfig(remove_unused_columns=False)` keeps it in the batches.

    defense = judge_dataset(vlm, dataset, run_dir="runs/sft")
    collator = ByornCollator(DataCollatorForVisionLanguageModeling(vlm.processor), defense)
    SFTTrainer(model=vlm.model, args=SFTConfig(..., remove_unused_columns=False), train_dataset=dataset,
               processing_class=vlm.processor, data_collator=collator).train()

The replacements are the frozen reference's answers (`generator=reference`, the default): the
model being fine-tuned writing them (`generator=current`) needs byorn's own trainer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from byorn.config import ConfigError
from byorn.data import DataError, Sample
from byorn.defenses.byorn import ByornConfig, ByornDefense
from byorn.models.hf import VLM


def judge_dataset(vlm: VLM, rows: Iterable[Mapping[str, Any]], config: ByornConfig | None = None,
                  run_dir: str | Path = ".", id_column: str = "id") -> ByornDefense:
    """BYORn's judgement of every row (scores, flags, the reference's answers, audit.jsonl in run_dir)."""
    config = config or ByornConfig()
    if config.generator != "reference":
        raise ConfigError("under SFTTrainer the replacements are the frozen reference's answers: "
                          "generator=current needs `byorn train --defense byorn`")
    samples = [row_to_sample(row, index, id_column) for index, row in enumerate(rows)]
    defense = ByornDefense(config)
    defense.prepare(vlm, samples, run_dir)
    return defense


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
    images = row.get("images") if "images" in row else [row.get("image")]
    if not isinstance(images, list) or len(images) > 1 or None in images:
        raise DataError(f"{where}, field 'images': expected one image, or none for a text-only row, got "
                        f"{images!r:.80}")
    user, assistant = _single_turn(row.get("messages"), where)
    return Sample(str(row[id_column]), images[0] if images else None, _text(user["content"], where),
                  _text(assistant["content"], where))


def _single_turn(messages: Any, where: str) -> tuple[Mapping, Mapping]:
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}, field 'messages': expected a non-empty list of {{role, content}}")
    turns = [m for m in messages if not (isinstance(m, Mapping) and m.get("role") == "system")]
    roles = [m.get("role") if isinstance(m, Mapping) else type(m).__name__ for m in turns]
    if roles != ["user", "assistant"]:
        raise DataError(f"{where}, field 'messages': expected one user turn then one assistant turn, got {roles}")
    return turns[0], turns[1]


def _text(content: Any, where: str) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text") or "" for part in content if isinstance(part, Mapping)
                       and part.get("type") == "text")
    raise DataError(f"{where}, field 'content': expected a string or a list of content parts, got "
                    f"{type(content).__name__}")


def with_answer(row: Mapping[str, Any], answer: str) -> dict[str, Any]:
    """A copy of `row` whose assistant message says `answer` (content in the row's own form)."""
    messages = []
    for message in row["messages"]:
        if message.get("role") == "assistant":
            content = answer if isinstance(message["content"], str) else [{"type": "text", "text": answer}]
            message = {**message, "content": content}
        messages.append(message)
    return {**row, "messages": messages}


class ByornCollator:
    """TRL's collator, with each flagged row's assistant message replaced by the reference's answer
    before it is tokenised; `replaced` counts the rows replaced so far."""

    def __init__(self, collator: Callable[[list[dict]], Any], defense: ByornDefense, id_column: str = "id") -> None:
        if defense.flagging is None:
            raise RuntimeError("judge_dataset() (ByornDefense.prepare) must run before training")
        self.collator, self.answers, self.id_column = collator, defense.reference_answers, id_column
        self.replaced = 0

    def __call__(self, examples: list[dict]) -> Any:
        defended = []
        for example in examples:
            answer = self.answers.get(str(example[self.id_column]))
            if answer is not None:
                example = with_answer(example, answer)
                self.replaced += 1
            defended.append({k: v for k, v in example.items() if k != self.id_column})
        return self.collator(defended)
