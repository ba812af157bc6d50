"""`byorn clean`: BYORn before training, for any trainer. The data set is judged as BYORn judges
it (the same scores and cut); each flagged response is replaced by the answer BYORn would train on
(the warmed reference's by default, written before training), or the sample dropped, and the set is
written back in the layout it came in, so LLaVA's scripts, TRL or LLaMA-Factory train on it unchanged.

A data file comes back as it went in, apart from the replaced answers or the dropped records
(byorn.formats.write_back): its image references still name the user's own files, relative to the
same image folder, and no image is copied unless asked (copy_images: each file as it is, to the
same relative path under OUT). A built-in world's samples, whose images are in memory, are written
with their images as PNG.

In-training BYORn with generator=warmed or reference trains every flagged sample on that same
answer, so training on the cleaned set with the same training config is the same fine-tuning; only
generator=current, where the model being fine-tuned writes the replacements, needs byorn's trainer.
One difference: a flagged sample whose replacement does not train (byorn/defenses/replacements.py)
is left out of training turn by turn, but here with its whole record (a record's turns are written
together).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from byorn.config import ConfigError, TrainConfig
from byorn.data import Sample, Source, conversation_of
from byorn.defenses.byorn import ByornDefense
from byorn.defenses.byorn_config import ByornConfig
from byorn.defenses.byorn_records import AUDIT_NAME, VERDICT_NAME
from byorn.defenses.canaries import CANARIES_NAME
from byorn.defenses.live_answers import history_replaced
from byorn.formats import DATA_NAMES, save_jsonl, save_llava_json, save_rows, write_back
from byorn.formats.images import copy_images as copy_image_files
from byorn.formats.llamafactory import DATASET_INFO
from byorn.models.hf import VLM
from byorn.outdir import finish_output, start_output
from byorn.review import REVIEW_NAME, Replacement, write_review

Layout = Literal["llava", "jsonl", "rows", "parquet"]  # how a built-in world's samples are written
SAVERS = {"llava": save_llava_json, "jsonl": save_jsonl, "rows": save_rows,
          "parquet": lambda samples, out_dir: save_rows(samples, out_dir, parquet=True)}
# what `clean` writes in OUT besides the data set, each replaced whole by a new run
WRITTEN = ("images", AUDIT_NAME, VERDICT_NAME, REVIEW_NAME, CANARIES_NAME)


@dataclasses.dataclass(frozen=True)
class Cleaned:
    """What `clean` wrote: the data file, the flagged samples' ids, and those of them left out (their
    replacement unfit: byorn/defenses/replacements.py) where the others were replaced."""

    data: Path
    flagged: list[str]
    n_in: int
    n_out: int
    left_out: list[str] = dataclasses.field(default_factory=list)


def clean(vlm: VLM, samples: Sequence[Sample], config: ByornConfig, out_dir: str | Path, *,
          layout: Layout | None = None, drop: bool = False, train: TrainConfig | None = None,
          copy_images: bool = False) -> Cleaned:
    """Judge `samples` as BYORn does (`vlm`: the pretrained model), replace or drop the flagged ones and
    write the set to `out_dir`, with audit.jsonl (every flagged sample, its score, cut and its
    replacement) and review.html beside it. Samples loaded from a file (byorn.formats) are written
    back in its layout; `layout` is for samples made in memory (default llava).

    train: the settings of the warmed reference's short fine-tune (rejudge, generator=warmed); the
    training config the cleaned set is meant for, or TrainConfig's defaults.
    copy_images: copy the image files a loaded file names into `out_dir`, as they are."""
    if config.writes_in_training:
        raise ConfigError(f"clean writes the replacements before any training: generator={config.generator} (written "
                          "while fine-tuning) exists only in `byorn train --defense byorn` (or byorn_paper)")
    source = samples[0].origin.source if samples and samples[0].origin is not None else None
    if source is not None and layout not in (None, source.layout):
        raise ValueError(f"{source.path} is written back in its own layout, {source.layout}; layout={layout!r} is for "
                         "samples made in memory")
    layout = source.layout if source is not None else layout or "llava"
    copied = _copied_folders(samples) if copy_images else ()
    out_dir = _start(out_dir, layout, samples, copied, source)
    # No fine-tuning follows to go on from the warm-up: the pretrained weights stay. The verdict and
    # the answers are those of a run with warm_start (it changes only what the fine-tuning starts from).
    defense = ByornDefense(dataclasses.replace(config, warm_start=False))
    defense.prepare(vlm, samples, out_dir, train=train)  # scores, flags, replacements, audit.jsonl
    answers = defense.reference_answers
    kept = samples
    # a conversation goes whole: its later turns hold a flagged answer in their history; one whose
    # replacement does not train goes even without --drop (byorn/defenses/replacements.py)
    gone = {conversation_of(s) or s.id for s in samples if s.id in (answers if drop else defense.left_out)}
    if gone:
        kept = [s for s in samples if (conversation_of(s) or s.id) not in gone]
    if source is not None:
        data = write_back(source, kept, {} if drop else answers, out_dir)
        if copy_images:  # into the written set's image folder: a data set folder is its own
            copy_image_files(kept, data if data.is_dir() else out_dir)
    else:
        data = SAVERS[layout]([_replaced(s, answers) for s in kept], out_dir)
    write_review(out_dir / REVIEW_NAME, samples, defense.scores, defense.flagging.flagged,
                 groups=defense.flagging.groups, thresholds=defense.flagging.thresholds,
                 replacements={} if drop else {i: [Replacement(0, a, defense.writer)] for i, a in answers.items()
                                               if i not in defense.left_out},  # those are left out, not replaced
                 left_out={} if drop else defense.left_out, title=f"byorn clean: {out_dir.name}",
                 judgement=defense.judgement)
    finish_output(out_dir)
    return Cleaned(data, list(answers), len(samples), len(kept), [] if drop else list(defense.left_out))


def _copied_folders(samples: Sequence[Sample]) -> set[str]:
    """The top folders (or files) under OUT that copying the samples' images writes."""
    return {Path(reference).parts[0] for s in samples if s.origin is not None
            for reference in s.origin.images if reference and Path(reference).parts}


