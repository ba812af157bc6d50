"""`byorn clean`: BYORn before training, for any trainer. The data set is judged as BYORn judges
it (the same scores and cut); each flagged response is replaced by the frozen reference's own
greedy answer (or the sample dropped), and the set is written back in the layout it came in, so
LLaVA's scripts, TRL or LLaMA-Factory train on it unchanged.

With the shipped default (generator=reference) in-training BYORn trains every flagged sample on
that same reference answer, so training on the cleaned set is the same fine-tuning; only
generator=current, where the model being fine-tuned writes the replacements, needs byorn's trainer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from byorn.config import ConfigError
from byorn.data import Sample
from byorn.datasets import save_jsonl, save_llava_json, save_rows
from byorn.defenses.byorn import ByornConfig, ByornDefense
from byorn.models.hf import VLM
from byorn.review import REVIEW_NAME, Replacement, write_review

Layout = Literal["llava", "jsonl", "rows", "parquet"]
SAVERS = {"llava": save_llava_json, "jsonl": save_jsonl, "rows": save_rows,
          "parquet": lambda samples, out_dir: save_rows(samples, out_dir, parquet=True)}


@dataclasses.dataclass(frozen=True)
class Cleaned:
    """What `clean` wrote: the data file, and the flagged samples' ids."""

    data: Path
    flagged: list[str]
    n_in: int
    n_out: int


def clean(vlm: VLM, samples: Sequence[Sample], config: ByornConfig, out_dir: str | Path, *, layout: Layout = "llava",
          drop: bool = False) -> Cleaned:
    """Judge `samples` under `vlm` (the pretrained reference), replace or drop the flagged ones and
    write the set to `out_dir` in `layout`, with audit.jsonl (every flagged sample, its score, cut
    and the reference's answer) and review.html beside it."""
    if config.generator != "reference":
        raise ConfigError("clean writes the frozen reference's answers before any training: generator=current "
                          "(the model being fine-tuned writes them) exists only in `byorn train --defense byorn`")
    out_dir = Path(out_dir)
    defense = ByornDefense(config)
    defense.prepare(vlm, samples, out_dir)  # scores, flags, the reference's answers, audit.jsonl
    answers = defense.reference_answers
    if drop:  # a conversation goes whole: its later turns hold a flagged answer in their history
        flagged_records = {s.meta.get("record", s.id) for s in samples if s.id in answers}
        kept = [s for s in samples if s.meta.get("record", s.id) not in flagged_records]
    else:
        kept = [s.with_response(answers[s.id], replaced=True, original_response=s.response) if s.id in answers else s
                for s in samples]
    data = SAVERS[layout](kept, out_dir)
    write_review(out_dir / REVIEW_NAME, samples, defense.scores, defense.flagging.flagged,
                 groups=defense.flagging.groups, thresholds=defense.flagging.thresholds,
                 replacements={} if drop else {i: [Replacement(0, a, "reference")] for i, a in answers.items()},
                 title=f"byorn clean: {out_dir.name}")
    return Cleaned(data, list(answers), len(samples), len(kept))
