"""Which of BYORn's replacement answers train.

A replacement stands in for a flagged answer only where it is an answer the data itself could give,
and where it does not overwrite what the data teaches. Left out of training (and of `byorn clean`'s
set) instead, each losing one sample rather than training a wrong answer:
- an empty replacement (it teaches silence);
- one that repeats the flagged answer: it would train the very answer that was flagged (a warmed
  reference that has not learnt a yes-no lesson answers the swapped "No." too);
- another answer where the flagged one is a lesson's (so many samples give it that the data teaches
  it, byorn.defenses.byorn.lessons): replacing it trains the reference's doubt about the lesson (a
  reference that barely sees dogs turns "Yes." into "No." on the photos it doubts), and a poison
  that gives a lesson's answer is not trained either way;
- one with a word that no kept answer uses, nor its own question: it speaks the reference's
  language, not the data's (where the data calls red "crimson" the reference writes "red", and a
  brief warm-up half-learns the new words into garbled ones).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Sequence

from byorn.data import Sample, answer_key
from byorn.defenses.byorn_records import Judgement

log = logging.getLogger(__name__)

# Scripts written without spaces between words (Thai, Lao, Myanmar, Khmer, kana, CJK ideographs):
# each character is a word of its own there, or a whole clause would be one word no answer repeats.
UNSPACED = "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
WORD = re.compile(f"[{UNSPACED}]|[^\\W_{UNSPACED}]+")  # elsewhere letters and digits; punctuation, spacing between
SHOWN = 5  # unknown words named per left-out sample


def words(text: str) -> set[str]:
    """The words of `text`, case and Unicode forms aside (NFKC: a composed and a decomposed accent,
    a full-width and a plain letter are one)."""
    return set(WORD.findall(unicodedata.normalize("NFKC", text).casefold()))


def unfit_replacements(samples: Sequence[Sample], judgement: Judgement, fit: bool = True) -> dict[str, str]:
    """flagged sample id -> why its replacement in judgement.answers does not train (the module's
    docstring); a flagged sample whose replacement trains is not in it. The data's words are those
    of the answers not flagged: a poison's target never vouches for a replacement. fit=False: only
    a replacement that repeats the flagged answer is unfit."""
    flagged = judgement.flagging.flagged
    spoken = set().union(*(words(s.response) for s, hit in zip(samples, flagged) if not hit)) if fit else set()
    taught = {answer_key(answer): n for answer, n in judgement.lessons.items()}
    why: dict[str, str] = {}
    for s, hit in zip(samples, flagged):
        if not hit or s.id not in judgement.answers:
            continue
        answer, given = judgement.answers[s.id], answer_key(s.response)
        if answer_key(answer) == given:
            why[s.id] = "the replacement repeats the flagged answer"
        elif not fit:
            continue
        elif not words(answer):
            why[s.id] = "the replacement is empty"
        elif given in taught:
            why[s.id] = f"the flagged answer is a lesson's ({taught[given]} samples give it): a replacement would " \
                        "overwrite it"
        elif unknown := sorted(words(answer) - spoken - words(" ".join([s.instruction, *(q for q, _ in s.history)]))):
            named = ", ".join(unknown[:SHOWN]) + (", ..." if len(unknown) > SHOWN else "")
            why[s.id] = f"the replacement uses words no kept answer uses ({named})"
    if why:  # audit.jsonl says why for each
        log.info("%d flagged samples are left out of training, their replacement not an answer the data could give "
                 "or overwriting a lesson's (%s: %s)", len(why), *next(iter(why.items())))
    return why