def _start(out_dir: str | Path, layout: str, samples: Sequence[Sample], copied: Iterable[str] = (),
           source: Source | None = None) -> Path:
    """Mark OUT unfinished and clear what an earlier run wrote there (the copied images'
    folders too); refuse a folder that holds a data set of another layout (an earlier run's, or
    the user's: it would sit beside this one)."""
    out_dir = Path(out_dir)
    # a folder named data counts only as a saved data set: the input may lie in one (OUT/data/x.json)
    written = (n for n in set(DATA_NAMES.values()) if n != DATA_NAMES[layout])
    if other := next((n for n in written if (out_dir / n).is_file() or (out_dir / n / "state.json").is_file()), None):
        raise ValueError(f"{out_dir} holds {other}, a data set this clean (layout {layout}: "
                         f"{DATA_NAMES[layout]}) does not write; clean into an empty folder")
    # the images, and the data file itself (it is read again to be written back) with the
    # dataset_info.json that registers it, which a cleaned LLaMA-Factory file's own must not replace
    reads = [s.image for s in samples if isinstance(s.image, Path)]
    registered = source is not None and bool(source.options.get("dataset"))
    if source is not None:
        reads += [source.path, source.path.parent / DATASET_INFO]
    outputs = (DATA_NAMES[layout], *WRITTEN, *((DATASET_INFO,) if registered else ()),
               *sorted(set(copied) - set(WRITTEN)))
    return start_output(out_dir, "clean", outputs, reads)


def _replaced(sample: Sample, answers: dict[str, str]) -> Sample:
    """`sample` with its flagged answer replaced, and the flagged answers of its conversation's
    earlier turns replaced in its history (a later turn must not read the attacker's answer)."""
    if sample.id in answers:
        sample = sample.with_response(answers[sample.id], replaced=True, original_response=sample.response)
    return history_replaced(sample, answers)
