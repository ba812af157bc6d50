"""BYORn inside TRL's `SFTTrainer`, for a vision data set in TRL's layout: rows with "images" (or
"image"; an empty list for a text-only row) and "messages" (user and assistant turns, one exchange
or several, each answer judged on its own given the turns before it; system turns allowed).

`judge_dataset` judges every row once, before training, as BYORn does (the shipped default
judgement: the pretrained model, then the warmed reference; its scores cached and its audit log
written to `run_dir`);
`trains_on` keeps the rows that train (`dataset.filter`): a row with a flagged answer whose
replacement is unfit (byorn/defenses/replacements.py) is left out, as `byorn clean` leaves it out;
`ByornCollator` wraps TRL's collator and gives each flagged row its replacement answer as its
assistant message, batch by batch, so the attacker's response never reaches the loss (and refuses
a row that was left out). The rows need an id column (default "id") so that a batch's rows can be
matched with the verdicts, and `SFTConfig(remove_unused_columns=False)` keeps it in the batches.

    defense = judge_dataset(vlm, dataset, run_dir="runs/sft")
    collator = ByornCollator(DataCollatorForVisionLanguageModeling(vlm.processor), defense)
    SFTTrainer(model=vlm.model, args=SFTConfig(..., remove_unused_columns=False),
               train_dataset=dataset.filter(trains_on(defense)), processing_class=vlm.processor,
               data_collator=collator).train()

The replacements are written before training: by default by the warmed reference (the pretrained
model after a short fine-tune on the least suspicious rows, with `train`'s settings; give it the
settings of your SFT run), or by the frozen one (`generator=reference`). The model being fine-tuned
writing them (`generator=current`) needs byorn's own trainer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from byorn.chat_rows import row_to_sample, row_to_samples, sample_to_row, with_answer, with_answers
from byorn.config import ConfigError, TrainConfig
from byorn.defenses.byorn import ByornDefense
from byorn.defenses.byorn_config import ByornConfig
from byorn.models.hf import VLM


def judge_dataset(vlm: VLM, rows: Iterable[Mapping[str, Any]], config: ByornConfig | None = None,
                  run_dir: str | Path = ".", id_column: str = "id", train: TrainConfig | None = None) -> ByornDefense:
    """BYORn's judgement of every row (scores, flags, the replacement answers, audit.jsonl in run_dir).

    train: the settings of the warmed reference's short fine-tune (TrainConfig's defaults if None)."""
    config = config or ByornConfig()
    if config.writes_in_training:
        raise ConfigError("under SFTTrainer the replacements are written before training: "
                          f"generator={config.generator} needs `byorn train --defense byorn`")
    samples = [sample for index, row in enumerate(rows) for sample in row_to_samples(row, index, id_column)]
    # SFTTrainer runs its own steps from the weights it is given: the warm-up is not kept (the
    # verdict and answers are those of a run with warm_start)
    defense = ByornDefense(dataclasses.replace(config, warm_start=False))
    defense.prepare(vlm, samples, run_dir, train=train)
    return defense


def trains_on(defense: ByornDefense, id_column: str = "id") -> Callable[[Mapping[str, Any]], bool]:
    """Whether a row trains: False for one with a turn the judgement left out of training (its
    replacement unfit; audit.jsonl says why). For `dataset.filter(trains_on(defense))`."""
    def trains(row: Mapping[str, Any]) -> bool:
        return not any(turn.id in defense.left_out for turn in row_to_samples(row, 0, id_column))
    return trains


class ByornCollator:
    """TRL's collator, with each flagged row's assistant message replaced by its replacement answer
    before it is tokenised; `replaced` counts the rows replaced so far. A row left out of training
    (`trains_on`) is refused."""

    def __init__(self, collator: Callable[[list[dict]], Any], defense: ByornDefense, id_column: str = "id") -> None:
        if defense.flagging is None:
            raise RuntimeError("judge_dataset() (ByornDefense.prepare) must run before training")
        self.collator, self.answers, self.id_column = collator, defense.reference_answers, id_column
        self.judged, self.left_out = defense.judged, defense.left_out
        self.replaced = 0

    def __call__(self, examples: list[dict]) -> Any:
        defended = []
        for example in examples:
            if self.id_column not in example:  # the Trainer drops columns the model does not take
                raise ValueError(f"a batch row has no {self.id_column!r} column to match it with its verdict: give "
                                 "SFTConfig(remove_unused_columns=False), which keeps it")
            key = str(example[self.id_column])
            turns = row_to_samples(example, 0, self.id_column)  # one per exchange: ID, or ID#1, ID#2, ...
            # matched by id alone, another data set's rows would take this one's verdicts
            if any(self.judged.get(turn.id) != turn.response for turn in turns):
                raise ValueError(f"row {key!r} is not a row judge_dataset judged (another id, or another answer): "
                                 "judge the data set you train on")
            if left := next((turn.id for turn in turns if turn.id in self.left_out), None):
                raise ValueError(f"row {key!r} is left out of training ({self.left_out[left]}; audit.jsonl): train "
                                 "on dataset.filter(trains_on(defense))")
            answers = [self.answers.get(turn.id) for turn in turns]
            if any(answer is not None for answer in answers):  # a later exchange reads the replaced one
                example = with_answers(example, answers)
                self.replaced += 1
            defended.append({k: v for k, v in example.items() if k != self.id_column})
        return self.collator(defended)


__all__ = ["ByornCollator", "judge_dataset", "row_to_sample", "row_to_samples", "sample_to_row", "trains_on",
           "with_answer", "with_answers"]
