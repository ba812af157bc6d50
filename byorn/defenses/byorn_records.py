"""BYORn's judgement (`Judgement`: what it decided about each sample) and what a run keeps of it.

verdict.json: the judgement (scores, flags, thresholds, the warm set) and the replacement answers,
so a resumed run trains on the verdict it started with (judging again would repeat the warm-up,
and on a GPU not bit for bit). audit.jsonl: a "flagged" line per flagged sample, then a "replaced"
line per replacement trained, each appended as it happens (a crash loses at most the line being
written).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from byorn.config import ConfigError, read_yaml
from byorn.data import Sample, answer_key
from byorn.defenses.canaries import CANARIES_NAME, CanaryReport
from byorn.defenses.thresholds import Flagging
from byorn.distributed import all_gather, barrier, is_main
from byorn.fileio import append_jsonl, atomic_write_text, write_jsonl

if TYPE_CHECKING:  # byorn.train imports transformers' Trainer; only the type is needed here
    from byorn.train import ByornTrainer

log = logging.getLogger(__name__)

AUDIT_NAME = "audit.jsonl"
VERDICT_NAME = "verdict.json"
LISTED = ("cleared", "copies", "bound", "vouched")  # what each step did, as sample ids in verdict.json


@dataclass(frozen=True)
class Judgement:
    """Scores and flags, aligned with the judged samples. `warmed_on`: the indices of the samples
    the warmed reference was fine-tuned on (empty when the pretrained model's verdict stands);
    `answers`: flagged id -> replacement answer, written by `writer` ("warmed" or "reference").
    What each step did: `cleared`, flagged by the first verdict and not in the end; `copies`,
    flagged as copies of a flagged answer; `vouched`, spared by a person's word; `lessons`, each
    answer taken for a lesson with how many samples give it; `canaries`, what the judgement did with
    the poisons it planted to measure itself (byorn/defenses/canaries.py)."""

    scores: list[float]
    flagging: Flagging
    warmed_on: tuple[int, ...] = ()
    warm_steps: int = 0  # the warm-up's optimizer steps
    answers: dict[str, str] = field(default_factory=dict)
    writer: str = "reference"
    cleared: tuple[int, ...] = ()
    copies: tuple[int, ...] = ()
    bound: tuple[int, ...] = ()  # a lesson's samples flagged because their question pins the answer
    vouched: tuple[int, ...] = ()
    lessons: dict[str, int] = field(default_factory=dict)
    canaries: CanaryReport | None = None

    def cut_at(self, cut: float) -> Judgement:
        """This verdict with the samples it judged (not those warmed on) flagged at `cut`, one cut for
        every group (what a person vouched for is cleared later, by `final`)."""
        return replace(self, flagging=self.flagging.at(self.scores, cut, self.warmed_on))

    def head(self, n: int) -> Judgement:
        """The judgement of the first `n` samples alone (those judged after them are canaries)."""
        def kept(indices: tuple[int, ...]) -> tuple[int, ...]:
            return tuple(i for i in indices if i < n)

        groups = self.flagging.groups[:n]
        kept_groups = set(groups)  # not a group of canaries alone
        thresholds = {g: t for g, t in self.flagging.thresholds.items() if g in kept_groups}
        return replace(self, scores=self.scores[:n], flagging=Flagging(self.flagging.flagged[:n], groups, thresholds),
                       warmed_on=kept(self.warmed_on), cleared=kept(self.cleared), copies=kept(self.copies),
                       bound=kept(self.bound), vouched=kept(self.vouched))

    def summary(self, samples: Sequence[Sample]) -> list[str]:
        """What each step did beyond the cut, a line each, for the command's output (the logs)."""
        total, lines = len(self.scores), []
        if self.cleared:
            shown = ", ".join(samples[i].id for i in self.cleared[:5]) + (", ..." if len(self.cleared) > 5 else "")
            lines.append(f"{len(self.cleared)} the pretrained model flagged were cleared by the warmed reference: "
                         f"{shown} (all in verdict.json)")
        if self.copies:
            lines.append(f"{len(self.copies)} flagged as copies of a flagged answer")
        if self.bound:
            lines.append(f"{len(self.bound)} flagged as a lesson's answer to a question that gets no other answer")
        for answer, count in self.lessons.items():
            lines.append(f"taken for a lesson, as {count} samples ({100 * count / max(total, 1):.0f} %) give it: "
                         f"{answer!r}")
        if self.vouched:
            lines.append(f"{len(self.vouched)} vouched for, never flagged")
        return lines


def judgement_record(judgement: Judgement, samples: Sequence[Sample]) -> dict:
    """The judgement as JSON-ready data, keyed by sample id (`judgement_from_record` reads it back)."""
    return {"thresholds": judgement.flagging.thresholds, "warmed_on": [samples[i].id for i in judgement.warmed_on],
            **{name: [samples[i].id for i in getattr(judgement, name)] for name in LISTED},
            "lessons": judgement.lessons,
            "samples": [{"id": s.id, "score": score, "flagged": hit, "group": group} for s, score, hit, group in
                        zip(samples, judgement.scores, judgement.flagging.flagged, judgement.flagging.groups)]}


def judgement_from_record(record: dict, samples: Sequence[Sample], source: str | Path) -> Judgement:
    """The judgement `judgement_record` wrote (answers and writer too, where it holds them), for
    exactly these samples in this order."""
    try:
        rows = record["samples"]
        ids = [row["id"] for row in rows]
        if ids != [s.id for s in samples]:
            differ = next((i for i, (a, b) in enumerate(zip(ids, (s.id for s in samples))) if a != b),
                          min(len(ids), len(samples)))
            raise ValueError(f"{source}: judged other samples than these ({len(ids)} against {len(samples)}; "
                             f"the first difference at position {differ})")
        index = {sample_id: i for i, sample_id in enumerate(ids)}
        flagging = Flagging([bool(row["flagged"]) for row in rows], [str(row["group"]) for row in rows],
                            {str(g): float(t) for g, t in record["thresholds"].items()})
        answers = {str(k): str(v) for k, v in record.get("answers", {}).items()}
        listed = {name: tuple(index[i] for i in record.get(name, [])) for name in LISTED}
        return Judgement([float(row["score"]) for row in rows], flagging,
                         tuple(index[sample_id] for sample_id in record["warmed_on"]),
                         answers=answers, writer=str(record.get("writer", "reference")),
                         lessons={str(k): int(v) for k, v in record.get("lessons", {}).items()}, **listed)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{source}: not a judgement record ({type(exc).__name__}: {exc})") from exc


def save_verdict(run_dir: Path, judgement: Judgement, samples: Sequence[Sample], steps_trained: int) -> None:
    if is_main():
        atomic_write_text(run_dir / VERDICT_NAME, json.dumps(
            {**judgement_record(judgement, samples), "writer": judgement.writer, "answers": judgement.answers,
             "steps_trained": steps_trained}, ensure_ascii=False))


def read_vouch_file(path: str | Path) -> tuple[set[str], set[str]]:
    """The ids and the answers (as `answer_key`s) a person vouched for in a YAML or JSON file
    {ids: [...], answers: [...]}; a malformed file is a ConfigError naming it and the field."""
    try:
        record = read_yaml(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"vouch: cannot read {path} ({exc})") from exc
    if not isinstance(record, dict) or set(record) - {"ids", "answers"}:
        raise ConfigError(f"vouch: {path} must hold a mapping with the keys ids and answers (lists of text)")
    found = {}
    for key in ("ids", "answers"):
        values = record.get(key) or []
        if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
            raise ConfigError(f"vouch: {path}: field {key!r} must be a list of non-blank text")
        found[key] = set(values)
    return found["ids"], {answer_key(a) for a in found["answers"]}


def vouched_for(samples: Sequence[Sample], path: str) -> set[int]:
    """The indices of the samples a person vouched for in the file at `path` (none without one)."""
    if not path:
        return set()
    ids, answers = read_vouch_file(path)
    known = {s.id for s in samples}
    if unknown := sorted(ids - known):
        log.warning("%s: %d vouched id(s) are not in the data, %r first", path, len(unknown), unknown[0])
    return {i for i, s in enumerate(samples) if s.id in ids or answer_key(s.response) in answers}


class AuditLog:
    """audit.jsonl of one run: written whole by `start`, a line appended per replacement."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load_verdict(self, run_dir: Path, samples: Sequence[Sample]) -> tuple[Judgement, int]:
        """The judgement saved in run_dir's verdict.json for these samples, and the optimizer steps
        the warm-up had already run of the fine-tuning."""
        path = run_dir / VERDICT_NAME
        if not path.exists():  # judging again could flag other samples than the kept audit log replaced
            raise FileNotFoundError(f"cannot resume BYORn: no {VERDICT_NAME} in the run directory")
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            for key in ("answers", "writer"):
                if key not in record:
                    raise KeyError(key)
            steps = int(record.get("steps_trained", 0))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"cannot resume BYORn from {path}: {type(exc).__name__}: {exc}") from exc
        judgement = judgement_from_record(record, samples, f"cannot resume BYORn from {path}")
        missing = [s.id for s, hit in zip(samples, judgement.flagging.flagged) if hit and s.id not in judgement.answers]
        if missing:
            raise ValueError(f"cannot resume BYORn from {path}: no answer for flagged sample {missing[0]!r}")
        log.info("resumed with the verdict of %s: %d of %d samples flagged", path, len(judgement.answers),
                 len(samples))
        return judgement, steps

    def replacements_until(self, step: int) -> list[dict]:
        """The log's replacements of steps <= `step` (a resumed run keeps them)."""
        if not self.path.exists():
            raise FileNotFoundError(f"cannot resume BYORn: no {AUDIT_NAME} in the run directory")
        records = [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [r for r in records if r.get("event") == "replaced" and r["step"] <= step]

    def start(self, judgement: Judgement, samples: Sequence[Sample], kept: list[dict],
              left_out: Mapping[str, str]) -> None:
        """A fresh log: every flagged sample (with why it is left out of training, if it is), then the
        replacements `kept` from a resumed run. A rerun in the same run directory must not leave the
        previous run's lines in it."""
        flagging = judgement.flagging
        copies = set(judgement.copies)
        lines = [{"event": "flagged", "id": s.id, "score": score, "threshold": flagging.thresholds[group],
                  "group": group, "why": "copy" if i in copies else "score", "response": s.response,
                  "reference_response": judgement.answers[s.id],
                  **({"left_out": left_out[s.id]} if s.id in left_out else {})}
                 for i, (s, score, hit, group) in enumerate(zip(samples, judgement.scores, flagging.flagged,
                                                                flagging.groups)) if hit]
        barrier()  # every process has read the old log before the main one rewrites it
        if is_main():
            write_jsonl(self.path, lines + kept, ensure_ascii=False)

    def replaced(self, todo: Sequence[Sample], new: dict[str, tuple[str, str]], trainer: ByornTrainer) -> None:
        """A line per replacement of this step. Each process replaces in its own share of the batch;
        the main one logs them all, once; every process takes part in the gather."""
        step = trainer.state.global_step + 1  # the step this batch trains, as train_log.jsonl counts it
        epoch = math.floor(trainer.state.epoch or 0)
        records = [{"event": "replaced", "id": s.id, "step": step, "epoch": epoch, "source": new[s.id][1],
                    "response": new[s.id][0]} for s in todo]
        records = [record for share in all_gather(records) for record in share]
        if is_main():
            for record in records:  # line by line: a crash loses at most the line being written
                append_jsonl(self.path, record, ensure_ascii=False)


def announce(judgement: Judgement, samples: Sequence[Sample], run_dir: str | Path, whose: str) -> Judgement:
    """The judgement, once said (`whose` verdict counted): its count, what each step did and what the
    canaries measured in the log, the canaries' report in run_dir/canaries.json."""
    n, total = sum(judgement.flagging.flagged), len(judgement.scores)
    log.info("flagged %d of %d samples (%.1f %%): %s; thresholds %s", n, total, 100 * n / max(total, 1), whose,
             {g: round(t, 4) for g, t in judgement.flagging.thresholds.items()})
    for line in judgement.summary(samples):
        log.info(line)
    if judgement.canaries is not None:
        for line in judgement.canaries.lines():
            log.info(line)
        for line in judgement.canaries.warnings():
            log.warning(line)
        if is_main():
            judgement.canaries.save(run_dir)
    elif is_main():  # a report of an earlier run with them must not stand beside this one
        (Path(run_dir) / CANARIES_NAME).unlink(missing_ok=True)
    return judgement
